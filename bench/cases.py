"""Client cases: the same operation against every client and the raw floor.

Each case knows how to put its data in memcached once (``setup``), and how to turn
an adapter into a zero-argument ``op`` plus a ``check`` of one result (run once,
outside the timed batch, so a client returning wrong data fails loudly instead of
looking fast).

Values are ``bytes`` so every client stores and reads them with flags 0 and no
serialisation: the cases time the clients' protocol paths, not pickle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, List, Tuple

from .floor import Floor

VALUE_100 = b"0123456789" * 10
VALUE_100K = (b"abcdefghijklmnopqrstuvwxyz0123456789" * 2845)[:100 * 1024]
MULTI = 100

Op = Callable[[], object]
Check = Callable[[object], bool]


@dataclass
class ClientCase:
    """One client case. ``ops`` is the batch size of a full run (per client per round)."""

    name: str
    title: str
    unit: str
    ops: int
    build: Callable[[object, Floor], Tuple[Op, Check]]
    setup: Callable[[Floor], None] = lambda floor: None
    threads: int = 1
    baseline: str = "floor"
    kind: str = "client"
    notes: str = ""
    tags: List[str] = field(default_factory=list)


def _is_floor(adapter: object) -> bool:
    return isinstance(adapter, Floor)


# -- single get ------------------------------------------------------------
def _get_case(key: str, value: bytes, shared: bool = False):
    def setup(floor: Floor) -> None:
        floor.store({key: value})

    def build(adapter, floor: Floor) -> Tuple[Op, Check]:
        op = adapter.make_shared_get(key) if shared else adapter.make_get(key)
        if _is_floor(adapter):
            want = floor.reply_len_get({key: value})
            return op, lambda r: r == want
        return op, lambda r: r == value

    return setup, build


# -- single set ------------------------------------------------------------
def _build_set(adapter, floor: Floor) -> Tuple[Op, Check]:
    op = adapter.make_set(f"bench:set100:{adapter.name}", VALUE_100)
    if _is_floor(adapter):
        return op, lambda r: r == len(b"STORED\r\n")
    return op, lambda r: bool(r)


# -- multi -----------------------------------------------------------------
GM_MAPPING = {f"bench:gm:{i:03d}": VALUE_100 for i in range(MULTI)}


def _setup_get_multi(floor: Floor) -> None:
    floor.store(GM_MAPPING)


def _build_get_multi(adapter, floor: Floor) -> Tuple[Op, Check]:
    keys = list(GM_MAPPING)
    op = adapter.make_get_multi(keys)
    if _is_floor(adapter):
        want = floor.reply_len_get(GM_MAPPING)
        return op, lambda r: r == want

    def check(r: object) -> bool:
        return {(k.decode() if isinstance(k, bytes) else k): v
                for k, v in dict(r).items()} == GM_MAPPING

    return op, check


def _build_set_multi(adapter, floor: Floor) -> Tuple[Op, Check]:
    mapping = {f"bench:sm:{adapter.name}:{i:03d}": VALUE_100 for i in range(MULTI)}
    op = adapter.make_set_multi(mapping)
    if _is_floor(adapter):
        return op, lambda r: r == len(b"STORED\r\n") * MULTI
    # python-memcached, pymemcache and pylibmc all return the keys NOT stored
    return op, lambda r: not r


_g100_setup, _g100_build = _get_case("bench:get100", VALUE_100)
_g100k_setup, _g100k_build = _get_case("bench:get100k", VALUE_100K)
_t100_setup, _t100_build = _get_case("bench:tget100", VALUE_100, shared=True)
_t100k_setup, _t100k_build = _get_case("bench:tget100k", VALUE_100K, shared=True)

THREAD_NOTE = ("8 threads share one client object: sqla_memcache and python-memcached share "
               "their Client; pymemcache uses PooledClient (its base Client is not "
               "thread-safe); pylibmc a ClientPool of 8; the floor one socket per thread.")

CLIENT_CASES: List[ClientCase] = [
    ClientCase("get_100b", "get hit, 100-byte value", "op", 3000, _g100_build, _g100_setup),
    ClientCase("set_100b", "set, 100-byte value", "op", 3000, _build_set),
    ClientCase("get_multi_100", "get_multi, 100 keys x 100 B (pymemcache: get_many)",
               "call", 600, _build_get_multi, _setup_get_multi,
               notes="floor: one pipelined `get k1 ... k100`"),
    ClientCase("set_multi_100", "set_multi, 100 keys x 100 B (pymemcache: set_many)",
               "call", 400, _build_set_multi,
               notes="floor: 100 `set` commands in one sendall"),
    ClientCase("get_100k", "get hit, 100 KiB value", "op", 1500, _g100k_build, _g100k_setup),
    ClientCase("get_100b_8threads", "get hit, 100-byte value, 8 threads, one client",
               "op", 4000, _t100_build, _t100_setup, threads=8, notes=THREAD_NOTE),
    ClientCase("get_100k_8threads", "get hit, 100 KiB value, 8 threads, one client",
               "op", 1600, _t100k_build, _t100k_setup, threads=8, notes=THREAD_NOTE),
]
