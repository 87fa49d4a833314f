"""MemcachedDict: a ``MutableMapping`` view of memcached under a key prefix.

The classic "memcached as a Python dictionary" tool::

    from sqla_memcache import Client, MemcachedDict

    client = Client(["127.0.0.1:11211"])
    d = MemcachedDict(client, key_prefix="app:")
    d["greeting"] = "hello"          # set app:greeting
    d["greeting"]                    # -> "hello"; KeyError on a miss
    d.get("nope")                    # -> None
    d.incr("hits")                   # counter, created at 1 when missing
    for attempt in d.edit("cart", default=()):   # read-modify-write with CAS
        with attempt as box:
            box.value = box.value + ("apple",)

What it is *not*: memcached is a cache, so any key may vanish (eviction,
expiry, restart) between two calls. Two consequences are documented here
rather than hidden:

* ``None`` cannot be stored: memcached clients report a miss as ``None``, so a
  stored ``None`` would read back as "missing". ``d[k] = None`` raises ValueError.
* Iteration, ``len()``, ``keys()``, ``items()``, ``values()`` and ``clear()`` use
  memcached's ``lru_crawler metadump all`` on every server and keep the keys
  under the prefix. That is a **best-effort snapshot**: keys written, deleted or
  evicted while the crawler runs may or may not appear (``items()`` and
  ``values()`` skip keys that vanish before their value is read), and it costs
  a walk over the whole cache. Servers started with
  ``-X`` (``--disable-dumping``) refuse it: :class:`DumpingNotAllowed` is raised.

Atomic updates use ``gets``/``cas`` (the bundled client's ``gets_cas``, so any
:class:`~sqla_memcache.Client` works, shared by threads or not; a python-memcached
client needs ``cache_cas=True``). A ``with`` block's body runs once, so a plain
``with d.edit(k) as box:`` is a *single* attempt that raises
:class:`EditConflict` when another writer got there first; iterate over
``d.edit(k)`` (as above) to retry up to ``max_retries`` times, or pass a function
to :meth:`MemcachedDict.modify`.
"""
from __future__ import annotations

import logging
import socket
import time
from collections.abc import ItemsView, MutableMapping, ValuesView
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Callable, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple, Type
from urllib.parse import unquote_to_bytes

from .protocol import MAX_RAW_REPLY

log = logging.getLogger(__name__)

#: Reply terminator of ``lru_crawler metadump``.
METADUMP_END = b"END\r\n"
_BUSY_RETRIES = 50
_VIEW_BATCH = 100  # keys per get_multi round trip when iterating items()/values()
_BUSY_SLEEP = 0.05


class MemcachedDictError(Exception):
    """Base class of MemcachedDict errors."""


class DumpingNotAllowed(MemcachedDictError, NotImplementedError):
    """The server refuses ``lru_crawler metadump`` (started with ``-X``), so keys cannot be listed."""


class EditConflict(MemcachedDictError):
    """A CAS write-back lost to a concurrent writer ``attempts`` times in a row."""

    def __init__(self, key: str, attempts: int) -> None:
        super().__init__(f"edit of {key!r} lost to concurrent writers {attempts} time(s) in a row")
        self.key = key
        self.attempts = attempts


_MISSING: Any = object()


@dataclass
class Box:
    """The value being edited in :meth:`MemcachedDict.edit`; assign ``box.value`` to change it.

    ``existed`` tells whether the key was present (False when ``default`` was used).
    """

    value: Any
    existed: bool


# --------------------------------------------------------------------------- key dumping

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


