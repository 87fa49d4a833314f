"""Serialisation: Python values to ``(bytes, flags)`` and back.

The flag bits are python-memcached's, so both clients read each other's
entries:

=============  =====  ===========================================
constant       bit    meaning
=============  =====  ===========================================
(none)         0      ``bytes`` stored as they are
FLAG_PICKLE    1      pickled object
FLAG_INTEGER   2      ``int`` as decimal ASCII (``incr`` works on it)
FLAG_LONG      4      Python 2 ``long``; read as ``int``
FLAG_COMPRESSED 8     payload zlib-compressed (wraps any of the others)
FLAG_TEXT      16     ``str`` as UTF-8
FLAG_SIGNED    256    payload carries an HMAC-SHA256 (:class:`SignedSerde`)
=============  =====  ===========================================

A serde is any object with ``serialize(key, value) -> (bytes, flags)`` and
``deserialize(key, data, flags) -> value``.  Compression is applied by the
client around the serde (python-memcached's ``min_compress_len`` rule).
"""
from __future__ import annotations

import hashlib
import hmac
import io
import json
import pickle
import re
import zlib
from typing import Any, Callable, Optional, Protocol, Tuple, Union

from .errors import SerializationError, SignatureError

FLAG_PICKLE = 1 << 0
FLAG_INTEGER = 1 << 1
FLAG_LONG = 1 << 2
FLAG_COMPRESSED = 1 << 3
FLAG_TEXT = 1 << 4
FLAG_SIGNED = 1 << 8

_MAC_SIZE = 32

#: A counter's bytes: what ``incr``/``decr`` leave (``decr`` pads a number that
#: got shorter with spaces, doc/protocol.txt), and python-memcached's ``"-17"``.
_INTEGER = re.compile(rb"-?[0-9]+ *\Z")


def is_integer(value: Any) -> bool:
    """True for the values stored as counters: ``int`` and its subclasses, not ``bool``
    (which python-memcached pickles)."""
    return value.__class__ is int or (isinstance(value, int) and not isinstance(value, bool))


def encode_integer(value: int) -> Tuple[bytes, int]:
    """An integer as memcached counts it: ASCII decimal digits, flags ``FLAG_INTEGER``.

    The client writes every integer this way whatever the serde (never
    pickled, compressed or signed), so ``incr``/``decr`` work on it.
    """
    return b"%d" % value, FLAG_INTEGER


def decode_integer(data: bytes) -> int:
    """The integer in *data*; SerializationError unless it is (optionally signed) ASCII
    digits, with the trailing spaces ``decr`` may leave.

    Stricter than ``int()``, which would accept spaces, underscores and
    other Unicode digits: a counter holding anything else is not a counter.
    """
    if data.isdigit() and len(data) <= 20:  # the usual counter: ASCII digits, at most 64 bits
        return int(data)
    if _INTEGER.match(data) is None:
        raise SerializationError("not an integer: %r" % data[:40])
    try:
        return int(data)
    except ValueError as exc:  # more digits than Python converts
        raise SerializationError("integer of %d digits refused: %s" % (len(data), exc)) from exc


class Serde(Protocol):
    """What ``Client(serde=...)`` accepts."""

    def serialize(self, key: bytes, value: Any) -> Tuple[bytes, int]: ...

    def deserialize(self, key: bytes, data: bytes, flags: int) -> Any: ...


