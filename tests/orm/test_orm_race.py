"""Race between two processes: a reader storing after a writer's invalidation never produces a hit."""
from __future__ import annotations

import multiprocessing
import uuid

import pytest
from sqlalchemy.orm import sessionmaker

import race_worker
from support.clients import make_client
from sqla_memcache.orm.cache import ORMCache


@pytest.mark.parametrize("kind", ["query", "get"])
def test_reader_storing_after_writer_commit_is_a_miss(db_url, engine, memcached, kind):
    if db_url.startswith("sqlite"):
        with engine.connect() as conn:  # WAL: the writer commits while the reader's SELECT is open
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    ctx = multiprocessing.get_context("spawn")
    read_done, write_done, out = ctx.Event(), ctx.Event(), ctx.Queue()
    namespace = "race" + uuid.uuid4().hex[:8]
    reader = ctx.Process(
        target=race_worker.reader, args=(db_url, memcached.servers, namespace, kind, read_done, write_done, out)
    )
    writer = ctx.Process(target=race_worker.writer, args=(db_url, memcached.servers, namespace, read_done, write_done, out))
    reader.start()
    writer.start()
    results = [out.get(timeout=race_worker.TIMEOUT) for _ in range(2)]
    reader.join(race_worker.TIMEOUT)
    writer.join(race_worker.TIMEOUT)
    assert reader.exitcode == 0 and writer.exitcode == 0
    read = next(r for r in results if "title" in r)
    written = next(r for r in results if "title" not in r)
    # the interleaving really happened: the reader read the old row and stored it after the commit
    assert read["title"] == "Film 01" and read["stores"] == 1 and written["invalidations"] == 1

    cache = ORMCache(make_client(memcached.servers), namespace=namespace)
    factory = sessionmaker(engine)
    cache.listen_on_session(factory)
    with factory() as session:
        assert race_worker.read_statement(kind)(session) == "Raced"
    assert cache.stats.hits == 0 and cache.stats.misses == 1
    with factory() as session:
        assert race_worker.read_statement(kind)(session) == "Raced"
    assert cache.stats.hits == 1
