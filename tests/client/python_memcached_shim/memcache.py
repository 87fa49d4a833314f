"""A ``memcache`` module that is sqla_memcache: python-memcached's own tests import it.

Put on ``sys.path`` (PYTHONPATH) only for the run of python-memcached's suite in
``tests/client/test_python_memcached_suite.py``, never for the rest of the tests.

* ``Client`` is :class:`sqla_memcache.Client`; the only change is that every
  server address is replaced with ``$SQLA_MEMCACHE_SHIM_SERVER`` (the suite
  hard-codes ``127.0.0.1:11211``; the run gives it a private memcached instead).
* ``_Host`` is the bundled ``connection.Host`` so the suite's module-level import
  works; the tests that patch its methods are deselected (python-memcached
  internals, listed in docs/client.md).
"""
from __future__ import annotations

import os
from typing import Any

import sqla_memcache
from sqla_memcache import SERVER_MAX_KEY_LENGTH, SERVER_MAX_VALUE_LENGTH
from sqla_memcache.connection import Host as _Host

__all__ = ["Client", "SERVER_MAX_KEY_LENGTH", "SERVER_MAX_VALUE_LENGTH", "_Host"]

IS_SQLA_MEMCACHE_SHIM = True


def _redirect(servers: Any) -> Any:
    address = os.environ["SQLA_MEMCACHE_SHIM_SERVER"]
    return [(address, s[1]) if isinstance(s, tuple) else address for s in servers]


class Client(sqla_memcache.Client):
    """sqla_memcache.Client talking to ``$SQLA_MEMCACHE_SHIM_SERVER`` whatever servers it is given."""

    def set_servers(self, servers: Any) -> None:
        super().set_servers(_redirect(servers))
