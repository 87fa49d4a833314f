"""asyncio transport of :class:`~sqla_memcache.aio.AsyncClient`: one connection, :class:`AsyncConnection`.

An :class:`AsyncConnection` is an :class:`asyncio.Protocol` holding the same
:class:`~sqla_memcache.protocol.buffer.ReplyBuffer` as the blocking
:class:`~sqla_memcache.transport.connection.Connection`; the reply parser runs in
``data_received`` as bytes arrive and completes the waiting task's future.
The pool of them per server is :class:`~sqla_memcache.aio.host.AsyncHost`.
"""
from __future__ import annotations

import asyncio
from typing import Any, Optional, Set

from .. import protocol
from ..errors import ConnectFailed, ConnectionLostError
from ..transport.connection import KEEP_BYTES
from ..transport.host import Parser

__all__ = ["AsyncConnection", "ConnectFailed", "NO_DEADLINE", "Parser"]

#: The deadline of a reply nobody times out (or that a timeout scope bounds).
NO_DEADLINE = float("inf")


class AsyncConnection(asyncio.Protocol):
    """One connection to a server; one command in flight at a time.

    *registry* (the host's): the set this connection is in from its
    ``connection_made`` until it is closed or lost, where the reply
    watchdog (:mod:`.watchdog`) finds the replies awaited past their
    :attr:`deadline`.
    """

    def __init__(self, registry: Optional[Set["AsyncConnection"]] = None) -> None:
        self.rb = protocol.ReplyBuffer()
        self.transport: Optional[asyncio.Transport] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._waiter: Optional[asyncio.Future] = None
        self._parse: Optional[Parser] = None
        #: time.monotonic() by which the awaited reply must be complete (read
        #: only while a reply is awaited).
        self.deadline = NO_DEADLINE
        self._registry: Set[AsyncConnection] = registry if registry is not None else set()
        #: Set when the stream position is unknown (lost, unsolicited bytes,
        #: abandoned mid-reply, parse error): the pool closes it, never lends it.
        self.broken = False

    # -- asyncio.Protocol --------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self._loop = asyncio.get_running_loop()
        self._registry.add(self)

    def data_received(self, data: bytes) -> None:
        rb = self.rb
        if rb.pos == len(rb.buf) and not rb._pending:
            # Nothing buffered (the usual case): the chunk becomes the buffer, as ReplyBuffer.feed does.
            rb.buf = data
            rb.pos = rb.mark = 0
        else:
            rb.feed(data)
        waiter = self._waiter
        if waiter is None:
            # Bytes nobody asked for: whatever they are, the stream is out of step.
            self.broken = True
            return
        if rb.need and rb.available() < rb.need:
            return  # the parser said how much it needs; do not re-parse per chunk
        rb.need = 0
        try:
            reply = self._parse(rb)  # type: ignore[misc]
        except BaseException as exc:  # ProtocolError, or an error reply raised by the parser
            self._waiter = self._parse = None
            self.broken = True
            if not waiter.done():
                waiter.set_exception(exc)
            return
        if reply is protocol.INCOMPLETE:
            return
        self._waiter = self._parse = None
        if rb.pos != len(rb.buf) or rb._pending:
            self.broken = True  # more than the reply arrived: out of step
        elif len(rb.buf) > KEEP_BYTES:
            rb.buf = b""  # an idle connection keeps no long reply alive
            rb.pos = rb.mark = 0
        if waiter.done():
            self.broken = True  # the caller gave up (cancelled or timed out) meanwhile
        else:
            waiter.set_result(reply)

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.broken = True
        self._registry.discard(self)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            err = ConnectionLostError("connection closed by server" if exc is None else str(exc) or type(exc).__name__)
            err.__cause__ = exc
            waiter.set_exception(err)

    def eof_received(self) -> Optional[bool]:
        return False  # close the transport; connection_lost fails any waiter

    # -- commands ----------------------------------------------------------
    def request(self, data: bytes, parse: Parser, deadline: float = NO_DEADLINE) -> "asyncio.Future[Any]":
        """Send *data*; the future resolves to ``parse``'s reply (or its exception),
        or fails with ``TimeoutError`` when the reply is not complete by *deadline*
        (``time.monotonic()``, enforced by the watchdog)."""
        if self.broken or self._waiter is not None:
            raise ConnectionLostError("connection is not usable")
        waiter = self._loop.create_future()  # type: ignore[union-attr]
        self.deadline = deadline
        self._waiter = waiter
        self._parse = parse
        self.transport.write(data)  # type: ignore[union-attr]
        return waiter

    def send(self, data: bytes) -> None:
        """Send a command that has no reply (``noreply``)."""
        if self.broken:
            raise ConnectionLostError("connection is not usable")
        self.transport.write(data)  # type: ignore[union-attr]

    def reusable(self) -> bool:
        """No command in flight and the stream in step: lendable.

        (A transport closes only through close() or connection_lost(), and
        :meth:`data_received` marks the connection broken whenever bytes are left
        over a reply or come unasked: with no waiter, nothing is buffered.)"""
        return not self.broken and self._waiter is None

    def close(self) -> None:
        """Drop the connection at once (no graceful shutdown: its stream may be out of step)."""
        self.broken = True
        self._registry.discard(self)
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.cancel()
        if self.transport is not None:
            self.transport.abort()

    def overdue(self, now: float) -> bool:
        """A reply is awaited and its deadline has passed."""
        return self._waiter is not None and self.deadline <= now
