"""Write capture: every statement a listened engine runs, judged where it reaches the database.

Session events miss every write that does not go through the unit of work
(bulk methods, Core DML, ``text()``, a connection shared with a session) and
cannot tell a savepoint release from a commit. So writes are captured from
the engine's own events, which every statement passes:

* ``before_cursor_execute``: a statement that is not a plain read is a write
  (:func:`judge`). Compiled DML names its tables; an ``UPDATE``/``DELETE``
  whose ``WHERE`` pins every primary-key column to a bound value names its
  rows too (the unit of work's statements do); an upsert, or an update that
  moves a primary key, changes rows nobody can name. Textual SQL is read by
  ``sqltext.classify``. DDL, and anything whose targets cannot be known,
  invalidates the whole namespace.
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
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from sqlalchemy import event
from sqlalchemy.sql import visitors
from sqlalchemy.sql.ddl import DDLElement
from sqlalchemy.sql.dml import Delete, Insert, Update, UpdateBase
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList, TextClause
from sqlalchemy.sql import operators
from sqlalchemy.sql.schema import Column, Table
from sqlalchemy.sql.selectable import TableClause

from . import _compat, sqltext
from .durable import INTERNAL, logs_for
from .keys import row_identity
from ..memo import Memo
from .tables import dependents, find_tables, qualify, remember_metadata, table_name

if TYPE_CHECKING:  # pragma: no cover
    from .store import EntryStore as ORMCache

log = logging.getLogger(__name__)

#: key of a connection's :class:`TxWrites` in ``Connection.info`` (the DBAPI connection's info)
TX_KEY = "sqla_memcache.tx"
#: writes of a root transaction between the ``commit`` event and the DBAPI commit
COMMITTING_KEY = "sqla_memcache.committing"
#: writes a RELEASE SAVEPOINT about to run commits (see ``EngineCapture.savepoint``)
RELEASING_KEY = "sqla_memcache.releasing"


class Writes:
    """What one statement, savepoint level or transaction wrote, as table and row names.

    ``full``: tables whose changed rows are unknown (table and DML versions);
    ``tables``: tables written where only new rows or the rows in ``rows``
    changed (table versions); ``rows``: ``(table, identity)`` pairs (row
    versions); ``everything``: unknown targets (the namespace generation).
    Table names are ``qualify()``-ed: lower case, schema translated.
    """

    __slots__ = ("full", "tables", "rows", "everything")

    def __init__(self) -> None:
        self.full: Set[str] = set()
        self.tables: Set[str] = set()
        self.rows: Set[Tuple[str, Tuple[Any, ...]]] = set()
        self.everything = False

    def __bool__(self) -> bool:
        return bool(self.everything or self.full or self.tables or self.rows)

    def update(self, other: "Writes") -> None:
        self.full |= other.full
        self.tables |= other.tables
        self.rows |= other.rows
        self.everything = self.everything or other.everything

    def __repr__(self) -> str:
        return "Writes(full=%s, tables=%s, rows=%d, everything=%s)" % (
            sorted(self.full), sorted(self.tables), len(self.rows), self.everything)


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


# -- judging statements ---------------------------------------------------------------


class _DMLPlan:
    """What a compiled statement writes, computed once per compiled object."""

    __slots__ = ("full", "tables", "rows_table", "pk_binds", "everything")

    def __init__(self) -> None:
        self.full: List[Table] = []  # TableClause too (lightweight tables)
        self.tables: List[Any] = []
        #: the table whose rows are named by ``pk_binds`` (bind keys in primary-key order)
        self.rows_table: Any = None
        self.pk_binds: Tuple[str, ...] = ()
        self.everything = False

    def writes(self, parameters: Sequence[Dict[str, Any]], translate: Optional[Dict[Any, Any]]) -> Writes:
        out = Writes()
        out.everything = self.everything
        out.full.update(qualify(table_name(t), translate) for t in self.full)
        out.tables.update(qualify(table_name(t), translate) for t in self.tables)
        if self.rows_table is not None:
            name = qualify(table_name(self.rows_table), translate)
            try:
                rows = {(name, row_identity([params[key] for key in self.pk_binds])) for params in parameters}
            except (KeyError, TypeError):  # a row not named by its parameters: rows unknown
                rows = {(name, None)}
            if any(identity is None for _, identity in rows):
                out.full.add(name)
            else:
                out.tables.add(name)
                out.rows.update(rows)  # type: ignore[arg-type]
        return out


_EVERYTHING = _DMLPlan()
_EVERYTHING.everything = True


def _tables_of(element: Any) -> List[TableClause]:
    return [node for node in visitors.iterate(element) if isinstance(node, TableClause)]


def _and_terms(clause: Any) -> Iterable[Any]:
    if isinstance(clause, BooleanClauseList) and clause.operator is operators.and_:
        for term in clause.clauses:
            yield from _and_terms(term)
    elif clause is not None:
        yield clause


def _column_id(col: Any) -> Optional[Tuple[str, str]]:
    table = getattr(col, "table", None)
    if not isinstance(col, Column) or not isinstance(table, TableClause):
        return None
    return table_name(table), col.name


def _pk_binds(node: Any, table: Any, compiled: Any) -> Optional[Tuple[str, ...]]:
    """Bind keys pinning every primary-key column of ``table`` in ``node``'s WHERE, or None."""
    if not isinstance(table, Table) or not table.primary_key.columns:
        return None
    pinned: Dict[Tuple[str, str], str] = {}
    # the names parameters are rendered under (anonymous binds get theirs at compile time)
    rendered = {bind.key: name for bind, name in (getattr(compiled, "bind_names", None) or {}).items()}
    for term in _and_terms(node.whereclause):
        if not isinstance(term, BinaryExpression) or term.operator is not operators.eq:
            continue
        for col, other in ((term.left, term.right), (term.right, term.left)):
            cid = _column_id(col)
            if cid is not None and isinstance(other, BindParameter):
                pinned.setdefault(cid, rendered.get(other.key, other.key))
    keys = []
    for col in table.primary_key.columns:
        found = pinned.get((table_name(table), col.name))
        if found is None:
            return None
        keys.append(found)
    if isinstance(node, Update):
        # an update that sets a primary-key column moves the row: old and new names, both unknown here
        where_keys = set(keys)
        set_keys = {getattr(k, "key", k) for k in _compat.set_columns(node)}
        set_keys |= set(getattr(compiled, "column_keys", None) or ()) - where_keys
        if any(col.key in set_keys or col.name in set_keys for col in table.primary_key.columns):
            return None
    return tuple(keys)


