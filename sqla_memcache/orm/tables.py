"""Which tables a cached entry depends on, and which tables a flush wrote.

A cached result must be invalidated when any table it read changes. Three
sources are combined:

* the statement as compiled by the ORM (joins along relationships, joined
  eager loads, column properties and subqueries all appear there);
* relationships loaded by separate queries (``selectinload``, ``lazy="selectin"``
  ...), found after the load by walking the loaded objects;
* for the *version read* that must precede the query, a superset: the compiled
  tables plus every table reachable from the involved mappers through
  relationships, so any table discovered by the walk was read beforehand.
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Optional, Set, Tuple

from sqlalchemy import inspect
from sqlalchemy.orm import Mapper, RelationshipProperty
from sqlalchemy.orm.exc import UnmappedInstanceError
from sqlalchemy.sql import visitors
from sqlalchemy.sql.schema import Table
from sqlalchemy.sql.selectable import TableClause

from . import _compat
from ..memo import Memo, WeakMemo

log = logging.getLogger(__name__)


def table_name(table: TableClause) -> str:
    """Schema-qualified name used in version keys."""
    return table.fullname if isinstance(table, Table) else table.name


def _tables_in(element: Any) -> Set[str]:
    return {table_name(node) for node in visitors.iterate(element) if isinstance(node, TableClause)}


def compiled_tables(statement: Any) -> FrozenSet[str]:
    """Tables the statement reads once the ORM has expanded it (empty for text)."""
    if isinstance(statement, _compat.FromStatement):
        # only the wrapped statement is executed; the entities merely describe its rows
        return frozenset(_tables_in(statement.element))
    try:
        core = statement.compile().compile_state.statement
    except Exception:  # not every statement compiles without a dialect; fall back to its own elements
        log.debug("compile for table discovery failed; using the statement's own elements", exc_info=True)
        core = statement
    return frozenset(_tables_in(core) | _tables_in(statement))


def relationship_tables(prop: RelationshipProperty) -> Set[str]:
    """Tables read when ``prop`` is loaded: the target's tables plus any association table."""
    names = {table_name(t) for t in prop.mapper.tables}
    if prop.secondary is not None:
        names |= _tables_in(prop.secondary)
    return names


def own_tables(mapper: Mapper) -> Set[str]:
    """The tables a mapper writes (all of them for joined inheritance)."""
    return {table_name(t) for t in mapper.tables}


def qualify(name: str, translate: Optional[Dict[Any, Any]] = None) -> str:
    """The name of table ``name`` ("schema.table" or "table") in version keys.

    Lower case (databases differ in case rules; over-invalidating two tables
    that differ only in case is safe), with ``schema_translate_map`` applied,
    so a write through one tenant's engine invalidates that tenant's entries.
    """
    if translate:
        schema, _, table = name.rpartition(".")
        target = translate.get(schema or None, schema or None)
        name = "%s.%s" % (target, table) if target else table
    return name.lower()


#: every MetaData whose tables were written or read through a listened engine (for text DML cascades)
_METADATA: "weakref.WeakSet[Any]" = weakref.WeakSet()


def remember_metadata(metadata: Any) -> None:
    if metadata is not None and metadata not in _METADATA:
        _METADATA.add(metadata)


def find_tables(schema: Optional[str], name: str) -> List[Table]:
    """Tables named ``name`` (in ``schema``, or any schema when None) among the remembered MetaData."""
    found = []
    for metadata in list(_METADATA):
        for table in metadata.tables.values():
            if table.name.lower() == name and (schema is None or (table.schema or "").lower() == schema):
                found.append(table)
    return found


def _referenced(fk: Any) -> Any:
    try:
        return fk.column.table
    except Exception:  # the referenced table is not in this MetaData
        return None


def dependents(tables: Iterable[Table], how: str = "ondelete") -> List[Table]:
    """Tables whose rows the database itself changes when rows of ``tables`` are deleted
    (``how="ondelete"``) or their keys updated (``"onupdate"``).

    Follows foreign keys declared with that action (CASCADE, SET NULL ...),
    transitively; those writes never pass through SQLAlchemy.
    """
    found: List[Table] = []
    todo = [t for t in tables if isinstance(t, Table)]
    seen = set(todo)
    while todo:
        parent = todo.pop()
        metadata = parent.metadata
        for table in metadata.tables.values():
            if table in seen:
                continue
            if any(getattr(fk, how) and _referenced(fk) is parent for fk in table.foreign_keys):
                seen.add(table)
                found.append(table)
                todo.append(table)
    return found


