"""Counting the SQL an engine sends (``before_cursor_execute``)."""

from __future__ import annotations

import threading
from typing import Dict, List, Optional, Sequence

import sqlalchemy as sa
from sqlalchemy import event


def _is_select(statement: str) -> bool:
    return statement.lstrip().upper().startswith("SELECT")


class StatementCounter:
    """Counts the statements an engine sends to the database; safe under threads.

    ``statements`` are kept in order; ``count`` is how many; ``selects()``
    counts the SELECTs, ``selects(table)`` those that name ``table``. ``keep=False`` keeps no statement
    (an expanded ``IN (...)`` is a new string each time, which would read as heap
    growth in a load test) and counts SELECTs only for the tables in ``watch``.
    """

    def __init__(self, engine: sa.Engine, keep: bool = True, watch: Sequence[str] = ()) -> None:
        self.statements: List[str] = []
        self.keep = keep
        self._count = 0
        self._watched: Dict[str, int] = {table: 0 for table in watch}
        self._lock = threading.Lock()
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany) -> None:
        with self._lock:
            self._count += 1
            if self.keep:
                self.statements.append(statement)
            elif self._watched and _is_select(statement):
                for table in self._watched:
                    if table in statement:
                        self._watched[table] += 1

    @property
    def count(self) -> int:
        """How many statements were sent since the last :meth:`reset`."""
        return len(self.statements) if self.keep else self._count

    def selects(self, table: Optional[str] = None) -> int:
        """How many SELECTs (naming ``table``, when given) were sent since the last :meth:`reset`."""
        with self._lock:
            if self.keep:
                return sum(1 for s in self.statements if _is_select(s) and (table is None or table in s))
            if table is None or table not in self._watched:
                raise ValueError(f"keep=False counts SELECTs only of the watched tables {sorted(self._watched)}")
            return self._watched[table]

    def reset(self) -> None:
        """Forget what was counted so far."""
        with self._lock:
            self.statements.clear()
            self._count = 0
            self._watched = dict.fromkeys(self._watched, 0)
