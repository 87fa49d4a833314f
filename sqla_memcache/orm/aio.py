"""One ``ORMCache`` for ``Session`` and ``AsyncSession``: a client that awaits inside SQLAlchemy's greenlet.

SQLAlchemy runs an ``AsyncSession``'s work (and so the cache's
``do_orm_execute`` hook and commit listeners) as plain sync code inside a
greenlet that its event loop drives; its async drivers reach the loop from
there with ``await_only`` (``await_`` in SQLAlchemy 2.1).  The cache does the
same: :class:`HybridClient` has the blocking client's methods, and each call

* inside such a greenlet runs ``await_(async_client.method(...))``: the
  event loop keeps serving other tasks while memcached answers;
* anywhere else (a sync ``Session``, a thread, a script) calls the blocking
  :class:`~sqla_memcache.Client`.

Both clients talk to the same servers with the same hashing and serde, so a
sync worker and an async web process share entries and invalidations.  Build
it with ``ORMCache(Client(...), async_client=AsyncClient(...))``, or pass an
:class:`~sqla_memcache.AsyncClient` alone (its blocking twin is made with
:meth:`~sqla_memcache.AsyncClient.sync_client`).

From async code *outside* a session (say, ``cache.invalidate_tables`` in a
request handler), use :func:`run` so the calls await instead of blocking::

    await sqla_memcache.orm.aio.run(cache.invalidate_tables, "film")
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, TypeVar, Union

from ..aio import AsyncClient
from . import _compat
from .placement import without_failover

T = TypeVar("T")

await_ = _compat.await_
in_greenlet = _compat.in_greenlet


async def run(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Await ``fn(*args, **kwargs)`` run in SQLAlchemy's greenlet, so a
    :class:`HybridClient` inside it awaits instead of blocking the loop."""
    return await _compat.greenlet_spawn(fn, *args, **kwargs)  # type: ignore[no-any-return]


class HybridClient:
    """The blocking client's method surface, awaiting *async_client* inside an async session's greenlet.

    :param sync_client: used by sync sessions and code outside SQLAlchemy's greenlet.
    :param async_client: used from ``AsyncSession`` work (and :func:`run`).
    """

    def __init__(self, sync_client: Any, async_client: AsyncClient) -> None:
        self.sync_client = sync_client
        self.async_client = async_client

    def __repr__(self) -> str:
        return "HybridClient(%r, %r)" % (self.sync_client, self.async_client)

    @property
    def servers(self) -> List[Any]:
        return list(self.sync_client.servers)

    def without_failover(self) -> "HybridClient":
        """Both clients viewed without failover (see ``placement.py``)."""
        return HybridClient(without_failover(self.sync_client), self.async_client.without_failover())

    def sleep(self, seconds: float) -> None:
        """Pause the caller: ``asyncio.sleep`` inside the greenlet (the loop runs on), else ``time.sleep``."""
        if in_greenlet():
            await_(asyncio.sleep(seconds))
        else:
            time.sleep(seconds)

    # The methods the ORM cache calls, and their neighbours; same signatures as Client's.
    def get(self, key: Any, default: Any = None) -> Any:
        if in_greenlet():
            return await_(self.async_client.get(key, default))
        return self.sync_client.get(key, default)

    def get_multi(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> Dict[Any, Any]:
        if in_greenlet():
            return await_(self.async_client.get_multi(keys, key_prefix))
        return self.sync_client.get_multi(keys, key_prefix)

    def get_counters(self, keys: Iterable[Any], key_prefix: Union[str, bytes] = "") -> Dict[Any, int]:
        if in_greenlet():
            return await_(self.async_client.get_counters(keys, key_prefix))
        return self.sync_client.get_counters(keys, key_prefix)

    def get_counter(self, key: Any, default: Any = None) -> Any:
        if in_greenlet():
            return await_(self.async_client.get_counter(key, default))
        return self.sync_client.get_counter(key, default)

    def gets_cas(self, key: Any, default: Any = None) -> Tuple[Any, Optional[int]]:
        if in_greenlet():
            return await_(self.async_client.gets_cas(key, default))
        return self.sync_client.gets_cas(key, default)

    def set(self, key: Any, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        if in_greenlet():
            return await_(self.async_client.set(key, val, time, min_compress_len, noreply))
        return self.sync_client.set(key, val, time, min_compress_len, noreply)

    def add(self, key: Any, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False) -> Any:
        if in_greenlet():
            return await_(self.async_client.add(key, val, time, min_compress_len, noreply))
        return self.sync_client.add(key, val, time, min_compress_len, noreply)

    def cas(self, key: Any, val: Any, time: int = 0, min_compress_len: int = 0, noreply: bool = False,
            cas_id: Optional[int] = None) -> Any:
        if in_greenlet():
            return await_(self.async_client.cas(key, val, time, min_compress_len, noreply, cas_id))
        return self.sync_client.cas(key, val, time, min_compress_len, noreply, cas_id)

    def set_multi(self, mapping: Mapping[Any, Any], time: int = 0, key_prefix: Union[str, bytes] = "",
                  min_compress_len: int = 0, noreply: bool = False) -> List[Any]:
        if in_greenlet():
            return await_(self.async_client.set_multi(mapping, time, key_prefix, min_compress_len, noreply))
        return self.sync_client.set_multi(mapping, time, key_prefix, min_compress_len, noreply)

    def incr(self, key: Any, delta: int = 1, noreply: bool = False) -> Optional[int]:
        if in_greenlet():
            return await_(self.async_client.incr(key, delta, noreply))
        return self.sync_client.incr(key, delta, noreply)

    def decr(self, key: Any, delta: int = 1, noreply: bool = False) -> Optional[int]:
        if in_greenlet():
            return await_(self.async_client.decr(key, delta, noreply))
        return self.sync_client.decr(key, delta, noreply)

    def delete(self, key: Any, noreply: bool = False) -> int:
        if in_greenlet():
            return await_(self.async_client.delete(key, noreply))
        return self.sync_client.delete(key, noreply)

    def delete_multi(self, keys: Iterable[Any], time: Optional[int] = None, key_prefix: Union[str, bytes] = "",
                     noreply: bool = False) -> int:
        if in_greenlet():
            return await_(self.async_client.delete_multi(keys, time, key_prefix, noreply))
        return self.sync_client.delete_multi(keys, time, key_prefix, noreply)

    def touch(self, key: Any, time: int = 0, noreply: bool = False) -> int:
        if in_greenlet():
            return await_(self.async_client.touch(key, time, noreply))
        return self.sync_client.touch(key, time, noreply)


def hybrid(client: Any, async_client: Optional[AsyncClient] = None) -> Any:
    """What ``ORMCache(client, async_client=...)`` talks to: *client* as it is when no
    :class:`AsyncClient` is involved, else a :class:`HybridClient` of the two (an
    :class:`AsyncClient` passed as *client* gets its blocking twin)."""
    if isinstance(client, AsyncClient):
        if async_client is not None:
            raise TypeError("pass the blocking client first and the AsyncClient as async_client")
        client, async_client = client.sync_client(), client
    if async_client is None:
        return client
    return HybridClient(client, async_client)
