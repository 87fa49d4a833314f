"""Key validation of :class:`sqla_memcache.Client`, without a server.

A client with no servers validates every key before it picks a server, so a
bad key raises and a good one is a quiet miss. A recording selector stands in
for server choice: it sees the hash key of every request, i.e. the key bytes
that would go on the wire.
"""
from __future__ import annotations

from typing import Any, List

import pytest

from sqla_memcache import Client, errors
from sqla_memcache.client import _KEY_MEMO_SIZE


class RecordingSelector:
    """Chooses no server; remembers the hash key of each lookup."""

    def __init__(self) -> None:
        self.keys: List[Any] = []

    def get_node(self, key: Any, usable: Any) -> None:
        self.keys.append(key)
        return None


def client(**kwargs: Any) -> Client:
    c = Client([], **kwargs)
    c._selector = RecordingSelector()
    return c


def seen(c: Client) -> List[Any]:
    return c._selector.keys


class TestCheckKey:
    @pytest.mark.parametrize("key", [b"abc", b"k" * 250, b"\xff\x80", (7, b"abc"), b"!~"])
    def test_valid_keys_pass(self, key):
        assert Client([]).check_key(key) is None

    @pytest.mark.parametrize("key, error", [
        (None, errors.MemcachedKeyNoneError),
        ((7, None), errors.MemcachedKeyNoneError),
        ("abc", errors.MemcachedKeyTypeError),  # it checks encoded keys, as python-memcached 1.62
        (7, errors.MemcachedKeyTypeError),
        ((7, "abc"), errors.MemcachedKeyTypeError),
        (b"k" * 251, errors.MemcachedKeyLengthError),
        (b"a b", errors.MemcachedKeyCharacterError),
        (b"a\r\nb", errors.MemcachedKeyCharacterError),
        (b"a\x7f", errors.MemcachedKeyCharacterError),
        (b"", errors.MemcachedKeyCharacterError),
    ])
    def test_invalid_keys_raise(self, key, error):
        with pytest.raises(error):
            Client([]).check_key(key)

    def test_key_extra_len_counts_towards_the_limit(self):
        c = Client([])
        assert c.check_key(b"k" * 249, key_extra_len=1) is None
        with pytest.raises(errors.MemcachedKeyLengthError):
            c.check_key(b"k" * 249, key_extra_len=2)

    def test_server_max_key_length(self):
        assert Client([], server_max_key_length=0).check_key(b"k" * 300) is None  # 0: no limit here
        c = Client([], server_max_key_length=10)
        assert c.check_key(b"k" * 10) is None
        with pytest.raises(errors.MemcachedKeyLengthError):
            c.check_key(b"k" * 11)

    def test_key_errors_are_memcached_key_errors(self):
        with pytest.raises(Client.MemcachedKeyError):
            Client([]).check_key(b"a b")


class TestOneKey:
    """get/set/delete: what reaches server choice, and what is refused first."""

    @pytest.mark.parametrize("call", [
        lambda c, k: c.get(k), lambda c, k: c.set(k, 1), lambda c, k: c.delete(k), lambda c, k: c.gets(k),
    ])
    def test_wire_keys(self, call):
        c = client()
        call(c, "abc")
        call(c, b"raw")
        call(c, "日本")
        call(c, (42, "tup"))
        call(c, (43, b"tupb"))
        assert seen(c) == [b"abc", b"raw", "日本".encode(), (42, b"tup"), (43, b"tupb")]

    def test_a_str_subclass_is_encoded(self):
        class Name(str):
            pass

        c = client()
        c.delete(Name("abc"))
        assert seen(c) == [b"abc"]

    def test_key_encoder_is_applied_first(self):
        c = client(key_encoder=lambda key: "enc-%s" % (key,))
        c.get("abc")
        c.delete(7)
        assert seen(c) == [b"enc-abc", b"enc-7"]

    @pytest.mark.parametrize("key, error", [
        (None, errors.MemcachedKeyNoneError),
        (7, errors.MemcachedKeyTypeError),
        (7.5, errors.MemcachedKeyTypeError),
        ((1,), errors.MemcachedKeyTypeError),
        ((1, "a", "b"), errors.MemcachedKeyTypeError),
        (("x", "a"), errors.MemcachedKeyTypeError),  # the hash value must be an int
        ((1, 5), errors.MemcachedKeyTypeError),
        ((1, None), errors.MemcachedKeyNoneError),
        ("a b", errors.MemcachedKeyCharacterError),
        (b"a\nb", errors.MemcachedKeyCharacterError),
        ((1, "a b"), errors.MemcachedKeyCharacterError),
        ("k" * 251, errors.MemcachedKeyLengthError),
        ("\ud800", errors.MemcachedKeyCharacterError),  # not encodable
    ])
    @pytest.mark.parametrize("method", ["get", "delete", "set"])
    def test_invalid_keys_are_refused_before_choosing_a_server(self, key, error, method):
        c = client()
        call = getattr(c, method)
        with pytest.raises(error):
            call(key) if method != "set" else call(key, 1)
        assert seen(c) == []

    @pytest.mark.parametrize("check_keys", [True, False])
    def test_length_limit_is_inclusive_whatever_check_keys(self, check_keys):
        c = client(check_keys=check_keys)
        c.get("k" * 250)
        c.delete("k" * 250)
        assert len(seen(c)) == 2
        for call in (c.get, c.delete):
            with pytest.raises(errors.MemcachedKeyLengthError):
                call("k" * 251)
            with pytest.raises(errors.MemcachedKeyLengthError):
                call(b"k" * 251)

    def test_server_max_key_length_lowers_the_limit(self):
        c = client(server_max_key_length=10)
        c.get("k" * 10)
        with pytest.raises(errors.MemcachedKeyLengthError):
            c.get("k" * 11)
        with pytest.raises(errors.MemcachedKeyLengthError):
            c.delete(b"k" * 11)

    def test_a_refused_key_stays_refused(self):
        c = client()
        for _ in range(2):  # get remembers validated keys: never a refused one
            with pytest.raises(errors.MemcachedKeyCharacterError):
                c.get("a b")
            with pytest.raises(errors.MemcachedKeyLengthError):
                c.get("k" * 251)

    def test_the_memo_of_validated_keys_is_bounded(self):
        c = client()
        sizes = []
        for i in range(_KEY_MEMO_SIZE + 10):
            c.get("k%d" % i)
            sizes.append(c._keys.memo_size())
        assert 0 < min(sizes) and max(sizes) == _KEY_MEMO_SIZE
        assert len(seen(c)) == _KEY_MEMO_SIZE + 10


