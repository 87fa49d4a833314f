"""Hostile input: keys, values and cache entries chosen by an attacker or a bug.

Property-based (hypothesis) on top of ``tests/client/test_client.py``'s fixed
cases: for ANY key the client either raises a ``MemcachedKeyError`` subclass
having sent nothing, or sends exactly one well-formed command; the ORM key
builder turns any parameter into a valid key; values over the item size give
a clear outcome on a connection that stays in step; unpicklable values are
refused before sending; a signed serde refuses every tampered, replayed or
unsigned value without unpickling it; TLS refuses a wrong peer.
"""
from __future__ import annotations

import pickle
import socket
import threading
import uuid
from urllib.parse import unquote
from typing import Any, Callable, List

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import String, bindparam, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from support.raw import raw, stats
from support.threads import run_threads
from sqla_memcache import Client, JSONSerde, errors
from sqla_memcache.orm import FromCache, MemcachedORMObject, ORMCache
from sqla_memcache.orm import keys as orm_keys
from sqla_memcache.serde import FLAG_INTEGER, FLAG_SIGNED

FIXTURES = settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)


COMMAND_STATS = (
    "cmd_get", "cmd_set", "cmd_flush", "cmd_touch", "delete_hits", "delete_misses",
    "incr_hits", "incr_misses", "decr_hits", "decr_misses",
)  # fmt: skip


def commands_seen(address: str) -> int:
    found = stats(address)
    return sum(found.get(name, 0) for name in COMMAND_STATS)


class StrKey(str):
    """A str subclass (an enum-like key): python-memcached accepts these."""


class BytesKey(bytes):
    pass


INJECTIONS = [
    "a\r\nflush_all", "a\r\nset evil 0 0 1\r\nx", "a b", "tab\there", "nul\x00", "\x7f", "lf\nflush_all",
    b"bytes\r\nflush_all", "é\u2028\u0085", "k" * 251, "", b"", "\ud800", ("1", "x"), (5,), (1, 2), (1, None),
]  # fmt: skip

KEYS = st.one_of(
    st.text(max_size=300),
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=30),  # lone surrogates too
    st.binary(max_size=300),
    st.sampled_from(INJECTIONS),
    st.integers(),
    st.floats(),
    st.none(),
    st.booleans(),
    st.tuples(st.integers(), st.one_of(st.text(max_size=40), st.binary(max_size=40))),
    st.tuples(st.one_of(st.text(max_size=3), st.floats(), st.none()), st.text(max_size=5)),
    st.lists(st.text(max_size=5), max_size=3).map(tuple),
    st.builds(StrKey, st.text(max_size=40)),
    st.builds(BytesKey, st.binary(max_size=40)),
    st.builds(bytearray, st.binary(max_size=20)),
    st.builds(object),
)

# (name, call, commands sent when the key is valid)
OPS: List[Any] = [
    ("set", lambda c, k: c.set(k, 1)),
    ("get", lambda c, k: c.get(k)),
    ("gets", lambda c, k: c.gets(k)),
    ("add", lambda c, k: c.add(k, 1)),
    ("replace", lambda c, k: c.replace(k, 1)),
    ("append", lambda c, k: c.append(k, "x")),
    ("cas", lambda c, k: c.cas(k, 1, cas_id=1)),
    ("delete", lambda c, k: c.delete(k)),
    ("incr", lambda c, k: c.incr(k)),
    ("decr", lambda c, k: c.decr(k)),
    ("touch", lambda c, k: c.touch(k, 5)),
    ("get_multi", lambda c, k: c.get_multi([k])),
    ("set_multi", lambda c, k: c.set_multi({k: 1})),
    ("delete_multi", lambda c, k: c.delete_multi([k])),
    ("get_multi prefixed", lambda c, k: c.get_multi([k], key_prefix="p:")),
]
OP_NAMES = [name for name, _ in OPS]


