"""What the ORM cache decodes from memcached: allow-listed pickles and plain integers, nothing else.

Anyone who can write to memcached chooses the bytes the cache reads. A plain
``pickle.loads`` of them runs whatever callable the pickle names, so the ORM
cache never uses it:

* **Entries** (query and object entries, and the result template inside a
  :class:`~.rows.Rows` payload) are read by :func:`loads`, an unpickler whose
  ``find_class`` resolves only

  - the classes and functions in :data:`ALLOWED` -- the standard value types
    (``datetime``, ``Decimal``, ``UUID``, ``set``...), and what a frozen ORM
    result is made of (``FrozenResult`` and its metadata, ``InstanceState``,
    instrumented collections, loader options, ``Rows``);
  - mapped classes, and the types their attributes hold that pickle by class
    (enum classes of ``Enum`` columns, custom relationship collection classes);

  and only from modules already imported: a pickle can never make the
  process import a module. Anything else raises :class:`Refused`; the cache
  treats the entry as a miss and logs a (rate-limited) warning.

* **Counters** (version keys, the epoch, the generation, lease keys) and
  entries reach the ORM through a view of the client whose deserialiser
  (:func:`orm_deserialize`, installed by :func:`harden`) returns bytes for
  flags 0, an ``int`` for ASCII digits with the integer flag, and refuses
  everything else -- pickles included -- before any byte of it is decoded.
  A counter that is not an integer is therefore a missing counter.

What this does not stop: a planted entry made only of allowed types (data
from someone who can write to memcached is still data they chose -- use
``secret_key`` on the client for integrity); a pickle that calls an allowed
class with arguments of its choosing (a mapped class's own ``__init__``
runs, as it would for ``Film(**kwargs)``).
"""
from __future__ import annotations

import collections
import copy
import datetime
import decimal
import enum
import fractions
import io
import logging
import pickle
import sys
import threading
import time
import uuid
import zoneinfo
from typing import Any, Dict, FrozenSet, Iterable, Optional, Set, Tuple

from . import _compat, options
from ..errors import EntryRefused, SerializationError
from ..serde import FLAG_INTEGER, FLAG_LONG

log = logging.getLogger(__name__)

__all__ = ["ALLOWED", "Refused", "loads", "harden", "orm_deserialize", "refused_count"]


#: the error of an entry naming a global outside the allow-list (``errors.EntryRefused``)
Refused = EntryRefused


def _allowed(objects: Iterable[Any]) -> Dict[Tuple[str, str], Any]:
    return {(obj.__module__, obj.__qualname__): obj for obj in objects}


#: ``(module, qualified name) -> object`` a pickle may name, besides mapped classes and their attribute types
ALLOWED: Dict[Tuple[str, str], Any] = _allowed([
    # builtin containers and scalars that pickle by name
    object, set, frozenset, bytearray, complex, slice, range,
    collections.OrderedDict,
    # standard value types
    datetime.datetime, datetime.date, datetime.time, datetime.timedelta, datetime.timezone,
    decimal.Decimal, fractions.Fraction, uuid.UUID, uuid.SafeUUID, zoneinfo.ZoneInfo,
    # what SQLAlchemy's frozen ORM results are made of
    *_compat.PICKLED_CLASSES,
    # the cache's own loader options (objects carry them in their load options)
    options.FromCache, options.RelationshipCache,
])


#: the attributes a pickle may fetch with ``getattr`` (how classmethod reconstructors pickle)
_GETATTR: FrozenSet[Tuple[Any, str]] = frozenset({(zoneinfo.ZoneInfo, "_unpickle")})


def _getattr(obj: Any, name: str) -> Any:
    """``getattr`` for the pairs in :data:`_GETATTR` only (a ``ZoneInfo`` pickles as
    ``getattr(ZoneInfo, "_unpickle")(key, ...)``); anything else is refused."""
    if (obj, name) not in _GETATTR:
        raise Refused("getattr(%r, %r) is not allowed in an ORM cache entry" % (obj, name))
    return getattr(obj, name)


ALLOWED[("builtins", "getattr")] = _getattr


def allow(obj: Any) -> Any:
    """Add ``obj`` (a class or function a payload pickles by name) to :data:`ALLOWED`; returns it.

    ``rows.py`` registers its ``Rows`` reconstructor this way (it imports this module).
    """
    ALLOWED[(obj.__module__, obj.__qualname__)] = obj
    return obj


def _mapped(obj: Any) -> bool:
    manager = _compat.own_class_manager(obj) if isinstance(obj, type) else None
    return manager is not None and getattr(manager, "is_mapped", False)


class _AttributeTypes:
    """Classes the attributes of mapped classes hold that pickle by class: enum classes of
    ``Enum`` columns, relationship collection classes. Recomputed when mappers are added."""

    def __init__(self) -> None:
        self._seen = -1
        self._types: FrozenSet[type] = frozenset()
        self._lock = threading.Lock()

    def get(self) -> FrozenSet[type]:
        count = _compat.mapped_classes_count()
        if count != self._seen:
            with self._lock:
                found: Set[type] = set()
                for registry in _compat.all_registries():
                    for mapper in list(registry.mappers):
                        found.update(_types_of(mapper))
                self._types, self._seen = frozenset(found), count
        return self._types


def _types_of(mapper: Any) -> Iterable[type]:
    for column in mapper.columns:
        enum_class = getattr(column.type, "enum_class", None)
        if isinstance(enum_class, type) and issubclass(enum_class, enum.Enum):
            yield enum_class
    for prop in mapper.relationships:
        cls = prop.collection_class
        if isinstance(cls, type) and cls not in (list, set, dict):
            yield cls


