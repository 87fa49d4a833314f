"""``python -m bench.overlap``: what work placed between a request and its reply saves.

One raw socket to a private memcached (on the last CPU, this process on the
first), a 100-byte ``get``, and W iterations of a small Python loop done
either after the reply was read (``after``) or between the send and the read
(``between``), interleaved over rounds. Prints CPU (user, system) and wall
time per get, medians over the rounds. It is the measurement behind the ORM
hit's ``get_counters_begin``: a process that waits for a reply sleeps and wakes
up with cold caches, so work moved before the read costs less CPU than the
same work after it, not only less wall time.
"""
from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import time
from typing import Callable, Dict, List, Tuple

from .server import Memcached

DATA = list(range(3000))


def _work(n: int) -> int:
    total = 0
    for i in range(n):
        total += DATA[i % 3000]
    return total


def _measure(op: Callable[[int], None], w: int, n: int) -> Tuple[float, float, float]:
    """``(user, system, wall)`` µs per call of ``op(w)`` over ``n`` calls."""
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(n):
        op(w)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_SELF)
    return ((after.ru_utime - before.ru_utime) / n * 1e6, (after.ru_stime - before.ru_stime) / n * 1e6,
            wall / n * 1e6)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--work", default="0,300,600,1200,2400", help="loop sizes W, comma-separated")
    args = ap.parse_args()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, {cpus[0]})
    with Memcached(cpus=[cpus[-1]] if len(cpus) > 1 else None) as server:
        sock = socket.create_connection((server.host, server.port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(b"set k 0 0 100\r\n" + b"x" * 100 + b"\r\n")
        assert sock.recv(100) == b"STORED\r\n"
        request = b"get k\r\n"

        def after(w: int) -> None:
            sock.sendall(request)
            sock.recv(65536)
            _work(w)

        def between(w: int) -> None:
            sock.sendall(request)
            _work(w)
            sock.recv(65536)

        print("| W | work alone µs | after: CPU µs (user+sys) | between: CPU µs | CPU saved µs | "
              "after: wall µs | between: wall µs |")
        print("|---:|---:|---:|---:|---:|---:|---:|")
        for w in (int(x) for x in args.work.split(",")):
            got: Dict[str, List[Tuple[float, float, float]]] = {"after": [], "between": []}
            for r in range(args.rounds):
                for name, op in (("after", after), ("between", between))[:: 1 if r % 2 == 0 else -1]:
                    got[name].append(_measure(op, w, args.ops))
            t0 = time.process_time()
            for _ in range(args.ops):
                _work(w)
            alone = (time.process_time() - t0) / args.ops * 1e6
            cpu = {k: statistics.median(u + s for u, s, _ in v) for k, v in got.items()}
            wall = {k: statistics.median(x for _, _, x in v) for k, v in got.items()}
            print(f"| {w} | {alone:.1f} | {cpu['after']:.1f} | {cpu['between']:.1f} | "
                  f"{cpu['after'] - cpu['between']:.1f} | {wall['after']:.1f} | {wall['between']:.1f} |")
        sock.close()


if __name__ == "__main__":
    main()
