"""ORM caching: ``ORMCache``, the ``FromCache``/``RelationshipCache`` options and the mixin.

Nothing is attached at import; call :meth:`ORMCache.listen_on_session`.
"""
from .cache import CacheStats, ORMCache
from .mixin import MemcachedORMObject
from .options import FromCache, RelationshipCache

__all__ = ["CacheStats", "FromCache", "MemcachedORMObject", "ORMCache", "RelationshipCache"]
