"""asyncio transport of :class:`~sqla_memcache.aio.AsyncClient`: a bounded pool per server, :class:`AsyncHost`.

An :class:`AsyncHost` is a :class:`~sqla_memcache.transport.host.Host` (same
server-spec parsing, labels and dead-host bookkeeping) whose connections are
:class:`~.connection.AsyncConnection` ones, lent to one task at a time; at
most ``pool_size`` exist per server, and further tasks wait in line for one
to come back.  A connection returns to the pool only after its reply was
parsed completely with nothing left over; a task cancelled or timed out
mid-command abandons its connection (closed, never reused), so a late reply
can never reach another task.  :meth:`AsyncHost.exchange` is the awaiting
twin of :meth:`Host.exchange <sqla_memcache.transport.host.Host.exchange>`.
"""
from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections import deque
from time import monotonic
from typing import Any, Deque, Optional, Set, Tuple, Union

from .. import protocol
from ..errors import ConnectFailed, ConnectionLostError, MemcacheError
from ..transport.connection import as_lost, fault_text
from ..transport.host import CONNECTION_FAULTS, Host, Parser
from .connection import NO_DEADLINE, AsyncConnection
from .watchdog import watch

#: The logger names of the asyncio transport (dead hosts are logged by ``Host``).
log = logging.getLogger("sqla_memcache.aio.connection")
reply_log = logging.getLogger("sqla_memcache.aio.client")

__all__ = ["AsyncHost"]

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



