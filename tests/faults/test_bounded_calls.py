"""Every call is bounded in time by its deadline and in memory by its request (issue 13, items 1 and 2).

A server that drips a reply one byte just under ``socket_timeout`` at a time,
or sends an endless, duplicated or oversized reply, must not hold a call
longer than about its deadline nor make the client buffer more than the
request allows: each call here returns (or raises) within 2x its deadline,
with a tracemalloc peak under 2x the largest reply a well-behaved server
could send for that request. A large honest ``get_multi`` is linear.
"""
from __future__ import annotations

import socket
import ssl
import threading
import time
import tracemalloc
from contextlib import contextmanager
from typing import Any, Callable, Iterator, List, Sequence

import pytest

from support.tls import make_tls_files
from sqla_memcache import Client, errors

from .misbehaving_server import MisbehavingServer, Request

DEADLINE = 1.0  # seconds; every call below must end within 2x this


def drip(data: bytes, every: float = 0.8) -> List[Any]:
    """Actions sending *data* one byte at a time, each just under the socket timeout apart."""
    out: List[Any] = []
    for i in range(len(data)):
        out += [every, data[i:i + 1]]
    return out


def on(name: bytes, actions: Sequence[Any]) -> Callable[[Request], Any]:
    """A rule answering every *name* command with *actions* (the others normally)."""
    return lambda req: list(actions) if req.name == name else None


def timed(call: Callable[[], Any]) -> tuple:
    """``(result or the exception raised, seconds)``."""
    t0 = time.monotonic()
    try:
        result: Any = call()
    except Exception as exc:  # the outcome is compared by the caller
        result = exc
    return result, time.monotonic() - t0


def open_before_tracing(client: Client) -> None:
    """Open *client*'s connection with a command no rule here answers badly.

    tracemalloc sees every thread, the server's too: opened inside the traced
    block, the server's connection thread would add its own 64 KB receive
    buffer to the client's peak (a test failed on that once, at 257 KB).
    """
    assert client.delete("open-the-connection") == 0
    assert client.servers[0].idle_count() == 1


@contextmanager
def traced() -> Iterator[List[int]]:
    """Yields a list that holds the tracemalloc peak (bytes) of the block once it exits."""
    out: List[int] = []
    tracemalloc.start()
    try:
        yield out
    finally:
        out.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()


# --------------------------------------------------------------------------
# slow drip: the deadline bounds the whole call, not each recv
# --------------------------------------------------------------------------

DRIPS = {
    "get": (b"get", lambda c: c.get("k"), None, b"VALUE k 0 10\r\n0123456789\r\nEND\r\n"),
    "gets": (b"gets", lambda c: c.gets("k"), None, b"VALUE k 0 10 7\r\n0123456789\r\nEND\r\n"),
    "get_multi": (b"get", lambda c: c.get_multi(["k", "j"]), {}, b"VALUE k 0 10\r\n0123456789\r\nEND\r\n"),
    # the two-half read the ORM's hit uses: its deadline runs from the send
    "get_counters_begin": (b"get", lambda c: c.get_counters_begin(["k", "j"]).result(), {},
                           b"VALUE k 0 10\r\n1234567890\r\nEND\r\n"),
    "set": (b"set", lambda c: c.set("k", b"v"), 0, b"STORED\r\n"),
    "incr": (b"incr", lambda c: c.incr("k"), None, b"1234567890\r\n"),
    "delete": (b"delete", lambda c: c.delete("k"), 0, b"DELETED\r\n"),
    "touch": (b"touch", lambda c: c.touch("k", 5), 0, b"TOUCHED\r\n"),
    "get_stats": (b"stats", lambda c: c.get_stats(), [], b"STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n"),
}


@pytest.mark.parametrize("strict", [False, True], ids=["quiet", "strict"])
@pytest.mark.parametrize("name", list(DRIPS))
def test_slow_drip_ends_within_the_deadline_and_marks_the_server_dead(misbehaving, name, strict, report):
    command, call, quiet, reply = DRIPS[name]
    misbehaving.rule = on(command, drip(reply))
    client = Client(misbehaving.servers, socket_timeout=DEADLINE, dead_retry=30, strict=strict)
    assert client.servers[0].usable()  # connected before the clock starts
    result, elapsed = timed(lambda: call(client))
    if strict:
        assert isinstance(result, errors.ConnectionLostError), result
    else:
        assert result == quiet
    assert elapsed < 2 * DEADLINE, "%s held %.2fs with a %.1fs deadline" % (name, elapsed, DEADLINE)
    assert client.servers[0].deaduntil > time.time() + 20  # treated as timed out: dead for dead_retry
    report("%s dripped one byte per 0.8 s: ended after %.2f s (deadline %.1f s)" % (name, elapsed, DEADLINE))


