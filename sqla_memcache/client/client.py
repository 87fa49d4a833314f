"""``Client``: a drop-in for python-memcached 1.62's ``memcache.Client``.

Same constructor arguments, methods, return values, exceptions, value flags
and server choice, so the two read each other's entries.  Every command is a
plan from :mod:`.commands` (what to send, which parser, what to return) run
on the blocking transport (:meth:`Host.exchange <sqla_memcache.transport.host.Host.exchange>`);
keys are checked by :class:`~.keys.KeyCodec`, servers chosen by
:class:`~sqla_memcache.routing.Router`, values encoded by the serde, and a
failure gives python-memcached's quiet ``False``/``0``/``None`` or, with
``strict=True``, a typed error.

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
1.62 raises ``TypeError`` there); the requests of ``set_multi`` and
``delete_multi`` go to every server before any reply is read, as those of
``get_multi``.  One ``Client`` is shared by threads through a connection
pool, where python-memcached gives each thread its own sockets
(``threading.local``); ``cas_ids`` stay per thread, as there.
"""
from __future__ import annotations

import pickle
import ssl
import zlib
from time import monotonic as _monotonic
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .. import config
from ..errors import MemcacheError, ServerDeadError
from ..protocol import MAX_RAW_REPLY, StatsReply, UntilReply, parse_line
from ..serde import Serde
from ..transport.host import Host
from .base import _DEAD_RETRY, _SOCKET_TIMEOUT, Key, ServerSpec
from .commands import FAILED, BatchPlan, Commands, Plan, decode_counter
from .compat import MemcacheCompat


