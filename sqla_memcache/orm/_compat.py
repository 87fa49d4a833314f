"""Every private SQLAlchemy API the ORM cache relies on, in one place (tested per version).

SQLAlchemy 2.0 and 2.1 differ in some internals; each function here names
what it needs and falls back to public behaviour when the private piece is
missing, so a new SQLAlchemy release breaks one module, not the cache.
"""
from __future__ import annotations

from typing import Any, Callable

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


def is_from_statement(state: Any) -> bool:
    """``ORMExecuteState.is_from_statement`` (2.0.x before it existed: look at the statement)."""
    found = getattr(type(state), "is_from_statement", None)
    if found is not None:
        return bool(state.is_from_statement)
    from sqlalchemy.orm.context import FromStatement

    return isinstance(state.statement, FromStatement)


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


def dbapi_in_transaction(conn: Any) -> Any:
    """The DBAPI connection's own ``in_transaction`` flag (sqlite3 has one), or None when unknown."""
    try:
        raw = conn.connection.dbapi_connection
    except Exception:
        return None
    found = getattr(raw, "in_transaction", None)
    return found if isinstance(found, bool) else None
