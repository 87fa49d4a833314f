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

import logging
from typing import Any

log = logging.getLogger(__name__)


def without_failover(client: Any) -> Any:
    """Return a view of ``client`` that never moves keys off a dead server.

    Uses ``client.without_failover()`` (the one failover switch of
    :class:`sqla_memcache.Client` and ``AsyncClient``: their ``Router``).
    Other multi-server clients are returned as they are, with a warning: their
    failover can make invalidated entries current again after an outage.
    """
    offered = getattr(client, "without_failover", None)
    if callable(offered):
        return offered()
    if len(getattr(client, "servers", ())) > 1:
        log.warning(
            "%s moves keys of dead servers to other servers; after an outage the ORM cache may serve "
            "entries invalidated meanwhile (use sqla_memcache.Client or one server)", type(client).__name__
        )
    return client
