"""``MemcachedORMObject``: the classic "memcached objects for SQLAlchemy" recipe on top of ORMCache.

Mix it into a mapped class::

    class Film(MemcachedORMObject, Base): ...

    cache.listen_on_session(Session)        # a sessionmaker: the default binding
    Film.get_cached_instance("(7)")          # cache first, database on a miss
    Film.fetch_by_field(Film.title, "ACE GOLDFINGER")

``session.get(Film, 7)`` in a listening session is served from the same
entries. Entries are keyed ``<namespace>:o:<module>.<Class>:(7)`` (composite
primary keys ``(a)(b)``) and guarded by the row's version key, so they survive
writes to other rows of the table.

Binding: the latest :meth:`ORMCache.listen_on_session` on a session factory
is the default cache and factory; ``Film.bind_cache(cache, factory)`` (or the
``__cache__`` / ``__session_factory__`` class attributes) binds one model;
every method also takes ``session=`` (use that session; it must listen on the
cache) and class methods take ``cache=``. Methods that open their own session
close it before returning, so returned objects are detached with their column
attributes loaded.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, ClassVar, Iterator, Optional, Tuple, Type, TypeVar

from sqlalchemy import inspect, select
from sqlalchemy.orm import Session, object_session, scoped_session
from sqlalchemy.orm.attributes import set_committed_value

from . import keys
from .tables import own_tables
from .api import CACHE, EXPIRE, MIN_COMPRESS_LEN, REFRESH
from .scope import scope_of
from .options import FromCache

log = logging.getLogger(__name__)

T = TypeVar("T", bound="MemcachedORMObject")

def set_default_binding(cache: Any, session_factory: Any) -> None:
    """Make ``(cache, session_factory)`` the binding of models without their own.

    The default is the mixin's own class attributes, which every model inherits
    unless it binds its own (:meth:`MemcachedORMObject.bind_cache`): one
    binding mechanism, no module state."""
    MemcachedORMObject.__cache__ = cache
    MemcachedORMObject.__session_factory__ = session_factory


class MemcachedORMObject:
    """Mixin adding memcached-backed lookups to a mapped class (see the module docstring)."""

    __cache__: ClassVar[Any] = None
    #: marks models whose ``session.get()`` is served from the object cache
    __sqla_memcache_objects__: ClassVar[bool] = True
    __session_factory__: ClassVar[Any] = None

    # -- binding -------------------------------------------------------------
    @classmethod
    def bind_cache(cls, cache: Any, session_factory: Any = None) -> None:
        """Bind this model (and subclasses) to ``cache`` and, optionally, a session factory."""
        cls.__cache__ = cache
        cls.__session_factory__ = session_factory

    @classmethod
    def _cache(cls, cache: Any = None) -> Any:
        # (a model that sets __cache__ = None itself still gets the default)
        found = cache or cls.__cache__ or MemcachedORMObject.__cache__
        if found is None:
            raise RuntimeError("%s has no cache: call ORMCache.listen_on_session() or bind_cache()" % cls.__name__)
        return found

    @classmethod
    def _factory(cls) -> Any:
        # a model bound with bind_cache(cache) alone keeps the default session factory
        return cls.__session_factory__ or MemcachedORMObject.__session_factory__

    @classmethod
    @contextlib.contextmanager
    def _session(cls, session: Optional[Session] = None) -> Iterator[Session]:
        if session is not None:
            yield session
            return
        factory = cls._factory()
        if factory is None:
            raise RuntimeError(
                "%s has no session factory: listen_on_session(a sessionmaker), bind_cache(cache, factory) "
                "or pass session=" % cls.__name__
            )
        if isinstance(factory, scoped_session):
            factory = factory.session_factory
        # Objects handed back outlive this session; keep their attributes loaded.
        with factory(expire_on_commit=False) as own:
            yield own

    # -- keys ------------------------------------------------------------------
    @classmethod
    def _identity_from(cls, id_value: Any) -> Tuple[Any, ...]:
        """Primary-key tuple from ``"(7)"``/``"(a)(b)"``, a scalar or a tuple."""
        if not isinstance(id_value, str):
            return tuple(id_value) if isinstance(id_value, (tuple, list)) else (id_value,)
        columns = inspect(cls).primary_key
        parts = keys.parse_identity(id_value)
        if len(parts) != len(columns):
            raise ValueError("%s has %d primary key columns, got %r" % (cls.__name__, len(columns), id_value))
        return tuple(_coerce(column, part) for column, part in zip(columns, parts))

    def get_instance_key(self) -> str:
        """This object's identity string, ``"(7)"`` or ``"(a)(b)"``."""
        return keys.identity_string(inspect(type(self)).primary_key_from_instance(self))

    def get_cache_key(self) -> str:
        """The memcached key of this object's plain ``session.get()`` entry
        (``<namespace>:o:<module>.<Class>:(7)@<database tag>``), read through the
        model's session factory's engine."""
        identity = inspect(type(self)).primary_key_from_instance(self)
        factory = type(self)._factory()
        if isinstance(factory, scoped_session):
            factory = factory.session_factory
        bind = getattr(factory, "kw", {}).get("bind") if factory is not None else None
        if bind is None:
            raise RuntimeError("%s has no session factory bound to an engine" % type(self).__name__)
        return self._cache().key("o", keys.object_part(type(self), identity) + "@" + str(scope_of(bind)))

    # -- reads -----------------------------------------------------------------
    @classmethod
    def get_cached_instance(
        cls: Type[T], id_str: Any, *, session: Optional[Session] = None, cache: Any = None
    ) -> Optional[T]:
        """Return the object with identity ``id_str`` (cache first, then database, then cached), or None.

        Raises ValueError for a malformed identity string.
        """
        identity = cls._identity_from(id_str)
        options = {CACHE: cache} if cache is not None else {}
        with cls._session(session) as own:
            return own.get(cls, identity, execution_options=options)

    @classmethod
    def fetch_by_field(
        cls: Type[T], field: Any, value: Any, *, session: Optional[Session] = None, cache: Any = None
    ) -> Optional[T]:
        """Return the first object whose ``field`` equals ``value`` (cached), or None.

        ``field`` is an attribute (``Film.title``) or its name. A lookup by the
        single primary-key column uses the object cache.
        """
        attribute = getattr(cls, field) if isinstance(field, str) else field
        mapper = inspect(cls)
        if len(mapper.primary_key) == 1 and attribute.key == mapper.get_property_by_column(mapper.primary_key[0]).key:
            return cls.get_cached_instance((value,), session=session, cache=cache)
        statement = select(cls).where(attribute == value).limit(1).options(FromCache(cache=cls._cache(cache)))
        with cls._session(session) as own:
            return own.scalars(statement).first()

    def set_cached_instance(
        self: T, time: int = 0, min_compress_len: int = 0, *, session: Optional[Session] = None
    ) -> Optional[T]:
        """(Re)store this row's committed database state in the cache and return the fresh copy.

        The row is re-read (after reading its version keys), so the entry can
        never be older than the versions it is tagged with; unsaved changes on
        ``self`` are not stored -- call :meth:`update` first.
        """
        options = {REFRESH: True, EXPIRE: time, MIN_COMPRESS_LEN: min_compress_len}
        identity = tuple(inspect(type(self)).primary_key_from_instance(self))
        with self._session(session) as own:
            return own.get(type(self), identity, populate_existing=True, execution_options=options)

    def delete_cached_instance(self) -> None:
        """Drop this object's entry (its row version is bumped, so a racing reader cannot re-store it)."""
        cache = self._cache()
        identity = tuple(inspect(type(self)).primary_key_from_instance(self))
        named = keys.row_identity(identity)
        mapper = inspect(type(self))
        cache.bump(cache.row_version_keys(mapper, named) if named is not None else cache.table_keys(own_tables(mapper)))
        cache.delete_entry(self.get_cache_key())

    # -- writes ----------------------------------------------------------------
    def update(self: T, *, session: Optional[Session] = None) -> T:
        """Flush and commit this object's changes; the commit invalidates its entries.

        An attached object commits its own session (and all its pending work);
        a detached one is merged into a new session. Returns the persistent object.
        """
        attached = session or object_session(self)
        if attached is not None:
            attached.add(self)
            attached.commit()
            return self
        with self._session() as own:
            merged = own.merge(self)
            own.commit()
            return merged

    def refresh(self: T, *, session: Optional[Session] = None) -> T:
        """Reload this object from the database, re-cache it, and return ``self``."""
        fresh = self.set_cached_instance(session=session)
        if fresh is None:
            raise LookupError("%r no longer exists in the database" % (self,))
        if fresh is not self:
            for attr in inspect(type(self)).column_attrs:
                if attr.key in inspect(fresh).dict:
                    set_committed_value(self, attr.key, getattr(fresh, attr.key))
        return self

    def delete(self, *, session: Optional[Session] = None) -> None:
        """Delete this row and commit; the commit invalidates its entries."""
        attached = session or object_session(self)
        if attached is not None:
            attached.delete(self)
            attached.commit()
            return
        with self._session() as own:
            own.delete(own.merge(self))
            own.commit()


def _coerce(column: Any, text: str) -> Any:
    """Convert an identity-string part to the column's Python type when that is int."""
    try:
        python_type = column.type.python_type
    except NotImplementedError:
        return text
    return int(text) if python_type is int else text
