"""A FastAPI application whose ``AsyncSession`` queries are cached in memcached without blocking the event loop.

Run: ``python -m examples.fastapi_films [--servers HOST:PORT] [--db ASYNC_URL]``

The database defaults to a throwaway SQLite file (through aiosqlite) loaded
with the sakila films shipped in the package; ``--db`` takes an async URL
such as ``mysql+aiomysql://root@127.0.0.1:3306/sqla_memcache_demo`` (tables
created and loaded when missing). One ``ORMCache`` gets a blocking ``Client``
and an ``AsyncClient`` on the same servers: request handlers (``AsyncSession``)
await memcached, while a sync script or worker of the same app would share
the entries through the blocking client.

The example drives the app in-process with httpx's ``ASGITransport`` (no
server, no port): ``GET /films/top5`` twice (database, then memcached with no
SQL), ``POST /films/1/rate`` (commit invalidates), ``GET`` again (the new rate
shows), 20 concurrent ``GET`` requests (all served by memcached), then puts
the rate back.  Without fastapi/httpx installed (``pip install fastapi
httpx``) it calls the same handler functions directly.  Serve the app for
real with ``uvicorn examples.fastapi_films:app`` after setting
``SQLA_MEMCACHE_SERVERS`` and ``FILMS_DB``.
"""
from __future__ import annotations

import asyncio
import os
import sys
import tempfile
from decimal import Decimal
from typing import Any, AsyncIterator, Dict, List, Optional, Sequence

from sqlalchemy import create_engine, make_url, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Session

from sqla_memcache import AsyncClient, Client, FromCache, ORMCache
from sqla_memcache.demo.loader import create_database_if_missing, load_sakila
from sqla_memcache.demo.models import Film
from sqla_memcache.demo.runner import StatementCounter

from ._common import argument_parser, run_with_servers

_SYNC_DRIVERS = {"sqlite+aiosqlite": "sqlite", "mysql+aiomysql": "mysql+pymysql", "postgresql+asyncpg": "postgresql+psycopg2"}


class CachedSession(Session):
    """The sync class behind the app's AsyncSessions: listening touches no other Session."""


class Films:
    """The application's data layer: an async engine, a session factory and the cache."""

    def __init__(self, db_url: str, servers: List[str]) -> None:
        self.engine = create_async_engine(db_url)
        self.sql = StatementCounter(self.engine.sync_engine)
        self.cache = ORMCache(Client(servers), async_client=AsyncClient(servers),
                              namespace="fastapi_films", expire=300)
        self.sessions = async_sessionmaker(self.engine, sync_session_class=CachedSession, expire_on_commit=False)
        self.cache.listen_on_session(self.sessions)  # reads cached, commits invalidate

    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as session:
            yield session

    async def close(self) -> None:
        await self.engine.dispose()
        await self.cache.client.async_client.close()


async def top5(session: AsyncSession) -> List[Dict[str, Any]]:
    """The five films with the highest rental rate, from memcached when current."""
    films = (await session.scalars(
        select(Film).order_by(Film.rental_rate.desc(), Film.title).limit(5).options(FromCache(expire=60))
    )).all()
    return [{"film_id": f.film_id, "title": f.title, "rental_rate": str(f.rental_rate)} for f in films]


async def set_rate(session: AsyncSession, film_id: int, rate: str) -> Dict[str, Any]:
    """Change one film's rental rate; the commit invalidates every cached query reading ``film``."""
    film = await session.get(Film, film_id)
    if film is None:
        raise LookupError(film_id)
    old, film.rental_rate = film.rental_rate, Decimal(rate)
    await session.commit()
    return {"film_id": film_id, "old": str(old), "new": rate}


def create_app(films: Films) -> Any:
    """The FastAPI app (None when FastAPI is not installed)."""
    try:
        from fastapi import Depends, FastAPI, HTTPException
    except ImportError:
        return None
    app = FastAPI(title="sqla_memcache films")

    @app.get("/films/top5")
    async def get_top5(session: AsyncSession = Depends(films.session)) -> List[Dict[str, Any]]:
        return await top5(session)

    @app.post("/films/{film_id}/rate")
    async def post_rate(film_id: int, rate: str, session: AsyncSession = Depends(films.session)) -> Dict[str, Any]:
        try:
            return await set_rate(session, film_id, rate)
        except LookupError:
            raise HTTPException(404, "no film %d" % film_id) from None

    @app.get("/cache/stats")
    async def stats() -> Dict[str, int]:
        return films.cache.stats.as_dict()

    return app