def run_op(client: Client, op: Callable[[Client, Any], Any], key: Any) -> bool:
    """True when the call went through, False when it raised a key error; anything else fails."""
    try:
        op(client, key)
    except errors.MemcachedKeyError:
        return False
    except TypeError:
        # unhashable keys cannot even be put in a dict for set_multi: not the client's doing
        try:
            hash(key)
        except TypeError:
            return False
        raise
    return True


@pytest.mark.parametrize("check_keys", [True, False], ids=["check_keys", "no_check_keys"])
@settings(FIXTURES, max_examples=300)
@given(key=KEYS, op=st.sampled_from(range(len(OPS))))
def test_any_key_is_a_key_error_or_exactly_one_well_formed_command(misbehaving, key, op, check_keys):
    """Against the scripted server, which records every command line it parses."""
    client = Client(misbehaving.servers, check_keys=check_keys, socket_timeout=2)
    before = len(misbehaving.lines)
    name, call = OPS[op]
    sent = run_op(client, call, key)
    new = misbehaving.lines[before:]
    if not sent:
        assert new == [], "a key error after sending %r" % new
        return
    assert len(new) == 1, "one call, %d commands: %r" % (len(new), new)
    words = new[0].split(b" ")
    command = words[0].decode()
    assert command == {"get_multi": "get", "set_multi": "set", "delete_multi": "delete",
                       "get_multi prefixed": "get"}.get(name, name)  # fmt: skip
    expected_words = {"get": 2, "gets": 2, "delete": 2, "incr": 3, "decr": 3, "touch": 3, "cas": 6}.get(command, 5)
    assert len(words) == expected_words, new[0]
    assert all(0x21 <= b <= 0x7E or b >= 0x80 for b in words[1]), words[1]
    assert client.servers[0].deaduntil == 0  # the server never saw a malformed command


@settings(FIXTURES, max_examples=150)
@given(key=KEYS, op=st.sampled_from(range(len(OPS))))
def test_any_key_never_reaches_a_real_memcached_as_two_commands(memcached, key, op):
    client = Client(memcached.servers, check_keys=False)
    assert client.set("canary", "alive") is True
    before = commands_seen(memcached.address)
    sent = run_op(client, OPS[op][1], key)
    after = commands_seen(memcached.address)
    # at most one command (memcached may refuse an over-long key sent with check_keys=False)
    assert after - before <= (1 if sent else 0)
    assert client.get("canary") == "alive"
    found = stats(memcached.address)
    assert found["cmd_flush"] == 0
    assert raw(memcached.address, b"get evil\r\n") == b"END\r\n"


# --------------------------------------------------------------------------
# the ORM key builder hashes instead of raising
# --------------------------------------------------------------------------

class KeyBase(DeclarativeBase):
    pass


class Tag(MemcachedORMObject, KeyBase):
    """A string primary key: whatever the user typed becomes part of an object key."""

    __tablename__ = "f_tag"
    name: Mapped[str] = mapped_column(String(400), primary_key=True)
    note: Mapped[str] = mapped_column(String(400))


PARAMS = st.one_of(
    st.text(max_size=400),
    st.binary(max_size=100),
    st.integers(),
    st.floats(allow_nan=False),
    st.none(),
    st.booleans(),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.datetimes(),
    st.dates(),
    st.uuids(),
    st.lists(st.text(max_size=20), max_size=5),
)


@given(namespace=st.from_regex(r"[!-9;-~]{1,100}", fullmatch=True), value=PARAMS)
def test_orm_statement_keys_are_valid_for_any_parameter(namespace, value):
    statement = select(Tag).where(Tag.note == bindparam("v"))
    found = orm_keys.fingerprint(statement, {"v": value})
    assert found is not None, "a plain value made the statement uncacheable"
    key = orm_keys.make_key(namespace, "q", found[1])
    assert orm_keys.is_valid_key(key)
    assert found == orm_keys.fingerprint(statement, {"v": value})


