"""Kept for imports written before the split: the transport lives in :mod:`sqla_memcache.transport`."""
from __future__ import annotations

from .transport.connection import Connection
from .transport.host import DEFAULT_PORT, Host, parse_server

__all__ = ["DEFAULT_PORT", "Connection", "Host", "parse_server"]
