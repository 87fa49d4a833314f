"""Real memcached servers for tests: local processes, Docker containers, or given addresses.

The processes are :class:`sqla_memcache.memcached_process.MemcachedProcess` (the
module the demo, the CLI and the ``sqla_memcache.testing`` plugin use) with what
fault tests add: SIGSTOP/SIGCONT and a ``servers`` list. Readiness and flushing
talk raw protocol (:mod:`support.raw`), so the fixtures never depend on the client
under test. ``tests/conftest.py`` wires these into fixtures.

Sources of servers, in the order :class:`ServerPool` tries them:

* ``SQLA_MEMCACHE_TEST_SERVERS`` -- comma-separated ``host:port`` list of running servers
  (:func:`servers_from_env`); nothing is started or stopped.
* a local ``memcached`` binary -- :class:`MemcachedProcess` on a free loopback port.
* a reachable Docker engine -- :class:`MemcachedContainer` (``memcached:1.6``) via testcontainers.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import ssl
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from sqla_memcache import memcached_process
from sqla_memcache.memcached_process import split_address

from .raw import version
from .tls import TLSFiles

log = logging.getLogger(__name__)

ENV_SERVERS = "SQLA_MEMCACHE_TEST_SERVERS"
DOCKER_IMAGE = "memcached:1.6"
HOW_TO_GET_MEMCACHED = (
    "no memcached server available for the tests. Either install the binary "
    "(`sudo apt-get install memcached`, or run `scripts/test`, which does it for you), "
    "start a Docker engine (the tests then use testcontainers), or point "
    f"{ENV_SERVERS}=host:port[,host:port...] at running servers."
)


def memcached_binary() -> Optional[str]:
    """Path of the local ``memcached`` binary, or None (looked up each call, so tests can patch it)."""
    return memcached_process.find_memcached_binary()


def wait_until_ready(address: str, timeout: float = 30.0, ssl_context: Optional[ssl.SSLContext] = None) -> None:
    """Poll until the server answers ``version``; RuntimeError after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while time.monotonic() < deadline:
        try:
            version(address, ssl_context=ssl_context, timeout=1.0)
            return
        except (OSError, ssl.SSLError) as exc:
            last_error = exc
            time.sleep(0.02)
    raise RuntimeError(f"memcached at {address} not ready after {timeout}s: {last_error!r}")


def closed_address(host: str = "127.0.0.1") -> str:
    """``"host:port"`` of a loopback port nothing listened on a moment ago (a server that is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return f"{host}:{sock.getsockname()[1]}"


def servers_from_env() -> List[str]:
    """Return the addresses in ``SQLA_MEMCACHE_TEST_SERVERS`` (empty list when unset)."""
    raw = os.environ.get(ENV_SERVERS, "")
    servers = [part.strip() for part in raw.split(",") if part.strip()]
    for address in servers:
        if ":" not in address:  # the port is required here: no default port for a test server
            raise ValueError(f"{ENV_SERVERS}: expected host:port, got {address!r}")
        split_address(address)
    return servers


class MemcachedProcess(memcached_process.MemcachedProcess):
    """A dedicated local memcached a test may kill, restart (same port, empty cache), pause or resume."""

    @property
    def servers(self) -> List[str]:
        """``[address]``, ready for ``Client(...)``."""
        return [self.address]

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing is answered.

        Returns once the kernel reports the process stopped (signals are
        asynchronous; a request sent right after kill() could still be served).
        """
        pid = self._signal(signal.SIGSTOP)
        stat = f"/proc/{pid}/stat"
        deadline = time.monotonic() + 5
        while os.path.exists(stat) and time.monotonic() < deadline:
            with open(stat) as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                    return
            time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> int:
        pid = self.pid
        if pid is None:
            raise RuntimeError(f"memcached on {self.address} is not running")
        os.kill(pid, signum)
        return pid


def tls_process(binary: str, files: TLSFiles) -> MemcachedProcess:
    """A (not yet started) memcached process serving only TLS with ``files``' server certificate."""
    return MemcachedProcess(binary, extra_args=files.server_args())


