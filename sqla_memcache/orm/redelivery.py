"""Undelivered bumps go out as soon as their server answers again, not after ``dead_retry``.

A bump that fails (server down, frozen, unreachable) is remembered by the
``ORMCache`` (``_undelivered``); entries depending on it are bypassed in this
process. Other processes do not know: they may read the old counters and
entries as soon as the server is back, so the re-send must not wait for the
client's ``dead_retry`` (30 s by default) to end.

While bumps are undelivered, a daemon thread per cache (:class:`Redeliverer`)
wakes every ``interval`` seconds (0.1 by default): it *probes* the client's
servers -- its own short connection, ``version``, a reply within
``probe_timeout`` -- and when one answers, clears the client's dead mark for
it and re-sends the remembered bumps. The thread ends when none are left (or
the cache is gone); the next failed bump, or the next use of the cache while
some are pending, starts it again. Callers never wait for a probe.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
import weakref
from typing import Any, Iterable, List, Optional

log = logging.getLogger(__name__)

#: seconds between probes while bumps are undelivered (a probe of a frozen server itself waits
#: ``PROBE_TIMEOUT``, and is answered the moment the server resumes)
INTERVAL = 0.1
#: longest wait for a probed server's ``version`` reply
PROBE_TIMEOUT = 0.5


def answers(host: Any, timeout: float = PROBE_TIMEOUT) -> bool:
    """True when ``host`` answers ``version`` within ``timeout`` on a fresh connection of its own."""
    try:
        sock = socket.socket(host.family, socket.SOCK_STREAM)
    except OSError:
        return False
    try:
        sock.settimeout(timeout)
        sock.connect(host.address)
        if getattr(host, "ssl_context", None) is not None:
            name = host.address[0] if isinstance(host.address, tuple) else None
            sock = host.ssl_context.wrap_socket(sock, server_hostname=name)
        deadline = time.monotonic() + timeout
        sock.sendall(b"version\r\n")
        reply = b""
        while not reply.endswith(b"\r\n"):
            left = deadline - time.monotonic()
            if left <= 0 or len(reply) > 256:
                return False
            sock.settimeout(left)
            chunk = sock.recv(256)
            if not chunk:
                return False
            reply += chunk
        return reply.startswith(b"VERSION ")
    except (OSError, ValueError):
        return False
    finally:
        sock.close()


def revive(hosts: Iterable[Any], timeout: float = PROBE_TIMEOUT) -> List[Any]:
    """Probe ``hosts``; clear the dead mark of those that answer and return them."""
    back = []
    for host in hosts:
        if answers(host, timeout):
            if getattr(host, "deaduntil", 0):
                log.info("memcached %s answers again; delivering remembered invalidations", host.label)
                host.deaduntil = 0.0  # the client reconnects at the next command (flush/on_revive still run)
            back.append(host)
    return back


class Redeliverer:
    """The background re-sender of one ``ORMCache``'s undelivered bumps (holds it weakly)."""

    def __init__(self, cache: Any, interval: float = INTERVAL, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self._cache = weakref.ref(cache)
        self.interval = interval
        self.probe_timeout = probe_timeout
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()
        #: set to stop the thread (tests, interpreter exit)
        self.stopped = threading.Event()
        #: ``time.monotonic()`` when a probe last found a server back (None: never)
        self.revived_at: Optional[float] = None

    def wake(self) -> None:
        """Start the thread unless it runs (cheap: called on every use while bumps are pending)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            # The thread gets only the weak reference: a cache nobody uses any more ends it.
            self._thread = threading.Thread(target=_run, args=(self._cache,), name="sqla-memcache-redeliver",
                                            daemon=True)
            self._thread.start()


def _run(ref: "weakref.ReferenceType[Any]") -> None:
    while True:
        cache = ref()
        if cache is None or not cache.pending_invalidations:
            return
        redeliverer = cache.redeliverer
        del cache  # not held while waiting
        if redeliverer.stopped.wait(redeliverer.interval):
            return
        cache = ref()
        if cache is None:
            return
        try:
            hosts = [h for h in getattr(cache.client, "servers", ()) if hasattr(h, "family")]
            # Send only when a server answers: a refused or frozen one would fail the re-send
            # (and log) every round. Probing every server also covers a client whose dead
            # mark has already run out (``dead_retry`` shorter than the outage).
            if not hosts or revive(hosts, redeliverer.probe_timeout):
                if hosts:
                    redeliverer.revived_at = time.monotonic()
                cache.retry_undelivered(wake=False)
        except Exception:  # never let the thread die with bumps pending
            log.warning("re-sending invalidations failed", exc_info=True)
        del cache
