"""The asyncio client's reply deadlines: a watchdog thread, no timer in the event loop.

A request on a pooled connection is failed at its deadline (within the
watchdog's tick) by the one watchdog thread of the process; the event loop
schedules no timer for it, so a loop without late replies pays nothing.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, List

from sqla_memcache import AsyncClient
from sqla_memcache.aio import watchdog


def _count_timers(loop: asyncio.AbstractEventLoop, counted: List[str]) -> None:
    """Record every timer *loop* schedules (``call_later`` goes through ``call_at``)."""
    call_at = loop.call_at

    def counting_at(*args: Any, **kwargs: Any) -> Any:
        counted.append("call_at")
        return call_at(*args, **kwargs)

    loop.call_at = counting_at  # type: ignore[method-assign]


def test_requests_on_pooled_connections_schedule_no_timer(memcached):
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
    assert counted == []


def test_each_request_is_failed_at_its_own_deadline(memcached_factory, run_async):
    server = memcached_factory()

    async def main() -> None:
        c = AsyncClient(server.servers, socket_timeout=0.3, dead_retry=60, pool_size=4)
        patient = AsyncClient(server.servers, socket_timeout=30, dead_retry=60, pool_size=4)
        patient.servers = c.servers  # same hosts and pools, a later deadline
        patient._router = c._router
        await c.set("k", 1)
        await asyncio.gather(c.get("k"), c.get("k"))  # two idle pooled connections
        assert c.servers[0].idle_count() == 2
        server.pause()
        try:
            slow = asyncio.ensure_future(patient.get("k", "miss"))  # a deadline 30 s ahead
            await asyncio.sleep(0.05)
            started = time.monotonic()
            quick = asyncio.ensure_future(c.get("k", "miss"))  # 0.3 s: failed first
            done, _ = await asyncio.wait({slow, quick}, return_when=asyncio.FIRST_COMPLETED)
            waited = time.monotonic() - started
            assert done == {quick} and quick.result() == "miss"
            # (the deadline, then at most a tick or two of the watchdog; generous for a loaded machine)
            assert 0.3 <= waited < 0.3 + 20 * watchdog.TICK, waited
            assert not slow.done()
        finally:
            server.resume()
        assert await slow == 1  # its own deadline had not passed: the reply still counts

    run_async(main())


_LIFECYCLE = """
import asyncio, gc, os, sys, time
from sqla_memcache import AsyncClient
from sqla_memcache.aio import watchdog
from sqla_memcache.memcached_process import MemcachedProcess

def stop():
    os.kill(PID, 19)  # SIGSTOP: the reply never comes, once the kernel says it is stopped
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        with open("/proc/%d/stat" % PID) as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        time.sleep(0.005)

async def late_get(server):
    c = AsyncClient([server.address], socket_timeout=0.2, dead_retry=60)
    await c.set("k", 1)
    stop()
    try:
        return await c.get("k", "miss")
    finally:
        os.kill(PID, 18)
        await c.close()

with MemcachedProcess() as server:
    PID = server.pid  # (a forked child does not own the process: its pid reads None there)
    assert asyncio.run(late_get(server)) == "miss"
    gc.collect()  # the client and its hosts are gone: nothing left to watch
    deadline = time.monotonic() + 5
    while watchdog._thread is not None and time.monotonic() < deadline:
        time.sleep(watchdog.TICK)
    assert watchdog._thread is None, "the watchdog thread outlived the last client"
    started = time.monotonic()
    got = asyncio.run(late_get(server))
    assert got == "miss", got  # a new thread enforces the new client's deadline
    assert time.monotonic() - started < 2
    if hasattr(os, "fork"):
        pid = os.fork()
        if pid == 0:  # the child: its own thread, for the hosts it makes
            try:
                ok = asyncio.run(late_get(server)) == "miss"
            except BaseException:
                ok = False
            os._exit(0 if ok else 1)
        _, status = os.waitpid(pid, 0)
        assert status == 0, "the deadline was not enforced in a forked child"
print("OK")
"""


def test_the_watchdog_thread_ends_with_the_last_client_and_starts_again_also_after_fork():
    """In a fresh interpreter: pytest's log capture keeps clients alive in this one."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _LIFECYCLE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "OK", proc.stdout + proc.stderr
