"""Servers and their connections: sockets, buffering, timeouts, dead-host bookkeeping.

A :class:`Host` is one memcached server as named in the server list.  It
keeps a small pool of idle :class:`Connection` objects: a thread takes one
for a whole command (send and complete reply) and gives it back, so replies
can never interleave between threads, and threads sharing a ``Client`` run
their commands in parallel.  A connection that saw any fault (timeout,
socket error, EOF, unparseable reply) is closed, never reused with half-read
data, and the host is marked dead for ``dead_retry`` seconds.
"""
from __future__ import annotations

import logging
import re
import socket
import ssl
import struct
import sys
import time
from collections import deque
from time import monotonic
from typing import Any, Callable, Deque, Optional, Tuple, Union

from . import protocol
from .errors import ConnectionLostError, ProtocolError

log = logging.getLogger(__name__)

DEFAULT_PORT = 11211

_UNIX = re.compile(r"^unix:(?P<path>.*)$")
_INET6 = re.compile(r"^inet6:\[(?P<host>[^\[\]]+)\](:(?P<port>[0-9]+))?$")
_INET = re.compile(r"^(inet:)?(?P<host>[^:]+)(:(?P<port>[0-9]+))?$")

#: Bytes asked of one ``recv`` when the reply size is unknown.
RECV_SIZE = 65536
#: ... and once a long reply fills whole reads (a large ``get_multi``).
BULK_RECV_SIZE = 256 << 10

_HAS_SO_RCVTIMEO = sys.platform.startswith("linux")
_WAITALL = getattr(socket, "MSG_WAITALL", 0)


def parse_server(spec: Union[str, Tuple[str, int]]) -> Tuple[int, Any, int]:
    """``"host:port"``, ``("host:port", weight)``, ``"unix:/path"``,
    ``"inet6:[::1]:11211"`` -> (family, address, weight)."""
    weight = 1
    if isinstance(spec, tuple):
        spec, weight = spec
    m = _UNIX.match(spec)
    if m:
        return socket.AF_UNIX, m.group("path"), weight
    m = _INET6.match(spec)
    if m:
        return socket.AF_INET6, (m.group("host"), int(m.group("port") or DEFAULT_PORT)), weight
    m = _INET.match(spec)
    if m:
        return socket.AF_INET, (m.group("host"), int(m.group("port") or DEFAULT_PORT)), weight
    raise ValueError("Unable to parse connection string: %r" % (spec,))


def _timeval(seconds: float) -> bytes:
    """``struct timeval`` for SO_RCVTIMEO/SO_SNDTIMEO (never 0, which would mean "wait forever")."""
    seconds = max(seconds, 1e-6)
    return struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))