class PickleSerde:
    """python-memcached's encoding: bytes raw, str as text, int as digits, the rest pickled.

    ``pickler``/``unpickler`` are classes called like ``pickle.Pickler(file,
    protocol=...)``; ``pid``/``pload`` become their ``persistent_id`` /
    ``persistent_load``, as in python-memcached.
    """

    def __init__(
        self,
        protocol: int = 0,
        pickler: Callable[..., Any] = pickle.Pickler,
        unpickler: Callable[..., Any] = pickle.Unpickler,
        pid: Optional[Callable[[Any], Any]] = None,
        pload: Optional[Callable[[Any], Any]] = None,
    ) -> None:
        self.protocol = protocol
        self.pickler = pickler
        self.unpickler = unpickler
        self.pid = pid
        self.pload = pload
        # Python 3.13's C Pickler/Unpickler refuse instance assignment of persistent_id /
        # persistent_load: the hooks become methods of a subclass made once here.
        self._pickler = _with_hook(pickler, "persistent_id", pid)
        self._unpickler = _with_hook(unpickler, "persistent_load", pload)
        # The common case (stock pickle, no persistence hooks) takes the C fast path.
        self._fast = pickler is pickle.Pickler and unpickler is pickle.Unpickler and pid is None and pload is None

    def serialize(self, key: bytes, value: Any) -> Tuple[bytes, int]:
        cls = value.__class__
        if cls is bytes:
            return value, 0
        if cls is str:
            return value.encode("utf-8"), FLAG_TEXT
        if cls is int:
            return b"%d" % value, FLAG_INTEGER
        if isinstance(value, bytes):
            return bytes(value), 0
        if isinstance(value, str):
            return str(value).encode("utf-8"), FLAG_TEXT
        if isinstance(value, int) and not isinstance(value, bool):
            # bool is pickled, as python-memcached does.
            return b"%d" % value, FLAG_INTEGER
        try:
            if self._fast:
                return pickle.dumps(value, self.protocol), FLAG_PICKLE
            buf = io.BytesIO()
            p = self._pickler(buf, protocol=self.protocol)
            if self.pid is not None and self._pickler is self.pickler:  # a factory, not a class
                p.persistent_id = self.pid
            p.dump(value)
            return buf.getvalue(), FLAG_PICKLE
        except Exception as exc:  # pickle raises many types (PicklingError, TypeError, AttributeError...)
            raise SerializationError("cannot pickle %s: %s" % (type(value).__name__, exc)) from exc

    def deserialize(self, key: bytes, data: bytes, flags: int) -> Any:
        if flags == 0:
            return data
        try:
            if flags & FLAG_TEXT:
                return data.decode("utf-8")
            if flags & (FLAG_INTEGER | FLAG_LONG):
                return int(data)
        except ValueError as exc:  # UnicodeDecodeError too: a corrupt entry is a decode failure
            raise SerializationError("cannot decode value with flags %d: %s" % (flags, exc)) from exc
        if flags & FLAG_PICKLE:
            try:
                if self._fast:
                    return pickle.loads(data)
                u = self._unpickler(io.BytesIO(data))
                if self.pload is not None and self._unpickler is self.unpickler:  # a factory, not a class
                    u.persistent_load = self.pload
                return u.load()
            except Exception as exc:
                raise SerializationError("cannot unpickle value: %s" % exc) from exc
        raise SerializationError("unknown flags %d" % flags)


def _with_hook(cls: Any, name: str, hook: Optional[Callable[[Any], Any]]) -> Any:
    """``cls`` with method ``name`` calling ``hook`` (``cls`` itself when there is no hook or
    it is not a class, e.g. a factory function, whose instances get the attribute instead)."""
    if hook is None or not isinstance(cls, type):
        return cls
    return type(cls.__name__, (cls,), {name: lambda self, obj: hook(obj)})


class RawSerde:
    """Bytes only (``str`` is stored as UTF-8 and read back as bytes)."""

    def serialize(self, key: bytes, value: Any) -> Tuple[bytes, int]:
        if isinstance(value, (bytes, bytearray, memoryview)):
            return bytes(value), 0
        if isinstance(value, str):
            return value.encode("utf-8"), 0
        raise SerializationError("RawSerde stores bytes only, not %s" % type(value).__name__)

    def deserialize(self, key: bytes, data: bytes, flags: int) -> Any:
        return data


class JSONSerde:
    """Every value as UTF-8 JSON with flags 0, readable from any language.

    Integers are plain digits, so ``incr``/``decr`` work on them.  Values JSON
    cannot represent (bytes, sets, objects) raise :class:`SerializationError`.
    """

    def __init__(self, dumps: Optional[Callable[[Any], str]] = None, loads: Callable[[Any], Any] = json.loads) -> None:
        self._dumps = dumps or (lambda v: json.dumps(v, separators=(",", ":"), ensure_ascii=False))
        self._loads = loads

    def serialize(self, key: bytes, value: Any) -> Tuple[bytes, int]:
        try:
            return self._dumps(value).encode("utf-8"), 0
        except (TypeError, ValueError) as exc:
            raise SerializationError("cannot encode %s as JSON: %s" % (type(value).__name__, exc)) from exc

    def deserialize(self, key: bytes, data: bytes, flags: int) -> Any:
        try:
            return self._loads(data)
        except ValueError as exc:
            raise SerializationError("value is not JSON: %s" % exc) from exc


