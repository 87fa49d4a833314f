"""Fixtures of the client tests: ``make`` runs a behaviour test on both clients; a unix-socket server.

``make``            parametrised ``sync``/``async``/``uvloop``: ``make(servers, **kwargs)``
                    gives a ``Client``, or an ``AsyncClient`` with the same call surface
                    (:class:`support.clients.Blocking`) on an asyncio or a uvloop event
                    loop; ``make.kind`` says which.
(``run_async``, parametrised ``asyncio``/``uvloop``, is in ``tests/conftest.py``.)
``unix_memcached``  the path of a memcached listening on a unix socket only.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from support.clients import ClientMaker, uvloop_missing

_UVLOOP_MISSING = uvloop_missing()


@pytest.fixture(params=["sync", "async", pytest.param("uvloop", marks=pytest.mark.skipif(
    bool(_UVLOOP_MISSING) and not os.environ.get("CI"), reason=_UVLOOP_MISSING or "uvloop"))])
def make(request: pytest.FixtureRequest) -> Iterator[ClientMaker]:
    maker = ClientMaker(request.param)
    yield maker
    maker.close_all()


@pytest.fixture
def unix_memcached(tmp_path: Path) -> Iterator[Path]:
    binary = shutil.which("memcached")
    if binary is None:
        pytest.skip("needs a local memcached binary for a unix-socket server")
    sock_path = tmp_path / "mc.sock"
    argv = [binary, "-s", str(sock_path), "-m", "16"] + (["-u", "root"] if os.geteuid() == 0 else [])
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not sock_path.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    yield sock_path
    proc.kill()
    proc.wait()