class Connection:
    """One socket to a server, with a :class:`~sqla_memcache.protocol.ReplyBuffer`.

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
        self.rb = protocol.ReplyBuffer()
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
        """Send all of *data* by *deadline*; raises OSError or ConnectionLostError ("timed out")."""
        if not self._time_left(deadline):
            raise _deadline_passed()
        sent = self._send(data)
        if sent == len(data):
            return  # the usual case: one syscall
        view = memoryview(data)[sent:]
        while view:
            if not self._time_left(deadline):
                raise _deadline_passed()
            view = view[self._send(view):]

    def recv(self, deadline: Optional[float] = None, size: int = RECV_SIZE, flags: int = 0) -> bytes:
        """At least one byte (at most *size*), waiting until *deadline* at most.

        Just after the deadline (a grace of a fifth of the socket timeout)
        only bytes already received by the kernel are returned, then nothing.
        Raises ConnectionLostError on EOF or when nothing came in time.
        """
        if self._time_left(deadline):
            chunk = self._recv(size, flags) if flags else self._recv(size)
        elif deadline is not None and monotonic() <= deadline + 0.2 * (self.timeout or 0.25):
            chunk = self._recv_ready(size)
        else:
            raise _deadline_passed()
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

    def read(self, parse: Callable[[protocol.ReplyBuffer], Any], deadline: Optional[float] = None) -> Any:
        """Run *parse* until it has a whole reply, receiving as needed until *deadline*."""
        rb = self.rb
        if rb.pos == len(rb.buf) and not rb._pending:
            # Nothing buffered (the usual case): receive before parsing.
            rb.buf = self.recv(deadline)
            rb.pos = rb.mark = 0
        size = RECV_SIZE
        while True:
            rb.need = 0
            reply = parse(rb)
            if reply is not protocol.INCOMPLETE:
                if rb.pos == len(rb.buf) and not rb._pending:
                    rb.clear()  # an idle pooled connection keeps no reply bytes alive
                return reply
            # Receive at least what the parser said it needs before parsing again.
            missing = rb.need - rb.available()
            if missing <= size:
                chunk = self.recv(deadline, size)
                rb.feed(chunk)
                if len(chunk) == size and size < BULK_RECV_SIZE:
                    size *= 4  # a long reply is streaming in: fewer, larger reads
                continue
            # A large value: let the kernel gather the known remainder.
            for chunk in self._recv_exactly(missing, deadline):
                rb.feed(chunk)

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

    def recv_block(self, head: memoryview, size: int, trailer: bytes, deadline: Optional[float] = None) -> bytes:
        """Finish a data block whose first bytes (*head*, fewer than *size*) are
        already here: receive the rest with MSG_WAITALL, then exactly *trailer*.

        One copy of the value (the join); raises ConnectionLostError on EOF or
        timeout and ProtocolError when the bytes after the block are not *trailer*.
        """
        data = b"".join([head] + self._recv_exactly(size - len(head), deadline))
        tail = b"".join(self._recv_exactly(len(trailer), deadline))
        if tail != trailer:
            raise ProtocolError("data block of %d bytes followed by %r, not %r" % (size, tail[:20], trailer))
        return data

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


class Host:
    """One server of the list: address, weight, dead-until time and idle connections."""

    def __init__(
        self,
        spec: Union[str, Tuple[str, int]],
        dead_retry: float = 30,
        socket_timeout: Optional[float] = 3,
        flush_on_reconnect: int = 0,
        ssl_context: Optional[ssl.SSLContext] = None,
        debuglog: Callable[[str], None] = lambda msg: None,
        max_idle: int = 32,
        deadline: Optional[float] = None,
    ) -> None:
        self.family, self.address, self.weight = parse_server(spec)
        if self.family == socket.AF_UNIX:
            self.ip, self.port = None, None
        else:
            self.ip, self.port = self.address
        self.dead_retry = dead_retry
        self.socket_timeout = socket_timeout
        #: Seconds one command may take, send and whole reply (None: unbounded);
        #: ``deadline`` when given, else ``socket_timeout``.
        self.budget = deadline if deadline is not None else socket_timeout
        #: Longest single wait (connect, one send, one recv).
        self.io_timeout: Optional[float] = (
            self.budget if socket_timeout is None or self.budget is None else min(socket_timeout, self.budget)
        )
        self.flush_on_reconnect = flush_on_reconnect
        self.ssl_context = ssl_context
        self.debuglog = debuglog
        self.max_idle = max_idle
        self.deaduntil = 0.0
        self.flush_on_next_connect = False
        self._needs_revive = False
        self._idle: Deque[Connection] = deque()
        #: Called with this host after it reconnects following a dead period.
        self.on_revive: Optional[Callable[["Host"], None]] = None

    # python-memcached's text for a host, used in debug messages and stats names.
    def __str__(self) -> str:
        d = " (dead until %d)" % self.deaduntil if self.deaduntil else ""
        if self.family == socket.AF_INET:
            return "inet:%s:%d%s" % (self.address[0], self.address[1], d)
        if self.family == socket.AF_INET6:
            return "inet6:[%s]:%d%s" % (self.address[0], self.address[1], d)
        return "unix:%s%s" % (self.address, d)

    def __repr__(self) -> str:
        return "<Host %s weight=%d>" % (self, self.weight)

    @property
    def label(self) -> str:
        """``host:port`` (or the unix path): stable name used by consistent hashing."""
        if self.family == socket.AF_UNIX:
            return "unix:%s" % self.address
        return "%s:%d" % (self.address[0], self.address[1])

    def stats_name(self) -> str:
        """python-memcached's server name in ``get_stats()`` results."""
        if self.family == socket.AF_UNIX:
            return "unix:%s (%s)" % (self.address, self.weight)
        return "%s:%s (%s)" % (self.ip, self.port, self.weight)

    # -- dead-host bookkeeping ---------------------------------------------
    def is_dead(self) -> bool:
        if self.deaduntil:
            if self.deaduntil > time.time():
                return True
            self.deaduntil = 0.0
        return False

    def mark_dead(self, reason: str) -> None:
        """Close idle sockets and refuse this host for ``dead_retry`` seconds."""
        self.debuglog("MemCache: %s: %s.  Marking dead." % (self, reason))
        log.warning("memcached %s marked dead for %ss: %s", self.label, self.dead_retry, reason)
        self.deaduntil = time.time() + self.dead_retry
        self._needs_revive = True
        if self.flush_on_reconnect:
            self.flush_on_next_connect = True
        self.close_idle()

    def deadline(self) -> Optional[float]:
        """The :func:`time.monotonic` time by which a command starting now must end."""
        budget = self.budget
        return None if budget is None else monotonic() + budget

    def usable(self) -> bool:
        """True when a command can be sent now (connecting if needed)."""
        if self._idle:
            return True
        if self.deaduntil and self.is_dead():
            return False
        conn = self.connect()
        if conn is None:
            return False
        self.release(conn)
        return True

    # -- connections ----------------------------------------------------------
    def connect(self, deadline: Optional[float] = None) -> Optional[Connection]:
        """Open a new connection (by *deadline* at the latest), or mark the host
        dead and return None."""
        if self.is_dead():
            return None
        timeout = self.io_timeout
        if deadline is not None:
            timeout = max(min(timeout, deadline - monotonic()), 1e-3) if timeout is not None else None
        try:
            sock = self._open_socket(timeout)
        except (OSError, ValueError) as exc:
            self.mark_dead("connect: %s" % (exc,))
            return None
        conn = Connection(sock, self.io_timeout, kernel_timeouts=self._kernel_timeouts())
        if self.flush_on_next_connect:
            self.flush_on_next_connect = False
            try:
                conn.send(b"flush_all\r\n", deadline)
                conn.read_line(deadline)
            except (OSError, ConnectionLostError, ProtocolError) as exc:
                conn.close()
                self.mark_dead("flush_all on reconnect: %s" % (exc,))
                return None
        if self._needs_revive:
            self._needs_revive = False
            if self.on_revive is not None:
                # Runs before this host serves anything again (e.g. the ORM
                # cache re-sends invalidations that failed while it was away).
                self.on_revive(self)
        return conn

    def _kernel_timeouts(self) -> bool:
        return self.ssl_context is None and self.io_timeout is not None and _HAS_SO_RCVTIMEO

    def _open_socket(self, connect_timeout: Optional[float]) -> socket.socket:
        sock = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            # connect and the TLS handshake are each bounded as a whole (CPython
            # counts the timeout down across the handshake's reads and writes).
            sock.settimeout(connect_timeout)
            sock.connect(self.address)
            if self.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                host = self.address[0] if self.family != socket.AF_UNIX else None
                sock = self.ssl_context.wrap_socket(sock, server_hostname=host)
                sock.settimeout(self.io_timeout)
            elif self._kernel_timeouts():
                # Kernel-side timeouts on a blocking socket: Python then skips
                # the poll() it makes before every recv on a socket with a
                # timeout, one syscall fewer per command.
                tv = _timeval(self.io_timeout)
                sock.settimeout(None)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)
        except BaseException:
            sock.close()
            raise
        return sock

    def acquire(self, deadline: Optional[float] = None) -> Optional[Connection]:
        """An idle connection, or a new one; None if the host is dead."""
        try:
            return self._idle.pop()
        except IndexError:
            return self.connect(deadline)

    def release(self, conn: Connection) -> None:
        """Give back a connection whose reply was read completely."""
        if conn._timeout_now != conn.timeout:
            try:
                conn.restore_timeout()
            except OSError:
                conn.close()
                return
        if len(self._idle) < self.max_idle and not self.deaduntil:
            self._idle.append(conn)
        else:
            conn.close()

    def close_idle(self) -> None:
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return
            conn.close()

    def idle_count(self) -> int:
        return len(self._idle)
