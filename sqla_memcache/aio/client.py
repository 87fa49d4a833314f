"""``AsyncClient``: the :class:`~sqla_memcache.Client` API for asyncio, every call awaitable.

Same wire format, flags, serdes, key checks, hashing (modula and ketama),
dead-host handling, TLS and strict mode as :class:`~sqla_memcache.Client`, so
sync and async processes share entries.  Nothing of that is re-implemented
here: both clients are the same :class:`~sqla_memcache.client.commands.Commands`
(every command a plan: request, reply parser, result), the same
:class:`~sqla_memcache.client.keys.KeyCodec`, :class:`~sqla_memcache.routing.Router`,
serde and failure policy; what is asyncio-specific is the transport
(:mod:`sqla_memcache.aio.connection`, :mod:`sqla_memcache.aio.host`) and the two drivers below that await it.

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
new loop drops the old loop's idle connections); a server that cannot be
connected to is found by trying it (its keys then go to the next server),
not by connecting before the command.
"""
from __future__ import annotations

import asyncio
import pickle
import ssl
import zlib
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .. import config
from ..client.base import _DEAD_RETRY, _SOCKET_TIMEOUT, Key, ServerSpec
from ..client.client import Client
from ..client.commands import FAILED, BatchPlan, Commands, Plan, decode_counter
from ..client.compat import MemcacheCompat
from ..errors import ConnectFailed, MemcacheError, ServerDeadError
from ..protocol import StatsReply, UntilReply, parse_line
from ..serde import Serde
from .host import AsyncHost


