"""Adapters: every client behind the same op factories, so cases stay client-agnostic.

An adapter turns a case into a zero-argument callable (``make_get(key)`` returns
``op`` with ``op() -> value``), binding the client's own method with
:func:`functools.partial` so the timed loop pays no adapter frame. A client that
cannot be imported or connected is reported as unavailable, not raised.

Thread-shared ops (``make_shared_get``) use each library's own way to share one
client between threads:

* sqla_memcache and python-memcached: the ``Client`` itself (python-memcached's
  ``Client`` is a ``threading.local``, so each thread gets its own sockets);
* pymemcache: its base ``Client`` is not thread-safe, so a ``PooledClient``;
* pylibmc: a ``ClientPool`` of 8 clones (``with pool.reserve() as mc``).
"""
from __future__ import annotations

import functools
from typing import Callable, Dict, List, Optional

from .floor import Floor

THREADS = 8


class Unavailable(Exception):
    """The client library is missing or does not work here."""


class Adapter:
    name = "?"
    label = "?"
    available = True
    reason = ""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def make_get(self, key: str) -> Callable[[], object]:
        return functools.partial(self.client.get, key)

    def make_set(self, key: str, value: bytes) -> Callable[[], object]:
        return functools.partial(self.client.set, key, value)

    def make_get_multi(self, keys: List[str]) -> Callable[[], object]:
        return functools.partial(self.client.get_multi, keys)

    def make_set_multi(self, mapping: Dict[str, bytes]) -> Callable[[], object]:
        return functools.partial(self.client.set_multi, mapping)

    def make_shared_get(self, key: str) -> Callable[[], object]:
        return functools.partial(self.client.get, key)

    def close(self) -> None:
        pass


class SqlaMemcache(Adapter):
    name = "sqla_memcache"
    label = "sqla_memcache.Client"

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        try:
            from sqla_memcache import Client
        except Exception as exc:  # not written yet, or broken: report, don't crash
            raise Unavailable(f"import failed: {exc!r}") from exc
        self.client = Client([f"{host}:{port}"])

    def close(self) -> None:
        self.client.disconnect_all()


class PythonMemcached(Adapter):
    name = "python-memcached"
    label = "python-memcached 1.62"

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        try:
            import memcache
        except ImportError as exc:
            raise Unavailable(f"import failed: {exc!r}") from exc
        self.client = memcache.Client([f"{host}:{port}"])

    def close(self) -> None:
        self.client.disconnect_all()


class Pymemcache(Adapter):
    name = "pymemcache"
    label = "pymemcache"

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        try:
            from pymemcache.client.base import Client, PooledClient
        except ImportError as exc:
            raise Unavailable(f"import failed: {exc!r}") from exc
        # default_noreply=False: wait for STORED like every other client does
        self.client = Client((host, port), no_delay=True, default_noreply=False)
        self._pooled_cls = PooledClient
        self._pooled: Optional[object] = None

    def make_get_multi(self, keys: List[str]) -> Callable[[], object]:
        return functools.partial(self.client.get_many, keys)

    def make_set_multi(self, mapping: Dict[str, bytes]) -> Callable[[], object]:
        return functools.partial(self.client.set_many, mapping)

    def make_shared_get(self, key: str) -> Callable[[], object]:
        if self._pooled is None:
            self._pooled = self._pooled_cls((self.host, self.port), no_delay=True, default_noreply=False,
                                            max_pool_size=THREADS)
        return functools.partial(self._pooled.get, key)

    def close(self) -> None:
        self.client.close()
        if self._pooled is not None:
            self._pooled.close()


class Pylibmc(Adapter):
    name = "pylibmc"
    label = "pylibmc (libmemcached, C)"

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        try:
            import pylibmc
        except ImportError as exc:
            raise Unavailable(f"import failed: {exc!r}") from exc
        self._pylibmc = pylibmc
        self.client = pylibmc.Client([f"{host}:{port}"], binary=False,
                                     behaviors={"tcp_nodelay": True})
        self._pool = None

    def make_shared_get(self, key: str) -> Callable[[], object]:
        if self._pool is None:
            self._pool = self._pylibmc.ClientPool(self.client, THREADS)
        reserve = self._pool.reserve

        def op() -> object:
            with reserve() as mc:
                return mc.get(key)

        return op

    def close(self) -> None:
        self.client.disconnect_all()


class FloorAdapter(Floor):
    """The raw floor, constructed like the other adapters."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)


#: name -> adapter class, in report order (the floor first, ours second).
ADAPTERS = {
    "floor": FloorAdapter,
    "sqla_memcache": SqlaMemcache,
    "pymemcache": Pymemcache,
    "python-memcached": PythonMemcached,
    "pylibmc": Pylibmc,
}

PEERS = ["pymemcache", "python-memcached", "pylibmc"]


def open_adapters(host: str, port: int, names: Optional[List[str]] = None):
    """Return ``(adapters, unavailable)``: name -> adapter, name -> reason."""
    adapters, unavailable = {}, {}
    for name, cls in ADAPTERS.items():
        if names is not None and name not in names:
            continue
        try:
            adapters[name] = cls(host, port)
        except Unavailable as exc:
            unavailable[name] = str(exc)
        except Exception as exc:  # a client that fails to construct is not fatal
            unavailable[name] = f"{type(exc).__name__}: {exc}"
    return adapters, unavailable
