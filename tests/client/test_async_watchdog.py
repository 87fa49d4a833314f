"""The asyncio client's reply deadlines: one watchdog timer per server, not one per request.

A request on a pooled connection is failed at its deadline by the host's
watchdog, armed at the earliest awaited deadline; a request whose deadline
is earlier than the armed one re-arms it.
"""
from __future__ import annotations

import asyncio
from typing import Any, List

from sqla_memcache import AsyncClient


def _count_timers(loop: asyncio.AbstractEventLoop, counted: List[str]) -> None:
    """Record every timer *loop* schedules (``call_later`` goes through ``call_at``)."""
    call_at = loop.call_at

    def counting_at(*args: Any, **kwargs: Any) -> Any:
        counted.append("call_at")
        return call_at(*args, **kwargs)

    loop.call_at = counting_at  # type: ignore[method-assign]


def test_sequential_requests_share_one_timer(memcached):
    async def main() -> List[str]:
        c = AsyncClient(memcached.servers, socket_timeout=30)
        await c.set("k", b"v")
        counted: List[str] = []
        _count_timers(asyncio.get_running_loop(), counted)
        for _ in range(200):
            assert await c.get("k") == b"v"
        await c.close()
        return counted

    counted = asyncio.run(main())
    assert len(counted) <= 1, counted  # armed once (or never, if still armed from the set)


def test_an_earlier_deadline_rearms_the_watchdog(memcached_factory):
    server = memcached_factory()

    async def main() -> None:
        c = AsyncClient(server.servers, socket_timeout=0.3, dead_retry=60, pool_size=4)
        patient = AsyncClient(server.servers, socket_timeout=30, dead_retry=60, pool_size=4)
        patient.servers = c.servers  # same hosts and pools, a later deadline
        patient._router = c._router
        await c.set("k", 1)
        await asyncio.gather(c.get("k"), c.get("k"))  # two idle pooled connections
        assert c.servers[0].idle_count() == 2
        await asyncio.sleep(0.5)  # the watchdog armed by these fires, finds nothing awaited, and rests
        assert c.servers[0]._watchdog is None
        server.pause()
        try:
            slow = asyncio.ensure_future(patient.get("k", "miss"))  # arms the watchdog 30 s ahead
            await asyncio.sleep(0.05)
            quick = asyncio.ensure_future(c.get("k", "miss"))  # 0.3 s: must re-arm it earlier
            done, _ = await asyncio.wait({slow, quick}, return_when=asyncio.FIRST_COMPLETED)
            assert done == {quick} and quick.result() == "miss"
            assert not slow.done()
        finally:
            server.resume()
        assert await slow == 1  # its own deadline had not passed: the reply still counts

    asyncio.run(main())
