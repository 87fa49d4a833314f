"""The demo: the MySQL manual's memcached example ("top 5 films by rental rate"), done right.

Steps, each with the number of SQL statements the engine ran and the time taken:

1. the top-5 query through :class:`~sqla_memcache.orm.FromCache` -- a miss, served by the database;
2. the same query in a fresh session -- served by memcached, **zero** SQL statements;
3. an ``UPDATE`` of one film's rental rate, committed -- the cache invalidates the query
   result and the film's cached object on commit;
4. the top-5 query again -- a miss, the database answers with the new rate;
5. ``session.get(Film, pk)`` twice for the :class:`~sqla_memcache.orm.MemcachedORMObject`
   model -- the second lookup comes from memcached;
6. the cache's hit/miss counters.

The default database is SQLite in a temporary directory, loaded from the CSVs
shipped in the package; ``--db URL`` uses MySQL/MariaDB (or PostgreSQL),
creating the database and the sakila tables when missing. The demo restores
the rate it changed, so running it twice on the same database shows the same.
"""
from __future__ import annotations

import logging
import sys
import tempfile
import time
import uuid
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator, List, Optional, Sequence, TextIO

from sqlalchemy import Engine, create_engine, event, make_url, select
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import sessionmaker

from ..memcached_process import MemcachedUnavailable, ensure_servers
from .loader import create_database_if_missing, load_sakila
from .models import Film

log = logging.getLogger(__name__)

#: The film whose rental rate the demo raises (ACADEMY DINOSAUR, 0.99 in sakila).
DEMO_FILM_ID = 1
NEW_RATE = Decimal("5.99")


class StatementCounter:
    """Counts the SQL statements an engine sends (``before_cursor_execute``)."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, *args: Any) -> None:
        self.count += 1


@dataclass
class Step:
    """One line of the demo's step table."""

    label: str
    source: str
    statements: int
    millis: float
    note: str = ""


def top5_statement() -> Any:
    """The manual's query: the five films with the highest rental rate (ties by title)."""
    from ..orm import FromCache

    return (select(Film).order_by(Film.rental_rate.desc(), Film.title).limit(5)
            .options(FromCache(expire=60)))


class Demo:
    """Runs the demo steps against a sessionmaker whose sessions an ORMCache listens on."""

    def __init__(self, engine: Engine, cache: Any, out: TextIO) -> None:
        self.engine = engine
        self.Session = sessionmaker(engine, expire_on_commit=False)
        cache.listen_on_session(self.Session)
        self.cache, self.out = cache, out
        self.sql = StatementCounter(engine)
        self.steps: List[Step] = []

    @contextmanager
    def measure(self, label: str, note: str = "") -> Iterator[Step]:
        """Record SQL count, time and where the answer came from for the body."""
        statements, hits = self.sql.count, self.cache.stats.hits
        started = time.perf_counter()
        step = Step(label, "", 0, 0.0, note)
        yield step
        step.millis = 1000 * (time.perf_counter() - started)
        step.statements = self.sql.count - statements
        if not step.source:
            step.source = "memcached" if step.statements == 0 and self.cache.stats.hits > hits else "database"
        self.steps.append(step)

    def top5(self, label: str) -> List[Film]:
        with self.measure(label), self.Session() as session:
            films = list(session.scalars(top5_statement()).all())
            session.expunge_all()
        return films

    def set_rate(self, film_id: int, rate: Decimal, label: str) -> Decimal:
        """Commit a new rental rate; return the old one."""
        invalidations = self.cache.stats.invalidations
        with self.measure(label) as step, self.Session() as session:
            film = session.get(Film, film_id)
            assert film is not None, f"film {film_id} missing from sakila"
            old, film.rental_rate = film.rental_rate, rate
            session.commit()
            step.source = "commit"
        step.note = f"{self.cache.stats.invalidations - invalidations} invalidation(s)"
        return old

    def get_film(self, film_id: int, label: str) -> Film:
        with self.measure(label), self.Session() as session:
            film = session.get(Film, film_id)
            assert film is not None
            session.expunge(film)
        return film

    def rate_in_database(self, film_id: int) -> Decimal:
        """The film's rental rate as stored (a Core query: no cache, no identity map)."""
        with self.engine.connect() as connection:
            return connection.execute(
                select(Film.__table__.c.rental_rate).where(Film.__table__.c.film_id == film_id)).scalar_one()

    def run(self) -> None:
        before = self.top5("1. top 5 films by rental rate")
        self.top5("2. the same query, new session")
        original = self.rate_in_database(DEMO_FILM_ID)
        try:
            self.set_rate(DEMO_FILM_ID, NEW_RATE, f"3. UPDATE film {DEMO_FILM_ID} SET rental_rate={NEW_RATE}; COMMIT")
            after = self.top5("4. top 5 again")
            first = self.get_film(DEMO_FILM_ID, f"5. session.get(Film, {DEMO_FILM_ID})")
            self.get_film(DEMO_FILM_ID, f"6. session.get(Film, {DEMO_FILM_ID}) again")
            self.report(before, after, first, original)
        finally:
            # leave the database as we found it, also when interrupted (Ctrl-C) or failing midway
            if self.rate_in_database(DEMO_FILM_ID) != original:
                self.set_rate(DEMO_FILM_ID, original, "restore")
                log.info("restored film %d's rental rate to %s", DEMO_FILM_ID, original)

    def report(self, before: List[Film], after: List[Film], film: Film, old: Decimal) -> None:
        from ..textfmt import format_table

        write = self.out.write
        write("\n" + format_table(
            ["step", "served by", "SQL", "time", "note"],
            [[s.label, s.source, s.statements, f"{s.millis:.1f} ms", s.note] for s in self.steps],
            right=(2, 3)) + "\n")
        write("(SQL = statements the engine sent, counted with engine events; 0 means memcached answered)\n\n")
        rows = []
        for rank in range(max(len(before), len(after))):
            b = before[rank] if rank < len(before) else None
            a = after[rank] if rank < len(after) else None
            rows.append([rank + 1,
                         f"{b.title} ({b.rental_rate})" if b else "",
                         f"{a.title} ({a.rental_rate})" if a else ""])
        write(format_table(["#", "top 5 before the update", "top 5 after the update"], rows) + "\n\n")
        write(f"Film {film.film_id} ({film.title}) from the cache: rental_rate {film.rental_rate} "
              f"(was {old})\n")
        stats = self.cache.stats
        write(f"cache stats: hits={stats.hits} misses={stats.misses} stores={stats.stores} "
              f"invalidations={stats.invalidations}\n")