_ATTRIBUTE_TYPES = _AttributeTypes()


class _RateLimited:
    """Log a warning at most once per ``interval`` seconds, counting the ones left out."""

    def __init__(self, interval: float = 60.0) -> None:
        self.interval = interval
        self.count = 0
        self._last = float("-inf")
        self._skipped = 0
        self._lock = threading.Lock()

    def warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        with self._lock:
            self.count += 1
            if now - self._last < self.interval:
                self._skipped += 1
                return
            skipped, self._skipped, self._last = self._skipped, 0, now
        if skipped:
            message += " (%d similar warning(s) suppressed)"
            args += (skipped,)
        log.warning(message, *args)


_REFUSALS = _RateLimited()


def refused_count() -> int:
    """How many entries this process refused to decode (they were treated as misses)."""
    return _REFUSALS.count


def _resolve(module: str, name: str) -> Any:
    """The object ``module.name`` names when the module is already imported, else None."""
    found: Any = sys.modules.get(module)
    for part in name.split("."):
        if found is None or part.startswith("__"):
            return None
        found = getattr(found, part, None)
    return found


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        allowed = ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        obj = _resolve(module, name)
        if obj is not None and (_mapped(obj) or obj in _ATTRIBUTE_TYPES.get()):
            return obj
        raise Refused("global %s.%s is not allowed in an ORM cache entry" % (module, name))

    def persistent_load(self, pid: Any) -> Any:
        raise Refused("persistent ids are not allowed in an ORM cache entry")


def loads(data: bytes) -> Any:
    """Unpickle ``data`` resolving only allow-listed globals; raises :class:`Refused` (a
    ``pickle.UnpicklingError``) for anything else, before calling it."""
    try:
        return _Unpickler(io.BytesIO(data)).load()
    except Refused as exc:
        _REFUSALS.warn("refused to decode an ORM cache entry (treated as a miss): %s", exc)
        raise


def refusal(data: bytes) -> Optional[str]:
    """Why :func:`loads` would refuse ``data`` (the first global outside the allow-list), or None.

    Counts and logs nothing: for a writer checking its own entry before storing it."""
    try:
        _Unpickler(io.BytesIO(data)).load()
    except Refused as exc:
        return str(exc)
    return None


def orm_deserialize(key: bytes, data: bytes, flags: int) -> Any:
    """The ORM's deserialiser: bytes for flags 0, an int for an integer, nothing else.

    Entries are stored as bytes (pickled by the cache itself and decoded by
    :func:`loads`) and counters as integers, so a value with any other flags
    -- a pickle in particular -- was not written by the cache: it is refused
    with ``SerializationError`` (the client then answers a miss) unread.
    """
    if flags == 0:
        return data
    if flags & ~(FLAG_INTEGER | FLAG_LONG) == 0 and data.isdigit() and len(data) <= 20:
        return int(data)
    raise SerializationError("value with flags %d is not an ORM entry or counter; ignored" % flags)


def harden(view: Any, client: Any) -> Any:
    """The ORM's client ``view`` of ``client``, decoding with :func:`orm_deserialize`.

    Works for :class:`sqla_memcache.Client` (the view is a copy sharing its
    connections; ``client`` itself is never changed); any other client decodes
    values itself (python-memcached unpickles them), which is logged once.
    """
    sync, async_ = getattr(view, "sync_client", None), getattr(view, "async_client", None)
    if sync is not None and async_ is not None and hasattr(async_, "_deserialize"):
        # the async facade (``aio.py``): harden both, each a copy, so the application's
        # clients keep their serde
        view.sync_client = harden(sync, client)
        view.async_client = harden(async_, async_)
        return view
    if hasattr(view, "_deserialize") and hasattr(view, "_decode_value"):
        if view is client:
            view = copy.copy(client)
        view._deserialize = orm_deserialize
        return view
    _warn_once(
        "foreign-client",
        "%s decodes memcached values itself (it unpickles them): anyone who can write to memcached can run "
        "code in this process through the ORM cache; use sqla_memcache.Client", type(view).__name__)
    return view


_WARNED: Set[str] = set()


def _warn_once(what: str, message: str, *args: Any) -> None:
    if what not in _WARNED:
        _WARNED.add(what)
        log.warning(message, *args)


_LOOPBACK = ("127.", "::1", "localhost")


def _host_is_local(host: Any) -> bool:
    ip = getattr(host, "ip", None)
    if ip is None:  # a unix socket: reachable only through the file system
        return getattr(host, "address", None) is not None and not isinstance(getattr(host, "address"), tuple)
    return str(ip).startswith(_LOOPBACK)


def warn_if_unsigned(client: Any, namespace: str) -> None:
    """Warn once per process when the ORM cache reads unsigned values from a non-loopback server."""
    signed = getattr(client, "_signer", None) is not None or type(getattr(client, "serde", None)).__name__ == "SignedSerde"
    if signed:
        return
    remote = [h for h in getattr(client, "servers", ()) if not _host_is_local(h)]
    if remote:
        _warn_once(
            "unsigned",
            "ORMCache(namespace=%r) reads unsigned entries from %s: anyone who can write to it can plant "
            "entries (decoded by an allow-listed unpickler, so data, not code); give the client a "
            "secret_key for integrity (docs/security.md)", namespace, getattr(remote[0], "label", remote[0]))
