"""Plans: how one execution is cached, computed once per statement shape.

A :class:`Plan` names the entry key, the version keys the entry may depend
on and how to tag a result; ``plan_for`` recognises the three cached kinds of
execution (``FromCache``, a matching ``RelationshipCache`` lazy load, a
``session.get()`` of a ``MemcachedORMObject`` model) and memoises their plans
per cache (``cache.plans``) from SQLAlchemy's own cache key plus the bound
values, so a hit renders, hashes and matches nothing.
"""
from __future__ import annotations

import logging
import operator
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from sqlalchemy.orm import ORMExecuteState
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import Select

from . import _compat, keys
from .api import CACHE, EXPIRE, Tag
from .options import FromCache, RelationshipCache
from .scope import execution_scope, scope_of
from .store import EntryStore as ORMCache
from .tables import entity_mappers, loaded_tables, mapper_tables, own_tables, remember_metadata, statement_tables
from ..memo import Memo, WeakMemo

log = logging.getLogger(__name__)

__all__ = ["Plan", "UNCACHEABLE", "plan_for", "query_entry_key"]


class Plan:
    """What one cacheable execution reads and writes."""

    __slots__ = ("cache", "key", "expire", "superset", "compiled", "object_mapper", "identity", "extra_tables",
                 "names", "shape", "row_keys", "translate")

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
        #: row version keys of the asked identity (an object plan)
        self.row_keys: List[str] = []
        #: the execution's schema_translate_map (table names in version keys are translated)
        self.translate: Optional[Dict[Any, Any]] = None

    def version_keys(self) -> List[str]:
        """Every version key the entry may depend on (computed once per plan; callers must not mutate it)."""
        names = self.names
        if names is None:
            cache = self.cache
            names = cache.table_keys(self.superset, self.translate) + [cache.generation_key]
            if self.object_mapper is not None:
                names = names + self.row_keys + cache.dml_keys(_hierarchy_tables(self.object_mapper), self.translate)
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
            return self.row_keys + learned[0], learned[1].union(self.row_keys)
        return learned[0], learned[1]

    def learn(self, tag: Mapping[str, Any]) -> None:
        """Remember ``tag``'s keys as the likely keys of this statement shape."""
        if self.shape is None:
            return
        own = self.row_keys
        names = [name for name in tag if name not in own] if own else list(tag)
        likely = self.cache._likely
        known = likely.get(self.shape)
        if known is None or len(known[0]) != len(names) or not known[1].issuperset(names):
            likely.put(self.shape, (names, frozenset(names)))

    def tag(self, versions: Mapping[str, int], rows: Sequence[Any]) -> Optional[Tag]:
        """The versions this entry depends on, or None when one was not read beforehand."""
        cache = self.cache
        translate = self.translate
        if self.object_mapper is not None:
            found = [obj for obj in _objects(rows)]
            if found:
                # The object's own row is guarded by its row versions (named by the identity
                # the database returned, whatever the caller's spelling) and its tables' DML
                # versions; other tables (column properties, loaded relationships -- even to
                # rows of the same table) by their table versions.
                state = found[0]
                mapper = state.mapper
                identity = keys.row_identity(state.key[1])
                own = own_tables(mapper) | own_tables(self.object_mapper)
                tables = (mapper_tables(mapper) - own) | set(loaded_tables(rows, include_roots=False))
                wanted = cache.table_keys(tables | set(self.extra_tables), translate)
                if identity is None:  # no safe row name: any write to the tables invalidates it
                    wanted += cache.table_keys(own, translate)
                else:
                    wanted += cache.row_version_keys(mapper, identity, translate)
                wanted += cache.dml_keys(own, translate)
            else:
                # "no such row": an insert creates it, so any write to the tables invalidates it
                wanted = cache.table_keys(own_tables(self.object_mapper) | set(self.extra_tables), translate)
                wanted += cache.dml_version_keys(self.object_mapper, translate)
        else:
            tables = set(self.compiled) | set(loaded_tables(rows)) | set(self.extra_tables)
            wanted = cache.table_keys(tables, translate)
        wanted.append(cache.generation_key)
        missing = [name for name in wanted if name not in versions]
        if missing:
            log.debug("entry %s depends on version keys not read before the query (%s); not stored",
                      self.key, ", ".join(missing[:3]))
            return None
        return {name: versions[name] for name in wanted}


def _objects(rows: Sequence[Any]) -> List[Any]:
    """InstanceStates of the ORM objects in a frozen result's rows (first column of each row)."""
    found = []
    for row in rows:
        value = row[0] if isinstance(row, tuple) else row
        state = _compat.state_of(value)
        if state is not None and state.key is not None:
            found.append(state)
    return found


def _is_read(state: ORMExecuteState) -> bool:
    """True for SELECTs, including ``from_statement()`` of a SELECT (text or not)."""
    if state.is_select:
        return True
    if not _compat.is_from_statement(state):
        return False
    inner = getattr(state.statement, "element", None)
    if isinstance(inner, TextClause):
        return inner.text.lstrip().upper().startswith(("SELECT", "WITH", "("))
    return isinstance(inner, Select)


