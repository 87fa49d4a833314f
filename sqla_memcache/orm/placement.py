"""Keep every ORM key on its home server: no failover for version counters.

python-memcached (and the bundled client, for compatibility) sends the keys of
a dead server to another server. For version counters that is unsafe: a
commit's bump lands on the stand-in server, and when the home server comes
back holding its old counter, entries invalidated meanwhile match it again.
The ORM cache therefore talks to memcached through a view of the client that
never moves a key: while its home server is dead, a key is simply unavailable
(reads miss, bumps are remembered and re-sent).
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)


class HomeOnlySelector:
    """Wraps a node selector so a key maps to its home server or to nothing."""

    __slots__ = ("inner",)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def get_node(self, key: Any, usable: Callable[[Any], bool]) -> Optional[Any]:
        home = self.inner.get_node(key, lambda node: True)
        return home if home is not None and usable(home) else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def without_failover(client: Any) -> Any:
    """Return a view of ``client`` that never moves keys off a dead server.

    Uses ``client.without_failover()`` when the client offers it; otherwise,
    for the bundled client, a shallow copy sharing its connections whose
    node selector is wrapped. Other multi-server clients are returned as they
    are, with a warning: their failover can make invalidated entries current
    again after an outage.
    """
    offered = getattr(client, "without_failover", None)
    if callable(offered):
        return offered()
    selector = getattr(client, "_selector", None)
    if selector is not None and hasattr(selector, "get_node"):
        if isinstance(selector, HomeOnlySelector):
            return client
        view = copy.copy(client)
        view._selector = HomeOnlySelector(selector)
        return view
    if len(getattr(client, "servers", ())) > 1:
        log.warning(
            "%s moves keys of dead servers to other servers; after an outage the ORM cache may serve "
            "entries invalidated meanwhile (use sqla_memcache.Client or one server)", type(client).__name__
        )
    return client
