"""Client faults: servers down, killed, restarted empty, slow, and replies a real server never sends.

For each fault the client must mark the server dead for ``dead_retry``
seconds, move its keys as python-memcached does (re-hash to another server),
never reuse a connection holding half-read data, never hand a reply to the
wrong caller, and answer either python-memcached's quiet value or, with
``strict=True``, the documented typed error. Real memcached processes are
killed, paused (SIGSTOP) and restarted; :mod:`misbehaving_server` plays the
replies a real server cannot be made to send.
"""
from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable, Dict, List, Tuple

import memcache
import pytest

from support.memcached import closed_address
from support.raw import raw
from support.threads import run_threads
from sqla_memcache import Client, errors
from sqla_memcache.hashing import BucketSelector

from .misbehaving_server import CLOSE, NORMAL, Request


def holds(address: str, key: str) -> bool:
    return raw(address, b"get " + key.encode() + b"\r\n").startswith(b"VALUE ")


# Every public call, the quiet value python-memcached gives when the server is unusable.
CALLS: List[Tuple[str, Callable[[Client], Any], Any]] = [
    ("get", lambda c: c.get("k"), None),
    ("gets", lambda c: c.gets("k"), None),
    ("gets_cas", lambda c: c.gets_cas("k"), (None, None)),
    ("get_multi", lambda c: c.get_multi(["k", "j"]), {}),
    ("set", lambda c: c.set("k", 1), 0),
    ("add", lambda c: c.add("k", 1), 0),
    ("replace", lambda c: c.replace("k", 1), 0),
    ("append", lambda c: c.append("k", "x"), 0),
    ("prepend", lambda c: c.prepend("k", "x"), 0),
    ("cas", lambda c: c.cas("k", 1, cas_id=5), 0),
    ("set_multi", lambda c: sorted(c.set_multi({"k": 1, "j": 2})), ["j", "k"]),
    ("delete", lambda c: c.delete("k"), 0),
    ("delete_multi", lambda c: c.delete_multi(["k", "j"]), 0),
    ("incr", lambda c: c.incr("k"), None),
    ("decr", lambda c: c.decr("k"), None),
    ("touch", lambda c: c.touch("k", 10), 0),
]
WHOLE_SERVER_CALLS: List[Tuple[str, Callable[[Client], Any], Any]] = [
    ("flush_all", lambda c: c.flush_all(), None),
    ("get_stats", lambda c: c.get_stats(), []),
    ("get_slabs", lambda c: c.get_slabs(), []),
]


# --------------------------------------------------------------------------
# down at start, killed, restarted empty
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name,call,quiet", CALLS + WHOLE_SERVER_CALLS, ids=[c[0] for c in CALLS + WHOLE_SERVER_CALLS])
def test_server_down_quiet_value_or_server_dead_error(name, call, quiet):
    down = closed_address()
    assert call(Client([down], dead_retry=30)) == quiet
    strict = Client([down], dead_retry=30, strict=True)
    with pytest.raises(errors.ServerDeadError):
        call(strict)
    assert strict.servers[0].deaduntil > time.time() + 20  # marked dead for dead_retry
    with pytest.raises(errors.ServerDeadError):
        call(strict)  # refused at once: no connection attempt while dead


