"""Counters are plain integers in every mode; keys memcached can never accept are refused before sending.

Issue 13, items 3 and 6, against a real memcached: integers written by
``set``/``add`` are ASCII digits with python-memcached's integer flag (never
pickled, never signed), so ``incr``/``decr`` and ``MemcachedDict.incr`` work
with a ``secret_key`` and any serde, on the same pooled connection (the
server's ``total_connections`` counts every TCP connection it accepted).
The tests that take ``make`` run on ``Client`` and on ``AsyncClient``.
"""
from __future__ import annotations

import time
from typing import Dict

import pytest

from support.raw import raw_command as raw
from support.threads import run_threads
from sqla_memcache import Client, JSONSerde, MemcachedDict, RawSerde, errors
from sqla_memcache.serde import FLAG_INTEGER


def server_stats(address: str) -> Dict[str, str]:
    reply = raw(address, b"stats\r\n", b"END\r\n").decode()
    return {p[1]: p[2] for p in (line.split() for line in reply.splitlines()) if len(p) == 3 and p[0] == "STAT"}


def connections(address: str) -> int:
    """TCP connections the server accepted so far (each ``raw`` call adds one: callers subtract it)."""
    return int(server_stats(address)["total_connections"])


def wire(address: str, key: bytes) -> bytes:
    return raw(address, b"get " + key + b"\r\n", b"END\r\n")


SERDES = {
    "pickle": {},
    "signed": {"secret_key": b"s3cret"},
    "json": {"serde": JSONSerde()},
    "json signed": {"serde": JSONSerde(), "secret_key": b"s3cret"},
    "raw": {"serde": RawSerde()},
}


@pytest.mark.parametrize("mode", list(SERDES))
def test_integers_are_stored_as_ascii_digits_and_count_in_every_mode(memcached, make, mode):
    c = make(memcached.servers, **SERDES[mode])
    assert c.set("ctr", 1) is True
    assert wire(memcached.address, b"ctr") == b"VALUE ctr %d 1\r\n1\r\nEND\r\n" % FLAG_INTEGER
    assert c.add("fresh", 10) is True
    assert wire(memcached.address, b"fresh") == b"VALUE fresh %d 2\r\n10\r\nEND\r\n" % FLAG_INTEGER
    assert c.incr("ctr", 4) == 5
    assert c.decr("ctr", 2) == 3
    assert c.decr("ctr", 10) == 0  # memcached stops at 0
    assert c.get("ctr") == 0
    assert c.incr("fresh") == 11 and c.get("fresh") == 11
    assert c.get_multi(["ctr", "fresh"]) == {"ctr": 0, "fresh": 11}
    assert c.set("neg", -17) is True and c.get("neg") == -17  # python-memcached's encoding: "-17", flag 2
    assert c.incr("neg") is None  # memcached: non-numeric for incr; quiet None
    # min_compress_len never compresses a counter (memcached could not incr it)
    assert c.set("big", 10**18, min_compress_len=1) is True and c.incr("big") == 10**18 + 1


@pytest.mark.parametrize("mode", ["signed", "json signed", "pickle"])
def test_incr_and_decr_reuse_one_connection(memcached, make, mode):
    c = make(memcached.servers, **SERDES[mode])
    assert c.set("ctr", 0) is True  # opens the pooled connection
    before = connections(memcached.address)
    for i in range(100):
        assert c.incr("ctr") == i + 1
    for i in range(50):
        assert c.decr("ctr") == 99 - i
    assert c.get("ctr") == 50
    assert connections(memcached.address) - before == 1  # only the stats probe itself


def test_incr_of_a_non_numeric_value_keeps_the_connection(memcached, make):
    c = make(memcached.servers, secret_key=b"s3cret")
    assert c.set("obj", {"a": 1}) is True
    before = connections(memcached.address)
    for _ in range(20):
        assert c.incr("obj") is None  # CLIENT_ERROR non-numeric: the stream is still in step
    assert c.get("obj") == {"a": 1}
    assert connections(memcached.address) - before == 1
    assert c.servers[0].deaduntil == 0
    with pytest.raises(errors.ClientError):
        make(memcached.servers, secret_key=b"s3cret", strict=True).incr("obj")


def test_memcached_dict_incr_works_signed_on_one_connection(memcached):
    d = MemcachedDict(Client(memcached.servers, secret_key=b"s3cret"), key_prefix="app:")
    assert d.incr("hits") == 1  # created by add, as a plain integer
    before = connections(memcached.address)
    for i in range(100):
        assert d.incr("hits") == i + 2
    assert d.decr("hits", 50) == 51
    assert d["hits"] == 51
    assert connections(memcached.address) - before == 1
    header, data, _ = wire(memcached.address, b"app:hits").split(b"\r\n", 2)
    assert header.split()[2] == b"%d" % FLAG_INTEGER and data.rstrip(b" ") == b"51"  # decr pads with spaces


EXECUTED = []


def _ran(tag: str) -> None:
    EXECUTED.append(tag)


