"""The bundled client, used exactly like python-memcached's ``memcache.Client``.

Run: ``python -m examples.client_basics [--servers HOST:PORT]``

Migrating from python-memcached is an import change::

    import memcache                      ->  from sqla_memcache import Client
    mc = memcache.Client([...])          ->  mc = Client([...])
"""
from __future__ import annotations

import sys
from typing import List, Optional, Sequence

from sqla_memcache.client import Client

from ._common import main_for


def show(label: str, value: object) -> None:
    print(f"{label:<58} -> {value!r}")


def demo(servers: List[str]) -> None:
    mc = Client(servers, cache_cas=True)
    try:
        mc.delete_multi(["greeting", "visits", "profile", "a", "b", "c"], key_prefix="basics:")
        print(f"Client({servers!r})")
        show('set("basics:greeting", "hello")', mc.set("basics:greeting", "hello"))
        show('get("basics:greeting")', mc.get("basics:greeting"))
        show('get("basics:missing")  (a miss is None)', mc.get("basics:missing"))
        show('add("basics:greeting", "again")  (exists)', mc.add("basics:greeting", "again"))
        show('replace("basics:greeting", "hi")', mc.replace("basics:greeting", "hi"))

        show('set("basics:visits", 10)', mc.set("basics:visits", 10))
        show('incr("basics:visits", 5)', mc.incr("basics:visits", 5))
        show('decr("basics:visits")', mc.decr("basics:visits"))

        # Any picklable value round-trips, as with python-memcached.
        show('set("basics:profile", {...}, time=60)', mc.set("basics:profile", {"name": "Ada", "langs": ["py"]}, time=60))
        show('get("basics:profile")', mc.get("basics:profile"))

        # Optimistic concurrency: gets remembers the CAS id, cas() fails if the item changed since.
        show('gets("basics:visits")', mc.gets("basics:visits"))
        Client(servers).set("basics:visits", 99)  # another writer sneaks in
        show('cas("basics:visits", 15)  (changed meanwhile)', mc.cas("basics:visits", 15))
        show('gets("basics:visits")', mc.gets("basics:visits"))
        show('cas("basics:visits", 100)', mc.cas("basics:visits", 100))

        show('set_multi({"a": 1, "b": 2, "c": 3}, key_prefix="basics:")',
             mc.set_multi({"a": 1, "b": 2, "c": 3}, key_prefix="basics:"))
        show('get_multi(["a", "b", "c", "x"], key_prefix="basics:")',
             mc.get_multi(["a", "b", "c", "x"], key_prefix="basics:"))
        show('touch("basics:a", 300)', mc.touch("basics:a", 300))
        show('delete("basics:a")', mc.delete("basics:a"))
        show('get("basics:a")', mc.get("basics:a"))

        for name, stats in mc.get_stats():
            print(f"server {name}: version {stats['version']}, {stats['curr_items']} items, "
                  f"{stats['get_hits']} hits / {stats['get_misses']} misses")
    finally:
        mc.disconnect_all()


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for(demo, "The bundled memcached client, python-memcached style.", argv)


if __name__ == "__main__":
    sys.exit(main())
