"""What a textual SQL statement may write, read from its text alone (pure: no SQLAlchemy, no I/O).

``text("UPDATE film SET ...")`` and ``exec_driver_sql(...)`` reach the
database without a compiled statement to look into, so the write capture
(``capture.py``) asks :func:`classify` what the text can change:

* :data:`READ` -- a plain read or a session/transaction control statement
  (``SELECT``, ``SHOW``, ``EXPLAIN``, ``SET``, ``SAVEPOINT`` ...): nothing;
* a :class:`TextWrite` naming its target tables (``UPDATE t``,
  ``INSERT INTO t``, ``DELETE FROM t``, ``REPLACE INTO t``, ``MERGE INTO t``,
  ``TRUNCATE t``), and whether only new rows can appear (a plain insert);
* a :class:`TextWrite` with ``tables=None`` when the targets cannot be known
  (DDL, procedure calls, multi-table statements, several statements in one
  string, data-modifying CTEs, anything unrecognised): the caller then
  invalidates the whole namespace. Over-invalidate, never under.
"""
from __future__ import annotations

import re
from typing import FrozenSet, NamedTuple, Optional, Tuple


class TextWrite(NamedTuple):
    """A write found in SQL text. ``tables`` None: unknown targets (invalidate everything)."""

    #: lower-cased ``schema.table`` or ``table`` names, None when unknown
    tables: Optional[FrozenSet[str]]
    #: True when the statement can only add rows (a plain ``INSERT``)
    insert_only: bool = False


#: the classification of a statement that writes nothing
READ = None
UNKNOWN = TextWrite(None)

# (MySQL's "#" comments are left in: in PostgreSQL "#" is an operator. A statement
# opening with one is then unrecognised, hence invalidates everything.)
_COMMENTS = re.compile(r"--[^\n]*|/\*.*?\*/", re.S)
_STRINGS = re.compile(r"'(?:[^']|'')*'")
# one identifier, optionally schema-qualified, optionally quoted (`x`, "x", [x])
_PART = r'(?:`[^`]+`|"[^"]+"|\[[^\]]+\]|[A-Za-z_][\w$]*)'
_NAME = r"(%s(?:\s*\.\s*%s)?)" % (_PART, _PART)
_ALIAS = r"(?:\s+(?:AS\s+)?(?!SET\b|WHERE\b|USING\b|RETURNING\b|ORDER\b|LIMIT\b)[A-Za-z_][\w$]*)?"

_UPDATE = re.compile(r"UPDATE\s+(?:(?:LOW_PRIORITY|IGNORE|ONLY)\s+)*" + _NAME + _ALIAS + r"\s+SET\b", re.I)
_INSERT = re.compile(
    r"INSERT\s+(?:(?:LOW_PRIORITY|DELAYED|HIGH_PRIORITY|IGNORE)\s+)*(OR\s+\w+\s+)?(?:INTO\s+)?" + _NAME, re.I
)
_REPLACE = re.compile(r"REPLACE\s+(?:(?:LOW_PRIORITY|DELAYED)\s+)*(?:INTO\s+)?" + _NAME, re.I)
_DELETE = re.compile(
    r"DELETE\s+(?:(?:LOW_PRIORITY|QUICK|IGNORE)\s+)*FROM\s+(?:ONLY\s+)?" + _NAME + _ALIAS
    + r"\s*(?:$|WHERE\b|USING\b|RETURNING\b|ORDER\b|LIMIT\b)", re.I
)
_MERGE = re.compile(r"MERGE\s+INTO\s+" + _NAME, re.I)
_TRUNCATE = re.compile(r"TRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?(%s(?:\s*,\s*%s)*)\s*$" % (_NAME, _NAME), re.I)
_UPSERT = re.compile(r"\bON\s+(?:DUPLICATE\s+KEY|CONFLICT)\b", re.I)
_DML_WORD = re.compile(r"\b(?:INSERT|UPDATE|DELETE|MERGE|REPLACE|TRUNCATE)\b", re.I)
_INTO = re.compile(r"\bINTO\b", re.I)

#: first words of statements that change no data
_NO_WRITE = frozenset(
    """SELECT VALUES SHOW DESCRIBE DESC EXPLAIN SET RESET SAVEPOINT RELEASE ROLLBACK BEGIN START COMMIT
    END USE PRAGMA LISTEN UNLISTEN PREPARE DEALLOCATE XA""".split()
)


def _unquote(name: str) -> str:
    parts = [p.strip().strip('`"[]') for p in re.split(r"\s*\.\s*", name.strip())]
    return ".".join(parts).lower()


def _strip(sql: str) -> str:
    """The statement without comments and string literals, leading parentheses and trailing ``;``."""
    sql = _STRINGS.sub("''", _COMMENTS.sub(" ", sql))
    sql = sql.strip().rstrip(";").strip()
    while sql.startswith("("):
        sql = sql[1:].lstrip()
    return sql


def classify(sql: str) -> Optional[TextWrite]:
    """:data:`READ` (None) when ``sql`` cannot change data, else the :class:`TextWrite` it may do."""
    body = _strip(sql)
    if not body:
        return READ
    if ";" in body:
        return UNKNOWN  # several statements: each could write anything
    first = body.split(None, 1)[0].upper()
    if first == "EXPLAIN":
        rest = body.split(None, 1)[1] if " " in body else ""
        # EXPLAIN ANALYZE runs the statement
        return classify(rest.split(None, 1)[1]) if rest.upper().startswith("ANALYZE ") else READ
    if first in ("SELECT", "VALUES"):
        # SELECT ... INTO creates a table (PostgreSQL) or writes a file/variables (MySQL)
        return UNKNOWN if _INTO.search(body) else READ
    if first == "WITH":
        return UNKNOWN if _DML_WORD.search(body) or _INTO.search(body) else READ
    if first in _NO_WRITE:
        if first == "PRAGMA" or first == "SET" or not _DML_WORD.search(body):
            return READ
        return UNKNOWN
    matcher = {"UPDATE": _UPDATE, "INSERT": _INSERT, "REPLACE": _REPLACE, "DELETE": _DELETE,
               "MERGE": _MERGE, "TRUNCATE": _TRUNCATE}.get(first)
    found = matcher.match(body) if matcher is not None else None
    if found is None:
        return UNKNOWN  # DDL, CALL, DO, COPY, LOAD, multi-table forms, anything unrecognised
    if first == "TRUNCATE":
        if re.search(r"\bCASCADE\b", body, re.I):
            return UNKNOWN
        names = re.findall(_NAME, found.group(1))
        return TextWrite(frozenset(_unquote(n) for n in names))
    name = _unquote(found.group(found.lastindex or 1))
    if first == "INSERT":
        upsert = bool(found.group(1)) or bool(_UPSERT.search(body))  # INSERT OR REPLACE, ON CONFLICT ...
        return TextWrite(frozenset([name]), insert_only=not upsert)
    return TextWrite(frozenset([name]))


def split_name(name: str) -> Tuple[Optional[str], str]:
    """``("schema", "table")`` of a lower-cased name from :func:`classify` (schema None if unqualified)."""
    schema, _, table = name.rpartition(".")
    return (schema or None), table