def _safe(url: Optional[str]) -> str:
    """``url`` with any password masked, for messages."""
    if not url:
        return "sqlite (temporary)"
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(malformed URL)"


#: DBAPI module -> the pip package that installs it, for the "driver missing" message
DRIVER_PACKAGES = {
    "pymysql": "PyMySQL (or pip install 'sqla_memcache[mysql]')",
    "psycopg2": "psycopg2-binary (or pip install 'sqla_memcache[postgresql]')",
    "psycopg": "'psycopg[binary]'",
    "MySQLdb": "mysqlclient",
    "mysql": "mysql-connector-python",
    "mariadb": "mariadb",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "aiomysql": "aiomysql",
    "oracledb": "oracledb",
    "pyodbc": "pyodbc",
}


def missing_driver_message(url: str, exc: ImportError) -> str:
    """One line: which driver the URL needs and the pip command that installs it."""
    module = (exc.name or str(exc)).split(".")[0]
    package = DRIVER_PACKAGES.get(module, module)
    return (f"the database driver for {make_url(url).drivername} is not installed (no module {module!r}): "
            f"pip install {package}")


def _database_url(db_url: Optional[str], stack: ExitStack) -> str:
    """``db_url``, or a SQLite file in a temporary directory removed when ``stack`` closes."""
    if db_url is not None:
        return db_url
    directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="sqla_memcache_demo_"))
    return f"sqlite:///{directory}/sakila.db"


def _open_database(db_url: str, stack: ExitStack, err: TextIO) -> Engine:
    """Engine on ``db_url`` with the sakila tables created and loaded (progress on ``err``)."""
    if create_database_if_missing(db_url):
        err.write(f"created database {make_url(db_url).database}\n")
    engine = create_engine(db_url)
    stack.callback(engine.dispose)
    load_sakila(engine, progress=err)
    return engine


def run_demo(db_url: Optional[str] = None, servers: Optional[Sequence[str]] = None,
             out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Run the demo; return the process exit status (0 ok, 1 memcached or database unavailable)."""
    from ..client import Client
    from ..orm import ORMCache

    with ExitStack() as stack:
        try:
            addresses, process = ensure_servers(servers)
        except MemcachedUnavailable as exc:
            err.write(f"sqla-memcache demo: {exc}\n")
            return 1
        if process is not None:
            stack.callback(process.stop)
        url = _database_url(db_url, stack)
        started = " (started for this demo, stopped at exit)" if process else ""
        out.write('sqla_memcache demo: the MySQL manual\'s "top 5 films by rental rate", cached\n')
        out.write(f"  database : {_safe(url)}\n")
        out.write(f"  memcached: {', '.join(addresses)}{started}\n")
        out.flush()  # before the loader's progress bar on stderr
        try:
            engine = _open_database(url, stack, err)
        except OperationalError as exc:
            err.write(f"sqla-memcache demo: cannot use the database {_safe(url)}: {exc.orig}\n")
            return 1
        except ImportError as exc:  # the URL's DBAPI module is not installed
            err.write(f"sqla-memcache demo: {missing_driver_message(url, exc)}\n")
            return 1
        except ArgumentError as exc:  # malformed URL, unknown dialect
            err.write(f"sqla-memcache demo: cannot use the database URL {_safe(url)}: {exc}\n")
            return 1
        client = Client(addresses)
        stack.callback(client.disconnect_all)
        # a fresh namespace per run: the first query is a real miss even on a shared memcached
        cache = ORMCache(client, namespace=f"sakila_demo_{uuid.uuid4().hex[:12]}", expire=300)
        Demo(engine, cache, out).run()
    return 0


