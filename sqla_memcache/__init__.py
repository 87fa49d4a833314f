"""sqla_memcache: cache SQLAlchemy ORM objects and query results in memcached.

Public API (see ``docs/`` for the guide):

* :class:`Client` -- a bundled memcached client, drop-in for python-memcached.
* :class:`AsyncClient` -- the same client for asyncio, every method awaitable.
* :class:`ORMCache`, :class:`FromCache`, :class:`RelationshipCache`,
  :class:`MemcachedORMObject` -- ORM caching with automatic invalidation.
* :class:`MemcachedDict` -- a dict-like view of memcached under a key prefix.
"""
from __future__ import annotations

__version__ = "0.1.0"

from . import errors, serde
from .aio import AsyncClient
from .client import SERVER_MAX_KEY_LENGTH, SERVER_MAX_VALUE_LENGTH, Client
from .mdict import DumpingNotAllowed, EditConflict, MemcachedDict, MemcachedDictError
from .orm import CacheStats, FromCache, MemcachedORMObject, ORMCache, RelationshipCache
from .serde import JSONSerde, PickleSerde, RawSerde, SignedSerde

__all__ = [
    "__version__",
    "Client",
    "AsyncClient",
    "SERVER_MAX_KEY_LENGTH",
    "SERVER_MAX_VALUE_LENGTH",
    "errors",
    "serde",
    "PickleSerde",
    "JSONSerde",
    "RawSerde",
    "SignedSerde",
    "ORMCache",
    "FromCache",
    "RelationshipCache",
    "MemcachedORMObject",
    "CacheStats",
    "MemcachedDict",
    "MemcachedDictError",
    "DumpingNotAllowed",
    "EditConflict",
]
