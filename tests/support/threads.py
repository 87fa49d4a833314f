"""The thread harness: start N workers (optionally released together), join them, collect what they raised."""

from __future__ import annotations

import threading
from typing import Callable, List, Optional


class ThreadHung(AssertionError):
    """A worker thread was still running when the harness stopped waiting for it."""


def run_threads(
    worker: Callable[[int], None],
    count: int,
    *,
    together: bool = False,
    during: Optional[Callable[[], None]] = None,
    timeout: float = 600,
) -> List[BaseException]:
    """Run ``worker(0)`` .. ``worker(count - 1)``, each in its own thread, and wait for all of them.

    ``together=True`` holds every worker on a barrier until all have started (the
    calling thread included), so they run at the same moment. ``during()``, when
    given, runs in the calling thread once the workers are running (after the
    barrier), e.g. to kill a server under them. Returns what the workers raised,
    one entry each (empty when every worker returned), plus a :class:`ThreadHung`
    for each thread not done ``timeout`` seconds after the last join began.
    """
    failures: List[BaseException] = []
    barrier = threading.Barrier(count + 1) if together else None

    def guarded(n: int) -> None:
        try:
            if barrier is not None:
                barrier.wait(60)
            worker(n)
        except BaseException as exc:  # reported by the calling thread
            failures.append(exc)  # list.append is atomic under the GIL

    threads = [threading.Thread(target=guarded, args=(n,), name=f"worker-{n}", daemon=True) for n in range(count)]
    for thread in threads:
        thread.start()
    try:
        if barrier is not None:
            barrier.wait(60)
        if during is not None:
            during()
    finally:
        for thread in threads:
            thread.join(timeout)
    failures.extend(ThreadHung(f"{thread.name} still running after {timeout}s") for thread in threads if thread.is_alive())
    return failures
