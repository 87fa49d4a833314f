"""Pure tests of :mod:`sqla_memcache.serde`: values to ``(bytes, flags)`` and back."""
from __future__ import annotations

import datetime
import decimal
import enum
import io
import pickle
import threading
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqla_memcache.errors import SerializationError, SignatureError
from sqla_memcache.serde import (
    FLAG_COMPRESSED,
    FLAG_INTEGER,
    FLAG_LONG,
    FLAG_PICKLE,
    FLAG_SIGNED,
    FLAG_TEXT,
    JSONSerde,
    PickleSerde,
    RawSerde,
    SignedSerde,
    compress,
    decompress,
)

KEY = b"some:key"


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


class Color(enum.IntEnum):
    RED = 1


def test_flag_values_are_python_memcached_bits():
    assert (FLAG_PICKLE, FLAG_INTEGER, FLAG_LONG, FLAG_COMPRESSED, FLAG_TEXT, FLAG_SIGNED) == (
        1, 2, 4, 8, 16, 256,
    )


# --------------------------------------------------------------------------
# PickleSerde
# --------------------------------------------------------------------------

class TestPickleSerdeFlags:
    @pytest.mark.parametrize("value,data,flags", [
        (b"raw\x00\xff", b"raw\x00\xff", 0),
        (b"", b"", 0),
        ("text é", "text é".encode("utf-8"), FLAG_TEXT),
        ("", b"", FLAG_TEXT),
        (0, b"0", FLAG_INTEGER),
        (42, b"42", FLAG_INTEGER),
        (-7, b"-7", FLAG_INTEGER),
        (2**100, str(2**100).encode(), FLAG_INTEGER),
    ])
    def test_unpickled_types(self, value, data, flags):
        assert PickleSerde().serialize(KEY, value) == (data, flags)

    @pytest.mark.parametrize("value", [True, False, 1.5, float("inf"), [1, 2], None, (1, "a"), {"a": 1},
                                       bytearray(b"x"), Point(1, 2)])
    def test_pickled_types(self, value):
        data, flags = PickleSerde().serialize(KEY, value)
        assert flags == FLAG_PICKLE
        assert pickle.loads(data) == value

    def test_bool_is_pickled_not_digits(self):
        data, flags = PickleSerde().serialize(KEY, True)
        assert flags == FLAG_PICKLE and data != b"1"
        assert PickleSerde().deserialize(KEY, data, flags) is True

    def test_subclasses_follow_their_base(self):
        class Name(str):
            pass

        class Blob(bytes):
            pass

        s = PickleSerde()
        assert s.serialize(KEY, Name("n")) == (b"n", FLAG_TEXT)
        assert s.serialize(KEY, Blob(b"b")) == (b"b", 0)
        assert s.serialize(KEY, Color.RED) == (b"1", FLAG_INTEGER)
        assert type(s.serialize(KEY, Blob(b"b"))[0]) is bytes


class TestPickleSerdeRoundTrip:
    @pytest.mark.parametrize("value", [
        b"bytes", "str ✓", 0, -1, 2**70, True, False, None, 3.25, [1, [2, (3,)]], {"k": {1, 2}},
        datetime.datetime(2024, 1, 2, 3, 4, 5), decimal.Decimal("1.10"), Point(3, 4), frozenset({1}),
    ])
    @pytest.mark.parametrize("protocol", [0, 2, pickle.HIGHEST_PROTOCOL])
    def test_round_trip(self, value, protocol):
        s = PickleSerde(protocol=protocol)
        data, flags = s.serialize(KEY, value)
        back = s.deserialize(KEY, data, flags)
        assert back == value
        assert type(back) is type(value)

    def test_flag_long_reads_as_int(self):
        assert PickleSerde().deserialize(KEY, b"123", FLAG_LONG) == 123

    @pytest.mark.parametrize("protocol", range(0, pickle.HIGHEST_PROTOCOL + 1))
    def test_protocol_honoured(self, protocol):
        data, _ = PickleSerde(protocol=protocol).serialize(KEY, [1, "a"])
        if protocol >= 2:
            assert data[:2] == bytes([0x80, protocol])
        else:
            assert data[:1] != b"\x80"
        assert data == pickle.dumps([1, "a"], protocol)

    def test_default_protocol_is_0(self):
        assert PickleSerde().serialize(KEY, [1])[0] == pickle.dumps([1], 0)

    def test_protocol_honoured_by_custom_pickler(self):
        class MyPickler(pickle.Pickler):
            pass

        data, _ = PickleSerde(protocol=2, pickler=MyPickler).serialize(KEY, [1])
        assert data[:2] == b"\x80\x02"


