"""One memcached server of the list: :class:`Host` (address, pool of idle connections, dead-host bookkeeping).

A thread takes a :class:`~.connection.Connection` for a whole command (send
and complete reply) and gives it back, so replies can never interleave
between threads, and threads sharing a ``Client`` run their commands in
parallel.  :meth:`Host.exchange` is the one seam between the client and the
network: a request and a reply parser in, the parsed reply or a typed error
out.  A connection that saw any fault (timeout, socket error, EOF,
unparseable reply) is closed, never reused with half-read data, and the
host is marked dead for ``dead_retry`` seconds.
"""
from __future__ import annotations

import logging
import socket
import ssl
import time
from collections import deque
from time import monotonic
from typing import Any, Callable, Deque, Optional, Tuple, Union

from ..errors import ConnectionLostError, MemcacheError, ProtocolError, ServerDeadError
from ..protocol import FLUSH_ALL, QUIT, ReplyBuffer
from ..config import parse_server
from .connection import _HAS_SO_RCVTIMEO, Connection, _timeval, as_lost, fault_text

#: The logger names are documented (docs/configuration.md): dead hosts under
#: ``sqla_memcache.connection``, error replies under ``sqla_memcache.client``.
log = logging.getLogger("sqla_memcache.connection")
reply_log = logging.getLogger("sqla_memcache.client")



#: Faults after which a connection's stream position is unknown: close it, mark the host dead.
CONNECTION_FAULTS = (OSError, ConnectionLostError, ProtocolError)

Parser = Callable[[ReplyBuffer], Any]


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
        # One WARNING per outage: a host that failed again before it ever reconnected is
        # the same outage (its retries after each dead_retry are logged at DEBUG).
        level = logging.DEBUG if self._needs_revive else logging.WARNING
        log.log(level, "memcached %s marked dead for %ss: %s", self.label, self.dead_retry, reason)
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
                conn.send(FLUSH_ALL, deadline)
                conn.read_line(deadline)
            except CONNECTION_FAULTS as exc:
                conn.close()
                self.mark_dead("flush_all on reconnect: %s" % (exc,))
                return None
        if self._needs_revive:
            self._needs_revive = False
            log.info("memcached %s answers again", self.label)
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
            except OSError:  # a socket that cannot take a timeout is broken: drop it
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

    def quit_idle(self) -> None:
        """Send ``quit`` on every idle connection, then close them."""
        while True:
            try:
                conn = self._idle.pop()
            except IndexError:
                return
            try:
                conn.send(QUIT)
            except CONNECTION_FAULTS:  # closing anyway
                pass
            conn.close()

    # -- the exchange seam ------------------------------------------------------
    def exchange(self, data: bytes, parse: Optional[Parser], deadline: Optional[float] = None,
                 hold: bool = False) -> Any:
        """Send one command and parse its reply on a pooled connection, all by
        *deadline* (default: this host's, from now); *parse* None: no reply (``noreply``).

        Raises typed errors: no connection (:class:`ServerDeadError`); a
        connection fault closes the connection and marks the host dead
        (:class:`ConnectionLostError`, :class:`ProtocolError`); an error reply
        (``SERVER_ERROR``...) closes the connection only.  A connection goes
        back to the pool only after its reply was read completely.  *hold*
        (with *parse* None): return ``(connection, deadline)`` instead, its
        reply unread (:meth:`begin`, :meth:`send_ahead`).
        """
        if deadline is None:
            budget = self.budget
            # (the connections' timeout is never longer than the budget: see io_timeout)
            deadline = None if budget is None else monotonic() + budget
            fresh = True
        else:
            fresh = False
        try:
            conn = self._idle.pop()
        except IndexError:
            conn = self._connect_or_raise(deadline)
            fresh = False  # connecting took some of the time: the request checks what is left
        try:
            reply = conn.request(data, parse, deadline, fresh)
        except BaseException as exc:
            err = self._failed(conn, exc)
            if err is exc:
                raise
            raise err from exc
        if hold:
            return conn, deadline
        self.release(conn)
        return reply

    def begin(self, data: bytes, deadline: Optional[float]) -> Connection:
        """The first half of :meth:`exchange`: send *data* on a pooled
        connection and return it, its reply unread (``get_multi`` sends to
        every server before reading any reply).  Same errors as :meth:`exchange`."""
        return self.exchange(data, None, deadline, hold=True)[0]  # type: ignore[no-any-return]

    def send_ahead(self, data: bytes) -> Tuple[Connection, Optional[float]]:
        """:meth:`begin` for one command whose deadline starts now: ``(connection,
        deadline)``, to read the reply with :meth:`finish` by that deadline."""
        return self.exchange(data, None, None, hold=True)  # type: ignore[no-any-return]

    def finish(self, conn: Connection, parse: Optional[Parser], deadline: Optional[float]) -> Any:
        """The second half of :meth:`exchange`: read the reply on *conn* (from
        :meth:`begin`) and give the connection back."""
        try:
            reply = conn.read(parse, deadline) if parse is not None else None
        except BaseException as exc:
            err = self._failed(conn, exc)
            if err is exc:
                raise
            raise err from exc
        self.release(conn)
        return reply

    def _connect_or_raise(self, deadline: Optional[float]) -> Connection:
        conn = self.connect(deadline)
        if conn is None:
            raise ServerDeadError("memcached %s is dead" % self.label)
        return conn

    def _failed(self, conn: Connection, exc: BaseException) -> BaseException:
        """*conn* failed mid-command with *exc*: close it (its stream position is
        unknown) and return what to raise.  A connection fault also marks this
        host dead (the typed error); an error reply is logged (raised as it is);
        anything else (a cancel, an interrupt) is raised as it is."""
        conn.close()
        if isinstance(exc, CONNECTION_FAULTS):
            self.mark_dead(fault_text(exc))
            return exc if isinstance(exc, MemcacheError) else as_lost(exc)
        if isinstance(exc, MemcacheError):
            self.debuglog("%s: %s" % (self, exc))
            reply_log.info("memcached %s answered an error: %s", self.label, exc)
        return exc
