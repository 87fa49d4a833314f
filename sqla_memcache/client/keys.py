"""Keys: what the caller passes -> what the server hash uses and what goes on the wire (:class:`KeyCodec`).

Key validity is defined once, by the protocol's rule
(:data:`sqla_memcache.protocol.VALID_KEY`, :data:`~sqla_memcache.protocol.MAX_KEY_LENGTH`),
and applied here for the blocking and the asyncio client alike.  python-memcached's
key forms are accepted: ``str`` (UTF-8 encoded), ``bytes``, a ``str`` subclass,
and ``(hash value, key)`` to force the server.  A key with a space or control
character, or longer than 250 bytes, is refused even with ``check_keys=False``:
it could inject a command, or make memcached drop the connection.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

from .. import errors
from ..protocol import (
    BAD_KEY_BYTE_EXCEPT_SPACE,
    MAX_KEY_LENGTH,
    VALID_KEY,
    FewValuesReply,
    OneValueReply,
    get_command,
    retrieval_command,
)

#: How many validated str keys a codec remembers (least recently used evicted).
KEY_MEMO_SIZE = 4096

#: Batches up to this size are encoded key by key through the memo (see :meth:`KeyCodec.encode_many`).
SMALL_BATCH = 8

#: How many batches of a few str keys a codec remembers (see :attr:`KeyCodec.few`).
FEW_MEMO_SIZE = 1024

#: ``(what the server hash uses, the key bytes on the wire)``
Encoded = Tuple[Any, bytes]

#: ``(hash key, wire key, get request, get reply parser)``: what :attr:`KeyCodec.lookup` remembers of a key.
Looked = Tuple[Any, bytes, bytes, OneValueReply]

#: ``({wire key: key}, get request, reply parser, [last decoded counters])``: what
#: :attr:`KeyCodec.few` remembers of a batch (the list's one item, replaced whole, is
#: ``(the parser's items, {key: counter})`` of the last ``get_counters`` reply read in full).
Few = Tuple[Dict[bytes, str], bytes, FewValuesReply, List[Any]]

#: (a non-str key in a small batch: unpacking it fails, so the batch takes the key-by-key path)
_NOT_STR = ()


class KeyCodec:
    """Validates and encodes keys; remembers validated ``str`` keys with their ``get``
    request and reply reader, and batches of a few of them.

    :param max_length: ``server_max_key_length`` (python-memcached's; 0: no limit
        but memcached's own 250 bytes).
    :param check_keys: python-memcached's ``check_keys``: with False only the
        protocol's limits (250 bytes, no space or control byte) are enforced.
    :param key_encoder: python-memcached's ``key_encoder``, applied first.
    """

    __slots__ = ("max_length", "check_keys", "limit", "key_encoder", "max_value", "lookup", "few")

    def __init__(self, max_length: int, check_keys: bool = True,
                 key_encoder: Optional[Callable[[Any], Any]] = None, max_value: int = 0) -> None:
        self.max_length = max_length
        self.check_keys = check_keys
        #: The length actually enforced: memcached never takes a longer key.
        self.limit = min(max_length, MAX_KEY_LENGTH) if (check_keys and max_length) else MAX_KEY_LENGTH
        self.key_encoder = key_encoder
        #: The value length a ``get`` reply may announce (``server_max_value_length``; 0: no limit).
        self.max_value = max_value
        #: str key -> :data:`Looked` ``(hash key, wire key, get request, get reply
        #: parser)``, least recently used evicted; a refused key raises and is
        #: never remembered.  ``functools.lru_cache`` (C) on a function of this
        #: codec: a hit costs no Python frame, and the table goes with the codec.
        #: Only exact ``str`` keys may be passed (any key: :meth:`looked`).  With a
        #: ``key_encoder`` nothing is remembered (python-memcached calls it on every use).
        self.lookup: Callable[[str], Looked] = (
            lru_cache(KEY_MEMO_SIZE)(self._looked) if key_encoder is None else self._looked
        )
        #: tuple of a few (at most :data:`SMALL_BATCH`) str keys -> :data:`Few`
        #: ``({wire key: key}, get request, reply parser)``, remembered as
        #: :attr:`lookup` (``TypeError`` for a key that is not a str).
        self.few: Callable[[Tuple[str, ...]], Few] = (
            lru_cache(FEW_MEMO_SIZE)(self._few) if key_encoder is None else self._few
        )

    def _few(self, keys: Tuple[str, ...]) -> Few:
        lookup = self.lookup
        wires = {}
        for key in keys:
            if key.__class__ is not str:
                raise TypeError("not a str key: %r" % (key,))
            wires[lookup(key)[1]] = key
        return wires, retrieval_command(b"get", list(wires)), FewValuesReply(wires, self.max_value), [None]

    def _looked(self, key: Any) -> Looked:
        hashkey, wire = self._encode(key)
        return hashkey, wire, get_command(wire), OneValueReply(wire, self.max_value)

    def looked(self, key: Any) -> Looked:
        """:data:`Looked` of any key (a ``str`` one through :attr:`lookup`); raises the key errors."""
        return self.lookup(key) if key.__class__ is str else self._looked(key)

    def with_max_value(self, length: int) -> "KeyCodec":
        """This codec for another ``server_max_value_length`` (nothing remembered yet)."""
        return KeyCodec(self.max_length, self.check_keys, self.key_encoder, length)

    def memo_size(self) -> int:
        """How many validated keys are remembered."""
        info = getattr(self.lookup, "cache_info", None)
        return info().currsize if info is not None else 0

    # -- python-memcached's check -------------------------------------------
    def check_key(self, key: Any, key_extra_len: int = 0) -> None:
        """Raise a ``MemcachedKeyError`` subclass if *key* (an encoded key) is not valid.

        As python-memcached's ``check_key``: a ``str`` is refused (it checks
        encoded keys); ``(hash value, key)`` checks the key part.
        """
        if isinstance(key, tuple):
            key = key[1]
        if key is None:
            raise errors.MemcachedKeyNoneError("Key is None")
        if not isinstance(key, bytes):
            raise errors.MemcachedKeyTypeError("Key must be a binary string")
        if self.max_length != 0 and len(key) + key_extra_len > self.max_length:
            raise errors.MemcachedKeyLengthError("Key length is > %s" % self.max_length)
        if not VALID_KEY.match(key):
            raise errors.MemcachedKeyCharacterError("Control/space characters not allowed (key=%r)" % (key,))

    # -- one key ------------------------------------------------------------
    def encode(self, key: Any) -> Encoded:
        """``(hash key, wire key)`` for *key*; raises the key errors."""
        hashkey, wire, _, _ = self.looked(key)
        return hashkey, wire

    def _encode(self, key: Any) -> Encoded:
        """The key rule, uncached: ``(hash key, wire key)``; raises the key errors."""
        if self.key_encoder is not None:
            key = self.key_encoder(key)
        cls = key.__class__
        if cls is str:
            try:
                wire = key.encode("utf-8")
            except UnicodeEncodeError as exc:  # lone surrogates
                raise errors.MemcachedKeyCharacterError("key is not encodable as UTF-8: %r" % (key,)) from exc
            self.check_wire(wire)
            return wire, wire
        hashkey: Any
        try:
            if cls is bytes:
                wire = hashkey = key
            elif cls is tuple:
                if len(key) != 2 or not isinstance(key[0], int):
                    raise errors.MemcachedKeyTypeError("a tuple key must be (int hash value, key), got %r" % (key,))
                wire = key[1]
                if isinstance(wire, str):
                    wire = str(wire).encode("utf-8")
                hashkey = (key[0], wire)
            elif isinstance(key, str):  # a str subclass: python-memcached encodes these too
                wire = hashkey = str(key).encode("utf-8")
            else:
                self.check_key(key)  # raises the right error for None / other types
                raise errors.MemcachedKeyTypeError("Key must be a binary string")
        except UnicodeEncodeError as exc:  # lone surrogates
            raise errors.MemcachedKeyCharacterError("key is not encodable as UTF-8: %r" % (key,)) from exc
        if wire.__class__ is not bytes:
            self.check_key(wire)
            raise errors.MemcachedKeyTypeError("Key must be a binary string")
        self.check_wire(wire)
        return hashkey, wire

    def check_wire(self, wire: bytes) -> None:
        """The protocol's limits, checked even with ``check_keys=False``: memcached can
        never take a longer key, and a space or ``\\r\\n`` would inject a command."""
        if len(wire) > self.limit:
            raise errors.MemcachedKeyLengthError("Key length is > %s" % self.limit)
        if not VALID_KEY.match(wire):
            raise errors.MemcachedKeyCharacterError("Control/space characters not allowed (key=%r)" % (wire,))

    def get_request(self, key: Any) -> Tuple[Any, bytes, bytes]:
        """``(hash key, wire key, get request)`` (remembered: see :attr:`lookup`)."""
        hashkey, wire, request, _ = self.looked(key)
        return hashkey, wire, request

    def prefixed(self, orig: Any, prefix: bytes) -> Encoded:
        """``(hash key, wire key)`` of *orig* with *prefix* (``key_prefix`` of the ``*_multi`` calls)."""
        if not prefix:
            return self.encode(orig)
        try:
            if isinstance(orig, tuple):
                if len(orig) != 2:
                    raise errors.MemcachedKeyTypeError("a tuple key must be (int hash value, key), got %r" % (orig,))
                k = orig[1].encode("utf-8") if isinstance(orig[1], str) else orig[1]
                return self.encode((orig[0], prefix + k))
            k = orig.encode("utf-8") if isinstance(orig, str) else orig
            if not isinstance(k, bytes):
                self.check_key(k)
            return self.encode(prefix + k)
        except UnicodeEncodeError as exc:
            raise errors.MemcachedKeyCharacterError("key is not encodable as UTF-8: %r" % (orig,)) from exc
        except TypeError as exc:  # prefix + a part that is not bytes
            raise errors.MemcachedKeyTypeError("Key must be a binary string") from exc

    # -- many keys ----------------------------------------------------------
    def encode_many(self, keys: Iterable[Any], prefix: bytes) -> List[Tuple[Any, bytes, Any]]:
        """``[(hash key, wire key, caller's key)]`` for a batch, every key validated.

        The usual batch (str keys, no key_encoder) is encoded in one pass and
        validated with one regex over the joined keys; anything unusual takes
        the per-key path, which raises the precise error.
        """
        keys = keys if isinstance(keys, (list, tuple)) else list(keys)
        if len(keys) <= SMALL_BATCH and not prefix and self.key_encoder is None:
            # A few keys: each a memo hit (C, no frame) once seen, cheaper than the joined check.
            lookup = self.lookup
            try:
                return [(w, w, k) for k in keys for _, w, _, _ in (lookup(k) if k.__class__ is str else _NOT_STR,)]
            except (errors.MemcachedKeyError, ValueError):  # key by key, for the precise error
                pass
        if self.key_encoder is None and keys:
            try:
                wires = [prefix + k.encode("utf-8") for k in keys]
            except (AttributeError, TypeError, UnicodeEncodeError):
                wires = None
            if wires is not None and self._all_valid(wires):
                return list(zip(wires, wires, keys))
        out = []
        for orig in keys:
            hashkey, wire = self.prefixed(orig, prefix)
            out.append((hashkey, wire, orig))
        return out

    def _all_valid(self, wires: List[bytes]) -> bool:
        """True when every key is non-empty, within the length limit and free
        of forbidden bytes (checked on the space-joined keys in one pass)."""
        joined = b" ".join(wires)
        return (
            BAD_KEY_BYTE_EXCEPT_SPACE.search(joined) is None
            and joined.count(b" ") == len(wires) - 1
            and all(wires)
            and max(map(len, wires)) <= self.limit
        )

    def reported(self, by_wire: Dict[bytes, Any]) -> Dict[bytes, Any]:
        """python-memcached reports the encoded keys in ``get_multi`` when a key_encoder is set."""
        encode = self.key_encoder
        return by_wire if encode is None else {w: encode(o) for w, o in by_wire.items()}


def prefix_bytes(prefix: Any) -> bytes:
    """``key_prefix`` as bytes (str UTF-8 encoded; empty for a falsy one)."""
    return prefix.encode("utf-8") if isinstance(prefix, str) else (prefix or b"")
