"""One parser of server addresses (``config.parse_server``): the client, URLs and the CLI agree."""
from __future__ import annotations

import socket

import pytest

from sqla_memcache.config import parse_server, parse_url
from sqla_memcache.memcached_process import split_address


@pytest.mark.parametrize("spec, family, address", [
    ("cache:11212", socket.AF_INET, ("cache", 11212)),
    ("cache", socket.AF_INET, ("cache", 11211)),
    ("inet:cache:7", socket.AF_INET, ("cache", 7)),
    ("[::1]:11212", socket.AF_INET6, ("::1", 11212)),
    ("inet6:[::1]", socket.AF_INET6, ("::1", 11211)),
    ("unix:/run/memcached.sock", socket.AF_UNIX, "/run/memcached.sock"),
])
def test_parse_server(spec: str, family: int, address: object) -> None:
    assert parse_server(spec)[:2] == (family, address) and parse_server((spec, 3))[2] == 3


@pytest.mark.parametrize("spec", ["::1:11211", "cache:port", "cache:1:2", "[::1", ""])
def test_parse_server_refuses(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_server(spec)


def test_the_cli_and_urls_use_the_same_parser() -> None:
    assert split_address("[::1]:11212") == ("::1", 11212) and split_address(":5") == ("127.0.0.1", 5)
    with pytest.raises(ValueError):
        split_address("unix:/tmp/sock")
    with pytest.raises(ValueError):
        split_address("::1:11211")  # an IPv6 address needs brackets, everywhere
    servers, _ = parse_url("memcached://a:1,[::1]:2,b")
    assert servers == ["a:1", "inet6:[::1]:2", "b:11211"]
    assert [parse_server(s)[1] for s in servers] == [("a", 1), ("::1", 2), ("b", 11211)]
