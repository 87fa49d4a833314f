"""The sqla-memcache command line against real memcached servers."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, List, Tuple

import pytest

from sqla_memcache.cli import format_table, human_bytes, human_duration, main
from sqla_memcache.dump import class_counts
from sqla_memcache.client import Client

ROOT = Path(__file__).resolve().parents[1]
DOWN = "127.0.0.1:1"  # nothing listens on port 1


def run(argv: List[str]) -> Tuple[int, str]:
    out = io.StringIO()
    status = main(argv, out=out)
    return status, out.getvalue()


def test_stats_table_lists_every_server(memcached: Any) -> None:
    client = Client(memcached.servers)
    client.set("a", "1")
    client.get("a")
    status, text = run(["stats", "--servers", f"{memcached.address},{DOWN}"])
    assert status == 1  # one server is down
    lines = text.splitlines()
    assert lines[0].split() == ["server", "version", "uptime", "items", "memory", "hit",
                                "ratio", "evictions", "connections"]
    up = next(line for line in lines if line.startswith(memcached.address))
    assert "1.6" in up and "100.0%" in up and "/ 64.0 MiB" in up
    assert next(line for line in lines if line.startswith(DOWN)).split()[1] == "DOWN"


def test_stats_json_counts(memcached: Any) -> None:
    client = Client(memcached.servers)
    client.set("a", "1")
    client.set("b", "2")
    client.get("a")
    client.get("a")
    client.get("missing")
    status, text = run(["--json", "stats", "--servers", memcached.address])
    assert status == 0
    (row,) = json.loads(text)
    assert row["server"] == memcached.address and row["up"] is True
    assert row["curr_items"] >= 2  # flushed items of earlier tests may still be counted
    assert (row["get_hits"], row["get_misses"]) == (2, 1)
    assert row["hit_ratio"] == pytest.approx(2 / 3)
    assert row["limit_maxbytes"] == 64 * 1024 * 1024
    assert row["bytes"] > 0 and row["evictions"] == 0 and row["curr_connections"] >= 1


def test_stats_servers_from_environment(memcached: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SQLA_MEMCACHE_SERVERS", memcached.address)
    status, text = run(["stats", "--json"])
    assert status == 0
    assert [row["server"] for row in json.loads(text)] == [memcached.address]


def test_keys_with_prefix(memcached_cluster: Any) -> None:
    client = Client(memcached_cluster.servers)
    for i in range(12):
        client.set(f"app:{i:02d}", i)
    client.set("other:1", 1)
    servers = ",".join(memcached_cluster.servers)
    status, text = run(["keys", "--prefix", "app:", "--servers", servers])
    assert status == 0
    assert text.splitlines() == [f"app:{i:02d}" for i in range(12)]
    status, text = run(["keys", "--servers", servers, "--json", "--limit", "3"])
    records = json.loads(text)
    assert [r["key"] for r in records] == ["app:00", "app:01", "app:02"]
    assert all(r["server"] in memcached_cluster.servers and r["exp"] == -1 and r["size"] > 0
               for r in records)


def test_keys_on_a_server_that_forbids_dumping(memcached_factory: Any,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    server = memcached_factory(extra_args=("-X",))
    status, text = run(["keys", "--servers", server.address])
    assert status == 2 and text == ""
    assert "disable-dumping" in capsys.readouterr().err


def test_python_dash_m_entry_point(memcached: Any) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "sqla_memcache", "--servers", memcached.address,
                           "stats", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["up"] is True


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    help_text = capsys.readouterr().out
    for command in ("demo", "stats", "keys", "--servers", "--json"):
        assert command in help_text


def test_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_formatting_helpers() -> None:
    assert human_bytes(512) == "512 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(64 * 1024 * 1024) == "64.0 MiB"
    assert human_duration(59) == "00:00:59"
    assert human_duration(93784) == "1d 02:03:04"
    table = format_table(["name", "n"], [["a", 1], ["long", 100]], right=(1,))
    assert table.splitlines() == ["name    n", "----  ---", "a       1", "long  100"]


def test_server_configuration_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqla_memcache.memcached_process import configured_servers, parse_servers, split_address

    assert parse_servers("a:1, b:2 c:3") == ["a:1", "b:2", "c:3"]
    assert split_address("10.0.0.1:11212") == ("10.0.0.1", 11212)
    assert split_address("cachehost") == ("cachehost", 11211)
    monkeypatch.delenv("SQLA_MEMCACHE_SERVERS", raising=False)
    assert configured_servers() == (["127.0.0.1:11211"], False)
    monkeypatch.setenv("SQLA_MEMCACHE_SERVERS", "h1:1,h2:2")
    assert configured_servers() == (["h1:1", "h2:2"], True)
    assert configured_servers(["x:9"]) == (["x:9"], True)


def test_memcached_process_starts_and_stops() -> None:
    from sqla_memcache.memcached_process import MemcachedProcess, find_memcached_binary, is_listening

    if find_memcached_binary() is None:
        pytest.skip("needs a local memcached binary")
    with MemcachedProcess() as process:
        assert is_listening(process.address)
        client = Client([process.address])
        assert client.set("k", "v") and client.get("k") == "v"
        client.disconnect_all()
    assert not is_listening(process.address)


def test_demo_refuses_json():
    import pytest as _pytest

    from sqla_memcache.cli import main

    with _pytest.raises(SystemExit) as info:
        main(["demo", "--json"])
    assert info.value.code == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import sqla_memcache

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"sqla-memcache {sqla_memcache.__version__}\n"


# --------------------------------------------------------------------------- stats --namespace

NS_KEYS = {
    "app:q:films@db": b"x" * 100, "app:q:#0123abcd": b"y" * 50, "app:o:m.Film:(1)@db": b"z" * 10,  # 3 entries
    "app:m:top5:#ab": b"w",  # a memoized value: an entry too
    "app:tv:film": b"17", "app:dv:film": b"3", "app:rv:film:(1)": b"9", "app:gen": b"1", "app:epoch": b"5",
    "app:l:app:q:films@db": b"lease",
    "app:zz:new-kind": b"?",  # under the namespace, of no kind we know
    "apple:q:films": b"not ours", "other:tv:film": b"1", "plain": b"v",  # other namespaces and keys
}


def _fill(address: str) -> None:
    client = Client([address])
    for key, value in NS_KEYS.items():
        assert client.set(key, value)
    client.disconnect_all()


def test_stats_namespace_counts_entries_and_counters(memcached_factory: Any) -> None:
    server = memcached_factory()
    _fill(server.address)
    status, text = run(["stats", "--json", "--namespace", "app", "--servers", server.address])
    assert status == 0
    (row,) = json.loads(text)
    usage = row["namespace"]
    sizes = {k: v for k, v in usage.items() if k == "entry_bytes"}
    assert {k: v for k, v in usage.items() if k != "entry_bytes"} == {
        "name": "app", "entries": 4, "counters": 5, "leases": 1, "other": 1,
        "keys_scanned": len(NS_KEYS), "complete": True}
    assert sizes["entry_bytes"] > 100 + 50 + 10 + 1  # memcached's item sizes include their headers
    assert row["curr_items"] == len(NS_KEYS)
    status, text = run(["stats", "--namespace", "app", "--servers", server.address])
    assert status == 0
    lines = text.splitlines()
    assert lines[0].split()[-4:] == ["ns", "entries", "ns", "counters"]
    cells = lines[2].split()
    assert cells[-1] == "5" and cells[-4] == "4" and cells[-3].startswith("(") and cells[-2] == "B)"  # 4 (459 B)
    assert lines[-1].startswith("ns: keys of the ORM cache namespace 'app'")


def test_stats_namespace_of_a_real_orm_cache(memcached_factory: Any) -> None:
    import sqlalchemy as sa
    from sqlalchemy.orm import sessionmaker

    from sqla_memcache import FromCache, ORMCache

    metadata = sa.MetaData()
    thing = sa.Table("thing", metadata, sa.Column("id", sa.Integer, primary_key=True))
    server = memcached_factory()
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    cache = ORMCache(Client([server.address]), namespace="real")
    Session = cache.listen_on_session(sessionmaker(engine))
    with Session() as s:
        for i in range(3):
            s.execute(sa.select(thing).where(thing.c.id == i).options(FromCache())).all()
    status, text = run(["stats", "--json", "--namespace", "real", "--servers", server.address])
    usage = json.loads(text)[0]["namespace"]
    assert status == 0 and usage["entries"] == 3 and usage["counters"] >= 2  # the table's and the namespace's
    assert usage["entries"] + usage["counters"] + usage["leases"] + usage["other"] == usage["keys_scanned"]
    engine.dispose()


def test_stats_namespace_scan_is_bounded(memcached_factory: Any) -> None:
    server = memcached_factory()
    _fill(server.address)
    counts = class_counts(Client([server.address]))
    assert len(counts) >= 2  # the keys of NS_KEYS fall in several slab classes
    smallest = min(counts.values())
    limit = len(NS_KEYS) - 1  # all but the largest class fit
    status, text = run(["stats", "--json", "--namespace", "app", "--scan-limit", str(limit),
                        "--servers", server.address])
    usage = json.loads(text)[0]["namespace"]
    assert status == 0 and smallest <= usage["keys_scanned"] <= limit and usage["complete"] is False
    status, text = run(["stats", "--namespace", "app", "--scan-limit", str(limit), "--servers", server.address])
    assert ">=" in text.splitlines()[2] and "counted in %d keys only" % usage["keys_scanned"] in text
    status, text = run(["stats", "--json", "--namespace", "app", "--scan-limit", str(len(NS_KEYS)),
                        "--servers", server.address])
    assert json.loads(text)[0]["namespace"]["complete"] is True  # exactly all: not cut
    assert run(["stats", "--namespace", "app", "--scan-limit", "0", "--servers", server.address])[0] == 2
    # a class larger than the limit is left out whole: the dump is never cut mid-stream
    client = Client([server.address])
    assert client.set_multi({"app:rv:t:(%d)" % i: b"1" for i in range(6000)}) == []
    status, text = run(["stats", "--json", "--namespace", "app", "--scan-limit", "4500", "--servers", server.address])
    usage = json.loads(text)[0]["namespace"]
    assert usage["keys_scanned"] <= 4500 and usage["complete"] is False
    assert usage["entries"] + usage["counters"] + usage["leases"] + usage["other"] == usage["keys_scanned"]
    status, text = run(["stats", "--json", "--namespace", "app", "--servers", server.address])
    usage = json.loads(text)[0]["namespace"]
    assert (usage["keys_scanned"], usage["complete"], usage["counters"]) == (6000 + len(NS_KEYS), True, 6005)


def test_stats_namespace_on_a_server_that_forbids_dumping(memcached_factory: Any) -> None:
    server = memcached_factory(extra_args=("-X",))
    status, text = run(["stats", "--json", "--namespace", "app", "--servers", server.address])
    (row,) = json.loads(text)
    assert status == 2 and row["up"] is True and "disable-dumping" in row["namespace"]["error"]
    status, text = run(["stats", "--namespace", "app", "--servers", server.address])
    assert status == 2 and text.splitlines()[2].split()[-2:] == ["n/a", "n/a"] and "disable-dumping" in text


def test_stats_reads_servers_and_namespace_from_a_config_file(memcached_factory: Any, tmp_path: Path) -> None:
    server = memcached_factory()
    _fill(server.address)
    ini = tmp_path / "app.ini"
    ini.write_text("[app:main]\nsqlalchemy.url = sqlite://\n"
                   f"sqla_memcache.url = memcached://{server.address}?timeout=2\nsqla_memcache.namespace = app\n")
    status, text = run(["stats", "--json", "--config", str(ini)])
    (row,) = json.loads(text)
    assert status == 0 and row["server"] == server.address and row["namespace"]["entries"] == 4
    # --namespace wins over the file's; a file without the settings is a usage error
    status, text = run(["stats", "--json", "--config", str(ini), "--namespace", "other"])
    assert json.loads(text)[0]["namespace"]["counters"] == 1
    other = tmp_path / "other.ini"  # another prefix, in any case (configparser lower-cases keys)
    other.write_text(f"[cache]\nCache.URL = memcached://{server.address}\ncache.namespace = app\n")
    status, text = run(["stats", "--json", "--config", str(other), "--config-prefix", "Cache."])
    assert status == 0 and json.loads(text)[0]["namespace"]["entries"] == 4
    (tmp_path / "empty.ini").write_text("[app:main]\nsqlalchemy.url = sqlite://\n")
    assert run(["stats", "--config", str(tmp_path / "empty.ini")])[0] == 2