def _find_option(options: Sequence[Any], kind: type) -> Any:
    """The first option of exactly ``kind`` (a RelationshipCache is not a FromCache here)."""
    for opt in options:
        if type(opt) is kind:
            return opt
    return None


#: mapper -> what a plain session.get() of it looks like: (its primary-key criterion, its
#: clause element, a getter of the primary-key values from the parameters, how many)
_GET_SHAPES: "WeakMemo[Tuple[Any, Any, Any, int]]" = WeakMemo()


def _get_shape(mapper: Any) -> Tuple[Any, Any, Any, int]:
    def make() -> Tuple[Any, Any, Any, int]:
        clause, binds = _compat.mapper_get_clause(mapper)
        names = [binds[col].key for col in mapper.primary_key]
        getter = operator.itemgetter(*names)
        values = getter if len(names) > 1 else (lambda params: (getter(params),))
        return clause, mapper.__clause_element__(), values, len(names)

    return _GET_SHAPES.get_or_make(mapper, make)


def _get_identity(state: ORMExecuteState) -> Optional[Tuple[Any, Tuple[Any, ...]]]:
    """``(mapper, identity)`` when this execution is a ``session.get()`` by primary key."""
    statement = state.statement
    criteria = _compat.where_criteria(statement)
    if len(criteria) != 1:
        return None
    # session.get() selects the mapper's own clause element filtered by the mapper's
    # own primary-key clause object: recognise that without computing all_mappers
    # (a shape remembered from before SQLAlchemy rebuilt the mapper's clauses just
    # fails the identity tests: the general recognition below runs instead)
    mapper: Any = _compat.plugin_subject(statement)
    raw: Any = _compat.raw_columns(statement)
    if getattr(mapper, "is_mapper", False) and len(raw) == 1:
        clause, element, values, count = _get_shape(mapper)
        if criteria[0] is clause and raw[0] is element:
            if not getattr(mapper.class_, "__sqla_memcache_objects__", False):
                return None
            params = state.parameters
            if not params or len(params) != count:
                return None
            try:
                return mapper, values(params)
            except KeyError:
                return None
    mappers = state.all_mappers
    if len(mappers) != 1 or not getattr(mappers[0].class_, "__sqla_memcache_objects__", False):
        return None
    mapper = mappers[0]
    clause, binds = _compat.mapper_get_clause(mapper)
    if not criteria[0].compare(clause):
        return None
    params = state.parameters or {}
    names = [binds[col].key for col in mapper.primary_key]
    if len(params) != len(names) or any(name not in params for name in names):
        return None
    return mapper, tuple(params[name] for name in names)  # type: ignore[call-overload]


#: plan_for's answer for a statement asked to be cached that cannot be (the miss is counted)
UNCACHEABLE: Any = object()


def plan_for(cache: ORMCache, state: ORMExecuteState) -> Optional[Plan]:
    """Decide whether and how this execution is cached; None to leave it alone.

    ``cache`` is the listening cache; an option's ``cache=`` or a model's
    ``__cache__`` takes precedence.
    """
    params = state.parameters
    if params and type(params) is not dict and not isinstance(params, Mapping):
        return None  # executemany
    if not _is_read(state):
        return None
    if _compat.is_plain_select(state.statement):  # a plain session.get() or an optionless query
        return _get_plan(cache, state, True)
    column_load, relationship_path = _compat.load_kind(state)
    if column_load or _compat.for_update_arg(state.statement) is not None:
        return None  # a refresh is not a query; a locking read must reach the database
    options = _compat.user_options(state)
    if relationship_path is not None:
        prop = getattr(relationship_path, "prop", None)
        for rel in options:
            if isinstance(rel, RelationshipCache) and rel.matches(prop):
                return _query_plan(rel.cache or cache, state, rel)
        return None
    opt = _find_option(options, FromCache)
    if opt is not None:
        return _query_plan(opt.cache or cache, state, opt)
    return _get_plan(cache, state, None)


def _get_plan(cache: ORMCache, state: ORMExecuteState, plain: Optional[bool]) -> Optional[Plan]:
    """The plan of a ``session.get()`` (None for any other statement), on the cache its
    execution option or model names, else ``cache``; *plain*: known to carry no options."""
    got = _get_identity(state)
    if got is None:
        return None
    chosen = state.execution_options.get(CACHE) or getattr(got[0].class_, "__cache__", None) or cache
    return _object_plan(chosen, state, *got, plain=plain)


#: mapper -> {compile options: statement_tables() of a plain session.get() of the mapper}
_GET_TABLES: "WeakMemo[Memo[Any, Tuple[frozenset, frozenset]]]" = WeakMemo()

#: mapper -> tables of it and every subclass mapper
_HIERARCHY: WeakMemo[frozenset] = WeakMemo()


def _hierarchy_tables(mapper: Any) -> frozenset:
    """Tables of ``mapper`` and every subclass mapper (a polymorphic get may return any)."""
    return _HIERARCHY.get_or_make(
        mapper, lambda: frozenset(name for m in mapper.self_and_descendants for name in own_tables(m)))


