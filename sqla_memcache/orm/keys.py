"""Memcached keys for the ORM cache: always valid, stable across processes.

Every key is ``<namespace>:<kind>:<part>``. ``part`` is used verbatim when the
whole key is a valid memcached key (at most 250 bytes, printable ASCII, no
spaces); otherwise it is replaced by ``#`` + its SHA-1, so long or unicode
parts never produce an invalid key.

Kinds::

    q   a query result        (part: SHA-1 of the statement fingerprint, or a user key)
    o   one object by identity (part: "<module>.<Class>:(7)", composite "(a)(b)")
    tv  table version          (bumped by every committed write to the table)
    dv  table DML version      (bumped by update()/delete() statements: rows unknown)
    rv  row version            (part: "<table>:(7)")
    epoch                      (bumped by every committed write; REPEATABLE READ guard)
    gen                        (namespace generation: every entry depends on it)

Table names in version keys are lower case with the schema translation of
the execution applied (``tables.qualify``).

The statement fingerprint is derived from the statement's own SQLAlchemy cache
key plus its bound parameter values. The cache key holds in-memory objects
(mappers, tables, functions) whose ``repr`` includes memory addresses, so it is
rendered here with stable names instead; anything that cannot be rendered
stably makes the statement uncacheable rather than risking a shared key.
"""
from __future__ import annotations

import enum
import hashlib
import logging
import re
import types
import uuid
import weakref
from typing import Any, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple

from sqlalchemy.orm import Mapper, MapperProperty
from sqlalchemy.sql.schema import Table
from sqlalchemy.sql.type_api import TypeEngine
from sqlalchemy.sql.selectable import TableClause

from ..errors import UnstableKey
from ..memo import Memo
from ..protocol import MAX_KEY_LENGTH, VALID_KEY
from . import _compat

log = logging.getLogger(__name__)

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")




def _ascii_key(text: str) -> bool:
    """The protocol's key rule (``protocol.VALID_KEY``), on ASCII text only: the ORM's keys
    are plain printable ASCII, whatever bytes memcached would also take."""
    return text.isascii() and VALID_KEY.match(text.encode("ascii")) is not None


def is_valid_key(key: str) -> bool:
    """Return True when ``key`` can be sent to memcached as is."""
    return len(key) <= MAX_KEY_LENGTH and _ascii_key(key)


def digest(text: str) -> str:
    """Hex SHA-1 of ``text`` (UTF-8)."""
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def validate_namespace(namespace: str) -> str:
    """Return ``namespace`` if usable as a key prefix; raise ValueError otherwise."""
    if not isinstance(namespace, str) or not namespace or len(namespace) > 100 or not _ascii_key(namespace) \
            or ":" in namespace:
        raise ValueError(
            "namespace must be 1-100 printable ASCII characters without spaces or ':', got %r" % (namespace,)
        )
    return namespace


def make_key(namespace: str, kind: str, part: str) -> str:
    """Build ``<namespace>:<kind>:<part>``, hashing ``part`` when the key would be invalid."""
    key = "%s:%s:%s" % (namespace, kind, part)
    if is_valid_key(key):
        return key
    return "%s:%s:#%s" % (namespace, kind, digest(part))


def identity_string(values: Iterable[Any]) -> str:
    """Render primary-key values as ``"(7)"`` or, composite, ``"(a)(b)"``."""
    return "".join("(%s)" % (value,) for value in values)


_IDENTITY = re.compile(r"\(([^()]*)\)")


def parse_identity(id_str: str) -> Tuple[str, ...]:
    """Split ``"(7)"`` / ``"(a)(b)"`` into primary-key value strings; ValueError if malformed."""
    parts = tuple(_IDENTITY.findall(id_str))
    if not parts or identity_string(parts) != id_str:
        raise ValueError("not an identity string like '(7)' or '(a)(b)': %r" % (id_str,))
    return parts


def class_path(cls: type) -> str:
    """``"<module>.<QualName>"`` of a class: the object-key prefix of a mapped class."""
    return "%s.%s" % (cls.__module__, cls.__qualname__)


