"""The read side: a ``do_orm_execute`` hook serving statements from memcached.

For each cacheable statement (``FromCache``, a matching ``RelationshipCache``
lazy load, or ``session.get()`` of a ``MemcachedORMObject`` model):

1. one ``get_multi`` fetches the entry plus the version keys the last entry
   of the same statement shape was tagged with (all it may depend on the
   first time); a tagged key not among them is read before the entry is
   judged, and on a miss every key it may depend on is read before the query;
2. a hit (every tagged version present and unchanged) is merged into the
   session as ``merge(load=False)`` would (``rows.py``) -- no SQL; an entry
   this process holds decoded needs only its versions: that read is sent
   first and the objects are built while memcached answers, and for a plain
   ``session.get()`` seen before (``_guess``) it is sent even before the
   plan is worked out (and used only if the plan names that entry);
3. on a miss the versions read in step 1 (missing ones created) are the tag;
   the statement runs with ``populate_existing`` so objects already in the
   session cannot smuggle older state into the entry; the frozen result is
   stored with the tag unless the transaction forbids it (below).

Transactions: a session with unflushed or flushed-but-uncommitted changes
bypasses the cache entirely. When the transaction already ran SQL before this
statement, a REPEATABLE READ/SERIALIZABLE snapshot may predate the versions
just read; the entry is then stored only when the namespace's commit epoch,
read when the transaction began, is unchanged after the version read (writers
bump the epoch before the versions).
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Optional, Tuple

from sqlalchemy.orm import ORMExecuteState, Session

from . import _compat, capture, rows, stampede
from .api import CACHE, EXPIRE, MIN_COMPRESS_LEN, REFRESH
from .plans import UNCACHEABLE, Plan, plan_for, query_entry_key
from .scope import scope_of
from .store import EntryStore as ORMCache
from .txstate import tx_key, tx_state

log = logging.getLogger(__name__)

__all__ = ["CACHE", "EXPIRE", "MIN_COMPRESS_LEN", "REFRESH", "execute", "plan_for", "query_entry_key", "scope_of"]


def _session_is_dirty(session: Session, cache: ORMCache) -> bool:
    """True when the session holds unflushed changes or its transaction wrote anything, by any path."""
    if _compat.has_pending_changes(session):
        return True
    info = _compat.session_info(session)
    txs = info.get(tx_key(cache)) if info else None
    return txs is not None and any(capture.has_written(conn) for conn in txs.connections)


#: a guess that once named another plan: no read goes out before the plan for it again
UNSTABLE_GUESS: Any = object()


def _guess(state: ORMExecuteState) -> Optional[Tuple[Any, ...]]:
    """What a plain ``session.get()`` looks like before its plan is worked out (its mapper,
    session bind and named bound values), or None for anything else."""
    statement = state.statement
    if not _compat.is_plain_select(statement):
        return None
    params = state.parameters
    if not params or type(params) is not dict or len(_compat.where_criteria(statement)) != 1:
        return None
    return (_compat.plugin_subject(statement), id(state.session.bind)) + tuple(params.items())


def _send_early(cache: ORMCache, state: ORMExecuteState, guess: Tuple[Any, ...]) -> Optional[Tuple[Any, Any, Any]]:
    """``(plan, held entry, pending read)`` when ``guess`` names the plan of a held entry
    the lookup would read: that read goes out now, and the plan is worked out while
    memcached answers. What the lookup checks before its read is checked here first (the
    cache enabled, the session clean, no refresh, undelivered bumps re-sent), so a read
    sent here is wasted only when the plan turns out to be another one."""
    try:
        plan = cache.guesses.get(guess)
    except TypeError:  # an unhashable bound value
        return None
    if plan is None or plan is UNSTABLE_GUESS:
        return None
    target = plan.cache
    held = target.held.get(plan.key)
    if held is None or not target.enabled or _session_is_dirty(state.session, target) or _is_refresh(state):
        return None
    target.retry_undelivered()
    return plan, held, target.read_begin(list(held.tag))


def _is_refresh(state: ORMExecuteState) -> bool:
    """True when the execution asks for the database's current state (``REFRESH`` or
    ``populate_existing``): the lookup is skipped and the result stored afresh."""
    return bool(state.execution_options.get(REFRESH) or _compat.populate_existing(state))


def execute(cache: ORMCache, state: ORMExecuteState) -> Any:
    """The ``do_orm_execute`` hook body: return a Result to short-circuit, None to pass.

    A cache problem never fails the query: an error before the statement ran
    lets it run normally; one after it (storing the entry) is logged.
    """
    early = guess = None
    try:
        guess = _guess(state)
        if guess is not None:
            early = _send_early(cache, state, guess)
        plan = plan_for(cache, state)
        if early is not None and not (plan is not None and plan is not UNCACHEABLE
                                      and early[0].cache is plan.cache and early[0].key == plan.key):
            early[0].cache.read_end(early[2])  # a wrong guess: its reply is read and dropped,
            early = None
            cache.guesses.put(guess, UNSTABLE_GUESS)  # and the guess is not made again
        if early is None:
            if plan is None or plan is UNCACHEABLE:
                return None
            if not plan.cache.enabled:
                plan.cache.miss(plan.key, "disabled")
                return None
            if _session_is_dirty(state.session, plan.cache):
                plan.cache.miss(plan.key, "dirty_transaction")
                return None
    except BaseException as exc:
        if early is not None:
            early[0].cache.read_cancel(early[2])
        if not isinstance(exc, Exception):
            raise
        log.debug("could not plan a cached read", exc_info=True)
        cache.error("could not plan a cached read (%s: %s); running it uncached" % (type(exc).__name__, exc), exc)
        return None
    if early is not None:  # the guessed entry, its read sent: _send_early made the first checks
        found = _held(plan, state, early[1], early[2])
        return found if found is not None else _fetch(plan, state, False)
    return _lookup(plan, state, guess, cache)


def _lookup(plan: Plan, state: ORMExecuteState, guess: Optional[Tuple[Any, ...]] = None,
            listening: Optional[ORMCache] = None) -> Any:
    target = plan.cache
    target.retry_undelivered()
    refresh = _is_refresh(state)
    if not refresh:
        held = target.held.get(plan.key)
        if held is not None:
            if guess is not None and listening is not None and plan.object_mapper is not None:
                try:  # next time the read of this held entry goes out before the plan is worked out
                    if listening.guesses.get(guess) is None:
                        listening.guesses.put(guess, plan)
                except TypeError:  # an unhashable bound value
                    pass
            found = _held(plan, state, held, target.read_begin(list(held.tag)))
            if found is not None:
                return found
    return _fetch(plan, state, refresh)


def _held(plan: Plan, state: ORMExecuteState, held: Any, pending: Any) -> Any:
    """The held entry ``held`` as the Result when its versions (``pending``, sent) are
    current; None, and the entry dropped, when not.

    A decoded entry is held: its versions are the whole lookup (same checks, one round
    trip). Its objects are built while memcached answers and stay in the session only if
    it is current (in the usual case they are put in meanwhile, and taken out if not).
    """
    target = plan.cache
    session = state.session
    prepared = None
    try:
        prepared = rows.prepare(session, held.payload)
        # (in the usual case the objects go in now, and come out again if the entry is stale)
        rows.attach_ahead(session, prepared)
    except BaseException:
        target.read_cancel(pending)
        if prepared is not None:
            rows.withdraw(session, prepared)
        raise
    try:
        versions = target.read_end(pending)
        current = versions is not None and target.is_current(held.tag, versions)
    except BaseException:
        rows.withdraw(session, prepared)
        raise
    if current:
        target.hit(plan.key)
        return rows.attach(session, state.statement, prepared)
    rows.withdraw(session, prepared)
    target.held.drop(plan.key)
    return None


def _fetch(plan: Plan, state: ORMExecuteState, refresh: bool) -> Any:
    """The lookup of an entry not held (or no longer): fetch it with its likely versions."""
    target = plan.cache
    session = state.session
    wanted, partial = plan.likely_keys() if not refresh else (plan.version_keys(), None)
    found = target.fetch(plan.key, wanted)
    if found is None:
        target.miss(plan.key, "error")
        return None
    entry = None if refresh else target.decode(found.get(plan.key), plan.key)
    if entry is not None:
        # every key of the tag must have been read (present or not) before it is judged
        unread = [name for name in entry.tag if name not in partial] if partial is not None else ()
        if unread and not _read_more(target, unread, found):
            target.miss(plan.key, "error")
            return None
        if target.is_current(entry.tag, found):
            target.hit(plan.key)
            if partial is None or unread:
                plan.learn(entry.tag)
            return rows.merge(session, state.statement, entry.payload)
    target.miss(plan.key, "refresh" if refresh else ("absent" if entry is None else "version_moved"))
    version_keys = plan.version_keys()
    if partial is not None:
        # a miss needs every version it may be tagged with, read before the query runs
        done = partial.union(unread) if entry is not None else partial
        if not _read_more(target, [name for name in version_keys if name not in done], found):
            target.error("could not read the version keys of %s; answered uncached" % plan.key)
            return None
    if refresh or not target.stampede.enabled:
        return _load_and_store(plan, state, found)
    # concurrent misses on this entry: one runs the query, the others wait for its entry
    return stampede.load_once(
        target, plan.key, version_keys, found,
        lambda latest: _load_and_store(plan, state, latest),
        lambda entry: rows.merge(session, state.statement, entry.payload),
    )


def _read_more(target: ORMCache, names: List[str], found: dict) -> bool:
    """Add the values of version keys ``names`` to ``found``; False when memcached failed."""
    if not names:
        return True
    more = target.read(names)
    if more is None:
        return False
    found.update(more)
    return True


def _load_and_store(plan: Plan, state: ORMExecuteState, found: dict) -> Any:
    target = plan.cache
    txs = tx_state(state.session, target)
    snapshot_may_be_older = txs.began
    versions = target.ensure_versions(plan.version_keys(), found)
    storable = versions is not None
    if storable and snapshot_may_be_older:
        # Writers bump the epoch before versions, so an epoch unchanged since
        # the transaction began means no commit happened between the snapshot
        # and the versions read above.
        storable = txs.epoch is not None and target.read_epoch() == txs.epoch
        if not storable:
            log.debug("transaction snapshot may predate the versions read; %s not stored", plan.key)
    frozen = state.invoke_statement(execution_options={"populate_existing": True}).freeze()
    if versions is not None and storable:
        try:
            _store(plan, state, frozen, versions)
        except Exception as exc:  # the query ran: answer it whatever happens to the entry
            log.debug("could not store entry %s", plan.key, exc_info=True)
            target.error("could not store entry %s (%s: %s); answered uncached" % (plan.key, type(exc).__name__, exc),
                         exc)
    return frozen()


def _store(plan: Plan, state: ORMExecuteState, frozen: Any, versions: Dict[str, int]) -> None:
    target = plan.cache
    if _session_is_dirty(state.session, target):
        log.debug("transaction wrote while loading; %s not stored", plan.key)
        return
    tag = plan.tag(versions, frozen.data)
    if tag is None:
        return
    if not target.enabled:
        return
    compress = state.execution_options.get(MIN_COMPRESS_LEN)
    if target.store(plan.key, tag, frozen, plan.expire, compress):
        plan.learn(tag)