class Payload:
    """Unpickling this runs ``_ran``: what a planted pickle can do."""

    def __reduce__(self):
        return (_ran, ("ran",))


@pytest.mark.parametrize("mode", ["pickle", "signed"])
def test_a_counter_that_is_not_an_integer_is_missing_and_never_runs_code(memcached, make, mode):
    import pickle

    c = make(memcached.servers, **SERDES[mode])
    strict = make(memcached.servers, strict=True, **SERDES[mode])
    EXECUTED.clear()
    for junk in (b"abc", b"12x", b"", b" 5", pickle.dumps(Payload()), b"1" * 30 + b"\x00"):
        raw(memcached.address, b"set ctr %d 0 %d\r\n%s\r\n" % (FLAG_INTEGER, len(junk), junk))
        assert c.get("ctr") is None, junk
        assert c.get_multi(["ctr"]) == {}, junk
        with pytest.raises(errors.SerializationError):
            strict.get("ctr")
    assert EXECUTED == []


# --------------------------------------------------------------------------
# keys memcached can never accept: refused before sending, whatever check_keys says
# --------------------------------------------------------------------------

def command_counters(address: str) -> Dict[str, str]:
    return {k: v for k, v in server_stats(address).items() if k.startswith("cmd_") or k.endswith(("_hits", "_misses"))}


LONG_KEYS = {"251 bytes": "k" * 251, "1 MB": "k" * (1 << 20), "251 bytes (bytes)": b"b" * 251}


@pytest.mark.parametrize("key", list(LONG_KEYS.values()), ids=list(LONG_KEYS))
def test_over_long_key_with_check_keys_false_is_refused_before_sending(memcached, key):
    c = Client(memcached.servers, check_keys=False, dead_retry=30)
    assert c.set("canary", "alive") is True
    before = command_counters(memcached.address)
    for call in (
        lambda: c.set(key, 1),
        lambda: c.get(key),
        lambda: c.gets(key),
        lambda: c.add(key, 1),
        lambda: c.delete(key),
        lambda: c.incr(key),
        lambda: c.touch(key, 5),
        lambda: c.get_multi(["canary", key]),
        lambda: c.set_multi({"ok": 1, key: 2}),
        lambda: c.delete_multi([key]),
    ):
        with pytest.raises(Client.MemcachedKeyLengthError):
            call()
    assert command_counters(memcached.address) == before, "a command reached the server"
    assert c.servers[0].deaduntil == 0
    # Every other caller of the shared client still hits.
    seen = []
    assert run_threads(lambda n: seen.append(c.get("canary")), 4, together=True) == []
    assert seen == ["alive"] * 4


def test_key_prefix_making_a_key_too_long_is_refused_with_check_keys_false(memcached, make):
    c = make(memcached.servers, check_keys=False)
    with pytest.raises(Client.MemcachedKeyLengthError):
        c.get_multi(["k" * 249], key_prefix="pp")
    with pytest.raises(Client.MemcachedKeyLengthError):
        c.set_multi({"k" * 249: 1}, key_prefix="pp")
    assert c.set("k" * 250, 1) is True and c.get("k" * 250) == 1  # memcached's limit is 250: accepted
    assert c.servers[0].deaduntil == 0


@pytest.mark.parametrize("mode", ["pickle", "signed", "json"])
def test_get_counters_reads_integers_only_and_never_the_serde(memcached, make, mode):
    import pickle

    c = make(memcached.servers, **SERDES[mode])
    strict = make(memcached.servers, strict=True, **SERDES[mode])
    assert c.set("a", 5) is True and c.set("b", 0) is True and c.decr("b") == 0
    assert c.set("c", 100) is True and c.decr("c", 91) == 9  # "9  " on the wire
    raw(memcached.address, b"set d 0 0 2\r\n42\r\n")  # digits with flags 0 (incr counts them too)
    EXECUTED.clear()
    planted = pickle.dumps(Payload())
    raw(memcached.address, b"set evil 1 0 %d\r\n%s\r\n" % (len(planted), planted))  # a pickle, flags 1
    raw(memcached.address, b"set text 16 0 3\r\nabc\r\n")
    assert c.get_counters(["a", "b", "c", "d", "evil", "text", "absent"]) == {"a": 5, "b": 0, "c": 9, "d": 42}
    assert c.get_counter("a") == 5 and c.get_counter("evil", -1) == -1 and c.get_counter("absent") is None
    assert c.get_counters(["x"], key_prefix="ev") == {}  # key_prefix as in get_multi
    with pytest.raises(errors.SerializationError):
        strict.get_counters(["a", "evil"])
    assert EXECUTED == []
    assert c.servers[0].deaduntil == 0
    if mode == "pickle":
        c.get("evil")  # the plain read path of the default serde does unpickle: the threat avoided above
        assert EXECUTED == ["ran"]


