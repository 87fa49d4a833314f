"""MemcachedDict as a shared word counter: atomic ``incr`` and CAS-protected edits.

Run: ``python -m examples.dict_counter [--servers HOST:PORT] [--threads N]``

Several threads (think: several web workers) count the words of a text into one
``MemcachedDict``; ``incr`` is atomic on the server, so no count is lost. A
"longest words" leaderboard is kept with ``edit()``, a read-modify-write that
writes back with ``cas`` and retries when another worker changed it first.
"""
from __future__ import annotations

import sys
import threading
import uuid
from typing import List, Optional, Sequence, Tuple

from sqla_memcache.client import Client
from sqla_memcache.mdict import DumpingNotAllowed, MemcachedDict

from ._common import argument_parser, run_with_servers

TEXT = """
memcached is a high performance distributed memory object caching system
generic in nature but intended for use in speeding up dynamic web applications
by alleviating database load memcached is an in memory key value store for small
chunks of arbitrary data strings objects from results of database calls api calls
or page rendering
"""


def count_words(servers: List[str], prefix: str, lines: List[str]) -> None:
    """One worker: its own client, counting the words of its share of the lines."""
    client = Client(servers)
    words = MemcachedDict(client, key_prefix=prefix + "word:")
    board = MemcachedDict(client, key_prefix=prefix)
    for line in lines:
        for word in line.split():
            words.incr(word)
            for attempt in board.edit("longest", default=()):
                with attempt as box:
                    ranked: Tuple[str, ...] = tuple(sorted(set(box.value) | {word}, key=lambda w: (-len(w), w)))
                    box.value = ranked[:3]
    client.disconnect_all()


def run(servers: List[str], threads: int) -> None:
    prefix = f"counter-{uuid.uuid4().hex[:8]}:"  # a fresh prefix per run
    lines = [line for line in TEXT.splitlines() if line.strip()]
    workers = [threading.Thread(target=count_words, args=(servers, prefix, lines[i::threads]))
               for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()

    client = Client(servers)
    words = MemcachedDict(client, key_prefix=prefix + "word:")
    expected = len(TEXT.split())
    print(f"{threads} threads counted {expected} words into memcached (prefix {prefix!r})")
    counts = words.get_many(sorted(set(TEXT.split())))
    print(f"total of the counters: {sum(counts.values())} (expected {expected})")
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    print("most frequent: " + ", ".join(f"{word}={count}" for word, count in top))
    print("longest words: " + ", ".join(MemcachedDict(client, key_prefix=prefix)["longest"]))
    try:
        print(f"distinct words listed by lru_crawler metadump: {len(words)}")
    except DumpingNotAllowed as exc:
        print(f"cannot list keys: {exc}")
    client.disconnect_all()


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argument_parser("MemcachedDict as a shared, atomic word counter.")
    parser.add_argument("--threads", type=int, default=4, help="worker threads (default 4)")
    args = parser.parse_args(argv)
    return run_with_servers(lambda servers: run(servers, args.threads), args.servers)


if __name__ == "__main__":
    sys.exit(main())