@given(identity=st.lists(PARAMS, min_size=1, max_size=3), table=st.text(max_size=300))
def test_orm_object_and_row_version_keys_are_valid_for_any_identity(identity, table):
    for key in (
        orm_keys.make_key("ns", "o", orm_keys.object_part(Tag, identity)),
        orm_keys.row_version_key("ns", table, identity),
        orm_keys.table_version_key("ns", table),
        orm_keys.dml_version_key("ns", table),
    ):
        assert orm_keys.is_valid_key(key), key
        Client(["127.0.0.1:1"]).check_key(key.encode())  # the client would send it as is


@pytest.fixture(scope="module")
def tag_engine(tmp_path_factory):
    engine = sa.create_engine("sqlite:///" + str(tmp_path_factory.mktemp("hostile") / "tags.db"))
    KeyBase.metadata.create_all(engine)
    yield engine
    engine.dispose()


NAMES = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=300)


@settings(FIXTURES, max_examples=60)
@given(name=NAMES, note=NAMES)
def test_orm_reads_with_hostile_values_are_cached_and_never_inject(memcached, tag_engine, name, note):
    """session.get and FromCache with any text: the right row, a hit the second time, no stray command."""
    with tag_engine.begin() as conn:
        conn.execute(Tag.__table__.delete())
        conn.execute(Tag.__table__.insert(), {"name": name, "note": note})
    client = Client(memcached.servers, strict=True)
    client.set("canary", "alive")
    cache = ORMCache(client, namespace="h" + uuid.uuid4().hex[:10])
    Session = sessionmaker(tag_engine)
    cache.listen_on_session(Session)
    query = select(Tag.name).where(Tag.note == note).options(FromCache())
    for _ in range(2):
        with Session() as s:
            assert s.get(Tag, name).note == note
            assert s.scalars(query).all() == [name]
    assert cache.stats.hits == 2 and cache.stats.errors == 0
    assert client.get("canary") == "alive"
    assert stats(memcached.address)["cmd_flush"] == 0


# --------------------------------------------------------------------------
# values: over the item size, unpicklable
# --------------------------------------------------------------------------

@settings(FIXTURES, max_examples=25)
@given(size=st.one_of(st.integers(1024 * 1024 - 4096, 1024 * 1024 + 64), st.integers(1, 5000)), noise=st.binary(max_size=8))
def test_values_around_the_item_size_give_a_clear_outcome_and_keep_the_connection_in_step(memcached, capsys, size, noise):
    value = (noise + b"v" * size)[:size]
    quiet = Client(memcached.servers, debug=1)
    strict = Client(memcached.servers, strict=True)
    quiet.set("canary", "alive")
    quiet.delete("big")  # a refused value is never sent, so an older one would stay
    connections = stats(memcached.address)["total_connections"]
    result = quiet.set("big", value)
    assert result is True or result == 0, result  # python-memcached's two outcomes, never an exception
    if size <= 5000:
        assert result is True  # far below the item size
    elif size > 1024 * 1024:
        assert result is not True  # over the item size (1 MB): memcached cannot hold it
    if result is True:
        assert quiet.get("big") == value
    else:
        assert quiet.get("big") is None
        assert "MemCached:" in capsys.readouterr().err  # the debug log says why
    try:
        assert strict.set("big", value) is True
    except (errors.ServerError, errors.ValueTooLargeError):
        assert result is not True
    assert quiet.get("canary") == "alive" and strict.get("canary") == "alive"
    assert quiet.set_multi({"big": value, "small": 1}) == ([] if result is True else ["big"])
    assert quiet.get("small") == 1
    # Still the same pooled connections: SERVER_ERROR left the stream in step, nothing reconnected.
    assert stats(memcached.address)["total_connections"] - connections <= 2


def _generator():
    yield 1


class ExplodingReduce:
    def __reduce__(self):
        raise RuntimeError("no pickling for you")


def _deep(depth: int) -> list:
    out: list = []
    for _ in range(depth):
        out = [out]
    return out


