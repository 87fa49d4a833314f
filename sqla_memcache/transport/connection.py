"""One socket to a memcached server: :class:`Connection` (buffering, timeouts, deadlines).

Every socket call of the blocking client is made here, and an ``OSError``
from one is mapped here, once, to :class:`~sqla_memcache.errors.ConnectionLostError`
(``"timed out"`` for a timeout), so the layers above see only the typed
errors of :mod:`sqla_memcache.errors`.  The socket may be anything with
``send``/``recv``/``setsockopt``/``settimeout``/``close`` -- a real one, TLS, or
:class:`~sqla_memcache.transport.mock.MockSocket` in the unit tests.
"""
from __future__ import annotations

import socket
import ssl
import struct
import sys
from time import monotonic
from typing import Any, Callable, Optional

from ..errors import ConnectionLostError
from ..protocol import INCOMPLETE, ReplyBuffer

#: Bytes asked of one ``recv`` when the reply size is unknown.
RECV_SIZE = 65536
#: ... and once a long reply fills whole reads (a large ``get_multi``).
BULK_RECV_SIZE = 256 << 10
#: A consumed reply buffer longer than this is dropped at once (shorter ones wait for the next reply).
KEEP_BYTES = 4096

_HAS_SO_RCVTIMEO = sys.platform.startswith("linux")
_WAITALL = getattr(socket, "MSG_WAITALL", 0)


def _timeval(seconds: float) -> bytes:
    """``struct timeval`` for SO_RCVTIMEO/SO_SNDTIMEO (never 0, which would mean "wait forever")."""
    seconds = max(seconds, 1e-6)
    return struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))


