"""Every example runs as ``python -m examples.<name>`` against real servers and says what it should."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import pytest

from sqla_memcache.memcached_process import is_listening

ROOT = Path(__file__).resolve().parents[1]


def run_example(name: str, *args: str, env: Optional[Dict[str, str]] = None,
                timeout: float = 240) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, PYTHONPATH=str(ROOT))
    full_env.update(env or {})
    proc = subprocess.run([sys.executable, "-m", f"examples.{name}", *args], cwd=ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def lines_with(text: str, needle: str) -> List[str]:
    return [line for line in text.splitlines() if needle in line]


def test_client_basics(memcached: Any) -> None:
    out = run_example("client_basics", "--servers", memcached.address).stdout
    assert lines_with(out, 'get("basics:greeting")')[0].endswith("-> 'hello'")
    assert lines_with(out, "(a miss is None)")[0].endswith("-> None")
    assert lines_with(out, 'incr("basics:visits", 5)')[0].endswith("-> 15")
    assert lines_with(out, "(changed meanwhile)")[0].endswith("-> False")
    assert lines_with(out, 'cas("basics:visits", 100)')[0].endswith("-> True")
    assert lines_with(out, "get_multi(")[0].endswith("-> {'a': 1, 'b': 2, 'c': 3}")
    assert f"server {memcached.address}" in out


def test_dict_counter_loses_no_increment(memcached: Any) -> None:
    out = run_example("dict_counter", "--servers", memcached.address, "--threads", "4").stdout
    total = re.search(r"total of the counters: (\d+) \(expected (\d+)\)", out)
    assert total and total.group(1) == total.group(2) == "53"
    assert "most frequent: in=3" in out
    assert "longest words: applications, alleviating, distributed" in out
    assert "distinct words listed by lru_crawler metadump: 44" in out


def test_example_starts_and_stops_its_own_memcached() -> None:
    # nothing listens on port 1: the example must start a private server and stop it at the end
    out = run_example("client_basics", env={"SQLA_MEMCACHE_SERVERS": "127.0.0.1:1"}).stdout
    started = re.search(r"started a private memcached at (\S+?);", out)
    assert started, out
    assert lines_with(out, 'get("basics:greeting")')[0].endswith("-> 'hello'")
    assert not is_listening(started.group(1))


def test_mixin_recipe(memcached: Any) -> None:
    out = run_example("mixin_recipe", "--servers", memcached.address).stdout
    lookups = lines_with(out, 'User.get_cached_instance("(1)")')
    assert [line.rsplit("[", 1)[1] for line in lookups] == [
        "database, 1 SQL]", "memcached, 0 SQL]",  # first lookup fills the cache
        "database, 1 SQL]", "memcached, 0 SQL]",  # update() committed: re-read, new name
        "database, 1 SQL]",                       # delete_cached_instance() dropped it
    ]
    assert "User(1, 'Ada Lovelace')" in lookups[1] and "User(1, 'Ada King')" in lookups[2]
    by_email = lines_with(out, "User.fetch_by_field(User.email")
    assert by_email[0].endswith("[database, 1 SQL]") and by_email[1].endswith("[memcached, 0 SQL]")
    assert lines_with(out, "session.get(User, 1)")[0].endswith("[memcached, 0 SQL]")
    assert re.search(r"get_cache_key\(\) = 'recipe_\w+:o:[\w.]+User:\(1\)@\w+'", out)


@pytest.mark.mysql
def test_top5_films_on_mariadb(memcached: Any, mysql_url: str) -> None:
    from sqlalchemy import create_engine, text

    name = f"sqlam_top5_{os.getpid()}"
    try:
        out = run_example("top5_films", "--servers", memcached.address,
                          "--db", f"{mysql_url.rstrip('/')}/{name}").stdout
    finally:
        engine = create_engine(mysql_url)
        with engine.begin() as connection:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        engine.dispose()
    assert lines_with(out, "first query")[0].startswith("first query : database")
    assert lines_with(out, "second query")[0].startswith("second query: memcached, 0 SQL")
    assert lines_with(out, "after update")[0].startswith("after update: database")
    after = out.split("after update", 1)[1].splitlines()[1]
    assert after.split() == ["1", "ACADEMY", "DINOSAUR", "5.99"]
    assert "restored film 1 to 0.99" in out


def test_flask_sqlalchemy_recipe(memcached: Any) -> None:
    pytest.importorskip("flask_sqlalchemy", reason="flask-sqlalchemy is in the test extra")
    out = run_example("flask_sqlalchemy_recipe", "--servers", memcached.address).stdout
    gets = lines_with(out, "GET /films/top")
    assert [line.rsplit("[", 1)[1] for line in gets] == [
        "database, 1 SQL]", "memcached, 0 SQL]",  # first request fills the cache
        "database, 1 SQL]", "memcached, 0 SQL]",  # the POST committed through db.session: re-read
    ]
    assert "'ACE GOLDFINGER 4.99'" in gets[1].split("]")[0] and "ACADEMY DINOSAUR" not in gets[1]
    assert gets[2].split(" 200 ")[1].startswith("['ACADEMY DINOSAUR 5.99'")  # the new rate, not a stale list
    assert lines_with(out, "POST /films/1/rate 5.99")[0].split(" 200 ")[1].startswith("{'id': 1, 'rental_rate': '5.99'}")


@pytest.mark.parametrize("with_fastapi", [True, False], ids=["fastapi", "no-fastapi"])
def test_fastapi_films(memcached: Any, tmp_path: Path, with_fastapi: bool) -> None:
    pytest.importorskip("aiosqlite")
    env = None
    if with_fastapi:
        pytest.importorskip("fastapi")
        pytest.importorskip("httpx")
    else:  # a fastapi package that cannot be imported: the example calls its handlers directly
        (tmp_path / "fastapi").mkdir()
        (tmp_path / "fastapi" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
        env = {"PYTHONPATH": str(tmp_path) + os.pathsep + str(ROOT)}
    out = run_example("fastapi_films", "--servers", memcached.address, env=env).stdout
    assert ("httpx.ASGITransport" in out) is with_fastapi
    assert lines_with(out, "(first)")[0].endswith("database, 1 SQL statement(s)")
    assert lines_with(out, "(second)")[0].endswith("memcached, 0 SQL statement(s)")
    assert "1  ACADEMY DINOSAUR     5.99" in out
    assert "20 concurrent GET /films/top5: 0 SQL statement(s), all answers equal" in out, out
