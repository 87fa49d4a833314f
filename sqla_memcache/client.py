"""``Client``: a drop-in for python-memcached 1.62's ``memcache.Client``.

Same constructor arguments, methods, return values, exceptions, value flags
and server choice, so the two read each other's entries.  It composes the
pure protocol (:mod:`.protocol`), node selection (:mod:`.hashing`),
serialisation (:mod:`.serde`) and the connection layer (:mod:`.connection`),
and holds the policy: what a failure returns (python-memcached's quiet
``False``/``0``/``None``, or typed errors with ``strict=True``).

Beyond python-memcached: ``hashing="ketama"``, ``serde=``/``secret_key=``,
``ssl_context=``, ``strict=``, a thread-safe connection pool per server,
``cas(..., cas_id=)`` / :meth:`Client.gets_cas` for CAS without
``cache_cas``, and :meth:`Client.raw_command` for commands such as
``lru_crawler metadump``.

Deliberate differences, all on bad input or faults: a key with a space or
control character, or longer than memcached's 250 bytes, is refused even with
``check_keys=False`` (it could inject a command, or make memcached drop the
connection and the server be marked dead for everyone); integers are stored
as counters (digits, flag 2) with every serde, never signed; every call ends
by a deadline (``socket_timeout`` or ``deadline=``), however a server drips
its reply; oversized values are refused before sending in ``set_multi`` too
(python-memcached sends them and loses the connection's sync); a negative
``incr``/``decr`` delta raises ``ValueError`` before anything is sent; a reply
that does not answer the command (another key, garbage) marks the server dead
instead of being returned; ``get_slabs`` works on Python 3 (python-memcached
1.62 raises ``TypeError`` there).  One ``Client`` is shared by threads through
a connection pool, where python-memcached gives each thread its own sockets
(``threading.local``); ``cas_ids`` stay per thread, as there.
"""
from __future__ import annotations

import copy
import logging
from time import monotonic as _monotonic
import pickle
import re
import ssl
import sys
import threading
import zlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from . import config, errors, protocol
from .connection import Connection, Host
from .errors import (
    ConnectionLostError,
    MemcacheError,
    ProtocolError,
    SerializationError,
    ServerDeadError,
    ValueTooLargeError,
)
from .hashing import make_selector
from .protocol import (
    ALL_STORED,
    MAX_KEY_LENGTH,
    RetrievalReply,
    lines_reply,
    parse_line,
    read_arith_line,
    read_delete_line,
    read_store_line,
    read_touch_line,
    store_lines_reply,
    valid_delete_line,
)
from .serde import (
    FLAG_COMPRESSED,
    FLAG_INTEGER,
    FLAG_LONG,
    FLAG_PICKLE,
    FLAG_TEXT,
    PickleSerde,
    Serde,
    SignedSerde,
    compress,
    decode_integer,
    decompress,
    encode_integer,
    is_integer,
)

log = logging.getLogger(__name__)

SERVER_MAX_KEY_LENGTH = 250
SERVER_MAX_VALUE_LENGTH = 1024 * 1024
_DEAD_RETRY = 30
_SOCKET_TIMEOUT = 3

Key = Union[str, bytes, Tuple[int, Union[str, bytes]]]
ServerSpec = Union[str, Tuple[str, int]]

# python-memcached accepts these bytes in keys (all but controls, space, DEL).
_VALID_KEY = re.compile(rb"[\x21-\x7e\x80-\xff]+\Z")
#: How many validated str keys ``get`` remembers before starting afresh.
_KEY_MEMO_SIZE = 4096
_BAD_EXCEPT_SPACE = re.compile(rb"[\x00-\x1f\x7f]")

#: Faults after which a connection's stream position is unknown: close it.
_CONNECTION_FAULTS = (OSError, ConnectionLostError, ProtocolError)