def _get_tables(mapper: Any) -> "Memo[Any, Tuple[frozenset, frozenset]]":
    return _GET_TABLES.get_or_make(mapper, lambda: Memo(64))


# Plans are kept per cache (``cache.plans``, an LRU of 8192): a plan names its cache's keys, and
# a cache that is discarded takes its plans with it.
#   ("o", mapper, compile options, identity, scope, expire) -> the Plan of a plain session.get()
#   ("q", full fingerprint, scope, option key/expire/tables)  -> the Plan of a FromCache execution


def _object_plan(target: ORMCache, state: ORMExecuteState, mapper: Any, identity: Tuple[Any, ...],
                 plain: Optional[bool] = None) -> Optional[Plan]:
    statement = state.statement
    scope = execution_scope(state)
    if scope is None:
        return None
    suffix, translate = scope
    expire = state.execution_options.get(EXPIRE)
    if plain is None:
        plain = not _compat.has_loader_options(statement)
    memo = plan_memo = None
    found_tables = None
    if plain:
        # Without loader options, what a session.get() of a mapper reads depends on the mapper
        # (and its compile options) only: skip the statement's cache key and fingerprint.
        try:
            memo = (mapper, _compat.compile_options(statement))
            plan_memo = ("o", memo, identity, suffix, expire)
            known = target.plans.get(plan_memo)
        except TypeError:  # compile options with values set, or an identity, are not hashable
            memo = plan_memo = known = None
        if known is not None:
            return known  # a plan is read-only once built (its version keys are computed once)
        found_tables = _get_tables(mapper).get(memo[1]) if memo is not None else None
    found = None
    if found_tables is None or not plain:
        found = keys.fingerprint(statement, state.parameters)  # type: ignore[arg-type]
        if found is None:
            return None
        found_tables = statement_tables(found.shape, statement, lambda: [mapper])
        if memo is not None:
            _get_tables(mapper).put(memo[1], found_tables)
    part = keys.object_part(mapper.class_, identity)
    if not plain:
        # loader options and criteria change what the object carries: part of its key
        part += ":" + found.full[:16]  # type: ignore[union-attr]
    plan = Plan(target, target.key("o", part + "@" + suffix), expire, frozenset())
    plan.object_mapper, plan.identity, plan.translate = mapper, identity, translate
    plan.compiled, plan.superset = found_tables
    plan.superset = plan.superset | _hierarchy_tables(mapper)
    named = keys.row_identity(identity)
    if named is not None:
        plan.row_keys = [k for m in mapper.self_and_descendants for k in target.row_version_keys(m, named, translate)]
        plan.row_keys = sorted(set(plan.row_keys))
    plan.shape = (memo if memo is not None else ("o", found and found.shape), suffix)
    remember_metadata(mapper.local_table.metadata)
    plan.version_keys()
    if plan_memo is not None:
        target.plans.put(plan_memo, plan)
    return plan


def query_entry_key(cache: ORMCache, statement: Any, bind: Any, parameters: Any = None,
                    key: Optional[str] = None) -> Optional[str]:
    """See :meth:`ORMCache.entry_key`."""
    found = keys.fingerprint(statement, parameters) if key is None else None
    suffix = scope_of(getattr(bind, "engine", bind))
    if suffix is None or (key is None and found is None):
        return None
    return cache.key("q", (key if key is not None else found.full) + "@" + suffix)  # type: ignore[union-attr]


def _query_plan(target: ORMCache, state: ORMExecuteState, opt: FromCache) -> Optional[Plan]:
    statement = state.statement
    found = keys.fingerprint(statement, state.parameters)  # type: ignore[arg-type]
    if found is None and opt.key is None:
        target.miss(None, "uncacheable")  # the DEBUG line of keys.fingerprint says why
        return UNCACHEABLE
    scope = execution_scope(state)
    if scope is None:
        target.miss(None, "uncacheable")
        return UNCACHEABLE
    suffix, translate = scope
    memo = ("q", found, suffix, opt.key, opt.expire, opt.tables)
    known = target.plans.get(memo)
    if known is not None:
        return known
    shape = found.shape if found is not None else None
    compiled, superset = statement_tables(shape, statement, lambda: entity_mappers(statement, state.all_mappers))
    if not compiled and not opt.tables:
        # textual SQL: what it reads is unknown, so it could never be invalidated correctly
        log.debug("no tables found in %r; name them with FromCache(tables=...) to cache it", statement)
        target.miss(None, "uncacheable")
        return UNCACHEABLE
    part = opt.key if opt.key is not None else found.full  # type: ignore[union-attr]
    plan = Plan(target, target.key("q", part + "@" + suffix), opt.expire,
                 superset | opt.tables if opt.tables else superset)
    plan.compiled, plan.extra_tables, plan.translate = compiled, opt.tables, translate
    plan.shape = shape and (shape, opt.tables, suffix)
    plan.version_keys()
    if found is not None:  # a fixed key alone does not name one statement
        target.plans.put(memo, plan)
    return plan
