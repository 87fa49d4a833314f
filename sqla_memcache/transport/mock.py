"""An in-memory memcached for unit tests: :class:`MockServer`, :class:`MockSocket`, :class:`MockHost`.

No socket, no process: a :class:`MockServer` keeps items in a dict and
answers the text-protocol commands the client sends (``get``/``gets``, the
storage commands, ``delete``, ``incr``/``decr``, ``touch``, ``flush_all``,
``version``, ``quit``; ``noreply`` honoured).  A :class:`MockSocket` is what a
:class:`~.connection.Connection` talks to; it hands replies back in pieces of
``chunk`` bytes, so every split a network could produce can be tried.
:class:`MockHost` is a :class:`~.host.Host` whose connections are mock ones,
and :func:`mock_client_class` makes a client class that uses it::

    client = mock_client_class(Client)(["mock:1"])   # a Client on a MockServer
    client.set("k", b"v"); assert client.get("k") == b"v"

Faults are scripted: ``server.replies`` (a list of byte strings) overrides
the next answers, ``server.down = True`` refuses connections, and a socket's
``eof_after`` drops the connection after that many bytes were read.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Type, TypeVar

from .host import Host

_C = TypeVar("_C")

_STORAGE = {b"set", b"add", b"replace", b"append", b"prepend", b"cas"}


class MockServer:
    """A dict-backed memcached answering one request buffer at a time (no expiry clock)."""

    def __init__(self) -> None:
        #: key -> (flags, data, cas)
        self.items: Dict[bytes, Tuple[int, bytes, int]] = {}
        #: Every request buffer received, in order (for asserts on the wire bytes).
        self.received: List[bytes] = []
        #: Scripted answers: while not empty, each request gets the next one instead.
        self.replies: List[bytes] = []
        #: True: connections are refused (``ConnectionRefusedError``).
        self.down = False
        self._cas = 0
        self._partial = b""

    def handle(self, data: bytes) -> bytes:
        """The reply bytes to *data* (complete commands; a partial one waits for the rest)."""
        self.received.append(data)
        if self.replies:
            return self.replies.pop(0)
        buf = self._partial + data
        out: List[bytes] = []
        while True:
            eol = buf.find(b"\r\n")
            if eol < 0:
                break
            words = buf[:eol].split(b" ")
            if words[0] in _STORAGE:
                size = int(words[4])
                if len(buf) < eol + 2 + size + 2:
                    break
                block = buf[eol + 2:eol + 2 + size]
                buf = buf[eol + 2 + size + 2:]
                out.append(self._store(words, block))
            else:
                buf = buf[eol + 2:]
                out.append(self._command(words))
        self._partial = buf
        return b"".join(out)

    def _next_cas(self) -> int:
        self._cas += 1
        return self._cas

    def _store(self, words: List[bytes], block: bytes) -> bytes:
        cmd, key, flags = words[0], words[1], int(words[2])
        noreply = words[-1] == b"noreply"
        old = self.items.get(key)
        reply = b"STORED\r\n"
        if cmd == b"add" and old is not None or cmd in (b"replace", b"append", b"prepend") and old is None:
            reply = b"NOT_STORED\r\n"
        elif cmd == b"cas" and old is None:
            reply = b"NOT_FOUND\r\n"
        elif cmd == b"cas" and old[2] != int(words[5]):
            reply = b"EXISTS\r\n"
        elif cmd == b"append":
            self.items[key] = (old[0], old[1] + block, self._next_cas())
        elif cmd == b"prepend":
            self.items[key] = (old[0], block + old[1], self._next_cas())
        else:
            self.items[key] = (flags, block, self._next_cas())
        return b"" if noreply else reply

    def _command(self, words: List[bytes]) -> bytes:
        cmd = words[0]
        noreply = words[-1] == b"noreply"
        if cmd in (b"get", b"gets"):
            out = []
            for key in words[1:]:
                item = self.items.get(key)
                if item is not None:
                    cas = b" %d" % item[2] if cmd == b"gets" else b""
                    out.append(b"VALUE %s %d %d%s\r\n%s\r\n" % (key, item[0], len(item[1]), cas, item[1]))
            return b"".join(out) + b"END\r\n"
        if cmd == b"delete":
            reply = b"DELETED\r\n" if self.items.pop(words[1], None) is not None else b"NOT_FOUND\r\n"
        elif cmd in (b"incr", b"decr"):
            item = self.items.get(words[1])
            if item is None:
                reply = b"NOT_FOUND\r\n"
            elif not item[1].isdigit():
                reply = b"CLIENT_ERROR cannot increment or decrement non-numeric value\r\n"
            else:
                delta = int(words[2])
                value = int(item[1]) + delta if cmd == b"incr" else max(int(item[1]) - delta, 0)
                value %= 1 << 64
                self.items[words[1]] = (item[0], b"%d" % value, self._next_cas())
                reply = b"%d\r\n" % value
        elif cmd == b"touch":
            reply = b"TOUCHED\r\n" if words[1] in self.items else b"NOT_FOUND\r\n"
        elif cmd == b"flush_all":
            self.items.clear()
            reply = b"OK\r\n"
        elif cmd == b"version":
            reply = b"VERSION 1.6.0-mock\r\n"
        elif cmd == b"quit":
            reply = b""
        else:
            reply = b"ERROR\r\n"
        return b"" if noreply else reply


class MockSocket:
    """The socket a :class:`~.connection.Connection` uses, wired to a :class:`MockServer`.

    ``recv`` returns at most ``chunk`` bytes of the pending reply; with nothing
    pending it raises ``TimeoutError`` (the server is silent), after
    :meth:`close` or past ``eof_after`` bytes it returns ``b""`` (EOF).
    """

    def __init__(self, server: MockServer, chunk: int = 1 << 20, eof_after: Optional[int] = None) -> None:
        self.server = server
        self.chunk = chunk
        self.eof_after = eof_after
        self.closed = False
        self._out = b""
        self._read = 0

    def send(self, data: Any) -> int:
        if self.closed:
            raise BrokenPipeError("mock socket closed")
        self._out += self.server.handle(bytes(data))
        return len(data)

    def recv(self, size: int, flags: int = 0) -> bytes:
        if self.closed:
            return b""
        if self.eof_after is not None and self._read >= self.eof_after:
            return b""
        if not self._out:
            raise TimeoutError("timed out")
        size = min(size, self.chunk)
        if self.eof_after is not None:
            size = min(size, self.eof_after - self._read)
        piece, self._out = self._out[:size], self._out[size:]
        self._read += len(piece)
        return piece

    def setsockopt(self, *args: Any) -> None:
        pass

    def settimeout(self, timeout: Optional[float]) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class MockHost(Host):
    """A :class:`~.host.Host` on a :class:`MockServer`: the server named by the spec's port.

    ``MockHost.servers`` maps a port to its server, created on first use, so
    ``["mock:1", "mock:2"]`` are two independent servers (shared by every
    client of the process until :meth:`reset`); ``MockHost.chunk`` is the
    size of the reply pieces of new connections.
    """

    servers: Dict[int, MockServer] = {}
    chunk = 1 << 20

    @classmethod
    def reset(cls) -> None:
        cls.servers = {}

    @property
    def server(self) -> MockServer:
        return MockHost.servers.setdefault(self.port or 0, MockServer())

    def _open_socket(self, connect_timeout: Optional[float]) -> Any:
        if self.server.down:
            raise ConnectionRefusedError("mock server %s is down" % self.label)
        return MockSocket(self.server, self.chunk)

    def _kernel_timeouts(self) -> bool:
        return False


def mock_client_class(client_class: Type[_C]) -> Type[_C]:
    """A subclass of *client_class* (``Client``) whose servers are :class:`MockHost` ones."""
    return type("Mock" + client_class.__name__, (client_class,), {"host_class": MockHost})  # type: ignore[return-value]
