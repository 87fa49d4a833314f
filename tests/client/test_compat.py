"""Differential tests: sqla_memcache.Client against python-memcached 1.62 itself.

Each test runs the same calls through both clients on the same real
servers and compares return values, exceptions, entries on the wire and the
server each key lands on.
"""
from __future__ import annotations

from typing import Any, Callable, List

import memcache
import pytest

from support.memcached import closed_address
from support.raw import raw
from sqla_memcache import Client

VALUES: List[Any] = [
    b"raw bytes \x00\xff",
    b"",
    "text é ✓",
    "",
    0,
    -17,
    12345678901234567890,
    True,
    False,
    1.5,
    None,
    [1, "two", 3.0],
    {"a": (1, 2)},
    "x" * 5000,
]


def outcome(fn: Callable[[], Any]) -> Any:
    """The call's result, or ('raise', exception class name, message)."""
    try:
        return ("ok", fn())
    except Exception as exc:  # compared between the two clients
        return ("raise", type(exc).__name__, str(exc))


@pytest.fixture
def pair(memcached):
    ours = Client(memcached.servers)
    theirs = memcache.Client(memcached.servers)
    yield ours, theirs
    ours.disconnect_all()
    theirs.disconnect_all()


@pytest.fixture
def cluster_pair(memcached_cluster):
    servers = [memcached_cluster.servers[0], (memcached_cluster.servers[1], 2), memcached_cluster.servers[2]]
    ours = Client(servers)
    theirs = memcache.Client(servers)
    yield ours, theirs, servers
    ours.disconnect_all()
    theirs.disconnect_all()


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_each_reads_the_others_values(pair, value):
    ours, theirs = pair
    assert theirs.set("k-theirs", value) is True
    assert ours.set("k-ours", value) is True
    assert ours.get("k-theirs") == value
    assert theirs.get("k-ours") == value
    assert type(ours.get("k-theirs")) is type(theirs.get("k-ours"))


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_same_bytes_and_flags_on_the_wire(pair, memcached, value):
    ours, theirs = pair
    ours.set("w-ours", value)
    theirs.set("w-theirs", value)
    raw_ours = raw(memcached.address, b"get w-ours\r\n")
    raw_theirs = raw(memcached.address, b"get w-theirs\r\n")
    assert raw_ours.replace(b"w-ours", b"KEY") == raw_theirs.replace(b"w-theirs", b"KEY")


def test_compressed_values_cross_read(pair):
    ours, theirs = pair
    big = "compressible " * 2000
    assert ours.set("zo", big, min_compress_len=100) is True
    assert theirs.set("zt", big, min_compress_len=100) is True
    assert theirs.get("zo") == big and ours.get("zt") == big


def test_pickle_protocol_argument_matches(memcached):
    ours = Client(memcached.servers, pickleProtocol=2)
    theirs = memcache.Client(memcached.servers, pickleProtocol=2)
    ours.set("p-ours", {"x": 1})
    theirs.set("p-theirs", {"x": 1})
    ours_raw = raw(memcached.address, b"get p-ours\r\n").replace(b"p-ours", b"K")
    assert ours_raw == raw(memcached.address, b"get p-theirs\r\n").replace(b"p-theirs", b"K")


