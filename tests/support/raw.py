"""The memcached text protocol over a fresh socket, for tests that must not trust the client under test.

``raw_command`` sends bytes and reads until a terminator; ``raw`` is the same with
a ``get``'s ``END`` as the default terminator; ``stats`` parses ``stats``;
``version`` and ``reset`` are what the fixtures use to probe and empty a server.
"""

from __future__ import annotations

import socket
import ssl
import time
from typing import Dict, Optional

from sqla_memcache.memcached_process import split_address


def raw_command(
    address: str,
    command: bytes,
    terminator: bytes = b"\r\n",
    timeout: float = 3.0,
    ssl_context: Optional[ssl.SSLContext] = None,
) -> bytes:
    """Send one command over a fresh connection and read until the reply ends with ``terminator``.

    Returns the whole reply. Raises OSError (including ``socket.timeout``) or
    ``ssl.SSLError`` when the server cannot be reached or does not answer in time.
    """
    host, port = split_address(address)
    with socket.create_connection((host, port), timeout=timeout) as plain:
        sock = ssl_context.wrap_socket(plain, server_hostname=host) if ssl_context else plain
        try:
            sock.sendall(command)
            reply = b""
            while not reply.endswith(terminator):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"{address} closed the connection after {reply!r}")
                reply += chunk
            return reply
        finally:
            if sock is not plain:
                sock.close()


def raw(address: str, command: bytes, until: bytes = b"END\r\n") -> bytes:
    """One command on a fresh connection, read until *until* (a ``get``'s ``END`` by default)."""
    return raw_command(address, command, until)


def stats(address: str, group: bytes = b"") -> Dict[str, int]:
    """The numeric ``STAT`` lines of ``stats [group]`` as a dict."""
    out = {}
    command = b"stats " + group + b"\r\n" if group else b"stats\r\n"
    for line in raw(address, command).decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT" and parts[2].lstrip("-").isdigit():
            out[parts[1]] = int(parts[2])
    return out


def version(address: str, ssl_context: Optional[ssl.SSLContext] = None, timeout: float = 3.0) -> str:
    """Return the server's version string (``version`` command); raises OSError when unreachable."""
    reply = raw_command(address, b"version\r\n", ssl_context=ssl_context, timeout=timeout)
    if not reply.startswith(b"VERSION "):
        raise ConnectionError(f"{address} answered {reply!r} to version")
    return reply[len(b"VERSION ") :].strip().decode()


def reset(address: str, ssl_context: Optional[ssl.SSLContext] = None) -> None:
    """Empty the server (``flush_all``, flushed items reclaimed) and zero its counters (``stats reset``)."""
    reply = raw_command(address, b"flush_all\r\nstats reset\r\n", terminator=b"RESET\r\n", ssl_context=ssl_context)
    if reply != b"OK\r\nRESET\r\n":
        raise ConnectionError(f"{address} answered {reply!r} to flush_all/stats reset")
    # flush_all leaves the old items counted in curr_items until memcached reclaims them
    # lazily; have the LRU crawler reclaim them now, so a test can count its own items.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        crawl = raw_command(address, b"lru_crawler crawl all\r\n", ssl_context=ssl_context)
        if not crawl.startswith((b"OK", b"BUSY")):
            break  # a server without the crawler: counts stay approximate
        stats_reply = raw_command(address, b"stats\r\n", terminator=b"END\r\n", ssl_context=ssl_context)
        if b"\r\nSTAT curr_items 0\r\n" in stats_reply:
            break
        time.sleep(0.01)
    raw_command(address, b"stats reset\r\n", terminator=b"RESET\r\n", ssl_context=ssl_context)
