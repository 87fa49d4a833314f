"""Clients for tests: ``make_client`` for tests about something else (the ORM), and one call
surface over both clients, so a behaviour test is written once and runs on ``Client`` and
``AsyncClient`` (``ClientMaker``, behind the ``make`` fixture of ``tests/client/conftest.py``).
"""

from __future__ import annotations

import asyncio
from typing import Any, List

from sqla_memcache import AsyncClient, Client


def make_client(servers: List[str], **kwargs: Any) -> Client:
    """A :class:`~sqla_memcache.Client` on ``servers`` with a 1 s socket timeout unless given."""
    kwargs.setdefault("socket_timeout", 1)
    return Client(servers, **kwargs)


class Blocking:
    """An :class:`~sqla_memcache.AsyncClient` driven from sync test code: the same call surface as
    :class:`~sqla_memcache.Client`, every coroutine method run to completion on one private loop.

    Attribute writes go to the async client; a method returning another AsyncClient
    (``without_failover()``) returns it wrapped on the same loop. One thread only.
    """

    def __init__(self, client: Any, loop: Any = None) -> None:
        self.aio = client
        self.loop = loop or asyncio.new_event_loop()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.aio, name)
        if asyncio.iscoroutinefunction(attr):
            return lambda *a, **kw: self.loop.run_until_complete(attr(*a, **kw))
        if callable(attr):
            def call(*a: Any, **kw: Any) -> Any:
                result = attr(*a, **kw)
                return Blocking(result, self.loop) if isinstance(result, AsyncClient) else result
            return call
        return attr

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("aio", "loop"):
            object.__setattr__(self, name, value)
        else:
            setattr(self.aio, name, value)

    def close(self) -> None:
        """Close the async client's connections and the private loop."""
        self.loop.run_until_complete(self.aio.close())
        self.loop.close()


def uvloop_missing() -> str:
    """Why uvloop cannot be used here, or ``""`` when it can."""
    try:
        import uvloop  # noqa: F401
    except ImportError as exc:
        return "uvloop is not installed (pip install uvloop): %s" % exc
    return ""


def new_loop(kind: str) -> asyncio.AbstractEventLoop:
    """A new event loop: asyncio's own (``"async"``) or uvloop's (``"uvloop"``, which
    uvicorn runs when it is installed)."""
    if kind == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


class ClientMaker:
    """``make(servers, **kwargs)``: a ``Client`` (``kind="sync"``) or an ``AsyncClient`` behind
    :class:`Blocking` on an asyncio (``kind="async"``) or uvloop (``kind="uvloop"``) event
    loop, with the same arguments; :meth:`close_all` closes them."""

    def __init__(self, kind: str) -> None:
        if kind not in ("sync", "async", "uvloop"):
            raise ValueError(f"kind is 'sync', 'async' or 'uvloop', not {kind!r}")
        self.kind = kind
        self._made: List[Blocking] = []

    def __call__(self, servers: List[str], **kwargs: Any) -> Any:
        if self.kind == "sync":
            return Client(servers, **kwargs)
        client = Blocking(AsyncClient(servers, **kwargs), new_loop(self.kind))
        self._made.append(client)
        return client

    def close_all(self) -> None:
        for client in self._made:
            client.close()
        self._made.clear()