def prepare_database(db_url: str) -> None:
    """Create and load the sakila tables through the matching sync driver (a no-op when loaded)."""
    url = make_url(db_url)
    sync_url = url.set(drivername=_SYNC_DRIVERS.get(url.drivername, url.drivername))
    if not sync_url.drivername.startswith("sqlite"):
        create_database_if_missing(sync_url.render_as_string(hide_password=False))
    engine = create_engine(sync_url)
    try:
        load_sakila(engine, progress=None)
    finally:
        engine.dispose()


async def drive(films: Films) -> None:
    """Send the example's requests and print what served each."""
    app = create_app(films)
    try:
        import httpx
    except ImportError:
        httpx = None  # type: ignore[assignment]
    if app is not None and httpx is not None:
        http = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://films.example")

        async def get_top5() -> List[Dict[str, Any]]:
            reply = await http.get("/films/top5")
            reply.raise_for_status()
            return reply.json()

        async def rate(film_id: int, value: str) -> Dict[str, Any]:
            reply = await http.post("/films/%d/rate" % film_id, params={"rate": value})
            reply.raise_for_status()
            return reply.json()

        print("driving the FastAPI app through httpx.ASGITransport")
    else:
        http = None
        print("(fastapi/httpx not installed: calling the handler functions directly)")

        async def get_top5() -> List[Dict[str, Any]]:
            async with films.sessions() as session:
                return await top5(session)

        async def rate(film_id: int, value: str) -> Dict[str, Any]:
            async with films.sessions() as session:
                return await set_rate(session, film_id, value)

    async def show(label: str) -> List[Dict[str, Any]]:
        before = films.sql.count
        rows = await get_top5()
        statements = films.sql.count - before
        print(f"GET /films/top5 {label}: {'memcached' if statements == 0 else 'database'}, {statements} SQL statement(s)")
        for row in rows:
            print(f"    {row['film_id']:>4}  {row['title']:<20} {row['rental_rate']}")
        return rows

    try:
        await show("(first) ")
        await show("(second)")
        changed = await rate(1, "5.99")
        print(f"POST /films/1/rate?rate=5.99 -> was {changed['old']}; COMMIT invalidated the cached top 5")
        after = await show("(after) ")
        assert after[0]["film_id"] == 1 and after[0]["rental_rate"] == "5.99"
        before = films.sql.count
        replies = await asyncio.gather(*(get_top5() for _ in range(20)))
        assert all(r == after for r in replies)
        print(f"20 concurrent GET /films/top5: {films.sql.count - before} SQL statement(s), all answers equal")
        await rate(1, changed["old"])
        print(f"restored film 1 to {changed['old']}")
        print("cache stats: " + ", ".join(f"{k}={v}" for k, v in films.cache.stats.as_dict().items()))
    finally:
        if http is not None:
            await http.aclose()


def run(db_url: Optional[str], servers: List[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        url = db_url or "sqlite+aiosqlite:///" + os.path.join(tmp, "films.db")
        prepare_database(url)

        async def main() -> None:
            films = Films(url, servers)
            try:
                await drive(films)
            finally:
                await films.close()

        asyncio.run(main())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argument_parser("A FastAPI app caching AsyncSession queries in memcached without blocking.")
    parser.add_argument("--db", default=None, help="async SQLAlchemy URL (default: a throwaway SQLite file)")
    args = parser.parse_args(argv)
    return run_with_servers(lambda servers: run(args.db, servers), args.servers)


def _app_from_environment() -> Any:
    """``uvicorn examples.fastapi_films:app``: servers from $SQLA_MEMCACHE_SERVERS, database from $FILMS_DB."""
    servers = [s for s in os.environ.get("SQLA_MEMCACHE_SERVERS", "127.0.0.1:11211").split(",") if s]
    return create_app(Films(os.environ.get("FILMS_DB", "sqlite+aiosqlite:///films.db"), servers))


def __getattr__(name: str) -> Any:  # the app is built only when asked for
    if name == "app":
        return _app_from_environment()
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
