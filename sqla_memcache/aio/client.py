"""``AsyncClient``: the :class:`~sqla_memcache.Client` API for asyncio, every call awaitable.

Same wire format, flags, serdes, key checks, hashing (modula and ketama),
dead-host handling, TLS and strict mode as :class:`~sqla_memcache.Client`, so
sync and async processes share entries.  Nothing of that is re-implemented
here: commands are built by :mod:`sqla_memcache.protocol`, servers chosen by
:mod:`sqla_memcache.hashing`, and keys and values encoded and decoded by a
server-less :class:`~sqla_memcache.Client` configured with the same arguments
(its ``_encode_key`` / ``_encode_value`` / ``_decode_or_miss`` and reply
parsers are the pure half of the blocking client).  What is asyncio-specific
is the transport (:mod:`sqla_memcache.aio.connection`) and the per-call
deadline.

Concurrency: any number of tasks may share one client.  Each command holds a
pooled connection for its whole exchange (at most ``pool_size`` per server;
more tasks wait for a free one), and a task cancelled or timed out
mid-command closes its connection instead of returning it, so a reply is
never read by another task.  ``deadline`` (default ``socket_timeout``)
bounds each call with a server as a whole (waiting for a pooled connection,
connecting, sending and the complete reply); a call that overruns it marks
the server dead for ``dead_retry`` seconds, as the blocking client does.

Differences from :class:`~sqla_memcache.Client`: ``cas_ids`` (``cache_cas``)
are per client, not per thread or task; ``disconnect_all`` closes idle
connections only (call ``await client.close()`` at shutdown); a client's
connections belong to the event loop that opened them (a client used from a
new loop drops the old loop's idle connections).
"""
from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import ssl
import sys
import zlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .. import config, errors, protocol
from ..client import Client, Key, ServerSpec, _as_lost, _decode_counter, _fault_text, _prefix_bytes
from ..protocol import ALL_STORED as _ALL_STORED
from ..protocol import lines_reply as _lines_parser
from ..protocol import parse_line as _parse_line
from ..protocol import read_arith_line as _parse_arith_line
from ..protocol import read_delete_line as _parse_delete_line
from ..protocol import read_store_line as _parse_store_line
from ..protocol import read_touch_line as _parse_touch_line
from ..protocol import store_lines_reply as _store_lines_parser
from ..protocol import valid_delete_line as _valid_delete_line
from ..errors import ConnectionLostError, MemcacheError, ProtocolError, SerializationError, ServerDeadError
from ..errors import ValueTooLargeError
from ..hashing import make_selector
from ..protocol import RetrievalReply
from ..serde import Serde
from .connection import AsyncConnection, AsyncHost, ConnectFailed, Parser

log = logging.getLogger(__name__)

#: Faults after which a connection's stream position is unknown: close it, mark the host dead.
_CONNECTION_FAULTS = (OSError, ConnectionLostError, ProtocolError)

if sys.version_info >= (3, 11):
    _deadline = asyncio.timeout
else:  # pragma: no cover - exercised on Python 3.9/3.10 only

    class _deadline:  # noqa: N801 - stands in for asyncio.timeout
        """``asyncio.timeout`` for Python < 3.11: cancel the task at the deadline, raise TimeoutError."""

        def __init__(self, delay: Optional[float]) -> None:
            self._delay = delay
            self._handle: Any = None
            self._expired = False

        async def __aenter__(self) -> "_deadline":
            if self._delay is not None:
                task = asyncio.current_task()
                self._handle = asyncio.get_running_loop().call_later(self._delay, self._expire, task)
            return self

        def _expire(self, task: Any) -> None:
            self._expired = True
            task.cancel()

        async def __aexit__(self, et: Any, exc: Any, tb: Any) -> None:
            if self._handle is not None:
                self._handle.cancel()
            if self._expired and et is asyncio.CancelledError:
                raise asyncio.TimeoutError


