"""Every private SQLAlchemy API the ORM cache relies on, in one place.

SQLAlchemy's underscored attributes and its ``orm.context`` /
``orm.path_registry`` modules are not covered by its deprecation policy: any
2.0.x or 2.1.x release may change them. Each one the cache uses is reached
through a name here, and ``tests/unit/test_sqla_compat.py`` checks each of
them against the installed SQLAlchemy, so the version matrix in CI (oldest
supported 2.0.x on the oldest Python, latest on the newest) shows a change
as one failing test naming the API, not as wrong cache behaviour.

These wrappers work on SQLAlchemy 2.0.0 and later 2.0.x and 2.1.x. Where a
public API replaced a private one in some release
(``ORMExecuteState.is_from_statement``, 2.0.30), the wrapper uses the public
one when present and the older equivalent otherwise.

The table of every name here, the SQLAlchemy internals behind it and the
modules using it is in ``docs/development.md`` (*Private SQLAlchemy APIs*).


``tests/unit/test_private_sqlalchemy.py`` fails when a module other than this one
reaches a private attribute the package itself does not define (which can
only be SQLAlchemy's), or imports one of SQLAlchemy's private modules.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import sqlalchemy
from sqlalchemy.orm.base import instance_state
from sqlalchemy.orm.state import InstanceState
from sqlalchemy.orm import context as _context
from sqlalchemy.orm import session as _session
from sqlalchemy.orm.context import FromStatement
from sqlalchemy.orm.path_registry import PathRegistry
from sqlalchemy.engine.result import FrozenResult, SimpleResultMetaData
from sqlalchemy.orm import base as _base
from sqlalchemy.orm import collections as _collections
from sqlalchemy.orm import instrumentation as _instrumentation
from sqlalchemy.orm import strategy_options as _strategy_options
from sqlalchemy.util import concurrency as _concurrency
from sqlalchemy.sql.elements import quoted_name
from sqlalchemy.util import immutabledict

__all__ = [
    "SQLALCHEMY_VERSION", "FromStatement", "PathRegistry", "cache_key", "class_manager",
    "compile_options", "dispatch_merge_without_load", "element_annotations", "expire_attributes",
    "for_update_arg", "has_loader_options", "instance_state", "is_from_statement", "mapper_get_clause",
    "merge_state", "plugin_subject", "raw_columns", "supports_scalars", "update_impl", "where_criteria",
    "values_columns", "set_columns", "post_values_clause", "independent_ctes", "session_binds",
    "is_autocommit", "after_dbapi_commit", "dbapi_in_transaction", "populate_existing", "has_pending_changes",
    "state_of", "dispatch_load", "load_dispatcher", "attach_committed", "commit_all_states",
    "mapped_classes_count", "all_registries", "PICKLED_CLASSES", "own_class_manager", "in_greenlet", "await_",
    "greenlet_spawn", "user_options", "load_kind", "is_plain_select", "session_info", "identity_dict", "detach_new",
]


def _version(text: str) -> Tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = ""
        for char in piece:  # "0b2" -> 0: only the leading digits count
            if not char.isdigit():
                break
            digits += char
        parts.append(int(digits or "0"))
    return tuple(parts)


#: the installed SQLAlchemy as a tuple, e.g. ``(2, 0, 30)``
SQLALCHEMY_VERSION = _version(sqlalchemy.__version__)


# --------------------------------------------------------------------------- statements

def cache_key(statement: Any) -> Any:
    """The statement's ``CacheKey`` (``.key``, ``.bindparams``), or None when it has none."""
    return statement._generate_cache_key()


def plugin_subject(statement: Any) -> Any:
    """The mapper (or other entity) an ORM statement was built for, or None."""
    return statement._propagate_attrs.get("plugin_subject")


def where_criteria(statement: Any) -> Sequence[Any]:
    """The WHERE clauses of a SELECT (empty for other statements)."""
    return getattr(statement, "_where_criteria", ())


def raw_columns(statement: Any) -> Sequence[Any]:
    """What a SELECT selects, as given to ``select()`` (empty for other statements)."""
    return getattr(statement, "_raw_columns", ())


def has_loader_options(statement: Any) -> bool:
    """True when the statement carries options (loader or user-defined) or ``with_only_columns`` entities."""
    return bool(statement._with_options) or bool(getattr(statement, "_memoized_select_entities", ()))


def compile_options(statement: Any) -> Any:
    """The statement's ORM compile options (hashable unless values were set on them)."""
    return statement._compile_options


def user_options(state: Any) -> Sequence[Any]:
    """``ORMExecuteState.user_defined_options``, without building the list for a statement
    carrying no options at all (``session.get()``, most lazy loads): then ``()``."""
    if not has_loader_options(state.statement):
        return ()
    return state.user_defined_options  # type: ignore[no-any-return]