@dataclass
class MemcachedContainer:
    """A ``memcached:1.6`` container started through testcontainers; ``address`` is host-reachable."""

    container: object = field(default=None, repr=False)
    address: str = ""

    def start(self) -> "MemcachedContainer":
        from testcontainers.core.container import DockerContainer

        container = DockerContainer(DOCKER_IMAGE).with_exposed_ports(11211).with_command("-m 64 -U 0")
        container.start()
        self.container = container
        self.address = f"{container.get_container_host_ip()}:{container.get_exposed_port(11211)}"
        wait_until_ready(self.address)
        return self

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()  # type: ignore[attr-defined]
            self.container = None


def docker_available() -> tuple[bool, str]:
    """Return ``(True, "")`` when testcontainers is importable and the Docker engine answers a ping."""
    try:
        import docker  # installed with testcontainers
    except ImportError:
        return False, "testcontainers/docker packages not installed"
    try:
        client = docker.from_env(timeout=3)
        client.ping()
        client.close()
    except Exception as exc:  # the docker SDK raises many unrelated types for "no engine"
        return False, f"no Docker engine reachable ({type(exc).__name__})"
    try:
        import testcontainers.core.container  # noqa: F401
    except ImportError:
        return False, "testcontainers not installed"
    return True, ""


# --- what the fixtures hand to tests ----------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """A running, flushed server for one test: ``address`` is ``"host:port"``."""

    address: str

    @property
    def servers(self) -> List[str]:
        return [self.address]


@dataclass(frozen=True)
class Cluster:
    """Several running, flushed servers; ``servers`` is the list of ``"host:port"``."""

    servers: List[str]


@dataclass(frozen=True)
class TLSServer:
    """A running, flushed TLS-only server plus the PEM files to reach (or fail to reach) it."""

    address: str
    files: TLSFiles

    @property
    def servers(self) -> List[str]:
        return [self.address]

    @property
    def ca_file(self) -> Path:
        return self.files.ca_file

    @property
    def cert_file(self) -> Path:
        return self.files.cert_file

    @property
    def key_file(self) -> Path:
        return self.files.key_file

    @property
    def wrong_ca_file(self) -> Path:
        return self.files.wrong_ca_file

    def client_context(self, ca_file: Optional[Path] = None) -> ssl.SSLContext:
        """A client SSLContext trusting this server's CA (or ``ca_file``)."""
        return self.files.client_context(ca_file)


class ServerPool:
    """Session-wide memcached servers from the first available source (see module docstring).

    ``source`` is ``"env"``, ``"local"`` or ``"docker"``; ``unavailable`` says why there is none.
    Servers are started on demand by :meth:`servers` and stopped by :meth:`close`.
    """

    def __init__(self) -> None:
        self.binary = memcached_binary()
        self.unavailable = ""
        self._given = servers_from_env()
        self._started: list = []
        if self._given:
            self.source = "env"
        elif self.binary:
            self.source = "local"
        else:
            ok, why = docker_available()
            self.source = "docker" if ok else ""
            self.unavailable = "" if ok else f"{HOW_TO_GET_MEMCACHED} (memcached binary not found; {why})"

    def describe(self) -> str:
        if self.source == "env":
            return f"memcached: {ENV_SERVERS}={','.join(self._given)}"
        if self.source == "local":
            return f"memcached: local processes of {self.binary}"
        if self.source == "docker":
            return f"memcached: Docker containers of {DOCKER_IMAGE}"
        return "memcached: NONE AVAILABLE"

    def servers(self, count: int) -> List[str]:
        """Addresses of ``count`` distinct running servers, starting more when needed.

        Raises LookupError when ``SQLA_MEMCACHE_TEST_SERVERS`` names fewer than ``count``.
        """
        if self.source == "env":
            if len(self._given) < count:
                raise LookupError(f"needs {count} servers but {ENV_SERVERS} names {len(self._given)}")
            return self._given[:count]
        while len(self._started) < count:
            if self.source == "local":
                assert self.binary is not None
                self._started.append(MemcachedProcess(self.binary).start())
            else:
                self._started.append(MemcachedContainer().start())
        return [server.address for server in self._started[:count]]

    def close(self) -> None:
        for server in self._started:
            if isinstance(server, MemcachedProcess):
                server.kill()  # throwaway data; SIGTERM costs memcached's ~1 s graceful shutdown
            else:
                server.stop()
        self._started.clear()
