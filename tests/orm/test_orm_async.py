"""AsyncSession: the sync hooks run inside the greenlet; cached results need no SQL."""
from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from orm_models import Film
from sqla_memcache.orm.options import FromCache
from support.databases import async_url
from support.sql import StatementCounter

pytest.importorskip("greenlet")


class AsyncTestSession(Session):
    """A dedicated sync class, so listening does not touch every Session in the process."""


def test_async_session_fromcache_and_invalidation(db_url, engine, cache, memcached):
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    async def main():
        aengine = create_async_engine(async_url(db_url))
        factory = async_sessionmaker(aengine, sync_session_class=AsyncTestSession)
        cache.listen_on_session(factory)
        sql = StatementCounter(aengine.sync_engine)
        stmt = select(Film.title).where(Film.film_id == 1).options(FromCache())
        async with factory() as s:
            first = (await s.scalars(stmt)).one()
        sql.reset()
        async with factory() as s:
            assert (await s.scalars(stmt)).one() == first == "Film 01"
        assert sql.statements == []
        async with factory() as s:
            (await s.get(Film, 1)).title = "Async"
            await s.commit()
        async with factory() as s:
            assert (await s.scalars(stmt)).one() == "Async"
        await aengine.dispose()

    asyncio.run(main())
