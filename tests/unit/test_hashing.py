"""Pure tests of :mod:`sqla_memcache.hashing`: which node holds a key.

Nodes here are plain strings (or small objects); nothing connects anywhere.
python-memcached is used only as a reference: its public ``cmemcache_hash``,
and, in one compatibility test, its ``Client`` with ``connect`` stubbed out.
"""
from __future__ import annotations

import random
from binascii import crc32
from collections import Counter
from typing import List

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqla_memcache.hashing import (
    SERVER_RETRIES,
    BucketSelector,
    KetamaSelector,
    cmemcache_hash,
    make_selector,
)

memcache = pytest.importorskip("memcache")


def always(node) -> bool:
    return True


def random_keys(n: int, seed: int = 0) -> List[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randint(1, 40)) for _ in range(n)]


def key_with_hash_zero() -> bytes:
    i = 0
    while (crc32(b"k%d" % i) >> 16) & 0x7FFF:
        i += 1
    return b"k%d" % i


# --------------------------------------------------------------------------
# cmemcache_hash
# --------------------------------------------------------------------------

class TestCmemcacheHash:
    def test_matches_python_memcached_on_random_keys(self):
        for key in random_keys(20000):
            assert cmemcache_hash(key) == memcache.cmemcache_hash(key), key

    def test_matches_python_memcached_on_text_keys(self):
        for i in range(5000):
            key = ("user:%d:profile" % i).encode()
            assert cmemcache_hash(key) == memcache.cmemcache_hash(key)

    def test_hash_zero_is_kept(self):
        # python-memcached 1.62 returns 0 here; "or 1" would pick another server.
        key = key_with_hash_zero()
        assert memcache.cmemcache_hash(key) == 0
        assert cmemcache_hash(key) == 0

    @given(st.binary())
    def test_property_matches_python_memcached(self, key):
        assert cmemcache_hash(key) == memcache.cmemcache_hash(key)

    @given(st.binary())
    def test_property_range(self, key):
        assert 0 <= cmemcache_hash(key) <= 0x7FFF


# --------------------------------------------------------------------------
# BucketSelector
# --------------------------------------------------------------------------

def documented_choice(buckets, key: bytes, alive) -> object:
    """The rehash sequence the hashing module documents, written out independently."""
    h = cmemcache_hash(key)
    for attempt in range(10):
        node = buckets[h % len(buckets)]
        if alive(node):
            return node
        h = cmemcache_hash((str(h) + str(attempt)).encode("ascii"))
    return None