class AsyncClient(MemcacheCompat, Commands):
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

    host_class = AsyncHost

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
        pool_size: int = 16,
        deadline: Optional[float] = None,
    ) -> None:
        self.pool_size = pool_size
        self._cas_ids: Dict[bytes, int] = {}
        #: The arguments, for :meth:`sync_client`.
        self._arguments = dict(
            debug=debug, pickleProtocol=pickleProtocol, pickler=pickler, unpickler=unpickler, compressor=compressor,
            decompressor=decompressor, pload=pload, pid=pid, server_max_key_length=server_max_key_length,
            server_max_value_length=server_max_value_length, dead_retry=dead_retry, socket_timeout=socket_timeout,
            cache_cas=cache_cas, flush_on_reconnect=flush_on_reconnect, check_keys=check_keys,
            key_encoder=key_encoder, hashing=hashing, serde=serde, secret_key=secret_key, ssl_context=ssl_context,
            strict=strict, deadline=deadline,
        )
        super().__init__(
            servers, debug, pickleProtocol, pickler, unpickler, compressor, decompressor, pload, pid,
            server_max_key_length, server_max_value_length, dead_retry, socket_timeout, cache_cas,
            flush_on_reconnect, check_keys, key_encoder, hashing=hashing, serde=serde, secret_key=secret_key,
            ssl_context=ssl_context, strict=strict, deadline=deadline,
        )

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

    def _make_host(self, spec: ServerSpec) -> AsyncHost:
        return self.host_class(spec, pool_size=self.pool_size, **self._host_options())

    def set_servers(self, servers: Sequence[ServerSpec]) -> None:
        """Replace the server list (idle connections to the old ones are closed).

        Accepts what :meth:`sqla_memcache.Client.set_servers` accepts (see
        :func:`sqla_memcache.config.server_list`).
        """
        super().set_servers(servers)
        self._server_specs = list(config.server_list(servers))

    def sync_client(self, **overrides: Any) -> Client:
        """A blocking :class:`~sqla_memcache.Client` on the same servers with the same settings."""
        return Client(self._server_specs, **dict(self._arguments, **overrides))

    @property
    def cas_ids(self) -> Dict[Any, int]:  # type: ignore[override]  # per client, not per thread
        return self._cas_ids

    def reset_cas(self) -> None:
        """Forget the CAS ids remembered by ``gets`` (with ``cache_cas=True``)."""
        self._cas_ids = {}

    async def close(self) -> None:
        """Close every idle connection and let the transports finish closing."""
        self.disconnect_all()
        await asyncio.sleep(0)

    async def quit_all(self) -> None:
        """Send ``quit`` on every idle connection, then close them."""
        for host in self.servers:
            host.quit_idle()

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return "<sqla_memcache.AsyncClient %s>" % ", ".join(h.label for h in self.servers)

    # -- the asyncio transport: how plans run ---------------------------------
    async def _one(self, plan: Plan) -> Any:
        """Run a one-key plan (see :mod:`sqla_memcache.client.commands`).

        A server that cannot be connected to is marked dead and the key goes
        to the router's next choice (never with :meth:`without_failover`).
        """
        key, hashkey, request, parse, finish, ctx, missing, failure = plan
        if request is None:
            return failure
        single = self._router.single
        if single is not None and not single.deaduntil:
            # One server, alive (the common case): nothing to hash.
            try:
                reply = await single.exchange(request, parse, self._budget())
            except ConnectFailed:
                return self._no_server(key, missing)
            except MemcacheError as exc:
                return self._fail(exc, failure)
            return finish(single, reply, ctx)
        route = self._router.route
        for _ in range(len(self.servers)):
            host = route(hashkey)
            if host is None:
                break
            try:
                reply = await host.exchange(request, parse, self._budget())
            except ConnectFailed:
                continue
            except MemcacheError as exc:
                return self._fail(exc, failure)
            return finish(host, reply, ctx)
        return self._no_server(key, missing)

    async def _many(self, plan: BatchPlan) -> Any:
        """Run a batch plan: one request per server, the servers concurrently.

        Keys of a server that cannot be connected to are regrouped on the
        router's next choice, as the blocking client's ``usable()`` does.
        """
        pending, prefix, command, unplaced, collect = plan
        out: List[Tuple[Any, Any]] = []
        for _ in range(len(self.servers) or 1):
            jobs = []
            for host, wires in self._group(pending, prefix, unplaced).items():
                job = command(host, wires)
                if job is not None:
                    jobs.append((host, wires, job))
            if not jobs:
                break
            if len(jobs) == 1:
                host, _, (data, parse, _) = jobs[0]
                try:
                    replies: List[Any] = [await host.exchange(data, parse, self._budget())]
                except MemcacheError as exc:
                    replies = [exc]
            else:
                replies = await asyncio.gather(
                    *(host.exchange(data, parse, self._budget()) for host, _, (data, parse, _) in jobs),
                    return_exceptions=True,
                )
            pending = []
            for (host, wires, (_, _, ctx)), reply in zip(jobs, replies):
                if isinstance(reply, ConnectFailed):
                    pending.extend(wires.values())  # nothing was sent: try the next server
                elif isinstance(reply, BaseException):
                    if not isinstance(reply, MemcacheError):
                        raise reply
                    self._fail(reply, None)  # raises when strict
                    out.append((ctx, FAILED))
                else:
                    out.append((ctx, reply))
            if not pending:
                break
        else:
            for orig in pending:
                self._no_server(orig, None)
                if unplaced is not None:
                    unplaced.append(orig)
        return collect(out)

    async def _each_server(self, command: bytes, parser: Callable[[], Any]) -> List[Tuple[AsyncHost, Any]]:
        """*command* on every live server, each reply read by a new ``parser()``."""
        out = []
        for host in self.servers:
            if not host.usable():
                if self.strict:
                    raise ServerDeadError("memcached %s is dead" % host.label)
                continue
            try:
                reply = await host.exchange(command, parser(), self._budget())
            except ConnectFailed:
                if self.strict:
                    raise
                continue
            except MemcacheError as exc:
                self._fail(exc, None)
                continue
            out.append((host, reply))
        return out

    # -- storage -----------------------------------------------------------
    async def set(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store unconditionally.  True when stored; False/0 on failure."""
        return await self._one(self._store_plan(b"set", key, val, time, min_compress_len, noreply))

    async def add(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store only if the key is absent.  True when stored, False if it exists."""
        return await self._one(self._store_plan(b"add", key, val, time, min_compress_len, noreply))

    async def replace(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store only if the key exists.  True when stored, False if absent."""
        return await self._one(self._store_plan(b"replace", key, val, time, min_compress_len, noreply))

    async def append(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Append raw data to an existing value (flags unchanged).  True/False."""
        return await self._one(self._store_plan(b"append", key, val, time, min_compress_len, noreply))

    async def prepend(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Prepend raw data to an existing value.  True/False."""
        return await self._one(self._store_plan(b"prepend", key, val, time, min_compress_len, noreply))

    async def cas(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False,
                  cas_id: Optional[int] = None) -> Any:
        """Check-and-set, as :meth:`sqla_memcache.Client.cas`."""
        return await self._one(self._cas_plan(key, val, time, min_compress_len, noreply, cas_id))

    async def set_multi(self, mapping: Mapping[Any, Any], time: int = 0, key_prefix: Union[str, bytes] = "",
                        min_compress_len: int = 0, noreply: bool = False) -> List[Any]:
        """Store many keys, one pipelined write per server, servers in parallel.  Returns the keys NOT stored."""
        return await self._many(self._set_multi_plan(mapping, time, key_prefix, min_compress_len, noreply))

    # -- retrieval -----------------------------------------------------------
    async def get(self, key: Key, default: Any = None) -> Any:
        """The value stored at *key*, or *default* on a miss or failure."""
        return await self._one(self._get_plan(key, default))

    async def gets(self, key: Key) -> Any:
        """Like :meth:`get`, remembering the CAS id for :meth:`cas` when ``cache_cas`` is on."""
        return self._remember_cas(await self._one(self._gets_plan(key, None)))

    async def gets_cas(self, key: Key, default: Any = None) -> Tuple[Any, Optional[int]]:
        """``(value, cas_id)``; ``(default, None)`` on a miss.  Pass the id to ``cas(..., cas_id=)``."""
        return (await self._one(self._gets_plan(key, default)))[:2]

    async def get_multi(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> Dict[Any, Any]:
        """``{key: value}`` for the keys found; one request per server, servers queried in parallel."""
        few = self._few_plan(keys, key_prefix)
        if few is not None:  # a few keys, one server: one exchange
            return await self._one(few)
        return await self._many(self._get_multi_plan(keys, key_prefix))

    async def get_counters(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> Dict[Any, int]:
        """``{key: int}`` for the keys holding a counter, read without the serde
        (see :meth:`sqla_memcache.Client.get_counters`)."""
        few = self._few_plan(keys, key_prefix, decode_counter)
        if few is not None:  # a few keys, one server: one exchange
            return await self._one(few)
        return await self._many(self._counters_plan(keys, key_prefix))

    async def get_counter(self, key: Key, default: Any = None) -> Any:
        """The counter at *key* (see :meth:`get_counters`), or *default*."""
        return (await self.get_counters([key])).get(key, default)

    # -- deletion, counters, touch ---------------------------------------------
    async def delete(self, key: Key, noreply: bool = False) -> int:
        """Delete *key*: 1 if it was deleted, 0 if absent or on failure (python-memcached)."""
        return await self._one(self._delete_plan(key, noreply))

    async def delete_multi(self, keys: Iterable[Any], time: Optional[int] = None, key_prefix: Union[str, bytes] = "",
                           noreply: bool = False) -> int:
        """Delete many keys, one pipelined write per server.  1 if every server answered, else 0."""
        return await self._many(self._delete_multi_plan(keys, time, key_prefix, noreply))

    async def incr(self, key: Key, delta: int = 1, noreply: bool = False) -> Optional[int]:
        """Add *delta* to a decimal value; the new value, or None if absent or on failure."""
        return await self._one(self._arith_plan(b"incr", key, delta, noreply))

    async def decr(self, key: Key, delta: int = 1, noreply: bool = False) -> Optional[int]:
        """Subtract *delta* (memcached stops at 0); the new value, or None."""
        return await self._one(self._arith_plan(b"decr", key, delta, noreply))

    async def touch(self, key: Key, time: int = 0, noreply: bool = False) -> int:
        """Reset *key*'s expiry: 1 if touched, 0 if absent or on failure."""
        return await self._one(self._touch_plan(key, time, noreply))

    # -- whole-server commands -------------------------------------------------
    async def flush_all(self) -> None:
        """Invalidate every item on every server."""
        await self._each_server(b"flush_all\r\n", lambda: parse_line)

    async def get_stats(self, stat_args: Optional[str] = None) -> List[Tuple[str, Dict[str, str]]]:
        """``[(server name, {stat: value})]`` for ``stats [stat_args]`` on each live server."""
        replies = await self._each_server(self._stats_command(stat_args), StatsReply)
        return [(host.stats_name(), stats) for host, stats in replies]

    async def get_slabs(self) -> List[Tuple[str, Dict[str, Dict[str, str]]]]:
        """``[(server name, {slab id: {stat: value}})]`` from ``stats items``."""
        return self._slabs(await self.get_stats("items"))

    async def raw_command(self, server: Union[int, str], command: bytes, terminator: bytes = b"END") -> bytes:
        """Send *command* to one server and return its raw reply up to *terminator*
        (as :meth:`sqla_memcache.Client.raw_command`: errors always raise)."""
        host = self._server_named(server)
        if not command.endswith(b"\r\n"):
            command += b"\r\n"
        return await host.exchange(command, UntilReply(terminator), self._budget())