def test_down_at_start_keys_rehash_like_python_memcached_then_return_after_dead_retry(memcached_factory):
    first = memcached_factory()
    second = memcached_factory()
    first.kill()  # down before the client ever connects; its port is kept for the restart
    servers = [first.address, second.address]
    ours = Client(servers, dead_retry=1, socket_timeout=1)
    theirs = memcache.Client(servers, dead_retry=30, socket_timeout=1)
    keys = ["key-%d" % i for i in range(200)]
    assert ours.set_multi({k: "ours-" + k for k in keys}) == []  # nothing lost: re-hashed to the live one
    assert ours.servers[0].deaduntil > 0
    assert all(holds(second.address, k) for k in keys)
    # python-memcached, with the same server dead, looks for every key where we put it.
    assert theirs.get_multi(keys) == {k: "ours-" + k for k in keys}
    theirs.disconnect_all()
    home = BucketSelector([(0, 1), (1, 1)])
    first_home = [k for k in keys if home.get_node(k.encode(), lambda n: True) == 0]
    assert 60 < len(first_home) < 140

    first.start()  # restarted empty on the same port
    time.sleep(1.1)  # dead_retry over: retried, its keys go home again
    assert ours.get_multi(first_home) == {}  # misses, not the copies left on the other server
    assert all(holds(second.address, k) for k in first_home)  # (those copies are still there)
    assert ours.set("probe", 1) and len(ours.get_stats()) == 2
    assert ours.servers[0].deaduntil == 0


def test_killed_mid_run_under_threads_values_never_wrong(memcached_factory, report):
    nodes = [memcached_factory() for _ in range(3)]
    client = Client([n.address for n in nodes], dead_retry=60, socket_timeout=1)
    ops = [0] * 8
    values_read = [0] * 8
    halfway = threading.Event()

    def worker(n: int) -> None:
        rng = random.Random(n)
        # per key: values any later get may legitimately return (last stored + failed sets since)
        acceptable: Dict[str, set] = {}
        for i in range(600):
            if i == 300:
                halfway.wait(10)
            key = "w%d-%d" % (n, rng.randrange(30))
            if rng.random() < 0.5:
                value = "w%d-%d" % (n, i)
                if client.set(key, value) is True:
                    acceptable[key] = {value}
                else:
                    acceptable.setdefault(key, set()).add(value)
            else:
                got = client.get(key)
                assert got is None or got in acceptable.get(key, ()), (key, got)
                values_read[n] += got is not None
            ops[n] += 1

    def kill_one() -> None:
        time.sleep(0.05)
        nodes[1].kill()
        halfway.set()

    assert run_threads(worker, 8, together=True, during=kill_one, timeout=60) == []
    assert sum(values_read) > 0, "no get ever returned a value: the check above saw only misses"
    assert client.servers[1].deaduntil > time.time()
    # After the kill every key lives where python-memcached's re-hash puts it.
    keys = ["w%d-%d" % (n, k) for n in range(8) for k in range(30)]
    for key in keys:
        value = client.get(key)
        if value is None:
            continue
        where = client._selector.get_node(key.encode(), lambda h: h is not client.servers[1])
        assert holds(where.label, key)
    report("killed 1 of 3 servers under 8 threads: %d operations, 0 wrong values" % sum(ops))


def test_paused_server_times_out_late_replies_never_reach_a_caller(memcached_factory):
    a = memcached_factory()
    b = memcached_factory()
    client = Client([a.address, b.address], dead_retry=1, socket_timeout=0.3)
    keys = ["p%d" % i for i in range(60)]
    assert client.set_multi({k: "v-" + k for k in keys}) == []
    on_a = [k for k in keys if holds(a.address, k)]
    assert on_a
    a.pause()
    try:
        t0 = time.monotonic()
        assert client.get(on_a[0]) is None  # times out: marked dead
        assert client.servers[0].deaduntil > 0
        assert client.get(on_a[1]) is None  # re-hashed to b, where it is a miss
        assert client.set(on_a[1], "moved") is True and holds(b.address, on_a[1])
        assert time.monotonic() - t0 < 10
    finally:
        a.resume()  # a now answers the get it was sent before the timeout: into a closed socket
    time.sleep(1.1)
    # Back in service after dead_retry: every key on a gets its own value, none a late reply.
    assert client.get_multi(on_a) == {k: "v-" + k for k in on_a}
    for k in on_a:
        assert client.get(k) == "v-" + k


# --------------------------------------------------------------------------
# replies a real server never sends (fake server)
# --------------------------------------------------------------------------