def mapper_tables(mapper: Mapper) -> Set[str]:
    """The mapper's own tables plus those read by its column properties."""
    names = {table_name(t) for t in mapper.tables}
    for attr in mapper.column_attrs:
        for column in attr.columns:
            names |= _tables_in(column)
    return names


#: mapper -> mapper_closure(mapper), forgotten with the mapper
_CLOSURES: WeakMemo[FrozenSet[str]] = WeakMemo()


def mapper_closure(mapper: Mapper) -> FrozenSet[str]:
    """Every table reachable from ``mapper`` through relationships (including itself)."""
    return _CLOSURES.get_or_make(mapper, lambda: _closure(mapper))


def _closure(mapper: Mapper) -> FrozenSet[str]:
    seen: Set[Mapper] = set()
    names: Set[str] = set()
    todo: List[Mapper] = [mapper]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        names |= mapper_tables(current)
        for prop in current.relationships:
            names |= relationship_tables(prop)
            todo.append(prop.mapper)
        # polymorphic loads may read subclass tables
        todo.extend(current.self_and_descendants)
    return frozenset(names)


def read_superset(statement: Any, mappers: Iterable[Mapper]) -> FrozenSet[str]:
    """Tables whose versions must be read before running ``statement``."""
    names = set(compiled_tables(statement))
    for mapper in mappers:
        names |= mapper_closure(mapper)
    return frozenset(names)


def _instances(rows: Iterable[Any]) -> Iterator[Any]:
    for row in rows:
        for value in row if isinstance(row, tuple) else (row,):
            try:
                _compat.instance_state(value)
            except (AttributeError, UnmappedInstanceError):
                continue
            yield value


def loaded_tables(rows: Iterable[Any], include_roots: bool = True) -> FrozenSet[str]:
    """Tables of every relationship already loaded on the ORM objects in ``rows``, recursively.

    Objects are pickled with whatever relationships they carry, so each
    carried relationship is a dependency of the entry. With
    ``include_roots=False`` the tables of the objects in ``rows`` themselves
    are left out (unless reached again through a relationship).
    """
    names: Set[str] = set()
    seen: Set[int] = set()
    roots = list(_instances(rows))
    root_ids = {id(obj) for obj in roots} if not include_roots else set()
    todo = roots
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        state = inspect(obj)
        if id(obj) not in root_ids:
            names |= mapper_tables(state.mapper)
        for prop in state.mapper.relationships:
            if prop.key not in state.dict:
                continue
            names |= relationship_tables(prop)
            value = state.dict[prop.key]
            if value is None:
                continue
            todo.extend(value if prop.uselist else [value])
    return frozenset(names)


def entity_mappers(statement: Any, extra: Iterable[Mapper] = ()) -> List[Mapper]:
    """Mappers of the statement's entities and annotated columns, plus ``extra``."""
    found: List[Mapper] = list(extra)
    for node in visitors.iterate(statement):
        annotations = _compat.element_annotations(node)
        mapper: Optional[Mapper] = annotations.get("parentmapper")
        if mapper is not None and mapper not in found:
            found.append(mapper)
    return found


#: statement shape digest -> (compiled_tables, read_superset)
_BY_SHAPE: Memo[str, Tuple[FrozenSet[str], FrozenSet[str]]] = Memo(2048)


def statement_tables(
    shape: Optional[str], statement: Any, mappers: Callable[[], Iterable[Mapper]]
) -> Tuple[FrozenSet[str], FrozenSet[str]]:
    """``(compiled_tables, read_superset)`` of a statement, memoised by its shape digest.

    Compiling a statement to find its tables costs more than a cache hit;
    statements with equal shape (same structure, other bound values) read the
    same tables.
    """
    found = _BY_SHAPE.get(shape) if shape is not None else None
    if found is None:
        found = (compiled_tables(statement), read_superset(statement, mappers()))
        if shape is not None:
            _BY_SHAPE.put(shape, found)
    return found
