"""Benchmark harness for sqla_memcache (issue 6).

Run everything with ``python -m bench`` (a few minutes) or ``python -m bench --quick``
(under a minute). The harness starts its own memcached on a free loopback port,
runs interleaved rounds of every case against every client and the raw-socket
floor, and writes ``bench/results/latest.{json,md,png}``.

Nothing here runs inside the default test suite except a tiny smoke run
(``tests/test_bench_smoke.py``) that checks the output shape, never timings.
"""
