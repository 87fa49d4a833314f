"""MemcachedDict against real memcached servers."""
from __future__ import annotations

from typing import Any, Callable, List

import pytest

from sqla_memcache.client import Client
from sqla_memcache.mdict import (
    DumpingNotAllowed,
    EditConflict,
    MemcachedDict,
    MemcachedDictError,
    parse_metadump,
)
from support.threads import run_threads


@pytest.fixture
def make_dict(memcached: Any) -> Callable[..., MemcachedDict]:
    clients: List[Any] = []

    def factory(key_prefix: str = "t:", servers: Any = None, **kwargs: Any) -> MemcachedDict:
        client = Client(servers or memcached.servers)
        clients.append(client)
        return MemcachedDict(client, key_prefix=key_prefix, **kwargs)

    yield factory
    for client in clients:
        client.disconnect_all()


def test_missing_key_raises_keyerror_and_get_gives_none(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    with pytest.raises(KeyError):
        d["absent"]
    assert d.get("absent") is None
    assert d.get("absent", 5) == 5
    assert "absent" not in d


def test_set_get_contains_delete(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    d["a"] = {"x": [1, 2]}
    assert d["a"] == {"x": [1, 2]}
    assert "a" in d
    del d["a"]
    assert "a" not in d
    with pytest.raises(KeyError):
        del d["a"]
    assert d.pop("a", "gone") == "gone"


def test_prefix_is_applied_on_the_server(make_dict: Callable[..., MemcachedDict], memcached: Any) -> None:
    d = make_dict(key_prefix="app1:")
    other = make_dict(key_prefix="app2:")
    d["k"] = "one"
    other["k"] = "two"
    raw = Client(memcached.servers)
    assert raw.get("app1:k") == "one"
    assert raw.get("app2:k") == "two"
    assert d["k"] == "one" and other["k"] == "two"


def test_none_values_are_refused(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    with pytest.raises(ValueError):
        d["n"] = None
    with pytest.raises(ValueError):
        d.update(n=None)
    assert "n" not in d


def test_non_str_keys_are_refused(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    with pytest.raises(TypeError):
        d[1] = "x"  # type: ignore[index]
    assert 1 not in d


def test_update_and_get_many(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    d.update({"a": 1, "b": "two"}, c=[3])
    d.update([("d", 4.5)])
    assert d.get_many(["a", "b", "c", "d", "missing"]) == {"a": 1, "b": "two", "c": [3], "d": 4.5}
    assert d.get_many([]) == {}


def test_setdefault_keeps_the_first_value(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    assert d.setdefault("s", "first") == "first"
    assert d.setdefault("s", "second") == "first"
    assert d["s"] == "first"


def test_incr_decr_counters(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    assert d.incr("hits") == 1
    assert d.incr("hits", 10) == 11
    assert d.decr("hits", 4) == 7
    assert d.decr("hits", 100) == 0  # memcached stops at zero
    assert d.incr("from5", initial=5) == 6
    assert d.decr("fresh", 3, initial=10) == 7
    with pytest.raises(KeyError):
        d.incr("nope", initial=None)
    assert "nope" not in d


def test_concurrent_incr_from_missing_key_loses_nothing(make_dict: Callable[..., MemcachedDict]) -> None:
    dicts = [make_dict() for _ in range(4)]

    def work(n: int) -> None:
        for _ in range(250):
            dicts[n].incr("shared")

    assert run_threads(work, len(dicts), together=True) == []
    assert dicts[0]["shared"] == 1000


def test_edit_missing_key_without_default_raises(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    with pytest.raises(KeyError):
        with d.edit("nothing") as box:
            box.value = 1
    assert "nothing" not in d


def test_edit_creates_and_updates(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    with d.edit("cart", default=()) as box:
        assert box.existed is False
        box.value = box.value + ("apple",)
    for attempt in d.edit("cart"):
        with attempt as box:
            assert box.existed is True
            box.value = box.value + ("pear",)
    assert d["cart"] == ("apple", "pear")


def test_edit_body_exception_writes_nothing(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    d["v"] = 1
    with pytest.raises(RuntimeError):
        with d.edit("v") as box:
            box.value = 2
            raise RuntimeError("boom")
    assert d["v"] == 1


def test_single_edit_detects_a_concurrent_write(make_dict: Callable[..., MemcachedDict]) -> None:
    d, other = make_dict(), make_dict()
    d["v"] = 1
    with pytest.raises(EditConflict) as info:
        with d.edit("v") as box:
            other["v"] = 100  # lands between our gets and our cas
            box.value = box.value + 1
    assert info.value.attempts == 1
    assert d["v"] == 100


def test_single_edit_detects_a_concurrent_create(make_dict: Callable[..., MemcachedDict]) -> None:
    d, other = make_dict(), make_dict()
    with pytest.raises(EditConflict):
        with d.edit("new", default=0) as box:
            other["new"] = 50
            box.value = 1
    assert d["new"] == 50


def test_edit_retries_then_gives_up(make_dict: Callable[..., MemcachedDict]) -> None:
    d, other = make_dict(max_retries=3), make_dict()
    d["v"] = 0
    runs = 0
    with pytest.raises(EditConflict) as info:
        for attempt in d.edit("v"):
            with attempt as box:
                runs += 1
                other["v"] = 1000 + runs  # always beat our write-back
                box.value = -1
    assert runs == 3 and info.value.attempts == 3
    assert d["v"] == 1003


def test_edit_retry_succeeds_after_one_conflict(make_dict: Callable[..., MemcachedDict]) -> None:
    d, other = make_dict(), make_dict()
    d["v"] = 1
    seen = []
    for attempt in d.edit("v"):
        with attempt as box:
            seen.append(box.value)
            if len(seen) == 1:
                other["v"] = 10
            box.value = box.value + 1
    assert seen == [1, 10]
    assert d["v"] == 11


@pytest.mark.parametrize("use_modify", [False, True], ids=["edit-loop", "modify"])
def test_two_threads_editing_one_key_end_with_exact_total(
    make_dict: Callable[..., MemcachedDict], use_modify: bool
) -> None:
    per_thread = 300
    dicts = [make_dict(max_retries=10_000) for _ in range(2)]

    def work(n: int) -> None:
        d = dicts[n]
        for _ in range(per_thread):
            if use_modify:
                d.modify("total", lambda v: v + 1, default=0)
            else:
                for attempt in d.edit("total", default=0):
                    with attempt as box:
                        box.value = box.value + 1

    assert run_threads(work, len(dicts), together=True) == []
    assert dicts[0]["total"] == 2 * per_thread


def test_modify_returns_the_new_value(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict()
    assert d.modify("l", lambda v: v + [1], default=[]) == [1]
    assert d.modify("l", lambda v: v + [2]) == [1, 2]


def test_one_client_shared_by_threads(memcached: Any) -> None:
    # the bundled client hands out explicit CAS ids: no cache_cas, no per-thread state needed
    d = MemcachedDict(Client(memcached.servers), key_prefix="shared:", max_retries=10_000)

    def work(n: int) -> None:
        for _ in range(200):
            d.modify("n", lambda v: v + 1, default=0)

    assert run_threads(work, 3, together=True) == []
    assert d["n"] == 600


def test_python_memcached_client_works_too(memcached: Any) -> None:
    memcache = pytest.importorskip("memcache")
    plain = MemcachedDict(memcache.Client(memcached.servers), key_prefix="pm:")
    plain["v"] = 1
    with pytest.raises(MemcachedDictError, match="cache_cas"):
        plain.edit("v")
    d = MemcachedDict(memcache.Client(memcached.servers, cache_cas=True), key_prefix="pm:")
    assert d.modify("v", lambda v: v + 1) == 2
    other = MemcachedDict(memcache.Client(memcached.servers), key_prefix="pm:")
    with pytest.raises(EditConflict):
        with d.edit("v") as box:
            other["v"] = 50
            box.value = 3
    assert d["v"] == 50 and sorted(d) == ["v"] and d.incr("c") == 1


def test_iteration_len_and_views_across_a_cluster(memcached_cluster: Any) -> None:
    client = Client(memcached_cluster.servers)
    d = MemcachedDict(client, key_prefix="it:")
    other = MemcachedDict(client, key_prefix="other:")
    expected = {f"k{i}": i for i in range(40)}
    d.update(expected)
    other["k1"] = "not mine"
    assert sorted(d) == sorted(expected)
    assert len(d) == 40
    assert dict(d.items()) == expected
    assert sorted(d.values()) == sorted(expected.values())
    # the keys really are spread over the servers, so every server was dumped
    per_server = [Client([s]).get_stats()[0][1] for s in memcached_cluster.servers]
    assert sum(1 for stats in per_server if int(stats["curr_items"]) > 0) >= 2


def test_iteration_decodes_url_encoded_keys(make_dict: Callable[..., MemcachedDict]) -> None:
    d = make_dict(key_prefix="enc:")
    keys = ["100%", "a/b?c=d", "caf\u00e9", "plus+sign", "x%20y"]
    for key in keys:
        d[key] = key
    assert sorted(d) == sorted(keys)
    assert {k: d[k] for k in d} == {k: k for k in keys}


def test_items_skip_keys_that_vanish_during_iteration(make_dict: Callable[..., MemcachedDict]) -> None:
    d, other = make_dict(key_prefix="v:"), make_dict(key_prefix="v:")
    d.update({f"k{i:03d}": i for i in range(150)})
    items = iter(d.items())
    first = next(items)  # the listing and the first batch of 100 values are read now
    other.clear()  # every key goes away before the second batch
    rest = list(items)
    assert first[1] == int(first[0][1:])
    assert len(rest) == 99 and all(value == int(key[1:]) for key, value in rest)
    assert list(d.values()) == [] and list(d.items()) == []


def test_clear_removes_only_the_prefix(make_dict: Callable[..., MemcachedDict]) -> None:
    d, other = make_dict(key_prefix="mine:"), make_dict(key_prefix="theirs:")
    d.update(a=1, b=2, c=3)
    other["a"] = "keep"
    d.clear()
    assert list(d) == [] and len(d) == 0
    assert other["a"] == "keep"


def test_listing_on_a_server_that_forbids_dumping(memcached_factory: Any) -> None:
    server = memcached_factory(extra_args=("-X",))
    d = MemcachedDict(Client([server.address]), key_prefix="x:")
    d["a"] = 1  # plain access still works
    assert d["a"] == 1
    with pytest.raises(DumpingNotAllowed, match="disable-dumping"):
        list(d)
    with pytest.raises(NotImplementedError):
        len(d)


def test_parse_metadump_lines() -> None:
    reply = (b"key=a%2Fb exp=-1 la=1795393374 cas=1 fetch=no cls=1 size=67\n"
             b"key=caf%C3%A9 exp=1795393474 la=1795393374 cas=2 fetch=yes cls=1 size=68\n"
             b"END\r\n")
    items = list(parse_metadump(reply))
    assert [key for key, _ in items] == [b"a/b", "caf\u00e9".encode()]
    assert items[1][1] == {"exp": "1795393474", "la": "1795393374", "cas": "2",
                           "fetch": "yes", "cls": "1", "size": "68"}
    assert list(parse_metadump(b"END\r\n")) == []


def test_parse_metadump_errors() -> None:
    with pytest.raises(DumpingNotAllowed):
        list(parse_metadump(b"ERROR metadump not allowed\r\n"))
    with pytest.raises(MemcachedDictError, match="bad"):
        list(parse_metadump(b"CLIENT_ERROR bad\r\n"))


def test_iteration_over_tls(tls_memcached: Any) -> None:
    client = Client(tls_memcached.servers, ssl_context=tls_memcached.client_context())
    d = MemcachedDict(client, key_prefix="tls:")
    d.update(a=1, b=2)
    for attempt in d.edit("a"):
        with attempt as box:
            box.value += 10
    assert sorted(d.items()) == [("a", 11), ("b", 2)]