class TLSMisbehavingServer(MisbehavingServer):
    """The scripted server behind TLS: the client's timeouts are then Python's, not the kernel's."""

    def __init__(self, context: ssl.SSLContext) -> None:
        super().__init__()
        self._context = context

    def _serve(self, conn: socket.socket, connection: int) -> None:
        try:
            conn = self._context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            return
        super()._serve(conn, connection)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.mark.parametrize("name", ["get", "get_multi", "set"])
def test_slow_drip_over_tls_ends_within_the_deadline(tls_files, name, report):
    files = tls_files
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(str(files.cert_file), str(files.key_file))
    server = TLSMisbehavingServer(server_context).start()
    try:
        command, call, quiet, reply = DRIPS[name]
        server.rule = on(command, drip(reply))
        client = Client(server.servers, socket_timeout=DEADLINE, ssl_context=files.client_context())
        assert client.servers[0].usable()  # TLS handshake done before the clock starts
        result, elapsed = timed(lambda: call(client))
        assert result == quiet
        assert elapsed < 2 * DEADLINE, "%s over TLS held %.2fs" % (name, elapsed)
        assert client.servers[0].deaduntil > 0
        server.rule = None
        client.forget_dead_hosts()
        assert client.set("k", b"v") is True and client.get("k") == b"v"  # a fresh TLS connection works
    finally:
        server.close()
    report("%s over TLS dripped one byte per 0.8 s: ended after %.2f s" % (name, elapsed))


def test_deadline_argument_bounds_the_call_below_socket_timeout(misbehaving, report):
    misbehaving.rule = on(b"get", drip(DRIPS["get"][3], every=0.3))
    client = Client(misbehaving.servers, socket_timeout=5, deadline=DEADLINE)
    result, elapsed = timed(lambda: client.get("k"))
    assert result is None and elapsed < 2 * DEADLINE
    assert client.servers[0].deaduntil > 0
    report("deadline=%.1f with socket_timeout=5, a byte every 0.3 s: ended after %.2f s" % (DEADLINE, elapsed))


def test_connect_is_bounded_by_the_deadline():
    # 10.255.255.1 is not routed from CI machines: the SYN goes unanswered (or is refused at once).
    client = Client(["10.255.255.1:11211"], socket_timeout=DEADLINE, strict=True)
    result, elapsed = timed(lambda: client.get("k"))
    assert isinstance(result, errors.MemcacheError)
    assert elapsed < 2 * DEADLINE


class SlowReader:
    """A server that reads 64 KiB every half second and never answers: a drip on the send side."""

    def __init__(self, lifetime: float = 8.0) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(4)
        self._lifetime = lifetime
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def address(self) -> str:
        return "127.0.0.1:%d" % self._listener.getsockname()[1]

    def _serve(self) -> None:
        conn, _ = self._listener.accept()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        end = time.monotonic() + self._lifetime
        try:
            while time.monotonic() < end:
                if not conn.recv(65536):
                    return
                time.sleep(0.5)
        except OSError:
            return
        finally:
            conn.close()
            self._listener.close()


def test_a_server_reading_slowly_cannot_hold_a_large_send(report):
    server = SlowReader()
    client = Client([server.address], socket_timeout=DEADLINE, server_max_value_length=1 << 20)
    values = {"v%d" % i: b"x" * 500_000 for i in range(60)}  # 30 MB: more than any socket buffer
    result, elapsed = timed(lambda: client.set_multi(values))
    assert sorted(result) == sorted(values)  # nothing stored
    assert elapsed < 2 * DEADLINE, "a slow reader held set_multi for %.2fs" % elapsed
    assert client.servers[0].deaduntil > 0
    report("30 MB set_multi to a server reading 64 KiB per 0.5 s: failed after %.2f s" % elapsed)


# --------------------------------------------------------------------------
# endless, duplicated, unasked and oversized replies: stopped at once, memory bounded
# --------------------------------------------------------------------------

MAX_VALUE = 100_000  # server_max_value_length of these clients
BLOCK = b"x" * 50_000


def blocks(keys: Sequence[bytes], total: int) -> bytes:
    """Well-framed VALUE blocks for *keys*, round-robin, about *total* bytes, no END."""
    out = []
    size = 0
    i = 0
    while size < total:
        piece = b"VALUE %s 0 %d\r\n%s\r\n" % (keys[i % len(keys)], len(BLOCK), BLOCK)
        out.append(piece)
        size += len(piece)
        i += 1
    return b"".join(out)


