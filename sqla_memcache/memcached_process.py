"""Find or start a memcached server for the demo, the examples and the CLI.

The demo's promise is "one command works": when the configured servers answer,
they are used as they are; when nothing listens and a ``memcached`` binary is
installed, :func:`ensure_servers` starts a private one on a free loopback port
and stops it when the interpreter exits; when there is no binary either, it
raises :class:`MemcachedUnavailable` whose message is one line saying how to
get one.

This module is for convenience tooling, not production: it never daemonises,
and the servers it starts listen on 127.0.0.1 only.
"""
from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from typing import List, Optional, Sequence, Tuple

from .errors import MemcachedUnavailable
from .config import parse_server

log = logging.getLogger(__name__)

ENV_SERVERS = "SQLA_MEMCACHE_SERVERS"
DEFAULT_SERVER = "127.0.0.1:11211"
START_TIMEOUT = 10.0
HOW_TO_GET_MEMCACHED = (
    "no memcached is listening and no `memcached` binary was found: install one "
    "(Debian/Ubuntu: `sudo apt-get install memcached`, macOS: `brew install memcached`) "
    "or pass --servers HOST:PORT / set SQLA_MEMCACHE_SERVERS"
)




def split_address(address: str) -> Tuple[str, int]:
    """Split ``"host:port"`` (``[v6]:port``; the port defaults to 11211, an empty host is
    127.0.0.1) into ``(host, port)``, parsed by the client's own ``parse_server``.

    Raises ValueError when it is not such an address (a unix socket path included).
    """
    family, found, _weight = parse_server("127.0.0.1" + address if address.startswith(":") else address)
    if family == socket.AF_UNIX:
        raise ValueError(f"expected host:port, got {address!r}")
    return found[0], found[1]


def parse_servers(text: Optional[str]) -> List[str]:
    """Split a comma/space separated server list; empty or None gives ``[]``."""
    if not text:
        return []
    return [part for part in text.replace(",", " ").split() if part]


def configured_servers(explicit: Optional[Sequence[str]] = None) -> Tuple[List[str], bool]:
    """Return ``(servers, given)``: explicit servers, else ``$SQLA_MEMCACHE_SERVERS``, else the default.

    ``given`` is True when the user named the servers (argument or environment),
    False when the default ``127.0.0.1:11211`` was assumed.
    """
    if explicit:
        return list(explicit), True
    from_env = parse_servers(os.environ.get(ENV_SERVERS))
    if from_env:
        return from_env, True
    return [DEFAULT_SERVER], False


def is_listening(address: str, timeout: float = 0.5) -> bool:
    """True when a TCP connection to ``address`` succeeds within ``timeout`` seconds."""
    try:
        host, port = split_address(address)
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except (OSError, ValueError):
        return False


def find_memcached_binary() -> Optional[str]:
    """Path of an installed ``memcached`` binary, or None."""
    found = shutil.which("memcached")
    if found:
        return found
    for candidate in ("/usr/bin/memcached", "/usr/local/bin/memcached", "/usr/sbin/memcached",
                      "/opt/homebrew/bin/memcached"):
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MemcachedProcess:
    """A private ``memcached`` child process on a free loopback port.

    Use as a context manager or call :meth:`start` / :meth:`stop`; a started
    process is also stopped at interpreter exit.
    """

    def __init__(self, binary: Optional[str] = None, host: str = "127.0.0.1",
                 memory_mb: int = 64, extra_args: Sequence[str] = (), port: Optional[int] = None) -> None:
        self.binary = binary or find_memcached_binary()
        self.host = host
        self.memory_mb = memory_mb
        self.extra_args = list(extra_args)
        #: the port to bind; None picks a free one, which later starts keep
        self.port: Optional[int] = port
        self._proc: Optional[subprocess.Popen] = None
        self._stop_at_exit = False

    @property
    def address(self) -> str:
        """``"host:port"`` of the running server; RuntimeError before :meth:`start`."""
        if self.port is None:
            raise RuntimeError("memcached process not started")
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> Optional[int]:
        """The server's process id while it runs, else None."""
        return self._proc.pid if self.is_running() else None

    def is_running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`/:meth:`kill`, unless the process died."""
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> "MemcachedProcess":
        """Start the server and wait until it accepts connections; returns self.

        A start after :meth:`stop` or :meth:`kill` binds the same port (an empty
        cache at the same address); a start while running does nothing.
        Raises MemcachedUnavailable when there is no binary or it does not come up.
        """
        if self.is_running():
            return self
        if self.binary is None:
            raise MemcachedUnavailable(HOW_TO_GET_MEMCACHED)
        last_error = ""
        for _ in range(1 if self.port is not None else 3):  # a free port can be taken between probe and bind
            port = self.port if self.port is not None else _free_port(self.host)
            argv = [self.binary, "-l", self.host, "-p", str(port), "-U", "0",
                    "-m", str(self.memory_mb), *self.extra_args]
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                argv += ["-u", "root"]  # memcached refuses to run as root without -u
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE, start_new_session=True)
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline and proc.poll() is None:
                if is_listening(f"{self.host}:{port}", timeout=0.2):
                    self._proc, self.port = proc, port
                    if not self._stop_at_exit:
                        atexit.register(self.stop)
                        self._stop_at_exit = True
                    log.info("started memcached pid %d on %s", proc.pid, self.address)
                    return self
                time.sleep(0.05)
            proc.kill()
            _, err = proc.communicate()
            last_error = (err or b"").decode(errors="replace").strip()
        raise MemcachedUnavailable(f"could not start {self.binary}: {last_error or 'timed out'}")

    def stop(self) -> None:
        """Terminate the server (SIGTERM: memcached's graceful shutdown takes about a second); idempotent."""
        self._end(kill=False)

    def kill(self) -> None:
        """SIGKILL the server (a crash: no graceful shutdown, no wait); idempotent."""
        self._end(kill=True)

    def _end(self, kill: bool) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            if kill:
                proc.kill()
            else:
                os.kill(proc.pid, signal.SIGCONT)  # a SIGSTOPped server cannot act on SIGTERM
                proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.info("%s memcached pid %d", "killed" if kill else "stopped", proc.pid)
        if proc.stderr is not None:
            proc.stderr.close()

    def __enter__(self) -> "MemcachedProcess":
        return self.start() if self._proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ensure_servers(explicit: Optional[Sequence[str]] = None) -> Tuple[List[str], Optional[MemcachedProcess]]:
    """Servers to use, starting a private memcached when none of them answers.

    The servers are ``explicit``, else ``$SQLA_MEMCACHE_SERVERS``, else
    ``127.0.0.1:11211``. When at least one of them accepts a connection they are
    returned as they are. Otherwise a local ``memcached`` binary is started on a
    free loopback port (logged at WARNING level) and stopped at exit.

    Returns ``(servers, process)``; ``process`` is None unless one was started
    (call ``process.stop()`` to stop it earlier). Raises MemcachedUnavailable,
    whose message is a one-line hint, when nothing answers and no binary exists.
    """
    servers, _ = configured_servers(explicit)
    if any(is_listening(address) for address in servers):
        return servers, None
    process = MemcachedProcess().start()
    log.info("nothing listens at %s; started a private memcached at %s",
                ", ".join(servers), process.address)
    return [process.address], process