class SignedSerde:
    """Wrap a serde so every stored value carries an HMAC-SHA256 of key, flags and payload.

    Unpickling data from memcached runs code chosen by whoever can write to
    memcached; with a signed serde only holders of *secret_key* can produce
    values this client will decode.  Reading an unsigned or tampered value
    raises :class:`SignatureError` (a strict client re-raises it; a default
    client logs it and treats the entry as a miss).  The key is part of the
    MAC, so a value cannot be replayed under another key.

    Integers are not signed: they are written as bare counters (flags
    exactly ``FLAG_INTEGER``, ASCII digits, see :func:`encode_integer`) so
    that ``incr``/``decr`` work on them, and such a value is accepted
    unsigned: it decodes to an ``int`` and cannot run code.
    """

    def __init__(self, secret_key: Union[bytes, str], inner: Optional[Serde] = None) -> None:
        if isinstance(secret_key, str):
            secret_key = secret_key.encode("utf-8")
        if not secret_key:
            raise ValueError("secret_key must not be empty")
        self._secret = secret_key
        self.inner: Serde = inner if inner is not None else PickleSerde(protocol=pickle.HIGHEST_PROTOCOL)

    def _mac(self, key: bytes, flags: int, payload: bytes) -> bytes:
        return hmac.new(self._secret, b"%s\x00%d\x00" % (key, flags) + payload, hashlib.sha256).digest()

    def sign(self, key: bytes, payload: bytes, flags: int) -> Tuple[bytes, int]:
        """Prefix *payload* (already encoded, possibly compressed) with its MAC."""
        flags |= FLAG_SIGNED
        return self._mac(key, flags, payload) + payload, flags

    def verify(self, key: bytes, data: bytes, flags: int) -> Tuple[bytes, int]:
        """Check the MAC before anything else touches the bytes (no unpickling,
        no decompression of unverified data); returns ``(payload, flags)``
        without the signed bit.  Raises :class:`SignatureError`."""
        if not flags & FLAG_SIGNED:
            if flags == FLAG_INTEGER and _INTEGER.match(data) is not None:
                return data, flags
            raise SignatureError("refusing unsigned value for key %r" % key)
        mac, payload = data[:_MAC_SIZE], data[_MAC_SIZE:]
        if len(mac) != _MAC_SIZE or not hmac.compare_digest(mac, self._mac(key, flags, payload)):
            raise SignatureError("signature mismatch for key %r: value tampered with or written with another key" % key)
        return payload, flags & ~FLAG_SIGNED

    def serialize(self, key: bytes, value: Any) -> Tuple[bytes, int]:
        if is_integer(value):
            return encode_integer(value)
        payload, flags = self.inner.serialize(key, value)
        return self.sign(key, payload, flags)

    def deserialize(self, key: bytes, data: bytes, flags: int) -> Any:
        payload, flags = self.verify(key, data, flags)
        return self.inner.deserialize(key, payload, flags)


def compress(
    data: bytes, flags: int, min_compress_len: int, compressor: Callable[[bytes], bytes] = zlib.compress
) -> Tuple[bytes, int]:
    """python-memcached's rule: compress when longer than *min_compress_len* (if non-zero)
    and keep the result only when it is smaller."""
    if min_compress_len and len(data) > min_compress_len:
        packed = compressor(data)
        if len(packed) < len(data):
            return packed, flags | FLAG_COMPRESSED
    return data, flags


def decompress(data: bytes, flags: int, decompressor: Callable[[bytes], bytes] = zlib.decompress) -> Tuple[bytes, int]:
    """Undo :func:`compress`; returns the data and the flags without the bit."""
    if flags & FLAG_COMPRESSED:
        try:
            return decompressor(data), flags & ~FLAG_COMPRESSED
        except Exception as exc:
            raise SerializationError("cannot decompress value: %s" % exc) from exc
    return data, flags