def first_get(reply: List[Any]) -> Callable[[Request], Any]:
    """A rule misbehaving only on the first ``get``/``gets`` command."""
    done = []

    def rule(req: Request) -> Any:
        if req.name in (b"get", b"gets") and not done:
            done.append(req)
            return reply
        return None

    return rule


BAD_GET_REPLIES = {
    "garbage": [b"HELLO THERE\r\n"],
    "flags not a number": [b"VALUE k x 3\r\nabc\r\nEND\r\n"],
    "missing length": [b"VALUE k 0\r\nabc\r\nEND\r\n"],
    "negative length": [b"VALUE k 0 -3\r\nabc\r\nEND\r\n"],
    "data longer than announced": [b"VALUE k 0 3\r\nabcdef\r\nEND\r\n"],
    "wrong key": [b"VALUE other 0 3\r\nabc\r\nEND\r\n"],
    "two values for one key": [b"VALUE k 0 3\r\nabc\r\nVALUE k 0 3\r\nxyz\r\nEND\r\n"],
    "endless header line": [b"VALUE k " + b"9" * 20000],
    "truncated: closed mid-value": [b"VALUE k 0 10\r\nabc", CLOSE],
    "truncated: closed mid-header": [b"VALUE k 0", CLOSE],
    "truncated: closed before END": [b"VALUE k 0 3\r\nabc\r\n", CLOSE],
    "closed without a reply": [CLOSE],
    "late reply (after the timeout)": [0.6, NORMAL],
    "no reply": [2.0],
}
FAULT_ERRORS = (errors.ProtocolError, errors.ConnectionLostError)


@pytest.mark.parametrize("strict", [False, True], ids=["quiet", "strict"])
@pytest.mark.parametrize("fault", list(BAD_GET_REPLIES), ids=list(BAD_GET_REPLIES))
def test_bad_reply_to_get_marks_dead_and_never_reuses_the_connection(misbehaving, fault, strict):
    misbehaving.items[b"k"] = (0, b"abc")
    misbehaving.items[b"j"] = (0, b"jjj")
    client = Client(misbehaving.servers, dead_retry=0.5, socket_timeout=0.3, strict=strict)
    misbehaving.rule = first_get(BAD_GET_REPLIES[fault])
    if strict:
        with pytest.raises(FAULT_ERRORS) as info:
            client.get("k")
        expected = errors.ConnectionLostError if "late" in fault or "no reply" in fault or "closed" in fault else None
        if expected is not None:
            assert info.type is expected
        elif "truncated" not in fault:
            assert info.type is errors.ProtocolError
    else:
        assert client.get("k") is None
    host = client.servers[0]
    assert host.deaduntil > 0 and host.idle_count() == 0
    gets = misbehaving.commands(b"get")
    if strict:
        with pytest.raises(errors.ServerDeadError):
            client.get("j")  # dead: not even asked
    else:
        assert client.get("j") is None  # dead: not even asked
    assert misbehaving.commands(b"get") == gets
    time.sleep(0.55)
    # After dead_retry: a NEW connection, and the next caller gets its own reply.
    connections = misbehaving.connections
    assert client.get("j") == b"jjj"
    assert misbehaving.connections == connections + 1
    assert client.get("k") == b"abc"


@pytest.mark.parametrize("strict", [False, True], ids=["quiet", "strict"])
def test_oversized_value_length_fails_fast_instead_of_buffering(misbehaving, strict):
    """A corrupt length of 2 GB followed by a stream of bytes: refused, not buffered until memory runs out."""
    misbehaving.rule = first_get([b"VALUE k 0 2000000000\r\n", b"\0" * (4 << 20), 5.0])
    client = Client(misbehaving.servers, dead_retry=30, socket_timeout=3, strict=strict)
    t0 = time.monotonic()
    if strict:
        with pytest.raises(errors.ProtocolError):
            client.get("k")
    else:
        assert client.get("k") is None
    assert time.monotonic() - t0 < 2.5, "waited for the timeout instead of refusing the length"
    assert client.servers[0].deaduntil > 0


