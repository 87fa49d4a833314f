"""Kept for imports written before the split: the transport lives in :mod:`sqla_memcache.transport`."""
from __future__ import annotations

from .transport.connection import Connection
from .config import DEFAULT_PORT, parse_server
from .transport.host import Host

__all__ = ["DEFAULT_PORT", "Connection", "Host", "parse_server"]
