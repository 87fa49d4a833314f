"""A pytest plugin for your own test suite: a private memcached and clients on it.

Installed with the package (entry point ``pytest11``), so the fixtures are there
in any pytest run where ``sqla_memcache`` is installed; nothing starts until a
test asks for one. Disable it with ``-p no:sqla_memcache.testing``; without the
entry point (e.g. running from a source tree) enable it with
``pytest_plugins = ["sqla_memcache.testing"]`` in your top-level conftest.py.

Fixtures:

``memcached_server`` (session)
    A :class:`MemcachedServer` (``.address``, ``.servers``): a ``memcached``
    child process on a free 127.0.0.1 port, started on first use and stopped at
    the end of the session (built on :mod:`sqla_memcache.memcached_process`).
    With ``$SQLA_MEMCACHE_TESTING_SERVER=host:port`` that server is used instead
    (it gets flushed!). Without a ``memcached`` binary the tests that use it
    are skipped with a one-line hint.
``memcached_client`` (function)
    A :class:`sqla_memcache.Client` on that server, flushed before the test.
``memcached_orm_cache`` (function)
    An :class:`sqla_memcache.ORMCache` on ``memcached_client`` with a namespace
    of its own; call ``memcached_orm_cache.listen_on_session(Session)``.
"""
from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, List, Optional

import pytest

from .memcached_process import MemcachedProcess, MemcachedUnavailable, split_address

__all__ = ["ENV_SERVER", "MemcachedServer", "memcached_client", "memcached_orm_cache", "memcached_server"]

#: ``host:port`` of a running memcached to use instead of starting one (it is flushed)
ENV_SERVER = "SQLA_MEMCACHE_TESTING_SERVER"


@dataclass
class MemcachedServer:
    """The memcached the fixtures use: ``address`` is ``"host:port"``."""

    address: str
    process: Optional[MemcachedProcess] = field(default=None, repr=False)

    @property
    def servers(self) -> List[str]:
        """``[address]``, ready for ``Client(...)``."""
        return [self.address]

    def flush(self) -> None:
        """Empty the server (``flush_all``)."""
        from .client import Client

        client = Client(self.servers)
        try:
            client.flush_all()
        finally:
            client.disconnect_all()


@pytest.fixture(scope="session")
def memcached_server() -> Iterator[MemcachedServer]:
    """A memcached for the whole test session (see the module docstring)."""
    given = os.environ.get(ENV_SERVER, "").strip()
    if given:
        try:
            split_address(given)
        except ValueError as exc:
            raise pytest.UsageError(f"${ENV_SERVER}: {exc}") from None
        yield MemcachedServer(given)
        return
    try:
        process = MemcachedProcess().start()
    except MemcachedUnavailable as exc:
        pytest.skip(f"sqla_memcache.testing: {exc}")
    try:
        yield MemcachedServer(process.address, process)
    finally:
        process.stop()


@pytest.fixture
def memcached_client(memcached_server: MemcachedServer) -> Iterator[Any]:
    """A ``sqla_memcache.Client`` on the session's memcached, emptied before the test."""
    from .client import Client

    memcached_server.flush()
    client = Client(memcached_server.servers)
    try:
        yield client
    finally:
        client.disconnect_all()


@pytest.fixture
def memcached_orm_cache(memcached_client: Any) -> Any:
    """An ``ORMCache`` on ``memcached_client``, in a namespace no other test uses."""
    from .orm import ORMCache

    return ORMCache(memcached_client, namespace="test_" + uuid.uuid4().hex[:12])
