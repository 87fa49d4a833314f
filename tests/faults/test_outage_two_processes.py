"""Two processes, one outage: no stale reads in the other process once the server is back.

A writer process commits row updates while its memcached is frozen
(``SIGSTOP``), restarted empty, or killed and started again; a reader process
that warmed the cache before and stayed quiet during the outage reads as
soon as the server is back, while the writer keeps committing. The writer's
client keeps the default ``dead_retry`` (30 s): without the probe its lost
bumps -- and the bumps of its commits after the server is back -- would wait
that long, and the reader would serve the old rows meanwhile.

With the durable log, the writer is also killed between COMMIT and bump
(``capture.after_commit_hook``): the reader's background deliverer sends the
logged bumps.

A stale read is a read that returns a row older than a commit that returned
before the read started. The remaining window -- stale reads that start
within ``WINDOW`` seconds of the server's return (or of the writer's death) --
is reported with the measured delivery delay; after it there must be none.
"""
from __future__ import annotations

import multiprocessing
import time
import uuid
from typing import Any, Callable, List, Tuple

import pytest
from sqlalchemy import select

from . import outage_worker
from .fault_models import FILMS, FaultFilm, make_engine

#: the documented bound on the remaining window: the probe cadence (0.1 s) plus one probe's
#: timeout (0.5 s) plus the re-send, with a margin for a loaded machine
WINDOW = 1.0
#: the reader's deliverer interval in the durable-log scenario, and its window
DELIVER_INTERVAL = 0.5
DELIVER_WINDOW = DELIVER_INTERVAL + 0.5
READ_SECONDS = 3.0


class Pair:
    """A writer and a reader process on one namespace."""

    def __init__(self, url: str, servers: List[str], durable: bool, deliver_interval: Any) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.committed = ctx.Array("q", FILMS + 1, lock=False)
        engine = make_engine(url)
        with engine.connect() as conn:
            for film_id, version in conn.execute(select(FaultFilm.film_id, FaultFilm.version)):
                self.committed[film_id] = version
        engine.dispose()
        namespace = "two" + uuid.uuid4().hex[:8]
        self.to_writer, self.from_writer = ctx.Queue(), ctx.Queue()
        self.to_reader, self.from_reader = ctx.Queue(), ctx.Queue()
        self.writer = ctx.Process(target=outage_worker.writer, args=(
            url, servers, namespace, durable, self.committed, self.to_writer, self.from_writer))
        self.reader = ctx.Process(target=outage_worker.reader, args=(
            url, servers, namespace, deliver_interval, self.committed, self.to_reader, self.from_reader))
        self.writer.start()
        self.reader.start()

    def ask(self, which: str, *command: Any, timeout: float = 120) -> Any:
        (self.to_writer if which == "writer" else self.to_reader).put(command)
        return (self.from_writer if which == "writer" else self.from_reader).get(timeout=timeout)

    def close(self) -> None:
        for queue, process in ((self.to_writer, self.writer), (self.to_reader, self.reader)):
            if process.is_alive():
                queue.put(("quit",))
            process.join(20)
            if process.is_alive():
                process.kill()


def split(stale_at: List[float], since: float, window: float) -> Tuple[int, int]:
    """(stale reads that started within ``window`` s of ``since``, stale reads after that)."""
    early = sum(1 for t in stale_at if t - since < window)
    return early, len(stale_at) - early


def outage(kind: str, server: Any) -> Tuple[Callable[[], None], Callable[[], None]]:
    if kind == "paused":
        return server.pause, server.resume
    if kind == "restarted empty":
        return server.stop, server.start
    return server.kill, server.start


@pytest.mark.parametrize("kind", ["paused", "restarted empty", "killed"])
def test_no_stale_reads_in_another_process_after_an_outage(kind, fault_db_url, film_engine, memcached_factory,
                                                           report):
    server = memcached_factory()
    pair = Pair(fault_db_url, server.servers, durable=False, deliver_interval=None)
    try:
        assert pair.ask("reader", "warm")[1] > 0
        begin, end = outage(kind, server)
        begin()
        _, pending, _ = pair.ask("writer", "commit", list(range(1, 9)), 0.0)
        assert pending > 0  # the writer could not deliver
        end()
        back = time.monotonic()
        pair.to_reader.put(("read", READ_SECONDS))  # the reader was quiet; it reads from now on
        # the writer keeps committing right after the return, while its client still holds the server dead
        writer_stale = pair.ask("writer", "commit", list(range(5, 13)), 0.05)[2]
        _, delivered, revived = pair.ask("writer", "wait-delivered", 10)
        _, counts, stale_at = pair.from_reader.get(timeout=120)
    finally:
        pair.close()
    early, late = split(stale_at, back, WINDOW)
    report("%s (%s): reader process %d reads, %d stale (%d within %.1f s of the server's return, %d after; "
           "last stale read started %s after the return); the writer's probe found the server back %s "
           "after the return; writer process: %d stale reads"
           % (kind, fault_db_url.split(":")[0], counts["reads"], len(stale_at), early, WINDOW, late,
              "%.3f s" % (max(stale_at) - back) if stale_at else "-",
              "%.3f s" % (revived - back) if revived else "never", writer_stale))
    assert delivered is not None
    assert late == 0 and writer_stale == 0


@pytest.mark.parametrize("durable", [True, False], ids=["durable log", "no log"])
def test_durable_log_no_stale_reads_when_the_writer_dies_between_commit_and_bump(durable, fault_db_url, film_engine,
                                                                                memcached_factory, report):
    """Without the log (``no log``) the bump is lost for good: the reader stays stale (the checker works)."""
    server = memcached_factory()
    pair = Pair(fault_db_url, server.servers, durable=durable, deliver_interval=DELIVER_INTERVAL if durable else None)
    try:
        assert pair.ask("reader", "warm")[1] > 0
        pair.ask("writer", "commit", [1, 2, 3], 0.0)
        pair.to_writer.put(("die-after-commit", 4))
        pair.writer.join(60)
        died = time.monotonic()
        assert pair.writer.exitcode == 17
        _, counts, stale_at = pair.ask("reader", "read", READ_SECONDS)
        _, seen, committed = pair.ask("reader", "check", 4)  # the row whose bump died with the writer
    finally:
        pair.close()
    early, late = split(stale_at, died, DELIVER_WINDOW)
    report("writer killed between COMMIT and bump, %s (%s): reader process %d reads, %d stale (%d within %.1f s "
           "of the death, %d after; last stale read started %s after the death)"
           % ("durable log, deliverer every %.1f s" % DELIVER_INTERVAL if durable else "no durable log",
              fault_db_url.split(":")[0], counts["reads"], len(stale_at), early, DELIVER_WINDOW, late,
              "%.3f s" % (max(stale_at) - died) if stale_at else "-"))
    if durable:
        assert late == 0
        assert seen == [committed, committed]  # delivered from the log
    else:
        # The checker works: without the log the bump is lost for good and the row's cached
        # session.get entry (keyed on that row's version alone) stays stale; whether the random
        # reads above happened to meet it after the window is chance, so it is read here.
        # (Its query entries were replaced: the commit of films 1-3 moved the table version.)
        assert seen[0] < committed, (seen, committed)
