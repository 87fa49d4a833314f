"""Timing one batch of operations: wall time, per-op latency, client CPU time.

One ``perf_counter_ns`` call per operation (timestamps are chained, so the clock
cost is the same for every client, the floor included). CPU time is
``time.process_time`` over the whole batch, so with threads it is the CPU of all
of them. The garbage collector is collected before and disabled during a batch,
as :mod:`timeit` does.
"""
from __future__ import annotations

import gc
import threading
import time
from typing import Callable, Dict, List

Metrics = Dict[str, float]


def _percentile(sorted_ns: List[int], q: float) -> float:
    if not sorted_ns:
        return float("nan")
    idx = min(len(sorted_ns) - 1, max(0, int(round(q * (len(sorted_ns) - 1)))))
    return sorted_ns[idx] / 1000.0


def summarise(n: int, wall_ns: int, cpu_s: float, lat_ns: List[int]) -> Metrics:
    lat_ns.sort()
    return {
        "n": n,
        "ops_s": n / (wall_ns / 1e9) if wall_ns else float("nan"),
        "wall_us": wall_ns / 1000.0 / n,
        "p50_us": _percentile(lat_ns, 0.50),
        "p99_us": _percentile(lat_ns, 0.99),
        "cpu_us": cpu_s * 1e6 / n,
    }


def _loop(op: Callable[[], object], n: int, lat: List[int]) -> None:
    pc = time.perf_counter_ns
    append = lat.append
    t = pc()
    for _ in range(n):
        op()
        t2 = pc()
        append(t2 - t)
        t = t2


def run_batch(op: Callable[[], object], n: int, threads: int = 1, warmup: int = 0) -> Metrics:
    """Run ``op`` ``n`` times in total (split across ``threads``) and measure it."""
    if warmup:
        for _ in range(warmup):
            op()
    gc.collect()
    gc.disable()
    try:
        if threads == 1:
            lat: List[int] = []
            c0 = time.process_time()
            w0 = time.perf_counter_ns()
            _loop(op, n, lat)
            w1 = time.perf_counter_ns()
            c1 = time.process_time()
            return summarise(n, w1 - w0, c1 - c0, lat)
        per = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
        lats: List[List[int]] = [[] for _ in range(threads)]
        errors: List[BaseException] = []
        ready = threading.Barrier(threads + 1)
        go = threading.Event()

        def worker(i: int) -> None:
            try:
                for _ in range(max(1, warmup // threads)):
                    op()  # opens this thread's connection outside the timed part
                ready.wait()
                go.wait()
                _loop(op, per[i], lats[i])
            except BaseException as exc:  # reported after join
                errors.append(exc)
                ready.abort()

        pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
        for t in pool:
            t.start()
        try:
            ready.wait()  # every worker has warmed up and is parked on ``go``
        except threading.BrokenBarrierError:
            pass
        c0 = time.process_time()
        w0 = time.perf_counter_ns()
        go.set()
        for t in pool:
            t.join()
        w1 = time.perf_counter_ns()
        c1 = time.process_time()
        if errors:
            raise errors[0]
        merged = [x for lat in lats for x in lat]
        return summarise(n, w1 - w0, c1 - c0, merged)
    finally:
        gc.enable()
