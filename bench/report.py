"""Turn a results document into latest.json, a Markdown report and a PNG chart.

The targets (issue 6's client targets, issue 11's ORM ones, issue 12's asyncio one) live here as data
(case, variant, metric, comparison, limit), so the Markdown says PASS/FAIL for
each from the same numbers as the table.
"""
from __future__ import annotations

import json
import math
import os
from typing import Dict, List, Optional

#: metric names used in ``vs`` ratios: ops_s (higher is better), cpu and wall
#: (per-op time, lower is better).
TARGETS: List[dict] = [
    {"id": "get_cpu", "case": "get_100b", "variant": "sqla_memcache", "against": "floor",
     "metric": "cpu", "cmp": "<=", "limit": 1.05,
     "text": "single get: client CPU per op vs the floor's",
     "peers": "pylibmc 1.03, pymemcache 1.18, python-memcached 1.32"},
    {"id": "set_cpu", "case": "set_100b", "variant": "sqla_memcache", "against": "floor",
     "metric": "cpu", "cmp": "<=", "limit": 1.05,
     "text": "single set: client CPU per op vs the floor's", "peers": ""},
    {"id": "get_multi", "case": "get_multi_100", "variant": "sqla_memcache", "against": "floor",
     "metric": "ops_s", "cmp": ">=", "limit": 0.35,
     "text": "get_multi of 100 keys: calls/s vs the pipelined floor",
     "peers": "issue 11: pylibmc 0.48, us 0.235"},
    {"id": "set_multi", "case": "set_multi_100", "variant": "sqla_memcache", "against": "floor",
     "metric": "ops_s", "cmp": ">=", "limit": 0.80,
     "text": "set_multi of 100 keys: calls/s vs the pipelined floor", "peers": ""},
    {"id": "get_100k", "case": "get_100k", "variant": "sqla_memcache", "against": "floor",
     "metric": "ops_s", "cmp": ">=", "limit": 0.95,
     "text": "get of a 100 KiB value: ops/s vs the floor",
     "peers": "meta-memcache 1.01, pylibmc 0.82, pymemcache 0.76"},
    {"id": "top5_vs_naive", "case": "orm_top5_sqlite", "variant": "fromcache", "against": "naive",
     "metric": "cpu", "cmp": "<=", "limit": 0.85,
     "text": "top-5 query: FromCache hit CPU vs the naive recipe's",
     "peers": "issue 11: 177 vs 130 µs (1.36)"},
    {"id": "top5_vs_dogpile", "case": "orm_top5_sqlite", "variant": "fromcache",
     "against": "dogpile", "metric": "cpu", "cmp": "<=", "limit": 0.40,
     "text": "top-5 query: FromCache hit CPU vs SQLAlchemy's dogpile example's",
     "peers": "issue 11: 177 vs 277 µs (0.64)"},
    {"id": "get_vs_naive", "case": "orm_get_sqlite", "variant": "cached", "against": "naive",
     "metric": "cpu", "cmp": "<=", "limit": 1.0,
     "text": "session.get hit CPU vs the naive recipe's",
     "peers": "issue 11: 107 vs 56 µs (1.91)"},
    {"id": "get_vs_mariadb", "case": "orm_get_mariadb", "variant": "cached", "against": "db",
     "metric": "ops_s", "cmp": ">=", "limit": 5.0,
     "text": "session.get hit vs MariaDB: speed-up in wall time per op",
     "peers": "issue 11 (CPU): 296 vs 107 µs"},
    {"id": "sqlite_top5", "case": "orm_top5_sqlite", "variant": "fromcache", "against": "db",
     "metric": "wall", "cmp": "<=", "limit": 1.0,
     "text": "top-5 query on SQLite: FromCache hit wall time vs the database's", "peers": ""},
    {"id": "async_get_cpu", "case": "async_get", "variant": "sqla_memcache_async", "against": "sqla_memcache",
     "metric": "cpu", "cmp": "<=", "limit": 1.3,
     "text": "AsyncClient.get CPU vs the blocking Client's (asyncio's event loop)",
     "peers": "issue 12; asyncio_floor: what the event loop alone costs"},
    {"id": "async_get_cpu_uvloop", "case": "async_get", "variant": "sqla_memcache_uvloop",
     "against": "sqla_memcache", "metric": "cpu", "cmp": "<=", "limit": 1.3,
     "text": "AsyncClient.get CPU vs the blocking Client's (uvloop's event loop)",
     "peers": "issue 12; uvloop_floor: what the event loop alone costs"},
    {"id": "sqlite_get", "case": "orm_get_sqlite", "variant": "cached", "against": "db",
     "metric": "wall", "cmp": "<=", "limit": 1.0,
     "text": "session.get on SQLite: hit wall time vs the database's", "peers": ""},
]

