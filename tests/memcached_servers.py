"""Real memcached servers for tests: local processes, Docker containers, or given addresses.

Everything here talks to memcached over raw sockets so the fixtures never depend on
the client under test. ``tests/conftest.py`` wires these helpers into fixtures; the
benchmark harness and the demo may reuse the same approach.

Sources of servers, in the order ``tests/conftest.py`` tries them:

* ``SQLA_MEMCACHE_TEST_SERVERS`` -- comma-separated ``host:port`` list of running servers
  (:func:`servers_from_env`); nothing is started or stopped.
* a local ``memcached`` binary -- :class:`MemcachedProcess` on a free loopback port.
* a reachable Docker engine -- :class:`MemcachedContainer` (``memcached:1.6``) via testcontainers.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

log = logging.getLogger(__name__)

ENV_SERVERS = "SQLA_MEMCACHE_TEST_SERVERS"
DOCKER_IMAGE = "memcached:1.6"
START_TIMEOUT = 10.0
HOW_TO_GET_MEMCACHED = (
    "no memcached server available for the tests. Either install the binary "
    "(`sudo apt-get install memcached`, or run `scripts/test`, which does it for you), "
    "start a Docker engine (the tests then use testcontainers), or point "
    f"{ENV_SERVERS}=host:port[,host:port...] at running servers."
)


def split_address(address: str) -> tuple[str, int]:
    """Split ``"host:port"`` into ``(host, port)``; raises ValueError when malformed."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host, int(port)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def raw_command(
    address: str,
    command: bytes,
    terminator: bytes = b"\r\n",
    timeout: float = 3.0,
    ssl_context: Optional[ssl.SSLContext] = None,
) -> bytes:
    """Send one command over a fresh connection and read until the reply ends with ``terminator``.

    Returns the whole reply. Raises OSError (including ``socket.timeout``) or
    ``ssl.SSLError`` when the server cannot be reached or does not answer in time.
    """
    host, port = split_address(address)
    with socket.create_connection((host, port), timeout=timeout) as plain:
        sock = ssl_context.wrap_socket(plain, server_hostname=host) if ssl_context else plain
        try:
            sock.sendall(command)
            reply = b""
            while not reply.endswith(terminator):
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError(f"{address} closed the connection after {reply!r}")
                reply += chunk
            return reply
        finally:
            if sock is not plain:
                sock.close()


def version(address: str, ssl_context: Optional[ssl.SSLContext] = None, timeout: float = 3.0) -> str:
    """Return the server's version string (``version`` command); raises OSError when unreachable."""
    reply = raw_command(address, b"version\r\n", ssl_context=ssl_context, timeout=timeout)
    if not reply.startswith(b"VERSION "):
        raise ConnectionError(f"{address} answered {reply!r} to version")
    return reply[len(b"VERSION ") :].strip().decode()


def reset(address: str, ssl_context: Optional[ssl.SSLContext] = None) -> None:
    """Empty the server (``flush_all``, flushed items reclaimed) and zero its counters (``stats reset``)."""
    reply = raw_command(address, b"flush_all\r\nstats reset\r\n", terminator=b"RESET\r\n", ssl_context=ssl_context)
    if reply != b"OK\r\nRESET\r\n":
        raise ConnectionError(f"{address} answered {reply!r} to flush_all/stats reset")
    # flush_all leaves the old items counted in curr_items until memcached reclaims them
    # lazily; have the LRU crawler reclaim them now, so a test can count its own items.
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        crawl = raw_command(address, b"lru_crawler crawl all\r\n", ssl_context=ssl_context)
        if not crawl.startswith((b"OK", b"BUSY")):
            break  # a server without the crawler: counts stay approximate
        stats = raw_command(address, b"stats\r\n", terminator=b"END\r\n", ssl_context=ssl_context)
        if b"\r\nSTAT curr_items 0\r\n" in stats:
            break
        time.sleep(0.01)
    raw_command(address, b"stats reset\r\n", terminator=b"RESET\r\n", ssl_context=ssl_context)


def wait_until_ready(
    address: str,
    timeout: float = START_TIMEOUT,
    ssl_context: Optional[ssl.SSLContext] = None,
    process: Optional[subprocess.Popen] = None,
) -> None:
    """Poll until the server answers ``version``.

    Raises RuntimeError when ``process`` exits first or ``timeout`` seconds pass.
    """
    deadline = time.monotonic() + timeout
    last_error: Optional[BaseException] = None
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"memcached for {address} exited with code {process.returncode}")
        try:
            version(address, ssl_context=ssl_context, timeout=1.0)
            return
        except (OSError, ssl.SSLError) as exc:
            last_error = exc
            time.sleep(0.02)
    raise RuntimeError(f"memcached at {address} not ready after {timeout}s: {last_error!r}")


def servers_from_env() -> List[str]:
    """Return the addresses in ``SQLA_MEMCACHE_TEST_SERVERS`` (empty list when unset)."""
    raw = os.environ.get(ENV_SERVERS, "")
    servers = [part.strip() for part in raw.split(",") if part.strip()]
    for address in servers:
        split_address(address)
    return servers


