"""Which server a key goes to, and whether it may go elsewhere: :class:`Router`.

No I/O here: a router holds the servers, a node selector from
:mod:`sqla_memcache.hashing` (python-memcached's buckets or ketama) and the
one failover switch.  Whether a server can take a command is asked of the
server itself (``usable``: the blocking ``Host`` may connect to answer, the
asyncio one only reads its dead-until time), so the same router serves the
blocking and the asyncio client.

Failover is python-memcached's behaviour: a key whose server is dead goes to
the selector's next choice.  :meth:`Router.without_failover` is the one way
to switch it off (the ORM cache uses it for version counters, see
``orm/placement.py``): the key then maps to its home server or to nothing.
"""
from __future__ import annotations

from typing import Any, Callable, Generic, List, Optional, Sequence, TypeVar

from .hashing import SERVER_RETRIES, make_selector

N = TypeVar("N")


def _always(node: Any) -> bool:
    return True


class Router(Generic[N]):
    """Servers, their selector and the failover switch; :meth:`route` picks a key's server.

    :param servers: the server objects (each with ``weight`` and ``label``).
    :param hashing: ``"modula"`` or ``"ketama"`` (see :func:`~sqla_memcache.hashing.make_selector`).
    :param usable: ``usable(server)`` -- True when a command can be sent to it now.
    :param retries: python-memcached's re-hash count (modula); 1 never re-hashes.
    :param failover: False: a key never leaves its home server.
    """

    __slots__ = ("servers", "selector", "failover", "single", "usable")

    def __init__(
        self,
        servers: Sequence[N],
        hashing: str,
        usable: Callable[[N], bool],
        retries: int = SERVER_RETRIES,
        failover: bool = True,
    ) -> None:
        self.servers: List[N] = list(servers)
        self.selector = make_selector(hashing, [(s, s.weight) for s in self.servers],  # type: ignore[attr-defined]
                                      lambda s: s.label, retries)  # type: ignore[attr-defined]
        self.failover = failover
        #: With one server there is nothing to hash: every key goes there.
        self.single: Optional[N] = self.servers[0] if len(self.servers) == 1 else None
        self.usable = usable

    def route(self, hashkey: Any) -> Optional[N]:
        """The server for *hashkey* (wire key bytes, or ``(hash value, key)``), None when there is none.

        With failover, the selector's first usable choice; without, the home
        server if it is usable, else None.
        """
        single = self.single
        if single is not None:  # nothing to hash, nowhere else to go
            return single if self.usable(single) else None
        if self.failover:
            return self.selector.get_node(hashkey, self.usable)
        home = self.selector.get_node(hashkey, _always)
        return home if home is not None and self.usable(home) else None

    def home(self, hashkey: Any) -> Optional[N]:
        """The key's home server, usable or not (no I/O)."""
        return self.selector.get_node(hashkey, _always)

    def without_failover(self) -> "Router[N]":
        """A router on the same servers and selector that never moves a key off its home server."""
        other: Router[N] = Router.__new__(Router)
        other.servers, other.selector, other.single, other.usable = (
            self.servers, self.selector, self.single, self.usable)
        other.failover = False
        return other

    @property
    def buckets(self) -> List[N]:
        """python-memcached's weight-expanded server list (modula; the servers for ketama)."""
        return list(getattr(self.selector, "buckets", self.servers))
