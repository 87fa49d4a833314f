"""sqla_memcache.AsyncClient: what only the asyncio client has.

The behaviour both clients share is tested once, on both, in ``test_client.py``
(its ``make`` fixture). Here: sync and async processes sharing entries, many
tasks, cancellation, the pool bound, event loops, the deadline while waiting
for a pooled connection.
"""
from __future__ import annotations

import asyncio
import random
from typing import List

import pytest

from support.clients import Blocking
from support.raw import raw_command as raw
from sqla_memcache import AsyncClient, Client


@pytest.mark.parametrize("hashing", ["modula", "ketama"])
def test_sync_and_async_processes_share_entries(memcached_cluster, hashing):
    """Written by one client, read by the other: same server choice, same flags and serde."""
    sync = Client(memcached_cluster.servers, hashing=hashing)
    aio = Blocking(AsyncClient(memcached_cluster.servers, hashing=hashing))
    try:
        values = {"k%d" % i: (i, "é" * (i % 5), b"b" * i, [i]) [i % 4] for i in range(300)}
        assert sync.set_multi(dict(list(values.items())[:150])) == []
        assert aio.set_multi(dict(list(values.items())[150:])) == []
        assert aio.get_multi(list(values)) == values == sync.get_multi(list(values))
        for key in list(values)[::7]:
            assert aio.get(key) == sync.get(key) == values[key]
        # And every key sits on the same server for both (counted per server with raw gets).
        multiget = b"get " + " ".join(values).encode() + b"\r\n"
        counts = [raw(s, multiget, b"END\r\n").count(b"VALUE ") for s in memcached_cluster.servers]
        assert sum(counts) == 300 and min(counts) > 30
        for i, host in enumerate(aio.servers):
            assert [k for k in values if aio._selector.get_node(k.encode(), lambda h: True) is host] == \
                [k for k in values if sync._selector.get_node(k.encode(), lambda h: True) is sync.servers[i]]
    finally:
        aio.close()


# --------------------------------------------------------------------------
# asyncio only: many tasks, cancellation, the pool bound, loops
# --------------------------------------------------------------------------

#: the socket timeout of the many-task tests: a call's deadline includes its wait for a
#: pooled connection, and 200 tasks queued on 4 connections of a CPU-starved machine can
#: wait longer than the default 3 s; these tests are about replies and the pool bound
LOADED = 60

def test_200_concurrent_tasks_on_3_servers_every_value_checked(memcached_cluster, run_async):
    async def main() -> None:
        c = AsyncClient(memcached_cluster.servers, pool_size=4, socket_timeout=LOADED)

        async def worker(n: int) -> None:
            for i in range(20):
                key = "w%d:%d" % (n, i)
                value = {"n": n, "i": i, "pad": "x" * random.randrange(0, 3000)}
                assert await c.set(key, value) is True
                assert await c.get(key) == value
                keys = ["w%d:%d" % (n, j) for j in range(i + 1)]
                got = await c.get_multi(keys)
                assert sorted(got) == sorted(keys) and all(got[k]["n"] == n for k in keys)
                assert got[key] == value

        await asyncio.gather(*(worker(n) for n in range(200)))
        for host in c.servers:
            assert host.in_use == 0 and host.idle_count() <= 4  # the bound held
        await c.close()

    run_async(main())


def test_cancelled_tasks_never_cross_replies(memcached_cluster, run_async):
    """Cancel many tasks at random points mid-call; every later reply still matches its key."""

    async def main() -> None:
        c = AsyncClient(memcached_cluster.servers, pool_size=3, socket_timeout=LOADED)
        keys = ["c%d" % i for i in range(300)]
        for k in keys:
            await c.set(k, k + ":" + "v" * random.randrange(1, 20000))
        opened: List[int] = []

        async def reader(n: int) -> None:
            while True:
                k = random.choice(keys)
                if n % 3:
                    value = await c.get(k)
                    assert value.startswith(k + ":"), (k, value[:20])
                else:
                    some = random.sample(keys, 5)
                    got = await c.get_multi(some)
                    assert sorted(got) == sorted(some) and all(got[s].startswith(s + ":") for s in some)

        for _ in range(30):
            tasks = [asyncio.ensure_future(reader(n)) for n in range(30)]
            await asyncio.sleep(random.random() * 0.01)
            for t in tasks:
                if not t.done():
                    t.cancel()
            done = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in done), [r for r in done if not isinstance(r, asyncio.CancelledError)]
            opened.append(sum(h.idle_count() for h in c.servers))
        for host in c.servers:
            assert host.in_use == 0 and not host.deaduntil
        # After the carnage, every reply matches its key, sequentially and concurrently.
        for k in keys:
            assert (await c.get(k)).startswith(k + ":")
        results = await asyncio.gather(*(c.get(k) for k in keys))
        assert all(v.startswith(k + ":") for k, v in zip(keys, results))
        await c.close()

    run_async(main())


