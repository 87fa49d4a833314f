"""Session wiring: the read hook, and what a listening session tells the write capture.

Writes are captured from the engine (``capture.py``), whatever path they take;
a session adds what only it knows:

* ``after_begin``: the connection its transaction uses (so the read hook can
  ask whether the transaction wrote anything), the engine to capture when it
  is not captured yet, and the namespace's commit epoch (the REPEATABLE READ
  guard in ``loader.py``);
* ``after_transaction_end`` of the root transaction: forget both;
* ``do_orm_execute``: the read hook (``loader.py``).

Sessions no cache listens on ignore ``FromCache``: once an ``ORMCache``
exists, one process-wide check says so (a WARNING per session class) instead
of leaving the statement silently uncached.
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Iterator, Optional

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, scoped_session, sessionmaker

from . import _compat, loader
from .store import EntryStore as ORMCache
from .capture import capture_for, listening
from .options import FromCache, RelationshipCache
from .txstate import reset_tx_state, tx_state
from ..memo import WeakMemo

log = logging.getLogger(__name__)


def _listeners(cache: ORMCache) -> dict:
    def do_orm_execute(orm_state: ORMExecuteState) -> Any:
        return loader.execute(cache, orm_state)

    def after_begin(session: Session, transaction: Any, connection: Any) -> None:
        engine = connection.engine
        found = listening(engine)
        if found is None or not any(c is cache for c in found.caches):
            log.debug("capturing the writes of %r (first seen in a session transaction)", engine)
            capture_for(engine).add(cache)
        txs = tx_state(session, cache)
        txs.connections.append(connection)
        if not txs.began:
            txs.began = True
            cache.retry_undelivered()
            txs.epoch = cache.read_epoch()

    def after_transaction_end(session: Session, transaction: Any) -> None:
        if transaction.parent is None:
            reset_tx_state(session, cache)

    return {
        "do_orm_execute": do_orm_execute,
        "after_begin": after_begin,
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


def _bound_engines(target: Any) -> Iterator[Any]:
    """Engines ``target`` is configured with (``bind=``/``binds=``), known before any session runs."""
    if isinstance(target, scoped_session):
        target = target.session_factory
    kw = getattr(target, "kw", None)
    if isinstance(kw, dict):
        binds = [kw.get("bind")] + list((kw.get("binds") or {}).values())
    else:
        binds = [getattr(target, "bind", None)] + list(_compat.session_binds(target).values())
    for bind in binds:
        engine = getattr(bind, "engine", bind)
        if engine is not None and hasattr(getattr(engine, "sync_engine", engine), "dialect"):
            yield engine


def session_factory(target: Any) -> Optional[Any]:
    """A callable returning sync sessions for the mixin, when ``target`` is one."""
    if isinstance(target, (sessionmaker, scoped_session)):
        return target
    return None


#: session classes and instances some cache listens on (a sessionmaker's listeners are on its class)
_LISTENED_CLASSES: "weakref.WeakSet[type]" = weakref.WeakSet()
_LISTENED_SESSIONS: "weakref.WeakSet[Any]" = weakref.WeakSet()
#: session class -> some cache listens on it or a base class (renewed by every attach())
_by_class: WeakMemo[bool] = WeakMemo()
#: session classes already warned about (once each)
_WARNED: "weakref.WeakSet[type]" = weakref.WeakSet()
_watching = False


def _listened(session: Session) -> bool:
    cls = type(session)
    if _by_class.get_or_make(cls, lambda: any(base in _LISTENED_CLASSES for base in cls.__mro__)):
        return True
    return bool(_LISTENED_SESSIONS) and session in _LISTENED_SESSIONS


def _check_unlistened(orm_state: ORMExecuteState) -> None:
    """A ``do_orm_execute`` listener on every Session: warn when a cache option meets a session no
    cache listens on. For a listened session it costs one memo lookup."""
    if _listened(orm_state.session):
        return
    options = _compat.user_options(orm_state)
    if not options:
        return
    if not any(isinstance(opt, (FromCache, RelationshipCache)) for opt in options):
        return
    cls = type(orm_state.session)
    if cls in _WARNED:
        return
    _WARNED.add(cls)
    log.warning("FromCache/RelationshipCache on a session no ORMCache listens on (%s): not cached; "
                "call cache.listen_on_session() on its sessionmaker", cls.__name__)


def _mark_listened(event_target: Any) -> None:
    global _by_class
    target = event_target.class_ if isinstance(event_target, sessionmaker) else event_target
    try:
        (_LISTENED_CLASSES if isinstance(target, type) else _LISTENED_SESSIONS).add(target)
    except TypeError:  # pragma: no cover - not weak-referenceable: the check may warn once
        return
    _by_class = WeakMemo()


def watch_unlistened() -> None:
    """Install :func:`_check_unlistened` on every Session, once per process."""
    global _watching
    if not _watching:
        _watching = True
        event.listen(Session, "do_orm_execute", _check_unlistened)


def attach(cache: ORMCache, target: Any) -> Any:
    """Install ``cache``'s listeners on ``target``; see :meth:`ORMCache.listen_on_session`."""
    event_target = _event_target(target)
    _mark_listened(event_target)
    if not any(seen is event_target for seen in cache._listening):
        cache._listening.append(event_target)
        for name, fn in _listeners(cache).items():
            event.listen(event_target, name, fn)
    for engine in _bound_engines(target):
        capture_for(engine).add(cache)
    return target
