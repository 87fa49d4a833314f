"""ORMCache construction: unusable clients are refused; ``ORMCache.from_config``."""
from __future__ import annotations

import re
from typing import Any, List

import pytest

import memcache  # python-memcached, a test dependency
from sqla_memcache import AsyncClient, Client, JSONSerde, ORMCache, PickleSerde, RawSerde, SignedSerde


class PymemcacheLike:
    """The signatures of pymemcache's Client (set takes expire=, incr needs a value)."""

    servers: List[str] = []

    def get_multi(self, keys: Any) -> Any:
        return {}

    def set(self, key: Any, value: Any, expire: int = 0, noreply: Any = None, flags: Any = None) -> Any:
        return True

    def add(self, key: Any, value: Any, expire: int = 0, noreply: Any = None, flags: Any = None) -> Any:
        return True

    def incr(self, key: Any, value: Any, noreply: bool = False) -> Any:
        return None

    def delete(self, key: Any, noreply: Any = None) -> Any:
        return True


def test_a_pymemcache_shaped_client_is_refused() -> None:
    with pytest.raises(TypeError) as caught:
        ORMCache(PymemcacheLike())
    message = str(caught.value)
    assert "cannot use test_orm_construction.PymemcacheLike" in message
    assert "set(key, value, expire=0, noreply=None, flags=None) cannot be called as set('k', b'v', time=0" in message
    assert "incr(key, value, noreply=False) cannot be called as incr('k')" in message
    assert "It needs a python-memcached compatible client" in message


def test_the_real_pymemcache_client_is_refused() -> None:
    pymemcache = pytest.importorskip("pymemcache", reason="pymemcache is in the test extra")
    with pytest.raises(TypeError, match=r"cannot use pymemcache\.client\.base\.Client: .*set\("):
        ORMCache(pymemcache.Client(("127.0.0.1", 11211)))


@pytest.mark.parametrize("client, message", [
    (object(), "no get_multi(); no set(); no add(); no incr(); no delete()"),
    (Client, "a client instance, not the class Client"),
    (["127.0.0.1:11211"], "not the server list ['127.0.0.1:11211']: pass ORMCache(Client(servers))"),
    ("127.0.0.1:11211", "not the server list '127.0.0.1:11211': pass ORMCache(Client(servers)), or build it "
                        "with ORMCache.from_config"),
])
def test_non_clients_are_refused(client: Any, message: str) -> None:
    with pytest.raises(TypeError, match=re.escape(message)):
        ORMCache(client)


def test_python_memcached_compatible_clients_are_accepted(memcached: Any) -> None:
    ours = ORMCache(Client([memcached.address]))
    theirs = ORMCache(memcache.Client([memcached.address]))
    assert ours.client.get_multi(["nothing"]) == {} and theirs.client.get_multi(["nothing"]) == {}


class TextOnly:
    """A serde that hands bytes back as text."""

    def serialize(self, key: bytes, value: Any) -> Any:
        return bytes(value), 0

    def deserialize(self, key: bytes, data: bytes, flags: int) -> Any:
        return data.decode("latin-1")


def test_a_client_whose_serde_cannot_store_entries_is_refused() -> None:
    with pytest.raises(TypeError, match=r"cannot use sqla_memcache\.Client: its serde JSONSerde cannot "
                                        r"store bytes \(SerializationError: .*\); the cache stores entries as "
                                        r"pickled bytes: use the default PickleSerde"):
        ORMCache(Client(["127.0.0.1:11211"], serde=JSONSerde()))
    with pytest.raises(TypeError, match="its serde TextOnly does not give bytes back as they were stored"):
        ORMCache(Client(["127.0.0.1:11211"], serde=TextOnly()))
    with pytest.raises(TypeError, match=r"cannot use sqla_memcache\.AsyncClient: its serde JSONSerde"):
        ORMCache(Client(["127.0.0.1:11211"]), async_client=AsyncClient(["127.0.0.1:11211"], serde=JSONSerde()))
    with pytest.raises(TypeError, match="its serde JSONSerde"):
        ORMCache(AsyncClient(["127.0.0.1:11211"], serde=JSONSerde()))


@pytest.mark.parametrize("serde", [PickleSerde(), RawSerde(), SignedSerde(b"secret")], ids=lambda s: type(s).__name__)
def test_serdes_that_store_bytes_are_accepted(serde: Any) -> None:
    assert ORMCache(Client(["127.0.0.1:11211"], serde=serde)).namespace == "sqla_memcache"


# --------------------------------------------------------------------------- from_config

def test_from_config_reads_the_prefixed_keys(memcached: Any) -> None:
    settings = {
        "sqla_memcache.url": f"memcached://{memcached.address}?timeout=2&hashing=ketama",
        "sqla_memcache.namespace": "cfgapp",
        "sqla_memcache.expire": "300",
        "sqla_memcache.stampede_wait": "0.5",
        "sqla_memcache.min_compress_len": 1000,
        "sqlalchemy.url": "sqlite://",  # another component's settings: ignored
    }
    cache = ORMCache.from_config(settings)
    assert isinstance(cache, ORMCache)
    assert (cache.namespace, cache.expire, cache.min_compress_len, cache.stampede.wait) == ("cfgapp", 300, 1000, 0.5)
    assert cache.client.socket_timeout == 2.0 and cache.client.hashing == "ketama"
    assert cache.client.set("cfg:k", b"v") is True and cache.client.get("cfg:k") == b"v"


def test_from_config_other_prefix_and_own_client(memcached: Any) -> None:
    client = Client([memcached.address])
    cache = ORMCache.from_config({"cache.namespace": "other"}, prefix="cache.", client=client)
    assert cache.namespace == "other" and cache.client.servers == client.servers


@pytest.mark.parametrize("settings, message", [
    ({"sqla_memcache.url": "memcached://h:1", "sqla_memcache.expires": "5"},
     r"unknown setting\(s\) sqla_memcache.expires; known under 'sqla_memcache.': url, async_client, durable_log, enabled, expire, held_bytes"),
    ({"sqla_memcache.namespace": "x"}, "no sqla_memcache.url"),
    ({"sqla_memcache.url": "memcached://h:1", "sqla_memcache.expire": "soon"},
     r"setting 'sqla_memcache.expire'='soon': invalid literal"),
    ({"sqla_memcache.url": "memcached://h:1?colour=blue"}, "unknown parameter 'colour'"),
    ({"sqla_memcache.url": "memcached://h:1", "sqla_memcache.namespace": "a:b"}, "namespace"),
])
def test_from_config_rejects(settings: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ORMCache.from_config(settings)


def test_from_config_refuses_url_and_client_together() -> None:
    with pytest.raises(ValueError, match="both client= and sqla_memcache.url"):
        ORMCache.from_config({"sqla_memcache.url": "memcached://h:1"}, client=Client(["h:1"]))