SCENARIO = [
    ("set", ("a", 1)),
    ("get", ("a",)),
    ("get", ("missing",)),
    ("get", ("missing", "fallback")),
    ("add", ("a", 2)),
    ("add", ("b", 2)),
    ("replace", ("c", 3)),
    ("replace", ("b", 4)),
    ("append", ("b", "5")),
    ("prepend", ("b", "6")),
    ("get", ("b",)),
    ("append", ("nokey", "x")),
    ("incr", ("a",)),
    ("incr", ("a", 10)),
    ("decr", ("a", 100)),
    ("incr", ("nokey",)),
    ("decr", ("nokey",)),
    ("touch", ("a", 100)),
    ("touch", ("nokey", 100)),
    ("delete", ("a",)),
    ("delete", ("a",)),
    ("set_multi", ({"m1": 1, "m2": "two", "m3": [3]},)),
    ("get_multi", (["m1", "m2", "m3", "m4"],)),
    ("set_multi", ({"x": 1, "y": 2}, 0, "pre:")),
    ("get_multi", (["x", "y", "z"], "pre:")),
    ("get", ("pre:x",)),
    ("delete_multi", (["m1", "m2", "never"],)),
    ("delete_multi", (["x"], None, "pre:")),
    ("get_multi", (["m1", "m2", "m3"],)),
    ("gets", ("m3",)),
    ("cas", ("m3", "via-set-without-cache_cas")),
    ("get", ("m3",)),
    ("set", ("é-unicode-key", "v")),
    ("get", ("é-unicode-key",)),
    ("set", ((42, "tuple-key"), "t")),
    ("get", ((42, "tuple-key"),)),
    ("set", ("k" * 250, 1)),
    ("set", ("k" * 251, 1)),
    ("get", ("k" * 251,)),
    ("set", ("has space", 1)),
    ("set", ("crlf\r\nset x 0 0 1", 1)),
    ("get", ("ctl\x01",)),
    ("set", ("del\x7f", 1)),
    ("set", ("", 1)),
    ("set", (None, 1)),
    ("get", (None,)),
    ("set", (5, 1)),
    ("get", (b"bytes-key",)),
    ("set", (b"bytes-key", b"v")),
    ("get", (b"bytes-key",)),
    ("set", ("big", b"x" * (1024 * 1024 + 1))),
    ("set", ("neg-expiry", 1, -1)),
    ("get", ("neg-expiry",)),
    ("set", ("noreply", 7, 0, 0, True)),
    ("get", ("noreply",)),
    ("get_multi", ([],)),
    ("set_multi", ({},)),
]


def test_same_results_and_exceptions_one_server(pair):
    ours, theirs = pair
    ours.flush_all()
    got_ours = [outcome(lambda: getattr(ours, m)(*a)) for m, a in SCENARIO]
    ours.flush_all()
    got_theirs = [outcome(lambda: getattr(theirs, m)(*a)) for m, a in SCENARIO]
    for (method, args), a, b in zip(SCENARIO, got_ours, got_theirs):
        assert a == b, "%s%r: ours %r, python-memcached %r" % (method, args, a, b)


def test_cas_with_cache_cas_matches(memcached):
    results = []
    for cls in (Client, memcache.Client):
        c = cls(memcached.servers, cache_cas=True)
        c.flush_all()
        c.set("c", 1)
        r = [c.gets("c"), b"c" in c.cas_ids]
        other = cls(memcached.servers)
        other.set("c", 2)  # changes the item behind the CAS id
        r.append(c.cas("c", 3))  # EXISTS
        r.append(c.get("c"))
        c.gets("c")
        r.append(c.cas("c", 4))  # unchanged: stored
        r.append(c.get("c"))
        c.reset_cas()
        r.append(dict(c.cas_ids))
        results.append(r)
    assert results[0] == results[1]
    assert results[0][2] is False and results[0][3] == 2 and results[0][5] == 4


def test_same_server_choice_on_three_weighted_servers(cluster_pair, memcached_cluster):
    ours, theirs, servers = cluster_pair
    keys = ["key-%d" % i for i in range(300)] + ["ü-%d" % i for i in range(30)]
    for k in keys:
        theirs.set(k, "from-theirs")
    # Each key is on exactly the server python-memcached chose: ours finds every one.
    assert ours.get_multi(keys) == {k: "from-theirs" for k in keys}
    ours.flush_all()
    for k in keys:
        ours.set(k, "from-ours")
    assert theirs.get_multi(keys) == {k: "from-ours" for k in keys}
    # And both agree key by key with a per-server look-up.
    for k in keys[:50]:
        ours_host = ours._selector.get_node(k.encode(), lambda h: True)
        holders = [s for s in memcached_cluster.servers if raw(s, b"get " + k.encode() + b"\r\n") != b"END\r\n"]
        assert holders == [ours_host.label]


def test_stats_shape_matches(pair):
    ours, theirs = pair
    (name_o, stats_o), = ours.get_stats()
    (name_t, stats_t), = theirs.get_stats()
    assert name_o == name_t
    assert set(stats_o) == set(stats_t)
    assert all(isinstance(v, str) for v in stats_o.values())
    assert stats_o["version"] == stats_t["version"]


