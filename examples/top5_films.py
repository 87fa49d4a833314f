"""The MySQL manual's memcached example -- "the top 5 films by rental rate" -- with sqla_memcache.

Run: ``python -m examples.top5_films [--db URL] [--servers HOST:PORT]``

The default database is MariaDB/MySQL at
``mysql+pymysql://root@127.0.0.1:3306/sqla_memcache_demo``; the database and the
sakila tables are created and loaded from the CSVs shipped in the package when
missing. The example queries the top 5 twice (database, then memcached with no
SQL), raises one film's rental rate and commits (the cached result is
invalidated on commit), queries again (the new rate shows), and puts the old
rate back.
"""
from __future__ import annotations

import sys
import time
from decimal import Decimal
from typing import List, Optional, Sequence

from sqlalchemy import create_engine, make_url, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import sessionmaker

from sqla_memcache.client import Client
from sqla_memcache.demo.loader import create_database_if_missing, load_sakila
from sqla_memcache.demo.models import Film
from sqla_memcache.demo.runner import StatementCounter
from sqla_memcache.orm import FromCache, ORMCache

from ._common import argument_parser, run_with_servers

DEFAULT_DB = "mysql+pymysql://root@127.0.0.1:3306/sqla_memcache_demo"


def run(db_url: str, servers: List[str]) -> None:
    create_database_if_missing(db_url)
    engine = create_engine(db_url)
    load_sakila(engine)  # no-op when the tables already hold rows
    sql = StatementCounter(engine)

    cache = ORMCache(Client(servers), namespace="top5films", expire=300)
    Session = sessionmaker(engine, expire_on_commit=False)
    cache.listen_on_session(Session)  # invalidate on every commit through these sessions

    def top5(label: str) -> None:
        before, started = sql.count, time.perf_counter()
        with Session() as session:
            films = session.scalars(
                select(Film).order_by(Film.rental_rate.desc(), Film.title).limit(5)
                .options(FromCache(expire=60))
            ).all()
        millis, statements = 1000 * (time.perf_counter() - started), sql.count - before
        source = "memcached" if statements == 0 else "database"
        print(f"{label}: {source}, {statements} SQL statement(s), {millis:.1f} ms")
        for film in films:
            print(f"    {film.film_id:>4}  {film.title:<20} {film.rental_rate}")

    def set_rate(film_id: int, rate: Decimal) -> Decimal:
        with Session() as session:
            film = session.get(Film, film_id)
            assert film is not None, f"film {film_id} is missing"
            old, film.rental_rate = film.rental_rate, rate
            session.commit()
        return old

    try:
        top5("first query ")
        top5("second query")
        old = set_rate(1, Decimal("5.99"))
        print(f"UPDATE film 1 SET rental_rate = 5.99 (was {old}); COMMIT -> cached result invalidated")
        top5("after update")
        set_rate(1, old)
        print(f"restored film 1 to {old}")
        print("cache stats: " + ", ".join(f"{k}={v}" for k, v in cache.stats.as_dict().items()))
    finally:
        engine.dispose()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argument_parser('The MySQL manual\'s "top 5 films by rental rate" memcached example.')
    parser.add_argument("--db", default=DEFAULT_DB, help=f"SQLAlchemy URL (default {DEFAULT_DB})")
    args = parser.parse_args(argv)
    try:
        return run_with_servers(lambda servers: run(args.db, servers), args.servers)
    except OperationalError as exc:
        shown = make_url(args.db).render_as_string(hide_password=True)
        print(f"cannot use the database {shown}: {exc.orig}; pass --db URL", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
