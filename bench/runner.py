"""Run the cases in interleaved rounds and reduce them to medians and ratios.

Round r runs every case, and within a case every variant (client) once, in an
order rotated by r: A B C D, B C D A, ... so no client always runs first or
always runs after the same neighbour. Ratios are taken *within a round* (a
client's figure over the baseline's figure of the same round) and the median of
those per-round ratios is reported, which cancels slow drift of the machine.
"""
from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

from . import cases as client_cases
from .clients import open_adapters
from .floor import Floor
from .server import Memcached
from .timing import run_batch

METRICS = ("ops_s", "wall_us", "p50_us", "p99_us", "cpu_us")


@dataclass
class Prepared:
    """A case ready to time: one zero-argument op per variant."""

    name: str
    title: str
    unit: str
    n: int
    kind: str
    baseline: str
    variants: Dict[str, Callable[[], object]]
    labels: Dict[str, str] = field(default_factory=dict)
    unavailable: Dict[str, str] = field(default_factory=dict)
    threads: int = 1
    notes: str = ""
    rounds: Dict[str, List[dict]] = field(default_factory=dict)


def _prepare_client_cases(floor: Floor, adapters: dict, unavailable: dict,
                          scale: float, ops: Optional[int], only: Optional[List[str]]):
    prepared = []
    for case in client_cases.CLIENT_CASES:
        if only and case.name not in only:
            continue
        case.setup(floor)
        p = Prepared(case.name, case.title, case.unit,
                     ops or max(8, int(case.ops * scale)), case.kind, case.baseline, {},
                     threads=case.threads, notes=case.notes)
        p.unavailable.update(unavailable)
        for name, adapter in adapters.items():
            p.labels[name] = adapter.label
            try:
                op, check = case.build(adapter, floor)
                result = op()
                if not check(result):
                    raise AssertionError(f"wrong result: {repr(result)[:120]}")
                p.variants[name] = op
            except Exception as exc:  # a broken client is reported, not fatal
                p.unavailable[name] = f"{type(exc).__name__}: {exc}"
        prepared.append(p)
    return prepared


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def reduce_case(p: Prepared) -> dict:
    """Medians per variant, per-round ratios to the baseline and to every other variant."""
    out = {"title": p.title, "unit": p.unit, "kind": p.kind, "n": p.n, "threads": p.threads,
           "baseline": p.baseline, "notes": p.notes, "variants": {}}
    names = list(p.rounds)
    for name in names:
        rounds = p.rounds[name]
        med = {m: statistics.median(r[m] for r in rounds) for m in METRICS}
        entry = {"label": p.labels.get(name, name), "available": True, "median": med,
                 "rounds": rounds, "vs": {}}
        for other in names:
            if other == name:
                continue
            pairs = list(zip(rounds, p.rounds[other]))
            entry.setdefault("vs_rounds", {})[other] = {
                "ops_s": [_ratio(a["ops_s"], b["ops_s"]) for a, b in pairs],
                "wall": [_ratio(a["wall_us"], b["wall_us"]) for a, b in pairs],
                "cpu": [_ratio(a["cpu_us"], b["cpu_us"]) for a, b in pairs],
            }
            entry["vs"][other] = {
                "ops_s": statistics.median(_ratio(a["ops_s"], b["ops_s"]) for a, b in pairs),
                "wall": statistics.median(_ratio(a["wall_us"], b["wall_us"]) for a, b in pairs),
                "cpu": statistics.median(_ratio(a["cpu_us"], b["cpu_us"]) for a, b in pairs),
                "p50": statistics.median(_ratio(a["p50_us"], b["p50_us"]) for a, b in pairs),
                "p99": statistics.median(_ratio(a["p99_us"], b["p99_us"]) for a, b in pairs),
            }
        out["variants"][name] = entry
    for name, reason in p.unavailable.items():
        out["variants"][name] = {"label": p.labels.get(name, name), "available": False,
                                 "reason": reason}
    return out


def run(rounds: int = 7, scale: float = 1.0, ops: Optional[int] = None,
        clients: Optional[List[str]] = None, only: Optional[List[str]] = None,
        orm: bool = True, mysql_url: Optional[str] = None, placement: str = "split",
        log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True)) -> dict:
    """Run the whole benchmark and return the results document (see ``report``).

    ``placement`` binds CPUs (see :func:`_placement`): ``"split"`` (default) puts
    this process on the first CPU and memcached on the last, ``"shared"`` both on
    the last, ``"none"`` leaves the scheduler free.
    """
    started = datetime.datetime.now(datetime.timezone.utc)
    prepared: List[Prepared] = []
    orm_notes: Dict[str, str] = {}
    saved_affinity, client_cpus, server_cpus, placement = _placement(placement)
    load_before = _loadavg()
    try:
        results = _run(rounds, scale, ops, clients, only, orm, mysql_url, log, started, prepared,
                       orm_notes, placement, client_cpus, server_cpus)
        results["meta"]["loadavg"] = {"before": load_before, "after": _loadavg()}
        return results
    finally:
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)