def test_value_over_server_max_value_length_is_refused_on_read(misbehaving):
    """The client never stores such a value; reading one means a corrupt length (or a mismatched -I)."""
    misbehaving.items[b"big"] = (0, b"x" * 200_000)
    for call in (lambda c: c.get("big"), lambda c: c.get_multi(["big"]), lambda c: c.gets("big")):
        client = Client(misbehaving.servers, server_max_value_length=100_000, strict=True)
        with pytest.raises(errors.ProtocolError):
            call(client)
    assert Client(misbehaving.servers).get("big") == b"x" * 200_000  # default limit: 1 MiB


BAD_LINE_REPLIES = {
    "set": (lambda c: c.set("k", 1), 0),
    "add": (lambda c: c.add("k", 1), 0),
    "cas": (lambda c: c.cas("k", 1, cas_id=3), 0),
    "delete": (lambda c: c.delete("k"), 0),
    "incr": (lambda c: c.incr("k"), None),
    "touch": (lambda c: c.touch("k", 5), 0),
    "set_multi": (lambda c: sorted(c.set_multi({"k": 1, "k2": 2})), ["k", "k2"]),
    "delete_multi": (lambda c: c.delete_multi(["k", "k2"]), 0),
}


@pytest.mark.parametrize("strict", [False, True], ids=["quiet", "strict"])
@pytest.mark.parametrize("command", list(BAD_LINE_REPLIES))
def test_garbage_reply_to_a_one_line_command_closes_the_connection(misbehaving, command, strict):
    misbehaving.items[b"k"] = (2, b"5")
    misbehaving.items[b"j"] = (0, b"jjj")
    call, quiet = BAD_LINE_REPLIES[command]
    client = Client(misbehaving.servers, dead_retry=0, strict=strict)
    assert client.get("j") == b"jjj"  # one pooled connection
    name = command.split("_")[0].encode()
    if name == b"cas":
        name = b"cas"
    misbehaving.rule = lambda req: [b"WHAT IS THIS\r\n"] * 2 if req.name == name else None
    if strict:
        with pytest.raises(errors.ProtocolError):
            call(client)
    else:
        assert call(client) == quiet
    assert client.servers[0].idle_count() == 0  # the connection is gone, not back in the pool
    misbehaving.rule = None
    connections = misbehaving.connections
    assert client.get("j") == b"jjj"
    assert misbehaving.connections == connections + 1


def test_a_reply_arriving_after_the_timeout_goes_to_nobody(misbehaving):
    """The server answers ``get a`` late; the next caller must get ``b``, not ``a``."""
    misbehaving.items.update({b"a": (0, b"value-a"), b"b": (0, b"value-b")})
    misbehaving.rule = lambda req: [0.5, NORMAL] if req.keys == [b"a"] else None
    client = Client(misbehaving.servers, dead_retry=0, socket_timeout=0.2)
    assert client.get("a") is None
    assert client.get("b") == b"value-b"
    time.sleep(0.4)  # the late "VALUE a" has now been written to the first socket
    assert client.get("b") == b"value-b"
    assert client.get_multi(["b"]) == {"b": b"value-b"}
    assert misbehaving.connections == 2