class Connection:
    """One socket to a server, with a :class:`~sqla_memcache.protocol.buffer.ReplyBuffer`.

    Every blocking call takes the *deadline* of the command it serves (a
    :func:`time.monotonic` time, or None for none): before each ``send`` or
    ``recv`` the socket's timeout is lowered to the time left, so a server
    that drips a reply cannot hold a command past its deadline, however
    often it sends a byte.  Once the deadline has passed, bytes that already
    arrived are still read for a short grace (another server's slow reply
    in the same ``get_multi`` does not cost this one its answer) but nothing
    is waited for: :class:`ConnectionLostError` ("timed out").
    """

    __slots__ = ("sock", "rb", "_recv", "_send", "timeout", "_timeout_now", "_kernel")

    def __init__(self, sock: socket.socket, timeout: Optional[float] = None, kernel_timeouts: bool = False) -> None:
        self.sock = sock
        self.rb = ReplyBuffer()
        # Bound methods looked up once: these run on every command.
        self._recv = sock.recv
        self._send = sock.send
        #: The timeout of one wait when a command has time to spare (socket_timeout).
        self.timeout = timeout
        self._timeout_now = timeout
        #: True when the timeouts are the kernel's (SO_RCVTIMEO/SO_SNDTIMEO on a
        #: blocking socket), False for Python's (TLS sockets).
        self._kernel = kernel_timeouts

    # -- timeouts -------------------------------------------------------------
    def _set_timeout(self, seconds: Optional[float]) -> None:
        if self._kernel:
            tv = _timeval(seconds) if seconds is not None else struct.pack("ll", 0, 0)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        else:
            self.sock.settimeout(seconds)
        self._timeout_now = seconds

    def _time_left(self, deadline: Optional[float]) -> bool:
        """Before a blocking call: False when *deadline* has passed, else True with
        the socket's timeout lowered to the time left (when that is much less)."""
        if deadline is None:
            return True
        left = deadline - monotonic()
        if left <= 0:
            return False
        current = self._timeout_now
        # 10% slack: a command that just started keeps the timeout it has (no syscall).
        if current is None or left < current * 0.9:
            self._set_timeout(left)
        return True

    def restore_timeout(self) -> None:
        """Give the socket back its full timeout (before it returns to the pool)."""
        if self._timeout_now != self.timeout:
            self._set_timeout(self.timeout)

    # -- sending and receiving ------------------------------------------------
    def send(self, data: bytes, deadline: Optional[float] = None) -> None:
        """Send all of *data* by *deadline*; raises ConnectionLostError (socket error, "timed out")."""
        self.request(data, None, deadline)

    def _send_rest(self, data: bytes, sent: int, deadline: Optional[float]) -> None:
        """What a first ``send`` left of *data* (the socket buffer was full); raises OSError."""
        view = memoryview(data)[sent:]
        while view:
            if not self._time_left(deadline):
                raise _deadline_passed()
            view = view[self._send(view):]

    def request(self, data: bytes, parse: Optional[Callable[[ReplyBuffer], Any]], deadline: Optional[float] = None,
                fresh: bool = False) -> Any:
        """Send *data*, then :meth:`read` its reply with *parse* (None: send only), by *deadline*.

        One time check for both: the reply's first wait follows the send at
        once, under the timeout that check left on the socket.  *fresh*: the
        caller has just computed *deadline* from a budget no shorter than this
        socket's timeout (:meth:`Host.exchange <sqla_memcache.transport.host.Host.exchange>`),
        so time is left and there is no timeout to lower: no check.  Raises
        ConnectionLostError (socket error, EOF, "timed out") and what *parse* raises.
        """
        try:
            if not (fresh or self._time_left(deadline)):
                raise _deadline_passed()
            sent = self._send(data)
            if sent != len(data):
                self._send_rest(data, sent, deadline)
            if parse is None:
                return None
            chunk = self._recv(RECV_SIZE)
        except OSError as exc:
            raise as_lost(exc) from exc
        if not chunk:
            raise ConnectionLostError("connection closed by server")
        return self.read(parse, deadline, chunk)

    def recv(self, deadline: Optional[float] = None, size: int = RECV_SIZE, flags: int = 0) -> bytes:
        """At least one byte (at most *size*), waiting until *deadline* at most.

        Just after the deadline (a grace of a fifth of the socket timeout)
        only bytes already received by the kernel are returned, then nothing.
        Raises ConnectionLostError on EOF, a socket error or when nothing came in time.
        """
        try:
            if self._time_left(deadline):
                chunk = self._recv(size, flags) if flags else self._recv(size)
            elif deadline is not None and monotonic() <= deadline + 0.2 * (self.timeout or 0.25):
                chunk = self._recv_ready(size)
            else:
                raise _deadline_passed()
        except OSError as exc:
            raise as_lost(exc) from exc
        if not chunk:
            raise ConnectionLostError("connection closed by server")
        return chunk

    def _recv_ready(self, size: int) -> bytes:
        """What the kernel already holds, without waiting; ConnectionLostError if nothing."""
        try:
            if self._kernel:
                return self._recv(size, socket.MSG_DONTWAIT)
            self._set_timeout(1e-6)
            return self._recv(size)
        except (BlockingIOError, TimeoutError, ssl.SSLWantReadError):
            raise _deadline_passed() from None

    def fill(self, deadline: Optional[float] = None, size: int = RECV_SIZE) -> None:
        """Receive at least one byte into the buffer."""
        self.rb.feed(self.recv(deadline, size))

    def read(self, parse: Callable[[ReplyBuffer], Any], deadline: Optional[float] = None,
             chunk: Optional[bytes] = None) -> Any:
        """Run *parse* until it has a whole reply, receiving as needed until *deadline*
        (*chunk*: the reply's first bytes, already received)."""
        rb = self.rb
        if rb.pos == len(rb.buf) and not rb._pending:
            # Nothing buffered (the usual case): the first chunk is the buffer.
            rb.buf = self.recv(deadline) if chunk is None else chunk
            rb.pos = rb.mark = 0
        elif chunk is not None:
            rb.feed(chunk)
        reply = parse(rb)
        if reply is INCOMPLETE:
            reply = self._read_rest(parse, deadline)
        if len(rb.buf) > KEEP_BYTES and rb.pos == len(rb.buf) and not rb._pending:
            rb.buf = b""  # an idle pooled connection keeps no long reply alive
            rb.pos = rb.mark = 0
        return reply

    def _read_rest(self, parse: Callable[[ReplyBuffer], Any], deadline: Optional[float]) -> Any:
        """:meth:`read` once the first parse said INCOMPLETE: receive what the parser
        needs (at least ``rb.need`` bytes), parse again, until the reply is whole."""
        rb = self.rb
        size = RECV_SIZE
        while True:
            # Receive at least what the parser said it needs before parsing again.
            missing = rb.need - rb.available()
            rb.need = 0  # (a parser that answers INCOMPLETE sets it, or leaves it 0)
            if missing <= size:
                chunk = self.recv(deadline, size)
                rb.feed(chunk)
                if len(chunk) == size and size < BULK_RECV_SIZE:
                    size *= 4  # a long reply is streaming in: fewer, larger reads
            else:
                # A large value: let the kernel gather the known remainder.
                for chunk in self._recv_exactly(missing, deadline):
                    rb.feed(chunk)
            reply = parse(rb)
            if reply is not INCOMPLETE:
                return reply

    def _recv_exactly(self, count: int, deadline: Optional[float]) -> list:
        """*count* bytes as a list of chunks, each gathered by the kernel in one
        call (MSG_WAITALL) where it can; *deadline* bounds the whole wait.
        Raises ConnectionLostError on EOF or timeout."""
        parts = []
        flags = _WAITALL if self._kernel else 0
        while count > 0:
            chunk = self.recv(deadline, count, flags)
            parts.append(chunk)
            count -= len(chunk)
        return parts

    def read_line(self, deadline: Optional[float] = None) -> bytes:
        rb = self.rb
        while True:
            line = rb.line()
            if line is not None:
                return line
            self.fill(deadline)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:  # already broken; nothing to release
            pass


def _deadline_passed() -> ConnectionLostError:
    return ConnectionLostError("timed out: no complete reply by the command's deadline")



def fault_text(exc: BaseException) -> str:
    """How a connection fault reads in logs, debug lines and dead-host reasons."""
    if isinstance(exc, (TimeoutError, BlockingIOError)):
        return "timed out"
    return str(exc) or type(exc).__name__


def as_lost(exc: BaseException) -> ConnectionLostError:
    """The :class:`ConnectionLostError` for an ``OSError`` (chained to it)."""
    if isinstance(exc, ConnectionLostError):
        return exc
    err = ConnectionLostError(fault_text(exc))
    err.__cause__ = exc
    return err
