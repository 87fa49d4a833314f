"""sqla_memcache.AsyncClient against real memcached servers.

The behaviour tests run on both clients (``make`` is parametrised: the
blocking ``Client`` and ``AsyncClient`` driven through :class:`Blocking`), so
the two give the same answers; the asyncio-only properties (many tasks,
cancellation, the pool bound, the deadline) follow.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import random
import ssl
import threading
import time
from typing import Any, List

import pytest

from support.raw import raw_command as raw
from sqla_memcache import AsyncClient, Client, JSONSerde, errors
from sqla_memcache.serde import FLAG_SIGNED


class Blocking:
    """An AsyncClient driven from sync test code: every coroutine method runs to completion on one private loop."""

    def __init__(self, client: AsyncClient, loop: Any = None) -> None:
        self.aio = client
        self.loop = loop or asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.aio, name)
        if asyncio.iscoroutinefunction(attr):
            return lambda *a, **kw: self.loop.run_until_complete(attr(*a, **kw))
        if callable(attr):
            def call(*a: Any, **kw: Any) -> Any:
                result = attr(*a, **kw)
                return Blocking(result, self.loop) if isinstance(result, AsyncClient) else result
            return call
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("aio", "loop"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.aio, name, value)

    def close(self) -> None:
        self.loop.run_until_complete(self.aio.close())
        self.loop.close()


@pytest.fixture(params=["sync", "async"])
def make(request: pytest.FixtureRequest):
    """``make(servers, **kwargs)``: a ``Client``, or an ``AsyncClient`` behind :class:`Blocking`."""
    made: List[Blocking] = []

    def factory(servers: List[str], **kwargs: Any) -> Any:
        if request.param == "sync":
            return Client(servers, **kwargs)
        client = Blocking(AsyncClient(servers, **kwargs))
        made.append(client)
        return client

    factory.kind = request.param  # type: ignore[attr-defined]
    yield factory
    for client in made:
        client.close()


INJECTIONS = ["a\r\nflush_all", "a b", "tab\there", "nul\x00", "del\x7f", "lf\nflush_all", b"bytes\r\nflush_all"]


@pytest.mark.parametrize("key", INJECTIONS, ids=repr)
def test_bad_key_raises_and_sends_nothing(memcached, make, key):
    c = make(memcached.servers, check_keys=False)
    before = raw(memcached.address, b"stats\r\n", b"END\r\n")
    for call in (
        lambda: c.set(key, 1),
        lambda: c.get(key),
        lambda: c.add(key, 1),
        lambda: c.delete(key),
        lambda: c.incr(key),
        lambda: c.touch(key),
        lambda: c.get_multi(["ok", key]),
        lambda: c.set_multi({"ok": 1, key: 2}),
        lambda: c.delete_multi([key]),
        lambda: c.gets(key),
    ):
        with pytest.raises(Client.MemcachedKeyCharacterError):
            call()
    after = raw(memcached.address, b"stats\r\n", b"END\r\n")
    counters = lambda s: {l.split()[1]: l.split()[2] for l in s.decode().splitlines() if l.startswith("STAT cmd_")}
    assert counters(before) == counters(after), "a command reached the server"


def test_key_errors(memcached, make):
    c = make(memcached.servers)
    with pytest.raises(Client.MemcachedKeyNoneError):
        c.get(None)
    with pytest.raises(Client.MemcachedKeyTypeError):
        c.get(3.5)
    with pytest.raises(Client.MemcachedKeyLengthError):
        c.set("k" * 251, 1)
    assert c.set("k" * 250, 1) is True
    with pytest.raises(Client.MemcachedKeyLengthError):
        c.get_multi(["k" * 249], key_prefix="pp")


def test_every_command_round_trip(memcached, make):
    c = make(memcached.servers)
    assert c.set("a", {"x": [1, 2]}, time=100) is True
    assert c.get("a") == {"x": [1, 2]}
    assert c.add("a", 1) is False and c.add("b", 1) is True
    assert c.replace("zz", 1) is False and c.replace("b", 5) is True
    assert c.incr("b", 10) == 15 and c.decr("b", 20) == 0 and c.incr("nope") is None
    with pytest.raises(ValueError):
        c.incr("b", -1)
    assert c.set("s", "ab") and c.append("s", "cd") and c.prepend("s", "__") and c.get("s") == "__abcd"
    assert c.touch("s", 50) == 1 and c.touch("nope") == 0
    value, cas_id = c.gets_cas("s")
    assert value == "__abcd" and isinstance(cas_id, int)
    assert c.cas("s", "new", cas_id=cas_id) is True
    assert c.cas("s", "newer", cas_id=cas_id) is False  # EXISTS
    assert c.get("s") == "new"
    assert c.delete("s") == 1 and c.delete("s") == 0
    assert c.set_multi({"m%d" % i: i for i in range(50)}, key_prefix="p:") == []
    assert c.get_multi(["m%d" % i for i in range(60)], key_prefix="p:") == {"m%d" % i: i for i in range(50)}
    assert c.delete_multi(["m%d" % i for i in range(50)], key_prefix="p:") == 1
    assert c.get_multi(["m1"], key_prefix="p:") == {}
    assert c.set("nr", 1, noreply=True) is True and c.get("nr") == 1
    assert c.get("missing", default="dflt") == "dflt"
    assert c.get("missing") is None
    assert c.get((12345, "tuple-key")) is None and c.set((12345, "tuple-key"), 3) is True
    assert c.get((12345, "tuple-key")) == 3


def test_counters_read_without_the_serde(memcached, make):
    c = make(memcached.servers)
    assert c.set("n", 5) is True and c.incr("n", 2) == 7
    c.set("pickled", {"a": 1})
    c.set("text", "12")
    assert c.get_counters(["n", "pickled", "text", "absent"]) == {"n": 7}
    assert c.get_counter("n") == 7 and c.get_counter("pickled", "no") == "no"
    raw(memcached.address, b"set word 0 0 3\r\nabc\r\n")
    assert c.incr("word") is None  # CLIENT_ERROR non-numeric value: quiet, connection kept
    with pytest.raises(errors.ClientError):
        make(memcached.servers, strict=True).incr("word")
    assert c.get("n") == 7


def test_cache_cas(memcached, make):
    c = make(memcached.servers, cache_cas=True)
    c.set("cc", 1)
    assert c.gets("cc") == 1
    assert c.cas("cc", 2) is True
    assert c.cas("cc", 3) is False  # the remembered id is stale now
    c.reset_cas()
    assert c.cas("cc", 4) is True and c.get("cc") == 4  # no id: a plain set


def test_noreply_commands_keep_connection_in_step(memcached, make):
    c = make(memcached.servers)
    for i in range(100):
        c.set("n%d" % i, i, noreply=True)
        c.incr("n%d" % i, 1, noreply=True)
        c.touch("n%d" % i, 100, noreply=True)
    c.delete("n0", noreply=True)
    c.set_multi({"q": 1}, noreply=True)
    c.delete_multi(["q"], noreply=True)
    assert c.get_multi(["n%d" % i for i in range(100)]) == {"n%d" % i: i + 1 for i in range(1, 100)}
    assert c.get("q") is None


def test_large_values_and_compression(memcached, make):
    c = make(memcached.servers)
    blob = bytes(range(256)) * 4000  # 1000 KiB, many TCP segments
    assert c.set("blob", blob) is True
    assert c.get("blob") == blob and c.get_multi(["blob", "x"]) == {"blob": blob}
    text = "abc" * 100000
    assert c.set("text", text, min_compress_len=1000) is True
    raw_reply = raw(memcached.address, b"get text\r\n", b"END\r\n")
    flags = int(raw_reply.split(b"\r\n")[0].split()[2])
    assert flags & Client._FLAG_COMPRESSED and len(raw_reply) < 10000
    assert c.get("text") == text


def test_oversized_and_unpicklable_values(memcached, make):
    c = make(memcached.servers)
    strict = make(memcached.servers, strict=True)
    assert c.set("big", b"x" * (1024 * 1024 + 1)) == 0
    with pytest.raises(errors.ValueTooLargeError):
        strict.set("big", b"x" * (1024 * 1024 + 1))
    # Under our limit but over the server's item size: SERVER_ERROR, stream still usable.
    assert c.set("big", b"x" * (1024 * 1024 - 10)) is False
    with pytest.raises(errors.ServerError):
        strict.set("big", b"x" * (1024 * 1024 - 10))
    assert c.set("after", 1) is True and c.get("after") == 1
    assert c.set_multi({"big": b"x" * (2 << 20), "fine": 1}) == ["big"]
    assert c.set("lock", threading.Lock()) == 0
    with pytest.raises(errors.SerializationError):
        strict.set("lock", threading.Lock())
    raw(memcached.address, b"set bad 1 0 5\r\nnotpk\r\n")
    assert c.get("bad") is None
    with pytest.raises(errors.SerializationError):
        strict.get("bad")


def test_stats_slabs_and_raw_command(memcached, make):
    c = make(memcached.servers)
    c.set("a", "x" * 100)
    (name, stats), = c.get_stats()
    assert name == "%s (1)" % memcached.address and int(stats["curr_items"]) == 1
    (name, slabs), = c.get_slabs()
    assert any(int(s["number"]) == 1 for s in slabs.values())
    assert c.raw_command(0, b"version", b"VERSION").startswith(b"VERSION 1.")
    with pytest.raises(errors.ClientError):
        c.raw_command(0, b"no_such_command")
    assert c.get("a") == "x" * 100  # connection still in step
    c.flush_all()
    assert c.get("a") is None


def test_json_serde_is_plain_json_on_the_wire(memcached, make):
    c = make(memcached.servers, serde=JSONSerde())
    assert c.set("j", {"films": [1, 2], "name": "é"}) is True
    header, body = raw(memcached.address, b"get j\r\n", b"END\r\n").split(b"\r\n")[:2]
    assert header.split()[2] == b"0" and json.loads(body) == {"films": [1, 2], "name": "é"}
    assert c.get("j") == {"films": [1, 2], "name": "é"}


def test_signed_serde_refuses_tampered_and_unsigned(memcached, make):
    c = make(memcached.servers, secret_key=b"s3cret")
    strict = make(memcached.servers, secret_key=b"s3cret", strict=True)
    assert c.set("obj", {"a": 1}) is True and c.get("obj") == {"a": 1}
    header, body = raw(memcached.address, b"get obj\r\n", b"END\r\n").split(b"\r\n", 1)
    flags = int(header.split()[2])
    assert flags & FLAG_SIGNED
    body = body[: -len(b"\r\nEND\r\n")]
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    raw(memcached.address, b"set obj %d 0 %d\r\n%s\r\n" % (flags, len(tampered), tampered))
    assert c.get("obj") is None
    with pytest.raises(errors.SignatureError):
        strict.get("obj")
    Client(memcached.servers).set("planted", {"evil": True})
    assert c.get("planted") is None and c.get_multi(["planted"]) == {}


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


def test_multi_server_batches_one_request_per_server(memcached_cluster, make):
    c = make(memcached_cluster.servers)
    keys = ["k%d" % i for i in range(300)]
    assert c.set_multi({k: k for k in keys}) == []
    stat = lambda s: int(raw(s, b"stats\r\n", b"END\r\n").split(b"STAT cmd_get ")[1].split(b"\r\n")[0])
    before = [stat(s) for s in memcached_cluster.servers]
    assert c.get_multi(keys) == {k: k for k in keys}
    assert sum(stat(s) for s in memcached_cluster.servers) - sum(before) == 300


def test_dead_server_rehash_and_strict(memcached_factory, make):
    a = memcached_factory()
    b = memcached_factory()
    c = make([a.address, b.address], dead_retry=1, socket_timeout=1)
    keys = ["k%d" % i for i in range(200)]
    c.set_multi({k: 1 for k in keys})
    a.kill()
    results = [c.set(k, 2) for k in keys]
    assert results.count(0) <= 1 and results[1:].count(True) >= len(keys) - 2
    assert all(c.set(k, 2) for k in keys)
    assert c.get_multi(keys) == {k: 2 for k in keys}
    assert c.servers[0].deaduntil > 0
    a.start()
    time.sleep(1.1)
    assert c.set("probe", 1) and len(c.get_stats()) == 2  # retried after dead_retry
    strict = make([a.address], strict=True, dead_retry=30)
    a.kill()
    with pytest.raises(errors.MemcacheError):
        strict.get("x")
    with pytest.raises(errors.ServerDeadError):
        strict.get("x")  # now marked dead: not even tried
    assert make([a.address]).get("x", "fallback") == "fallback"


def test_paused_server_times_out(memcached_factory, make):
    s = memcached_factory()
    c = make(s.servers, socket_timeout=0.3, dead_retry=60)
    c.set("k", 1)
    s.pause()
    try:
        t0 = time.monotonic()
        assert c.get("k") is None
        first = time.monotonic() - t0
        assert c.get("k") is None and c.get_multi(["k"]) == {}  # marked dead: answers at once
        assert 0.25 < first < 2 and time.monotonic() - t0 < first + 0.2
    finally:
        s.resume()
    c.forget_dead_hosts()
    assert c.get("k") == 1


def test_deadline_bounds_the_whole_call(memcached_factory, make):
    s = memcached_factory()
    c = make(s.servers, socket_timeout=5, deadline=0.3, dead_retry=60)
    c.set("k", 1)
    s.pause()
    try:
        t0 = time.monotonic()
        assert c.get("k") is None
        assert time.monotonic() - t0 < 1.5  # the deadline, not the 5 s socket timeout
    finally:
        s.resume()


def test_flush_on_reconnect(memcached_factory, make):
    s = memcached_factory()
    c = make(s.servers, flush_on_reconnect=1, dead_retry=0, socket_timeout=0.2)
    other = Client(s.servers)
    other.set("k", "old")
    s.pause()
    assert c.get("k") is None  # times out, marks dead, schedules a flush
    s.resume()
    assert c.get("k") is None  # reconnect flushed the server
    assert other.get("k") is None


@pytest.mark.parametrize("hashing", ["modula", "ketama"])
def test_without_failover_keeps_keys_home(memcached_factory, make, hashing):
    a = memcached_factory()
    b = memcached_factory()
    c = make([a.address, b.address], hashing=hashing, dead_retry=60)
    home = c.without_failover()
    keys = ["k%d" % i for i in range(100)]
    assert home.set_multi({k: 1 for k in keys}) == []
    on_a = [k for k in keys if c._selector.get_node(k.encode(), lambda h: True) is c.servers[0]]
    assert 10 < len(on_a) < 90
    a.kill()
    for k in keys:
        home.set(k, 2)
    got = home.get_multi(keys)
    assert set(got) == set(keys) - set(on_a) and all(v == 2 for v in got.values())
    assert all(c.set(k, 3) for k in on_a) and c.get_multi(on_a) == {k: 3 for k in on_a}


def test_tls(tls_memcached, make):
    ctx = ssl.create_default_context(cafile=str(tls_memcached.ca_file))
    c = make(tls_memcached.servers, ssl_context=ctx)
    assert c.set("tls", {"ok": 1}) is True
    assert c.get("tls") == {"ok": 1} and c.get_multi(["tls"]) == {"tls": {"ok": 1}}
    wrong = ssl.create_default_context(cafile=str(tls_memcached.wrong_ca_file))
    with pytest.raises(errors.MemcacheError):
        make(tls_memcached.servers, ssl_context=wrong, strict=True).get("tls")
    assert make(tls_memcached.servers, ssl_context=wrong).get("tls") is None
    assert make(tls_memcached.servers, socket_timeout=1).get("tls") is None


@pytest.fixture
def unix_memcached(tmp_path):
    binary = shutil.which("memcached")
    if binary is None:
        pytest.skip("needs a local memcached binary for a unix-socket server")
    sock_path = tmp_path / "mc.sock"
    argv = [binary, "-s", str(sock_path), "-m", "16"] + (["-u", "root"] if os.geteuid() == 0 else [])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock_path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    yield sock_path
    proc.kill()
    proc.wait()


def test_unix_socket(unix_memcached, make):
    c = make(["unix:%s" % unix_memcached])
    assert c.set("u", 1) is True and c.get("u") == 1
    assert c.get_stats()[0][0] == "unix:%s (1)" % unix_memcached


# --------------------------------------------------------------------------
# asyncio only: many tasks, cancellation, the pool bound, loops
# --------------------------------------------------------------------------

def test_200_concurrent_tasks_on_3_servers_every_value_checked(memcached_cluster):
    async def main() -> None:
        c = AsyncClient(memcached_cluster.servers, pool_size=4)

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

    asyncio.run(main())


def test_cancelled_tasks_never_cross_replies(memcached_cluster):
    """Cancel many tasks at random points mid-call; every later reply still matches its key."""

    async def main() -> None:
        c = AsyncClient(memcached_cluster.servers, pool_size=3)
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

    asyncio.run(main())


def test_pool_bound_and_deadline_while_waiting(memcached):
    async def main() -> None:
        c = AsyncClient(memcached.servers, pool_size=2)
        await c.set("k", 1)
        peak = 0

        async def one() -> None:
            nonlocal peak
            assert await c.get("k") == 1
            peak = max(peak, c.servers[0].in_use)

        await asyncio.gather(*(one() for _ in range(100)))
        assert peak <= 2 and c.servers[0].idle_count() <= 2
        await c.close()

    asyncio.run(main())


def test_client_survives_a_new_event_loop(memcached):
    c = AsyncClient(memcached.servers)
    assert asyncio.run(c.set("loop", 1)) is True
    assert asyncio.run(c.get("loop")) == 1  # the first loop's idle connection is dropped, not reused
    assert asyncio.run(c.get_multi(["loop"])) == {"loop": 1}


def test_unsolicited_bytes_discard_the_connection(memcached):
    async def main() -> None:
        c = AsyncClient(memcached.servers)
        await c.set("k", "v")
        (conn,) = list(c.servers[0]._idle)
        conn.data_received(b"VALUE k 16 1\r\nx\r\nEND\r\n")  # a stray reply arrives while idle
        assert await c.get("k") == "v"  # answered on a new connection
        assert conn.transport.is_closing()
        await c.close()

    asyncio.run(main())


def test_deadline_covers_waiting_for_a_pooled_connection(memcached_factory):
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
        assert 0.25 < took < 1.0, took  # their own deadline, not the holder's
        assert await holder == 1  # the holder got its reply once the server resumed
        await c.close()

    asyncio.run(main())


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
