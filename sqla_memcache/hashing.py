"""Node selection: which server holds a key.  No I/O here.

Two strategies, both small objects with ``add_node`` / ``remove_node`` /
``get_node``:

* :class:`BucketSelector` (default) reproduces python-memcached's choice so
  both clients find the same entries: every server fills ``weight`` buckets,
  a key goes to ``bucket[hash % len(buckets)]`` where ``hash`` is bits 16-30
  of its CRC-32; when that server is unusable the hash is re-derived from
  ``str(hash) + str(attempt)`` up to 10 times.  Adding a server remaps
  nearly every key.
* :class:`KetamaSelector` (``hashing="ketama"``) is consistent hashing on an
  MD5 continuum in the libmemcached "ketama" layout (160 points per unit of
  weight, four points per MD5 digest of ``"host:port-N"``).  Adding one
  server to N remaps about 1/(N+1) of the keys.  A dead server's keys move
  to the next live point clockwise.

Whether a key may move at all is :class:`sqla_memcache.routing.Router`'s switch.
"""
from __future__ import annotations

import bisect
import hashlib
from binascii import crc32
from typing import Callable, Generic, List, Optional, Sequence, Tuple, TypeVar, Union

N = TypeVar("N")

#: How many times python-memcached re-hashes before giving up on a key.
SERVER_RETRIES = 10

#: Points on the continuum per unit of weight (ketama's figure).
KETAMA_POINTS = 160

KeyArg = Union[bytes, Tuple[int, bytes]]


def cmemcache_hash(key: bytes) -> int:
    """python-memcached's server hash: bits 16-30 of CRC-32 (0 included, as in 1.62)."""
    return (crc32(key) >> 16) & 0x7FFF


class BucketSelector(Generic[N]):
    """python-memcached compatible weighted-bucket selection."""

    name = "modula"

    def __init__(self, nodes: Sequence[Tuple[N, int]] = (), retries: int = SERVER_RETRIES) -> None:
        self.buckets: List[N] = []
        #: Servers tried per key (the home server, then re-hashes); 1 = no failover.
        self.retries = max(1, retries)
        for node, weight in nodes:
            self.add_node(node, weight)

    def add_node(self, node: N, weight: int = 1) -> None:
        self.buckets.extend([node] * weight)

    def remove_node(self, node: N) -> None:
        self.buckets = [b for b in self.buckets if b != node]

    def get_node(self, key: KeyArg, usable: Callable[[N], bool]) -> Optional[N]:
        """The server for *key*, skipping servers for which ``usable`` is False.

        *key* is the encoded key, or ``(hashvalue, key)`` to force the hash.
        """
        buckets = self.buckets
        if not buckets:
            return None
        if isinstance(key, tuple):
            serverhash = key[0]
        else:
            serverhash = (crc32(key) >> 16) & 0x7FFF
        for attempt in range(self.retries):
            node = buckets[serverhash % len(buckets)]
            if usable(node):
                return node
            serverhash = cmemcache_hash(("%s%d" % (serverhash, attempt)).encode("ascii"))
        return None


class KetamaSelector(Generic[N]):
    """Consistent hashing on an MD5 continuum (ketama layout)."""

    name = "ketama"

    def __init__(
        self, nodes: Sequence[Tuple[N, int]] = (), label: Callable[[N], str] = str
    ) -> None:
        self._label = label
        self._weights: dict = {}
        self._points: List[int] = []
        self._owners: List[N] = []
        for node, weight in nodes:
            self._weights[node] = weight
        self._rebuild()

    def add_node(self, node: N, weight: int = 1) -> None:
        self._weights[node] = weight
        self._rebuild()

    def remove_node(self, node: N) -> None:
        self._weights.pop(node, None)
        self._rebuild()

    def _rebuild(self) -> None:
        ring = []
        for node, weight in self._weights.items():
            label = self._label(node)
            for i in range(KETAMA_POINTS * weight // 4):
                digest = hashlib.md5(("%s-%d" % (label, i)).encode("utf-8")).digest()
                for j in range(4):
                    point = int.from_bytes(digest[4 * j:4 * j + 4], "little")
                    ring.append((point, label, node))
        ring.sort(key=lambda t: (t[0], t[1]))
        self._points = [p for p, _, _ in ring]
        self._owners = [n for _, _, n in ring]

    @staticmethod
    def key_point(key: bytes) -> int:
        return int.from_bytes(hashlib.md5(key).digest()[:4], "little")

    def get_node(self, key: KeyArg, usable: Callable[[N], bool]) -> Optional[N]:
        """The first usable server clockwise from the key's point."""
        owners = self._owners
        if not owners:
            return None
        point = key[0] if isinstance(key, tuple) else self.key_point(key)
        start = bisect.bisect_left(self._points, point)
        tried = set()
        n = len(owners)
        for offset in range(n):
            node = owners[(start + offset) % n]
            if id(node) in tried:
                continue
            if usable(node):
                return node
            tried.add(id(node))
            if len(tried) == len(self._weights):
                break
        return None


def make_selector(
    hashing: str, nodes: Sequence[Tuple[N, int]], label: Callable[[N], str] = str, retries: int = SERVER_RETRIES
):
    """Build the selector named by ``Client(hashing=...)``."""
    if hashing in ("modula", "python-memcached", "default"):
        return BucketSelector(nodes, retries)
    if hashing in ("ketama", "consistent"):
        return KetamaSelector(nodes, label)
    raise ValueError("unknown hashing %r: use 'modula' (python-memcached) or 'ketama'" % (hashing,))