class TestBucketSelector:
    def test_bucket_is_hash_mod_len(self):
        sel = BucketSelector([("a", 1), ("b", 1), ("c", 1)])
        for key in random_keys(3000):
            assert sel.get_node(key, always) == ["a", "b", "c"][cmemcache_hash(key) % 3]

    def test_hash_zero_goes_to_first_bucket(self):
        sel = BucketSelector([("a", 1), ("b", 1)])
        assert sel.get_node(key_with_hash_zero(), always) == "a"

    def test_weights_expand_buckets(self):
        sel = BucketSelector([("a", 1), ("b", 3), ("c", 2)])
        assert sel.buckets == ["a", "b", "b", "b", "c", "c"]
        for key in random_keys(2000):
            assert sel.get_node(key, always) == sel.buckets[cmemcache_hash(key) % 6]

    def test_weights_share_keys(self):
        sel = BucketSelector([("a", 1), ("b", 3)])
        counts = Counter(sel.get_node(k, always) for k in random_keys(20000))
        assert 0.70 < counts["b"] / 20000 < 0.80

    def test_add_node(self):
        sel = BucketSelector()
        sel.add_node("a")
        sel.add_node("b", 2)
        assert sel.buckets == ["a", "b", "b"]

    def test_remove_node_removes_every_bucket(self):
        sel = BucketSelector([("a", 2), ("b", 3), ("c", 1)])
        sel.remove_node("b")
        assert sel.buckets == ["a", "a", "c"]

    def test_remove_node_by_equal_value(self):
        a = "".join(["no", "de"])  # equal to, not the same object as, the literal
        sel = BucketSelector([(a, 1), ("x", 1)])
        sel.remove_node("node")
        assert sel.buckets == ["x"]

    def test_dead_node_follows_documented_rehash(self):
        sel = BucketSelector([("a", 1), ("b", 2), ("c", 1), ("d", 1)])
        for dead in (["a"], ["b"], ["a", "c"], ["b", "c", "d"]):
            alive = lambda n, dead=dead: n not in dead  # noqa: E731
            for key in random_keys(3000, seed=len(dead)):
                got = sel.get_node(key, alive)
                assert got == documented_choice(sel.buckets, key, alive)
                assert got is None or got not in dead

    def test_dead_node_explicit_first_rehash(self):
        sel = BucketSelector([("a", 1), ("b", 1), ("c", 1)])
        # a key whose first choice is "a" and whose first rehash lands on a live node
        for key in random_keys(1000):
            h = cmemcache_hash(key)
            if h % 3 == 0:
                second = ["a", "b", "c"][cmemcache_hash(b"%d0" % h) % 3]
                if second != "a":
                    break
        assert sel.get_node(key, always) == "a"
        assert sel.get_node(key, lambda n: n != "a") == second

    def test_dead_node_gives_up_after_retries(self):
        sel = BucketSelector([("a", 1), ("b", 1)])
        calls = []

        def usable(node):
            calls.append(node)
            return False

        assert sel.get_node(b"key", usable) is None
        assert len(calls) == SERVER_RETRIES == 10

    def test_tuple_forces_hash(self):
        sel = BucketSelector([("a", 1), ("b", 1), ("c", 1)])
        for h in range(20):
            assert sel.get_node((h, b"anything"), always) == ["a", "b", "c"][h % 3]
            assert sel.get_node((h, b"x"), always) == sel.get_node((h, b"y"), always)

    def test_tuple_forced_hash_rehashes_too(self):
        sel = BucketSelector([("a", 1), ("b", 1), ("c", 1)])
        alive = lambda n: n != "b"  # noqa: E731
        h = 4  # 4 % 3 -> "b", dead
        expected = ["a", "b", "c"][cmemcache_hash(b"40") % 3]
        if expected == "b":
            expected = ["a", "b", "c"][cmemcache_hash(b"%d1" % cmemcache_hash(b"40")) % 3]
        assert sel.get_node((h, b"k"), alive) == expected

    def test_no_nodes(self):
        assert BucketSelector().get_node(b"key", always) is None

    def test_all_dead(self):
        sel = BucketSelector([("a", 1), ("b", 1)])
        assert sel.get_node(b"key", lambda n: False) is None

    def test_same_choice_as_python_memcached_client(self):
        # Black-box comparison with python-memcached 1.62's own selection; its
        # hosts' connect() is stubbed so no socket is opened.
        addrs = ["127.0.0.1:11001", "127.0.0.1:11002", "127.0.0.1:11003"]
        weights = [1, 3, 2]
        client = memcache.Client(list(zip(addrs, weights)))
        if not hasattr(client, "_get_server"):
            pytest.skip("python-memcached without _get_server")
        hosts = client.servers
        for dead_ports in (set(), {11002}, {11001, 11003}):
            for host in hosts:
                host.connect = lambda host=host: 0 if host.port in dead_ports else 1
            sel = BucketSelector(list(zip(hosts, weights)))
            alive = lambda h: h.port not in dead_ports  # noqa: E731
            keys = random_keys(3000, seed=len(dead_ports)) + [key_with_hash_zero()]
            for key in keys:
                theirs = client._get_server(key)[0]
                assert sel.get_node(key, alive) is theirs, key
            for h in (0, 1, 5, 12345):
                assert sel.get_node((h, b"k"), alive) is client._get_server((h, b"k"))[0]


# --------------------------------------------------------------------------
# KetamaSelector
# --------------------------------------------------------------------------

SERVERS3 = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
SERVER4 = "10.0.0.4:11211"


def mapping(sel, keys, usable=always):
    return [sel.get_node(k, usable) for k in keys]


