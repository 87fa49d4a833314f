"""What every example shares: the ``--servers`` option and a memcached to talk to."""
from __future__ import annotations

import argparse
import sys
from typing import Callable, List, Optional, Sequence

from sqla_memcache.memcached_process import MemcachedUnavailable, ensure_servers, parse_servers


def argument_parser(description: str) -> argparse.ArgumentParser:
    """An ArgumentParser with the examples' ``--servers`` option."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--servers", default=None, metavar="HOST:PORT[,...]",
                        help="memcached servers (default $SQLA_MEMCACHE_SERVERS, else 127.0.0.1:11211, "
                             "else a private memcached started for this run)")
    return parser


def run_with_servers(body: Callable[[List[str]], None], servers: Optional[str]) -> int:
    """Call ``body(servers)`` with reachable memcached servers; return an exit status.

    A memcached started here is stopped before returning.
    """
    try:
        addresses, process = ensure_servers(parse_servers(servers) or None)
    except MemcachedUnavailable as exc:
        print(f"{sys.argv[0]}: {exc}", file=sys.stderr)
        return 1
    try:
        if process is not None:
            print(f"(started a private memcached at {process.address}; it stops when the example ends)")
        body(addresses)
        return 0
    finally:
        if process is not None:
            process.stop()


def main_for(body: Callable[[List[str]], None], description: str,
             argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``--servers`` and run ``body``: the ``main`` of the examples that need nothing else."""
    args = argument_parser(description).parse_args(argv)
    return run_with_servers(body, args.servers)
