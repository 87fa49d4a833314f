"""What the blocking and the asyncio client share before any I/O: settings, keys, values, routing, policy.

:class:`ClientBase` takes python-memcached's constructor arguments and builds
the pure pieces both clients compose: a :class:`~.keys.KeyCodec`, the serde
(signing and compression around it), a :class:`~sqla_memcache.routing.Router`
over the servers, and the failure policy (python-memcached's quiet results,
or typed errors with ``strict=True``).  A subclass names its server class
(:attr:`host_class`) and how to build one (:meth:`_make_host`); that and the
transport drivers are all that differ between ``Client`` and ``AsyncClient``.
"""
from __future__ import annotations

import copy
import logging
import pickle
import threading
import zlib
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

from .. import config
from ..errors import SerializationError, ServerDeadError, ValueTooLargeError
from ..protocol import ItemTuple
from ..routing import Router
from ..serde import (
    FLAG_COMPRESSED,
    FLAG_INTEGER,
    PickleSerde,
    Serde,
    SignedSerde,
    compress,
    decode_integer,
    decompress,
    encode_integer,
    is_integer,
)
from .keys import KeyCodec

if TYPE_CHECKING:
    import ssl

log = logging.getLogger("sqla_memcache.client")

SERVER_MAX_KEY_LENGTH = 250
SERVER_MAX_VALUE_LENGTH = 1024 * 1024
_DEAD_RETRY = 30
_SOCKET_TIMEOUT = 3

Key = Union[str, bytes, Tuple[int, Union[str, bytes]]]
ServerSpec = Union[str, Tuple[str, int]]