def load_kind(state: Any) -> Tuple[Any, Any]:
    """``(is_column_load, loader_strategy_path if is_relationship_load else None)`` of an
    ``ORMExecuteState``, looking at its ORM compile options once (each of those
    properties looks them up again: ``ORMExecuteState._orm_compile_options()``)."""
    opts = state._orm_compile_options()
    if opts is None:
        return False, None
    path = opts._current_path
    return opts._for_refresh_state, (path if path is not None and not path.is_root else None)


#: the compile options of a SELECT nothing set any on (the class itself, not an instance)
_DEFAULT_COMPILE_OPTIONS: Any = getattr(
    getattr(_context, "_ORMCompileState", None) or getattr(_context, "ORMCompileState", None),
    "default_compile_options", None)


def is_plain_select(statement: Any) -> bool:
    """True for a SELECT with SQLAlchemy's default ORM compile options, no options and no
    ``FOR UPDATE`` -- a plain ``session.get()``. Then :func:`load_kind` is ``(False, None)``
    and :func:`user_options` is ``()``, without asking. False whenever unsure."""
    return (
        getattr(statement, "_compile_options", None) is _DEFAULT_COMPILE_OPTIONS is not None
        and getattr(statement, "_for_update_arg", 1) is None and not has_loader_options(statement)
    )


#: Session.info is a memoized property (a dict made on first use, kept in the instance's __dict__)
_INFO_MEMOIZED = type(vars(_session.Session).get("info")).__name__ in ("memoized_property", "_memoized_property")


def session_info(session: Any) -> Optional[Dict[Any, Any]]:
    """``session.info`` when something made it, else None -- without making it (a fresh
    session's first ``info`` builds a dict). Falls back to ``session.info`` when that
    property is not memoized the way it is in SQLAlchemy 2.0 and 2.1."""
    if _INFO_MEMOIZED:
        return session.__dict__.get("info")  # type: ignore[no-any-return]
    return session.info  # type: ignore[no-any-return]  # pragma: no cover - other internals


def for_update_arg(statement: Any) -> Any:
    """The ``with_for_update()`` argument of a SELECT, None when it does not lock."""
    return getattr(statement, "_for_update_arg", None)


def values_columns(node: Any) -> Sequence[Any]:
    """The columns (or names) an INSERT/UPDATE's ``values()`` sets, in its plain (dict) form."""
    return list(getattr(node, "_values", None) or {})


def set_columns(node: Any) -> Sequence[Any]:
    """The columns (or names) an UPDATE sets, from ``values()`` or ``ordered_values()``."""
    ordered = getattr(node, "_ordered_values", None) or ()
    return list(getattr(node, "_values", None) or {}) + [column for column, _value in ordered]


def post_values_clause(node: Any) -> Any:
    """The ON CONFLICT / ON DUPLICATE KEY clause of an INSERT, None when it has none."""
    return getattr(node, "_post_values_clause", None)


def independent_ctes(statement: Any) -> Sequence[Any]:
    """CTEs added with ``add_cte()`` (they may hold DML the statement itself does not reference)."""
    return getattr(statement, "_independent_ctes", ()) or ()


def session_binds(session: Any) -> Dict[Any, Any]:
    """The ``binds=`` mapping of a ``Session`` instance (``sessionmaker`` keeps it in ``.kw``).

    ``Session.binds`` in SQLAlchemy 2.1, the name-mangled ``Session.__binds`` in 2.0.
    """
    found = getattr(session, "binds", None)
    if found is None:
        found = getattr(session, "_Session__binds", None)
    return dict(found or {})


def element_annotations(element: Any) -> Dict[str, Any]:
    """An element's ORM annotations (``parentmapper``, ...); empty when it has none."""
    return getattr(element, "_annotations", None) or {}


def mapper_get_clause(mapper: Any) -> Tuple[Any, Dict[Any, Any]]:
    """``(primary key criterion, {primary key column: its bind parameter})`` of ``session.get()``."""
    return mapper._get_clause  # type: ignore[no-any-return]


# --------------------------------------------------------------------------- executions and sessions

def is_from_statement(state: Any) -> bool:
    """True when an ``ORMExecuteState`` runs ``select(...).from_statement(...)``."""
    public = getattr(type(state), "is_from_statement", None)
    if public is not None:
        return bool(state.is_from_statement)
    return isinstance(state.statement, FromStatement)


# --------------------------------------------------------------------------- results and objects

def supports_scalars(frozen: Any) -> bool:
    """True when a ``FrozenResult``'s rows are single entities (``scalars()`` rows)."""
    return bool(frozen._source_supports_scalars)


def class_manager(cls: type) -> Any:
    """The ``ClassManager`` of a mapped class (also inherited by a subclass), or None for an unmapped one."""
    return getattr(cls, "_sa_class_manager", None)