class Client(MemcacheCompat, Commands):
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
    :param max_pool_size: idle connections kept per server.
    :param deadline: seconds one call may take with one server (default ``socket_timeout``).
    """

    host_class = Host

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
        self.max_pool_size = max_pool_size
        super().__init__(
            servers, debug, pickleProtocol, pickler, unpickler, compressor, decompressor, pload, pid,
            server_max_key_length, server_max_value_length, dead_retry, socket_timeout, cache_cas,
            flush_on_reconnect, check_keys, key_encoder, hashing=hashing, serde=serde, secret_key=secret_key,
            ssl_context=ssl_context, strict=strict, deadline=deadline,
        )

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

    def _make_host(self, spec: ServerSpec) -> Host:
        return self.host_class(spec, max_idle=self.max_pool_size, **self._host_options())

    def quit_all(self) -> None:
        """Send ``quit`` on every idle connection, then close them."""
        for s in self.servers:
            s.quit_idle()

    # ------------------------------------------------------------------
    # the blocking transport: how plans run
    # ------------------------------------------------------------------
    def _one(self, plan: Plan) -> Any:
        """Run a one-key plan on the key's server (see :mod:`.commands`)."""
        key, hashkey, request, parse, finish, ctx, missing, failure = plan
        if request is None:
            return failure
        host = self._router.single
        deadline = None  # (the host's, from the exchange's start)
        if host is None or not host._idle:  # (one server with a pooled connection is usable: no need to ask)
            # Asking may connect (python-memcached's way of finding a live server): that time counts.
            deadline = self._call_deadline()
            host = self._router.route(hashkey)
            if host is None:
                return self._no_server(key, missing)
        try:
            reply = host.exchange(request, parse, deadline)
        except MemcacheError as exc:
            return self._fail(exc, failure)
        return finish(host, reply, ctx)

    def _many(self, plan: BatchPlan) -> Any:
        """Run a batch plan: one request per server, all sent before any reply is read."""
        keys, prefix, command, unplaced, collect = plan
        # One deadline for the whole call, from before the grouping (which may connect).
        deadline = self._call_deadline()
        jobs = []
        for host, wires in self._group(keys, prefix, unplaced).items():
            job = command(host, wires)
            if job is not None:
                jobs.append((host, job))
        out: List[Tuple[Any, Any]] = []
        if len(jobs) == 1:  # one server: a plain exchange
            host, (data, parse, ctx) = jobs[0]
            try:
                out.append((ctx, host.exchange(data, parse, deadline)))
            except MemcacheError as exc:
                self._fail(exc, None)
                out.append((ctx, FAILED))
            return collect(out)
        if not jobs:
            return collect(out)
        # The requests go out first, so the servers answer in parallel while
        # the replies are read in turn, all by the one deadline.
        sent = []
        for host, (data, parse, ctx) in jobs:
            try:
                conn = host.begin(data, deadline)
            except MemcacheError as exc:
                self._drop_unread(sent, exc)
                out.append((ctx, FAILED))
                continue
            sent.append((host, conn, parse, ctx))
        for i, (host, conn, parse, ctx) in enumerate(sent):
            try:
                out.append((ctx, host.finish(conn, parse, deadline)))
            except MemcacheError as exc:
                self._drop_unread(sent[i + 1:], exc)
                out.append((ctx, FAILED))
        return collect(out)

    def _call_deadline(self) -> Optional[float]:
        """The :func:`time.monotonic` time by which a call starting now must end (None: no limit)."""
        budget = self._budget()
        return None if budget is None else _monotonic() + budget

    def _drop_unread(self, sent: List[Tuple[Any, Any, Any, Any]], exc: MemcacheError) -> None:
        """Strict: close the connections whose replies are unread (not reusable), raise *exc*."""
        if self.strict:
            for _, conn, _, _ in sent:
                conn.close()
            raise exc

    def _each_server(self, command: bytes, parser: Callable[[], Any]) -> List[Tuple[Host, Any]]:
        """*command* on every live server, each reply read by a new ``parser()``."""
        out = []
        for host in self.servers:
            if not host.usable():
                if self.strict:
                    raise ServerDeadError("memcached %s is dead" % host.label)
                continue
            try:
                out.append((host, host.exchange(command, parser())))
            except MemcacheError as exc:
                self._fail(exc, None)
        return out

    # ------------------------------------------------------------------
    # storage commands
    # ------------------------------------------------------------------
    def set(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store unconditionally.  True when stored; False/0 on failure."""
        return self._one(self._store_plan(b"set", key, val, time, min_compress_len, noreply))

    def add(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store only if the key is absent.  True when stored, False if it exists."""
        return self._one(self._store_plan(b"add", key, val, time, min_compress_len, noreply))

    def replace(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Store only if the key exists.  True when stored, False if absent."""
        return self._one(self._store_plan(b"replace", key, val, time, min_compress_len, noreply))

    def append(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Append raw data to an existing value (flags unchanged).  True/False."""
        return self._one(self._store_plan(b"append", key, val, time, min_compress_len, noreply))

    def prepend(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        """Prepend raw data to an existing value.  True/False."""
        return self._one(self._store_plan(b"prepend", key, val, time, min_compress_len, noreply))

    def cas(self, key: Key, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False,
            cas_id: Optional[int] = None) -> Any:
        """Check-and-set.

        With *cas_id* (from :meth:`gets_cas`), store only if the item is
        unchanged: True when stored, False on ``EXISTS`` or ``NOT_FOUND``.
        Without it, python-memcached's rule: use the id remembered by
        ``gets`` when ``cache_cas`` is on, else behave like :meth:`set`.
        """
        return self._one(self._cas_plan(key, val, time, min_compress_len, noreply, cas_id))

    def set_multi(self, mapping: Mapping[Any, Any], time: int = 0, key_prefix: Union[str, bytes] = "",
                  min_compress_len: int = 0, noreply: bool = False) -> List[Any]:
        """Store many keys, one write per server.  Returns the keys NOT stored."""
        return self._many(self._set_multi_plan(mapping, time, key_prefix, min_compress_len, noreply))

    # ------------------------------------------------------------------
    # retrieval
    # ------------------------------------------------------------------
    def get(self, key: Key, default: Any = None) -> Any:
        """The value stored at *key*, or *default* on a miss or failure."""
        return self._one(self._get_plan(key, default))

    def gets(self, key: Key) -> Any:
        """Like :meth:`get`, remembering the CAS id for :meth:`cas` when ``cache_cas`` is on."""
        return self._remember_cas(self._one(self._gets_plan(key, None)))

    def gets_cas(self, key: Key, default: Any = None) -> Tuple[Any, Optional[int]]:
        """``(value, cas_id)``; ``(default, None)`` on a miss.  Pass the id to ``cas(..., cas_id=)``."""
        return self._one(self._gets_plan(key, default))[:2]

    def get_multi(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> Dict[Any, Any]:
        """``{key: value}`` for the keys found; one request per server, sent before reading any."""
        few = self._few_plan(keys, key_prefix)
        if few is not None:  # a few keys, one server: one exchange
            return self._one(few)
        return self._many(self._get_multi_plan(keys, key_prefix))

    def get_counters(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> Dict[Any, int]:
        """``{key: int}`` for the keys holding a counter, read without the serde.

        Like :meth:`get_multi`, but a value is returned only when it is an
        integer as ``incr``/``decr`` see it (ASCII digits, flags 2 or 0); any
        other value -- a pickle, text, a signed object -- is a miss (a
        ``SerializationError`` with ``strict=True``) and is never decoded,
        so reading a counter cannot run code whoever wrote it.
        """
        few = self._few_plan(keys, key_prefix, decode_counter)
        if few is not None:  # a few keys, one server: one exchange
            return self._one(few)
        return self._many(self._counters_plan(keys, key_prefix))

    def get_counters_begin(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> "PendingReply":
        """:meth:`get_counters` in two halves: send the request now, read the reply later.

        Returns a :class:`PendingReply`; its :meth:`~PendingReply.result` is what
        :meth:`get_counters` would have returned for the request as sent (a failure
        as there: the quiet value, or with ``strict=True`` the typed error, raised
        here when the request could not be sent). Between the two the caller can
        work while memcached answers; the call's deadline counts from the send.
        Only a few keys on a one-server client are sent ahead; any other call runs
        whole here. Call ``result()`` or ``cancel()`` from the calling thread: until
        then the connection is out of the pool.
        """
        few = self._few_plan(keys, key_prefix, decode_counter)
        if few is None:
            return PendingReply(done=self.get_counters(keys, key_prefix))
        _key, _hashkey, request, parse, finish, ctx, _missing, failure = few
        host = self._router.single  # (a few-key plan exists only for a one-server client)
        try:
            conn, deadline = host.send_ahead(request)
        except MemcacheError as exc:
            return PendingReply(done=self._fail(exc, failure))
        return PendingReply(self, host, conn, parse, deadline, finish, ctx, failure)

    def get_counter(self, key: Key, default: Any = None) -> Any:
        """The counter at *key* (see :meth:`get_counters`), or *default*."""
        return self.get_counters([key]).get(key, default)

    # ------------------------------------------------------------------
    # deletion, counters, touch
    # ------------------------------------------------------------------
    def delete(self, key: Key, noreply: bool = False) -> int:
        """Delete *key*: 1 if it was deleted, 0 if absent or on failure (python-memcached)."""
        return self._one(self._delete_plan(key, noreply))

    def delete_multi(self, keys: Iterable[Any], time: Optional[int] = None, key_prefix: Union[str, bytes] = "",
                     noreply: bool = False) -> int:
        """Delete many keys, one write per server.  1 if every server answered, else 0."""
        return self._many(self._delete_multi_plan(keys, time, key_prefix, noreply))

    def incr(self, key: Key, delta: int = 1, noreply: bool = False) -> Optional[int]:
        """Add *delta* to a decimal value; the new value, or None if absent or on failure."""
        return self._one(self._arith_plan(b"incr", key, delta, noreply))

    def decr(self, key: Key, delta: int = 1, noreply: bool = False) -> Optional[int]:
        """Subtract *delta* (memcached stops at 0); the new value, or None."""
        return self._one(self._arith_plan(b"decr", key, delta, noreply))

    def touch(self, key: Key, time: int = 0, noreply: bool = False) -> int:
        """Reset *key*'s expiry: 1 if touched, 0 if absent or on failure."""
        return self._one(self._touch_plan(key, time, noreply))

    # ------------------------------------------------------------------
    # whole-server commands
    # ------------------------------------------------------------------
    def flush_all(self) -> None:
        """Invalidate every item on every server."""
        self._each_server(b"flush_all\r\n", lambda: parse_line)

    def get_stats(self, stat_args: Optional[str] = None) -> List[Tuple[str, Dict[str, str]]]:
        """``[(server name, {stat: value})]`` for ``stats [stat_args]`` on each live server."""
        replies = self._each_server(self._stats_command(stat_args), StatsReply)
        return [(host.stats_name(), stats) for host, stats in replies]

    def get_slabs(self) -> List[Tuple[str, Dict[str, Dict[str, str]]]]:
        """``[(server name, {slab id: {stat: value}})]`` from ``stats items``."""
        return self._slabs(self.get_stats("items"))

    def raw_command(
        self,
        server: Union[int, str],
        command: bytes,
        terminator: bytes = b"END",
        *,
        max_bytes: int = MAX_RAW_REPLY,
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
        host = self._server_named(server)
        if not command.endswith(b"\r\n"):
            command += b"\r\n"
        at = None if deadline is None else _monotonic() + deadline
        return host.exchange(command, UntilReply(terminator, max_bytes), at)

    def __repr__(self) -> str:
        return "<sqla_memcache.Client %s>" % ", ".join(h.label for h in self.servers)


class PendingReply:
    """A request sent, its reply not yet read (:meth:`Client.get_counters_begin`)."""

    __slots__ = ("_client", "_host", "_conn", "_parse", "_deadline", "_finish", "_ctx", "_failure", "_done")

    def __init__(self, client: Any = None, host: Any = None, conn: Any = None, parse: Any = None,
                 deadline: Optional[float] = None, finish: Any = None, ctx: Any = None, failure: Any = None,
                 done: Any = None) -> None:
        self._client, self._host, self._conn, self._parse = client, host, conn, parse
        self._deadline, self._finish, self._ctx, self._failure = deadline, finish, ctx, failure
        self._done = done

    def result(self) -> Any:
        """Read the reply (by the call's deadline, counted from the send) and return what the
        call returns; a failure as the call fails (quiet value, or raised when strict).
        Asked again: the same answer (after a cancel: None)."""
        conn = self._conn
        if conn is None:
            return self._done
        self._conn = None
        host = self._host
        try:
            reply = host.finish(conn, self._parse, self._deadline)
        except MemcacheError as exc:
            done = self._done = self._client._fail(exc, self._failure)
            return done
        done = self._done = self._finish(host, reply, self._ctx)
        return done

    def cancel(self) -> None:
        """Give up the reply: its connection is closed (the stream holds an unread reply)."""
        conn = self._conn
        if conn is not None:
            self._conn = None
            conn.close()