class ClientBase:
    """Settings and pure pieces shared by :class:`~sqla_memcache.Client` and
    :class:`~sqla_memcache.AsyncClient` (see the module docstring)."""

    #: python-memcached's re-hash count for a dead server (modula); 1: no re-hash.
    _SERVER_RETRIES = 10
    #: The server class; set by each client (``Host``, ``AsyncHost``), or a mock one in unit tests.
    host_class: Any = None

    def __init__(
        self,
        servers: Sequence[ServerSpec],
        debug: int = 0,
        pickleProtocol: int = 0,
        pickler: Callable[..., Any] = pickle.Pickler,
        unpickler: Callable[..., Any] = pickle.Unpickler,
        compressor: Callable[[bytes], bytes] = zlib.compress,
        decompressor: Callable[[bytes], bytes] = zlib.decompress,
        pload: Optional[Callable[[Any], Any]] = None,
        pid: Optional[Callable[[Any], Any]] = None,
        server_max_key_length: Optional[int] = None,
        server_max_value_length: Optional[int] = None,
        dead_retry: float = _DEAD_RETRY,
        socket_timeout: Optional[float] = _SOCKET_TIMEOUT,
        cache_cas: bool = False,
        flush_on_reconnect: int = 0,
        check_keys: bool = True,
        key_encoder: Optional[Callable[[Any], Any]] = None,
        *,
        hashing: str = "modula",
        serde: Optional[Serde] = None,
        secret_key: Optional[Union[bytes, str]] = None,
        ssl_context: Optional[ssl.SSLContext] = None,
        strict: bool = False,
        deadline: Optional[float] = None,
    ) -> None:
        self.debug = debug
        self.dead_retry = dead_retry
        self.socket_timeout = socket_timeout
        #: Seconds one call may take with one server, connect, send and the whole
        #: reply (None: ``socket_timeout``).  See docs/failure-behaviour.md.
        self.deadline = deadline
        self.flush_on_reconnect = flush_on_reconnect
        self.ssl_context = ssl_context
        self.strict = strict
        self.hashing = hashing
        self.pickleProtocol = pickleProtocol
        self.pickler = pickler
        self.unpickler = unpickler
        self.persistent_load = pload
        self.persistent_id = pid
        self.compressor = compressor
        self.decompressor = decompressor
        self.cache_cas = cache_cas
        self.do_check_key = check_keys
        self.key_encoder = key_encoder
        self.server_max_key_length = SERVER_MAX_KEY_LENGTH if server_max_key_length is None else server_max_key_length
        self.server_max_value_length = (
            SERVER_MAX_VALUE_LENGTH if server_max_value_length is None else server_max_value_length
        )
        if serde is None:
            serde = PickleSerde(pickleProtocol, pickler, unpickler, pid, pload)
        config.check_serde(serde)
        if secret_key is not None:
            serde = SignedSerde(secret_key, serde)
        self.serde: Serde = serde
        #: A signed serde is applied around compression (see _encode_value).
        self._signer: Optional[SignedSerde] = serde if isinstance(serde, SignedSerde) else None
        self._value_serde: Serde = serde.inner if isinstance(serde, SignedSerde) else serde
        self._deserialize = self._value_serde.deserialize
        # Flags 0 means "bytes as stored" for the default serde: skip the call.
        self._raw_bytes = type(serde) is PickleSerde
        self._keys = KeyCodec(self.server_max_key_length, check_keys, key_encoder, self.server_max_value_length)
        #: Per-thread state (python-memcached's ``cas_ids``), shared by views of this client.
        self._local = threading.local()
        self.servers: List[Any] = []
        self.set_servers(servers)

    # ------------------------------------------------------------------
    # servers and routing
    # ------------------------------------------------------------------
    def _make_host(self, spec: ServerSpec) -> Any:
        """One server object for *spec* (each client passes its transport's options)."""
        raise NotImplementedError

    def _host_options(self) -> Dict[str, Any]:
        """The server options both clients pass to their host class (:meth:`_make_host`)."""
        return dict(dead_retry=self.dead_retry, socket_timeout=self.socket_timeout,
                    flush_on_reconnect=self.flush_on_reconnect, ssl_context=self.ssl_context,
                    debuglog=self.debuglog, deadline=self.deadline)

    def _budget(self) -> Optional[float]:
        """Seconds one call may take with one server (read per call: a copy may change it)."""
        return self.deadline if self.deadline is not None else self.socket_timeout

    def set_servers(self, servers: Sequence[ServerSpec]) -> None:
        """Replace the server list (idle connections to the old ones are closed).

        A single ``"host:port"`` string is one server; ``TypeError``/``ValueError``
        for anything that is not a server list (see :func:`sqla_memcache.config.server_list`).
        """
        servers = config.server_list(servers)
        self.disconnect_all()
        self.servers = [self._make_host(s) for s in servers]
        self._router = Router(self.servers, self.hashing, self.host_class.usable, self._SERVER_RETRIES)

    def without_failover(self) -> Any:
        """A view of this client (same servers and connection pools) that never
        moves a key off its home server: while that server is dead the key is
        unavailable (reads miss, writes fail) instead of landing elsewhere.

        The ORM cache uses it for version counters, where a stand-in server's
        counter would let entries invalidated meanwhile match again once the
        home server returns with its old counter.
        """
        view = copy.copy(self)
        view._router = self._router.without_failover()
        return view

    @property
    def _selector(self) -> Any:
        """The router's node selector (kept for code that inspects it)."""
        return self._router.selector

    @_selector.setter
    def _selector(self, selector: Any) -> None:
        self._router.selector = selector

    @property
    def buckets(self) -> List[Any]:
        """python-memcached's weight-expanded server list (modula hashing)."""
        return self._router.buckets

    def forget_dead_hosts(self) -> None:
        """Make every server eligible again right now."""
        for s in self.servers:
            s.deaduntil = 0.0

    def disconnect_all(self) -> None:
        """Close every idle connection (callers mid-command keep theirs)."""
        for s in getattr(self, "servers", ()):
            s.close_idle()

    # ------------------------------------------------------------------
    # failure policy
    # ------------------------------------------------------------------
    def _fail(self, exc: Exception, result: Any) -> Any:
        """Raise *exc* when strict, else return python-memcached's quiet *result*."""
        if self.strict:
            raise exc
        return result

    def _no_server(self, key: Any, result: Any) -> Any:
        if self.strict:
            raise ServerDeadError("no live memcached server for key %r" % (key,))
        return result

    @property
    def server_max_value_length(self) -> int:
        """The longest value stored or accepted in a reply (python-memcached's; 0: no limit)."""
        return self._server_max_value_length

    @server_max_value_length.setter
    def server_max_value_length(self, length: int) -> None:
        self._server_max_value_length = length
        #: (no limit is a limit no value reaches: one comparison)
        self._max_value = length or 1 << 62
        keys = self.__dict__.get("_keys")  # (None while the constructor sets this first)
        if keys is not None:
            # A new codec, not a change to this one: a copy of this client (the ORM's
            # hardened view is one) shares the codec and keeps its own limit.
            self._keys = keys.with_max_value(length)

    # ------------------------------------------------------------------
    # values
    # ------------------------------------------------------------------
    def _encode_value(self, wire: bytes, val: Any, min_compress_len: int) -> Tuple[bytes, int]:
        cls = val.__class__
        if cls is bytes and self._raw_bytes and not min_compress_len and len(val) <= self._max_value:
            return val, 0  # the default serde's bytes, as they are (no serde call)
        if cls is not bytes and cls is not str and is_integer(val):  # (bytes and str, the usual values, are no int)
            # A counter, with every serde: ASCII digits, never pickled, compressed
            # or signed, so incr/decr work on it and reading it never runs code.
            return encode_integer(val)
        data, flags = self._value_serde.serialize(wire, val)
        if min_compress_len and not flags & FLAG_INTEGER:
            data, flags = compress(data, flags, min_compress_len, self.compressor)
        if self._signer is not None:
            # Signed after compression, so a reader verifies before decompressing.
            data, flags = self._signer.sign(wire, data, flags)
        if self.server_max_value_length and len(data) > self.server_max_value_length:
            raise ValueTooLargeError(
                "value of %d bytes for key %r exceeds server_max_value_length %d"
                % (len(data), wire, self.server_max_value_length)
            )
        return data, flags

    def _decode_value(self, item: ItemTuple) -> Any:
        """The value of a ``VALUE`` block; SerializationError when the serde refuses it."""
        key, flags, data, _ = item
        if flags == 0 and self._raw_bytes:
            return data  # bytes as stored: no serde call
        if flags == FLAG_INTEGER:
            return decode_integer(data)  # a counter: digits or nothing, whatever the serde
        if self._signer is not None:
            # No byte of an unverified value is decompressed or unpickled.
            data, flags = self._signer.verify(key, data, flags)
        if flags & FLAG_COMPRESSED:
            data, flags = decompress(data, flags, self.decompressor)
        return self._deserialize(key, data, flags)

    def _collect(self, result: Dict[Any, Any], wires: Dict[bytes, Any], items: List[ItemTuple],
                 decode: Optional[Callable[[ItemTuple], Any]] = None) -> None:
        """Add the *items* of one server's reply to *result* under the caller's keys,
        each decoded by *decode* (None: the serde's value, :meth:`_decode_value`).

        A value that does not decode is a miss (``SerializationError`` when strict).
        """
        raw = decode is None and self._raw_bytes  # (bytes stored as they are: no call per value)
        if decode is None:
            decode = self._decode_value
        for item in items:
            key, flags, data, _ = item
            try:
                result[wires[key]] = data if raw and flags == 0 else decode(item)
            except SerializationError as exc:
                self.debuglog("could not decode value of %r: %s" % (key, exc))
                log.warning("could not decode value of %r: %s", key[:100], exc)
                if self.strict:
                    raise
