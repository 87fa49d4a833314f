"""The write side: session listeners that invalidate after COMMIT.

While a transaction runs, every write made through a listening session is
recorded as version keys to bump (see ``keys.py``):

* flushed objects (``after_flush``): their tables, their row versions, the
  association tables and children of relationships whose membership changed;
* ``update()``/``delete()`` statements (``do_orm_execute``): their tables and
  the tables' DML versions, since the affected rows are unknown;
  ``insert()`` statements: their tables.

After COMMIT (``after_commit``) the recorded keys are bumped; when the root
transaction ends (commit or rollback) the record is dropped, so a rollback
invalidates nothing. Writes through raw SQL (``text()``) or other programs are
not seen: report them with ``ORMCache.invalidate_tables``.
"""
from __future__ import annotations

import itertools
import logging
from typing import Any, Optional, Set

from sqlalchemy import event, inspect
from sqlalchemy.orm import ORMExecuteState, Session, scoped_session, sessionmaker
from sqlalchemy.orm.interfaces import MANYTOONE
from sqlalchemy.sql.schema import Table
from sqlalchemy.sql.selectable import TableClause

from . import loader
from .cache import ORMCache
from .mixin import set_default_binding
from .tables import cascade_dependents, own_tables, relationship_tables, table_name
from .txstate import reset_tx_state, tx_state

log = logging.getLogger(__name__)


def _record_cascades(cache: ORMCache, pending: set, tables: Set[str], metadata: Any) -> None:
    """Deleting rows of ``tables`` may make the database change dependent rows (ON DELETE ...)."""
    dependents = cascade_dependents(tables, metadata.tables.values())
    pending.update(cache.table_keys(dependents))
    pending.update(cache.dml_keys(dependents))


def _record_object(cache: ORMCache, pending: set, obj: Any, deleted: bool) -> None:
    state = inspect(obj)
    mapper = state.mapper
    written = own_tables(mapper)
    pending.update(cache.table_keys(written))
    pending.add(cache.row_version_key(mapper, tuple(mapper.primary_key_from_instance(obj))))
    if deleted:
        _record_cascades(cache, pending, written, mapper.local_table.metadata)
    for prop in mapper.relationships:
        history = state.attrs[prop.key].history
        if deleted and prop.direction is not MANYTOONE:
            # children are updated or deleted by the ORM or the database: rows unknown
            pending.update(cache.table_keys(relationship_tables(prop)))
            pending.update(cache.dml_version_keys(prop.mapper))
        elif history.has_changes():
            pending.update(cache.table_keys(relationship_tables(prop)))
            for child in itertools.chain(history.added or (), history.deleted or ()):
                if child is not None and prop.direction is not MANYTOONE:
                    child_mapper = inspect(child).mapper
                    identity = tuple(child_mapper.primary_key_from_instance(child))
                    pending.add(cache.row_version_key(child_mapper, identity))


def _record_dml(cache: ORMCache, orm_state: ORMExecuteState, pending: set) -> None:
    statement = orm_state.statement
    tables: Set[str] = set()
    for mapper in orm_state.all_mappers:
        tables |= own_tables(mapper)
    table = getattr(statement, "table", None)
    if isinstance(table, TableClause):
        tables.add(table_name(table))
    pending.update(cache.table_keys(tables))
    if not orm_state.is_insert:
        pending.update(cache.dml_keys(tables))
    if orm_state.is_delete and isinstance(table, Table):
        _record_cascades(cache, pending, tables, table.metadata)


def _listeners(cache: ORMCache) -> dict:
    def do_orm_execute(orm_state: ORMExecuteState) -> Any:
        if orm_state.is_update or orm_state.is_delete or orm_state.is_insert:
            txs = tx_state(orm_state.session, cache)
            txs.dirty = True
            _record_dml(cache, orm_state, txs.pending)
            return None
        return loader.execute(cache, orm_state)

    def after_flush(session: Session, flush_context: Any) -> None:
        txs = tx_state(session, cache)
        txs.dirty = True
        for obj in itertools.chain(session.new, session.dirty):
            _record_object(cache, txs.pending, obj, deleted=False)
        for obj in session.deleted:
            _record_object(cache, txs.pending, obj, deleted=True)

    def after_begin(session: Session, transaction: Any, connection: Any) -> None:
        txs = tx_state(session, cache)
        if not txs.began:
            txs.began = True
            cache.retry_undelivered()
            txs.epoch = cache.read_epoch()

    def after_commit(session: Session) -> None:
        txs = tx_state(session, cache)
        pending, txs.pending = txs.pending, set()
        txs.dirty = False
        cache.bump(pending)

    def after_transaction_end(session: Session, transaction: Any) -> None:
        if transaction.parent is None:
            reset_tx_state(session, cache)

    return {
        "do_orm_execute": do_orm_execute,
        "after_flush": after_flush,
        "after_begin": after_begin,
        "after_commit": after_commit,
        "after_transaction_end": after_transaction_end,
    }


def _event_target(target: Any) -> Any:
    """The object SQLAlchemy session events can be attached to for ``target``."""
    if isinstance(target, scoped_session):
        return target.session_factory
    if isinstance(target, sessionmaker):
        return target
    try:
        from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
    except ImportError:  # pragma: no cover - asyncio extra missing
        return target
    if isinstance(target, async_sessionmaker):
        sync_class = target.kw.get("sync_session_class", Session)
        if sync_class is Session:
            log.warning("async_sessionmaker without sync_session_class: listening on every Session")
        return sync_class
    if isinstance(target, AsyncSession):
        return target.sync_session
    if isinstance(target, type) and issubclass(target, AsyncSession):
        return target.sync_session_class
    return target


def _session_factory(target: Any) -> Optional[Any]:
    """A callable returning sync sessions for the mixin, when ``target`` is one."""
    if isinstance(target, (sessionmaker, scoped_session)):
        return target
    return None


def attach(cache: ORMCache, target: Any) -> Any:
    """Install ``cache``'s listeners on ``target``; see :meth:`ORMCache.listen_on_session`."""
    event_target = _event_target(target)
    if not any(seen is event_target for seen in cache._listening):
        cache._listening.append(event_target)
        for name, fn in _listeners(cache).items():
            event.listen(event_target, name, fn)
    factory = _session_factory(target)
    if factory is not None:
        cache.session_factory = factory
        set_default_binding(cache, factory)
    return target