def _metadump(server: Any, timeout: float, max_keys: Optional[int] = None) -> bytes:
    """One ``lru_crawler metadump all`` over a fresh connection to ``server`` (a client's host object).

    A dedicated connection because memcached refuses to pipeline anything with
    a metadump, and a reader of our own because its reply is unusual: key lines
    end in a bare ``\\n``, and a busy crawler answers ``BUSY ...`` with no ``END``.
    TLS is used when the host carries an ``ssl_context``.  The whole dump must
    end within ``timeout`` seconds (``TimeoutError`` otherwise, however the
    server drips it) and stay under ``MAX_RAW_REPLY`` bytes.

    With ``max_keys``, reading stops once that many key lines have arrived: the
    reply is cut after the last of them, without ``END`` (the connection is
    closed, which ends the server's crawl).
    """
    deadline = time.monotonic() + timeout
    family = getattr(server, "family", socket.AF_INET)
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(server.address)
        context = getattr(server, "ssl_context", None)
        if context is not None:
            sock = context.wrap_socket(sock, server_hostname=server.address[0])
        sock.sendall(b"lru_crawler metadump all\r\n")
        reply = bytearray()
        lines = 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{server_label(server)}: metadump not finished within {timeout} s")
            sock.settimeout(left)
            chunk = sock.recv(262144)
            if not chunk:
                raise MemcachedDictError(f"{server_label(server)} closed the connection during metadump")
            if max_keys is not None:
                lines += chunk.count(b"\n")
                if lines >= max_keys and (reply + chunk).startswith(b"key="):
                    reply += chunk
                    cut = -1
                    for _ in range(max_keys):
                        cut = reply.index(b"\n", cut + 1)
                    if reply[cut + 1:] == METADUMP_END:  # exactly max_keys keys: the dump is whole
                        return bytes(reply)
                    return bytes(reply[: cut + 1])
            reply += chunk
            if len(reply) > MAX_RAW_REPLY:
                raise MemcachedDictError(f"{server_label(server)}: metadump longer than {MAX_RAW_REPLY} bytes")
            if reply == METADUMP_END or reply.endswith(b"\n" + METADUMP_END):
                return bytes(reply)
            if not reply.startswith(b"key=") and reply.endswith(b"\r\n"):
                return bytes(reply)  # a one-line error or BUSY reply
    finally:
        sock.close()


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


def dump_server(server: Any, timeout: float = 10.0,
                max_keys: Optional[int] = None) -> Tuple[List[Tuple[bytes, Dict[str, str]]], bool]:
    """``(items, complete)``: the ``(key, fields)`` of one server's metadump (see :func:`parse_metadump`),
    at most ``max_keys`` of them; ``complete`` is False when the dump was cut there.

    Raises as :func:`dump_items`.
    """
    for _ in range(_BUSY_RETRIES):
        reply = _metadump(server, timeout, max_keys)
        if not reply.startswith(b"BUSY"):
            break
        time.sleep(_BUSY_SLEEP)  # the crawler is serving another dump
    else:
        raise MemcachedDictError(f"{server_label(server)}: LRU crawler stayed busy")
    complete = not reply.startswith(b"key=") or reply.endswith(METADUMP_END)
    return list(parse_metadump(reply)), complete


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
    for server in getattr(client, "servers", []):
        address = server_label(server)
        items, _complete = dump_server(server, timeout)
        for key, fields in items:
            if key.startswith(wanted):
                yield address, key.decode("utf-8", "replace"), fields


def dump_keys(client: Any, prefix: str = "", timeout: float = 10.0) -> Iterator[str]:
    """Yield every key (as stored) on every server of ``client`` that starts with ``prefix``."""
    for _address, key, _fields in dump_items(client, prefix, timeout):
        yield key


# --------------------------------------------------------------------------- the mapping

class _EditAttempt:
    """One gets -> body -> cas round; the context manager yielded by iterating an Edit."""

    def __init__(self, owner: "MemcachedDict", key: str, default: Any) -> None:
        self._owner, self._key, self._default = owner, key, default
        self.box: Optional[Box] = None
        self.stored = False
        self._cas_id: Optional[int] = None

    def __enter__(self) -> Box:
        value, self._cas_id = self._owner._gets(self._owner._full(self._key))
        if value is None:
            if self._default is _MISSING:
                raise KeyError(self._key)
            self.box = Box(self._default, existed=False)
        else:
            self.box = Box(value, existed=True)
        return self.box

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        if exc_type is not None or self.box is None:
            return
        self._owner._check_value(self.box.value)
        full = self._owner._full(self._key)
        client, expire = self._owner._client, self._owner.expire
        if self.box.existed and self._cas_id is not None:
            self.stored = bool(client.cas(full, self.box.value, expire, cas_id=self._cas_id))
        elif self.box.existed:  # python-memcached: cas() uses the id its gets() remembered
            self.stored = bool(client.cas(full, self.box.value, expire))
        else:
            self.stored = bool(client.add(full, self.box.value, expire))