UNPICKLABLE = {
    "lambda": lambda: lambda x: x,
    "lock": threading.Lock,
    "generator": _generator,
    "socket": lambda: socket.socket(),
    "reduce raises": ExplodingReduce,
    "nested lock": lambda: {"a": [1, {"b": threading.RLock()}]},
    "too deep": lambda: _deep(200_000),
}


@pytest.mark.parametrize("kind", list(UNPICKLABLE))
def test_unpicklable_values_are_refused_before_sending(memcached, kind):
    value = UNPICKLABLE[kind]()
    quiet = Client(memcached.servers)
    before = stats(memcached.address)["cmd_set"]
    assert quiet.set("u", value) == 0
    assert quiet.set_multi({"u": value, "ok": 1}) == ["u"]
    with pytest.raises(errors.SerializationError):
        Client(memcached.servers, strict=True).set("u", value)
    assert stats(memcached.address)["cmd_set"] - before == 1  # only "ok"
    assert quiet.get("ok") == 1 and quiet.get("u") is None
    if isinstance(value, socket.socket):
        value.close()


# --------------------------------------------------------------------------
# signed serde: tampered, replayed, unsigned -- refused without unpickling
# --------------------------------------------------------------------------

EXECUTED: List[str] = []


def _record(tag: str) -> None:
    EXECUTED.append(tag)