class TestManyKeys:
    """get_multi validates every key (one pass over the batch, or key by key)."""

    def test_wire_keys(self):
        c = client()
        c.get_multi(["a", "b", "k" * 250])
        assert seen(c) == [b"a", b"b", b"k" * 250]

    @pytest.mark.parametrize("keys, error", [
        (["a b"], errors.MemcachedKeyCharacterError),
        (["a", "b c"], errors.MemcachedKeyCharacterError),
        (["a b", "c"], errors.MemcachedKeyCharacterError),
        (["a", "b\nc"], errors.MemcachedKeyCharacterError),
        (["a\x00"], errors.MemcachedKeyCharacterError),
        (["a", "k" * 251], errors.MemcachedKeyLengthError),
        (["a", None], errors.MemcachedKeyNoneError),
        (["a", 7], errors.MemcachedKeyTypeError),
    ])
    def test_one_bad_key_refuses_the_batch(self, keys, error):
        c = client()
        with pytest.raises(error):
            c.get_multi(keys)
        with pytest.raises(error):
            c.get_multi(keys, key_prefix="p:")

    def test_an_empty_key(self):
        c = client()
        with pytest.raises(errors.MemcachedKeyCharacterError):
            c.get_multi(["a", ""])
        c = client()
        c.get_multi([""], key_prefix="p:")  # the prefix alone is a key
        assert seen(c) == [b"p:"]

    def test_prefix_is_part_of_every_wire_key(self):
        c = client()
        c.get_multi(["a", "b"], key_prefix="p:")
        c.get_multi([b"raw"], key_prefix="p:")
        c.get_multi([(5, "t"), (6, b"u")], key_prefix=b"p:")
        assert seen(c) == [b"p:a", b"p:b", b"p:raw", (5, b"p:t"), (6, b"p:u")]

    def test_prefix_with_a_key_encoder(self):
        c = client(key_encoder=lambda key: key.upper())
        c.get_multi(["a"], key_prefix="p:")
        c.get_multi(["a"])
        assert seen(c) == [b"P:A", b"A"]

    def test_key_encoder_sees_the_callers_key_without_a_prefix(self):
        c = client(key_encoder=lambda key: "enc-" + key)  # str only
        c.get_multi(["a"])
        assert seen(c) == [b"enc-a"]

    def test_prefix_making_a_key_too_long(self):
        c = client()
        c.get_multi(["k" * 248], key_prefix="p:")
        with pytest.raises(errors.MemcachedKeyLengthError):
            c.get_multi(["k" * 249], key_prefix="p:")

    @pytest.mark.parametrize("key, error", [
        ((1,), errors.MemcachedKeyTypeError),
        ((1, "a", "b"), errors.MemcachedKeyTypeError),
        (None, errors.MemcachedKeyNoneError),
        (7, errors.MemcachedKeyTypeError),
        ((1, "a b"), errors.MemcachedKeyCharacterError),
        ("\ud800", errors.MemcachedKeyCharacterError),
    ])
    def test_bad_keys_with_a_prefix(self, key, error):
        c = client()
        with pytest.raises(error):
            c.get_multi([key], key_prefix="p:")
        assert seen(c) == []