def test_a_repeated_counters_reply_is_answered_from_its_decoded_copy_and_never_stale(memcached, make, caplog):
    """A few counters read again with the same reply bytes come from the decoded copy
    (a planted copy shows it is used); any change of the reply decodes it afresh; a
    caller changing its answer changes nobody else's; a reply with a non-counter is
    never kept (its warning is logged on every read)."""
    c = make(memcached.servers)
    keys = ["mc:a", "mc:b", "mc:c"]
    for i, key in enumerate(keys):
        assert c.set(key, i) is True
    want = {"mc:a": 0, "mc:b": 1, "mc:c": 2}
    for _ in range(4):  # (read 2 keeps the decoded copy; reads 3 and 4 come from it)
        got = c.get_counters(keys)
        assert got == want
        got["mc:a"] = "mine"  # the caller's own dict
    if isinstance(c, Client):  # (the async client shares the code: its answers are checked above and below)
        few = c._keys.few(tuple(keys))
        items, _decoded = few[3][0]
        few[3][0] = (items, {"mc:a": 99})  # planted: the next repeat must come from it
        assert c.get_counters(keys) == {"mc:a": 99}
        few[3][0] = (items, dict(want))
    assert c.incr("mc:b") == 2
    assert c.get_counters(keys) == {"mc:a": 0, "mc:b": 2, "mc:c": 2}  # new bytes: decoded again
    assert c.get_counters(keys) == {"mc:a": 0, "mc:b": 2, "mc:c": 2}
    assert c.delete("mc:c") == 1
    assert c.get_counters(keys) == {"mc:a": 0, "mc:b": 2}
    raw(memcached.address, b"set mc:c 16 0 3\r\nabc\r\n")  # text: not a counter
    caplog.clear()
    with caplog.at_level("WARNING", logger="sqla_memcache"):
        for _ in range(3):
            assert c.get_counters(keys) == {"mc:a": 0, "mc:b": 2}
    assert sum("could not decode value of b'mc:c'" in r.getMessage() for r in caplog.records) == 3


def test_get_counters_begin_reads_what_get_counters_reads_after_the_send(memcached) -> None:
    """The two-half read: its answer is the reply to what was sent (a counter moved after
    the send is seen only by the next read), on the pooled connection; many keys or a
    prefix run whole at once; ``cancel`` closes only that connection."""
    c = Client(memcached.servers)
    keys = ["cb:a", "cb:b", "cb:c"]
    for i, key in enumerate(keys):
        assert c.set(key, 10 + i) is True
    assert c.get_counters_begin(keys).result() == c.get_counters(keys) == {"cb:a": 10, "cb:b": 11, "cb:c": 12}
    before = connections(memcached.address)  # (each look adds its own connection: subtracted below)
    pending = c.get_counters_begin(keys)
    time.sleep(0.05)  # memcached has answered by now
    assert Client(memcached.servers).incr("cb:a") == 11  # (another client: another connection)
    assert pending.result() == {"cb:a": 10, "cb:b": 11, "cb:c": 12}  # the reply to the request sent
    assert pending.result() == {"cb:a": 10, "cb:b": 11, "cb:c": 12}  # (asked again: the same answer)
    assert c.get_counters_begin(keys).result() == {"cb:a": 11, "cb:b": 11, "cb:c": 12}
    assert connections(memcached.address) - before - 1 == 1  # only the other client's
    pending = c.get_counters_begin(keys)
    pending.cancel()  # its reply unread: the connection is closed, never pooled
    pending.cancel()
    assert c.get_counters_begin(["cb:b"]).result() == {"cb:b": 11}
    assert connections(memcached.address) - before - 2 == 2  # and a new one after the cancel
    many = ["cb:%d" % i for i in range(40)]
    assert c.set_multi({key: 1 for key in many}) == []
    assert c.get_counters_begin(many).result() == {key: 1 for key in many}  # ran whole at once
    assert c.get_counters_begin(["a", "b"], key_prefix="cb:").result() == {"a": 11, "b": 11}  # likewise


def test_get_counters_begin_fails_as_get_counters_does() -> None:
    """A dead server: the quiet empty answer, or the typed error at once when strict."""
    assert Client(["127.0.0.1:1"]).get_counters_begin(["a", "b"]).result() == {}
    with pytest.raises(errors.ServerDeadError):
        Client(["127.0.0.1:1"], strict=True).get_counters_begin(["a", "b"])


def test_deadline_from_url_and_constructor() -> None:
    c = Client.from_url("memcached://127.0.0.1:1?timeout=1&deadline=5")
    assert (c.socket_timeout, c.deadline) == (1, 5)
    host = c.servers[0]
    assert (host.io_timeout, host.budget) == (1, 5)  # no wait over 1 s, no call over 5 s
    assert Client(["127.0.0.1:1"], socket_timeout=3, deadline=0.5).servers[0].io_timeout == 0.5
    assert Client(["127.0.0.1:1"], socket_timeout=2).servers[0].budget == 2  # default: socket_timeout
    assert Client(["127.0.0.1:1"], socket_timeout=None).servers[0].deadline() is None