METRIC_NAMES = {"ops_s": "ops/s ratio", "cpu": "CPU/op ratio", "wall": "wall/op ratio"}


def evaluate(results: dict) -> List[dict]:
    """Return one entry per target: measured value (or None) and pass/fail."""
    out = []
    for t in TARGETS:
        entry = dict(t, value=None, passed=None, reason="")
        case = results.get("cases", {}).get(t["case"])
        variant = case and case["variants"].get(t["variant"])
        if not case:
            entry["reason"] = "case not run"
        elif not variant or not variant.get("available"):
            entry["reason"] = (variant or {}).get("reason", "variant not run")
        elif t["against"] not in variant["vs"]:
            other = case["variants"].get(t["against"]) or {}
            entry["reason"] = other.get("reason") or f"{t['against']} not run"
        else:
            value = variant["vs"][t["against"]][t["metric"]]
            entry["value"] = value
            per_round = sorted((variant.get("vs_rounds") or {}).get(t["against"], {}).get(t["metric"], []))
            if len(per_round) >= 4:  # quartiles of the per-round ratios: the run's own noise
                q = lambda f: per_round[min(len(per_round) - 1, int(round(f * (len(per_round) - 1))))]  # noqa: E731
                entry["spread"] = [q(0.25), q(0.75)]
            entry["passed"] = value <= t["limit"] if t["cmp"] == "<=" else value >= t["limit"]
            lo, hi = entry.get("spread", (value, value))
            entry["within_noise"] = lo <= t["limit"] <= hi
        out.append(entry)
    return out