def own_class_manager(cls: type) -> Any:
    """The ``ClassManager`` set on ``cls`` itself (not inherited), or None."""
    return cls.__dict__.get("_sa_class_manager")


def state_of(value: Any) -> Any:
    """The ``InstanceState`` of a mapped instance, None for any other value."""
    return getattr(value, "_sa_instance_state", None)


def mapped_classes_count() -> int:
    """A number that changes when classes are mapped or registries made (cheap to compute)."""
    from sqlalchemy.orm import mapperlib

    registries = list(mapperlib._all_registries())
    return sum(len(r._class_registry) for r in registries) + len(registries)


def all_registries() -> Iterable[Any]:
    """Every live ``registry`` (each has a public ``.mappers``)."""
    from sqlalchemy.orm import mapperlib

    return list(mapperlib._all_registries())


def merge_state(session: Any, state: Any, dict_: Dict[str, Any]) -> Any:
    """``session.merge(obj, load=False)`` for an instance already described by ``state``/``dict_``."""
    return session._merge(state, dict_, load=False, _recursive={}, _resolve_conflict_map={})


def update_impl(session: Any, state: Any) -> None:
    """Attach a persistent ``state`` to the session's identity map (what merge does for a new key)."""
    session._update_impl(state)


def expire_attributes(state: Any, dict_: Dict[str, Any], names: Iterable[str]) -> None:
    """Mark attributes expired without a loader, as ``merge(load=False)`` does for missing ones."""
    state._expire_attributes(dict_, list(names), no_loader=True)


#: ``commit_all_states([(state, dict_), ...], identity_map=None)``: make the loaded attributes
#: of each state the committed state (no pending changes). The method itself, not a wrapper.
commit_all_states: Callable[..., None] = InstanceState._commit_all_states


def dispatch_merge_without_load(manager: Any, state: Any) -> None:
    """Fire the internal event ``merge(load=False)`` fires for a new instance."""
    manager.dispatch._sa_event_merge_wo_load(state, None)


#: the classes a pickled ``FrozenResult`` of ORM objects refers to by name (the allow-list of
#: ``safepickle`` includes them); a release that renames one shows in ``test_sqla_compat``
PICKLED_CLASSES: Tuple[type, ...] = (
    FrozenResult, SimpleResultMetaData, immutabledict, InstanceState, _instrumentation._SerializeManager,
    quoted_name,  # a str with a quoting flag: the column names of Core tables in result keys
    _base.LoaderCallableStatus,
    _collections.CollectionAdapter, _collections.InstrumentedList, _collections.InstrumentedSet,
    _collections.InstrumentedDict, _strategy_options.Load, _strategy_options._AttributeStrategyLoad,
    _strategy_options._TokenStrategyLoad, _strategy_options._ClassStrategyLoad, _strategy_options._WildcardLoad,
)


# --------------------------------------------------------------------------- connections and commits

_WRAPPED = "_sqla_memcache_commit_hooks"


def is_autocommit(conn: Any) -> bool:
    """True when ``conn`` runs in ``AUTOCOMMIT`` isolation (each statement commits on its own)."""
    check = getattr(conn, "_is_autocommit_isolation", None)
    if check is not None:
        return bool(check())
    level = conn.get_execution_options().get("isolation_level")  # pragma: no cover - older internals
    return level == "AUTOCOMMIT"


def after_dbapi_commit(dialect: Any, hook: Callable[[Any], None]) -> None:
    """Call ``hook(dbapi_connection)`` right after the dialect's DBAPI commit (also when it fails).

    SQLAlchemy's ``commit`` connection event fires *before* the DBAPI commit;
    there is no event after it, so the dialect instance's ``do_commit`` and
    ``do_commit_twophase`` are wrapped (once per dialect; ``Dialect.do_commit``
    is a documented, overridable method).
    """
    hooks = dialect.__dict__.get(_WRAPPED)
    if hooks is not None:
        if hook not in hooks:
            hooks.append(hook)
        return
    hooks = [hook]
    setattr(dialect, _WRAPPED, hooks)
    plain = dialect.do_commit
    twophase = dialect.do_commit_twophase

    def do_commit(dbapi_connection: Any) -> None:
        try:
            plain(dbapi_connection)
        finally:
            for fn in hooks:
                fn(dbapi_connection)

    def do_commit_twophase(connection: Any, xid: Any, is_prepared: bool = True, recover: bool = False) -> None:
        try:
            twophase(connection, xid, is_prepared, recover)
        finally:
            for fn in hooks:
                fn(connection)

    dialect.do_commit = do_commit
    dialect.do_commit_twophase = do_commit_twophase


def dbapi_in_transaction(conn: Any) -> Any:
    """The DBAPI connection's own ``in_transaction`` flag (sqlite3 has one), or None when unknown."""
    try:
        raw = conn.connection.dbapi_connection
    except Exception:
        return None
    found = getattr(raw, "in_transaction", None)
    return found if isinstance(found, bool) else None


