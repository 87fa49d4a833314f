"""Write capture: every statement a listened engine runs, judged where it reaches the database.

Session events miss every write that does not go through the unit of work
(bulk methods, Core DML, ``text()``, a connection shared with a session) and
cannot tell a savepoint release from a commit. So writes are captured from
the engine's own events, which every statement passes:

* ``before_cursor_execute``: a statement that is not a plain read is a write
  (``writes.judge``: its tables, its rows when the ``WHERE`` pins them, or
  the whole namespace for DDL and unknown targets).
* The writes are kept per DBAPI connection and savepoint level
  (:class:`TxWrites`): ``savepoint`` opens a level, ``release_savepoint``
  folds it into its parent, ``rollback_savepoint`` forgets it, ``rollback``
  forgets everything.
* ``commit`` (and ``commit_twophase``) fire *before* the DBAPI commit; the
  writes are handed to the dialect's ``do_commit`` (wrapped once per dialect),
  which delivers them to every listening :class:`~.cache.ORMCache` right
  after the database committed -- never before, or a reader could store the
  old row under the new versions. A connection in ``AUTOCOMMIT`` mode
  delivers right after each statement.

A transaction that wrote anything stays "written" (:func:`has_written`) until
it ends, even after a savepoint rollback: the read hook then bypasses the
cache for the rest of it.
"""
from __future__ import annotations

import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, List, Optional, Sequence

from sqlalchemy import event

from . import _compat
from .durable import INTERNAL, logs_for
from .writes import Writes, judge

if TYPE_CHECKING:  # pragma: no cover
    from .store import EntryStore as ORMCache

log = logging.getLogger(__name__)

#: key of a connection's :class:`TxWrites` in ``Connection.info`` (the DBAPI connection's info)
TX_KEY = "sqla_memcache.tx"
#: writes of a root transaction between the ``commit`` event and the DBAPI commit
COMMITTING_KEY = "sqla_memcache.committing"
#: writes a RELEASE SAVEPOINT about to run commits (see ``EngineCapture.savepoint``)
RELEASING_KEY = "sqla_memcache.releasing"


class TxWrites:
    """The writes of one connection's current root transaction, one :class:`Writes` per savepoint level."""

    __slots__ = ("levels", "commits_on_release", "wrote")

    def __init__(self) -> None:
        self.levels: List[Writes] = [Writes()]
        #: per level: releasing it commits (a savepoint that opened the DBAPI transaction, see ``savepoint``)
        self.commits_on_release: List[bool] = [False]
        #: anything was written since the root transaction began (kept after a savepoint rollback)
        self.wrote = False

    def merged(self) -> Writes:
        total = Writes()
        for level in self.levels:
            total.update(level)
        return total


# -- per-engine listeners ---------------------------------------------------------------


def _tx(conn: Any) -> TxWrites:
    info = conn.info
    found = info.get(TX_KEY)
    if found is None:
        found = info[TX_KEY] = TxWrites()
    return found


def has_written(conn: Any) -> bool:
    """True when ``conn``'s current transaction wrote anything (through any path)."""
    try:
        found = conn.info.get(TX_KEY)
    except Exception:  # closed or invalidated: it no longer holds a transaction
        return False
    return found is not None and found.wrote