def legit(keys: Sequence[bytes]) -> int:
    """The largest reply a well-behaved server may send to ``get <keys>`` under MAX_VALUE."""
    return sum(len(b"VALUE %s 4294967295 %d 18446744073709551615\r\n\r\n" % (k, MAX_VALUE)) + MAX_VALUE for k in keys) + 5


ENDLESS = {
    # name: (command, call, quiet value, prebuilt reply, bytes a legitimate reply may take)
    "same key again and again (get)": (
        b"get", lambda c: c.get("k"), None, blocks([b"k"], 8 << 20), legit([b"k"])),
    "asked keys repeated (get_multi)": (
        b"get", lambda c: c.get_multi(["a", "b"]), {}, blocks([b"a", b"b"], 8 << 20), legit([b"a", b"b"])),
    "keys never asked (get_multi)": (
        b"get", lambda c: c.get_multi(["a"]), {}, blocks([b"x%d" % i for i in range(200)], 8 << 20), legit([b"a"])),
    "value over server_max_value_length": (
        b"get", lambda c: c.get("k"), None, b"VALUE k 0 %d\r\n" % (MAX_VALUE + 1) + b"x" * (8 << 20), legit([b"k"])),
    "endless header line": (
        b"get", lambda c: c.get("k"), None, b"VALUE k 0 " + b"9" * (8 << 20), legit([b"k"])),
    "endless STAT lines": (
        b"stats", lambda c: c.get_stats(), [], b"STAT pid 1\r\n" * 400_000, 1 << 20),
}


@pytest.mark.parametrize("name", list(ENDLESS))
def test_endless_or_unasked_reply_stops_at_once_with_bounded_memory(misbehaving, name, report):
    command, call, quiet, reply, legit_bytes = ENDLESS[name]
    misbehaving.rule = on(command, [reply, 5.0])
    client = Client(misbehaving.servers, socket_timeout=DEADLINE, server_max_value_length=MAX_VALUE)
    open_before_tracing(client)
    with traced() as peak:
        result, elapsed = timed(lambda: call(client))
    assert result == quiet
    assert elapsed < 2 * DEADLINE, "%s: %.2fs" % (name, elapsed)
    assert peak[0] < 2 * legit_bytes, "%s: peak %d bytes for a legitimate %d" % (name, peak[0], legit_bytes)
    assert client.servers[0].deaduntil > 0 and client.servers[0].idle_count() == 0
    strict = Client(misbehaving.servers, socket_timeout=DEADLINE, server_max_value_length=MAX_VALUE, strict=True)
    with pytest.raises(errors.ProtocolError):
        call(strict)
    report("%s: %d MB sent, stopped after %.3f s, peak %d KB (legitimate reply <= %d KB)"
           % (name, len(reply) >> 20, elapsed, peak[0] >> 10, legit_bytes >> 10))


def test_endless_raw_command_reply_is_capped(misbehaving, report):
    misbehaving.rule = on(b"lru_crawler", [b"key=k exp=-1 la=1 cas=1 fetch=no cls=1 size=60\n" * 200_000, 5.0])
    client = Client(misbehaving.servers, socket_timeout=DEADLINE)
    open_before_tracing(client)
    with traced() as peak:
        result, elapsed = timed(lambda: client.raw_command(0, b"lru_crawler metadump all", max_bytes=1 << 20))
    assert isinstance(result, errors.ProtocolError), result
    assert elapsed < 2 * DEADLINE
    assert peak[0] < 2 * (1 << 20)
    report("endless metadump (9 MB) with max_bytes=1 MiB: refused after %.3f s, peak %d KB" % (elapsed, peak[0] >> 10))


def test_stats_and_metadump_of_a_real_server_fit_the_caps(memcached):
    c = Client(memcached.servers)
    c.set_multi({"k%d" % i: i for i in range(2000)})
    for args in (None, "items", "slabs", "settings", "conns"):
        assert c.get_stats(args), args
    dump = c.raw_command(0, b"lru_crawler metadump all")
    assert dump.count(b"key=") == 2000 and dump.endswith(b"END\r\n")


# --------------------------------------------------------------------------
# a large honest get_multi is linear
# --------------------------------------------------------------------------