def _loadavg():
    """1/5/15-minute load averages: other work on the machine shows up here."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _placement(placement: str):
    """Bind this process and the memcached it will start to fixed CPUs.

    On a small VM a loopback round trip costs ~3x more when the client and the
    memcached worker thread serving its connection run on different CPUs (a
    cross-CPU wake-up), and memcached hands connections to its worker threads
    round-robin: unpinned, two identical floor connections measured 18 and 50 µs
    per get, a lottery that would decide the ratios. ``split`` makes every
    connection cross CPUs (like a memcached on another host), ``shared`` makes
    every connection stay on one CPU (cheapest round trip, so the floor's CPU per
    op is smallest and every client's ratio to it largest).
    Returns ``(saved affinity or None, client cpus, server cpus, placement used)``.
    """
    if placement == "none" or not hasattr(os, "sched_setaffinity"):
        return None, None, None, "none"
    saved = os.sched_getaffinity(0)
    cpus = sorted(saved)
    if placement == "split" and len(cpus) >= 2:
        client, server = {cpus[0]}, {cpus[-1]}
    else:
        placement, client, server = "shared", {cpus[-1]}, {cpus[-1]}
    os.sched_setaffinity(0, client)
    return saved, sorted(client), sorted(server), placement


def _run(rounds, scale, ops, clients, only, orm, mysql_url, log, started, prepared, orm_notes,
         placement, client_cpus, server_cpus) -> dict:
    with Memcached(cpus=server_cpus) as server:
        log(f"memcached on {server.address}")
        floor = Floor(server.host, server.port)
        adapters, unavailable = open_adapters(server.host, server.port, clients)
        for name, reason in unavailable.items():
            log(f"  {name}: unavailable ({reason})")
        orm_ctx = None
        async_ctx = None
        try:
            prepared += _prepare_client_cases(floor, adapters, unavailable, scale, ops, only)
            from . import async_cases  # asyncio client and AsyncSession cases
            async_ctx = async_cases.AsyncBench(server, log=log)
            prepared += async_ctx.prepare(scale, ops, only)
            if orm:
                from . import orm_cases
                orm_ctx = orm_cases.OrmBench(server, mysql_url=mysql_url, log=log)
                orm_prep, orm_notes = orm_ctx.prepare(scale, ops, only)
                prepared += orm_prep
            for p in prepared:
                for name, reason in p.unavailable.items():
                    log(f"  {p.name}/{name}: unavailable ({reason})")
            for r in range(rounds):
                log(f"round {r + 1}/{rounds}")
                for p in prepared:
                    names = list(p.variants)
                    k = r % len(names) if names else 0
                    for name in names[k:] + names[:k]:
                        metrics = run_batch(p.variants[name], p.n, p.threads,
                                            warmup=max(2, p.n // 20))
                        p.rounds.setdefault(name, []).append(metrics)
        finally:
            if async_ctx is not None:
                async_ctx.close()
            if orm_ctx is not None:
                orm_ctx.close()
            for adapter in adapters.values():
                try:
                    adapter.close()
                except Exception:
                    pass
            floor.close()
    finished = datetime.datetime.now(datetime.timezone.utc)
    return {
        "meta": {
            "started": started.isoformat(timespec="seconds"),
            "seconds": round((finished - started).total_seconds(), 1),
            "rounds": rounds,
            "scale": scale,
            "ops_override": ops,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "versions": _versions(),
            "source": _source(),
            "orm_notes": orm_notes,
            "placement": placement,
            "client_cpus": client_cpus,
            "server_cpus": server_cpus,
        },
        "cases": {p.name: reduce_case(p) for p in prepared},
    }


def _source() -> Dict[str, object]:
    """Which commit of sqla_memcache ran, and whether its files differed from it."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    commit = os.environ.get("SQLA_MEMCACHE_BENCH_COMMIT")
    if commit:  # a snapshot (git archive) of that commit
        return {"commit": commit, "dirty": False}
    try:
        import subprocess
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sqla_memcache"], cwd=here,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        last = subprocess.run(["git", "log", "-1", "--format=%h", "--", "sqla_memcache"], cwd=here,
                              capture_output=True, text=True, timeout=10).stdout.strip()
        return {"commit": commit or None, "dirty": bool(dirty), "sqla_memcache_commit": last or None}
    except Exception:
        return {"commit": None, "dirty": None}


def _versions() -> Dict[str, str]:
    out = {}
    for mod, attr in (("sqla_memcache", "__version__"), ("pymemcache", "__version__"),
                      ("memcache", "__version__"), ("pylibmc", "__version__"),
                      ("sqlalchemy", "__version__"), ("pymysql", "__version__")):
        try:
            m = __import__(mod)
            out[mod] = str(getattr(m, attr, "?"))
        except Exception:
            out[mod] = "unavailable"
    try:
        import subprocess
        out["memcached"] = subprocess.run(["memcached", "-V"], capture_output=True,
                                          text=True).stdout.strip()
    except Exception:
        pass
    return out