def _upsert(node: Any) -> bool:
    post = _compat.post_values_clause(node)
    return post is not None and "DoNothing" not in type(post).__name__


def _plan_compiled(compiled: Any) -> Optional[_DMLPlan]:
    statement = compiled.statement
    if isinstance(statement, DDLElement):
        return _EVERYTHING
    nodes = [node for node in visitors.iterate(statement) if isinstance(node, UpdateBase)]
    ctes = _compat.independent_ctes(statement)
    for cte in ctes:
        nodes.extend(node for node in visitors.iterate(cte) if isinstance(node, UpdateBase))
    if not nodes:
        return None
    plan = _DMLPlan()
    for node in nodes:
        targets = _tables_of(node.table)
        for table in targets:
            if isinstance(table, Table):
                remember_metadata(table.metadata)
        if isinstance(node, Insert):
            if _upsert(node):
                plan.full.extend(targets)
            else:
                plan.tables.extend(targets)
            continue
        extra = [getattr(k, "table", None) for k in _compat.values_columns(node)]
        targets += [t for t in extra if isinstance(t, TableClause) and t not in targets]
        binds = None
        if node is statement and len(targets) == 1:
            binds = _pk_binds(node, targets[0], compiled)
        if binds is not None:
            plan.rows_table, plan.pk_binds = targets[0], binds
        else:
            plan.full.extend(targets)
        # rows the database itself changes: ON DELETE / ON UPDATE actions of foreign keys
        moved_keys = binds is None or isinstance(node, Delete)
        if moved_keys:
            how = "ondelete" if isinstance(node, Delete) else "onupdate"
            plan.full.extend(dependents([t for t in targets if isinstance(t, Table)], how))
    return plan


_COMPILED: "weakref.WeakKeyDictionary[Any, Optional[_DMLPlan]]" = weakref.WeakKeyDictionary()
_TEXTS: Memo[str, Any] = Memo(2048)
_READ = object()  # memo marker: the text writes nothing


def _judge_text(sql: str, translate: Optional[Dict[Any, Any]]) -> Optional[Writes]:
    found = _TEXTS.get(sql)
    if found is None:
        found = _TEXTS.put(sql, sqltext.classify(sql) or _READ)
    if found is _READ:
        return None
    out = Writes()
    if found.tables is None:
        out.everything = True
        return out
    for name in found.tables:
        schema, table = sqltext.split_name(name)
        qualified = qualify(name if schema else table, translate)
        if found.insert_only:
            out.tables.add(qualified)
            continue
        out.full.add(qualified)
        # cascades declared in the models; unknown tables have none we could know of
        known = find_tables(schema, table)
        out.full.update(qualify(table_name(t), translate) for t in dependents(known, "ondelete"))
        out.full.update(qualify(table_name(t), translate) for t in dependents(known, "onupdate"))
    return out


def judge(context: Any, statement: str) -> Optional[Writes]:
    """What the statement about to run through ``context`` may write; None for a plain read."""
    compiled = getattr(context, "compiled", None)
    translate = context.execution_options.get("schema_translate_map")
    if compiled is None or isinstance(compiled.statement, TextClause):
        return _judge_text(statement, translate)
    try:
        plan = _COMPILED[compiled]
    except KeyError:
        plan = _plan_compiled(compiled)
        try:
            _COMPILED[compiled] = plan
        except TypeError:  # pragma: no cover - compiled objects are weak-referenceable
            pass
    if plan is None:
        return None
    return plan.writes(context.compiled_parameters or [{}], translate)


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