class TestKetamaSelector:
    def test_deterministic(self):
        keys = random_keys(2000)
        a = KetamaSelector([(s, 1) for s in SERVERS3])
        b = KetamaSelector([(s, 1) for s in SERVERS3])
        assert mapping(a, keys) == mapping(b, keys)

    def test_insertion_order_does_not_matter(self):
        keys = random_keys(2000)
        a = KetamaSelector([(s, 1) for s in SERVERS3])
        b = KetamaSelector([(s, 1) for s in reversed(SERVERS3)])
        c = KetamaSelector()
        for s in (SERVERS3[1], SERVERS3[2], SERVERS3[0]):
            c.add_node(s)
        assert mapping(a, keys) == mapping(b, keys) == mapping(c, keys)

    def test_every_node_used_evenly(self):
        sel = KetamaSelector([(s, 1) for s in SERVERS3])
        counts = Counter(mapping(sel, random_keys(30000)))
        assert set(counts) == set(SERVERS3)
        for s in SERVERS3:
            assert 0.25 < counts[s] / 30000 < 0.42

    def test_weights_roughly_proportional(self):
        weights = {"a:1": 1, "b:1": 2, "c:1": 1, "d:1": 4}
        sel = KetamaSelector(list(weights.items()))
        n = 40000
        counts = Counter(mapping(sel, random_keys(n)))
        total = sum(weights.values())
        for node, w in weights.items():
            assert abs(counts[node] / n - w / total) < 0.06, (node, counts)

    def test_zero_weight_gets_nothing(self):
        sel = KetamaSelector([("a:1", 1), ("b:1", 0)])
        assert set(mapping(sel, random_keys(2000))) == {"a:1"}

    def test_adding_a_server_remaps_about_one_in_n(self):
        """Adding a 4th server to 3: ketama moves ~1/4 of the keys, modula most of them."""
        keys = random_keys(10000, seed=42)

        ketama = KetamaSelector([(s, 1) for s in SERVERS3])
        before = mapping(ketama, keys)
        ketama.add_node(SERVER4)
        after = mapping(ketama, keys)
        moved = [(b, a) for b, a in zip(before, after) if b != a]
        ketama_fraction = len(moved) / len(keys)
        assert 0.15 < ketama_fraction < 0.35, ketama_fraction
        assert all(a == SERVER4 for _, a in moved)  # keys only move to the new server

        buckets = BucketSelector([(s, 1) for s in SERVERS3])
        before = mapping(buckets, keys)
        buckets.add_node(SERVER4)
        after = mapping(buckets, keys)
        bucket_fraction = sum(b != a for b, a in zip(before, after)) / len(keys)
        assert bucket_fraction > 0.6, bucket_fraction
        assert bucket_fraction > 2 * ketama_fraction

    def test_removing_a_node_moves_only_its_keys(self):
        keys = random_keys(10000, seed=3)
        sel = KetamaSelector([(s, 1) for s in SERVERS3 + [SERVER4]])
        before = mapping(sel, keys)
        sel.remove_node(SERVERS3[1])
        after = mapping(sel, keys)
        for b, a in zip(before, after):
            if b == SERVERS3[1]:
                assert a != SERVERS3[1]
            else:
                assert a == b
        assert SERVERS3[1] in before

    def test_remove_unknown_node_is_harmless(self):
        sel = KetamaSelector([(s, 1) for s in SERVERS3])
        keys = random_keys(500)
        before = mapping(sel, keys)
        sel.remove_node("nope:1")
        assert mapping(sel, keys) == before

    def test_dead_node_goes_to_next_live_node(self):
        keys = random_keys(5000, seed=5)
        nodes = SERVERS3 + [SERVER4]
        sel = KetamaSelector([(s, 1) for s in nodes])
        for dead in ([SERVERS3[0]], [SERVERS3[0], SERVER4], nodes[1:]):
            alive = lambda n, dead=dead: n not in dead  # noqa: E731
            without = KetamaSelector([(s, 1) for s in nodes if s not in dead])
            # The next live point clockwise is exactly where the key would be
            # with the dead servers removed from the ring.
            assert mapping(sel, keys, alive) == mapping(without, keys)
            live_before = [n for n in mapping(sel, keys) if n not in dead]
            after = Counter(mapping(sel, keys, alive))
            # (Counter's <= is Python 3.10+)
            assert all(count <= after[node] for node, count in Counter(live_before).items())

    def test_all_dead(self):
        sel = KetamaSelector([(s, 1) for s in SERVERS3])
        calls = []

        def usable(node):
            calls.append(node)
            return False

        assert sel.get_node(b"key", usable) is None
        assert sorted(calls) == sorted(SERVERS3)  # each server asked once

    def test_no_nodes(self):
        assert KetamaSelector().get_node(b"key", always) is None
        sel = KetamaSelector([("a:1", 1)])
        sel.remove_node("a:1")
        assert sel.get_node(b"key", always) is None

    def test_tuple_forces_point(self):
        sel = KetamaSelector([(s, 1) for s in SERVERS3])
        for key in random_keys(500):
            point = KetamaSelector.key_point(key)
            assert sel.get_node((point, b"other"), always) == sel.get_node(key, always)

    def test_wraps_around_the_continuum(self):
        sel = KetamaSelector([(s, 1) for s in SERVERS3])
        assert sel.get_node((2**32 - 1, b""), always) == sel.get_node((0, b""), always)

    def test_key_point_is_md5_little_endian(self):
        import hashlib

        digest = hashlib.md5(b"hello").digest()
        assert KetamaSelector.key_point(b"hello") == (
            digest[0] | digest[1] << 8 | digest[2] << 16 | digest[3] << 24
        )

    def test_label_function(self):
        class Host:
            def __init__(self, addr):
                self.addr = addr

        hosts = [Host(s) for s in SERVERS3]
        by_obj = KetamaSelector([(h, 1) for h in hosts], label=lambda h: h.addr)
        by_str = KetamaSelector([(s, 1) for s in SERVERS3])
        keys = random_keys(2000)
        assert [h.addr for h in mapping(by_obj, keys)] == mapping(by_str, keys)


# --------------------------------------------------------------------------
# make_selector
# --------------------------------------------------------------------------

@pytest.mark.parametrize("name,cls", [
    ("modula", BucketSelector), ("python-memcached", BucketSelector), ("default", BucketSelector),
    ("ketama", KetamaSelector), ("consistent", KetamaSelector),
])
def test_make_selector(name, cls):
    nodes = [("a:1", 1), ("b:1", 2)]
    sel = make_selector(name, nodes)
    assert isinstance(sel, cls)
    keys = [b"key%d" % i for i in range(300)]
    chosen = [sel.get_node(key, always) for key in keys]
    assert chosen == [cls(nodes).get_node(key, always) for key in keys]  # the nodes and weights as given
    assert set(chosen) == {"a:1", "b:1"}


def test_make_selector_unknown():
    with pytest.raises(ValueError, match="unknown hashing"):
        make_selector("rendezvous", [])
