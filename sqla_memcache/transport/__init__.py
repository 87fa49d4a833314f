"""The blocking client's transport: sockets, pools and dead hosts (the only I/O of the sync client).

* :mod:`.connection` -- :class:`Connection`, one socket with its reply buffer,
  timeouts and deadlines; maps ``OSError`` to the typed errors, once;
* :mod:`.host` -- :class:`Host`, one server: address, pool, dead-host
  bookkeeping and :meth:`Host.exchange`, the one seam to the network;
* :mod:`.mock` -- an in-memory memcached for unit tests (no socket).
"""
from __future__ import annotations

from .connection import BULK_RECV_SIZE, RECV_SIZE, Connection
from ..config import DEFAULT_PORT, parse_server
from .host import CONNECTION_FAULTS, Host

__all__ = ["BULK_RECV_SIZE", "CONNECTION_FAULTS", "DEFAULT_PORT", "RECV_SIZE", "Connection", "Host", "parse_server"]
