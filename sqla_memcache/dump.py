"""Listing the keys of memcached servers: ``lru_crawler metadump all``, through the client.

Used by :class:`~sqla_memcache.MemcachedDict` (iteration, ``len``, ``clear``)
and by ``sqla-memcache keys`` / ``stats``. A dump is a best-effort snapshot
that walks the whole cache; servers started with ``-X`` refuse it
(:class:`~sqla_memcache.errors.DumpingNotAllowed`).
"""
from __future__ import annotations

import socket  # AF_UNIX, to label unix-socket servers
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple
from urllib.parse import unquote_to_bytes

from .client import Client
from .errors import ClientError, DumpingNotAllowed, MemcacheError, MemcachedDictError, ProtocolError, ServerError

__all__ = ["BUSY", "class_counts", "dump_items", "dump_keys", "dump_server", "parse_metadump", "server_addresses",
           "server_label"]

#: what a dump returns when the crawler is serving another one (retried)
BUSY = b"BUSY"
_BUSY_RETRIES = 50
_BUSY_SLEEP = 0.05


def server_label(server: Any) -> str:
    """``"host:port"`` (or ``"unix:/path"``) of one server object of a client."""
    if getattr(server, "family", None) == getattr(socket, "AF_UNIX", None):
        return f"unix:{server.address}"
    if getattr(server, "ip", None) is not None and getattr(server, "port", None) is not None:
        return f"[{server.ip}]:{server.port}" if ":" in str(server.ip) else f"{server.ip}:{server.port}"
    raise MemcachedDictError(f"cannot tell the address of server {server!r}")


def server_addresses(client: Any) -> List[str]:
    """Labels (``"host:port"``) of the servers of ``client`` (bundled Client or python-memcached)."""
    return [server_label(server) for server in getattr(client, "servers", [])]


def _raw_capable(client: Any, index: int, address: str) -> Tuple[Any, int]:
    """``(client, index)`` with ``raw_command``: a python-memcached client has none,
    so a bundled :class:`Client` on the same *address* (index 0) stands in."""
    if getattr(client, "raw_command", None) is None:
        return Client([address]), 0
    return client, index


def _metadump(client: Any, index: int, address: str, timeout: float, classes: str = "all") -> bytes:
    """The reply of ``lru_crawler metadump <classes>`` (``all``, or slab class ids ``1,5``) from
    server ``index`` of ``client``.

    Sent with :meth:`Client.raw_command` (bounded by ``MAX_RAW_REPLY`` and by
    ``timeout`` for the whole dump, over TLS when the client uses it); a
    python-memcached client has no such method, so a bundled ``Client`` on the
    same address does it. A busy crawler gives :data:`BUSY` (the caller
    retries); a refusal raises ``DumpingNotAllowed`` or ``MemcachedDictError``,
    a connection fault ``OSError`` (``TimeoutError`` past ``timeout``).
    """
    client, index = _raw_capable(client, index, address)
    try:
        command = b"lru_crawler metadump " + classes.encode("ascii")
        return bytes(client.raw_command(index, command, b"END", deadline=timeout))
    except (ClientError, ServerError) as exc:
        if str(exc).startswith("BUSY"):
            return BUSY  # the crawler is serving another dump: the caller retries
        if "not allowed" in str(exc):
            raise DumpingNotAllowed(f"{address} refuses lru_crawler metadump ({exc}); "
                                    "it was started with -X/--disable-dumping") from exc
        raise MemcachedDictError(f"{address}: lru_crawler metadump failed: {exc}") from exc
    except ProtocolError as exc:
        raise MemcachedDictError(f"{address}: metadump refused: {exc}") from exc
    except MemcacheError as exc:  # dead server, lost connection, missed deadline
        if "timed out" in str(exc):
            raise TimeoutError(f"{address}: metadump not finished within {timeout} s") from exc
        raise ConnectionError(f"{address}: {exc}") from exc


def _dump(client: Any, index: int, address: str, timeout: float, classes: str = "all") -> bytes:
    for _ in range(_BUSY_RETRIES):
        reply = _metadump(client, index, address, timeout, classes)
        if not reply.startswith(BUSY):
            return reply
        time.sleep(_BUSY_SLEEP)  # the crawler is serving another dump
    raise MemcachedDictError(f"{address}: LRU crawler stayed busy")


