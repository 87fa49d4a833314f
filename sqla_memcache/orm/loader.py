"""The read side: a ``do_orm_execute`` hook serving statements from memcached.

For each cacheable statement (``FromCache``, a matching ``RelationshipCache``
lazy load, or ``session.get()`` of a ``MemcachedORMObject`` model):

1. one ``get_multi`` fetches the entry plus the version keys the last entry
   of the same statement shape was tagged with (all it may depend on the
   first time); a tagged key not among them is read before the entry is
   judged, and on a miss every key it may depend on is read before the query;
2. a hit (every tagged version present and unchanged) is merged into the
   session as ``merge(load=False)`` would (``rows.py``) -- no SQL;
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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import Select

from . import keys, rows, stampede
from .cache import ORMCache, Tag
from .options import FromCache, RelationshipCache
from .tables import entity_mappers, loaded_tables, mapper_tables, own_tables, statement_tables
from .txstate import is_dirty, tx_state

log = logging.getLogger(__name__)

#: execution option: skip the lookup and store a fresh copy (used by the mixin's refresh)
REFRESH = "sqla_memcache_refresh"
#: execution option: expiry for the stored entry
EXPIRE = "sqla_memcache_expire"
#: execution option: the ORMCache for a ``session.get()`` (default: the model's, else the listening one)
CACHE = "sqla_memcache_cache"
#: execution option: min_compress_len for the stored entry
MIN_COMPRESS_LEN = "sqla_memcache_min_compress_len"


class _Plan:
    """What one cacheable execution reads and writes."""

    __slots__ = ("cache", "key", "expire", "superset", "compiled", "object_mapper", "identity", "extra_tables",
                 "names", "shape", "row_key")

    def __init__(self, cache: ORMCache, key: str, expire: Optional[int], superset: frozenset) -> None:
        self.cache = cache
        self.key = key
        self.expire = expire
        self.superset = superset
        self.compiled: frozenset = frozenset()
        self.object_mapper: Any = None
        self.identity: Tuple[Any, ...] = ()
        self.extra_tables: frozenset = frozenset()
        self.names: Optional[List[str]] = None
        #: names the statement's structure (equal for executions differing in bound values only), or None
        self.shape: Any = None
        self.row_key = ""

    def version_keys(self) -> List[str]:
        """Every version key the entry may depend on (computed once per plan; callers must not mutate it)."""
        names = self.names
        if names is None:
            names = self.cache.table_keys(self.superset)
            if self.object_mapper is not None:
                names = names + [self.row_key] + self.cache.dml_version_keys(self.object_mapper)
            self.names = names
        return names

    def likely_keys(self) -> Tuple[List[str], Optional[frozenset]]:
        """Version keys to read with the entry, and their set when not all of :meth:`version_keys`.

        Usually an entry depends on far fewer keys than the read superset (a
        film's entry on its row and DML versions, not on the tables of every
        relationship it could have loaded); each key costs the lookup time.
        So the lookup reads the keys the last entry of this statement shape
        was tagged with; whatever else turns out to be needed (a different
        tag, or a miss) is read before it is used.
        """
        learned = self.cache._likely.get(self.shape) if self.shape is not None else None
        if learned is None:
            return self.version_keys(), None
        if self.object_mapper is not None:
            return [self.row_key] + learned[0], learned[1] | {self.row_key}
        return learned[0], learned[1]

    def learn(self, tag: Mapping[str, Any]) -> None:
        """Remember ``tag``'s keys as the likely keys of this statement shape."""
        if self.shape is None:
            return
        names = [name for name in tag if name != self.row_key]
        likely = self.cache._likely
        known = likely.get(self.shape)
        if known is None or len(known[0]) != len(names) or not known[1].issuperset(names):
            if len(likely) >= 4096:
                likely.clear()
            likely[self.shape] = (names, frozenset(names))

    def tag(self, versions: Mapping[str, int], rows: Sequence[Any]) -> Optional[Tag]:
        """The versions this entry depends on, or None when one was not read beforehand."""
        if self.object_mapper is not None:
            # The object's own row is guarded by its row and DML versions; other
            # tables (column properties, loaded relationships -- even to rows of
            # the same table) by their table versions.
            own = own_tables(self.object_mapper)
            tables = (mapper_tables(self.object_mapper) - own) | set(loaded_tables(rows, include_roots=False))
            wanted = self.cache.table_keys(tables | set(self.extra_tables))
            wanted += [self.cache.row_version_key(self.object_mapper, self.identity)]
            wanted += self.cache.dml_version_keys(self.object_mapper)
        else:
            tables = set(self.compiled) | set(loaded_tables(rows)) | set(self.extra_tables)
            wanted = self.cache.table_keys(tables)
        if any(name not in versions for name in wanted):
            log.debug("entry %s depends on tables not read beforehand; not stored", self.key)
            return None
        return {name: versions[name] for name in wanted}