def _f(x: Optional[float], digits: int = 2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    return f"{x:.{digits}f}"


def _subject(case: dict) -> Optional[str]:
    """The variant the other rows are compared with: ours."""
    for name in ("sqla_memcache", "cached", "fromcache"):
        if name in case["variants"] and case["variants"][name].get("available"):
            return name
    return None


def case_table(name: str, case: dict) -> List[str]:
    base = case["baseline"]
    subject = _subject(case)
    unit = "calls/s" if case["unit"] == "call" else "ops/s"
    threads = f", {case['threads']} threads" if case["threads"] > 1 else ""
    lines = [f"### {case['title']} (`{name}`)", "",
             f"{case['n']} {case['unit']}s per batch{threads}; ratios are medians of per-round ratios."
             + (f" {case['notes']}" if case.get("notes") else ""), ""]
    head = (f"| | {unit} | p50 µs | p99 µs | CPU µs/{case['unit']} "
            f"| {unit} ÷ {base} | CPU ÷ {base} |")
    sep = "|---|---:|---:|---:|---:|---:|---:|"
    if subject:
        head += f" {subject} {unit} ÷ this | {subject} CPU ÷ this |"
        sep += "---:|---:|"
    lines += [head, sep]
    for vname, v in case["variants"].items():
        label = f"**{vname}**" if vname == subject else vname
        if not v.get("available"):
            ncols = 8 if subject else 6
            lines.append(f"| {label} | unavailable: {v.get('reason', '')[:80]} |" + " |" * (ncols - 1))
            continue
        m = v["median"]
        vb = v["vs"].get(base, {}) if vname != base else {"ops_s": 1.0, "cpu": 1.0}
        row = (f"| {label} | {_f(m['ops_s'])} | {_f(m['p50_us'], 1)} | {_f(m['p99_us'], 1)} "
               f"| {_f(m['cpu_us'], 1)} | {_f(vb.get('ops_s'))} | {_f(vb.get('cpu'))} |")
        if subject:
            if vname == subject:
                row += " 1.00 | 1.00 |"
            else:
                vs = case["variants"][subject]["vs"].get(vname, {})
                row += f" {_f(vs.get('ops_s'))} | {_f(vs.get('cpu'))} |"
        lines.append(row)
    return lines + [""]


def targets_table(results: dict) -> List[str]:
    targets = results.get("targets") or evaluate(results)
    lines = ["| Target | Ratio | Measured (quartiles of rounds) | Limit | Result | Others, this run | Reference |",
             "|---|---|---:|---:|---|---|---|"]
    for t in targets:
        if t["value"] is None:
            result, measured = f"NOT RUN ({t['reason'][:60]})", "–"
        else:
            result, measured = ("PASS" if t["passed"] else "**FAIL**"), _f(t["value"])
            if t.get("within_noise"):
                result += " (limit within the quartiles)"
            if t.get("spread"):
                measured += f" ({_f(t['spread'][0])}–{_f(t['spread'][1])})"
        lines.append(f"| {t['text']} (`{t['case']}`) | {METRIC_NAMES[t['metric']]} "
                     f"{t['variant']} ÷ {t['against']} | {measured} | {t['cmp']} {t['limit']:.2f} "
                     f"| {result} | {_others(results, t)} | {t.get('peers', '')} |")
    return lines


#: (row label, case, variant) of the hit summary; ``{db}`` is the case that
#: holds the hits (SQLite: its database rows are the cheapest to read).
SUMMARY_ROWS = [
    ("MariaDB, no cache", "orm_{q}_mariadb", "db"),
    ("SQLite, no cache", "orm_{q}_sqlite", "db"),
    ("MariaDB, no cache, on the engine sqla_memcache listens on", "orm_{q}_mariadb", "db_captured"),
    ("SQLite, no cache, on the engine sqla_memcache listens on", "orm_{q}_sqlite", "db_captured"),
    ("SQLAlchemy's dogpile example, hit", "orm_{q}_sqlite", "dogpile"),
    ("naive recipe, hit (no invalidation)", "orm_{q}_sqlite", "naive"),
    ("**sqla_memcache, hit**", "orm_{q}_sqlite", None),
]


def hit_summary(results: dict, level: int = 2, title: str = "What a hit costs") -> List[str]:
    """What a hit costs: CPU and wall per op of every way to answer, and ratios to ours.

    Each ratio is the median of per-round ratios within one case (the row's), so
    the MariaDB row is compared with the hits of its own case.
    """
    cases = results.get("cases", {})
    if not any(k.startswith(("orm_get_", "orm_top5_")) for k in cases):
        return []
    h = "#" * level
    out = [f"{h} {title}", "",
           "Per operation, fresh session each; ratios are to the sqla_memcache hit of the "
           "same case and round (median over rounds; > 1 means it costs more than our hit).", ""]
    for q, title in (("top5", "top-5 films query"), ("get", "`session.get(Film, pk)`")):
        out += [f"| {title} | CPU µs/op | wall µs/op | CPU ÷ sqla_memcache hit "
                "| wall ÷ sqla_memcache hit |", "|---|---:|---:|---:|---:|"]
        for label, case_name, variant in SUMMARY_ROWS:
            case = cases.get(case_name.format(q=q))
            if not case:
                continue
            subject = _subject(case)
            v = case["variants"].get(variant or subject or "")
            if v is None:
                continue
            if not v.get("available"):
                out.append(f"| {label} | {v.get('reason', 'unavailable')[:90]} | | | |")
                continue
            m = v["median"]
            vs = v["vs"].get(subject, {}) if variant else {"cpu": 1.0, "wall": 1.0}
            out.append(f"| {label} | {_f(m['cpu_us'], 1)} | {_f(m['wall_us'], 1)} "
                       f"| {_f(vs.get('cpu'))} | {_f(vs.get('wall'))} |")
        out.append("")
    return out


def _others(results: dict, t: dict) -> str:
    """The same ratio for every other variant of the case (the peers, for client cases)."""
    case = results.get("cases", {}).get(t["case"])
    if not case:
        return ""
    out = []
    for name, v in case["variants"].items():
        if name in (t["variant"], t["against"]) or not v.get("available"):
            continue
        ratio = v["vs"].get(t["against"], {}).get(t["metric"])
        if ratio is not None:
            out.append(f"{name} {_f(ratio)}")
    return ", ".join(out)


def _placement_text(meta: dict) -> str:
    p = meta.get("placement", "none")
    if p == "split":
        return (f"client on CPU {meta['client_cpus']}, memcached on CPU {meta['server_cpus']} "
                "(every round trip crosses CPUs).")
    if p == "shared":
        return f"client and memcached share CPU {meta['client_cpus']}."
    return "not pinned to CPUs."


def run_line(results: dict) -> List[str]:
    meta = results["meta"]
    v = meta.get("versions", {})
    return [
        f"Run {meta['started']} ({meta['seconds']} s), {meta['rounds']} interleaved rounds, "
        f"scale {meta['scale']}; Python {meta['python']} on {meta['platform']}, "
        f"{meta['cpus']} CPUs; {v.get('memcached', 'memcached')} on loopback; "
        + _placement_text(meta),
        "Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "memcached") + "."
        + _source_text(meta),
    ] + _load_text(meta)


def _source_text(meta: dict) -> str:
    src = meta.get("source") or {}
    if not src.get("commit"):
        return ""
    last = src.get("sqla_memcache_commit")
    return (f" sqla_memcache at commit {src['commit']}"
            + (f" (its last change to sqla_memcache/: {last})" if last and last != src["commit"] else "")
            + (" with uncommitted changes." if src.get("dirty") else "."))


def _load_text(meta: dict) -> List[str]:
    load = meta.get("loadavg") or {}
    if not load.get("before") or not load.get("after"):
        return []
    b, a = load["before"], load["after"]
    return [f"Load average (1/5/15 min) {b[0]}/{b[1]}/{b[2]} before the run, "
            f"{a[0]}/{a[1]}/{a[2]} after it, on {meta['cpus']} CPUs"
            + (": the machine was busy with other work, so wall-clock figures (ops/s, p99) "
               "are pessimistic and noisier than CPU per op." if max(b[0], a[0]) > meta["cpus"] * 0.5
               else ".")]


def case_sections(results: dict, level: int = 2) -> List[str]:
    h = "#" * level
    meta = results["meta"]
    client = {k: c for k, c in results["cases"].items() if c["kind"] == "client"}
    orm = {k: c for k, c in results["cases"].items() if c["kind"] != "client"}
    lines: List[str] = []
    if client:
        lines += [f"{h} Client cases", "",
                  "`floor` is a Python loop sending pre-encoded requests on a raw socket and "
                  "reading to the reply terminator without parsing: the limit for any Python "
                  "client. CPU is `time.process_time` of the benchmark process.", ""]
        for name, case in client.items():
            lines += [ln.replace("### ", h + "# ", 1) if ln.startswith("### ") else ln
                      for ln in case_table(name, case)]
    if orm:
        lines += [f"{h} ORM cases", ""]
        for note in meta.get("orm_notes", {}).values():
            lines += [f"- {note}"]
        lines.append("")
        for name, case in orm.items():
            lines += [ln.replace("### ", h + "# ", 1) if ln.startswith("### ") else ln
                      for ln in case_table(name, case)]
    return lines


def markdown(results: dict, chart: Optional[str] = "latest.png") -> str:
    lines = ["# sqla_memcache benchmark results", ""] + run_line(results) + [
        "", "## Targets (issues 6 and 11)", ""] + targets_table(results) + [""]
    lines += hit_summary(results, 2)
    if chart:
        lines += [f"![benchmark chart]({chart})", ""]
    elif chart is None and not results.get("no_chart"):
        lines += ["(No chart: matplotlib is not installed; `pip install -e '.[bench]'`.)", ""]
    lines += case_sections(results, 2)
    return "\n".join(lines).rstrip() + "\n"


def chart(results: dict, path: str) -> Optional[str]:
    """Write a PNG: per-case ratios to the floor, and ORM speed-ups. Returns the path."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception:
        return None
    client = [(k, c) for k, c in results["cases"].items() if c["kind"] == "client"]
    orm = [(k, c) for k, c in results["cases"].items() if c["kind"] != "client"]
    panels = (2 if client else 0) + (1 if orm else 0)
    if not panels:
        return None
    fig, axes = plt.subplots(panels, 1, figsize=(11, 3.6 * panels), squeeze=False)
    axes = [a[0] for a in axes]
    ax_i = 0
    if client:
        names = []
        for _, c in client:
            for v in c["variants"]:
                if v != "floor" and v not in names:
                    names.append(v)
        width = 0.8 / max(1, len(names))
        for metric, title in (("ops_s", "ops/s ÷ floor (higher is better)"),
                              ("cpu", "client CPU per op ÷ floor (lower is better)")):
            ax = axes[ax_i]
            ax_i += 1
            for j, vname in enumerate(names):
                xs, ys = [], []
                for i, (_, c) in enumerate(client):
                    v = c["variants"].get(vname)
                    if v and v.get("available") and "floor" in v["vs"]:
                        xs.append(i + (j - (len(names) - 1) / 2) * width)
                        ys.append(v["vs"]["floor"][metric])
                ax.bar(xs, ys, width, label=vname,
                       edgecolor="black" if vname == "sqla_memcache" else None)
            ax.axhline(1.0, color="grey", lw=0.8, ls="--")
            ax.set_xticks(range(len(client)))
            ax.set_xticklabels([k for k, _ in client], fontsize=8)
            ax.set_title(title, fontsize=10)
            if metric == "cpu":
                ax.set_yscale("log")
            ax.legend(fontsize=8, ncol=len(names))
    if orm:
        ax = axes[ax_i]
        labels, values, colors = [], [], []
        palette = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
        for ci, (k, c) in enumerate(orm):
            for vname, v in c["variants"].items():
                if v.get("available"):
                    labels.append(f"{k}\n{vname}")
                    values.append(v["median"]["wall_us"])
                    colors.append(palette[ci % len(palette)])
        ax.bar(range(len(values)), values, color=colors)
        ax.set_yscale("log")
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(labels, fontsize=6.5, rotation=45, ha="right")
        ax.set_title("ORM: wall time per operation, µs (log scale, lower is better)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(results: dict, out_dir: str, stem: str = "latest",
          with_chart: bool = True) -> Dict[str, str]:
    """Write ``<stem>.json``, ``<stem>.md`` and ``<stem>.png`` into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    results["targets"] = evaluate(results)
    paths = {"json": os.path.join(out_dir, f"{stem}.json"),
             "md": os.path.join(out_dir, f"{stem}.md")}
    png = chart(results, os.path.join(out_dir, f"{stem}.png")) if with_chart else None
    if png:
        paths["png"] = png
    with open(paths["json"], "w") as fh:
        json.dump(results, fh, indent=1, sort_keys=False, default=float)
        fh.write("\n")
    with open(paths["md"], "w") as fh:
        fh.write(markdown(results, chart=f"{stem}.png" if png else None))
    return paths
