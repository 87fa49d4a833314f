"""What a statement writes: judged once per compiled statement (or SQL text), as table and row names.

Compiled DML names its tables; an ``UPDATE``/``DELETE`` whose ``WHERE`` pins
every primary-key column to a bound value names its rows too (the unit of
work's statements do); an upsert, or an update that moves a primary key,
changes rows nobody can name. Textual SQL is read by ``sqltext.classify``.
DDL, and anything whose targets cannot be known, is "everything" (the
namespace generation). ``capture.py`` calls :func:`judge` for every
statement a listened engine runs.
"""
from __future__ import annotations

import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from sqlalchemy.sql import operators, visitors
from sqlalchemy.sql.ddl import DDLElement
from sqlalchemy.sql.dml import Delete, Insert, Update, UpdateBase
from sqlalchemy.sql.elements import BinaryExpression, BindParameter, BooleanClauseList, TextClause
from sqlalchemy.sql.schema import Column, Table
from sqlalchemy.sql.selectable import TableClause

from . import _compat, sqltext
from .keys import row_identity
from .tables import dependents, find_tables, qualify, remember_metadata, table_name
from ..memo import Memo

__all__ = ["Writes", "judge"]


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