def object_part(cls: type, identity: Sequence[Any]) -> str:
    """Key part of one object: ``"<module>.<Class>:(7)"``."""
    return "%s:%s" % (class_path(cls), identity_string(identity))


def table_version_key(namespace: str, table: str) -> str:
    return make_key(namespace, "tv", table)


def dml_version_key(namespace: str, table: str) -> str:
    return make_key(namespace, "dv", table)


def row_identity(values: Sequence[Any]) -> Optional[Tuple[Any, ...]]:
    """Primary-key values as row version keys name them, or None when no name is safe.

    The database, not the caller, decides which row a value names: MySQL's
    default collations ignore case and trailing spaces, so ASCII strings are
    folded to lower case without trailing spaces (two rows that fold alike
    share a version: over-invalidation only). Other strings and types whose
    comparison the database may define differently get no row name; their
    writes then invalidate the whole table's rows.
    """
    out = []
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (int, str, uuid.UUID)):
            return None
        if isinstance(value, str):
            if not value.isascii():
                return None
            value = value.rstrip(" ").lower()
        out.append(value)
    return tuple(out)


def row_version_key(namespace: str, table: str, identity: Sequence[Any]) -> str:
    """Version key of one row; ``identity`` as :func:`row_identity` returns it."""
    return make_key(namespace, "rv", "%s:%s" % (table, identity_string(identity)))


#: what the keys of each kind hold: ``entry`` (a cached result), ``counter`` (a version
#: counter) or ``lease`` (stampede protection's short-lived lock, ``stampede.py``)
KINDS = {"q": "entry", "o": "entry", "m": "entry",
         "tv": "counter", "dv": "counter", "rv": "counter", "epoch": "counter", "gen": "counter",
         "l": "lease"}


def key_kind(namespace: str, key: str) -> Optional[str]:
    """The kind (``"q"``, ``"tv"``, ``"epoch"`` ... see :data:`KINDS`) of a key of ``namespace``;
    ``"?"`` for a key under the namespace of no known kind, None for a key outside it."""
    if not key.startswith(namespace) or key[len(namespace):len(namespace) + 1] != ":":
        return None
    kind = key[len(namespace) + 1:].split(":", 1)[0]
    return kind if kind in KINDS else "?"


def epoch_key(namespace: str) -> str:
    return "%s:epoch" % (namespace,)


def generation_key(namespace: str) -> str:
    """Every entry depends on it: bumped by writes whose targets are unknown and ``invalidate_all()``."""
    return "%s:gen" % (namespace,)


