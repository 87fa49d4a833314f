"""``python -m bench``: run the benchmarks and write bench/results/latest.*.

    python -m bench            # full run, a few minutes
    python -m bench --quick    # under a minute, writes bench/results/quick.*
    python -m bench --docs     # full run, then refresh docs/benchmarks.md and docs/img/bench.png
    python -m bench --rounds 1 --ops 50 --out /tmp/b   # smoke test size
    python -m bench --render bench/results/latest.json --docs   # re-render only
    python -m bench --callgrind [--cases orm] [--compare OLD.json]  # instructions per op
                                               # (python -m bench --callgrind --help)
"""
from __future__ import annotations

import argparse
import os
import sys

from . import report
from .runner import run

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--callgrind" in argv:
        from . import callgrind
        argv.remove("--callgrind")
        return callgrind.main(argv)
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 rounds of small batches (< 1 min)")
    ap.add_argument("--rounds", type=int, help="interleaved rounds (default 7; quick 5)")
    ap.add_argument("--scale", type=float, help="multiply every batch size (default 1; quick 0.2)")
    ap.add_argument("--ops", type=int, help="fixed batch size for every case (overrides --scale)")
    ap.add_argument("--clients", help="comma-separated subset, e.g. floor,sqla_memcache,pymemcache")
    ap.add_argument("--cases", help="comma-separated subset of case names")
    ap.add_argument("--no-orm", action="store_true", help="skip the ORM cases")
    ap.add_argument("--mysql-url", default=os.environ.get(
        "SQLA_MEMCACHE_BENCH_MYSQL", "mysql+pymysql://root@127.0.0.1:3306/sqla_memcache_bench"),
        help="MariaDB/MySQL URL for the ORM cases (database created if missing); 'none' to skip")
    ap.add_argument("--placement", choices=("split", "shared", "none"), default="split",
                    help="CPU binding: split (default) = this process on the first CPU, "
                         "memcached on the last; shared = both on the last; none = unpinned")
    ap.add_argument("--out", default=os.path.join(HERE, "results"), help="output directory")
    ap.add_argument("--stem", help="output file stem (default latest; quick: quick)")
    ap.add_argument("--render", metavar="JSON",
                    help="do not run: re-render the Markdown/PNG (and --docs) from a results file")
    ap.add_argument("--no-chart", action="store_true", help="write no PNG")
    ap.add_argument("--docs", action="store_true",
                    help="also refresh docs/benchmarks.md and docs/img/bench.png")
    args = ap.parse_args(argv)

    rounds = args.rounds or (5 if args.quick else 7)
    scale = args.scale or (0.2 if args.quick else 1.0)
    stem = args.stem or ("quick" if args.quick else "latest")
    split = (lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None)
    clients = split(args.clients)
    if clients is not None and "floor" not in clients:
        clients.insert(0, "floor")  # every ratio is to the floor
    mysql_url = None if args.mysql_url.lower() == "none" else args.mysql_url
    if args.render:
        import json
        with open(args.render) as fh:
            results = json.load(fh)
        stem = args.stem or os.path.splitext(os.path.basename(args.render))[0]
    else:
        results = run(rounds=rounds, scale=scale, ops=args.ops, clients=clients,
                      only=split(args.cases), orm=not args.no_orm, mysql_url=mysql_url,
                      placement=args.placement)
    if args.no_chart:
        results["no_chart"] = True
    paths = report.write(results, args.out, stem, with_chart=not args.no_chart)
    if args.docs:
        from . import docs
        source = args.render if args.render and os.path.abspath(args.render).startswith(
            os.path.join(ROOT, "bench", "results")) else paths["json"]
        paths.update(docs.refresh(results, paths.get("png"), ROOT, source))
    for t in results["targets"]:
        status = "NOT RUN" if t["value"] is None else ("PASS" if t["passed"] else "FAIL")
        value = "" if t["value"] is None else f"{t['value']:.2f} {t['cmp']} {t['limit']:.2f}"
        print(f"{status:8} {t['id']:20} {value}")
    for kind, path in paths.items():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