class AsyncClient:
    """An asyncio memcached client with :class:`~sqla_memcache.Client`'s methods, awaitable.

    Takes :class:`~sqla_memcache.Client`'s arguments (``servers``,
    ``socket_timeout``, ``dead_retry``, ``hashing``, ``serde``,
    ``secret_key``, ``ssl_context``, ``strict``, ``check_keys``...), plus:

    :param pool_size: most connections open to one server at once; further
        concurrent calls wait (within their deadline) for a free one.
    :param deadline: seconds one call may take with one server -- waiting for
        a pooled connection, connecting, sending and the whole reply (default:
        ``socket_timeout``), as :class:`~sqla_memcache.Client`'s ``deadline``.

    Use it as ``async with AsyncClient([...]) as mc:`` or call
    :meth:`close` at shutdown.
    """

    MemcachedKeyError = errors.MemcachedKeyError
    MemcachedKeyLengthError = errors.MemcachedKeyLengthError
    MemcachedKeyCharacterError = errors.MemcachedKeyCharacterError
    MemcachedKeyNoneError = errors.MemcachedKeyNoneError
    MemcachedKeyTypeError = errors.MemcachedKeyTypeError

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
        dead_retry: float = 30,
        socket_timeout: Optional[float] = 3,
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
        pool_size: int = 16,
        deadline: Optional[float] = None,
    ) -> None:
        #: The key checks, value encoding, decoding and failure policy: a blocking
        #: client's, configured identically, that never opens a connection.
        self._codec = Client(
            [], debug, pickleProtocol, pickler, unpickler, compressor, decompressor, pload, pid,
            server_max_key_length, server_max_value_length, dead_retry, socket_timeout, cache_cas,
            flush_on_reconnect, check_keys, key_encoder, hashing=hashing, serde=serde, secret_key=secret_key,
            ssl_context=ssl_context, strict=strict, deadline=deadline,
        )
        self._args = (servers, dict(
            debug=debug, pickleProtocol=pickleProtocol, pickler=pickler, unpickler=unpickler, compressor=compressor,
            decompressor=decompressor, pload=pload, pid=pid, server_max_key_length=server_max_key_length,
            server_max_value_length=server_max_value_length, dead_retry=dead_retry, socket_timeout=socket_timeout,
            cache_cas=cache_cas, flush_on_reconnect=flush_on_reconnect, check_keys=check_keys,
            key_encoder=key_encoder, hashing=hashing, serde=serde, secret_key=secret_key, ssl_context=ssl_context,
            strict=strict, deadline=deadline,
        ))
        self.pool_size = pool_size
        self.socket_timeout = socket_timeout
        #: Seconds one call may take with one server, pool wait included (None: ``socket_timeout``).
        self.deadline = deadline
        self.dead_retry = dead_retry
        self.hashing = hashing
        self.cas_ids: Dict[bytes, int] = {}
        self.servers: List[AsyncHost] = []
        self.set_servers(servers)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> "AsyncClient":
        """A client configured by a URL, as :meth:`sqla_memcache.Client.from_url`
        (e.g. ``memcached://h1:11211,h2:11211?hashing=ketama&timeout=1``);
        ``max_pool_size`` there is this client's ``pool_size``."""
        servers, from_url = config.parse_url(url)
        arguments = config.merge_arguments(from_url, kwargs)
        if "max_pool_size" in arguments:
            arguments.setdefault("pool_size", arguments.pop("max_pool_size"))
        return cls(servers, **arguments)

    # -- configuration shared with the codec ----------------------------
    @property
    def strict(self) -> bool:
        return self._codec.strict

    @strict.setter
    def strict(self, value: bool) -> None:
        self._codec.strict = value

    @property
    def debug(self) -> int:
        return self._codec.debug

    @debug.setter
    def debug(self, value: int) -> None:
        self._codec.debug = value

    @property
    def serde(self) -> Serde:
        return self._codec.serde

    @property
    def server_max_key_length(self) -> int:
        return self._codec.server_max_key_length

    @property
    def server_max_value_length(self) -> int:
        return self._codec.server_max_value_length

    def debuglog(self, text: str) -> None:
        """python-memcached's ``MemCached: ...`` line on stderr when ``debug`` is set."""
        self._codec.debuglog(text)

    def check_key(self, key: Any, key_extra_len: int = 0) -> None:
        """Raise a ``MemcachedKeyError`` subclass if *key* is not a valid key (as :meth:`Client.check_key`)."""
        self._codec.check_key(key, key_extra_len)

    def sync_client(self, **overrides: Any) -> Client:
        """A blocking :class:`~sqla_memcache.Client` on the same servers with the same settings."""
        servers, kwargs = self._args
        kwargs = dict(kwargs, **overrides)
        return Client(servers, **kwargs)

    # -- servers ------------------------------------------------------------
    def set_servers(self, servers: Sequence[ServerSpec]) -> None:
        """Replace the server list (idle connections to the old ones are closed).

        Accepts what :meth:`sqla_memcache.Client.set_servers` accepts (see
        :func:`sqla_memcache.config.server_list`).
        """
        servers = config.server_list(servers)
        self.disconnect_all()
        codec = self._codec
        self.servers = [
            AsyncHost(
                s,
                pool_size=self.pool_size,
                dead_retry=self.dead_retry,
                socket_timeout=self.socket_timeout,
                flush_on_reconnect=codec.flush_on_reconnect,
                ssl_context=codec.ssl_context,
                debuglog=codec.debuglog,
            )
            for s in servers
        ]
        self._args = (list(servers), self._args[1])
        self._selector = make_selector(
            self.hashing, [(h, h.weight) for h in self.servers], lambda h: h.label, Client._SERVER_RETRIES
        )
        #: With one server there is nothing to hash (unless a view disables failover: same answer).
        self._single: Optional[AsyncHost] = self.servers[0] if len(self.servers) == 1 else None

    def without_failover(self) -> "AsyncClient":
        """A view (same servers and pools) that never moves a key off its home server
        (see :meth:`sqla_memcache.Client.without_failover`)."""
        view = copy.copy(self)
        view._selector = self._selector.home_only()
        return view

    @property
    def buckets(self) -> List[AsyncHost]:
        """python-memcached's weight-expanded server list (modula hashing)."""
        return list(getattr(self._selector, "buckets", self.servers))

    def forget_dead_hosts(self) -> None:
        """Make every server eligible again right now."""
        for host in self.servers:
            host.deaduntil = 0.0

    def disconnect_all(self) -> None:
        """Close every idle connection (tasks mid-command keep theirs)."""
        for host in getattr(self, "servers", ()):
            host.close_idle()

    async def close(self) -> None:
        """Close every idle connection and let the transports finish closing."""
        self.disconnect_all()
        await asyncio.sleep(0)

    async def quit_all(self) -> None:
        """Send ``quit`` on every idle connection, then close them."""
        for host in self.servers:
            while host._idle:
                conn = host._idle.pop()
                if conn.reusable():
                    conn.send(b"quit\r\n")
                conn.close()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def reset_cas(self) -> None:
        """Forget the CAS ids remembered by ``gets`` (with ``cache_cas=True``)."""
        self.cas_ids = {}

    def __repr__(self) -> str:
        return "<sqla_memcache.AsyncClient %s>" % ", ".join(h.label for h in self.servers)

    # -- exchanges -------------------------------------------------------
    async def _exchange(self, host: AsyncHost, data: bytes, parse: Optional[Parser]) -> Any:
        """Send one command to *host* on a pooled connection and parse its reply.

        The whole exchange (pool wait, connect, send, reply) is bounded by
        ``socket_timeout``.  Raises typed errors like the blocking client: a
        connection fault or timeout closes the connection and marks the host
        dead (:class:`ConnectionLostError`, :class:`ProtocolError`); an error
        reply closes the connection only; :class:`ConnectFailed` when no
        connection could be opened (nothing was sent).  A cancelled task
        closes its connection and re-raises ``CancelledError``.
        """
        # An idle connection needs no waiting before the request: the deadline is then
        # a timer on the reply alone (cheaper than a timeout scope around the whole call).
        conn: Optional[AsyncConnection] = host.take_idle()
        timer = None
        try:
            if conn is None:
                async with _deadline(self._budget()):
                    conn = await host.take()
                    if parse is None:
                        conn.send(data)
                        reply = None
                    else:
                        reply = await conn.request(data, parse)
            elif parse is None:
                conn.send(data)
                reply = None
            else:
                waiter = conn.request(data, parse)
                budget = self.deadline if self.deadline is not None else self.socket_timeout
                if budget is not None:
                    loop = waiter.get_loop()
                    timer = loop.call_at(loop.time() + budget, _expire, waiter)
                reply = await waiter
        except ConnectFailed:
            raise
        except (TimeoutError, asyncio.TimeoutError) as exc:
            if conn is not None:
                host.discard(conn)
            host.mark_dead("timed out")
            raise ConnectionLostError("timed out after %ss" % self._budget()) from exc
        except _CONNECTION_FAULTS as exc:
            if conn is not None:
                host.discard(conn)
            host.mark_dead(_fault_text(exc))
            raise _as_lost(exc) from exc
        except MemcacheError as exc:
            if conn is not None:
                host.discard(conn)
            self.debuglog("%s: %s" % (host, exc))
            log.info("memcached %s answered an error: %s", host.label, exc)
            raise
        except BaseException:  # CancelledError above all: the reply may still come, on no one's connection
            if conn is not None:
                host.discard(conn)
            raise
        finally:
            if timer is not None:
                timer.cancel()
        host.give(conn)
        return reply

    def _budget(self) -> Optional[float]:
        return self.deadline if self.deadline is not None else self.socket_timeout

    async def _run(self, host: AsyncHost, data: bytes, parse: Optional[Parser], failure: Any) -> Any:
        """:meth:`_exchange` under the failure policy: *failure* or raise."""
        try:
            return await self._exchange(host, data, parse)
        except MemcacheError as exc:
            return self._codec._fail(exc, failure)

    async def _keyed(self, hashkey: Any, key: Any, data: bytes, parse: Optional[Parser], failure: Any) -> Tuple[Optional[AsyncHost], Any]:
        """Run a one-key command on the key's server: ``(host, reply)``.

        A server that cannot be connected to is marked dead and the key goes
        to the node selector's next choice, as the blocking client's
        ``usable()`` check does (never with :meth:`without_failover`).
        """
        single = self._single
        if single is not None and not single.deaduntil:
            # One server, alive (the common case): nothing to hash.
            try:
                return single, await self._exchange(single, data, parse)
            except ConnectFailed:
                pass
            except MemcacheError as exc:
                return single, self._codec._fail(exc, failure)
        get_node = self._selector.get_node
        for _ in range(len(self.servers)):
            host = get_node(hashkey, AsyncHost.usable)
            if host is None:
                break
            try:
                return host, await self._exchange(host, data, parse)
            except ConnectFailed:
                continue
            except MemcacheError as exc:
                return host, self._codec._fail(exc, failure)
        return None, self._codec._no_server(key, failure)

    def _wire(self, key: Any) -> Tuple[Any, bytes, bytes]:
        """(hash key, wire key, ``get`` request); validated, str keys memoised by the codec."""
        codec = self._codec
        if key.__class__ is str and codec.key_encoder is None:
            known = codec._get_requests.get(key) or codec._remember_key(key)
            return known[0], known[0], known[1]
        hashkey, wire = codec._encode_key(key)
        return hashkey, wire, b"get " + wire + b"\r\n"

    # -- storage -----------------------------------------------------------
    async def set(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store unconditionally.  True when stored; False/0 on failure."""
        return await self._store(b"set", key, val, time, min_compress_len, noreply)

    async def add(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store only if the key is absent.  True when stored, False if it exists."""
        return await self._store(b"add", key, val, time, min_compress_len, noreply)

    async def replace(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store only if the key exists.  True when stored, False if absent."""
        return await self._store(b"replace", key, val, time, min_compress_len, noreply)

    async def append(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Append raw data to an existing value (flags unchanged).  True/False."""
        return await self._store(b"append", key, val, time, min_compress_len, noreply)

    async def prepend(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Prepend raw data to an existing value.  True/False."""
        return await self._store(b"prepend", key, val, time, min_compress_len, noreply)

    async def cas(
        self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False,
        cas_id: Optional[int] = None,
    ) -> Any:
        """Check-and-set, as :meth:`sqla_memcache.Client.cas`."""
        if cas_id is None:
            cas_id = self.cas_ids.get(self._codec._encode_key(key)[1]) if self._codec.cache_cas else None
            if cas_id is None:
                return await self._store(b"set", key, val, time, min_compress_len, noreply)
        return await self._store(b"cas", key, val, time, min_compress_len, noreply, cas_id)

    async def _store(
        self, cmd: bytes, key: Key, val: Any, time: int, min_compress_len: int, noreply: bool,
        cas_id: Optional[int] = None,
    ) -> Any:
        codec = self._codec
        hashkey, wire = codec._encode_key(key)
        try:
            data, flags = codec._encode_value(wire, val, min_compress_len)
        except (ValueTooLargeError, SerializationError) as exc:
            codec.debuglog(str(exc))
            log.info("not stored: %s", exc)
            return codec._fail(exc, 0)
        command = protocol.storage_command(cmd, wire, flags, time, data, cas_id, noreply)
        if noreply:
            return (await self._keyed(hashkey, key, command, None, 0))[1] is None
        host, line = await self._keyed(hashkey, key, command, _parse_store_line, None)
        return codec._store_reply(host, cmd, line)  # type: ignore[arg-type]

    async def set_multi(
        self, mapping: Mapping[Any, Any], time: int = 0, key_prefix: Union[str, bytes] = "",
        min_compress_len: int = 0, noreply: bool = False,
    ) -> List[Any]:
        """Store many keys, one pipelined write per server, servers in parallel.  Returns the keys NOT stored."""
        codec = self._codec
        failed: List[Any] = []

        def command(host: AsyncHost, wires: Dict[bytes, Any]) -> Optional[Tuple[bytes, Parser, List[Any]]]:
            cmds, origs = [], []
            for wire, orig in wires.items():
                try:
                    data, flags = codec._encode_value(wire, mapping[orig], min_compress_len)
                except (ValueTooLargeError, SerializationError) as exc:
                    codec.debuglog(str(exc))
                    if codec.strict:
                        raise
                    failed.append(orig)
                    continue
                cmds.append(protocol.storage_command(b"set", wire, flags, time, data, None, noreply))
                origs.append(orig)
            if not cmds:
                return None
            return b"".join(cmds), (None if noreply else _store_lines_parser(len(cmds))), origs  # type: ignore[return-value]

        for origs, reply in await self._per_server(list(mapping), _prefix_bytes(key_prefix), command, failed):
            if reply is _FAILED:
                failed.extend(origs)
            elif not noreply and reply is not _ALL_STORED:
                failed.extend(o for o, line in zip(origs, reply) if line != b"STORED")
        return failed

    # -- retrieval -----------------------------------------------------------
    async def get(self, key: Key, default: Any = None) -> Any:
        """The value stored at *key*, or *default* on a miss or failure."""
        hashkey, wire, request = self._wire(key)
        parse = RetrievalReply((wire,), self._codec.server_max_value_length)
        items = (await self._keyed(hashkey, key, request, parse, None))[1]
        if not items:
            return default
        return self._codec._decode_or_miss(items[0], default)

    async def gets(self, key: Key) -> Any:
        """Like :meth:`get`, remembering the CAS id for :meth:`cas` when ``cache_cas`` is on."""
        value, cas_id, wire = await self._gets(key, None)
        if cas_id is not None and self._codec.cache_cas:
            self.cas_ids[wire] = cas_id
        return value

    async def gets_cas(self, key: Key, default: Any = None) -> Tuple[Any, Optional[int]]:
        """``(value, cas_id)``; ``(default, None)`` on a miss.  Pass the id to ``cas(..., cas_id=)``."""
        value, cas_id, _ = await self._gets(key, default)
        return value, cas_id

    async def _gets(self, key: Key, default: Any) -> Tuple[Any, Optional[int], bytes]:
        hashkey, wire = self._codec._encode_key(key)
        parse = RetrievalReply((wire,), self._codec.server_max_value_length)
        items = (await self._keyed(hashkey, key, b"gets " + wire + b"\r\n", parse, None))[1]
        if not items:
            return default, None, wire
        return self._codec._decode_or_miss(items[0], default), items[0][3], wire

    async def get_multi(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> Dict[Any, Any]:
        """``{key: value}`` for the keys found; one request per server, servers queried in parallel."""
        return await self._get_multi(keys, key_prefix, self._codec._decode_value, self._codec._raw_bytes)

    async def get_counters(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> Dict[Any, int]:
        """``{key: int}`` for the keys holding a counter, read without the serde
        (see :meth:`sqla_memcache.Client.get_counters`)."""
        return await self._get_multi(keys, key_prefix, _decode_counter, False)

    async def get_counter(self, key: Key, default: Any = None) -> Any:
        """The counter at *key* (see :meth:`get_counters`), or *default*."""
        return (await self.get_counters([key])).get(key, default)

    async def _get_multi(
        self, keys: Iterable[Any], key_prefix: Union[str, bytes], decode: Callable[[Any], Any], raw_ok: bool
    ) -> Dict[Any, Any]:
        codec = self._codec
        max_size = codec.server_max_value_length

        def command(host: AsyncHost, wires: Dict[bytes, Any]) -> Tuple[bytes, Parser, Dict[bytes, Any]]:
            return protocol.retrieval_command(b"get", list(wires)), RetrievalReply(wires, max_size), wires

        result: Dict[Any, Any] = {}
        encode = codec.key_encoder
        for wires, items in await self._per_server(keys, _prefix_bytes(key_prefix), command, None):
            if items is _FAILED:
                continue
            for item in items:
                orig = wires[item[0]]
                if encode is not None:
                    orig = encode(orig)  # python-memcached reports encoded keys with a key_encoder
                if item[1] == 0 and raw_ok:
                    result[orig] = item[2]
                    continue
                try:
                    result[orig] = decode(item)
                except SerializationError as exc:
                    codec.debuglog("could not decode value of %r: %s" % (item[0], exc))
                    log.warning("could not decode value of %r: %s", item[0][:100], exc)
                    if codec.strict:
                        raise
        return result

    async def _per_server(
        self,
        keys: Iterable[Any],
        prefix: bytes,
        command: Callable[[AsyncHost, Dict[bytes, Any]], Any],
        failed: Optional[List[Any]],
    ) -> List[Tuple[Any, Any]]:
        """Group *keys* by server, run ``command(host, {wire: key})``'s request on
        each server concurrently: ``[(its context, its reply or _FAILED)]``.

        Keys of a server that cannot be connected to are regrouped on the
        selector's next choice, as the blocking client's ``usable()`` does.
        Keys with no server go to *failed* (when given).
        """
        codec = self._codec
        pending = keys if isinstance(keys, (list, tuple)) else list(keys)
        out: List[Tuple[Any, Any]] = []
        get_node = self._selector.get_node
        for _ in range(len(self.servers) or 1):
            by_host: Dict[AsyncHost, Dict[bytes, Any]] = {}
            for orig in pending:
                hashkey, wire = codec._prefixed(orig, prefix)
                host = get_node(hashkey, AsyncHost.usable)
                if host is None:
                    codec._no_server(orig, None)
                    if failed is not None:
                        failed.append(orig)
                    continue
                by_host.setdefault(host, {})[wire] = orig
            jobs = []
            for host, wires in by_host.items():
                job = command(host, wires)
                if job is not None:
                    jobs.append((host, wires, job))
            if not jobs:
                break
            if len(jobs) == 1:
                host, wires, (data, parse, context) = jobs[0]
                try:
                    replies: List[Any] = [await self._exchange(host, data, parse)]
                except MemcacheError as exc:
                    replies = [exc]
            else:
                replies = await asyncio.gather(
                    *(self._exchange(host, data, parse) for host, _, (data, parse, _) in jobs), return_exceptions=True
                )
            pending = []
            for (host, wires, (_, _, context)), reply in zip(jobs, replies):
                if isinstance(reply, ConnectFailed):
                    pending.extend(wires.values())  # nothing was sent: try the next server
                elif isinstance(reply, BaseException):
                    if not isinstance(reply, MemcacheError):
                        raise reply
                    codec._fail(reply, None)  # raises when strict
                    out.append((context, _FAILED))
                else:
                    out.append((context, reply))
            if not pending:
                break
        else:
            for orig in pending:
                codec._no_server(orig, None)
                if failed is not None:
                    failed.append(orig)
        return out

    # -- deletion, counters, touch ---------------------------------------------
    async def delete(self, key: Key, noreply: bool = False) -> int:
        """Delete *key*: 1 if it was deleted, 0 if absent or on failure (python-memcached)."""
        hashkey, wire = self._codec._encode_key(key)
        if noreply:
            return 1 if (await self._keyed(hashkey, key, protocol.delete_command(wire, True), None, 0))[1] is None else 0
        line = (await self._keyed(hashkey, key, protocol.delete_command(wire), _parse_delete_line, None))[1]
        if line == protocol.DELETED:
            return 1
        if line is not None:
            self.debuglog("while expecting 'DELETED', got unexpected response '%s'" % line.decode("utf-8", "replace"))
        return 0

    async def delete_multi(
        self, keys: Iterable[Any], time: Optional[int] = None, key_prefix: Union[str, bytes] = "", noreply: bool = False
    ) -> int:
        """Delete many keys, one pipelined write per server.  1 if every server answered, else 0."""
        tail = b" noreply\r\n" if noreply else b"\r\n"
        extra = b" %d" % time if time else b""

        def command(host: AsyncHost, wires: Dict[bytes, Any]) -> Tuple[bytes, Optional[Parser], None]:
            data = b"".join(b"delete " + wire + extra + tail for wire in wires)
            return data, (None if noreply else _lines_parser(len(wires), _valid_delete_line)), None

        failed: List[Any] = []
        ok = 1
        for _, lines in await self._per_server(keys, _prefix_bytes(key_prefix), command, failed):
            if lines is _FAILED:
                ok = 0
            elif lines is not None and any(line not in (protocol.DELETED, protocol.NOT_FOUND) for line in lines):
                ok = 0
        return 0 if failed else ok

    async def incr(self, key: Key, delta: int = 1, noreply: bool = False) -> Optional[int]:
        """Add *delta* to a decimal value; the new value, or None if absent or on failure."""
        return await self._arith(b"incr", key, delta, noreply)

    async def decr(self, key: Key, delta: int = 1, noreply: bool = False) -> Optional[int]:
        """Subtract *delta* (memcached stops at 0); the new value, or None."""
        return await self._arith(b"decr", key, delta, noreply)

    async def _arith(self, cmd: bytes, key: Key, delta: int, noreply: bool) -> Optional[int]:
        delta = int(delta)
        if delta < 0:
            raise ValueError("%s delta must be >= 0, got %d" % (cmd.decode(), delta))
        hashkey, wire = self._codec._encode_key(key)
        if noreply:
            await self._keyed(hashkey, key, protocol.arith_command(cmd, wire, delta, True), None, None)
            return None
        host, line = await self._keyed(hashkey, key, protocol.arith_command(cmd, wire, delta), _parse_arith_line, None)
        return self._codec._arith_reply(host, line)

    async def touch(self, key: Key, time: int = 0, noreply: bool = False) -> int:
        """Reset *key*'s expiry: 1 if touched, 0 if absent or on failure."""
        hashkey, wire = self._codec._encode_key(key)
        if noreply:
            reply = (await self._keyed(hashkey, key, protocol.touch_command(wire, time, True), None, 0))[1]
            return 1 if reply is None else 0
        line = (await self._keyed(hashkey, key, protocol.touch_command(wire, time), _parse_touch_line, None))[1]
        if line == protocol.TOUCHED:
            return 1
        if line is not None:
            self.debuglog("while expecting 'TOUCHED', got unexpected response '%s'" % line.decode("utf-8", "replace"))
        return 0

    # -- whole-server commands -------------------------------------------------
    async def _each_server(self, command: bytes, parse: Parser) -> List[Tuple[AsyncHost, Any]]:
        out = []
        for host in self.servers:
            if not host.usable():
                if self.strict:
                    raise ServerDeadError("memcached %s is dead" % host.label)
                continue
            try:
                reply = await self._exchange(host, command, parse)
            except ConnectFailed:
                if self.strict:
                    raise
                continue
            except MemcacheError as exc:
                self._codec._fail(exc, None)
                continue
            out.append((host, reply))
        return out

    async def flush_all(self) -> None:
        """Invalidate every item on every server."""
        await self._each_server(b"flush_all\r\n", _parse_line)

    async def get_stats(self, stat_args: Optional[str] = None) -> List[Tuple[str, Dict[str, str]]]:
        """``[(server name, {stat: value})]`` for ``stats [stat_args]`` on each live server."""
        cmd = protocol.simple_command("stats", stat_args) if stat_args else b"stats\r\n"
        return [(host.stats_name(), stats) for host, stats in await self._each_server(cmd, protocol.parse_stats)]

    async def get_slabs(self) -> List[Tuple[str, Dict[str, Dict[str, str]]]]:
        """``[(server name, {slab id: {stat: value}})]`` from ``stats items``."""
        out = []
        for name, flat in await self.get_stats("items"):
            slabs: Dict[str, Dict[str, str]] = {}
            for stat, value in flat.items():
                parts = stat.split(":")
                if len(parts) == 3:
                    slabs.setdefault(parts[1], {})[parts[2]] = value
            out.append((name, slabs))
        return out

    async def raw_command(self, server: Union[int, str], command: bytes, terminator: bytes = b"END") -> bytes:
        """Send *command* to one server and return its raw reply up to *terminator*
        (as :meth:`sqla_memcache.Client.raw_command`: errors always raise)."""
        host = self.servers[server] if isinstance(server, int) else next(h for h in self.servers if h.label == server)
        if not command.endswith(b"\r\n"):
            command += b"\r\n"
        return await self._exchange(host, command, lambda rb: protocol.parse_until(rb, terminator))


def _expire(waiter: "asyncio.Future[Any]") -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError("memcached reply timed out"))


class _Failed:
    __slots__ = ()

    def __repr__(self) -> str:
        return "FAILED"


#: A server's reply slot in :meth:`AsyncClient._per_server` when its exchange failed.
_FAILED = _Failed()
