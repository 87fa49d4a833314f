"""Client and AsyncClient against real memcached servers: the behaviour both share, written once.

Most tests take ``make`` (``tests/client/conftest.py``) and so run on the blocking
``Client`` and on ``AsyncClient`` driven through ``support.clients.Blocking``: the two
give the same answers. What only the blocking client has (threads, its subclass
hooks, its set fast path) is at the end; asyncio-only properties are in
``test_async_client.py``.
"""
from __future__ import annotations

import json
import ssl
import threading
import time

import pytest

from support.raw import raw_command as raw
from support.threads import run_threads
from sqla_memcache import Client, JSONSerde, RawSerde, errors
from sqla_memcache.serde import FLAG_SIGNED


# --------------------------------------------------------------------------
# keys can never inject a command
# --------------------------------------------------------------------------

INJECTIONS = [
    "a\r\nflush_all",
    "a\r\nset evil 0 0 1\r\nx",
    "a b",
    "tab\there",
    "nul\x00",
    "bell\x07",
    "del\x7f",
    "lf\nflush_all",
    b"bytes\r\nflush_all",
]


@pytest.mark.parametrize("check_keys", [True, False])
@pytest.mark.parametrize("key", INJECTIONS, ids=repr)
def test_bad_key_raises_and_sends_nothing(memcached, make, key, check_keys):
    c = make(memcached.servers, check_keys=check_keys)
    assert c.set("canary", "alive") is True
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
        lambda: c.get_multi(["x"], key_prefix=key if isinstance(key, str) else key.decode()),
    ):
        with pytest.raises(Client.MemcachedKeyCharacterError):
            call()
    after = raw(memcached.address, b"stats\r\n", b"END\r\n")
    counters = lambda s: {l.split()[1]: l.split()[2] for l in s.decode().splitlines() if l.startswith("STAT cmd_")}
    assert counters(before) == counters(after), "a command reached the server"
    assert c.get("canary") == "alive"
    assert raw(memcached.address, b"get evil\r\n", b"END\r\n") == b"END\r\n"


def test_key_errors(memcached, make):
    c = make(memcached.servers)
    with pytest.raises(Client.MemcachedKeyNoneError):
        c.get(None)
    with pytest.raises(Client.MemcachedKeyTypeError):
        c.get(3.5)
    with pytest.raises(Client.MemcachedKeyLengthError):
        c.set("k" * 251, 1)
    assert c.set("k" * 250, 1) is True
    # memcached can never take a key over 250 bytes: refused before sending, check_keys or not
    unchecked = make(memcached.servers, check_keys=False)
    with pytest.raises(Client.MemcachedKeyLengthError):
        unchecked.set("k" * 300, 1)
    assert unchecked.servers[0].deaduntil == 0 and unchecked.get("k" * 250) == 1
    with pytest.raises(Client.MemcachedKeyLengthError):
        c.get_multi(["k" * 249], key_prefix="pp")
    assert issubclass(Client.MemcachedKeyCharacterError, errors.MemcachedKeyError)


# --------------------------------------------------------------------------
# commands
# --------------------------------------------------------------------------

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


def test_oversized_value(memcached, make):
    c = make(memcached.servers)
    assert c.set("big", b"x" * (1024 * 1024 + 1)) == 0
    strict = make(memcached.servers, strict=True)
    with pytest.raises(errors.ValueTooLargeError):
        strict.set("big", b"x" * (1024 * 1024 + 1))
    # Under our limit but over the server's item size: SERVER_ERROR, stream still usable.
    assert c.set("big", b"x" * (1024 * 1024 - 10)) is False
    with pytest.raises(errors.ServerError):
        strict.set("big", b"x" * (1024 * 1024 - 10))
    assert c.set("after", 1) is True and c.get("after") == 1
    assert c.set_multi({"big": b"x" * (2 << 20), "fine": 1}) == ["big"]
    assert c.get("fine") == 1