class Payload:
    """Unpickling this runs code: the threat a pickle from memcached poses."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def __reduce__(self):
        return (_record, (self.tag,))


VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(), st.binary()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=10,
)


def get_raw(address: str, key: bytes):
    reply = raw(address, b"get " + key + b"\r\n")
    header, rest = reply.split(b"\r\n", 1)
    flags, size = int(header.split()[2]), int(header.split()[3])
    return flags, rest[:size]


def put_raw(address: str, key: bytes, flags: int, data: bytes) -> None:
    assert raw(address, b"set %s %d 0 %d\r\n%s\r\n" % (key, flags, len(data), data), b"\r\n") == b"STORED\r\n"


@settings(FIXTURES, max_examples=80)
@given(value=VALUES, where=st.integers(min_value=0), flip=st.integers(1, 255), how=st.sampled_from(
    ["flip a byte", "truncate", "extend", "change flags", "other key's value", "drop signed flag"]))
def test_signed_serde_refuses_every_tampering_without_unpickling(memcached, value, where, flip, how):
    signed = Client(memcached.servers, secret_key=b"k" * 32)
    strict = Client(memcached.servers, secret_key=b"k" * 32, strict=True)
    assert signed.set("victim", value) is True and signed.set("other", [value, 1]) is True
    assert signed.get("victim") == value
    flags, data = get_raw(memcached.address, b"victim")
    if type(value) is int:
        # Counters are never signed, so incr/decr work on them (docs/security.md:
        # anyone with write access can change them; reading one never runs code).
        assert (flags, data) == (FLAG_INTEGER, b"%d" % value)
        return
    assert flags & FLAG_SIGNED
    if how == "flip a byte":
        i = where % len(data)
        data = data[:i] + bytes([data[i] ^ flip]) + data[i + 1:]
    elif how == "truncate":
        data = data[: where % len(data)]
    elif how == "extend":
        data = data + bytes([flip])
    elif how == "change flags":
        flags ^= 1 << (where % 8)
        assume(flags & FLAG_SIGNED)
    elif how == "other key's value":
        flags, data = get_raw(memcached.address, b"other")
    else:
        flags &= ~FLAG_SIGNED
        data = data[32:]
    put_raw(memcached.address, b"victim", flags, data)
    if how == "drop signed flag" and flags == 2 and data.isdigit():
        assert signed.get("victim") == int(data)  # a bare counter cannot run code: accepted
        return
    assert signed.get("victim") is None
    # SignatureError; a flipped FLAG_COMPRESSED fails decompression (done before the MAC check) first.
    with pytest.raises(errors.SerializationError):
        strict.get("victim")


def test_unsigned_pickle_runs_code_with_the_default_serde_and_never_with_a_secret_key(memcached):
    EXECUTED.clear()
    planter = Client(memcached.servers)  # anyone able to write to memcached
    planter.set("entry", Payload("default serde"))
    assert Client(memcached.servers).get("entry") is None  # _record returned None...
    assert EXECUTED == ["default serde"]  # ...after running: this is the threat
    EXECUTED.clear()
    signed = Client(memcached.servers, secret_key="s3cret")
    assert signed.get("entry") is None
    assert signed.get_multi(["entry"]) == {}
    with pytest.raises(errors.SignatureError):
        Client(memcached.servers, secret_key="s3cret", strict=True).get("entry")
    assert Client(memcached.servers, serde=JSONSerde()).get("entry") is None
    assert EXECUTED == []


def test_orm_cache_with_a_secret_key_never_unpickles_a_planted_entry(memcached, tag_engine):
    """The ORM stores pickles; with a signed client a planted entry is a miss, answered from the database."""
    with tag_engine.begin() as conn:
        conn.execute(Tag.__table__.delete())
        conn.execute(Tag.__table__.insert(), {"name": "n", "note": "real"})
    EXECUTED.clear()
    cache = ORMCache(Client(memcached.servers, secret_key=b"orm-secret"), namespace="sig" + uuid.uuid4().hex[:8])
    Session = sessionmaker(tag_engine)
    cache.listen_on_session(Session)
    query = select(Tag.note).where(Tag.name == "n").options(FromCache())
    with Session() as s:
        assert s.scalars(query).all() == ["real"]
        assert s.scalars(query).all() == ["real"]
    assert cache.stats.hits == 1
    # Overwrite every entry of the namespace with a pickle that runs code.
    dump = raw(memcached.address, b"lru_crawler metadump all\r\n", b"END\r\n").decode()
    names = [unquote(part[4:]) for part in dump.split() if part.startswith("key=")]
    entry_keys = [k for k in names if k.startswith(cache.namespace + ":") and (":q:" in k or ":o:" in k)]
    assert entry_keys
    bomb = pickle.dumps((1, {}, Payload("orm entry")))
    for key in entry_keys:
        put_raw(memcached.address, key.encode(), 0, bomb)
    with Session() as s:
        assert s.scalars(query).all() == ["real"]
        assert s.get(Tag, "n").note == "real"
    assert EXECUTED == []


@settings(FIXTURES, max_examples=40)
@given(value=st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False),
              st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=10), junk=st.binary(min_size=1, max_size=50))
def test_json_serde_round_trips_and_refuses_non_json(memcached, value, junk):
    client = Client(memcached.servers, serde=JSONSerde())
    assert client.set("j", value) is True
    assert client.get("j") == value
    put_raw(memcached.address, b"j", 1, b"\x80\x04" + junk)  # a pickle header, not JSON
    assert client.get("j") is None
    with pytest.raises(errors.SerializationError):
        Client(memcached.servers, serde=JSONSerde(), strict=True).get("j")


# --------------------------------------------------------------------------
# TLS
# --------------------------------------------------------------------------

def test_tls_wrong_ca_refused_for_every_command_family(tls_memcached):
    wrong = tls_memcached.client_context(tls_memcached.wrong_ca_file)
    strict = Client(tls_memcached.servers, ssl_context=wrong, strict=True, dead_retry=0)
    for call in (lambda c: c.set("k", 1), lambda c: c.get_multi(["k"]), lambda c: c.set_multi({"k": 1}),
                 lambda c: c.delete("k"), lambda c: c.incr("k"), lambda c: c.get_stats()):  # fmt: skip
        with pytest.raises(errors.ServerDeadError):
            call(strict)
    good = Client(tls_memcached.servers, ssl_context=tls_memcached.client_context())
    assert good.set("k", 1) is True and good.get("k") == 1


def test_tls_client_against_a_plain_server_fails_fast(memcached, tls_memcached):
    ctx = tls_memcached.client_context()
    client = Client(memcached.servers, ssl_context=ctx, socket_timeout=1, strict=True)
    with pytest.raises(errors.ServerDeadError):
        client.get("k")
    assert client.servers[0].deaduntil > 0


def test_tls_hostname_must_match(tls_memcached):
    """The certificate names 127.0.0.1 and localhost; a context expecting another name refuses it."""
    ctx = tls_memcached.client_context()
    wrapped = ctx.wrap_socket

    def other_name(sock, server_hostname=None, **kw):
        return wrapped(sock, server_hostname="memcached.example.org", **kw)

    ctx.wrap_socket = other_name  # type: ignore[method-assign]
    with pytest.raises(errors.ServerDeadError):
        Client(tls_memcached.servers, ssl_context=ctx, strict=True).get("k")


def test_tls_shared_by_threads(tls_memcached):
    client = Client(tls_memcached.servers, ssl_context=tls_memcached.client_context())

    def worker(n: int) -> None:
        for i in range(100):
            key = "tls-%d-%d" % (n, i % 10)
            assert client.set(key, (n, i)) is True
            assert client.get(key) == (n, i)

    assert run_threads(worker, 6, together=True, timeout=60) == []


@pytest.fixture
def mtls_memcached(tls_memcached, tmp_path):
    """A TLS memcached that requires a client certificate signed by the test CA (ssl_verify_mode=2)."""
    import shutil
    import subprocess

    from support.memcached import MemcachedProcess, memcached_binary

    files = tls_memcached.files
    openssl = shutil.which("openssl")
    binary = memcached_binary()
    if openssl is None or binary is None:
        pytest.skip("needs openssl and a local memcached binary")
    ca_key = files.ca_file.with_suffix(".key")
    client_key, client_csr, client_cert = tmp_path / "client.key", tmp_path / "client.csr", tmp_path / "client.pem"
    ext = tmp_path / "client.ext"
    ext.write_text("extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n")
    run = lambda *args: subprocess.run([openssl, *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=sqla_memcache test client",
        "-keyout", str(client_key), "-out", str(client_csr))  # fmt: skip
    run("x509", "-req", "-in", str(client_csr), "-CA", str(files.ca_file), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(client_cert))  # fmt: skip
    # The same client key, self-signed: a certificate the server's CA did not sign.
    rogue_cert = tmp_path / "rogue.pem"
    run("req", "-x509", "-new", "-key", str(client_key), "-subj", "/CN=rogue", "-days", "2", "-out", str(rogue_cert))
    process = MemcachedProcess(
        binary,
        extra_args=["-Z", "-o", "ssl_chain_cert=%s,ssl_key=%s,ssl_ca_cert=%s,ssl_verify_mode=2"
                    % (files.cert_file, files.key_file, files.ca_file)],  # fmt: skip
    ).start()
    yield process, files, (client_cert, client_key), rogue_cert
    process.kill()


def test_tls_client_certificate_required(mtls_memcached):
    process, files, (cert, key), rogue_cert = mtls_memcached
    good = files.client_context()
    good.load_cert_chain(str(cert), str(key))
    assert Client(process.servers, ssl_context=good).set("m", 1) is True
    no_cert = files.client_context()
    rogue = files.client_context()
    rogue.load_cert_chain(str(rogue_cert), str(key))
    for ctx in (no_cert, rogue):
        client = Client(process.servers, ssl_context=ctx, strict=True, socket_timeout=2)
        # TLS 1.3 reports a refused client certificate on the first read, not in the handshake.
        with pytest.raises((errors.ServerDeadError, errors.ConnectionLostError)):
            client.get("m")
        assert Client(process.servers, ssl_context=ctx, socket_timeout=2).get("m") is None
    assert Client(process.servers, ssl_context=good).get("m") == 1

