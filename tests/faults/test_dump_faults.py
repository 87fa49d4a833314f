"""Key listing (``lru_crawler metadump``) against a server that is busy, slow or refuses."""
from __future__ import annotations

import time
from typing import List

import pytest
from .misbehaving_server import MisbehavingServer, Request

from sqla_memcache import Client, MemcachedDict
from sqla_memcache.mdict import DumpingNotAllowed, MemcachedDictError, dump_keys

DUMP = b"key=a%3Ab exp=-1 la=1 cas=1 fetch=no cls=1 size=60\nkey=other exp=-1 la=1 cas=2 fetch=no cls=1 size=60\nEND\r\n"


def serve(rule) -> MisbehavingServer:  # type: ignore[no-untyped-def]
    server = MisbehavingServer(rule).start()
    return server


def test_a_busy_crawler_is_retried_until_it_answers() -> None:
    answers: List[bytes] = [b"BUSY currently processing crawler request\r\n"] * 2 + [DUMP]

    def rule(req: Request):  # type: ignore[no-untyped-def]
        return [answers.pop(0)] if req.line.startswith(b"lru_crawler") else None

    server = serve(rule)
    try:
        assert list(dump_keys(Client(server.servers), "a:")) == ["a:b"]
        assert server.commands(b"lru_crawler") == 3
    finally:
        server.close()


def test_a_dump_that_never_ends_raises_timeout_error_within_the_timeout() -> None:
    def rule(req: Request):  # type: ignore[no-untyped-def]
        # drips key lines without ever sending END
        return [b"key=k%d exp=-1 la=1 cas=1 fetch=no cls=1 size=1\n" % i for i in range(1000)] + [30.0] \
            if req.line.startswith(b"lru_crawler") else None

    server = serve(rule)
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="not finished within 0.5 s"):
            list(dump_keys(Client(server.servers), "", timeout=0.5))
        assert time.monotonic() - started < 10  # bounded by the timeout, not by the server's 30 s
    finally:
        server.close()


@pytest.mark.parametrize("reply, error, match", [
    (b"CLIENT_ERROR lru crawler metadump not allowed\r\n", DumpingNotAllowed, "disable-dumping"),
    (b"SERVER_ERROR out of memory\r\n", MemcachedDictError, "out of memory"),
])
def test_refusals_are_typed(reply: bytes, error: type, match: str) -> None:
    server = serve(lambda req: [reply] if req.line.startswith(b"lru_crawler") else None)
    try:
        with pytest.raises(error, match=match):
            list(MemcachedDict(Client(server.servers)))
    finally:
        server.close()


def test_a_dead_server_is_an_os_error() -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError, match="127.0.0.1:%d" % port):
        list(dump_keys(Client(["127.0.0.1:%d" % port], socket_timeout=0.5)))