class Edit:
    """Returned by :meth:`MemcachedDict.edit`: iterate for retries, or use once as a context manager."""

    def __init__(self, owner: "MemcachedDict", key: str, default: Any, max_retries: int) -> None:
        self._owner, self._key, self._default, self._max_retries = owner, key, default, max_retries
        self._single: Optional[_EditAttempt] = None

    def __iter__(self) -> Iterator[_EditAttempt]:
        for number in range(1, self._max_retries + 1):
            attempt = _EditAttempt(self._owner, self._key, self._default)
            yield attempt
            if attempt.stored:
                return
            log.debug("edit of %r conflicted (attempt %d)", self._key, number)
        raise EditConflict(self._key, self._max_retries)

    def __enter__(self) -> Box:
        self._single = _EditAttempt(self._owner, self._key, self._default)
        return self._single.__enter__()

    def __exit__(self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        assert self._single is not None
        self._single.__exit__(exc_type, exc, tb)
        if exc_type is None and not self._single.stored:
            raise EditConflict(self._key, 1)


def _present_items(mapping: "MemcachedDict") -> Iterator[Tuple[str, Any]]:
    """``(key, value)`` for the listed keys, fetched in batches; vanished keys are skipped."""
    batch: List[str] = []
    for key in mapping:
        batch.append(key)
        if len(batch) == _VIEW_BATCH:
            yield from _fetch(mapping, batch)
            batch = []
    yield from _fetch(mapping, batch)


def _fetch(mapping: "MemcachedDict", batch: List[str]) -> Iterator[Tuple[str, Any]]:
    found = mapping.get_many(batch) if batch else {}
    return ((key, found[key]) for key in batch if key in found)


class _ItemsView(ItemsView):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Tuple[str, Any]]:
        return _present_items(self._mapping)  # type: ignore[attr-defined]


class _ValuesView(ValuesView):  # type: ignore[type-arg]
    def __iter__(self) -> Iterator[Any]:
        return (value for _key, value in _present_items(self._mapping))  # type: ignore[attr-defined]


