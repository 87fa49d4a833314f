"""The raw-socket floor: the limit for any Python request/response client.

Each operation is a pre-encoded request sent with one ``sendall`` and a read loop
(``recv_into`` a preallocated buffer) until the reply's terminator: ``END\\r\\n``
for ``get``, the expected number of reply bytes for ``set``. Nothing is parsed,
nothing is checked, no flags are decoded -- so a real client can only approach
this, never beat it by more than noise. The terminator test is only sound for the
benchmark's own values (they never end in ``END\\r\\n``).

Multi-key operations use the *pipelined* floor: all 100 keys in one
``get k1 ... k100\\r\\n``, or 100 ``set`` commands in one ``sendall``.
"""
from __future__ import annotations

import socket
import threading
from typing import Callable, Dict, List

_END = b"END\r\n"
_STORED = b"STORED\r\n"


class _Conn:
    """One TCP connection with a reusable receive buffer."""

    def __init__(self, host: str, port: int, bufsize: int) -> None:
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray(bufsize)
        self.view = memoryview(self.buf)

    def close(self) -> None:
        self.view.release()
        self.sock.close()


def _get_op(conn: _Conn, request: bytes) -> Callable[[], int]:
    send = conn.sock.sendall
    recv_into = conn.sock.recv_into
    buf = conn.buf
    view = conn.view

    def op() -> int:
        send(request)
        n = recv_into(view)
        while buf[n - 5:n] != _END:
            n += recv_into(view[n:])
        return n

    return op


def _fixed_reply_op(conn: _Conn, request: bytes, reply_len: int) -> Callable[[], int]:
    send = conn.sock.sendall
    recv_into = conn.sock.recv_into
    view = conn.view

    def op() -> int:
        send(request)
        n = recv_into(view)
        while n < reply_len:
            n += recv_into(view[n:])
        return n

    return op


def encode_set(key: str, value: bytes, flags: int = 0, exptime: int = 0) -> bytes:
    return b"set %s %d %d %d\r\n%s\r\n" % (key.encode(), flags, exptime, len(value), value)


class Floor:
    """Adapter with the same op factories as :mod:`bench.clients`."""

    name = "floor"
    label = "raw socket floor"
    available = True
    reason = ""

    def __init__(self, host: str, port: int, bufsize: int = 1 << 18) -> None:
        self.host, self.port, self.bufsize = host, port, bufsize
        self._conn = _Conn(host, port, bufsize)
        self._local = threading.local()
        self._thread_conns: List[_Conn] = []
        self._lock = threading.Lock()

    # -- single connection ops -------------------------------------------
    def make_get(self, key: str) -> Callable[[], int]:
        return _get_op(self._conn, b"get " + key.encode() + b"\r\n")

    def make_set(self, key: str, value: bytes) -> Callable[[], int]:
        return _fixed_reply_op(self._conn, encode_set(key, value), len(_STORED))

    def make_get_multi(self, keys: List[str]) -> Callable[[], int]:
        return _get_op(self._conn, b"get " + " ".join(keys).encode() + b"\r\n")

    def make_set_multi(self, mapping: Dict[str, bytes]) -> Callable[[], int]:
        request = b"".join(encode_set(k, v) for k, v in mapping.items())
        return _fixed_reply_op(self._conn, request, len(_STORED) * len(mapping))

    # -- shared by threads: one connection per thread (the floor has no lock) --
    def _thread_conn(self) -> _Conn:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _Conn(self.host, self.port, self.bufsize)
            with self._lock:
                self._thread_conns.append(conn)
        return conn

    def make_shared_get(self, key: str) -> Callable[[], int]:
        request = b"get " + key.encode() + b"\r\n"
        local = self._local
        thread_conn = self._thread_conn

        def op() -> int:
            conn = getattr(local, "conn", None) or thread_conn()
            send, recv_into, buf, view = conn.sock.sendall, conn.sock.recv_into, conn.buf, conn.view
            send(request)
            n = recv_into(view)
            while buf[n - 5:n] != _END:
                n += recv_into(view[n:])
            return n

        return op

    # -- verification (never timed) --------------------------------------
    def fetch(self, request: bytes) -> bytes:
        """Send ``request`` and return the whole reply (for checks and setup)."""
        sock = self._conn.sock
        sock.sendall(request)
        data = b""
        while not (data.endswith(_END) or data.endswith(_STORED)) or not data:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("memcached closed the connection")
            data += chunk
        return data

    def store(self, mapping: Dict[str, bytes]) -> None:
        """Set every key (flags 0, so every client reads the value back as bytes)."""
        request = b"".join(encode_set(k, v) for k, v in mapping.items())
        sock = self._conn.sock
        sock.sendall(request)
        want = len(_STORED) * len(mapping)
        got = b""
        while len(got) < want:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("memcached closed the connection")
            got += chunk
        if got != _STORED * len(mapping):
            raise RuntimeError(f"setup store failed: {got[:80]!r}")

    def reply_len_get(self, mapping: Dict[str, bytes]) -> int:
        """Byte length of a well-formed ``get`` reply for ``mapping`` (for checks)."""
        n = sum(len(b"VALUE %s 0 %d\r\n" % (k.encode(), len(v))) + len(v) + 2
                for k, v in mapping.items())
        return n + len(_END)

    def close(self) -> None:
        self._conn.close()
        with self._lock:
            for conn in self._thread_conns:
                conn.close()
            self._thread_conns.clear()
