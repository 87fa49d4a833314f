"""Client construction: server lists, serdes and ``Client.from_url`` fail early and clearly."""
from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path
from typing import Any

import pytest

from sqla_memcache import Client, JSONSerde, PickleSerde, RawSerde, SignedSerde
from sqla_memcache.config import URL_PARAMETERS, parse_url

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


# --------------------------------------------------------------------------- server lists

def test_a_single_server_string_is_one_server(memcached: Any) -> None:
    mc = Client(memcached.address)
    assert [h.label for h in mc.servers] == [memcached.address]
    assert mc.set("construction:one", "x") is True
    assert mc.get("construction:one") == "x"


def test_a_single_weighted_tuple_is_one_server() -> None:
    mc = Client(("127.0.0.1:11211", 3))
    assert len(mc.servers) == 1 and mc.servers[0].weight == 3


@pytest.mark.parametrize("servers", ["h1:11211,h2:11211", "h1:11211 h2:11211"])
def test_several_servers_in_one_string_are_refused(servers: str) -> None:
    with pytest.raises(ValueError, match=r"pass a list .*from_url"):
        Client(servers)


@pytest.mark.parametrize("servers, message", [
    (b"127.0.0.1:11211", "not bytes"),
    (11211, "not int"),
    ({"127.0.0.1:11211": 1}, "not dict"),
    ([11211], "got 11211"),
    ([("127.0.0.1:11211", "2")], r"weight: int"),
    ([("127.0.0.1:11211",)], r"weight: int"),
])
def test_bad_server_lists_raise_type_error(servers: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Client(servers)


def test_bad_server_entries_raise_value_error() -> None:
    with pytest.raises(ValueError, match="weight must be >= 1"):
        Client([("127.0.0.1:11211", 0)])
    with pytest.raises(ValueError, match="empty server address"):
        Client(["127.0.0.1:11211", ""])
    with pytest.raises(ValueError, match="several servers"):
        Client(["127.0.0.1:11211"]).set_servers("a:1,b:2")


def test_an_empty_list_is_allowed_as_in_python_memcached() -> None:
    mc = Client([])
    assert mc.servers == [] and mc.get("k") is None


# --------------------------------------------------------------------------- serdes

class NoDeserialize:
    def serialize(self, key: bytes, value: Any) -> Any:
        return b"", 0


@pytest.mark.parametrize("serde, message", [
    (JSONSerde, r"instance, not the class JSONSerde: pass serde=JSONSerde\(\)"),
    (NoDeserialize(), "lacks deserialize"),
    (object(), "lacks serialize and deserialize"),
    ("json", "lacks serialize and deserialize"),
])
def test_unusable_serdes_are_refused(serde: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        Client(["127.0.0.1:11211"], serde=serde)


def test_an_empty_secret_key_is_refused() -> None:
    with pytest.raises(ValueError, match="secret_key must not be empty"):
        Client(["127.0.0.1:11211"], secret_key="")


# --------------------------------------------------------------------------- from_url

def test_from_url_servers_and_parameters() -> None:
    mc = Client.from_url("memcached://h1:11211,h2:11212?hashing=ketama&timeout=1")
    assert [h.label for h in mc.servers] == ["h1:11211", "h2:11212"]
    assert mc.hashing == "ketama" and mc.socket_timeout == 1.0


def test_from_url_talks_to_the_server(memcached: Any) -> None:
    mc = Client.from_url(f"memcached://{memcached.address}?serde=json&strict=true")
    assert isinstance(mc.serde, JSONSerde) and mc.strict
    assert mc.set("construction:url", {"a": [1, 2]}) is True
    assert mc.get("construction:url") == {"a": [1, 2]}


def test_from_url_every_parameter() -> None:
    servers, kwargs = parse_url(
        "memcached://cache:1?timeout=none&dead_retry=2.5&strict=1&max_pool_size=4&max_key_length=100"
        "&max_value_length=2097152&check_keys=no&cache_cas=yes&flush_on_reconnect=on&debug=true"
        "&pickle_protocol=5&serde=pickle&secret_key=s3cret&hashing=modula"
    )
    assert servers == ["cache:1"]
    serde = kwargs.pop("serde")
    assert isinstance(serde, PickleSerde) and serde.protocol == 5
    assert kwargs == {
        "socket_timeout": None, "dead_retry": 2.5, "strict": True, "max_pool_size": 4,
        "server_max_key_length": 100, "server_max_value_length": 2097152, "check_keys": False,
        "cache_cas": True, "flush_on_reconnect": 1, "debug": 1, "pickleProtocol": 5,
        "secret_key": "s3cret", "hashing": "modula",
    }
    mc = Client.from_url("memcached://cache:1?secret_key=s3cret&serde=raw")
    assert isinstance(mc.serde, SignedSerde) and isinstance(mc.serde.inner, RawSerde)


def test_from_url_server_forms() -> None:
    assert parse_url("memcached://cache")[0] == ["cache:11211"]
    assert parse_url("memcache://[::1]:11300,[fe80::1]")[0] == ["inet6:[::1]:11300", "inet6:[fe80::1]:11211"]
    assert parse_url("memcached:///run/memcached/memcached.sock")[0] == ["unix:/run/memcached/memcached.sock"]
    host = Client.from_url("memcached://[::1]:11300").servers[0]
    assert (host.family, host.address) == (socket.AF_INET6, ("::1", 11300))


def test_from_url_tls(tmp_path: Path) -> None:
    assert isinstance(parse_url("memcacheds://cache:11211")[1]["ssl_context"], ssl.SSLContext)
    assert isinstance(parse_url("memcached://cache:11211?tls=true")[1]["ssl_context"], ssl.SSLContext)
    assert "ssl_context" not in parse_url("memcached://cache:11211?tls=false")[1]
    with pytest.raises(ValueError, match="contradicts"):
        parse_url("memcacheds://cache:11211?tls=false")
    with pytest.raises((OSError, ssl.SSLError)):  # the CA file is really loaded
        parse_url(f"memcached://cache:11211?tls_ca_file={tmp_path / 'missing.pem'}")


@pytest.mark.parametrize("url, message", [
    ("redis://cache:6379", "unsupported URL scheme 'redis'"),
    ("memcached://cache?hashing=ketama&colour=blue", r"unknown parameter 'colour'.*known: cache_cas"),
    ("memcached://cache?timeout=1&timeout=2", "given twice"),
    ("memcached://cache?hashing=crc32", "hashing='crc32': expected one of modula, ketama"),
    ("memcached://cache?timeout=soon", "timeout='soon': expected a number"),
    ("memcached://cache?timeout=-1", "must be >= 0"),
    ("memcached://cache?max_pool_size=1.5", "expected an integer"),
    ("memcached://cache?strict=maybe", "strict='maybe': expected one of true/false"),
    ("memcached://cache?secret_key=", "secret_key must not be empty"),
    ("memcached://cache:port", "the port must be a number"),
    ("memcached://cache:99999", "the port must be a number"),
    ("memcached://a:1,,b:2", "empty server"),
    ("memcached://user:pw@cache:1", "no user or password"),
    ("memcached://", "needs servers"),
    ("memcached://cache/db", "unexpected path"),
    ("memcached://cache#x", "fragment"),
    ("memcached://cache?=1", "malformed query string|unknown parameter"),
])
def test_from_url_rejects(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Client.from_url(url)


def test_from_url_keyword_arguments_add_to_the_url() -> None:
    serde = JSONSerde()
    mc = Client.from_url("memcached://cache:1?timeout=2", serde=serde, max_pool_size=3)
    assert mc.serde is serde and mc.max_pool_size == 3 and mc.socket_timeout == 2.0
    with pytest.raises(ValueError, match="socket_timeout set both in the URL and as keyword"):
        Client.from_url("memcached://cache:1?timeout=2", socket_timeout=5)
    with pytest.raises(TypeError, match="url must be a string"):
        Client.from_url(["memcached://cache:1"])  # type: ignore[arg-type]


def test_every_url_parameter_is_documented() -> None:
    text = DOCS.read_text()
    section = text.split("## Client.from_url", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", section, re.M))
    assert documented == set(URL_PARAMETERS)
