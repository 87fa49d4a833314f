"""The ``sqla-memcache`` command line (also ``python -m sqla_memcache``).

Commands::

    sqla-memcache demo  [--db URL]          the sakila "top 5 films" demo
    sqla-memcache stats [--namespace NS | --config FILE]
                                            per-server table: version, uptime, items, memory,
                                            hit ratio, evictions, connections; with a namespace,
                                            how many of each server's keys are its entries and
                                            version counters (lru_crawler metadump, bounded)
    sqla-memcache keys  [--prefix P]        keys on the servers (lru_crawler metadump)
    sqla-memcache deliver --db URL --namespace NS [--loop SECONDS]
                                            deliver the ORM cache's durable invalidation log
                                            (rows left by writers that died between COMMIT and bump)

Common options (before or after the command): ``--servers HOST:PORT[,...]``
(default ``$SQLA_MEMCACHE_SERVERS``, else ``127.0.0.1:11211``) and ``--json``
for machine-readable output.

Exit status: 0 on success, 1 when a server is down (``stats``) or the demo
fails, 2 for usage errors and servers that refuse key dumping (``keys``, and
``stats`` with a namespace).
"""
from __future__ import annotations

import argparse
import configparser
import json
import logging
import sys
from typing import Any, Dict, List, Mapping, Optional, Sequence, TextIO

from . import __version__
from .textfmt import format_table
from .memcached_process import ENV_SERVERS, configured_servers, parse_servers
from .dump import dump_items, dump_server
from .errors import DumpingNotAllowed, MemcachedDictError

log = logging.getLogger(__name__)


def _client(servers: Sequence[str]) -> Any:
    from .client import Client  # imported late: `--help` must work even if the client is broken

    return Client(list(servers))


# --------------------------------------------------------------------------- formatting