class AsyncHost(Host):
    """A server of an :class:`AsyncClient`: the blocking :class:`Host`'s bookkeeping with asyncio connections.

    ``usable()`` never does I/O here (it only consults the dead-until time);
    a failed connect inside :meth:`take` marks the host dead, and the client
    then asks the node selector again, which skips it.
    """

    def __init__(
        self,
        spec: Union[str, Tuple[str, int]],
        *,
        pool_size: int = 16,
        **kwargs: Any,
    ) -> None:
        if pool_size < 1:
            raise ValueError("pool_size must be at least 1")
        super().__init__(spec, max_idle=pool_size, **kwargs)
        self.pool_size = pool_size
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        #: Connections currently lent to a task; lent + idle never exceeds pool_size.
        self.in_use = 0
        #: Tasks waiting for a connection, woken one per returned connection.
        self._waiters: Deque[asyncio.Future] = deque()
        #: The open connections, idle or lent (each adds itself when made and leaves
        #: when closed or lost): the watchdog thread (:mod:`.watchdog`) fails the
        #: replies awaited on them past their deadline.  A timer per request costs
        #: more than the rest of a get, and one kept in the loop costs every loop
        #: iteration; a deadline stored on the connection costs an attribute store.
        self._conns: Set[AsyncConnection] = set()
        self._watched = False

    def usable(self) -> bool:  # no I/O: see the class docstring
        return not (self.deaduntil and self.is_dead())

    def _bind_loop(self) -> None:
        """Connections of a previous (possibly closed) loop cannot be used or closed from this one: drop them."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._idle.clear()
            self._waiters.clear()
            self._loop = loop
            self.in_use = 0
            self._conns.clear()

    def take_idle(self) -> Optional[AsyncConnection]:
        """An idle connection lent at once (no waiting, no I/O), or None."""
        if asyncio.get_running_loop() is not self._loop:
            self._bind_loop()
        idle = self._idle
        while idle:
            conn = idle.pop()
            if conn.reusable():
                self.in_use += 1
                return conn
            conn.close()
        return None

    async def take(self) -> AsyncConnection:
        """Lend a connection (idle or new) to the calling task, waiting while
        ``pool_size`` are lent out.

        Raises :class:`ConnectFailed` when the host is dead or the connect
        fails (the host is then marked dead).  Give it back with :meth:`give`
        or :meth:`discard`, exactly once.
        """
        while True:
            conn = self.take_idle()
            if conn is not None:
                return conn
            if self.in_use + len(self._idle) < self.pool_size:
                break
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # we were handed a turn we cannot use: pass it on
                raise
        self.in_use += 1
        try:
            return await self._open()
        except BaseException:
            self.in_use -= 1
            self._wake()
            raise

    def _wake(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _open(self) -> AsyncConnection:
        if self.is_dead():
            raise ConnectFailed("memcached %s is dead" % self.label)
        loop = asyncio.get_running_loop()
        if not self._watched:
            self._watched = True
            watch(self)
        conns = self._conns

        def made() -> AsyncConnection:
            return AsyncConnection(conns)

        try:
            if self.family == socket.AF_UNIX:
                _, conn = await loop.create_unix_connection(made, self.address, ssl=self.ssl_context)
            else:
                host, port = self.address
                _, conn = await loop.create_connection(
                    made, host, port, ssl=self.ssl_context,
                    server_hostname=host if self.ssl_context is not None else None,
                )
        except (OSError, ValueError) as exc:
            self.mark_dead("connect: %s" % (exc,))
            raise ConnectFailed("memcached %s is dead (connect: %s)" % (self.label, exc)) from exc
        if self.flush_on_next_connect:
            self.flush_on_next_connect = False
            try:
                await conn.request(b"flush_all\r\n", protocol.parse_line)
            except BaseException as exc:
                conn.close()
                if isinstance(exc, Exception):
                    self.mark_dead("flush_all on reconnect: %s" % (exc,))
                    raise ConnectFailed("memcached %s: flush_all on reconnect failed" % self.label) from exc
                raise
        if self._needs_revive:
            self._needs_revive = False
            if self.on_revive is not None:
                self.on_revive(self)
        return conn

    def give(self, conn: AsyncConnection) -> None:
        """Return a connection after a complete exchange; one left out of step is closed."""
        self.in_use -= 1
        if conn.reusable() and not self.deaduntil and self._loop is asyncio.get_running_loop():
            self._idle.append(conn)
        else:
            conn.close()
        if self._waiters:
            self._wake()

    def discard(self, conn: AsyncConnection) -> None:
        """Close a connection whose stream position is unknown and free its place in the pool."""
        self.in_use -= 1
        conn.close()
        if self._waiters:
            self._wake()

    def quit_idle(self) -> None:
        """Send ``quit`` on every idle connection, then close them."""
        while self._idle:
            conn = self._idle.pop()
            if conn.reusable():
                conn.send(protocol.QUIT)
            conn.close()

    # -- the exchange seam ------------------------------------------------------
    async def exchange(self, data: bytes, parse: Optional[Parser], budget: Optional[float] = None) -> Any:
        """Send one command on a pooled connection and parse its reply (as :meth:`Host.exchange`).

        The whole exchange (pool wait, connect, send, reply) is bounded by
        *budget* seconds (the calling client's ``deadline``, else its
        ``socket_timeout``; default: this host's).  Raises typed
        errors: a connection fault or timeout closes the connection and marks
        the host dead (:class:`ConnectionLostError`, :class:`ProtocolError`);
        an error reply closes the connection only; :class:`ConnectFailed` when
        no connection could be opened (nothing was sent).  A cancelled task
        closes its connection and re-raises ``CancelledError``.
        """
        # An idle connection needs no waiting before the request: the deadline is then
        # the watchdog thread's on the reply alone (cheaper than a timeout scope, or a
        # timer, per call).
        if budget is None:
            budget = self.budget
        conn: Optional[AsyncConnection] = self.take_idle()
        try:
            if conn is None:
                async with _deadline(budget):
                    conn = await self.take()
                    if parse is None:
                        conn.send(data)
                        reply = None
                    else:
                        reply = await conn.request(data, parse)
            elif parse is None:
                conn.send(data)
                reply = None
            else:
                reply = await conn.request(data, parse, NO_DEADLINE if budget is None else monotonic() + budget)
        except ConnectFailed:
            raise
        except (TimeoutError, asyncio.TimeoutError) as exc:
            if conn is not None:
                self.discard(conn)
            self.mark_dead("timed out")
            raise ConnectionLostError("timed out after %ss" % budget) from exc
        except CONNECTION_FAULTS as exc:
            if conn is not None:
                self.discard(conn)
            self.mark_dead(fault_text(exc))
            raise (exc if isinstance(exc, MemcacheError) else as_lost(exc)) from exc
        except MemcacheError as exc:
            if conn is not None:
                self.discard(conn)
            self.debuglog("%s: %s" % (self, exc))
            reply_log.info("memcached %s answered an error: %s", self.label, exc)
            raise
        except BaseException:  # CancelledError above all: the reply may still come, on no one's connection
            if conn is not None:
                self.discard(conn)
            raise
        self.give(conn)
        return reply

    def _expire_due(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail every awaited reply past its deadline (called in the loop by the watchdog thread)."""
        if loop is not self._loop:
            return  # a call for a loop this host no longer uses
        now = monotonic()
        for conn in list(self._conns):
            if conn.overdue(now):
                waiter = conn._waiter
                if waiter is not None and not waiter.done():
                    waiter.set_exception(TimeoutError("memcached reply timed out"))