class TestPickleSerdeCustom:
    def test_custom_pickler_and_unpickler_used(self):
        used = []

        class MyPickler(pickle.Pickler):
            def __init__(self, file, protocol=None):
                used.append("pickler")
                super().__init__(file, protocol=protocol)

        class MyUnpickler(pickle.Unpickler):
            def __init__(self, file):
                used.append("unpickler")
                super().__init__(file)

        s = PickleSerde(pickler=MyPickler, unpickler=MyUnpickler)
        data, flags = s.serialize(KEY, {"a": [1]})
        assert s.deserialize(KEY, data, flags) == {"a": [1]}
        assert used == ["pickler", "unpickler"]

    def test_pid_and_pload(self):
        registry = {"conn-1": object()}
        shared = registry["conn-1"]

        def pid(obj):
            return "conn-1" if obj is shared else None

        def pload(ident):
            return registry[ident]

        s = PickleSerde(protocol=2, pid=pid, pload=pload)
        data, flags = s.serialize(KEY, {"conn": shared, "n": 1})
        assert flags == FLAG_PICKLE
        assert b"conn-1" in data
        back = s.deserialize(KEY, data, flags)
        assert back["conn"] is shared and back["n"] == 1

    def test_pid_without_pload_cannot_load(self):
        shared = object()
        writer = PickleSerde(pid=lambda o: "x" if o is shared else None)
        data, flags = writer.serialize(KEY, [shared])
        with pytest.raises(SerializationError):
            PickleSerde().deserialize(KEY, data, flags)


class TestPickleSerdeErrors:
    @pytest.mark.parametrize("value", [lambda: 1, threading.Lock(), (x for x in ()), io.StringIO("x")],
                             ids=["lambda", "lock", "generator", "open-file"])
    def test_unpicklable(self, value):
        with pytest.raises(SerializationError):
            PickleSerde().serialize(KEY, value)

    def test_unpicklable_with_custom_pickler(self):
        class MyPickler(pickle.Pickler):
            pass

        with pytest.raises(SerializationError):
            PickleSerde(pickler=MyPickler).serialize(KEY, threading.Lock())

    def test_unpicklable_nested(self):
        with pytest.raises(SerializationError, match="cannot pickle"):
            PickleSerde().serialize(KEY, {"lock": threading.Lock()})

    @pytest.mark.parametrize("data", [b"not a pickle", b"\x80\x05garbage", b""])
    def test_corrupt_pickle(self, data):
        with pytest.raises(SerializationError):
            PickleSerde().deserialize(KEY, data, FLAG_PICKLE)

    def test_corrupt_pickle_with_custom_unpickler(self):
        with pytest.raises(SerializationError):
            PickleSerde(unpickler=pickle._Unpickler).deserialize(KEY, b"junk", FLAG_PICKLE)

    def test_corrupt_integer(self):
        with pytest.raises(SerializationError):
            PickleSerde().deserialize(KEY, b"12x", FLAG_INTEGER)

    def test_corrupt_text(self):
        with pytest.raises(SerializationError):
            PickleSerde().deserialize(KEY, b"\xff\xfe", FLAG_TEXT)

    @pytest.mark.parametrize("flags", [32, 64, FLAG_SIGNED])
    def test_unknown_flags(self, flags):
        with pytest.raises(SerializationError, match="unknown flags"):
            PickleSerde().deserialize(KEY, b"x", flags)


@given(st.one_of(st.binary(), st.text(), st.integers()))
def test_property_pickle_serde_round_trip(value):
    s = PickleSerde()
    data, flags = s.serialize(KEY, value)
    assert isinstance(data, bytes)
    assert flags == {bytes: 0, str: FLAG_TEXT, int: FLAG_INTEGER}[type(value)]
    back = s.deserialize(KEY, data, flags)
    assert back == value and type(back) is type(value)


@given(st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text() | st.binary(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=20,
))
def test_property_pickle_serde_round_trip_nested(value):
    s = PickleSerde(protocol=pickle.HIGHEST_PROTOCOL)
    assert s.deserialize(KEY, *s.serialize(KEY, value)) == value


# --------------------------------------------------------------------------
# compress / decompress
# --------------------------------------------------------------------------

