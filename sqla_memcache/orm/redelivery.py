"""Undelivered bumps go out as soon as their server answers again, not after ``dead_retry``.

A bump that fails (server down, frozen, unreachable) is remembered by the
``ORMCache`` (``_undelivered``); entries depending on it are bypassed in this
process. Other processes do not know: they may read the old counters and
entries as soon as the server is back, so the re-send must not wait for the
client's ``dead_retry`` (30 s by default) to end.

While bumps are undelivered, a daemon thread per cache (:class:`Redeliverer`)
wakes every ``interval`` seconds (0.1 by default): it *probes* each server
the client holds dead -- its own short connection, ``version``, a reply
within ``probe_timeout`` -- and when one answers, clears the client's dead
mark for it and re-sends the remembered bumps. The thread ends when none are
left; the next failed bump, or the next use of the cache while some are
pending, starts it again. Callers never wait for a probe.
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from typing import Any, Iterable, List, Optional

log = logging.getLogger(__name__)

#: seconds between probes while bumps are undelivered (a probe of a frozen server itself waits
#: ``PROBE_TIMEOUT``, and is answered the moment the server resumes)
INTERVAL = 0.1
#: longest wait for a probed server's ``version`` reply
PROBE_TIMEOUT = 0.5


def held_dead(client: Any) -> List[Any]:
    """The servers ``client`` (a :class:`sqla_memcache.Client` or its view) currently holds dead."""
    now = time.time()
    return [host for host in getattr(client, "servers", ()) if getattr(host, "deaduntil", 0) > now]


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
            log.info("memcached %s answers again; delivering remembered invalidations", host.label)
            host.deaduntil = 0.0  # the client reconnects at the next command (flush/on_revive still run)
            back.append(host)
    return back


class Redeliverer:
    """The background re-sender of one ``ORMCache``'s undelivered bumps."""

    def __init__(self, cache: Any, interval: float = INTERVAL, probe_timeout: float = PROBE_TIMEOUT) -> None:
        self.cache = cache
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
            self._thread = threading.Thread(target=self._run, name="sqla-memcache-redeliver", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        cache = self.cache
        while cache.pending_invalidations and not self.stopped.wait(self.interval):
            try:
                dead = held_dead(cache.client)
                # while a server is held dead the client fails its keys at once: send only
                # when a probe found one back, or when no server is held dead at all
                if not dead:
                    cache.retry_undelivered(wake=False)
                elif revive(dead, self.probe_timeout):
                    self.revived_at = time.monotonic()
                    cache.retry_undelivered(wake=False)
            except Exception:  # never let the thread die with bumps pending
                log.warning("re-sending invalidations failed", exc_info=True)
