"""ORM caching: ``ORMCache``, the ``FromCache``/``RelationshipCache`` options and the mixin.

Nothing is attached at import; call :meth:`ORMCache.listen_on_session`.
"""
from .cache import ORMCache
from .events import CacheEvent, CacheStats
from .mixin import MemcachedORMObject
from .options import FromCache, RelationshipCache

__all__ = ["CacheEvent", "CacheStats", "FromCache", "MemcachedORMObject", "ORMCache", "RelationshipCache"]