def populate_existing(state: Any) -> bool:
    """True when the execution asked for ``populate_existing`` (an option in 2.1, a load option in 2.0)."""
    if state.execution_options.get("populate_existing"):
        return True
    try:
        options = state.load_options
    except Exception:  # not a SELECT (from_statement of text): no load options
        return False
    return bool(getattr(options, "_populate_existing", False))


def has_pending_changes(session: Any) -> bool:
    """``session.new or session.dirty or session.deleted``, without building the sets when possible."""
    clean = getattr(session, "_is_clean", None)
    if clean is not None:
        return not clean()
    return bool(session.new or session.dirty or session.deleted)  # pragma: no cover - public fallback


def identity_dict(identity_map: Any) -> Any:
    """A container answering ``key in`` for ``identity_map`` without a Python-level call:
    its ``_dict`` (a key there may be a garbage-collected object's: check with ``get``
    when ``in`` says yes), or the map itself where that is missing."""
    try:
        return identity_map._dict
    except AttributeError:  # pragma: no cover - other internals
        return identity_map


def attach_committed(session: Any, loaded: List[Tuple[Any, Dict[str, Any]]], committed: bool = False) -> None:
    """Put new persistent states (``state.key`` set) in ``session`` and mark their loaded
    attributes committed, as SQLAlchemy's loading does for rows not in the identity map.

    ``loading.py`` inserts into the identity map directly (``_add_unpresent``)
    and sets ``state.session_id``: no ``before_attach``/``after_attach``
    events and no transaction begun (``Session._update_impl`` autobegins
    one), then ``InstanceState._commit_all_states``. Falls back to
    ``_update_impl`` where those internals are missing. One call for every
    object of a hit. *committed*: the states were already committed with
    :func:`commit_all_states` before they belonged to any session (that part
    touches the states alone), so only the identity-map half is left.
    """
    identity_map = session.identity_map
    add = getattr(identity_map, "_add_unpresent", None)
    hash_key = getattr(session, "hash_key", None)
    if add is None or hash_key is None:  # pragma: no cover - other internals
        for state, _dict in loaded:
            session._update_impl(state)
    else:
        for state, _dict in loaded:
            state.session_id = hash_key
            add(state, state.key)
    if not committed:
        commit_all_states(loaded, identity_map)


def detach_new(session: Any, loaded: List[Tuple[Any, Dict[str, Any]]]) -> None:
    """Undo :func:`attach_committed` for states nothing else touched since: each leaves
    ``session``'s identity map (``IdentityMap.discard``, which removes only that very
    state) and no longer names the session (``state.session_id``), so the objects are
    detached, as before the attach; no event fires (none did on the way in)."""
    identity_map = session.identity_map
    for state, _dict in loaded:
        identity_map.discard(state)
        state.session_id = None


def load_dispatcher(session: Any, manager: Any) -> Optional[Callable[[Any], None]]:
    """``fire(state)`` for objects of ``manager``'s class loaded into ``session`` -- ``load``,
    ``merge(load=False)``'s internal event and the session's ``loaded_as_persistent`` -- or
    None when nothing listens to any of them (the common case: nothing to call)."""
    internal = manager.dispatch._sa_event_merge_wo_load
    load = manager.dispatch.load
    persistent = session.dispatch.loaded_as_persistent
    if not (internal or load or persistent):
        return None

    def fire(state: Any) -> None:
        if internal:
            internal(state, None)
        if load:
            load(state, None)
        if persistent:
            persistent(session, state)  # the event machinery hands the listener state.obj()

    return fire


def dispatch_load(session: Any, manager: Any, state: Any) -> None:
    """After a loaded object's values are in place: fire what :func:`load_dispatcher` fires."""
    fire = load_dispatcher(session, manager)
    if fire is not None:
        fire(state)


# --------------------------------------------------------------------------- greenlets (AsyncSession)

#: ``await_`` in SQLAlchemy 2.1, ``await_only`` in 2.0: await a coroutine from inside the greenlet
#: an ``AsyncSession`` runs its sync code in.
await_: Callable[[Any], Any] = getattr(_concurrency, "await_", None) or _concurrency.await_only

#: run a sync function in such a greenlet from a coroutine
greenlet_spawn: Callable[..., Any] = _concurrency.greenlet_spawn


def _in_greenlet() -> bool:  # pragma: no cover - SQLAlchemy versions without in_greenlet()
    try:
        import greenlet
    except ImportError:
        return False
    return bool(getattr(greenlet.getcurrent(), "__sqlalchemy_greenlet_provider__", False))


#: True when called inside such a greenlet (where ``await_`` works)
in_greenlet: Callable[[], bool] = getattr(_concurrency, "in_greenlet", None) or _in_greenlet
