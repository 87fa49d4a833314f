"""Start and stop a private memcached for one benchmark run."""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Memcached:
    """``memcached -l 127.0.0.1 -p PORT -U 0 -m 256`` as a context manager.

    ``address`` is ``"127.0.0.1:PORT"``; ``host``/``port`` are the parts.
    """

    def __init__(self, binary: str | None = None, memory_mb: int = 256,
                 cpus: "list[int] | None" = None) -> None:
        self.binary = binary or shutil.which("memcached") or "/usr/bin/memcached"
        self.memory_mb = memory_mb
        self.host = "127.0.0.1"
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self.cpus = cpus  # bind memcached to these CPUs (see bench.runner._placement)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self) -> "Memcached":
        if not os.path.exists(self.binary):
            raise RuntimeError(
                "memcached not found: install it (apt-get install memcached) to run the benchmarks")
        for _ in range(5):
            self.port = free_port()
            cmd = [self.binary, "-l", self.host, "-p", str(self.port), "-U", "0",
                   "-m", str(self.memory_mb)]
            if os.geteuid() == 0:  # memcached refuses to run as root without -u
                cmd += ["-u", "root"]
            cpus = self.cpus
            self.proc = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
            if self._wait_ready():
                return self
            self.stop()  # port raced with someone else: try another
        raise RuntimeError("could not start memcached for the benchmark")

    def _wait_ready(self, timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection((self.host, self.port), timeout=0.5) as sock:
                    sock.sendall(b"version\r\n")
                    if sock.recv(100).startswith(b"VERSION"):
                        return True
            except OSError:
                time.sleep(0.02)
        return False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def __enter__(self) -> "Memcached":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
