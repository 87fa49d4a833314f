"""The re-sender of undelivered bumps: the server's return is noticed by probing, not after ``dead_retry``."""
from __future__ import annotations

import gc
import threading
import time
import uuid

from sqla_memcache import Client
from sqla_memcache.orm import ORMCache


def _threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name == "sqla-memcache-redeliver")


def test_a_lost_bump_is_delivered_within_a_probe_of_the_return_despite_dead_retry(memcached_factory):
    server = memcached_factory()
    cache = ORMCache(Client(server.servers, socket_timeout=0.3, dead_retry=30), namespace="rd" + uuid.uuid4().hex[:8])
    cache.invalidate_tables("t")  # counters created
    server.kill()
    cache.invalidate_tables("t")
    assert cache.pending_invalidations > 0
    time.sleep(0.5)  # probes of a refused port: nothing delivered, nothing logged per round
    assert cache.pending_invalidations > 0
    server.start()
    back = time.monotonic()
    while cache.pending_invalidations and time.monotonic() - back < 10:
        time.sleep(0.005)
    # Delivered within 10 s, a third of the 30 s dead_retry the client alone would wait;
    # a probe round (0.1 s + a 0.5 s probe) on an idle machine, the rest is margin for CPU starvation.
    assert cache.pending_invalidations == 0, "not delivered %.1f s after the return" % (time.monotonic() - back)


def test_the_thread_ends_with_its_cache(memcached_factory):
    server = memcached_factory()
    before = _threads()
    cache = ORMCache(Client(server.servers, socket_timeout=0.3), namespace="rd" + uuid.uuid4().hex[:8])
    server.kill()
    cache.invalidate_tables("t")
    assert _threads() == before + 1
    del cache
    gc.collect()
    deadline = time.monotonic() + 3
    while _threads() > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _threads() == before