def _render(obj: Any, out: List[str]) -> None:
    """Append a process-independent rendering of a cache-key element to ``out``."""
    if isinstance(obj, tuple):
        out.append("(")
        if obj and isinstance(obj[0], type) and issubclass(obj[0], TypeEngine):
            # A type's key is its class then (argument, value) pairs in the order of a
            # set of names -- which varies with the process's string hash seed.
            _render(obj[0], out)
            out.append(",")
            pairs = []
            for item in obj[1:]:
                rendered: List[str] = []
                _render(item, rendered)
                pairs.append("".join(rendered))
            out.extend(text + "," for text in sorted(pairs))
        else:
            for item in obj:
                _render(item, out)
                out.append(",")
        out.append(")")
    elif obj is None or isinstance(obj, (str, bytes, bool, int, float)):
        out.append(repr(obj))
    elif isinstance(obj, enum.Enum):
        out.append("%s.%s" % (class_path(type(obj)), obj.name))
    elif isinstance(obj, type):
        out.append(class_path(obj))
    elif isinstance(obj, Mapper):
        out.append("M:" + class_path(obj.class_))
    elif isinstance(obj, MapperProperty):
        out.append("P:%s.%s" % (class_path(obj.parent.class_), obj.key))
    elif isinstance(obj, TableClause):
        # Table reprs spell out every column; the qualified name identifies it.
        out.append("T:" + (obj.fullname if isinstance(obj, Table) else obj.name))
    elif isinstance(obj, types.CodeType):
        # lambda statements (the ORM's lazy loaders use them) key on their code object
        name = getattr(obj, "co_qualname", obj.co_name)
        out.append("C:%s:%s:%d" % (obj.co_filename.rsplit("/", 1)[-1], name, obj.co_firstlineno))
    elif isinstance(obj, (types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        out.append("F:%s.%s" % (getattr(obj, "__module__", None), obj.__qualname__))
    else:
        text = repr(obj)
        if _ADDRESS.search(text):
            raise UnstableKey("no stable rendering for %s in a statement cache key" % (type(obj).__name__,))
        out.append(text)


def render_value(value: Any) -> str:
    """Render a bound parameter value; raise :class:`UnstableKey` when impossible."""
    out: List[str] = []
    _render(tuple(value) if isinstance(value, list) else value, out)
    return "".join(out)


_SHAPES: Memo[Any, str] = Memo(2048)


def _shape(key: Any) -> str:
    """Digest of a rendered cache-key tuple, memoised: SQLAlchemy's own keys are hashable and
    compare equal exactly when statements have the same structure (its compiled cache relies on it)."""
    found = _SHAPES.get(key)
    if found is None:
        out: List[str] = []
        _render(key, out)
        found = _SHAPES.put(key, digest("".join(out)))
    return found


_STATIC: "weakref.WeakKeyDictionary[Any, Tuple[str, str]]" = weakref.WeakKeyDictionary()
#: (shape, typed bound values) -> (shape, full): no rendering or hashing for a repeated execution
_FULL: Memo[Any, Tuple[str, str]] = Memo(8192)
_EXACT = frozenset([int, str, bytes, bool, type(None), uuid.UUID])


class Fingerprint(NamedTuple):
    """Hex digests naming a statement: ``shape`` its structure, ``full`` also its bound values."""

    shape: str
    full: str


def fingerprint(statement: Any, parameters: Optional[Mapping[str, Any]] = None) -> Optional[Fingerprint]:
    """Return the :class:`Fingerprint` (``shape``, ``full`` hex digests) naming ``statement`` and ``statement`` + parameters, or None.

    ``shape`` covers the statement's structure only (equal for executions that
    differ in bound values); ``full`` also covers every bound value (literal
    or supplied at execution time), so two executions share it only when
    they are the same query. Returns None for statements SQLAlchemy marks
    uncacheable and for statements holding objects without a stable rendering
    (logged at DEBUG level).
    """
    # A statement object executed again without parameters has the same fingerprint,
    # unless a bound value comes from a callable: remember it per statement object.
    static = not parameters and type(statement).__eq__ is object.__eq__
    if static:
        try:
            found = _STATIC.get(statement)
        except TypeError:  # not weak-referenceable
            static = False
        else:
            if found is not None:
                return found
    cache_key = _compat.cache_key(statement)
    if cache_key is None:
        log.debug("statement has no cache key; not cached: %s", type(statement).__name__)
        return None
    parameters = parameters or {}
    try:
        shape = _shape(cache_key.key)
    except UnstableKey as exc:
        log.debug("statement not cached: %s", exc)
        return None
    # Bind parameters come in traversal order, which is stable; their keys
    # may embed object ids, so only the values are rendered.
    values = []
    for bind in cache_key.bindparams:
        values.append(parameters[bind.key] if bind.key in parameters else bind.effective_value)
        static = static and bind.callable is None
    # Typed values (1, True and 1.0 are equal in Python, not in SQL), of types whose equality
    # is exact (equal aware datetimes in other zones, or Decimals of other precision, are
    # not the same value to every database): those are rendered every time.
    memo_key: Any = None
    found = None
    if all(type(v) in _EXACT for v in values):
        memo_key = (shape, tuple((type(v), v) for v in values))
        found = _FULL.get(memo_key)
    if found is None:
        try:
            full = digest("".join([shape] + ["|" + render_value(value) for value in values]))
        except UnstableKey as exc:
            log.debug("statement not cached: %s", exc)
            return None
        found = Fingerprint(shape, full)
        if memo_key is not None:
            _FULL.put(memo_key, found)
    if static:
        _STATIC[statement] = found
    return found


def statement_fingerprint(statement: Any, parameters: Optional[Mapping[str, Any]] = None) -> Optional[str]:
    """The ``full`` digest of :func:`fingerprint`, or None."""
    found = fingerprint(statement, parameters)
    return None if found is None else found.full