def test_dead_server_results_and_debug_messages(capsys):
    down = closed_address()
    results = []
    messages = []
    for cls in (Client, memcache.Client):
        c = cls([down], debug=1)
        results.append([c.get("x"), c.set("x", 1), c.get_multi(["x"]), c.delete("x"), c.incr("x"), c.add("x", 1)])
        messages.append(capsys.readouterr().err)
    assert results[0] == results[1]
    # python-memcached's "Marking dead" line, with the OS error text in it.
    first_ours = messages[0].splitlines()[0]
    first_theirs = messages[1].splitlines()[0]
    assert first_ours.startswith("MemCached: MemCache: inet:%s: connect: " % down)
    assert first_ours.endswith(".  Marking dead.")
    assert first_theirs.split(": connect:")[0] == first_ours.split(": connect:")[0]


def test_exception_classes_are_reachable_like_python_memcached():
    for name in (
        "MemcachedKeyError",
        "MemcachedKeyLengthError",
        "MemcachedKeyCharacterError",
        "MemcachedKeyNoneError",
        "MemcachedKeyTypeError",
        "MemcachedStringEncodingError",
    ):
        ours = getattr(Client, name)
        theirs = getattr(memcache.Client, name)
        assert ours.__name__ == theirs.__name__
        assert [c.__name__ for c in ours.__mro__[:-2]] == [c.__name__ for c in theirs.__mro__[:-2]]
    import sqla_memcache.client as ours_module

    assert ours_module.SERVER_MAX_KEY_LENGTH == memcache.SERVER_MAX_KEY_LENGTH == 250
    assert ours_module.SERVER_MAX_VALUE_LENGTH == memcache.SERVER_MAX_VALUE_LENGTH == 1024 * 1024
    for flag in ("_FLAG_PICKLE", "_FLAG_INTEGER", "_FLAG_LONG", "_FLAG_COMPRESSED", "_FLAG_TEXT"):
        assert getattr(Client, flag) == getattr(memcache.Client, flag)


def test_constructor_signature_matches():
    import inspect

    theirs = inspect.signature(memcache.Client.__init__).parameters
    ours = inspect.signature(Client.__init__).parameters
    for name, param in theirs.items():
        assert name in ours, name
        if param.default is not inspect.Parameter.empty and name not in ("pickler", "unpickler"):
            assert ours[name].default == param.default, name
    assert list(ours)[: len(theirs)] == list(theirs)


def test_method_signatures_match():
    import inspect

    for name in (
        "set add replace append prepend cas gets get get_multi set_multi delete delete_multi incr decr "
        "touch flush_all get_stats get_slabs set_servers forget_dead_hosts disconnect_all quit_all "
        "debuglog reset_cas check_key"
    ).split():
        theirs = inspect.signature(getattr(memcache.Client, name)).parameters
        ours = inspect.signature(getattr(Client, name)).parameters
        assert list(ours)[: len(theirs)] == list(theirs), name
        for pname, p in theirs.items():
            assert ours[pname].default == p.default, (name, pname)


def test_check_key_matches(pair):
    ours, theirs = pair
    keys = ["ok", b"ok", "a b", "x" * 251, None, 3, ("h", "k"), "\x00",
            b"a b", b"x" * 251, b"x" * 250, b"\x00", b"", b"\x7f", (1, b"k"), (1, b"a b")]  # fmt: skip
    for key in keys:
        assert outcome(lambda: ours.check_key(key)) == outcome(lambda: theirs.check_key(key)), key
    # check_key checks encoded keys, as python-memcached's: a str key is a type error in both
    assert outcome(lambda: ours.check_key("ok"))[:2] == ("raise", "MemcachedKeyTypeError")
    assert outcome(lambda: ours.check_key(b"x" * 250)) == ("ok", None)


def test_key_encoder_matches(memcached):
    results = []
    for cls in (Client, memcache.Client):
        c = cls(memcached.servers, key_encoder=lambda k: k.upper() if isinstance(k, str) else k)
        c.flush_all()
        results.append(
            [
                c.set("abc", 1),
                c.get("abc"),
                c.get("ABC"),
                c.get_multi(["abc", "zz"]),
                c.set_multi({"def": 2}),
                c.get("DEF"),
                outcome(lambda: cls(memcached.servers, key_encoder=lambda k: "a b").set("x", 1)),
            ]
        )
    assert results[0] == results[1]