def memcached_binary() -> Optional[str]:
    """Path of the local ``memcached`` binary, or None."""
    return shutil.which("memcached") or next(
        (p for p in ("/usr/bin/memcached", "/usr/local/bin/memcached") if os.access(p, os.X_OK)), None
    )


@dataclass
class MemcachedProcess:
    """A dedicated local memcached process bound to ``host:port`` (free port chosen when 0).

    ``start()`` after ``stop()``/``kill()`` restarts it on the same port with an empty cache.
    """

    binary: str
    host: str = "127.0.0.1"
    port: int = 0
    memory_mb: int = 64
    extra_args: Sequence[str] = ()
    ssl_context: Optional[ssl.SSLContext] = None  # used only to probe readiness of a TLS server
    process: Optional[subprocess.Popen] = field(default=None, repr=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def servers(self) -> List[str]:
        return [self.address]

    @property
    def pid(self) -> Optional[int]:
        return self.process.pid if self.process else None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> "MemcachedProcess":
        """Start the process and wait until it answers; returns self. No-op when running."""
        if self.is_running():
            return self
        # A free port can be taken by someone else between probing and binding; retry a fresh one.
        attempts = 1 if self.port else 5
        for attempt in range(attempts):
            port = self.port or free_port(self.host)
            argv = [self.binary, "-l", self.host, "-p", str(port), "-U", "0", "-m", str(self.memory_mb)]
            if os.geteuid() == 0:
                argv += ["-u", "root"]  # memcached refuses to run as root without naming a user
            argv += list(self.extra_args)
            self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            try:
                wait_until_ready(f"{self.host}:{port}", ssl_context=self.ssl_context, process=self.process)
            except RuntimeError as exc:
                stderr = self._reap()
                if attempt + 1 == attempts:
                    raise RuntimeError(f"{exc}; stderr: {stderr}") from None
                continue
            self.port = port
            log.debug("started memcached pid %s on %s", self.process.pid, self.address)
            return self
        raise AssertionError("unreachable")

    def stop(self, timeout: float = 5.0) -> None:
        """Terminate (SIGTERM, then SIGKILL after ``timeout``) and reap the process."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.resume()  # a stopped process cannot act on SIGTERM
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._reap()

    def kill(self) -> None:
        """SIGKILL the process (a crash: no clean shutdown) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
        self._reap()

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing is answered.

        Returns once the kernel reports the process stopped (signals are
        asynchronous; a request sent right after kill() could still be served).
        """
        self._signal(signal.SIGSTOP)
        assert self.process is not None
        stat = f"/proc/{self.process.pid}/stat"
        deadline = time.monotonic() + 5
        while os.path.exists(stat) and time.monotonic() < deadline:
            with open(stat) as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "T":
                    return
            time.sleep(0.001)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        if not self.is_running():
            raise RuntimeError(f"memcached on {self.address} is not running")
        assert self.process is not None
        self.process.send_signal(signum)

    def _reap(self) -> str:
        if self.process is None:
            return ""
        self.process.wait()
        stderr = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None
        return stderr.strip()


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
        wait_until_ready(self.address, timeout=30.0)
        return self

    def stop(self) -> None:
        if self.container is not None:
            self.container.stop()
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


# --- TLS material ---------------------------------------------------------------------------


@dataclass
class TLSFiles:
    """PEM files for a TLS memcached: a CA, a server cert/key it signed, and an unrelated CA."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    wrong_ca_file: Path

    def client_context(self, ca_file: Optional[Path] = None) -> ssl.SSLContext:
        """A client SSLContext trusting ``ca_file`` (default: the CA that signed the server cert)."""
        return ssl.create_default_context(cafile=str(ca_file or self.ca_file))


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the `openssl` command is needed to make test certificates: apt-get install openssl")
    subprocess.run([openssl, *args], check=True, capture_output=True)


def _self_signed_ca(directory: Path, name: str) -> tuple[Path, Path]:
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        "-subj", f"/CN=sqla_memcache test {name}", "-keyout", str(key), "-out", str(cert),
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip
    return cert, key


def make_tls_files(directory: Path) -> TLSFiles:
    """Create a CA, a server certificate for 127.0.0.1/localhost signed by it, and a second CA."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = _self_signed_ca(directory, "ca")
    wrong_ca, _ = _self_signed_ca(directory, "wrong-ca")
    key, csr, cert = directory / "server.key", directory / "server.csr", directory / "server.pem"
    extensions = directory / "server.ext"
    extensions.write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    )
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(csr))
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-CAcreateserial",
        "-days", "2", "-extfile", str(extensions), "-out", str(cert),
    )  # fmt: skip
    return TLSFiles(ca_file=ca_cert, cert_file=cert, key_file=key, wrong_ca_file=wrong_ca)


def tls_process(binary: str, files: TLSFiles) -> MemcachedProcess:
    """A (not yet started) memcached process serving only TLS with ``files``' server certificate."""
    return MemcachedProcess(
        binary=binary,
        extra_args=["-Z", "-o", f"ssl_chain_cert={files.cert_file},ssl_key={files.key_file}"],
        ssl_context=files.client_context(),
    )


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
