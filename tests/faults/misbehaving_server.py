"""A tiny memcached-speaking TCP server whose replies a test can script.

A real memcached never sends a malformed, truncated, oversized or misaddressed
reply, and cannot be told to answer one command late; this server can. It
keeps items in a dict and answers ``get``/``gets``, the storage commands,
``delete``, ``incr``/``decr``, ``touch``, ``flush_all``, ``version`` and
``stats`` like memcached would; a test installs a *rule* to change that::

    server = MisbehavingServer().start()
    server.rule = lambda req: [b"VALUE other 0 1\\r\\nx\\r\\nEND\\r\\n"] if req.name == b"get" else None

A rule gets a :class:`Request` and returns None (answer normally) or a list of
actions run in order: ``bytes`` are sent, a ``float``/``int`` sleeps that many
seconds, :data:`CLOSE` closes the connection, :data:`NORMAL` sends the normal
reply. Every received command line is recorded in :attr:`MisbehavingServer.lines`.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

CLOSE = object()
NORMAL = object()

Action = Union[bytes, float, int, object]
Rule = Callable[["Request"], Optional[Sequence[Action]]]

_STORAGE = {b"set", b"add", b"replace", b"append", b"prepend", b"cas"}


@dataclass
class Request:
    """One command as received: ``line`` without ``\\r\\n``, ``data`` for storage commands."""

    line: bytes
    data: Optional[bytes]
    connection: int  # 1 for the first accepted connection, 2 for the next...
    number: int  # 1 for the first command of the server's life, 2 for the next...
    normal: bytes  # what a well-behaved memcached would answer

    @property
    def name(self) -> bytes:
        return self.line.split(b" ", 1)[0]

    @property
    def keys(self) -> List[bytes]:
        parts = self.line.split(b" ")
        if self.name in (b"get", b"gets"):
            return parts[1:]
        return parts[1:2]


class MisbehavingServer:
    """See the module docstring. ``start()`` binds a free loopback port; ``close()`` stops."""

    def __init__(self, rule: Optional[Rule] = None) -> None:
        self.rule = rule
        self.items: Dict[bytes, Tuple[int, bytes]] = {}
        self.lines: List[bytes] = []
        self.connections = 0
        self._lock = threading.Lock()
        self._listener: Optional[socket.socket] = None
        self._open: List[socket.socket] = []
        self._closed = False
        self._cas = 0

    # -- lifecycle -------------------------------------------------------
    @property
    def address(self) -> str:
        assert self._listener is not None
        host, port = self._listener.getsockname()
        return "%s:%d" % (host, port)

    @property
    def servers(self) -> List[str]:
        return [self.address]

    def start(self) -> "MisbehavingServer":
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, daemon=True, name="misbehaving-accept").start()
        return self

    def close(self) -> None:
        self._closed = True
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            _close(conn)

    def drop_connections(self) -> None:
        """Close every open client connection (the server keeps listening)."""
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            _close(conn)

    def commands(self, name: bytes) -> int:
        """How many commands named *name* were received."""
        with self._lock:
            return sum(1 for line in self.lines if line.split(b" ", 1)[0] == name)

    # -- serving ---------------------------------------------------------
    def _accept(self) -> None:
        assert self._listener is not None
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
                number = self.connections
                self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True, name="misbehaving-conn").start()

    def _serve(self, conn: socket.socket, connection: int) -> None:
        buf = b""
        try:
            while True:
                while b"\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                line, buf = buf.split(b"\r\n", 1)
                data = None
                parts = line.split(b" ")
                if parts[0] in _STORAGE and len(parts) >= 5 and parts[4].isdigit():
                    size = int(parts[4])
                    while len(buf) < size + 2:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buf += chunk
                    data, buf = buf[:size], buf[size + 2:]
                with self._lock:
                    self.lines.append(line)
                    number = len(self.lines)
                    normal = self._answer(parts, data)
                request = Request(line, data, connection, number, normal)
                actions = self.rule(request) if self.rule is not None else None
                if actions is None:
                    actions = [NORMAL]
                for action in actions:
                    if action is CLOSE:
                        return
                    if action is NORMAL:
                        if not _is_noreply(parts):
                            conn.sendall(normal)
                    elif isinstance(action, (bytes, bytearray)):
                        conn.sendall(action)
                    elif isinstance(action, (int, float)):
                        time.sleep(action)
                    else:
                        raise ValueError("unknown action %r" % (action,))
        except OSError:
            return
        finally:
            _close(conn)

    def _answer(self, parts: List[bytes], data: Optional[bytes]) -> bytes:
        """What memcached would answer (items updated under the lock)."""
        name = parts[0]
        if name in (b"get", b"gets"):
            out = []
            for key in parts[1:]:
                if key in self.items:
                    flags, value = self.items[key]
                    cas = b" %d" % self._cas if name == b"gets" else b""
                    out.append(b"VALUE %s %d %d%s\r\n%s\r\n" % (key, flags, len(value), cas, value))
            return b"".join(out) + b"END\r\n"
        if name in _STORAGE and data is not None:
            key, flags = parts[1], int(parts[2])
            exists = key in self.items
            if name == b"add" and exists or name in (b"replace", b"append", b"prepend") and not exists:
                return b"NOT_STORED\r\n"
            if name == b"append":
                data = self.items[key][1] + data
            elif name == b"prepend":
                data = data + self.items[key][1]
            self._cas += 1
            self.items[key] = (flags, data)
            return b"STORED\r\n"
        if name == b"delete":
            return b"DELETED\r\n" if self.items.pop(parts[1], None) is not None else b"NOT_FOUND\r\n"
        if name in (b"incr", b"decr"):
            if parts[1] not in self.items:
                return b"NOT_FOUND\r\n"
            flags, value = self.items[parts[1]]
            number = int(value) + (int(parts[2]) if name == b"incr" else -int(parts[2]))
            self.items[parts[1]] = (flags, b"%d" % max(number, 0))
            return self.items[parts[1]][1] + b"\r\n"
        if name == b"touch":
            return b"TOUCHED\r\n" if parts[1] in self.items else b"NOT_FOUND\r\n"
        if name == b"flush_all":
            self.items.clear()
            return b"OK\r\n"
        if name == b"version":
            return b"VERSION 1.6.18-misbehaving\r\n"
        if name == b"stats":
            return b"STAT pid 1\r\nSTAT curr_items %d\r\nEND\r\n" % len(self.items)
        return b"ERROR\r\n"


def _close(conn: socket.socket) -> None:
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        conn.close()
    except OSError:
        pass


#: Where memcached reads ``noreply``: the token after a command's arguments (``cas`` has
#: one more), never in ``get``/``gets``; a key spelled ``noreply`` is a key.
_NOREPLY_AT = {b"set": 5, b"add": 5, b"replace": 5, b"append": 5, b"prepend": 5, b"cas": 6,
               b"delete": 2, b"incr": 3, b"decr": 3, b"touch": 3}


def _is_noreply(parts: List[bytes]) -> bool:
    at = _NOREPLY_AT.get(parts[0])
    return at is not None and len(parts) > at and parts[-1] == b"noreply"