class MemcachedDict(MutableMapping):  # type: ignore[type-arg]
    """A dict-like view of the keys of ``client`` that start with ``key_prefix``.

    ``client`` is a :class:`sqla_memcache.Client` (or anything with the
    python-memcached API). Keys are ``str``; the stored memcached key is
    ``key_prefix + key`` and must satisfy memcached's key rules (no spaces or
    control characters, at most 250 bytes with any client-wide prefix).
    ``expire`` is the expiry in seconds given to every write (0 = never).
    ``max_retries`` bounds the CAS retries of :meth:`edit` and :meth:`modify`.
    """

    def __init__(self, client: Any, key_prefix: str = "", expire: int = 0, max_retries: int = 20) -> None:
        if max_retries < 1:
            raise ValueError("max_retries must be at least 1")
        self._client = client
        self.key_prefix = key_prefix
        self.expire = expire
        self.max_retries = max_retries

    def __repr__(self) -> str:
        return f"MemcachedDict(key_prefix={self.key_prefix!r}, servers={server_addresses(self._client)!r})"

    def _full(self, key: str) -> str:
        if not isinstance(key, str):
            raise TypeError(f"MemcachedDict keys are str, not {type(key).__name__}")
        return self.key_prefix + key

    @staticmethod
    def _check_value(value: Any) -> None:
        if value is None:
            raise ValueError("memcached cannot tell a stored None from a miss; store a sentinel instead")

    def _gets(self, full: str) -> Tuple[Any, Optional[int]]:
        """``(value, cas_id)`` with the bundled client; ``(value, None)`` with python-memcached,
        whose ``cas()`` then uses the id its ``gets()`` remembered (``cache_cas=True``)."""
        gets_cas = getattr(self._client, "gets_cas", None)
        if gets_cas is not None:
            value, cas_id = gets_cas(full)
            return value, cas_id
        return self._client.gets(full), None

    def _store_failed(self, key: str) -> MemcachedDictError:
        return MemcachedDictError(f"memcached did not store {key!r} (server down or value too large?)")

    # -- the Mapping core
    def __getitem__(self, key: str) -> Any:
        value = self._client.get(self._full(key))
        if value is None:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        self._check_value(value)
        if not self._client.set(self._full(key), value, self.expire):
            raise self._store_failed(key)

    def __delitem__(self, key: str) -> None:
        # delete() answers 0 both for NOT_FOUND and for a failure (python-memcached's
        # contract), so presence is checked first; a concurrent delete in between is harmless.
        full = self._full(key)
        if self._client.get(full) is None:
            raise KeyError(key)
        self._client.delete(full)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._client.get(self._full(key)) is not None

    def __iter__(self) -> Iterator[str]:
        """Keys under the prefix (prefix stripped): a best-effort snapshot via metadump."""
        strip = len(self._dump_prefix())
        for full in dump_keys(self._client, self._dump_prefix()):
            yield full[strip:]

    def __len__(self) -> int:
        """Number of keys under the prefix: best-effort, see :meth:`__iter__`."""
        return sum(1 for _ in self)

    def _dump_prefix(self) -> str:
        client_prefix = getattr(self._client, "key_prefix", "") or ""
        if isinstance(client_prefix, bytes):
            client_prefix = client_prefix.decode("utf-8")
        return client_prefix + self.key_prefix

    # -- faster or atomic versions of MutableMapping mixins
    def items(self) -> _ItemsView:  # type: ignore[override]
        """Snapshot view of ``(key, value)`` pairs; values fetched in batches, vanished keys skipped."""
        return _ItemsView(self)

    def values(self) -> _ValuesView:  # type: ignore[override]
        """Snapshot view of the values; fetched in batches, vanished keys skipped."""
        return _ValuesView(self)

    def get_many(self, keys: Iterable[str]) -> Dict[str, Any]:
        """Fetch several keys in one round trip per server; missing keys are left out."""
        keys = list(keys)
        for key in keys:
            self._full(key)  # type check
        return dict(self._client.get_multi(keys, key_prefix=self.key_prefix))

    def update(self, other: Any = (), /, **kwargs: Any) -> None:  # type: ignore[override]
        """Store many items with one ``set_multi``; raises MemcachedDictError naming unstored keys."""
        items: Dict[str, Any] = {}
        pairs = other.items() if isinstance(other, Mapping) else other
        for key, value in list(pairs) + list(kwargs.items()):
            self._full(key)
            self._check_value(value)
            items[key] = value
        if not items:
            return
        failed = self._client.set_multi(items, self.expire, key_prefix=self.key_prefix)
        if failed:
            raise MemcachedDictError(f"memcached did not store {sorted(failed)!r}")

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Atomically store ``default`` when ``key`` is missing (``add``); return the stored value."""
        self._check_value(default)
        full = self._full(key)
        for _ in range(self.max_retries):
            if self._client.add(full, default, self.expire):
                return default
            value = self._client.get(full)
            if value is not None:
                return value
            # added by someone else and gone again (deleted/evicted): try again
        raise EditConflict(key, self.max_retries)

    def clear(self) -> None:
        """Delete every key under the prefix found by a metadump snapshot."""
        keys = list(self)
        if keys:
            self._client.delete_multi(keys, key_prefix=self.key_prefix)

    # -- read-modify-write
    def edit(self, key: str, default: Any = _MISSING) -> Edit:
        """Read-modify-write ``key`` with ``gets``/``cas``.

        Retrying form (the body runs again after a conflict, at most ``max_retries`` times,
        then EditConflict)::

            for attempt in d.edit("cart", default=()):
                with attempt as box:
                    box.value = box.value + ("apple",)

        Single-attempt form (EditConflict at once on a conflict)::

            with d.edit("cart", default=()) as box:
                box.value = box.value + ("apple",)

        A missing key raises KeyError unless ``default`` is given; then it is
        created with ``add`` so two creators cannot both win. An exception in the
        body writes nothing.
        """
        self._full(key)
        if not hasattr(self._client, "gets_cas") and not getattr(self._client, "cache_cas", False):
            raise MemcachedDictError("edit() on a python-memcached client needs cache_cas=True")
        return Edit(self, key, default, self.max_retries)

    def modify(self, key: str, function: Callable[[Any], Any], default: Any = _MISSING) -> Any:
        """Atomically replace the value of ``key`` by ``function(value)``; return the new value.

        ``function`` may run several times (once per CAS attempt), so it must be pure.
        """
        for attempt in self.edit(key, default):
            with attempt as box:
                box.value = function(box.value)
        return box.value

    # -- counters
    def incr(self, key: str, delta: int = 1, initial: Optional[int] = 0) -> int:
        """Atomically add ``delta``; return the new value.

        A missing key is created as ``initial + delta`` (``initial=None``: KeyError).
        The stored value must be a non-negative decimal integer (memcached's rule).
        """
        return self._count("incr", key, delta, initial)

    def decr(self, key: str, delta: int = 1, initial: Optional[int] = 0) -> int:
        """Atomically subtract ``delta`` (memcached stops at 0); return the new value.

        A missing key is created as ``max(0, initial - delta)`` (``initial=None``: KeyError).
        """
        return self._count("decr", key, delta, initial)

    def _count(self, command: str, key: str, delta: int, initial: Optional[int]) -> int:
        full = self._full(key)
        operation = getattr(self._client, command)
        for _ in range(self.max_retries):
            value = operation(full, delta)
            if value is not None:
                return int(value)
            if initial is None:
                raise KeyError(key)
            start = initial + delta if command == "incr" else max(0, initial - delta)
            if self._client.add(full, start, self.expire):
                return start
            # someone else created it first: count on top of theirs
        raise EditConflict(key, self.max_retries)
