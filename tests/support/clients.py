"""Clients for tests that are about something else (the ORM, the mapping): one place for their settings."""

from __future__ import annotations

from typing import Any, List

from sqla_memcache.client import Client


def make_client(servers: List[str], **kwargs: Any) -> Client:
    """A :class:`~sqla_memcache.Client` on ``servers`` with a 1 s socket timeout unless given."""
    kwargs.setdefault("socket_timeout", 1)
    return Client(servers, **kwargs)