class EngineCapture:
    """The write-capture listeners of one engine, delivering to every cache listening on it."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.caches: List["ORMCache"] = []
        self._lock = threading.Lock()
        #: the database's name in entry keys (default: derived from the engine URL)
        self.database: Optional[str] = None

    def add(self, cache: "ORMCache") -> None:
        with self._lock:
            if not any(c is cache for c in self.caches):
                self.caches.append(cache)
        enable = getattr(cache, "enable_durable_log", None)
        if getattr(cache, "durable_log", False) and enable is not None:
            try:
                enable(self.engine)
            except Exception:  # a cache problem must never fail the caller's query
                log.warning("could not enable the durable invalidation log on %r", self.engine, exc_info=True)

    def deliver(self, writes: Writes, skip: Sequence[Any] = ()) -> None:
        for cache in list(self.caches):
            if any(cache is other for other in skip):
                continue
            try:
                cache.deliver(writes)
            except Exception:  # a cache problem must never fail the caller's commit
                log.warning("delivering invalidations to %r failed", cache, exc_info=True)

    # event handlers
    def before_cursor_execute(self, conn: Any, cursor: Any, statement: str, parameters: Any,
                              context: Any, executemany: bool) -> None:
        if context.execution_options.get(INTERNAL):
            return  # the durable log's own statements (see ``durable.py``)
        try:
            writes = judge(context, statement)
        except Exception:
            log.warning("could not tell what a statement writes; invalidating everything", exc_info=True)
            writes = Writes()
            writes.everything = True
        if not writes:
            return
        if _compat.is_autocommit(conn):
            pending = context.__dict__.setdefault("_sqla_memcache_autocommit", Writes())
            pending.update(writes)
            return
        tx = _tx(conn)
        tx.wrote = True
        tx.levels[-1].update(writes)

    def after_cursor_execute(self, conn: Any, cursor: Any, statement: str, parameters: Any,
                             context: Any, executemany: bool) -> None:
        pending = context.__dict__.pop("_sqla_memcache_autocommit", None)
        if pending:
            self.deliver(pending)
        released = conn.info.pop(RELEASING_KEY, None)
        if released is not None:
            self.deliver(released)

    def handle_error(self, exception_context: Any) -> None:
        context = exception_context.execution_context
        pending = context.__dict__.pop("_sqla_memcache_autocommit", None) if context is not None else None
        if pending:  # it may have written before it failed
            self.deliver(pending)

    def begin(self, conn: Any) -> None:
        conn.info[TX_KEY] = TxWrites()

    def savepoint(self, conn: Any, name: str) -> None:
        tx = _tx(conn)
        tx.levels.append(Writes())
        # pysqlite (in its default mode) begins no DBAPI transaction before a SAVEPOINT: the
        # savepoint then *is* the transaction, and releasing it commits
        tx.commits_on_release.append(_compat.dbapi_in_transaction(conn) is False)

    def rollback_savepoint(self, conn: Any, name: str, context: Any) -> None:
        tx = _tx(conn)
        if len(tx.levels) > 1:
            tx.levels.pop()
            tx.commits_on_release.pop()

    def release_savepoint(self, conn: Any, name: str, context: Any) -> None:
        tx = _tx(conn)
        if len(tx.levels) > 1:
            top = tx.levels.pop()
            if tx.commits_on_release.pop():
                # the RELEASE commits everything since the transaction began: hand it all over
                top.update(tx.levels[0])
                tx.levels[0] = Writes()
                if top:
                    conn.info[RELEASING_KEY] = top  # delivered once the RELEASE has run
            else:
                tx.levels[-1].update(top)

    def rollback(self, conn: Any) -> None:
        conn.info.pop(TX_KEY, None)

    def commit(self, conn: Any) -> None:
        tx = conn.info.pop(TX_KEY, None)
        if tx is not None and tx.wrote:
            writes = tx.merged()
            if writes:
                # the durable logs' rows go into this transaction, before the DBAPI commit
                logged = [(d, token) for d in logs_for(self.caches, self.engine)
                          for token in [d.record(conn, writes)] if token is not None]
                conn.info[COMMITTING_KEY] = (self, writes, logged)

    def commit_twophase(self, conn: Any, xid: Any, is_prepared: bool) -> None:
        self.commit(conn)

    def rollback_twophase(self, conn: Any, xid: Any, is_prepared: bool) -> None:
        conn.info.pop(TX_KEY, None)
        conn.info.pop(COMMITTING_KEY, None)


def _after_dbapi_commit(connection: Any) -> None:
    """Deliver what the ``commit`` event handed over (the DBAPI commit has returned or failed)."""
    try:
        handed = connection.info.pop(COMMITTING_KEY, None)
    except Exception:
        return
    if handed is not None:
        capture, writes, logged = handed
        if after_commit_hook is not None:
            after_commit_hook()
        for durable, token in logged:
            durable.settle(connection, token, writes)
        capture.deliver(writes, skip=[durable.cache for durable, _ in logged])


#: fault injection for tests: called after the DBAPI commit, before any bump is sent
#: (a test worker sets it to ``lambda: os._exit(1)`` to die between COMMIT and bump)
after_commit_hook: Optional[Callable[[], None]] = None


_EVENTS = ("before_cursor_execute", "after_cursor_execute", "handle_error", "begin", "savepoint",
           "rollback_savepoint", "release_savepoint", "rollback", "commit", "commit_twophase",
           "rollback_twophase")
_CAPTURES: "weakref.WeakKeyDictionary[Any, EngineCapture]" = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def capture_for(engine: Any) -> EngineCapture:
    """The :class:`EngineCapture` of ``engine`` (an Engine or AsyncEngine), installed on first use."""
    engine = getattr(engine, "sync_engine", engine)
    with _LOCK:
        found = _CAPTURES.get(engine)
        if found is not None:
            return found
        found = _CAPTURES[engine] = EngineCapture(engine)
        for name in _EVENTS:
            event.listen(engine, name, getattr(found, name))
        _compat.after_dbapi_commit(engine.dialect, _after_dbapi_commit)
    return found


def listening(engine: Any) -> Optional[EngineCapture]:
    """The capture installed on ``engine``, or None."""
    return _CAPTURES.get(getattr(engine, "sync_engine", engine))