def test_server_max_value_length_set_after_construction_bounds_gets_and_sets(memcached):
    """python-memcached's attribute may be changed on a live client: the limit
    then applies to values stored and to values read, also for keys read before
    (a reply over the limit is out of step: the server is marked dead, so one client per read)."""
    assert Client(memcached.servers).set("eleven", b"x" * 11) is True
    for read, value in ((lambda c: c.get("eleven"), b"x" * 11),
                        (lambda c: c.get_multi(["eleven", "other"]), {"eleven": b"x" * 11})):
        c = Client(memcached.servers, strict=True)
        assert read(c) == value  # (the key and its parser are remembered now)
        c.server_max_value_length = 10
        with pytest.raises(errors.ProtocolError):
            read(c)
    c = Client(memcached.servers, strict=True, server_max_value_length=10)
    with pytest.raises(errors.ValueTooLargeError):
        c.set("eleven", b"y" * 11)
    c.server_max_value_length = 0  # no limit
    assert c.get("eleven") == b"x" * 11 and c.set("twelve", b"y" * 12) is True


def test_unpicklable_value(memcached, make):
    c = make(memcached.servers)
    assert c.set("lock", threading.Lock()) == 0
    with pytest.raises(errors.SerializationError):
        make(memcached.servers, strict=True).set("lock", threading.Lock())
    assert c.get("lock") is None


def test_corrupt_pickle_is_a_miss_or_error(memcached, make):
    raw(memcached.address, b"set bad 1 0 5\r\nnotpk\r\n")
    assert make(memcached.servers).get("bad") is None
    with pytest.raises(errors.SerializationError):
        make(memcached.servers, strict=True).get("bad")


def test_stats_slabs_and_raw_command(memcached_factory, make):
    memcached = memcached_factory()  # a server of its own: curr_items counts every client's items
    c = make(memcached.servers)
    assert c.set("a", "x" * 100) is True
    (name, stats), = c.get_stats()
    assert name == "%s (1)" % memcached.address and int(stats["curr_items"]) == 1
    (name, slabs), = c.get_slabs()
    assert any(int(s["number"]) == 1 for s in slabs.values())
    for _ in range(50):  # the crawler answers BUSY while a previous dump finishes
        try:
            dump = c.raw_command(0, b"lru_crawler metadump all")
            break
        except errors.ServerError as exc:
            assert "BUSY" in str(exc)
            time.sleep(0.05)
    assert b"key=a " in dump and dump.endswith(b"END\r\n")
    assert c.raw_command(0, b"version", b"VERSION").startswith(b"VERSION 1.")
    with pytest.raises(errors.ClientError):
        c.raw_command(0, b"no_such_command")
    assert c.get("a") == "x" * 100  # connection still in step
    c.flush_all()
    assert c.get("a") is None


# --------------------------------------------------------------------------
# serdes
# --------------------------------------------------------------------------

def test_json_serde_is_plain_json_on_the_wire(memcached, make):
    c = make(memcached.servers, serde=JSONSerde())
    assert c.set("j", {"films": [1, 2], "name": "é"}) is True
    reply = raw(memcached.address, b"get j\r\n", b"END\r\n")
    header, body = reply.split(b"\r\n")[:2]
    assert header.split()[2] == b"0"
    assert json.loads(body) == {"films": [1, 2], "name": "é"}
    assert c.get("j") == {"films": [1, 2], "name": "é"}
    c.set("n", 5)
    assert c.incr("n", 2) == 7 and c.get("n") == 7
    assert c.set("b", b"bytes") == 0


def test_raw_serde(memcached, make):
    c = make(memcached.servers, serde=RawSerde())
    c.set("r", b"\x00\x01")
    assert c.get("r") == b"\x00\x01"


