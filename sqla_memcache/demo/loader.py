"""Create the sakila tables and load them from the CSVs shipped in ``sqla_memcache/data/sakila``.

Works on SQLite, MySQL/MariaDB and PostgreSQL. Tables that already hold rows
are left alone, so loading is idempotent; empty tables are filled with batched
``INSERT`` statements (one ``executemany`` per batch) inside one transaction,
while a text progress bar is drawn on stderr.
"""
from __future__ import annotations

import csv
import io
import re
import sys
import time
from datetime import datetime
from decimal import Decimal
from importlib import resources
from typing import Any, Callable, Dict, Iterator, List, Optional, TextIO

from sqlalchemy import DateTime, Integer, Numeric, Table, create_engine, func, select, text
from sqlalchemy.engine import Connection, Engine, make_url

from .models import TABLES, Base

BATCH_SIZE = 500


def _data_file(name: str) -> str:
    """Text of the shipped CSV for table ``name``."""
    return (resources.files("sqla_memcache") / "data" / "sakila" / f"{name}.csv").read_text(encoding="utf-8")


def _converter(column: Any) -> Callable[[str], Any]:
    """Turn a CSV cell into the column's Python type; an empty cell is NULL."""
    kind = column.type
    if isinstance(kind, Integer):
        convert: Callable[[str], Any] = int
    elif isinstance(kind, Numeric):
        convert = Decimal
    elif isinstance(kind, DateTime):
        convert = datetime.fromisoformat
    else:
        convert = str.rstrip  # sakila's CHAR columns come space-padded

    return lambda cell: None if cell == "" else convert(cell)


def csv_rows(table: Table) -> Iterator[Dict[str, Any]]:
    """Rows of the shipped CSV for ``table``, converted to the column types."""
    reader = csv.DictReader(io.StringIO(_data_file(table.name), newline=""))
    converters = {name: _converter(table.c[name]) for name in reader.fieldnames or ()}
    for record in reader:
        yield {name: converters[name](cell) for name, cell in record.items()}


def csv_row_count(table: Table) -> int:
    """Number of data rows in the shipped CSV for ``table``."""
    return sum(1 for _ in csv.reader(io.StringIO(_data_file(table.name), newline=""))) - 1


class ProgressBar:
    """A dependency-free text progress bar.

    On a terminal it redraws one line with ``\\r``; on anything else (a pipe,
    a log file) it writes a single summary line in :meth:`close`.
    """

    def __init__(self, total: int, stream: TextIO, label: str = "loading sakila", width: int = 30) -> None:
        self.total, self.stream, self.label, self.width = max(total, 1), stream, label, width
        self.done = 0
        self.started = time.perf_counter()
        self.interactive = bool(getattr(stream, "isatty", lambda: False)())

    def advance(self, count: int, detail: str = "") -> None:
        self.done += count
        if self.interactive:
            filled = self.width * self.done // self.total
            bar = "#" * filled + "." * (self.width - filled)
            self.stream.write(f"\r{self.label} [{bar}] {self.done:>5}/{self.total} {detail:<14}")
            self.stream.flush()

    def close(self, summary: str) -> None:
        elapsed = time.perf_counter() - self.started
        line = f"{self.label}: {summary} in {elapsed:.1f} s"
        # on a terminal, overwrite the bar (pad to its width); elsewhere, one plain line
        self.stream.write(("\r" + line.ljust(78) if self.interactive else line) + "\n")
        self.stream.flush()


def _row_count(connection: Connection, table: Table) -> int:
    return int(connection.execute(select(func.count()).select_from(table)).scalar_one())


def load_sakila(engine: Engine, *, batch_size: int = BATCH_SIZE,
                progress: Optional[TextIO] = sys.stderr) -> Dict[str, int]:
    """Create missing sakila tables and fill the empty ones from the shipped CSVs.

    Returns the number of rows inserted per table (0 for tables that already
    had rows). ``progress=None`` draws nothing. Raises SQLAlchemy errors as they
    come (the transaction is rolled back, nothing is half-loaded).
    """
    Base.metadata.create_all(engine, checkfirst=True)
    inserted = {table.name: 0 for table in TABLES}
    with engine.begin() as connection:
        todo = [table for table in TABLES if _row_count(connection, table) == 0]
        if not todo:
            return inserted
        bar = ProgressBar(sum(csv_row_count(t) for t in todo), progress) if progress else None
        for table in todo:
            batch: List[Dict[str, Any]] = []
            for row in csv_rows(table):
                batch.append(row)
                if len(batch) >= batch_size:
                    inserted[table.name] += _insert(connection, table, batch, bar)
            if batch:
                inserted[table.name] += _insert(connection, table, batch, bar)
        if bar:
            bar.close(f"{sum(inserted.values())} rows into {len(todo)} tables")
    return inserted


def _insert(connection: Connection, table: Table, batch: List[Dict[str, Any]],
            bar: Optional[ProgressBar]) -> int:
    connection.execute(table.insert(), batch)
    count = len(batch)
    batch.clear()
    if bar:
        bar.advance(count, table.name)
    return count


def create_database_if_missing(url: str) -> bool:
    """Create the database named in a MySQL/MariaDB or PostgreSQL ``url`` when it does not exist.

    Returns True when it was created. SQLite (the file is created on connect)
    and other backends are left alone and return False.
    """
    parsed = make_url(url)
    name = parsed.database
    backend = parsed.get_backend_name()
    if not name or backend not in ("mysql", "mariadb", "postgresql"):
        return False
    if not re.fullmatch(r"[A-Za-z0-9_]+", name):
        raise ValueError(f"refusing to create database {name!r}: use letters, digits and _ only")
    if backend == "postgresql":
        server = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    else:
        server = create_engine(parsed.set(database="information_schema"))
    try:
        with server.connect() as connection:
            if backend == "postgresql":
                exists = connection.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                            {"n": name}).first()
                if exists:
                    return False
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                exists = connection.execute(text("SELECT 1 FROM information_schema.schemata "
                                                 "WHERE schema_name = :n"), {"n": name}).first()
                if exists:
                    return False
                connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
        return True
    finally:
        server.dispose()