def test_pool_bound_and_deadline_while_waiting(memcached, run_async):
    async def main() -> None:
        c = AsyncClient(memcached.servers, pool_size=2, socket_timeout=LOADED)
        await c.set("k", 1)
        peak = 0

        async def one() -> None:
            nonlocal peak
            assert await c.get("k") == 1
            peak = max(peak, c.servers[0].in_use)

        await asyncio.gather(*(one() for _ in range(100)))
        assert peak <= 2 and c.servers[0].idle_count() <= 2
        await c.close()

    run_async(main())


def test_client_survives_a_new_event_loop(memcached):
    c = AsyncClient(memcached.servers)
    assert asyncio.run(c.set("loop", 1)) is True
    assert asyncio.run(c.get("loop")) == 1  # the first loop's idle connection is dropped, not reused
    assert asyncio.run(c.get_multi(["loop"])) == {"loop": 1}


def test_unsolicited_bytes_discard_the_connection(memcached, run_async):
    async def main() -> None:
        c = AsyncClient(memcached.servers)
        await c.set("k", "v")
        (conn,) = list(c.servers[0]._idle)
        conn.data_received(b"VALUE k 16 1\r\nx\r\nEND\r\n")  # a stray reply arrives while idle
        assert await c.get("k") == "v"  # answered on a new connection
        assert conn.transport.is_closing()
        await c.close()

    run_async(main())


def test_deadline_covers_waiting_for_a_pooled_connection(memcached_factory, run_async):
    """The only pooled connection is held by a slow call (a view with a 5 s timeout) on a
    stopped server: the calls waiting in line for it still answer within their own 0.3 s."""
    import copy

    server = memcached_factory()

    async def main() -> None:
        c = AsyncClient(server.servers, pool_size=1, socket_timeout=0.3, dead_retry=60)
        patient = copy.copy(c)  # same servers and pool, a longer deadline
        patient.socket_timeout = 5
        await c.set("k", 1)
        server.pause()
        try:
            loop = asyncio.get_running_loop()
            holder = asyncio.ensure_future(patient.get("k", "miss"))
            await asyncio.sleep(0.05)
            assert c.servers[0].in_use == 1
            t0 = loop.time()
            results = await asyncio.gather(*(c.get("k", "miss") for _ in range(4)))
            took = loop.time() - t0
        finally:
            server.resume()
        assert results == ["miss"] * 4
        # their own deadline, not the holder's 5 s (load can only lengthen the 0.3 s)
        assert 0.25 < took < 5 * 0.9, took
        assert await holder == 1  # the holder got its reply once the server resumed
        await c.close()

    run_async(main())


def test_server_specs_and_from_url(memcached):
    host, port = memcached.address.rsplit(":", 1)
    single = AsyncClient(memcached.address)  # one "host:port" string is one server, as for Client
    assert [h.label for h in single.servers] == [memcached.address]
    c = AsyncClient.from_url("memcached://%s?hashing=ketama&max_pool_size=3" % memcached.address)
    assert c.hashing == "ketama" and c.pool_size == 3 and c.servers[0].pool_size == 3
    assert asyncio.run(c.set("url", 1)) is True and Client(memcached.servers).get("url") == 1
    twin = c.sync_client()
    assert isinstance(twin, Client) and twin.hashing == "ketama" and twin.get("url") == 1
    with pytest.raises((TypeError, ValueError)):
        AsyncClient(12345)