def test_signed_serde_refuses_tampered_and_unsigned(memcached, make):
    c = make(memcached.servers, secret_key=b"s3cret")
    strict = make(memcached.servers, secret_key=b"s3cret", strict=True)
    assert c.set("obj", {"a": 1}) is True and c.get("obj") == {"a": 1}
    reply = raw(memcached.address, b"get obj\r\n", b"END\r\n")
    header, body = reply.split(b"\r\n", 1)
    flags = int(header.split()[2])
    assert flags & FLAG_SIGNED
    body = body[: -len(b"\r\nEND\r\n")]
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    raw(memcached.address, b"set obj %d 0 %d\r\n%s\r\n" % (flags, len(tampered), tampered))
    assert c.get("obj") is None
    with pytest.raises(errors.SignatureError):
        strict.get("obj")
    # A pickle planted by someone without the key (flags 1, unsigned) is refused.
    Client(memcached.servers).set("planted", {"evil": True})
    assert c.get("planted") is None and c.get_multi(["planted"]) == {}
    with pytest.raises(errors.SignatureError):
        strict.get("planted")
    # Another key's signature does not transfer.
    c.set("k1", "v")
    r1 = raw(memcached.address, b"get k1\r\n", b"END\r\n").split(b"\r\n")
    raw(memcached.address, b"set k2 %s 0 %d\r\n%s\r\n" % (r1[0].split()[2], len(r1[1]), r1[1]))
    assert c.get("k2") is None
    # Counters stay usable: integers are stored as bare digits, never signed.
    assert c.set("ctr", 1) is True
    assert c.incr("ctr", 4) == 5 and c.get("ctr") == 5
    Client(memcached.servers).set("plain-int", 7)
    assert c.get("plain-int") == 7
    assert make(memcached.servers, secret_key=b"other").get("k1") is None


# --------------------------------------------------------------------------
# servers, hashing, failures
# --------------------------------------------------------------------------

def test_multi_server_batches_and_spreads(memcached_cluster, make):
    c = make(memcached_cluster.servers)
    keys = ["k%d" % i for i in range(300)]
    assert c.set_multi({k: k for k in keys}) == []
    multiget = b"get " + " ".join(keys).encode() + b"\r\n"
    counts = [raw(s, multiget, b"END\r\n").count(b"VALUE ") for s in memcached_cluster.servers]
    assert sum(counts) == 300 and min(counts) > 50
    before = [int(raw(s, b"stats\r\n", b"END\r\n").split(b"STAT cmd_get ")[1].split(b"\r\n")[0]) for s in memcached_cluster.servers]
    assert c.get_multi(keys) == {k: k for k in keys}
    after = [int(raw(s, b"stats\r\n", b"END\r\n").split(b"STAT cmd_get ")[1].split(b"\r\n")[0]) for s in memcached_cluster.servers]
    # cmd_get counts keys; get_hits too: every key asked exactly once, on its own server.
    assert sum(a - b for a, b in zip(after, before)) == 300


def test_ketama_on_real_servers_remaps_a_fraction(memcached_cluster, make):
    three = make(memcached_cluster.servers[:2], hashing="ketama")
    keys = ["key-%d" % i for i in range(2000)]
    assert three.set_multi({k: 1 for k in keys}) == []
    grown = make(memcached_cluster.servers, hashing="ketama")
    found = len(grown.get_multi(keys))
    # Adding a third server: about 1/3 of keys move (they now miss), the rest still hit.
    assert 0.5 * len(keys) < found < 0.8 * len(keys)
    modula = make(memcached_cluster.servers[:2])
    modula.flush_all()
    modula.set_multi({k: 1 for k in keys})
    assert len(make(memcached_cluster.servers).get_multi(keys)) < 0.5 * len(keys)