class TestCompress:
    COMPRESSIBLE = b"abc" * 1000

    def test_disabled_when_min_len_zero(self):
        assert compress(self.COMPRESSIBLE, FLAG_TEXT, 0) == (self.COMPRESSIBLE, FLAG_TEXT)

    def test_not_when_not_longer_than_min_len(self):
        data = self.COMPRESSIBLE
        assert compress(data, 0, len(data)) == (data, 0)
        assert compress(data, 0, len(data) + 1) == (data, 0)

    def test_when_longer_and_smaller(self):
        data, flags = compress(self.COMPRESSIBLE, FLAG_PICKLE, len(self.COMPRESSIBLE) - 1)
        assert flags == FLAG_PICKLE | FLAG_COMPRESSED
        assert len(data) < len(self.COMPRESSIBLE)
        assert zlib.decompress(data) == self.COMPRESSIBLE

    def test_not_when_result_is_larger(self):
        import random

        noise = random.Random(0).randbytes(2000)
        assert compress(noise, FLAG_TEXT, 10) == (noise, FLAG_TEXT)

    def test_custom_compressor(self):
        calls = []

        def squash(data):
            calls.append(len(data))
            return b"!"

        assert compress(b"x" * 100, 0, 1, squash) == (b"!", FLAG_COMPRESSED)
        assert calls == [100]

    def test_round_trip(self):
        data, flags = compress(self.COMPRESSIBLE, FLAG_TEXT, 100)
        assert decompress(data, flags) == (self.COMPRESSIBLE, FLAG_TEXT)

    def test_decompress_without_flag_is_identity(self):
        assert decompress(b"plain", FLAG_PICKLE) == (b"plain", FLAG_PICKLE)

    def test_decompress_corrupt(self):
        with pytest.raises(SerializationError, match="decompress"):
            decompress(b"definitely not zlib", FLAG_COMPRESSED | FLAG_PICKLE)

    def test_decompress_truncated(self):
        data = zlib.compress(self.COMPRESSIBLE)[:-5]
        with pytest.raises(SerializationError):
            decompress(data, FLAG_COMPRESSED)

    def test_custom_decompressor(self):
        assert decompress(b"z", FLAG_COMPRESSED | FLAG_TEXT, lambda d: b"big") == (b"big", FLAG_TEXT)

    @given(st.binary(), st.integers(min_value=0, max_value=64))
    def test_property_round_trip(self, data, min_len):
        packed, flags = compress(data, FLAG_PICKLE, min_len)
        assert decompress(packed, flags) == (data, FLAG_PICKLE)


# --------------------------------------------------------------------------
# JSONSerde
# --------------------------------------------------------------------------

class TestJSONSerde:
    @pytest.mark.parametrize("value", [None, True, False, 0, -5, 2**70, 1.5, "é ✓", [], [1, "a", None],
                                       {"a": {"b": [1, 2.5]}}])
    def test_round_trip(self, value):
        s = JSONSerde()
        data, flags = s.serialize(KEY, value)
        assert flags == 0
        assert isinstance(data, bytes)
        assert s.deserialize(KEY, data, flags) == value

    def test_int_is_plain_digits(self):
        assert JSONSerde().serialize(KEY, 42) == (b"42", 0)

    def test_compact_utf8(self):
        assert JSONSerde().serialize(KEY, {"k": ["é", 1]}) == ('{"k":["é",1]}'.encode("utf-8"), 0)

    def test_tuple_becomes_list(self):
        s = JSONSerde()
        assert s.deserialize(KEY, *s.serialize(KEY, (1, 2))) == [1, 2]

    @pytest.mark.parametrize("value", [b"bytes", {1, 2}, frozenset(), Point(1, 2), object(), {"k": b"v"},
                                       {(1, 2): "tuple key"}])
    def test_rejects(self, value):
        with pytest.raises(SerializationError):
            JSONSerde().serialize(KEY, value)

    def test_circular(self):
        a = []
        a.append(a)
        with pytest.raises(SerializationError):
            JSONSerde().serialize(KEY, a)

    @pytest.mark.parametrize("data", [b"{not json", b"", b"\xff\xfe\x00", b"[1,"])
    def test_deserialize_invalid(self, data):
        with pytest.raises(SerializationError):
            JSONSerde().deserialize(KEY, data, 0)

    def test_custom_dumps_loads(self):
        s = JSONSerde(dumps=lambda v: "X" + str(v), loads=lambda d: ("loaded", d))
        assert s.serialize(KEY, 5) == (b"X5", 0)
        assert s.deserialize(KEY, b"X5", 0) == ("loaded", b"X5")


