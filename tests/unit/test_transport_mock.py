"""The transport and the client over the in-memory transport (:mod:`sqla_memcache.transport.mock`): no socket.

Connection: buffering across reply pieces of every size, EOF and socket
errors mapped to ``ConnectionLostError`` once.  Host: the exchange seam
(pool, dead host on a fault, connection kept after an error reply only when
in step).  Client: the commands' plans end to end, routing and failover.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest

from sqla_memcache import Client, errors
from sqla_memcache.protocol import RetrievalReply, read_store_line
from sqla_memcache.routing import Router
from sqla_memcache.transport.connection import Connection
from sqla_memcache.transport.host import Host
from sqla_memcache.transport.mock import MockHost, MockServer, MockSocket, mock_client_class

MockClient = mock_client_class(Client)


@pytest.fixture(autouse=True)
def fresh_servers() -> Iterator[None]:
    MockHost.reset()
    MockHost.chunk = 1 << 20
    yield
    MockHost.reset()
    MockHost.chunk = 1 << 20


class BrokenSocket(MockSocket):
    def send(self, data: Any) -> int:
        raise ConnectionResetError(104, "Connection reset by peer")


# -- Connection ---------------------------------------------------------------
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64, 1 << 20])
def test_a_reply_in_pieces_of_any_size(chunk):
    server = MockServer()
    server.items[b"k"] = (5, b"x" * 300, 1)
    conn = Connection(MockSocket(server, chunk))
    conn.send(b"get k\r\n")
    assert conn.read(RetrievalReply([b"k"])) == [(b"k", 5, b"x" * 300, None)]
    assert conn.rb.is_empty()


def test_eof_mid_reply_is_connection_lost():
    server = MockServer()
    server.items[b"k"] = (0, b"x" * 300, 1)
    conn = Connection(MockSocket(server, 16, eof_after=40))
    conn.send(b"get k\r\n")
    with pytest.raises(errors.ConnectionLostError, match="closed by server"):
        conn.read(RetrievalReply([b"k"]))


def test_socket_errors_are_mapped_once():
    conn = Connection(BrokenSocket(MockServer()))
    with pytest.raises(errors.ConnectionLostError, match="Connection reset by peer") as info:
        conn.send(b"get k\r\n")
    assert isinstance(info.value.__cause__, ConnectionResetError)


def test_a_silent_server_times_out():
    conn = Connection(MockSocket(MockServer()))
    with pytest.raises(errors.ConnectionLostError, match="timed out"):
        conn.recv()


# -- Host ----------------------------------------------------------------------
def test_exchange_pools_the_connection():
    host = MockHost("mock:1")
    assert host.exchange(b"set k 0 0 1\r\nv\r\n", read_store_line) == b"STORED"
    assert host.idle_count() == 1
    assert host.exchange(b"get k\r\n", RetrievalReply([b"k"])) == [(b"k", 0, b"v", None)]
    assert host.idle_count() == 1 and len(host.server.received) == 2


def test_a_fault_marks_the_host_dead_and_drops_the_connection():
    host = MockHost("mock:1", dead_retry=60)
    host.server.replies.append(b"VALUE other 0 1\r\nx\r\nEND\r\n")  # a reply to another request
    with pytest.raises(errors.ProtocolError):
        host.exchange(b"get k\r\n", RetrievalReply([b"k"]))
    assert host.is_dead() and host.idle_count() == 0
    with pytest.raises(errors.ServerDeadError):
        host.exchange(b"get k\r\n", RetrievalReply([b"k"]))


def test_an_error_reply_closes_the_connection_but_keeps_the_host():
    host = MockHost("mock:1")
    host.server.replies.append(b"CLIENT_ERROR bad data chunk\r\n")
    with pytest.raises(errors.ClientError):
        host.exchange(b"set k 0 0 1\r\nv\r\n", read_store_line)
    assert not host.is_dead() and host.idle_count() == 0


def test_a_down_server_is_dead_without_sending():
    host = MockHost("mock:1")
    host.server.down = True
    assert not host.usable() and host.is_dead()
    assert host.server.received == []


# -- Router --------------------------------------------------------------------
class Node:
    def __init__(self, label: str) -> None:
        self.label, self.weight, self.up = label, 1, True


@pytest.mark.parametrize("hashing", ["modula", "ketama"])
def test_router_failover_is_one_switch(hashing):
    nodes = [Node("a:1"), Node("b:1"), Node("c:1")]
    router = Router(nodes, hashing, lambda n: n.up)
    home_only = router.without_failover()
    keys = [b"k%d" % i for i in range(200)]
    homes = {k: router.home(k) for k in keys}
    assert {k: router.route(k) for k in keys} == homes == {k: home_only.route(k) for k in keys}
    nodes[0].up = False
    moved = [k for k in keys if homes[k] is nodes[0]]
    assert moved and all(router.route(k) in nodes[1:] for k in moved)  # failover
    assert all(home_only.route(k) is None for k in moved)  # no failover: unavailable
    assert all(home_only.route(k) is homes[k] for k in keys if homes[k] is not nodes[0])
    assert home_only.servers is router.servers and router.failover and not home_only.failover


def test_router_with_one_server_never_hashes():
    node = Node("a:1")
    router = Router([node], "modula", lambda n: n.up)
    assert router.route(b"anything") is node and router.route((7, b"x")) is node
    node.up = False
    assert router.route(b"anything") is None


# -- the client over the mock transport -----------------------------------------
def test_commands_end_to_end():
    c = MockClient(["mock:1"])
    assert c.set("k", "text") is True and c.get("k") == "text"
    assert c.add("k", 1) is False and c.replace("k", {"a": 1}) is True and c.get("k") == {"a": 1}
    assert c.set("n", 5) and c.incr("n", 3) == 8 and c.decr("n", 10) == 0 and c.incr("missing") is None
    assert c.append("missing", b"x") is False
    assert c.touch("n", 10) == 1 and c.touch("missing") == 0
    assert c.delete("n") == 1 and c.delete("n") == 0 and c.get("n", "dflt") == "dflt"
    value, cas_id = c.gets_cas("k")
    assert value == {"a": 1} and c.cas("k", 2, cas_id=cas_id) is True and c.cas("k", 3, cas_id=cas_id) is False
    assert c.set_multi({"a": b"1", "b": b"2"}, key_prefix="p:") == []
    assert c.get_multi(["a", "b", "c"], key_prefix="p:") == {"a": b"1", "b": b"2"}
    assert c.delete_multi(["a", "b"], key_prefix="p:") == 1 and c.get_multi(["a"], key_prefix="p:") == {}
    assert c.set("obj", {"a": 1}) and c.get_counters(["n", "obj", "k"]) == {"k": 2}  # a pickle is no counter
    assert c.set("ctr", 41) and c.get_counter("ctr") == 41


def test_exact_wire_bytes():
    c = MockClient(["mock:1"])
    c.set("k", b"v", time=5)
    c.get("k")
    c.delete("k", noreply=True)
    c.touch("k", 7)
    c.incr("k", 2)
    c.delete_multi(["a", "b"], time=3)
    c.delete_multi(["a"], noreply=True)
    assert MockHost.servers[1].received == [
        b"set k 0 5 1\r\nv\r\n", b"get k\r\n", b"delete k noreply\r\n", b"touch k 7\r\n", b"incr k 2\r\n",
        b"delete a 3\r\ndelete b 3\r\n", b"delete a noreply\r\n"]


@pytest.mark.parametrize("chunk", [1, 5])
def test_the_client_reads_replies_in_small_pieces(chunk):
    MockHost.chunk = chunk
    c = MockClient(["mock:1"])
    values = {"k%d" % i: b"v" * i for i in range(20)}
    assert c.set_multi(values) == []
    assert c.get_multi(list(values)) == values and c.get("k7") == b"v" * 7


def test_strict_errors_and_quiet_results():
    quiet, strict = MockClient(["mock:1"]), MockClient(["mock:1"], strict=True)
    for c in (quiet, strict):
        c.set("k", b"v")
    MockHost.servers[1].replies.append(b"SERVER_ERROR out of memory storing object\r\n")
    assert quiet.set("k", b"w") is False
    MockHost.servers[1].replies.append(b"SERVER_ERROR out of memory storing object\r\n")
    with pytest.raises(errors.ServerError):
        strict.set("k", b"w")
    MockHost.servers[1].down = True
    for s in quiet.servers + strict.servers:
        s.close_idle()
    assert quiet.get("k", "dflt") == "dflt" and quiet.set("k", 1) == 0 and quiet.get_multi(["k"]) == {}
    for s in strict.servers:
        s.deaduntil = 0.0
    with pytest.raises(errors.ServerDeadError):
        strict.get("k")


def test_failover_and_without_failover_over_two_servers():
    c = MockClient(["mock:1", "mock:2"], dead_retry=60)
    home = c.without_failover()
    keys = ["k%d" % i for i in range(60)]
    assert home.set_multi({k: 1 for k in keys}) == []
    on_1 = [k for k in keys if c._router.home(k.encode()) is c.servers[0]]
    assert 0 < len(on_1) < len(keys)
    MockHost.servers[1].down = True
    c.servers[0].close_idle()
    c.servers[0].mark_dead("test")
    assert set(home.get_multi(keys)) == set(keys) - set(on_1)  # home only: those keys are unavailable
    assert not any(home.set(k, 2) for k in on_1)
    assert all(c.set(k, 3) for k in on_1) and c.get_multi(on_1) == {k: 3 for k in on_1}  # failover moves them
    assert all(MockHost.servers[2].items[k.encode()][1] == b"3" for k in on_1)


def test_a_set_refused_before_sending_sends_nothing():
    c = MockClient(["mock:1"], server_max_value_length=10)
    assert c.set("k", b"x" * 11) == 0 and c.set_multi({"a": b"x" * 11, "b": b"ok"}) == ["a"]
    assert MockHost.servers[1].received == [b"set b 0 0 2\r\nok\r\n"]


def test_host_class_is_the_transport_seam():
    assert MockClient.host_class is MockHost and Client.host_class is Host
    assert all(isinstance(h, MockHost) for h in MockClient(["mock:1", "mock:2"]).servers)