def test_get_multi_of_10000_values_of_10_kb_is_within_2x_of_10000_single_gets(memcached_factory, report):
    server = memcached_factory(memory_mb=512)
    client = Client(server.servers, socket_timeout=60)
    keys = ["big-%05d" % i for i in range(10_000)]
    value = b"v" * 10_240
    for start in range(0, len(keys), 500):
        assert client.set_multi({k: value for k in keys[start:start + 500]}) == []

    def singles() -> tuple:
        cpu, wall = time.process_time(), time.perf_counter()
        for k in keys:
            client.get(k)
        return time.process_time() - cpu, time.perf_counter() - wall

    def multi() -> tuple:
        cpu, wall = time.process_time(), time.perf_counter()
        got = client.get_multi(keys)
        elapsed = time.process_time() - cpu, time.perf_counter() - wall
        assert len(got) == len(keys) and got[keys[-1]] == value
        return elapsed

    # Best of three each, interleaved, so a burst of load on the machine hits both. The
    # assertion is on this process's CPU time (what a quadratic parser burns; other
    # processes on the machine do not change it); wall time is reported.
    runs = [(singles(), multi()) for _ in range(3)]
    single_cpu, single_wall = min(r[0][0] for r in runs), min(r[0][1] for r in runs)
    multi_cpu, multi_wall = min(r[1][0] for r in runs), min(r[1][1] for r in runs)
    report("10,000 x 10 KB: get_multi %.3f s CPU / %.3f s wall, 10,000 single gets %.3f s CPU / %.3f s wall "
           "(CPU ratio %.2f)" % (multi_cpu, multi_wall, single_cpu, single_wall, multi_cpu / single_cpu))
    assert multi_cpu < 2 * single_cpu


def test_a_dripped_metadump_ends_within_its_timeout(misbehaving, report):
    """MemcachedDict listing (mdict.dump_keys) reads metadump over a socket of its own: bounded too."""
    from sqla_memcache.mdict import dump_keys

    line = b"key=a exp=-1 la=1 cas=1 fetch=no cls=1 size=60\nEND\r\n"
    misbehaving.rule = on(b"lru_crawler", drip(line, every=0.3))
    client = Client(misbehaving.servers)
    result, elapsed = timed(lambda: list(dump_keys(client, timeout=DEADLINE)))
    assert isinstance(result, TimeoutError), result
    assert elapsed < 2 * DEADLINE
    report("metadump dripped one byte per 0.3 s, timeout=%.1f: ended after %.2f s" % (DEADLINE, elapsed))


def test_a_dripping_server_in_get_multi_does_not_cost_the_other_servers_their_values(misbehaving, memcached, report):
    """One deadline for the whole get_multi; a reply that already arrived from a healthy
    server is still read after a dripping server used the time up."""
    client = Client([misbehaving.address, memcached.address], socket_timeout=DEADLINE, dead_retry=30)
    keys = ["m%d" % i for i in range(40)]
    on_fake = [k for k in keys if client._selector.get_node(k.encode(), lambda h: True) is client.servers[0]]
    on_real = [k for k in keys if k not in on_fake]
    assert on_fake and on_real
    Client([memcached.address]).set_multi({k: b"real-" + k.encode() for k in on_real})
    misbehaving.rule = on(b"get", drip(b"VALUE %s 0 1\r\nx\r\nEND\r\n" % on_fake[0].encode()))
    for server in client.servers:
        assert server.usable()
    # The dripping server's keys first: its reply is read first and uses the whole deadline.
    result, elapsed = timed(lambda: client.get_multi(on_fake + on_real))
    assert result == {k: b"real-" + k.encode() for k in on_real}
    assert elapsed < 2 * DEADLINE
    assert client.servers[0].deaduntil > 0 and client.servers[1].deaduntil == 0
    report("get_multi over a dripping and a healthy server: the healthy one's %d values after %.2f s"
           % (len(on_real), elapsed))


@pytest.mark.parametrize("call", ["get", "get_multi_one_server", "get_multi_many_keys", "set"])
def test_time_spent_connecting_counts_against_the_call_deadline(monkeypatch, report, call):
    """A new connection that took most of the budget leaves only the rest for the reply
    (the reply's wait is not given a whole fresh socket_timeout), for one-key calls and batches."""
    from sqla_memcache.transport.host import Host

    silent = socket.socket()  # accepts (the kernel does) but never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(4)
    connect = Host.connect

    def slow_connect(self, deadline=None):
        time.sleep(0.6 * DEADLINE)
        return connect(self, deadline)

    monkeypatch.setattr(Host, "connect", slow_connect)
    client = Client(["127.0.0.1:%d" % silent.getsockname()[1]], socket_timeout=DEADLINE, strict=True)
    run = {"get": lambda: client.get("k"),
           "get_multi_one_server": lambda: client.get_multi(["a", "b"]),
           "get_multi_many_keys": lambda: client.get_multi(["k%d" % i for i in range(20)]),
           "set": lambda: client.set("k", b"v")}[call]
    try:
        result, elapsed = timed(run)
    finally:
        silent.close()
    assert isinstance(result, errors.ConnectionLostError)
    assert elapsed < DEADLINE + 0.25, elapsed
    report("%s: connect took 0.6 s of a 1.0 s deadline, the call ended after %.2f s" % (call, elapsed))