# --------------------------------------------------------------------------
# RawSerde
# --------------------------------------------------------------------------

class TestRawSerde:
    @pytest.mark.parametrize("value,data", [
        (b"abc", b"abc"), (bytearray(b"abc"), b"abc"), (memoryview(b"abc"), b"abc"), ("é", "é".encode()),
        (b"", b""),
    ])
    def test_serialize(self, value, data):
        out = RawSerde().serialize(KEY, value)
        assert out == (data, 0)
        assert type(out[0]) is bytes

    @pytest.mark.parametrize("value", [1, 1.5, None, [b"a"], True])
    def test_rejects_non_bytes(self, value):
        with pytest.raises(SerializationError):
            RawSerde().serialize(KEY, value)

    @pytest.mark.parametrize("flags", [0, FLAG_PICKLE, FLAG_TEXT])
    def test_deserialize_returns_bytes(self, flags):
        assert RawSerde().deserialize(KEY, b"\x80data", flags) == b"\x80data"


# --------------------------------------------------------------------------
# SignedSerde
# --------------------------------------------------------------------------

SECRET = b"s3cret-key"


class TestSignedSerde:
    @pytest.mark.parametrize("value", [b"raw", "text", None, True, {"a": [1, 2]}, Point(1, 2)])
    def test_round_trip(self, value):
        s = SignedSerde(SECRET)
        data, flags = s.serialize(KEY, value)
        assert flags & FLAG_SIGNED
        assert s.deserialize(KEY, data, flags) == value

    @pytest.mark.parametrize("value,digits", [(7, b"7"), (-7, b"-7"), (0, b"0"), (2**64 - 1, b"18446744073709551615")])
    def test_integers_are_bare_counters_not_signed(self, value, digits):
        # so that incr/decr work on them; an int cannot run code when read
        s = SignedSerde(SECRET)
        assert s.serialize(KEY, value) == (digits, FLAG_INTEGER)
        assert s.deserialize(KEY, digits, FLAG_INTEGER) == value

    def test_flags_keep_inner_bits(self):
        s = SignedSerde(SECRET)
        assert s.serialize(KEY, "t")[1] == FLAG_TEXT | FLAG_SIGNED
        assert s.serialize(KEY, [1])[1] == FLAG_PICKLE | FLAG_SIGNED

    def test_payload_is_mac_plus_inner_payload(self):
        s = SignedSerde(SECRET)
        data, _ = s.serialize(KEY, "hello")
        assert len(data) == 32 + 5 and data.endswith(b"hello")

    def test_default_inner_uses_highest_pickle_protocol(self):
        data, _ = SignedSerde(SECRET).serialize(KEY, [1])
        assert data[32:34] == bytes([0x80, pickle.HIGHEST_PROTOCOL])

    def test_str_secret_equals_bytes_secret(self):
        data, flags = SignedSerde("s3cret-key").serialize(KEY, [1])
        assert SignedSerde(SECRET).deserialize(KEY, data, flags) == [1]

    def test_custom_inner(self):
        s = SignedSerde(SECRET, inner=JSONSerde())
        data, flags = s.serialize(KEY, {"a": 1})
        assert flags == FLAG_SIGNED
        assert s.deserialize(KEY, data, flags) == {"a": 1}

    def test_tampered_payload(self):
        s = SignedSerde(SECRET)
        data, flags = s.serialize(KEY, {"admin": False})
        for i in range(32, len(data)):
            bad = data[:i] + bytes([data[i] ^ 1]) + data[i + 1:]
            with pytest.raises(SignatureError):
                s.deserialize(KEY, bad, flags)

    def test_tampered_mac(self):
        s = SignedSerde(SECRET)
        data, flags = s.serialize(KEY, "v")
        for i in range(32):
            bad = data[:i] + bytes([data[i] ^ 0x80]) + data[i + 1:]
            with pytest.raises(SignatureError):
                s.deserialize(KEY, bad, flags)

    def test_appended_or_truncated(self):
        s = SignedSerde(SECRET)
        data, flags = s.serialize(KEY, "value")
        for bad in (data + b"x", data[:-1], data[:32], data[:31], b""):
            with pytest.raises(SignatureError):
                s.deserialize(KEY, bad, flags)

    @pytest.mark.parametrize("new_flags", [
        FLAG_PICKLE | FLAG_SIGNED,
        FLAG_INTEGER | FLAG_SIGNED,
        FLAG_TEXT | FLAG_COMPRESSED | FLAG_SIGNED,
        FLAG_TEXT | FLAG_SIGNED | 1 << 20,
    ])
    def test_tampered_flags(self, new_flags):
        s = SignedSerde(SECRET)
        data, flags = s.serialize(KEY, "text")
        assert flags == FLAG_TEXT | FLAG_SIGNED
        with pytest.raises(SignatureError):
            s.deserialize(KEY, data, new_flags)

    def test_signed_bit_stripped(self):
        s = SignedSerde(SECRET)
        data, flags = s.serialize(KEY, "text")
        with pytest.raises(SignatureError):
            s.deserialize(KEY, data, flags & ~FLAG_SIGNED)

    @pytest.mark.parametrize("value", [[1], "text", b"raw", {"a": 1}])
    def test_unsigned_value_refused(self, value):
        data, flags = PickleSerde().serialize(KEY, value)
        with pytest.raises(SignatureError, match="unsigned"):
            SignedSerde(SECRET).deserialize(KEY, data, flags)

    def test_malicious_pickle_refused(self):
        class Evil:
            def __reduce__(self):
                return (exec, ("raise SystemExit('ran')",))

        data = pickle.dumps(Evil())
        with pytest.raises(SignatureError):
            SignedSerde(SECRET).deserialize(KEY, data, FLAG_PICKLE)
        with pytest.raises(SignatureError):  # signed bit set, but no valid MAC
            SignedSerde(SECRET).deserialize(KEY, b"\x00" * 32 + data, FLAG_PICKLE | FLAG_SIGNED)

    def test_value_moved_to_another_key(self):
        s = SignedSerde(SECRET)
        data, flags = s.serialize(b"user:1:role", "admin")
        assert s.deserialize(b"user:1:role", data, flags) == "admin"
        with pytest.raises(SignatureError):
            s.deserialize(b"user:2:role", data, flags)

    def test_other_secret_refused(self):
        data, flags = SignedSerde(b"one").serialize(KEY, [1])
        with pytest.raises(SignatureError):
            SignedSerde(b"two").deserialize(KEY, data, flags)

    @pytest.mark.parametrize("digits,value", [(b"0", 0), (b"42", 42), (b"18446744073709551615", 2**64 - 1), (b"-1", -1),
                                              (b"9  ", 9)])  # decr pads a shorter number with spaces
    def test_bare_integer_accepted(self, digits, value):
        # what incr/decr leave behind: flags exactly FLAG_INTEGER, digits only
        assert SignedSerde(SECRET).deserialize(KEY, digits, FLAG_INTEGER) == value

    @pytest.mark.parametrize("data,flags", [
        (b" 1", FLAG_INTEGER), (b"", FLAG_INTEGER), (b"-", FLAG_INTEGER), (b"1_0", FLAG_INTEGER),
        (b"\xd9\xa1", FLAG_INTEGER), (b"12", FLAG_INTEGER | FLAG_PICKLE),
        (b"12", FLAG_LONG), (b"12", 0),
    ])
    def test_not_quite_bare_integer_refused(self, data, flags):
        with pytest.raises(SignatureError):
            SignedSerde(SECRET).deserialize(KEY, data, flags)

    @pytest.mark.parametrize("secret", [b"", ""])
    def test_empty_secret_refused(self, secret):
        with pytest.raises(ValueError):
            SignedSerde(secret)

    def test_signature_error_is_serialization_error(self):
        assert issubclass(SignatureError, SerializationError)

    def test_compressed_after_signing_round_trips(self):
        # the client compresses around the serde: compress(sign(v)), then sign^-1(decompress)
        s = SignedSerde(SECRET)
        data, flags = s.serialize(KEY, "x" * 5000)
        packed, pflags = compress(data, flags, 100)
        assert pflags & FLAG_COMPRESSED
        assert s.deserialize(KEY, *decompress(packed, pflags)) == "x" * 5000

    @given(st.one_of(st.binary(), st.text(), st.integers()), st.binary(min_size=1, max_size=250))
    def test_property_round_trip(self, value, key):
        s = SignedSerde(SECRET)
        data, flags = s.serialize(key, value)
        assert s.deserialize(key, data, flags) == value