def test_get_multi_fault_on_one_server_keeps_the_others(misbehaving, memcached):
    """One server of two breaks mid-reply: the other's values are returned; the broken one's socket is dropped."""
    client = Client([misbehaving.address, memcached.address], dead_retry=30, socket_timeout=0.3)
    keys = ["m%d" % i for i in range(40)]
    for k in keys:
        misbehaving.items[k.encode()] = (0, b"fake-" + k.encode())
    good = Client([memcached.address])
    good.set_multi({k: b"real-" + k.encode() for k in keys})
    on_fake = [k for k in keys if client._selector.get_node(k.encode(), lambda h: True) is client.servers[0]]
    on_real = [k for k in keys if k not in on_fake]
    assert on_fake and on_real
    misbehaving.rule = first_get([b"VALUE " + on_fake[0].encode() + b" 0 3\r\nab", CLOSE])
    assert client.get_multi(keys) == {k: b"real-" + k.encode() for k in on_real}
    assert client.servers[0].deaduntil > 0
    # The fake server's keys now re-hash to the real one.
    assert client.get_multi(keys) == {k: b"real-" + k.encode() for k in keys if holds(memcached.address, k)}
    strict = Client([misbehaving.address, memcached.address], strict=True, socket_timeout=0.3)
    misbehaving.rule = first_get([b"garbage\r\n"])
    with pytest.raises(errors.ProtocolError):
        strict.get_multi(keys)
    assert strict.servers[0].deaduntil > 0 and strict.servers[0].idle_count() == 0
    # The real server's connection went back to the pool only if its reply was read whole:
    # the next call gets exactly its own values.
    assert strict.servers[1].idle_count() <= 1
    assert strict.get_multi(on_real) == {k: b"real-" + k.encode() for k in on_real}


def test_threads_over_a_slow_and_dropping_server_never_get_another_callers_reply(misbehaving, report):
    """Replies dribble out in pieces, some late, some connections dropped: every value is the caller's own."""
    rng = random.Random(7)
    lock = threading.Lock()
    faults = {"late": 0, "dropped": 0, "split": 0}

    def rule(req: Request) -> Any:
        with lock:
            r = rng.random()
        if r < 0.03:
            faults["late"] += 1
            return [0.15, NORMAL]
        if r < 0.05:
            faults["dropped"] += 1
            return [req.normal[: len(req.normal) // 2], CLOSE]
        if r < 0.25:
            faults["split"] += 1
            return [req.normal[i:i + 3] for i in range(0, len(req.normal), 3)]
        return None

    misbehaving.rule = rule
    client = Client(misbehaving.servers, dead_retry=0, socket_timeout=0.1)
    ops = [0] * 12
    own_values = [0] * 12

    def worker(n: int) -> None:
        for i in range(150):
            key = "t%d-%d" % (n, i % 10)
            value = ("v%d-%d-" % (n, i)).encode() * (1 + i % 5)
            stored = client.set(key, value)
            got = client.get(key)
            own_values[n] += got == value
            if stored is True:
                # a successful set is followed by its own value, or a failed get (None)
                assert got == value or got is None, (key, got, value)
            else:
                assert got is None or got.startswith(("v%d-" % n).encode()), (key, got)
            many = client.get_multi([key, "t%d-%d" % (n, (i + 1) % 10)])
            for k, v in many.items():
                assert v.startswith(("v%d-" % n).encode()), (k, v)
            ops[n] += 3

    assert run_threads(worker, 12, timeout=60) == []
    # most calls meet no fault (75% of replies are sent whole): the values did come back
    assert sum(own_values) > 0, own_values
    report(
        "12 threads, %d operations over a misbehaving server: %d late, %d dropped, %d split replies; 0 crossed"
        % (sum(ops), faults["late"], faults["dropped"], faults["split"])
    )


def test_on_revive_runs_once_before_a_returning_server_serves_again(misbehaving):
    """``Host.on_revive``: the hook for repairs (e.g. re-sending invalidations) before any command is sent."""
    misbehaving.items[b"k"] = (0, b"v")
    client = Client(misbehaving.servers, dead_retry=0.3, socket_timeout=0.2)
    seen: List[Tuple[int, int]] = []
    client.servers[0].on_revive = lambda host: seen.append((len(misbehaving.lines), host.idle_count()))
    assert client.get("k") == b"v" and seen == []  # first connect: not a revival
    misbehaving.rule = first_get([CLOSE])
    assert client.get("k") is None  # marked dead
    commands = len(misbehaving.lines)
    time.sleep(0.35)
    assert client.get("k") == b"v"
    assert seen == [(commands, 0)]  # called once, before the get was sent
    assert client.get("k") == b"v" and len(seen) == 1
