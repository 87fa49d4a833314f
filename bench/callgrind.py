"""Instruction counts per operation under ``valgrind --tool=callgrind``.

    python -m bench --callgrind                          # every case, ~2 min on a quiet machine
    python -m bench --callgrind --cases orm_get,orm_top5 # a subset, printed as a table
    python -m bench --callgrind --cases orm --layouts 1  # the ORM hit paths, quickest
    python -m bench --callgrind --compare bench/results/baseline-<commit>-callgrind.json
    python -m bench --callgrind --source ../other-checkout   # time another sqla_memcache
    python -m bench.callgrind --compare OLD.json NEW.json    # compare two files, no run

Wall and CPU times on a shared machine move by tens of percent from run to run;
the number of instructions an operation executes does not depend on machine
load, so a before/after difference of a few percent shows in one run.

Method. The harness starts memcached and a SQLite copy of sakila (both native,
not under valgrind), then runs one child process per case under callgrind with
``--instr-atstart=no --collect-atstart=no --toggle-collect=_CallPythonObject``.
The child builds the operation with the same code as the timed benchmark
(:class:`bench.orm_cases.Contenders`, :mod:`bench.cases`), checks its result,
warms it up (caches filled, SQLAlchemy's compiled cache and our plan memos
populated), all uninstrumented (about 4x native speed), then says READY and
waits; the parent runs ``callgrind_control -i on <pid>`` and releases it. The
child collects garbage, disables the collector and runs the measured loop of
``ops`` operations inside a ``ctypes`` callback. Calling a ``CFUNCTYPE``
object enters ``_CallPythonObject`` (CPython's ``_ctypes``), which nothing
else in the process calls, so callgrind collects exactly the dynamic extent of
the loop: imports, set-up, warm-up and exit are not counted.
``PYTHONHASHSEED=0`` makes string hashes the same in every run. The count per
op is the collected total over ``ops``; the callback's own entry and exit (a
few thousand instructions) are spread over the whole loop.

Memory layout. The same code run twice gives the same count to ~0.1 %, but the
ORM paths move by up to ~2-3 % when the process's memory layout moves (a longer
argv, environment or sys.path shifts every address, and with them the order of
id-hashed sets and dicts in SQLAlchemy and the collisions in them). So every
path the child sees has the same length in every run (see :func:`run`), and
each ORM case runs in ``--layouts`` (default 3) layouts -- the environment
padded by 0, 160, 1000 ... bytes -- and the median is reported with the range.
Differences smaller than that range are not meaningful.

``--method diff`` is the fallback for a Python without symbols for
``_CallPythonObject``: two runs per case, collecting everything, with ``ops``
and with no measured operations; the difference over ``ops`` is the count.

What is counted: user-space instructions of the benchmark process (Python,
C extensions, libc, SQLite). Not counted: the kernel's work in ``send``/``recv``
and memcached's. So instruction counts rank code paths and show regressions;
the timed benchmark (``python -m bench``) remains the measure of CPU time and
of the targets.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TOGGLE = "_CallPythonObject"

#: name -> (title, ops measured, warm-up ops, kind)
CASES: Dict[str, tuple] = {
    "orm_top5": ("top-5 query, sqla_memcache FromCache hit, fresh session", 50, 30, "orm"),
    "orm_get": ("session.get(Film, pk), sqla_memcache hit, fresh session", 50, 60, "orm"),
    "naive_top5": ("top-5, naive recipe: client.get + pickle.loads + merge(load=False) x5",
                   50, 30, "orm"),
    "naive_get": ("session.get, naive recipe: client.get + pickle.loads + merge(load=False)",
                  50, 60, "orm"),
    "dogpile_top5": ("top-5, SQLAlchemy examples/dogpile_caching hit (pymemcache)", 50, 30, "orm"),
    "dogpile_get": ("session.get, SQLAlchemy examples/dogpile_caching hit (pymemcache)",
                    50, 60, "orm"),
    "hook_top5": ("top-5, floor of a do_orm_execute cache (answer kept in process, no I/O)",
                  50, 30, "orm"),
    "hook_get": ("session.get, floor of a do_orm_execute cache (answer kept in process, no I/O)",
                 50, 60, "orm"),
    "hookrt_top5": ("top-5, hook floor + one get_counters of the hit's version keys", 50, 30, "orm"),
    "hookrt_get": ("session.get, hook floor + one get_counters of the hit's version keys",
                   50, 60, "orm"),
    "sqlite_top5": ("top-5 query on SQLite, no cache", 50, 30, "orm"),
    "sqlite_get": ("session.get on SQLite, no cache", 50, 60, "orm"),
    "captured_top5": ("top-5 on SQLite, no cache, engine captured by sqla_memcache", 50, 30, "orm"),
    "captured_get": ("session.get on SQLite, no cache, engine captured by sqla_memcache",
                     50, 60, "orm"),
    "client_get": ("Client.get, 100-byte value", 1000, 200, "client"),
    "client_set": ("Client.set, 100-byte value", 1000, 200, "client"),
    "client_get_multi_100": ("Client.get_multi, 100 keys x 100 B", 100, 20, "client"),
    "client_get_multi_3": ("Client.get_multi, 3 keys x 100 B, one server", 1000, 200, "client"),
    "client_get_50": ("Client.get x 50, 100-byte value (the sync side of async_get_50)",
                      20, 10, "async"),
    "async_get_50": ("AsyncClient.get x 50, 100-byte value, one run_until_complete",
                     20, 10, "async"),
    "asyncio_floor_50": ("bare asyncio.Protocol get x 50 (no parsing), one run_until_complete",
                         20, 10, "async"),
    "floor_get": ("raw-socket floor: get, 100-byte value", 1000, 200, "client"),
    "floor_set": ("raw-socket floor: set, 100-byte value", 1000, 200, "client"),
    "floor_get_multi_100": ("raw-socket floor: pipelined get of 100 keys", 100, 20, "client"),
}
#: environment padding (bytes) of each memory layout: see run()
PADS = [0, 160, 1000, 2400, 4000]
ORM_HIT_CASES = ["orm_top5", "orm_get", "naive_top5", "naive_get", "dogpile_top5", "dogpile_get"]

#: (numerator, denominator, what the ratio says) shown under the table
RATIOS = [
    ("orm_top5", "naive_top5", "FromCache top-5 hit ÷ naive recipe"),
    ("orm_top5", "dogpile_top5", "FromCache top-5 hit ÷ dogpile example"),
    ("orm_top5", "sqlite_top5", "FromCache top-5 hit ÷ SQLite, no cache"),
    ("hookrt_top5", "naive_top5", "top-5: hook floor + round trip ÷ naive recipe"),
    ("orm_get", "naive_get", "session.get hit ÷ naive recipe"),
    ("hookrt_get", "naive_get", "session.get: hook floor + round trip ÷ naive recipe"),
    ("orm_get", "dogpile_get", "session.get hit ÷ dogpile example"),
    ("orm_get", "sqlite_get", "session.get hit ÷ SQLite, no cache"),
    ("captured_top5", "sqlite_top5", "top-5 on SQLite: engine captured ÷ clean engine"),
    ("captured_get", "sqlite_get", "session.get on SQLite: engine captured ÷ clean engine"),
    ("client_get", "floor_get", "Client.get ÷ floor (user-space instructions only)"),
    ("client_set", "floor_set", "Client.set ÷ floor (user-space instructions only)"),
    ("client_get_multi_100", "floor_get_multi_100", "Client.get_multi(100) ÷ pipelined floor"),
    ("client_get_multi_3", "client_get", "Client.get_multi(3 keys) ÷ Client.get"),
    ("async_get_50", "client_get_50", "AsyncClient.get ÷ Client.get"),
    ("asyncio_floor_50", "client_get_50", "bare asyncio round trip ÷ Client.get"),
    ("async_get_50", "asyncio_floor_50", "AsyncClient.get ÷ bare asyncio round trip"),
]


# -- the child: one case, under valgrind ----------------------------------------------
def _build_op(case: str, address: str, sqlite: str):
    """Return ``(op, check)`` for ``case``, built exactly as the timed benchmark does."""
    host, port = address.rsplit(":", 1)
    if CASES[case][3] == "async":
        return _build_async_op(case, address)
    if case == "client_get_multi_3":
        from .cases import VALUE_100
        from sqla_memcache import Client
        client = Client([address])
        mapping = {f"bench:gm3:{i}": VALUE_100 for i in range(3)}
        client.set_multi(mapping)
        keys = list(mapping)
        return (lambda: client.get_multi(keys)), (lambda r: r == mapping)
    if CASES[case][3] == "client":
        from . import cases as client_cases
        from .clients import SqlaMemcache
        from .floor import Floor
        floor = Floor(host, int(port))
        which = {"get": "get_100b", "set": "set_100b", "get_multi_100": "get_multi_100"}
        kind, what = case.split("_", 1)
        spec = next(c for c in client_cases.CLIENT_CASES if c.name == which[what])
        spec.setup(floor)
        adapter = floor if kind == "floor" else SqlaMemcache(host, int(port))
        return spec.build(adapter, floor)
    from sqlalchemy import create_engine
    from sqla_memcache import Client
    from .orm_cases import Contenders
    engine = create_engine("sqlite:///" + sqlite)
    ctx = Contenders(engine, Client([address]), address, f"cg_{case}")  # fixed key names
    if case.startswith("dogpile") and ctx.dogpile is None:
        raise SystemExit(f"SKIPPED {ctx.dogpile_skipped}")
    what, query = case.split("_", 1)
    ctx.warm({"orm": ["cached"], "dogpile": ["dogpile"], "hookrt": ["cached"]}.get(what, []))
    ops = ctx.top5_ops() if query == "top5" else ctx.get_ops()
    variant = {"orm": "fromcache" if query == "top5" else "cached", "naive": "naive",
               "dogpile": "dogpile", "sqlite": "db", "captured": "db_captured",
               "hook": "hook_floor", "hookrt": "hook_floor_rt"}[what]
    want = 5 if query == "top5" else True
    return ops[variant], (lambda r: r == want)


def _build_async_op(case: str, address: str):
    """A batch of 50 sequential gets: ``AsyncClient`` in one ``run_until_complete``, or ``Client``."""
    import asyncio

    from .cases import VALUE_100
    from sqla_memcache import AsyncClient, Client
    sync = Client([address])
    sync.set("bench:ag", VALUE_100)
    want = [VALUE_100] * 50
    if case == "client_get_50":
        return (lambda: [sync.get("bench:ag") for _ in range(50)]), (lambda r: r == want)
    loop = asyncio.new_event_loop()
    if case == "asyncio_floor_50":
        from .async_cases import _FloorProtocol
        host, port = address.rsplit(":", 1)
        _, proto = loop.run_until_complete(loop.create_connection(_FloorProtocol, host, int(port)))

        async def floor_batch():
            out = []
            for _ in range(50):
                proto.waiter = loop.create_future()
                proto.transport.write(b"get bench:ag\r\n")
                out.append(await proto.waiter)
            return out

        return (lambda: loop.run_until_complete(floor_batch())), (lambda r: len(r) == 50 and all(
            c.startswith(b"VALUE bench:ag ") for c in r))
    aio = AsyncClient([address])

    async def batch():
        return [await aio.get("bench:ag") for _ in range(50)]

    return (lambda: loop.run_until_complete(batch())), (lambda r: r == want)


def child(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.callgrind --child")
    ap.add_argument("case")
    ap.add_argument("--ops", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--address", required=True)
    ap.add_argument("--sqlite", required=True)
    ap.add_argument("--source", required=True)
    ap.add_argument("--flag", help="print READY, wait for this file, then run the loop")
    args = ap.parse_args(argv)
    sys.path.insert(0, args.source)  # the sqla_memcache to measure (bench is this checkout's)
    import ctypes
    import gc
    import sqla_memcache

    op, check = _build_op(args.case, args.address, args.sqlite)
    result = op()
    if not check(result):
        raise SystemExit(f"wrong result from {args.case}: {result!r:.120}")
    for _ in range(args.warmup):
        op()
    errors: List[BaseException] = []

    def measured() -> None:
        try:
            for _ in range(args.ops):
                op()
        except BaseException as exc:  # ctypes would only print it
            errors.append(exc)

    runner = ctypes.CFUNCTYPE(None)(measured)
    if args.flag:  # ready: the parent turns instrumentation on, then creates the flag file
        print("READY", flush=True)
        while not os.path.exists(args.flag):
            pass
    gc.collect()
    gc.disable()
    runner()
    gc.enable()
    if errors:
        raise errors[0]
    print(json.dumps({"sqla_memcache": os.path.dirname(os.path.realpath(sqla_memcache.__file__))}),
          flush=True)
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: it is not counted, only slow under valgrind


# -- the parent -----------------------------------------------------------------------
def _totals(path: str) -> int:
    with open(path) as fh:
        text = fh.read()
    m = re.search(r"^totals:\s+(\d+)", text, re.M) or re.search(r"^summary:\s+(\d+)", text, re.M)
    if not m:
        raise RuntimeError(f"no totals in {path}")
    return int(m.group(1))


def _valgrind(case: str, ops: int, warmup: int, method: str, out_file: str, address: str,
              sqlite: str, source: str, pad: int = 0) -> dict:
    """Run one child under callgrind and return its report plus ``ir``, the collected total.

    ``toggle``: the child starts uninstrumented (``--instr-atstart=no``, so
    imports and set-up run ~4x native speed instead of ~50x slower), says READY,
    and spins on a flag file; ``callgrind_control -i on`` turns instrumentation on,
    the flag releases the loop, and ``--toggle-collect`` collects only its extent.
    ``all``: instrumented and collected from the start (for ``--method diff``).
    """
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out_file}"]
    if method == "toggle":
        cmd += ["--instr-atstart=no", "--collect-atstart=no", f"--toggle-collect={TOGGLE}"]
    cmd += [sys.executable, "-m", "bench.callgrind", "--child", case, "--ops", str(ops),
            "--warmup", str(warmup), "--address", address, "--sqlite", sqlite]
    cmd += ["--source", source]
    flag = out_file + ".go"
    if method == "toggle":
        cmd += ["--flag", flag]
    workdir = os.path.dirname(out_file)
    env = dict(os.environ, PYTHONHASHSEED="0", PYTHONPATH=os.path.join(workdir, "b"))
    env["SQLA_MEMCACHE_CG_PAD"] = "x" * pad  # shifts the memory layout (see run())
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=err,
                                text=True)
        try:
            lines = []
            if method == "toggle":
                for line in proc.stdout:
                    if line.strip() == "READY":
                        ctl = subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)],
                                             capture_output=True, text=True, timeout=120)
                        if ctl.returncode != 0:
                            raise RuntimeError(f"callgrind_control failed: {ctl.stderr.strip()}")
                        open(flag, "w").close()
                        break
                    lines.append(line)
            lines += proc.stdout.readlines()
            proc.wait(timeout=900)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
    if proc.returncode != 0:
        tail = [ln for ln in stderr.splitlines() if not ln.startswith("==")]
        skipped = [ln for ln in tail if ln.startswith("SKIPPED ")]
        if skipped:
            return {"skipped": skipped[0][len("SKIPPED "):]}
        raise RuntimeError(f"{case}: exit {proc.returncode}: {' | '.join(tail[-6:])[:600]}")
    info = json.loads(lines[-1])
    info["ir"] = _totals(out_file)
    return info


def run_case(case: str, ops: int, warmup: int, method: str, workdir: str, address: str,
             sqlite: str, source: str, layout: int = 0) -> dict:
    """One measurement of ``case`` in memory layout number ``layout``: ``ir`` or skipped/error."""
    pad = PADS[layout % len(PADS)]
    out_file = os.path.join(workdir, f"{case}.{layout}.out")
    try:
        if method == "toggle":
            info = _valgrind(case, ops, warmup, "toggle", out_file, address, sqlite, source, pad)
            if "skipped" not in info and info["ir"] == 0:
                raise RuntimeError(f"nothing collected: this Python has no symbol {TOGGLE}; "
                                   "use --method diff")
        else:
            info = _valgrind(case, ops, warmup, "all", out_file, address, sqlite, source, pad)
            if "skipped" not in info:
                empty = _valgrind(case, 0, warmup, "all", out_file[:-4] + ".empty.out", address,
                                  sqlite, source, pad)
                info["ir"] -= empty["ir"]
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:800]}
    return info


def _aggregate(case: str, ops: int, warmup: int, method: str, parts: List[dict]) -> dict:
    out = {"title": CASES[case][0], "ops": ops, "warmup": warmup, "method": method}
    for key in ("error", "skipped"):
        bad = [p[key] for p in parts if key in p]
        if bad:
            out[key] = bad[0]
            return out
    per_op = sorted(p["ir"] / ops for p in parts)
    out.update(ir_per_op=statistics.median(per_op), layouts=per_op,
               sqla_memcache=parts[0]["sqla_memcache"])
    return out


def _git(args: List[str], cwd: str) -> str:
    try:
        return subprocess.run(["git"] + args, cwd=cwd, capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except Exception:
        return ""


def run(cases: List[str], ops: Optional[int], method: str, jobs: int, source: Optional[str],
        keep: Optional[str], label: Optional[str] = None, layouts: int = 3,
        log=lambda s: print(s, file=sys.stderr, flush=True)) -> dict:
    from .server import Memcached
    started = datetime.datetime.now(datetime.timezone.utc)
    # Counts move by a few percent with the process's memory layout, which moves
    # with the length of its argv, environment and sys.path: so every path the
    # child sees has the same length in every run -- a fresh mkdtemp directory
    # holding the SQLite file, the outputs and two symlinks, s -> the measured
    # checkout and b -> this one (the bench code), and the child runs there.
    workdir = tempfile.mkdtemp(prefix="sqla_memcache_callgrind_")
    src_dir = source or ROOT
    os.symlink(src_dir, os.path.join(workdir, "s"))
    os.symlink(ROOT, os.path.join(workdir, "b"))
    # compiled natively first, so no child compiles (or not) depending on the order
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(src_dir, "sqla_memcache"),
                    HERE], capture_output=True)
    try:
        sqlite = os.path.join(workdir, "sakila.db")
        if any(CASES[c][3] == "orm" for c in cases) and not os.path.exists(sqlite):
            from sqlalchemy import create_engine
            from sqla_memcache.demo.loader import load_sakila
            engine = create_engine("sqlite:///" + sqlite)
            load_sakila(engine, progress=None)
            engine.dispose()
        if any(c.startswith("dogpile") for c in cases):
            from . import dogpile_example
            try:  # download and extract once, natively, before the children
                dogpile_example.example_dir(log)
            except dogpile_example.Skipped:
                pass  # each dogpile child reports the reason
        results: Dict[str, dict] = {}
        tasks = []
        for c in cases:
            n = ops or CASES[c][1]
            warm = min(CASES[c][2], n) if ops else CASES[c][2]
            for layout in range(layouts if CASES[c][3] == "orm" else 1):
                tasks.append((c, n, warm, layout))
        with Memcached() as server:
            log(f"memcached on {server.address}; {len(cases)} cases ({len(tasks)} runs) under "
                f"callgrind, {jobs} at a time, method {method}")
            with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
                futures = {pool.submit(run_case, c, n, warm, method, workdir, server.address,
                                       sqlite, os.path.join(workdir, "s"), layout): (c, n, warm)
                           for c, n, warm, layout in tasks}
                parts: Dict[str, List[dict]] = {}
                for fut in concurrent.futures.as_completed(futures):
                    c, n, warm = futures[fut]
                    parts.setdefault(c, []).append(fut.result())
                    if len(parts[c]) == sum(1 for t in tasks if t[0] == c):
                        r = results[c] = _aggregate(c, n, warm, method, parts[c])
                        log(f"  {c}: " + (f"{r['ir_per_op']:,.0f} Ir/op" if "ir_per_op" in r
                                          else r.get("skipped") or r.get("error")))
        if keep:
            os.makedirs(keep, exist_ok=True)
            for name in os.listdir(workdir):
                if name.endswith(".out"):
                    shutil.copy(os.path.join(workdir, name), keep)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    import sqlalchemy
    return {
        "meta": {
            "kind": "callgrind",
            "started": started.isoformat(timespec="seconds"),
            "seconds": round((datetime.datetime.now(datetime.timezone.utc) - started)
                             .total_seconds(), 1),
            "method": method,
            "layouts": layouts,
            "toggle": TOGGLE if method == "toggle" else None,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "sqlalchemy": sqlalchemy.__version__,
            "valgrind": _version(["valgrind", "--version"]),
            "memcached": _version(["memcached", "-V"]),
            "source": {"path": os.path.abspath(src_dir),
                       "commit": _git(["rev-parse", "--short", "HEAD"], src_dir) or None,
                       "dirty": bool(_git(["status", "--porcelain", "--", "sqla_memcache"],
                                          src_dir)),
                       "sqla_memcache_commit": _git(["log", "-1", "--format=%h", "--",
                                                     "sqla_memcache"], src_dir) or None,
                       "label": label},
            "bench_commit": _git(["rev-parse", "--short", "HEAD"], ROOT) or None,
            "callgrind_files": keep,
        },
        "cases": {c: results[c] for c in cases},
    }


def _version(cmd: List[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"


# -- output ---------------------------------------------------------------------------
def _counts(doc: dict) -> dict:
    """The callgrind part of a document: a callgrind run, or a results file holding one."""
    return doc["callgrind"] if "callgrind" in doc else doc


def _f(x: Optional[float]) -> str:
    return "–" if x is None else f"{x:,.0f}"


def table(doc: dict) -> List[str]:
    doc = _counts(doc)
    meta = doc["meta"]
    lines = [f"Instruction counts (callgrind, method {meta['method']}) of sqla_memcache "
             f"{_who(doc, long=True)}"
             f", SQLAlchemy {meta['sqlalchemy']}, Python {meta['python']}, {meta['valgrind']}; "
             f"run {meta['started']} ({meta['seconds']} s).", "",
             "| case | what | ops | instructions per op | range over memory layouts |",
             "|---|---|---:|---:|---:|"]
    for name, c in doc["cases"].items():
        value = (_f(c["ir_per_op"]) if "ir_per_op" in c
                 else f"skipped: {c['skipped']}" if "skipped" in c else f"error: {c.get('error')}")
        lays = c.get("layouts") or []
        spread = (f"{_f(lays[0])}–{_f(lays[-1])} ({len(lays)})" if len(lays) > 1 else "")
        lines.append(f"| `{name}` | {c['title']} | {c['ops']} | {value} | {spread} |")
    ratios = []
    for a, b, text in RATIOS:
        ca, cb = doc["cases"].get(a, {}), doc["cases"].get(b, {})
        if "ir_per_op" in ca and "ir_per_op" in cb:
            ratios.append(f"| {text} | {ca['ir_per_op'] / cb['ir_per_op']:.2f} |")
    if ratios:
        lines += ["", "| ratio of instructions per op | |", "|---|---:|"] + ratios
    return lines + [""]


def _who(doc: dict, long: bool = False) -> str:
    """The measured sqla_memcache: its label, or its commit (+ if it had uncommitted changes)."""
    s = _counts(doc)["meta"]["source"]
    name = s.get("label") or s.get("sqla_memcache_commit") or s.get("commit") or s["path"]
    if not long:
        return name + ("+" if s.get("dirty") else "")
    where = "" if s["path"] == ROOT else f" from {s['path']}"
    return f"{name}{where}" + (" with uncommitted changes" if s.get("dirty") else "")


def compare(old: dict, new: dict) -> List[str]:
    old, new = _counts(old), _counts(new)

    lines = [f"| case | before ({_who(old)}) Ir/op | after ({_who(new)}) Ir/op | after ÷ before |",
             "|---|---:|---:|---:|"]
    for name, c in new["cases"].items():
        o = old["cases"].get(name, {})
        if "ir_per_op" in c and "ir_per_op" in o:
            lines.append(f"| `{name}` | {_f(o['ir_per_op'])} | {_f(c['ir_per_op'])} "
                         f"| {c['ir_per_op'] / o['ir_per_op']:.3f} |")
        else:
            lines.append(f"| `{name}` | {_f(o.get('ir_per_op'))} | {_f(c.get('ir_per_op'))} | – |")
    return lines + [""]


def markdown(doc: dict, old: Optional[dict] = None, old_name: str = "") -> str:
    lines = ["# sqla_memcache instruction counts", ""] + table(doc)
    if old is not None:
        lines += [f"## Compared with `{old_name}`", ""] + compare(old, doc)
    lines += ["Method: `python -m bench --callgrind` (see `bench/callgrind.py`): one process "
              "per case under `valgrind --tool=callgrind`, collecting only the measured loop of "
              "warm operations (caches filled, fresh session per ORM op). User-space "
              "instructions only: the kernel's share of `send`/`recv` is not counted, so the "
              "client rows are not CPU-time ratios.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m bench --callgrind", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cases", help=f"comma-separated subset of: {', '.join(CASES)}; "
                    "'orm' = the ORM hit paths")
    ap.add_argument("--ops", type=int, help="measured operations per case (default per case)")
    ap.add_argument("--method", choices=("toggle", "diff"), default="toggle")
    ap.add_argument("--jobs", type=int, default=2, help="cases run in parallel (default 2)")
    ap.add_argument("--layouts", type=int, default=3,
                    help="memory layouts per ORM case, median reported (default 3, max 5)")
    ap.add_argument("--source", help="checkout whose sqla_memcache is measured (default this one)")
    ap.add_argument("--label", help="name of the measured sqla_memcache in tables "
                    "(default: the last commit that changed it)")
    ap.add_argument("--compare", nargs="+", metavar="JSON",
                    help="OLD: compare this run with OLD; OLD NEW: compare two files, no run")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    ap.add_argument("--stem", default="callgrind", help="output stem (default callgrind)")
    ap.add_argument("--no-write", action="store_true", help="print only")
    ap.add_argument("--keep", metavar="DIR", help="keep the callgrind.out files in DIR "
                    "(for callgrind_annotate)")
    args = ap.parse_args(argv)

    if args.compare and len(args.compare) == 2:
        old, new = (json.load(open(p)) for p in args.compare)
        print("\n".join(compare(old, new)))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 2
    if args.cases:
        cases = []
        for c in (x.strip() for x in args.cases.split(",") if x.strip()):
            cases += ORM_HIT_CASES if c == "orm" else [c]
        unknown = [c for c in cases if c not in CASES]
        if unknown:
            ap.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    else:
        cases = list(CASES)
    source = os.path.abspath(args.source) if args.source else None
    doc = run(cases, args.ops, args.method, max(1, args.jobs), source,
              os.path.abspath(args.keep) if args.keep else None, args.label,
              max(1, min(len(PADS), args.layouts)))
    old = None
    if args.compare:
        with open(args.compare[0]) as fh:
            old = json.load(fh)
    print("\n".join(table(doc)))
    if old is not None:
        print("\n".join(compare(old, doc)))
    if not args.no_write:
        os.makedirs(args.out, exist_ok=True)
        base = os.path.join(args.out, args.stem)
        with open(base + ".json", "w") as fh:
            json.dump(doc, fh, indent=1)
            fh.write("\n")
        with open(base + ".md", "w") as fh:
            fh.write(markdown(doc, old, os.path.basename(args.compare[0]) if old else ""))
        print(f"wrote {base}.json\nwrote {base}.md")
    return 0 if all("error" not in c for c in doc["cases"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