def human_bytes(count: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: int) -> str:
    """``93784`` -> ``"1d 02:03:04"``."""
    days, rest = divmod(int(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


# --------------------------------------------------------------------------- stats

def _text(value: Any) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def server_summary(address: str, stats: Optional[Mapping[Any, Any]]) -> Dict[str, Any]:
    """The ``stats`` row for one server; ``stats`` None means the server did not answer."""
    if stats is None:
        return {"server": address, "up": False}
    raw = {_text(k): _text(v) for k, v in stats.items()}

    def number(name: str) -> int:
        return int(float(raw.get(name, "0")))

    hits, misses = number("get_hits"), number("get_misses")
    return {
        "server": address,
        "up": True,
        "version": raw.get("version", "?"),
        "uptime": number("uptime"),
        "curr_items": number("curr_items"),
        "bytes": number("bytes"),
        "limit_maxbytes": number("limit_maxbytes"),
        "get_hits": hits,
        "get_misses": misses,
        "hit_ratio": hits / (hits + misses) if hits + misses else None,
        "evictions": number("evictions"),
        "curr_connections": number("curr_connections"),
    }


#: keys one ``stats --namespace`` reads per server at most (``--scan-limit``): memory and time stay bounded
SCAN_LIMIT = 100_000


def namespace_usage(client: Any, namespace: str, max_keys: int = SCAN_LIMIT,
                    timeout: float = 10.0) -> Dict[str, Any]:
    """How many of the keys of ``client``'s (first) server belong to the ORM cache ``namespace``.

    Reads at most ``max_keys`` keys: the slab classes that fit together
    (:func:`sqla_memcache.dump.dump_server`); ``complete`` is False when a
    class was left out (the counts are then those of the keys read). Raises
    what ``dump_server`` raises.
    """
    from .orm.keys import KINDS, key_kind  # the ORM (and SQLAlchemy) only when a namespace is asked for

    items, complete = dump_server(client, 0, timeout, max_keys)
    usage: Dict[str, Any] = {"name": namespace, "entries": 0, "entry_bytes": 0, "counters": 0, "leases": 0,
                             "other": 0, "keys_scanned": len(items), "complete": complete}
    for key, fields in items:
        kind = key_kind(namespace, key.decode("utf-8", "replace"))
        if kind is None:
            continue
        what = KINDS.get(kind)
        if what == "entry":
            usage["entries"] += 1
            usage["entry_bytes"] += int(fields.get("size", "0") or 0)
        elif what == "counter":
            usage["counters"] += 1
        elif what == "lease":
            usage["leases"] += 1
        else:
            usage["other"] += 1
    return usage


def collect_stats(servers: Sequence[str], namespace: Optional[str] = None,
                  max_keys: int = SCAN_LIMIT) -> List[Dict[str, Any]]:
    """One :func:`server_summary` per server, asking each server on its own client; with
    ``namespace``, each server that is up also gets its :func:`namespace_usage` (or
    ``{"name": ..., "error": ...}`` when it cannot be dumped)."""
    rows = []
    for address in servers:
        client = _client([address])
        try:
            replies = client.get_stats()
        finally:
            client.disconnect_all()
        row = server_summary(address, replies[0][1] if replies else None)
        if namespace is not None and row["up"]:
            try:
                row["namespace"] = namespace_usage(client, namespace, max_keys)
            except (MemcachedDictError, OSError) as exc:
                row["namespace"] = {"name": namespace, "error": str(exc)}
        rows.append(row)
    return rows


def _usage_cells(row: Mapping[str, Any]) -> List[str]:
    usage = row.get("namespace")
    if not row["up"]:
        return ["-", "-"]
    if usage is None or "error" in usage:
        return ["n/a", "n/a"]
    more = "" if usage["complete"] else ">="
    return [f"{more}{usage['entries']} ({human_bytes(usage['entry_bytes'])})", f"{more}{usage['counters']}"]


def render_stats(rows: Sequence[Mapping[str, Any]]) -> str:
    """The human-readable stats table (two more columns, and notes, when a namespace was scanned)."""
    scanned = next((row["namespace"]["name"] for row in rows if "namespace" in row), None)
    table = []
    for row in rows:
        extra = _usage_cells(row) if scanned is not None else []
        if not row["up"]:
            table.append([row["server"], "DOWN", "-", "-", "-", "-", "-", "-"] + extra)
            continue
        ratio = "-" if row["hit_ratio"] is None else f"{100 * row['hit_ratio']:.1f}%"
        table.append([
            row["server"], row["version"], human_duration(row["uptime"]), row["curr_items"],
            f"{human_bytes(row['bytes'])} / {human_bytes(row['limit_maxbytes'])}",
            ratio, row["evictions"], row["curr_connections"],
        ] + extra)
    headers = ["server", "version", "uptime", "items", "memory", "hit ratio", "evictions", "connections"]
    if scanned is None:
        return format_table(headers, table, right=(2, 3, 4, 5, 6, 7))
    text = format_table(headers + ["ns entries", "ns counters"], table, right=(2, 3, 4, 5, 6, 7, 8, 9))
    notes = [f"ns: keys of the ORM cache namespace {scanned!r} (entries: query results, objects and "
             "memoized values, with their size; counters: version keys), from lru_crawler metadump"]
    for row in rows:
        usage = row.get("namespace") or {}
        if "error" in usage:
            notes.append(f"{row['server']}: {usage['error']}")
        elif usage and not usage["complete"]:
            notes.append(f"{row['server']}: counted in {usage['keys_scanned']} keys only, the slab classes "
                         "that fit in --scan-limit (raise it to read more)")
    return text + "\n" + "\n".join(notes)


def settings_from_file(path: str, prefix: str) -> Dict[str, str]:
    """The ``prefix``-ed settings of an ini file (the first section holding any, ``[DEFAULT]`` first),
    as ``ORMCache.from_config`` reads them. Raises ``ValueError`` when there are none."""
    parser = configparser.ConfigParser(interpolation=None)
    with open(path, encoding="utf-8") as fh:
        parser.read_file(fh)
    sections = [dict(parser.defaults())] + [dict(parser.items(name)) for name in parser.sections()]
    for items in sections:
        found = {key: value for key, value in items.items() if key.startswith(prefix)}
        if found:
            return found
    raise ValueError(f"{path} has no {prefix}* setting")


def cmd_stats(args: argparse.Namespace, out: TextIO) -> int:
    namespace = args.namespace
    if args.scan_limit < 1:
        print("sqla-memcache stats: --scan-limit must be at least 1", file=sys.stderr)
        return 2
    if args.config:
        from .config import parse_url

        prefix = args.config_prefix.lower()  # configparser lower-cases the keys it reads
        try:
            settings = settings_from_file(args.config, prefix)
            url = settings.get(prefix + "url")
            if url and not args.servers_given:
                args.servers = parse_url(url)[0]
        except (OSError, ValueError, configparser.Error) as exc:
            print(f"sqla-memcache stats: {exc}", file=sys.stderr)
            return 2
        if namespace is None:  # ORMCache's default namespace when the file names none
            namespace = settings.get(prefix + "namespace", "sqla_memcache")
    rows = collect_stats(args.servers, namespace, args.scan_limit)
    out.write((json.dumps(rows, indent=2) if args.json else render_stats(rows)) + "\n")
    if not all(row["up"] for row in rows):
        return 1
    return 2 if any("error" in row.get("namespace", {}) for row in rows) else 0


# --------------------------------------------------------------------------- keys

def cmd_keys(args: argparse.Namespace, out: TextIO) -> int:
    client = _client(args.servers)
    try:
        items = sorted(dump_items(client, args.prefix), key=lambda item: (item[1], item[0]))
    except DumpingNotAllowed as exc:
        print(f"sqla-memcache keys: {exc}", file=sys.stderr)
        return 2
    except (MemcachedDictError, OSError) as exc:
        print(f"sqla-memcache keys: {exc}", file=sys.stderr)
        return 1
    finally:
        client.disconnect_all()
    if args.limit is not None:
        items = items[: args.limit]
    if args.json:
        records = [{"key": key, "server": address, "exp": int(fields.get("exp", -1)),
                    "size": int(fields.get("size", 0))} for address, key, fields in items]
        out.write(json.dumps(records, indent=2) + "\n")
    else:
        out.writelines(key + "\n" for _address, key, _fields in items)
    return 0


# --------------------------------------------------------------------------- demo

def cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from .demo.runner import run_demo  # imports SQLAlchemy models: only when asked

    explicit = args.servers if args.servers_given else None
    return run_demo(db_url=args.db, servers=explicit, out=out)


def cmd_deliver(args: argparse.Namespace, out: TextIO) -> int:
    """Deliver the durable invalidation log of ``--namespace`` in ``--db`` (once, or every ``--loop`` s)."""
    import time

    import sqlalchemy as sa

    from .client import Client
    from .orm.cache import ORMCache

    engine = sa.create_engine(args.db)
    cache = ORMCache(Client(list(args.servers)), namespace=args.namespace)
    total = 0
    try:
        while True:
            try:
                delivered = cache.deliver_logged(engine)
            except Exception as exc:  # the database or memcached is away: say so, try again when looping
                log.warning("delivering the invalidation log failed: %s", exc)
                if not args.loop:
                    out.write(json.dumps({"delivered": total, "error": str(exc)}) + "\n" if args.json
                              else "error: %s\n" % exc)
                    return 1
                delivered = 0
            total += delivered
            if not args.loop:
                break
            time.sleep(args.loop)
    finally:
        engine.dispose()
    out.write(json.dumps({"delivered": total}) + "\n" if args.json
              else "delivered %d logged transaction(s)\n" % total)
    return 0


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    """The argparse parser; common options are accepted before or after the command."""

    def add_common(parser: argparse.ArgumentParser, suppress: bool) -> None:
        default = argparse.SUPPRESS if suppress else None
        parser.add_argument("--servers", default=default, metavar="HOST:PORT[,...]",
                            help=f"memcached servers (default ${ENV_SERVERS}, else 127.0.0.1:11211)")
        parser.add_argument("--json", action="store_true", default=argparse.SUPPRESS if suppress else False,
                            help="machine-readable JSON output")
        parser.add_argument("-v", "--verbose", action="store_true",
                            default=argparse.SUPPRESS if suppress else False, help="log at INFO level")

    parser = argparse.ArgumentParser(prog="sqla-memcache",
                                     description="Cache SQLAlchemy ORM results in memcached: demo and tools.")
    add_common(parser, suppress=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    demo = commands.add_parser("demo", help='the sakila "top 5 films by rental rate" cache demo')
    demo.add_argument("--db", default=None, metavar="URL",
                      help="SQLAlchemy URL, e.g. mysql+pymysql://root@127.0.0.1:3306/sakila "
                           "(default: SQLite in a temporary directory)")
    stats = commands.add_parser("stats", help="per-server statistics table")
    stats.add_argument("--namespace", default=None, metavar="NS",
                       help="also count each server's keys of this ORM cache namespace (lru_crawler metadump)")
    stats.add_argument("--config", default=None, metavar="FILE",
                       help="an ini file with ORMCache.from_config settings: its url gives the servers "
                            "(unless --servers), its namespace the namespace (unless --namespace)")
    stats.add_argument("--config-prefix", default="sqla_memcache.", metavar="PREFIX",
                       help="the settings' prefix in --config (default: sqla_memcache.)")
    stats.add_argument("--scan-limit", type=int, default=SCAN_LIMIT, metavar="N",
                       help=f"read at most N keys per server for the namespace counts (default {SCAN_LIMIT})")
    keys = commands.add_parser("keys", help="list keys (best-effort snapshot via lru_crawler metadump)")
    keys.add_argument("--prefix", default="", help="only keys starting with this prefix")
    keys.add_argument("--limit", type=int, default=None, help="print at most this many keys")
    deliver = commands.add_parser("deliver", help="deliver the ORM cache's durable invalidation log (cron)")
    deliver.add_argument("--db", required=True, metavar="URL", help="SQLAlchemy URL of the database holding the log")
    deliver.add_argument("--namespace", required=True, help="the ORMCache namespace")
    deliver.add_argument("--loop", type=float, default=0.0, metavar="SECONDS",
                         help="keep delivering every SECONDS (default: once)")
    for sub in (demo, stats, keys, deliver):
        add_common(sub, suppress=True)
    return parser


def main(argv: Optional[Sequence[str]] = None, out: Optional[TextIO] = None) -> int:
    """Entry point of ``sqla-memcache``; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo" and args.json:
        parser.error("the demo prints a report for people; --json applies to stats and keys")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    args.servers_given = bool(args.servers)
    args.servers = parse_servers(args.servers) if args.servers else configured_servers()[0]
    handler = {"demo": cmd_demo, "stats": cmd_stats, "keys": cmd_keys, "deliver": cmd_deliver}[args.command]
    try:
        return handler(args, out or sys.stdout)
    except KeyboardInterrupt:
        return 130
