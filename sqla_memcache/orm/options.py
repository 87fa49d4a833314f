"""Query options consumed by the ORM cache's ``do_orm_execute`` hook.

``FromCache`` caches the result of the statement it is attached to;
``RelationshipCache`` caches the lazy loads of one relationship for objects
loaded by that statement (it propagates to the objects' later lazy loads, even
for objects that came out of the cache).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Dict, Optional, Tuple

from sqlalchemy.orm import RelationshipProperty
from sqlalchemy.orm.interfaces import UserDefinedOption

if TYPE_CHECKING:  # pragma: no cover
    from .store import EntryStore as ORMCache


class FromCache(UserDefinedOption):
    """Serve this statement's result from memcached, loading and storing it on a miss.

    :param expire: seconds to keep the entry (``None``: the cache's default, ``0``: no expiry).
    :param key: a fixed key instead of one derived from the statement and its
        bound parameters. The caller then owns the key's meaning: two statements
        given the same ``key`` share one entry. It is still namespaced and hashed
        when not a valid memcached key.
    :param cache: the :class:`~sqla_memcache.orm.cache.ORMCache` to use; by
        default the cache listening on the session.
    :param tables: extra table names the result depends on; required to cache
        textual statements, whose tables cannot be discovered.
    """

    __slots__ = ("expire", "key", "cache", "tables")
    # Propagated (the hook ignores FromCache on lazy loads): SQLAlchemy's
    # compiled cache remembers which option *position* propagates, and user
    # options are not part of its cache key, so a RelationshipCache given
    # after a FromCache would otherwise be dropped from lazy loads when the
    # same statement ran earlier with the options in another order.
    propagate_to_loaders = True

    def __init__(
        self,
        expire: Optional[int] = None,
        key: Optional[str] = None,
        cache: Optional["ORMCache"] = None,
        tables: Any = (),
    ) -> None:
        self.expire = expire
        self.key = key
        self.cache = cache
        self.tables = frozenset(tables)

    def __getstate__(self) -> Dict[str, Any]:
        # The cache (and its client sockets) must never be pickled with an entry.
        return {"expire": self.expire, "key": self.key, "cache": None, "tables": self.tables}

    def __setstate__(self, state: Dict[str, Any]) -> None:
        for name, value in state.items():
            setattr(self, name, value)

    def __repr__(self) -> str:
        return "FromCache(expire=%r, key=%r)" % (self.expire, self.key)


class RelationshipCache(FromCache):
    """Serve lazy loads of ``attribute`` (e.g. ``Film.actors``) from memcached.

    The entry is keyed by the lazy-load statement and the parent's key values
    and depends on the related tables, including an association table. Pass
    several attributes with :meth:`and_`.
    """

    __slots__ = ("targets",)
    propagate_to_loaders = True

    def __init__(self, attribute: Any, expire: Optional[int] = None, cache: Optional["ORMCache"] = None) -> None:
        super().__init__(expire=expire, cache=cache)
        prop = attribute.property
        if not isinstance(prop, RelationshipProperty):
            raise TypeError("RelationshipCache needs a relationship attribute, got %r" % (attribute,))
        # Stored as (class, key) so the option pickles with the objects carrying it.
        self.targets: Tuple[Tuple[type, str], ...] = ((prop.parent.class_, prop.key),)

    def and_(self, attribute: Any) -> "RelationshipCache":
        """Return a copy that also caches the lazy loads of ``attribute``."""
        other = RelationshipCache(attribute, expire=self.expire, cache=self.cache)
        other.targets = self.targets + other.targets
        return other

    def matches(self, prop: Any) -> bool:
        """True when lazy loads of relationship ``prop`` are to be cached by this option."""
        owner = getattr(getattr(prop, "parent", None), "class_", None)
        key = getattr(prop, "key", None)
        # The relationship's owner is the class declaring it; the option may name it
        # through a subclass (or the reverse), so compare along the hierarchy.
        return owner is not None and any(
            key == name and (issubclass(owner, cls) or issubclass(cls, owner)) for cls, name in self.targets
        )

    def __getstate__(self) -> Dict[str, Any]:
        state = super().__getstate__()
        state["targets"] = self.targets
        return state

    def __repr__(self) -> str:
        names = ", ".join("%s.%s" % (cls.__name__, key) for cls, key in self.targets)
        return "RelationshipCache(%s)" % (names,)