def class_counts(client: Any, index: int = 0) -> Dict[int, int]:
    """``{slab class id: number of items}`` of server ``index`` (``stats items``), classes in use only."""
    address = server_label(client.servers[index])
    client, index = _raw_capable(client, index, address)
    try:
        reply = bytes(client.raw_command(index, b"stats items", b"END"))
    except MemcacheError as exc:
        raise ConnectionError(f"{address}: {exc}") from exc
    counts: Dict[int, int] = {}
    for line in reply.split(b"\r\n"):
        parts = line.split(b" ")  # STAT items:<class>:number <n>
        if len(parts) == 3 and parts[1].startswith(b"items:") and parts[1].endswith(b":number"):
            counts[int(parts[1].split(b":")[1])] = int(parts[2])
    return counts


def dump_server(client: Any, index: int = 0, timeout: float = 10.0,
                max_keys: Optional[int] = None) -> Tuple[List[Tuple[bytes, Dict[str, str]]], bool]:
    """``(items, complete)``: the ``(key, fields)`` of server ``index``'s metadump (see
    :func:`parse_metadump`), reading at most ``max_keys`` keys.

    The bound is kept without cutting a dump short: ``stats items`` gives how
    many keys each slab class holds, and only the classes that fit in
    ``max_keys`` together are dumped (smallest first, one command for them);
    ``complete`` is False when a class was left out. Raises as :func:`dump_items`.
    """
    address = server_label(client.servers[index])
    counts = class_counts(client, index) if max_keys is not None else {}
    if not counts:  # no bound asked, or an empty server (dumped anyway: a server started with -X says so)
        return list(parse_metadump(_dump(client, index, address, timeout))), True
    chosen, total = [], 0
    for cls, count in sorted(counts.items(), key=lambda item: (item[1], item[0])):
        if total + count <= max_keys:
            chosen.append(cls)
            total += count
    if not chosen:
        return [], not counts
    reply = _dump(client, index, address, timeout, ",".join(str(cls) for cls in sorted(chosen)))
    return list(parse_metadump(reply)), len(chosen) == len(counts)


def parse_metadump(reply: bytes) -> Iterator[Tuple[bytes, Dict[str, str]]]:
    """Yield ``(key, fields)`` from a metadump reply; keys are URL-decoded bytes.

    Raises DumpingNotAllowed or MemcachedDictError for error replies.
    """
    head = reply[:200]
    if head.startswith(b"ERROR") or head.startswith(b"CLIENT_ERROR") or head.startswith(b"SERVER_ERROR"):
        message = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if b"not allowed" in head:
            raise DumpingNotAllowed(f"server refuses lru_crawler metadump ({message}); "
                                    "it was started with -X/--disable-dumping")
        raise MemcachedDictError(f"lru_crawler metadump failed: {message}")
    for line in reply.splitlines():
        if not line.startswith(b"key="):
            continue  # END, blank lines
        fields = dict(part.decode("ascii", "replace").split("=", 1)
                      for part in line.split(b" ")[1:] if b"=" in part)
        yield unquote_to_bytes(line.split(b" ", 1)[0][4:]), fields


def dump_items(client: Any, prefix: str = "",
               timeout: float = 10.0) -> Iterator[Tuple[str, str, Dict[str, str]]]:
    """Yield ``(server_address, key, fields)`` for every key starting with ``prefix``.

    Keys are returned as the server stores them (including any client-wide
    ``key_prefix``), decoded as UTF-8; ``fields`` are metadump's other columns
    (``exp``, ``la``, ``cas``, ``fetch``, ``cls``, ``size``) as strings.
    Best-effort snapshot, see the module docstring. Raises DumpingNotAllowed
    when a server forbids dumping, MemcachedDictError for other refusals, and
    OSError when a server cannot be reached or its dump takes longer than
    ``timeout`` seconds.
    """
    wanted = prefix.encode("utf-8")
    for index, server in enumerate(getattr(client, "servers", [])):
        address = server_label(server)
        for key, fields in parse_metadump(_dump(client, index, address, timeout)):
            if key.startswith(wanted):
                yield address, key.decode("utf-8", "replace"), fields


def dump_keys(client: Any, prefix: str = "", timeout: float = 10.0) -> Iterator[str]:
    """Yield every key (as stored) on every server of ``client`` that starts with ``prefix``."""
    for _address, key, _fields in dump_items(client, prefix, timeout):
        yield key