def _is_read(state: ORMExecuteState) -> bool:
    """True for SELECTs, including ``from_statement()`` of a SELECT (text or not)."""
    if state.is_select:
        return True
    if not state.is_from_statement:
        return False
    inner = getattr(state.statement, "element", None)
    if isinstance(inner, TextClause):
        return inner.text.lstrip().upper().startswith(("SELECT", "WITH", "("))
    return isinstance(inner, Select)


def _find_option(state: ORMExecuteState, kind: type) -> Any:
    """The first option of exactly ``kind`` (a RelationshipCache is not a FromCache here)."""
    for opt in state.user_defined_options:
        if type(opt) is kind:
            return opt
    return None


def _get_identity(state: ORMExecuteState) -> Optional[Tuple[Any, Tuple[Any, ...]]]:
    """``(mapper, identity)`` when this execution is a ``session.get()`` by primary key."""
    statement = state.statement
    criteria = getattr(statement, "_where_criteria", ())
    if len(criteria) != 1:
        return None
    # session.get() selects the mapper's own clause element filtered by the mapper's
    # own primary-key clause object: recognise that without computing all_mappers
    mapper: Any = statement._propagate_attrs.get("plugin_subject")
    raw: Any = getattr(statement, "_raw_columns", ())
    if (
        getattr(mapper, "is_mapper", False) and len(raw) == 1 and criteria[0] is mapper._get_clause[0]  # type: ignore[misc]
        and raw[0] is mapper.__clause_element__()
    ):
        if not getattr(mapper.class_, "__sqla_memcache_objects__", False):
            return None
    else:
        mappers = state.all_mappers
        if len(mappers) != 1 or not getattr(mappers[0].class_, "__sqla_memcache_objects__", False):
            return None
        mapper = mappers[0]
        if not criteria[0].compare(mapper._get_clause[0]):  # type: ignore[arg-type,misc]
            return None
    binds = mapper._get_clause[1]
    params = state.parameters or {}
    names = [binds[col].key for col in mapper.primary_key]
    if len(params) != len(names) or any(name not in params for name in names):
        return None
    return mapper, tuple(params[name] for name in names)  # type: ignore[call-overload]


def plan_for(cache: ORMCache, state: ORMExecuteState) -> Optional[_Plan]:
    """Decide whether and how this execution is cached; None to leave it alone.

    ``cache`` is the listening cache; an option's ``cache=`` or a model's
    ``__cache__`` takes precedence.
    """
    params = state.parameters
    if params and type(params) is not dict and not isinstance(params, Mapping):
        return None  # executemany
    if not _is_read(state) or state.is_column_load:
        return None
    if getattr(state.statement, "_for_update_arg", None) is not None:
        return None  # a locking read must reach the database
    if state.is_relationship_load:
        prop = getattr(state.loader_strategy_path, "prop", None)
        for rel in state.user_defined_options:
            if isinstance(rel, RelationshipCache) and rel.matches(prop):
                return _query_plan(rel.cache or cache, state, rel)
        return None
    opt = _find_option(state, FromCache)
    if opt is not None:
        return _query_plan(opt.cache or cache, state, opt)
    got = _get_identity(state)
    if got is None:
        return None
    chosen = state.execution_options.get(CACHE) or getattr(got[0].class_, "__cache__", None) or cache
    return _object_plan(chosen, state, *got)


#: (mapper, compile options) -> statement_tables() of a plain session.get() of the mapper
_GET_TABLES: Dict[Any, Tuple[frozenset, frozenset]] = {}


