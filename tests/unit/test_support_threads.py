"""The thread harness reports what the workers raised and the ones that never finished."""
from __future__ import annotations

import threading

from support.threads import ThreadHung, run_threads


def test_every_worker_runs_once_and_failures_are_returned():
    seen = []

    def worker(n: int) -> None:
        seen.append(n)
        if n % 2:
            raise ValueError(n)

    failures = run_threads(worker, 6)
    assert sorted(seen) == list(range(6))
    assert sorted(exc.args[0] for exc in failures) == [1, 3, 5]
    assert all(isinstance(exc, ValueError) for exc in failures)


def test_together_releases_the_workers_at_once_then_runs_during():
    base = threading.active_count()
    alive_at_entry = []
    order = []
    gate = threading.Event()

    def worker(n: int) -> None:
        alive_at_entry.append(threading.active_count() - base)  # threads started when this one began
        assert gate.wait(10)
        order.append("worker")

    def during() -> None:
        order.append("during")
        gate.set()

    assert run_threads(worker, 4, together=True, during=during) == []
    assert alive_at_entry[0] == 4  # the first to begin did so once all four were started
    assert order == ["during"] + ["worker"] * 4


def test_a_hung_worker_is_reported():
    release = threading.Event()
    failures = run_threads(lambda n: release.wait(5), 1, timeout=0.05)
    release.set()
    assert len(failures) == 1 and isinstance(failures[0], ThreadHung)
