"""asyncio support: :class:`AsyncClient`, the awaitable twin of :class:`sqla_memcache.Client`.

The ORM side (one :class:`~sqla_memcache.ORMCache` for ``Session`` and
``AsyncSession``) is in :mod:`sqla_memcache.orm.aio`.
"""
from __future__ import annotations

from .client import AsyncClient
from .connection import AsyncConnection
from .host import AsyncHost

__all__ = ["AsyncClient", "AsyncConnection", "AsyncHost"]
