"""Pure tests of :class:`sqla_memcache.client.keys.KeyCodec`: key validity defined once."""
from __future__ import annotations

import pytest

from sqla_memcache import errors
from sqla_memcache.client.keys import KEY_MEMO_SIZE, KeyCodec, prefix_bytes
from sqla_memcache.protocol import MAX_KEY_LENGTH, key_has_bad_bytes


def codec(max_length: int = 250, **kwargs) -> KeyCodec:
    return KeyCodec(max_length, **kwargs)


class TestEncode:
    @pytest.mark.parametrize("key, hashkey, wire", [
        ("abc", b"abc", b"abc"),
        (b"abc", b"abc", b"abc"),
        ("é", "é".encode(), "é".encode()),
        ((7, "abc"), (7, b"abc"), b"abc"),
        ((7, b"abc"), (7, b"abc"), b"abc"),
    ])
    def test_forms(self, key, hashkey, wire):
        assert codec().encode(key) == (hashkey, wire)

    def test_a_str_subclass_is_encoded(self):
        class Name(str):
            pass

        assert codec().encode(Name("abc")) == (b"abc", b"abc")

    @pytest.mark.parametrize("key, error", [
        (None, errors.MemcachedKeyNoneError),
        (7, errors.MemcachedKeyTypeError),
        ((7,), errors.MemcachedKeyTypeError),
        (("x", "abc"), errors.MemcachedKeyTypeError),
        ("a b", errors.MemcachedKeyCharacterError),
        ("a\r\nget x", errors.MemcachedKeyCharacterError),
        (b"a\x00", errors.MemcachedKeyCharacterError),
        (b"a\x7f", errors.MemcachedKeyCharacterError),
        ("", errors.MemcachedKeyCharacterError),
        ("\ud800", errors.MemcachedKeyCharacterError),  # a lone surrogate is not UTF-8
        ("k" * 251, errors.MemcachedKeyLengthError),
        (b"k" * 251, errors.MemcachedKeyLengthError),
    ])
    def test_refused(self, key, error):
        with pytest.raises(error):
            codec().encode(key)

    def test_the_limit_is_inclusive(self):
        assert codec().encode("k" * 250)[1] == b"k" * 250
        assert codec(10).encode("k" * 10)[1] == b"k" * 10
        with pytest.raises(errors.MemcachedKeyLengthError):
            codec(10).encode("k" * 11)

    def test_memcacheds_own_limit_holds_without_check_keys(self):
        loose = codec(1000, check_keys=False)
        assert loose.limit == MAX_KEY_LENGTH
        with pytest.raises(errors.MemcachedKeyLengthError):
            loose.encode("k" * 251)
        with pytest.raises(errors.MemcachedKeyCharacterError):
            loose.encode("a b")  # a space could inject a command, whatever check_keys says

    def test_key_encoder_runs_first(self):
        c = codec(key_encoder=lambda k: "p:" + str(k))
        assert c.encode(5) == (b"p:5", b"p:5")
        assert c.get_request(5) == (b"p:5", b"p:5", b"get p:5\r\n")

    def test_every_byte_agrees_with_the_protocol_rule(self):
        c = codec()
        for b in range(256):
            key = b"k" + bytes([b])
            if key_has_bad_bytes(key):
                with pytest.raises(errors.MemcachedKeyCharacterError):
                    c.encode(key)
            else:
                assert c.encode(key)[1] == key


class TestMemo:
    def test_get_request_is_remembered_and_bounded(self):
        c = codec()
        assert c.get_request("abc") == (b"abc", b"abc", b"get abc\r\n")
        assert c.memo_size() == 1
        for i in range(KEY_MEMO_SIZE + 5):
            c.get_request("k%d" % i)
        assert c.memo_size() == KEY_MEMO_SIZE

    def test_a_refused_key_is_never_remembered(self):
        c = codec()
        for _ in range(2):
            with pytest.raises(errors.MemcachedKeyCharacterError):
                c.get_request("a b")
            with pytest.raises(errors.MemcachedKeyCharacterError):
                c.encode("a b")
        assert c.memo_size() == 0


class TestMany:
    def test_the_one_pass_and_the_key_by_key_paths_agree(self):
        c = codec()
        keys = ["a", "bb", "é"]
        fast = c.encode_many(keys, b"p:")
        slow = [(h, w, o) for (h, w), o in ((c.prefixed(k, b"p:"), k) for k in keys)]
        assert fast == slow == [(b"p:a", b"p:a", "a"), (b"p:bb", b"p:bb", "bb"), ("p:é".encode(), "p:é".encode(), "é")]

    @pytest.mark.parametrize("bad, error", [
        ("a b", errors.MemcachedKeyCharacterError),
        ("", errors.MemcachedKeyCharacterError),
        ("k" * 251, errors.MemcachedKeyLengthError),
        (None, errors.MemcachedKeyNoneError),
        ("x\n", errors.MemcachedKeyCharacterError),
    ])
    def test_one_bad_key_refuses_the_batch_with_its_precise_error(self, bad, error):
        with pytest.raises(error):
            codec().encode_many(["good", bad, "fine"], b"")

    def test_the_prefix_counts_towards_the_limit(self):
        assert codec().encode_many(["k" * 248], b"p:")[0][1] == b"p:" + b"k" * 248
        with pytest.raises(errors.MemcachedKeyLengthError):
            codec().encode_many(["k" * 249], b"p:")

    def test_tuple_keys_keep_their_hash(self):
        assert codec().encode_many([(3, "a")], b"p:") == [((3, b"p:a"), b"p:a", (3, "a"))]

    def test_prefix_bytes(self):
        assert prefix_bytes("é") == "é".encode() and prefix_bytes(b"x") == b"x" and prefix_bytes(None) == b""


class TestCheckKey:
    """python-memcached's ``check_key`` checks *encoded* keys."""

    def test_str_is_refused_bytes_pass(self):
        with pytest.raises(errors.MemcachedKeyTypeError):
            codec().check_key("abc")
        assert codec().check_key(b"abc") is None

    def test_extra_length_counts(self):
        with pytest.raises(errors.MemcachedKeyLengthError):
            codec(10).check_key(b"k" * 8, key_extra_len=3)
        assert codec(10).check_key(b"k" * 8, key_extra_len=2) is None