class Client:
    """A memcached client, python-memcached compatible, thread-safe.

    :param servers: ``"host:port"``, ``("host:port", weight)``, ``"unix:/path"``
        or ``"inet6:[::1]:11211"`` strings.
    :param strict: raise :mod:`sqla_memcache.errors` exceptions instead of
        returning python-memcached's quiet failure values.
    :param hashing: ``"modula"`` (python-memcached's, default) or ``"ketama"``.
    :param serde: an object with ``serialize``/``deserialize`` (see
        :mod:`sqla_memcache.serde`); default is python-memcached's pickle encoding.
    :param secret_key: wrap the serde in :class:`~sqla_memcache.serde.SignedSerde`.
    :param ssl_context: connect with TLS.
    """

    MemcachedKeyError = errors.MemcachedKeyError
    MemcachedKeyLengthError = errors.MemcachedKeyLengthError
    MemcachedKeyCharacterError = errors.MemcachedKeyCharacterError
    MemcachedKeyNoneError = errors.MemcachedKeyNoneError
    MemcachedKeyTypeError = errors.MemcachedKeyTypeError
    MemcachedStringEncodingError = errors.MemcachedStringEncodingError

    _FLAG_PICKLE = FLAG_PICKLE
    _FLAG_INTEGER = FLAG_INTEGER
    _FLAG_LONG = FLAG_LONG
    _FLAG_COMPRESSED = FLAG_COMPRESSED
    _FLAG_TEXT = FLAG_TEXT

    _SERVER_RETRIES = 10

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
        max_pool_size: int = 32,
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
        self.max_pool_size = max_pool_size
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
        self._raw_bytes = isinstance(serde, PickleSerde)
        # memcached refuses keys over 250 bytes whatever check_keys says (and
        # drops the connection for a long one): never send one.
        self._key_limit = (
            min(self.server_max_key_length, MAX_KEY_LENGTH)
            if (check_keys and self.server_max_key_length)
            else MAX_KEY_LENGTH
        )
        self._get_requests: Dict[str, Tuple[bytes, bytes]] = {}
        self._value_limit = self.server_max_value_length or 1 << 62
        self._local = threading.local()
        self.servers: List[Host] = []
        self.set_servers(servers)

    # ------------------------------------------------------------------
    # servers
    # ------------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "Client":
        """A client configured by a URL, e.g. ``memcached://h1:11211,h2:11211?hashing=ketama&timeout=1``.

        Every query parameter is in :data:`sqla_memcache.config.URL_PARAMETERS`
        (and docs/configuration.md); *kwargs* are further constructor arguments.
        Raises ``ValueError`` for an unknown, repeated or invalid parameter, or
        an argument set both in the URL and in *kwargs*.
        """
        servers, from_url = config.parse_url(url)
        return cls(servers, **config.merge_arguments(from_url, kwargs))

    def set_servers(self, servers: Sequence[ServerSpec]) -> None:
        """Replace the server list (open connections to the old ones are closed).

        A single ``"host:port"`` string is one server; ``TypeError``/``ValueError``
        for anything that is not a server list (see :func:`sqla_memcache.config.server_list`).
        """
        servers = config.server_list(servers)
        for old in getattr(self, "servers", ()):
            old.close_idle()
        self.servers = [
            Host(
                s,
                dead_retry=self.dead_retry,
                socket_timeout=self.socket_timeout,
                flush_on_reconnect=self.flush_on_reconnect,
                ssl_context=self.ssl_context,
                debuglog=self.debuglog,
                max_idle=self.max_pool_size,
                deadline=self.deadline,
            )
            for s in servers
        ]
        self._selector = make_selector(
            self.hashing, [(h, h.weight) for h in self.servers], lambda h: h.label, self._SERVER_RETRIES
        )
        #: With one server there is nothing to hash: every key goes there.
        self._single: Optional[Host] = self.servers[0] if len(self.servers) == 1 else None

    def without_failover(self) -> "Client":
        """A view of this client (same servers and connection pools) that never
        moves a key off its home server: while that server is dead the key is
        unavailable (reads miss, writes fail) instead of landing elsewhere.

        The ORM cache uses it for version counters, where a stand-in server's
        counter would let entries invalidated meanwhile match again once the
        home server returns with its old counter.
        """
        view = copy.copy(self)
        view._selector = self._selector.home_only()
        return view

    @property
    def buckets(self) -> List[Host]:
        """python-memcached's weight-expanded server list (modula hashing)."""
        return list(getattr(self._selector, "buckets", self.servers))

    def forget_dead_hosts(self) -> None:
        """Make every server eligible again right now."""
        for s in self.servers:
            s.deaduntil = 0.0

    def disconnect_all(self) -> None:
        """Close every idle connection (threads mid-command keep theirs)."""
        for s in self.servers:
            s.close_idle()

    def quit_all(self) -> None:
        """Send ``quit`` on every idle connection, then close them."""
        for s in self.servers:
            while True:
                try:
                    conn = s._idle.pop()
                except IndexError:
                    break
                try:
                    conn.send(b"quit\r\n")
                except OSError:  # closing anyway
                    pass
                conn.close()

    def debuglog(self, str: str) -> None:  # noqa: A002 - python-memcached's parameter name
        """Write ``MemCached: <str>`` to stderr when ``debug`` is set (python-memcached's format)."""
        if self.debug:
            sys.stderr.write("MemCached: %s\n" % (str,))

    # ------------------------------------------------------------------
    # CAS bookkeeping (per thread, as python-memcached's threading.local client)
    # ------------------------------------------------------------------
    @property
    def cas_ids(self) -> Dict[Any, int]:
        try:
            return self._local.cas_ids
        except AttributeError:
            self._local.cas_ids = {}
            return self._local.cas_ids

    def reset_cas(self) -> None:
        """Forget the CAS ids remembered by ``gets`` (with ``cache_cas=True``)."""
        self._local.cas_ids = {}

    # ------------------------------------------------------------------
    # keys
    # ------------------------------------------------------------------
    def check_key(self, key: Any, key_extra_len: int = 0) -> None:
        """Raise a ``MemcachedKeyError`` subclass if *key* is not a valid key."""
        if isinstance(key, tuple):
            key = key[1]
        if key is None:
            raise errors.MemcachedKeyNoneError("Key is None")
        if not isinstance(key, bytes):  # str too: this checks encoded keys, as python-memcached's
            raise errors.MemcachedKeyTypeError("Key must be a binary string")
        if self.server_max_key_length != 0 and len(key) + key_extra_len > self.server_max_key_length:
            raise errors.MemcachedKeyLengthError("Key length is > %s" % self.server_max_key_length)
        if not _VALID_KEY.match(key):
            raise errors.MemcachedKeyCharacterError("Control/space characters not allowed (key=%r)" % (key,))

    def _encode_key(self, key: Any) -> Tuple[Any, bytes]:
        """(what the server hash uses, the key bytes on the wire); validates."""
        if self.key_encoder is not None:
            key = self.key_encoder(key)
        cls = key.__class__
        try:
            if cls is str:
                wire = key.encode("utf-8")
                hashkey: Any = wire
            elif cls is bytes:
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
        # Checked even with check_keys=False: memcached can never take a longer
        # key, and a space or \r\n would inject a command.
        if len(wire) > self._key_limit:
            raise errors.MemcachedKeyLengthError("Key length is > %s" % self._key_limit)
        if not _VALID_KEY.match(wire):
            raise errors.MemcachedKeyCharacterError("Control/space characters not allowed (key=%r)" % (wire,))
        return hashkey, wire

    def _server(self, hashkey: Any) -> Optional[Host]:
        return self._selector.get_node(hashkey, Host.usable)

    # ------------------------------------------------------------------
    # failure policy
    # ------------------------------------------------------------------
    def _fail(self, exc: Exception, result: Any) -> Any:
        if self.strict:
            raise exc
        return result

    def _no_server(self, key: Any, result: Any) -> Any:
        if self.strict:
            raise ServerDeadError("no live memcached server for key %r" % (key,))
        return result

    def _exchange(
        self,
        host: Host,
        data: Optional[bytes],
        parse: Optional[Callable[[protocol.ReplyBuffer], Any]],
        conn: Optional[Connection] = None,
        deadline: Optional[float] = None,
    ) -> Any:
        """Send one command and parse its reply on a pooled connection of *host*,
        all by *deadline* (default: the host's, from now).

        Raises typed errors: a connection fault closes the connection and
        marks the host dead (:class:`ConnectionLostError`,
        :class:`ProtocolError`); an error reply (``SERVER_ERROR``...) closes
        the connection only.  A connection goes back to the pool only after
        its reply was read completely.  With *conn* (already taken from the
        pool, request already sent when *data* is None) it continues there.
        """
        if deadline is None:
            deadline = host.deadline()
        if conn is None:
            conn = host.acquire(deadline)
            if conn is None:
                raise ServerDeadError("memcached %s is dead" % host.label)
        try:
            if data is not None:
                conn.send(data, deadline)
            reply = conn.read(parse, deadline) if parse is not None else None
        except _CONNECTION_FAULTS as exc:
            raise _connection_fault(host, conn, exc) from exc
        except MemcacheError as exc:
            conn.close()
            self.debuglog("%s: %s" % (host, exc))
            log.info("memcached %s answered an error: %s", host.label, exc)
            raise
        except BaseException:
            conn.close()
            raise
        host.release(conn)
        return reply

    def _run(self, host: Host, data: bytes, parse: Optional[Callable[[protocol.ReplyBuffer], Any]], failure: Any) -> Any:
        """:meth:`_exchange` under the failure policy: *failure* or raise."""
        try:
            return self._exchange(host, data, parse)
        except MemcacheError as exc:
            return self._fail(exc, failure)

    # ------------------------------------------------------------------
    # values
    # ------------------------------------------------------------------
    def _encode_value(self, wire: bytes, val: Any, min_compress_len: int) -> Tuple[bytes, int]:
        if is_integer(val):
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

    def _decode_value(self, item: protocol.ItemTuple) -> Any:
        key, flags, data = item[0], item[1], item[2]
        if flags == FLAG_INTEGER:
            return decode_integer(data)  # a counter: digits or nothing, whatever the serde
        if self._signer is not None:
            # No byte of an unverified value is decompressed or unpickled.
            data, flags = self._signer.verify(key, data, flags)
        if flags & FLAG_COMPRESSED:
            data, flags = decompress(data, flags, self.decompressor)
        return self._deserialize(key, data, flags)

    # ------------------------------------------------------------------
    # storage commands
    # ------------------------------------------------------------------
    def set(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store unconditionally.  True when stored; False/0 on failure."""
        # Hot path: one server, a remembered str key, bytes/str value, pooled
        # connection, reply checked with one comparison.
        host = self._single
        if host is not None and not noreply and host._idle and key.__class__ is str:
            cls = val.__class__
            known = self._get_requests.get(key)
            if known is None and self.key_encoder is None:
                known = self._remember_key(key)
            if known is not None and self._raw_bytes and (cls is bytes or cls is str):
                data, flags = (val, 0) if cls is bytes else (val.encode("utf-8"), FLAG_TEXT)
                if len(data) <= self._value_limit and not (min_compress_len and len(data) > min_compress_len):
                    return self._set_pooled(host, known[0], data, flags, time)
        return self._store(b"set", key, val, time, min_compress_len, noreply)

    def _remember_key(self, key: str) -> Tuple[bytes, bytes]:
        """Validate a str key once and remember ``(wire key, get request)``.

        The memo is bounded (cleared when full): a dict hit is cheaper than
        encoding and checking the key again.  Raises the key errors.
        """
        try:
            wire = key.encode("utf-8")
        except UnicodeEncodeError:
            wire = b""  # not encodable: _encode_key raises the key error
        if len(wire) > self._key_limit or not _VALID_KEY.match(wire):
            self._encode_key(key)  # raises the precise key error
        known = (wire, b"get " + wire + b"\r\n")
        if len(self._get_requests) >= _KEY_MEMO_SIZE:
            self._get_requests.clear()
        self._get_requests[key] = known
        return known

    def _set_pooled(self, host: Host, wire: bytes, data: bytes, flags: int, time: int) -> Any:
        command = protocol.storage_command(b"set", wire, flags, time, data)
        deadline = host.deadline()
        try:
            sent = self._send_pooled(host, command, deadline)
            if sent is None:
                line = self._exchange(host, command, read_store_line, None, deadline)
            elif sent[1] == b"STORED\r\n":
                host.release(sent[0])
                return True
            else:
                sent[0].rb.feed(sent[1])
                line = self._exchange(host, None, read_store_line, sent[0], deadline)
        except MemcacheError as exc:
            return self._fail(exc, 0)
        return self._store_reply(host, b"set", line)

    def _send_pooled(self, host: Host, request: bytes, deadline: Optional[float]) -> Optional[Tuple[Connection, bytes]]:
        """Send *request* on an idle connection with nothing buffered and return
        it with the first chunk of the reply, for the one-key shortcuts.

        None when no such connection is idle (the caller takes the general
        path).  A connection fault or EOF raises as in :meth:`_exchange`.
        """
        try:
            conn = host._idle.pop()
        except IndexError:
            return None
        if not conn.rb.is_empty():
            host.release(conn)
            return None
        try:
            conn.send(request, deadline)
            chunk = conn.recv(deadline)
        except _CONNECTION_FAULTS as exc:
            raise _connection_fault(host, conn, exc) from exc
        return conn, chunk

    def add(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store only if the key is absent.  True when stored, False if it exists."""
        return self._store(b"add", key, val, time, min_compress_len, noreply)

    def replace(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store only if the key exists.  True when stored, False if absent."""
        return self._store(b"replace", key, val, time, min_compress_len, noreply)

    def append(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Append raw data to an existing value (flags unchanged).  True/False."""
        return self._store(b"append", key, val, time, min_compress_len, noreply)

    def prepend(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Prepend raw data to an existing value.  True/False."""
        return self._store(b"prepend", key, val, time, min_compress_len, noreply)

    def cas(
        self,
        key: Key,
        val: Any,
        time: int = 0,
        min_compress_len: int = 0,
        noreply: bool = False,
        cas_id: Optional[int] = None,
    ) -> Any:
        """Check-and-set.

        With *cas_id* (from :meth:`gets_cas`), store only if the item is
        unchanged: True when stored, False on ``EXISTS`` or ``NOT_FOUND``.
        Without it, python-memcached's rule: use the id remembered by
        ``gets`` when ``cache_cas`` is on, else behave like :meth:`set`.
        """
        if cas_id is None:
            cas_id = self.cas_ids.get(self._encode_key(key)[1]) if self.cache_cas else None
            if cas_id is None:
                return self._store(b"set", key, val, time, min_compress_len, noreply)
        return self._store(b"cas", key, val, time, min_compress_len, noreply, cas_id)

    def _store(
        self,
        cmd: bytes,
        key: Key,
        val: Any,
        time: int,
        min_compress_len: int,
        noreply: bool,
        cas_id: Optional[int] = None,
    ) -> Any:
        hashkey, wire = self._encode_key(key)
        host = self._selector.get_node(hashkey, Host.usable)
        if host is None:
            return self._no_server(key, 0)
        try:
            data, flags = self._encode_value(wire, val, min_compress_len)
        except (ValueTooLargeError, SerializationError) as exc:
            self.debuglog(str(exc))
            log.info("not stored: %s", exc)
            return self._fail(exc, 0)
        command = protocol.storage_command(cmd, wire, flags, time, data, cas_id, noreply)
        if noreply:
            return self._run(host, command, None, 0) is None
        return self._store_reply(host, cmd, self._run(host, command, read_store_line, None))

    def _store_reply(self, host: Host, cmd: bytes, line: Optional[bytes]) -> Any:
        """What a storage command returns for its reply *line* (None: the exchange failed)."""
        if line is None:
            return 0
        if line == b"STORED":
            return True
        if line.startswith(protocol.SERVER_ERROR):
            # e.g. "object too large for cache": memcached swallowed the data,
            # so the connection is still in step.  python-memcached's debug line:
            self.debuglog("while expecting 'STORED', got unexpected response '%s'" % line.decode("utf-8", "replace"))
            try:
                protocol.raise_for_error_line(line)
            except MemcacheError as exc:
                return self._fail(exc, False)
        if line not in protocol.STORE_REPLIES:
            return self._fail(ProtocolError("unexpected reply to %s: %r" % (cmd.decode(), line[:100])), False)
        return False

    def set_multi(
        self,
        mapping: Mapping[Any, Any],
        time: int = 0,
        key_prefix: Union[str, bytes] = "",
        min_compress_len: int = 0,
        noreply: bool = False,
    ) -> List[Any]:
        """Store many keys, one write per server.  Returns the keys NOT stored."""
        failed: List[Any] = []
        batches: Dict[Host, Tuple[List[bytes], List[Any]]] = {}
        by_host = self._map_keys(list(mapping), _prefix_bytes(key_prefix))
        placed = 0
        for host, wires in by_host.items():
            cmds: List[bytes] = []
            origs: List[Any] = []
            for wire, orig in wires.items():
                placed += 1
                try:
                    data, flags = self._encode_value(wire, mapping[orig], min_compress_len)
                except (ValueTooLargeError, SerializationError) as exc:
                    self.debuglog(str(exc))
                    if self.strict:
                        raise
                    failed.append(orig)
                    continue
                cmds.append(protocol.storage_command(b"set", wire, flags, time, data, None, noreply))
                origs.append(orig)
            if cmds:
                batches[host] = (cmds, origs)
        if placed < len(mapping):  # keys with no live server (_map_keys raised if strict)
            placed_keys = {o for wires in by_host.values() for o in wires.values()}
            failed.extend(o for o in mapping if o not in placed_keys)
        for host, (cmds, origs) in batches.items():
            if noreply:
                if self._run(host, b"".join(cmds), None, False) is False:
                    failed.extend(origs)
                continue
            lines = self._run(host, b"".join(cmds), store_lines_reply(len(cmds)), None)
            if lines is None:
                failed.extend(origs)
            elif lines is not ALL_STORED:
                failed.extend(o for o, line in zip(origs, lines) if line != b"STORED")
        return failed

    # ------------------------------------------------------------------
    # retrieval
    # ------------------------------------------------------------------
    def get(self, key: Key, default: Any = None) -> Any:
        """The value stored at *key*, or *default* on a miss or failure."""
        # Hot path: a str key on a healthy pooled connection.
        known = self._get_requests.get(key) if key.__class__ is str else None
        if known is None and key.__class__ is str and self.key_encoder is None:
            known = self._remember_key(key)
        if known is not None:
            wire, request = known
            hashkey: Any = wire
        else:
            hashkey, wire = self._encode_key(key)
            request = b"get " + wire + b"\r\n"
        host = self._single
        if host is None or not (host._idle or host.usable()):
            host = self._selector.get_node(hashkey, Host.usable)
            if host is None:
                return self._no_server(key, default)
        try:
            items = self._exchange(host, request, RetrievalReply((wire,), self.server_max_value_length))
        except MemcacheError as exc:
            return self._fail(exc, default)
        if not items:
            return default
        return self._decode_or_miss(items[0], default)

    def gets(self, key: Key) -> Any:
        """Like :meth:`get`, remembering the CAS id for :meth:`cas` when ``cache_cas`` is on."""
        value, cas_id, wire = self._gets(key, None)
        if cas_id is not None and self.cache_cas:
            # python-memcached keys the remembered ids by the encoded key.
            self.cas_ids[wire] = cas_id
        return value

    def gets_cas(self, key: Key, default: Any = None) -> Tuple[Any, Optional[int]]:
        """``(value, cas_id)``; ``(default, None)`` on a miss.  Pass the id to ``cas(..., cas_id=)``."""
        value, cas_id, _ = self._gets(key, default)
        return value, cas_id

    def _gets(self, key: Key, default: Any) -> Tuple[Any, Optional[int], bytes]:
        hashkey, wire = self._encode_key(key)
        host = self._selector.get_node(hashkey, Host.usable)
        if host is None:
            return self._no_server(key, default), None, wire
        parse = RetrievalReply((wire,), self.server_max_value_length)
        items = self._run(host, b"gets " + wire + b"\r\n", parse, None)
        if not items:
            return default, None, wire
        return self._decode_or_miss(items[0], default), items[0][3], wire

    def _decode_or_miss(self, item: Any, default: Any) -> Any:
        if item[1] == 0 and self._raw_bytes:
            return item[2]  # bytes as stored: no serde call
        try:
            return self._decode_value(item)
        except SerializationError as exc:
            self.debuglog("could not decode value of %r: %s" % (item[0], exc))
            log.warning("could not decode value of %r: %s", item[0], exc)
            return self._fail(exc, default)

    def get_multi(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> Dict[Any, Any]:
        """``{key: value}`` for the keys found; one request per server, sent before reading any."""
        return self._get_multi(keys, key_prefix, self._decode_value, self._raw_bytes)

    def get_counters(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> Dict[Any, int]:
        """``{key: int}`` for the keys holding a counter, read without the serde.

        Like :meth:`get_multi`, but a value is returned only when it is an
        integer as ``incr``/``decr`` see it (ASCII digits, flags 2 or 0); any
        other value -- a pickle, text, a signed object -- is a miss (a
        ``SerializationError`` with ``strict=True``) and is never decoded,
        so reading a counter cannot run code whoever wrote it.
        """
        return self._get_multi(keys, key_prefix, _decode_counter, False)

    def get_counter(self, key: Key, default: Any = None) -> Any:
        """The counter at *key* (see :meth:`get_counters`), or *default*."""
        return self.get_counters([key]).get(key, default)

    def _get_multi(
        self,
        keys: Iterable[Any],
        key_prefix: Union[str, bytes],
        decode: Callable[[protocol.ItemTuple], Any],
        raw_ok: bool,
    ) -> Dict[Any, Any]:
        """get_multi with *decode* for each item; *raw_ok*: flags 0 means the bytes as stored."""
        by_host = self._map_keys(keys, _prefix_bytes(key_prefix))
        result: Dict[Any, Any] = {}
        if not by_host:
            return result
        if self.key_encoder is not None:
            # python-memcached reports the encoded keys when a key_encoder is set.
            encode = self.key_encoder
            by_host = {h: {w: encode(o) for w, o in wires.items()} for h, wires in by_host.items()}
        sent: List[Tuple[Host, Connection, Dict[bytes, Any]]] = []
        # One deadline for the whole call: the requests go out first, so the
        # servers answer in parallel while the replies are read in turn.
        deadline = next(iter(by_host)).deadline()
        for host, wires in by_host.items():
            conn = host.acquire(deadline)
            if conn is None:
                self._no_server(host, None)
                continue
            try:
                conn.send(b"get " + b" ".join(wires) + b"\r\n", deadline)
            except _CONNECTION_FAULTS as exc:
                self._fail(_connection_fault(host, conn, exc), None)
                continue
            sent.append((host, conn, wires))
        for i, (host, conn, wires) in enumerate(sent):
            try:
                items = self._exchange(host, None, RetrievalReply(wires, self.server_max_value_length), conn, deadline)
            except MemcacheError:
                if not self.strict:
                    continue
                for _, other, _ in sent[i + 1:]:  # their replies are unread: not reusable
                    other.close()
                raise
            for item in items:
                orig = wires[item[0]]
                if item[1] == 0 and raw_ok:
                    result[orig] = item[2]
                    continue
                try:
                    result[orig] = decode(item)
                except SerializationError as exc:
                    self.debuglog("could not decode value of %r: %s" % (item[0], exc))
                    log.warning("could not decode value of %r: %s", item[0][:100], exc)
                    if self.strict:
                        raise
        return result

    def _map_keys(self, keys: Iterable[Any], prefix: bytes) -> Dict[Host, Dict[bytes, Any]]:
        """``{host: {wire key: caller's key}}``, validating every key.

        Fast path for the usual case (str keys, no key_encoder): encode all,
        validate the joined keys with one regex, skip hashing with one server.
        Anything unusual takes the per-key path, which raises the precise error.
        """
        keys = keys if isinstance(keys, (list, tuple)) else list(keys)
        if self.key_encoder is None and keys:
            try:
                wires = [prefix + k.encode("utf-8") for k in keys]
            except (AttributeError, TypeError, UnicodeEncodeError):
                wires = None
            if wires is not None and self._all_valid(wires):
                single = self._single
                if single is not None and (single._idle or single.usable()):
                    return {single: dict(zip(wires, keys))}
                by_host: Dict[Host, Dict[bytes, Any]] = {}
                get_node = self._selector.get_node
                usable = Host.usable
                for wire, orig in zip(wires, keys):
                    host = get_node(wire, usable)
                    if host is None:
                        self._no_server(orig, None)
                        continue
                    by_host.setdefault(host, {})[wire] = orig
                return by_host
        by_host = {}
        for orig in keys:
            hashkey, wire = self._prefixed(orig, prefix)
            host = self._selector.get_node(hashkey, Host.usable)
            if host is None:
                self._no_server(orig, None)
                continue
            by_host.setdefault(host, {})[wire] = orig
        return by_host

    def _all_valid(self, wires: List[bytes]) -> bool:
        """True when every key is non-empty, within the length limit and free
        of forbidden bytes (checked on the space-joined keys in one pass)."""
        joined = b" ".join(wires)
        return (
            _BAD_EXCEPT_SPACE.search(joined) is None
            and joined.count(b" ") == len(wires) - 1
            and all(wires)
            and max(map(len, wires)) <= self._key_limit
        )

    def _prefixed(self, orig: Any, prefix: bytes) -> Tuple[Any, bytes]:
        if not prefix:
            return self._encode_key(orig)
        try:
            if isinstance(orig, tuple):
                if len(orig) != 2:
                    raise errors.MemcachedKeyTypeError("a tuple key must be (int hash value, key), got %r" % (orig,))
                k = orig[1].encode("utf-8") if isinstance(orig[1], str) else orig[1]
                return self._encode_key((orig[0], prefix + k))
            k = orig.encode("utf-8") if isinstance(orig, str) else orig
            if not isinstance(k, bytes):
                self.check_key(k)
            return self._encode_key(prefix + k)
        except UnicodeEncodeError as exc:
            raise errors.MemcachedKeyCharacterError("key is not encodable as UTF-8: %r" % (orig,)) from exc
        except TypeError as exc:  # prefix + a part that is not bytes
            raise errors.MemcachedKeyTypeError("Key must be a binary string") from exc

    # ------------------------------------------------------------------
    # deletion, counters, touch
    # ------------------------------------------------------------------
    def delete(self, key: Key, noreply: bool = False) -> int:
        """Delete *key*: 1 if it was deleted, 0 if absent or on failure (python-memcached)."""
        hashkey, wire = self._encode_key(key)
        host = self._selector.get_node(hashkey, Host.usable)
        if host is None:
            return self._no_server(key, 0)
        if noreply:
            return 1 if self._run(host, protocol.delete_command(wire, True), None, 0) is None else 0
        line = self._run(host, protocol.delete_command(wire), read_delete_line, None)
        if line == protocol.DELETED:
            return 1
        if line is not None:
            self.debuglog("while expecting 'DELETED', got unexpected response '%s'" % line.decode("utf-8", "replace"))
        return 0

    def delete_multi(
        self, keys: Iterable[Any], time: Optional[int] = None, key_prefix: Union[str, bytes] = "", noreply: bool = False
    ) -> int:
        """Delete many keys, one write per server.  1 if every server answered, else 0."""
        prefix = _prefix_bytes(key_prefix)
        batches: Dict[Host, List[bytes]] = {}
        ok = 1
        for orig in keys:
            hashkey, wire = self._prefixed(orig, prefix)
            host = self._selector.get_node(hashkey, Host.usable)
            if host is None:
                self._no_server(orig, 0)
                ok = 0
                continue
            cmd = b"delete " + wire + (b" %d" % time if time else b"")
            batches.setdefault(host, []).append(cmd + (b" noreply\r\n" if noreply else b"\r\n"))
        for host, cmds in batches.items():
            if noreply:
                if self._run(host, b"".join(cmds), None, False) is False:
                    ok = 0
                continue
            lines = self._run(host, b"".join(cmds), lines_reply(len(cmds), valid_delete_line), None)
            if lines is None:
                ok = 0
                continue
            for line in lines:
                if line != protocol.DELETED:
                    # python-memcached's debug line, also for NOT_FOUND (which still counts as success)
                    self.debuglog("while expecting 'DELETED', got unexpected response '%s'"
                                  % line.decode("utf-8", "replace"))
                    if line != protocol.NOT_FOUND:
                        ok = 0
        return ok

    def incr(self, key: Key, delta: int = 1, noreply: bool = False) -> Optional[int]:
        """Add *delta* to a decimal value; the new value, or None if absent or on failure."""
        return self._arith(b"incr", key, delta, noreply)

    def decr(self, key: Key, delta: int = 1, noreply: bool = False) -> Optional[int]:
        """Subtract *delta* (memcached stops at 0); the new value, or None."""
        return self._arith(b"decr", key, delta, noreply)

    def _arith(self, cmd: bytes, key: Key, delta: int, noreply: bool) -> Optional[int]:
        delta = int(delta)
        if delta < 0:
            raise ValueError("%s delta must be >= 0, got %d" % (cmd.decode(), delta))
        hashkey, wire = self._encode_key(key)
        host = self._selector.get_node(hashkey, Host.usable)
        if host is None:
            return self._no_server(key, None)
        if noreply:
            self._run(host, protocol.arith_command(cmd, wire, delta, True), None, None)
            return None
        return self._arith_reply(host, self._run(host, protocol.arith_command(cmd, wire, delta), read_arith_line, None))

    def _arith_reply(self, host: Any, line: Optional[bytes]) -> Optional[int]:
        """What ``incr``/``decr`` return for the reply *line* (None: the exchange failed)."""
        if line is None:
            return None
        try:
            if line.startswith((protocol.CLIENT_ERROR, protocol.SERVER_ERROR)):
                # e.g. "cannot increment or decrement non-numeric value": one
                # line, the stream is in step and the connection was kept.
                self.debuglog("%s: %s" % (host, line.decode("utf-8", "replace")))
                protocol.raise_for_error_line(line)
            return protocol.parse_arith_reply(line)
        except MemcacheError as exc:
            return self._fail(exc, None)

    def touch(self, key: Key, time: int = 0, noreply: bool = False) -> int:
        """Reset *key*'s expiry: 1 if touched, 0 if absent or on failure."""
        hashkey, wire = self._encode_key(key)
        host = self._selector.get_node(hashkey, Host.usable)
        if host is None:
            return self._no_server(key, 0)
        if noreply:
            return 1 if self._run(host, protocol.touch_command(wire, time, True), None, 0) is None else 0
        line = self._run(host, protocol.touch_command(wire, time), read_touch_line, None)
        if line == protocol.TOUCHED:
            return 1
        if line is not None:
            self.debuglog("while expecting 'TOUCHED', got unexpected response '%s'" % line.decode("utf-8", "replace"))
        return 0

    # ------------------------------------------------------------------
    # whole-server commands
    # ------------------------------------------------------------------
    def _each_server(
        self, command: bytes, parser: Callable[[], Callable[[protocol.ReplyBuffer], Any]]
    ) -> List[Tuple[Host, Any]]:
        """*command* on every live server, each reply read by a new ``parser()``."""
        out = []
        for host in self.servers:
            if not host.usable():
                if self.strict:
                    raise ServerDeadError("memcached %s is dead" % host.label)
                continue
            reply = self._run(host, command, parser(), None)
            if reply is not None:
                out.append((host, reply))
        return out

    def flush_all(self) -> None:
        """Invalidate every item on every server."""
        self._each_server(b"flush_all\r\n", lambda: parse_line)

    def get_stats(self, stat_args: Optional[str] = None) -> List[Tuple[str, Dict[str, str]]]:
        """``[(server name, {stat: value})]`` for ``stats [stat_args]`` on each live server."""
        cmd = protocol.simple_command("stats", stat_args) if stat_args else b"stats\r\n"
        return [(host.stats_name(), stats) for host, stats in self._each_server(cmd, protocol.StatsReply)]

    def get_slabs(self) -> List[Tuple[str, Dict[str, Dict[str, str]]]]:
        """``[(server name, {slab id: {stat: value}})]`` from ``stats items``."""
        out = []
        for name, flat in self.get_stats("items"):
            slabs: Dict[str, Dict[str, str]] = {}
            for stat, value in flat.items():
                parts = stat.split(":")
                if len(parts) == 3:  # items:<slab>:<name>
                    slabs.setdefault(parts[1], {})[parts[2]] = value
            out.append((name, slabs))
        return out

    def raw_command(
        self,
        server: Union[int, str],
        command: bytes,
        terminator: bytes = b"END",
        *,
        max_bytes: int = protocol.MAX_RAW_REPLY,
        deadline: Optional[float] = None,
    ) -> bytes:
        """Send *command* to one server and return its raw reply up to *terminator* (inclusive).

        *server* is an index into :attr:`servers` or a ``host:port`` label.
        For diagnostics such as ``lru_crawler metadump all``.  A reply longer
        than *max_bytes* raises :class:`~sqla_memcache.errors.ProtocolError`;
        *deadline* (seconds) replaces the client's for this call, for a
        metadump of a large cache.  Error replies raise
        :class:`~sqla_memcache.errors.ClientError` / ``ServerError`` and
        connection faults raise :class:`~sqla_memcache.errors.MemcacheError`
        subclasses, whatever ``strict`` says: there is no quiet result.
        """
        host = self.servers[server] if isinstance(server, int) else next(h for h in self.servers if h.label == server)
        if not command.endswith(b"\r\n"):
            command += b"\r\n"
        at = None if deadline is None else _monotonic() + deadline
        return self._exchange(host, command, protocol.UntilReply(terminator, max_bytes), None, at)

    def __repr__(self) -> str:
        return "<sqla_memcache.Client %s>" % ", ".join(h.label for h in self.servers)


def _decode_counter(item: protocol.ItemTuple) -> int:
    """A counter's value; SerializationError for anything ``incr`` could not count."""
    if item[1] not in (0, FLAG_INTEGER):
        raise SerializationError("not a counter: flags %d" % item[1])
    return decode_integer(item[2])


def _prefix_bytes(prefix: Union[str, bytes]) -> bytes:
    return prefix.encode("utf-8") if isinstance(prefix, str) else (prefix or b"")


def _connection_fault(host: Host, conn: Connection, exc: BaseException) -> MemcacheError:
    """After a connection fault: the stream position is unknown, so close the
    connection, mark the host dead, and return the typed error to raise."""
    conn.close()
    host.mark_dead(_fault_text(exc))
    return _as_lost(exc)


def _fault_text(exc: BaseException) -> str:
    if isinstance(exc, (TimeoutError, BlockingIOError)):
        return "timed out"
    return str(exc) or type(exc).__name__


def _as_lost(exc: BaseException) -> MemcacheError:
    if isinstance(exc, MemcacheError):
        return exc
    err = ConnectionLostError(_fault_text(exc))
    err.__cause__ = exc
    return err