def test_dead_server_retry_and_rehash(memcached_factory, make):
    a = memcached_factory()
    b = memcached_factory()
    c = make([a.address, b.address], dead_retry=1, socket_timeout=1)
    keys = ["k%d" % i for i in range(200)]
    c.set_multi({k: 1 for k in keys})
    a.kill()
    # The first command on a pooled socket of the killed server fails (as in
    # python-memcached) and marks it dead; then its keys rehash to the live one.
    results = [c.set(k, 2) for k in keys]
    assert results.count(0) <= 1 and results[1:].count(True) >= len(keys) - 2
    assert all(c.set(k, 2) for k in keys)
    assert c.get_multi(keys) == {k: 2 for k in keys}
    assert c.servers[0].deaduntil > 0
    a.start()  # restarted empty on the same port
    time.sleep(1.1)
    assert c.set("probe", 1)
    assert c.get_stats() and len(c.get_stats()) == 2  # retried after dead_retry
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
    strict = make(s.servers, socket_timeout=0.3, dead_retry=60, strict=True)
    c.set("k", 1)
    s.pause()
    try:
        t0 = time.monotonic()
        assert c.get("k") is None
        first = time.monotonic() - t0
        assert c.get("k") is None and c.get_multi(["k"]) == {}
        assert c.servers[0].deaduntil > time.time()  # marked dead: later calls skip it
        # (load only makes a call slower: the lower bound holds on any machine, and a
        # hang would take far longer than the generous upper one)
        assert 0.25 < first < 10, first
        with pytest.raises(errors.MemcacheError) as timed_out:
            strict.get("k")
        assert not isinstance(timed_out.value, errors.ServerDeadError)  # the first call did try
        with pytest.raises(errors.ServerDeadError):
            strict.get("k")  # then it is not even tried
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
        took = time.monotonic() - t0
    finally:
        s.resume()
    # the deadline ended it, not the 5 s socket timeout (load can only lengthen the 0.3 s)
    assert 0.25 < took < 5 * 0.9, took


def test_flush_on_reconnect(memcached_factory, make):
    s = memcached_factory()
    c = make(s.servers, flush_on_reconnect=1, dead_retry=0)
    other = Client(s.servers)
    other.set("k", "old")
    s.pause()
    c.socket_timeout = 0.2
    c.set_servers(s.servers)
    assert c.get("k") is None  # times out, marks dead, schedules a flush
    s.resume()
    assert c.get("k") is None  # reconnect flushed the server
    assert other.get("k") is None


def test_unix_socket_server(unix_memcached, make):
    unix = make(["unix:%s" % unix_memcached])
    assert unix.set("u", 1) is True and unix.get("u") == 1
    assert unix.get_stats()[0][0] == "unix:%s (1)" % unix_memcached


def test_tls(tls_memcached, make):
    ctx = ssl.create_default_context(cafile=str(tls_memcached.ca_file))
    c = make(tls_memcached.servers, ssl_context=ctx)
    assert c.set("tls", {"ok": 1}) is True
    assert c.get("tls") == {"ok": 1}
    assert c.get_multi(["tls"]) == {"tls": {"ok": 1}}
    wrong = ssl.create_default_context(cafile=str(tls_memcached.wrong_ca_file))
    bad = make(tls_memcached.servers, ssl_context=wrong, strict=True)
    with pytest.raises(errors.MemcacheError):
        bad.get("tls")
    assert make(tls_memcached.servers, ssl_context=wrong).get("tls") is None
    plain = make(tls_memcached.servers, socket_timeout=1)
    assert plain.get("tls") is None


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
    # Keys of the dead server are unavailable, never stored on b.
    assert set(got) == set(keys) - set(on_a) and all(v == 2 for v in got.values())
    assert c.servers is home.servers  # same hosts and pools
    # The failover client (python-memcached behaviour) does move them.
    assert all(c.set(k, 3) for k in on_a) and c.get_multi(on_a) == {k: 3 for k in on_a}


def test_signed_values_are_verified_before_decompression(memcached, make):
    """A planted zlib bomb is refused by its missing/wrong MAC without being inflated."""
    import zlib

    decompressed = []

    def watching_decompressor(data: bytes) -> bytes:
        decompressed.append(len(data))
        return zlib.decompress(data)

    c = make(memcached.servers, secret_key=b"k", decompressor=watching_decompressor)
    text = "compressible " * 5000
    assert c.set("z", text, min_compress_len=100) is True
    assert c.get("z") == text and len(decompressed) == 1
    bomb = zlib.compress(b"\0" * (50 * 1024 * 1024))
    flags = 1 | 8 | 256  # pickle | compressed | "signed", with a forged MAC
    forged = b"\0" * 32 + bomb
    raw(memcached.address, b"set z %d 0 %d\r\n%s\r\n" % (flags, len(forged), forged))
    assert c.get("z") is None
    assert len(decompressed) == 1  # never decompressed