def _object_plan(target: ORMCache, state: ORMExecuteState, mapper: Any, identity: Tuple[Any, ...]) -> _Plan:
    statement = state.statement
    part = keys.object_part(mapper.class_, identity)
    plan = _Plan(target, target.key("o", part), state.execution_options.get(EXPIRE), frozenset())
    plan.object_mapper, plan.identity = mapper, identity
    plan.row_key = target.row_version_key(mapper, identity)
    # Without loader options, what a session.get() of a mapper reads depends on the mapper
    # (and its compile options) only: skip the statement's cache key and fingerprint.
    memo = None
    if not statement._with_options and not getattr(statement, "_memoized_select_entities", ()):
        try:
            memo = (mapper, statement._compile_options)
            found_tables = _GET_TABLES.get(memo)
        except TypeError:  # compile options with values set are not hashable
            memo = found_tables = None
        if found_tables is not None:
            plan.compiled, plan.superset = found_tables
            plan.shape = memo
            return plan
    found = keys.fingerprint(statement, state.parameters)  # type: ignore[arg-type]
    plan.compiled, plan.superset = statement_tables(found and found[0], statement, lambda: [mapper])
    plan.shape = memo if memo is not None else found and ("o", found[0])
    if memo is not None and found is not None:
        if len(_GET_TABLES) >= 1024:
            _GET_TABLES.clear()
        _GET_TABLES[memo] = (plan.compiled, plan.superset)
    return plan


def _query_plan(target: ORMCache, state: ORMExecuteState, opt: FromCache) -> Optional[_Plan]:
    statement = state.statement
    found = keys.fingerprint(statement, state.parameters)  # type: ignore[arg-type]
    if found is None and opt.key is None:
        return None
    shape = found[0] if found is not None else None
    compiled, superset = statement_tables(shape, statement, lambda: entity_mappers(statement, state.all_mappers))
    if not compiled and not opt.tables:
        # textual SQL: what it reads is unknown, so it could never be invalidated correctly
        log.debug("no tables found in %r; name them with FromCache(tables=...) to cache it", statement)
        return None
    part = opt.key if opt.key is not None else found[1]  # type: ignore[index]
    plan = _Plan(target, target.key("q", part), opt.expire, superset | opt.tables if opt.tables else superset)
    plan.compiled, plan.extra_tables = compiled, opt.tables
    plan.shape = shape and (shape, opt.tables)
    return plan


def _session_is_dirty(session: Session, cache: ORMCache) -> bool:
    clean = getattr(session, "_is_clean", None)  # session.new/.dirty/.deleted, without building the sets
    pending = not clean() if clean is not None else (session.new or session.dirty or session.deleted)
    return bool(pending) or is_dirty(session, cache)


def execute(cache: ORMCache, state: ORMExecuteState) -> Any:
    """The ``do_orm_execute`` hook body: return a Result to short-circuit, None to pass."""
    plan = plan_for(cache, state)
    if plan is None:
        return None
    target = plan.cache
    session = state.session
    if _session_is_dirty(session, target):
        return None
    target.retry_undelivered()
    # populate_existing asks for the database's current state: skip the lookup, store afresh
    refresh = bool(state.execution_options.get(REFRESH) or state.execution_options.get("populate_existing"))
    wanted, partial = plan.likely_keys() if not refresh else (plan.version_keys(), None)
    found = target.fetch(plan.key, wanted)
    if found is None:
        return None
    entry = None if refresh else target.decode(found.get(plan.key))
    if entry is not None:
        # every key of the tag must have been read (present or not) before it is judged
        unread = [name for name in entry[0] if name not in partial] if partial is not None else ()
        if unread and not _read_more(target, unread, found):
            return None
        if target.is_current(entry[0], found):
            target.stats.hits += 1
            if partial is None or unread:
                plan.learn(entry[0])
            return rows.merge(session, state.statement, entry[1])
    target.stats.misses += 1
    version_keys = plan.version_keys()
    if partial is not None:
        # a miss needs every version it may be tagged with, read before the query runs
        done = partial.union(unread) if entry is not None else partial
        if not _read_more(target, [name for name in version_keys if name not in done], found):
            return None
    if refresh or not target.stampede.enabled:
        return _load_and_store(plan, state, found)
    # concurrent misses on this entry: one runs the query, the others wait for its entry
    return stampede.load_once(
        target, plan.key, version_keys, found,
        lambda latest: _load_and_store(plan, state, latest),
        lambda entry: rows.merge(session, state.statement, entry[1]),
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


def _load_and_store(plan: _Plan, state: ORMExecuteState, found: dict) -> Any:
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
    if versions is not None and storable and not _session_is_dirty(state.session, target):
        tag = plan.tag(versions, frozen.data)
        if tag is not None:
            compress = state.execution_options.get(MIN_COMPRESS_LEN)
            if target.store(plan.key, tag, frozen, plan.expire, compress):
                plan.learn(tag)
    return frozen()