# --------------------------------------------------------------------------
# the blocking client only: server specs, threads, subclass hooks, the set fast path
# --------------------------------------------------------------------------

def test_servers_specs(memcached):
    host, port = memcached.address.split(":")
    weighted = Client([(memcached.address, 3)])
    assert len(weighted.buckets) == 3 and weighted.set("w", 1)
    default_port = Client(["127.0.0.1"])
    assert default_port.servers[0].port == 11211
    v6 = Client(["inet6:[::1]:%s" % port])
    assert str(v6.servers[0]).startswith("inet6:[::1]:")


def test_threads_share_one_client_without_crossed_replies(memcached_cluster):
    c = Client(memcached_cluster.servers)

    def worker(n: int) -> None:
        for i in range(300):
            key = "t%d-%d" % (n, i % 20)
            value = "v-%d-%d" % (n, i) * (1 + i % 7)
            assert c.set(key, value) is True
            got = c.get(key)
            assert got == value, (key, got, value)
            many = c.get_multi([key, "t%d-%d" % (n, (i + 1) % 20)])
            assert many.get(key) == value

    assert run_threads(worker, 16, together=True) == []
    assert sum(h.idle_count() for h in c.servers) <= 16 * 3


def test_server_retries_class_attribute_disables_failover(memcached_factory):
    a = memcached_factory()
    b = memcached_factory()

    class OneTry(Client):
        _SERVER_RETRIES = 1

    c = OneTry([a.address, b.address])
    keys = ["k%d" % i for i in range(60)]
    on_a = [k for k in keys if c._selector.get_node(k.encode(), lambda h: True) is c.servers[0]]
    a.kill()
    assert [c.get(k) for k in on_a] == [None] * len(on_a)
    assert not any(c.set(k, 1) for k in on_a[1:])


def test_set_fast_path_matches_general_path(memcached):
    """The one-server set shortcut stores exactly what the general path stores."""
    c = Client(memcached.servers)
    for value in (b"bytes", "text é", b"", "x" * 5000):
        assert c.set("fast", value) is True
        assert c.get("fast") == value
        expected = raw(memcached.address, b"get fast\r\n", b"END\r\n")
        assert Client(memcached.servers + [memcached.servers[0]]).set("fast", value) is True  # general path
        assert raw(memcached.address, b"get fast\r\n", b"END\r\n") == expected
    assert c.set("fast", b"x" * (1024 * 1024 - 10)) is False  # SERVER_ERROR reply, via the fallback parser
    assert c.set("fast", b"ok") is True and c.get("fast") == b"ok"
    with pytest.raises(Client.MemcachedKeyCharacterError):
        c.set("bad key", b"v")


def test_a_copy_of_a_client_decodes_with_its_own_deserializer_and_limits(memcached):
    """The ORM's hardened view is ``copy.copy(client)`` with another ``_deserialize``:
    every read of the copy must use it (a finisher bound to the original would
    unpickle there), and a limit set on the copy must leave the original alone."""
    import copy
    import pickle

    original = Client(memcached.servers)
    original.set("p", {"a": 1})
    original.set("q", {"b": 2})
    assert original.get("p") == {"a": 1}  # (the key and its parser remembered by the shared codec)
    view = copy.copy(original)
    seen = []

    def refuse(key, data, flags):
        seen.append(key)
        raise errors.SerializationError("refused by the view")

    view._deserialize = refuse
    assert view.get("p") is None
    assert view.get_multi(["p", "q"]) == {}
    assert view.get_multi(["k%d" % i for i in range(20)] + ["p"]) == {}
    assert sorted(seen) == [b"p", b"p", b"p", b"q"]
    assert original.get("p") == {"a": 1} and pickle.dumps(original.get_multi(["p", "q"]))
    view.server_max_value_length = 5
    assert original.server_max_value_length == 1024 * 1024
    assert original.get("p") == {"a": 1}  # its parser still takes values over 5 bytes
