"""The sakila loader and the demo, on SQLite and MariaDB, against real memcached."""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Iterator, List

import pytest
from sqlalchemy import create_engine, func, select, text

from sqla_memcache import memcached_process
from sqla_memcache.demo.loader import (
    ProgressBar,
    create_database_if_missing,
    csv_row_count,
    csv_rows,
    load_sakila,
)
from sqla_memcache.demo.models import TABLES, Film

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_ROWS = {"language": 6, "category": 16, "actor": 200, "film": 1000,
                 "film_actor": 5462, "film_category": 1000}


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def mysql_db(mysql_url: str) -> Iterator[str]:
    """URL of a database name that does not exist yet; dropped afterwards if created."""
    name = f"sqlam_demo_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    yield mysql_url.rstrip("/") + "/" + name
    engine = create_engine(mysql_url)
    with engine.begin() as connection:
        connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    engine.dispose()


# --------------------------------------------------------------------------- loader

def test_shipped_csvs_convert_to_column_types() -> None:
    film_table = next(t for t in TABLES if t.name == "film")
    first = next(csv_rows(film_table))
    assert first["film_id"] == 1 and first["title"] == "ACADEMY DINOSAUR"
    assert first["rental_rate"] == Decimal("0.99")
    assert first["original_language_id"] is None
    assert first["last_update"] == datetime(2006, 2, 15, 5, 3, 42)
    assert first["special_features"] == "Deleted Scenes,Behind the Scenes"
    language = next(t for t in TABLES if t.name == "language")
    assert next(csv_rows(language))["name"] == "English"  # CHAR padding stripped
    assert {t.name: csv_row_count(t) for t in TABLES} == EXPECTED_ROWS


def test_sakila_license_travels_with_the_data() -> None:
    data = ROOT / "sqla_memcache" / "data" / "sakila"
    assert "BSD" in (data / "LICENSE").read_text() or "Redistribution" in (data / "LICENSE").read_text()


def test_load_on_sqlite_is_complete_and_idempotent(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/sakila.db")
    progress = io.StringIO()
    assert load_sakila(engine, progress=progress, batch_size=300) == EXPECTED_ROWS
    # not a terminal: one summary line, no carriage returns
    assert progress.getvalue().count("\n") == 1 and "\r" not in progress.getvalue()
    assert "7684 rows into 6 tables" in progress.getvalue()
    assert load_sakila(engine, progress=None) == {name: 0 for name in EXPECTED_ROWS}
    with engine.connect() as connection:
        for table in TABLES:
            assert connection.execute(select(func.count()).select_from(table)).scalar_one() == EXPECTED_ROWS[table.name]
        top = connection.execute(select(Film.title, Film.rental_rate)
                                 .order_by(Film.rental_rate.desc(), Film.title).limit(2)).all()
    assert [tuple(row) for row in top] == [("ACE GOLDFINGER", Decimal("4.99")), ("AIRPLANE SIERRA", Decimal("4.99"))]
    engine.dispose()


def test_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path}/sakila.db")
    terminal = FakeTerminal()
    load_sakila(engine, progress=terminal)
    drawn = terminal.getvalue()
    assert drawn.count("\r") > 6  # redrawn per batch
    assert "[##############################]  7684/7684" in drawn
    assert drawn.endswith("\n")
    engine.dispose()


def test_progress_bar_counts() -> None:
    terminal = FakeTerminal()
    bar = ProgressBar(10, terminal, label="x", width=10)
    bar.advance(5, "t")
    assert "[#####.....]     5/10 t" in terminal.getvalue()


@pytest.mark.mysql
def test_load_on_mariadb_creates_the_database(mysql_db: str) -> None:
    assert create_database_if_missing(mysql_db) is True
    assert create_database_if_missing(mysql_db) is False
    engine = create_engine(mysql_db)
    assert load_sakila(engine, progress=None) == EXPECTED_ROWS
    assert load_sakila(engine, progress=None)["film"] == 0
    with engine.connect() as connection:
        film = connection.execute(select(Film.__table__).where(Film.film_id == 1)).one()
    assert film.rental_rate == Decimal("0.99") and film.last_update == datetime(2006, 2, 15, 5, 3, 42)
    engine.dispose()


def test_create_database_refuses_odd_names() -> None:
    with pytest.raises(ValueError):
        create_database_if_missing("mysql+pymysql://root@127.0.0.1:3306/x`; DROP DATABASE y")
    assert create_database_if_missing("sqlite:///whatever.db") is False


# --------------------------------------------------------------------------- the demo

def step_row(output: str, label_start: str) -> List[str]:
    """Columns of the demo's step table row whose label starts with ``label_start``."""
    line = next(line for line in output.splitlines() if line.startswith(label_start))
    return re.split(r"\s{2,}", line.strip())


def check_demo_output(output: str) -> None:
    first = step_row(output, "1. top 5")
    assert first[1] == "database" and int(first[2]) >= 1
    second = step_row(output, "2. the same query")
    assert second[1:3] == ["memcached", "0"]
    update = step_row(output, "3. UPDATE film 1")
    assert update[1] == "commit" and re.match(r"[1-9]\d* invalidation", update[4])
    after = step_row(output, "4. top 5 again")
    assert after[1] == "database" and int(after[2]) >= 1
    assert step_row(output, "6. session.get(Film, 1) again")[1:3] == ["memcached", "0"]
    # the new rate shows in the second top-5 column, and not before the update
    ranking = next(line for line in output.splitlines() if line.startswith("1 "))
    assert "ACE GOLDFINGER (4.99)" in ranking and "ACADEMY DINOSAUR (5.99)" in ranking
    assert "Film 1 (ACADEMY DINOSAUR) from the cache: rental_rate 5.99 (was 0.99)" in output
    stats = re.search(r"cache stats: hits=(\d+) misses=(\d+) stores=(\d+) invalidations=(\d+)", output)
    assert stats and int(stats.group(1)) >= 2 and int(stats.group(2)) >= 2 and int(stats.group(4)) >= 1


def test_demo_on_sqlite(memcached: Any) -> None:
    from sqla_memcache.demo.runner import run_demo

    out, err = io.StringIO(), io.StringIO()
    assert run_demo(servers=[memcached.address], out=out, err=err) == 0
    output = out.getvalue()
    assert f"memcached: {memcached.address}\n" in output
    assert "database : sqlite:///" in output
    check_demo_output(output)
    assert "7684 rows into 6 tables" in err.getvalue()


def test_demo_command_line(memcached: Any) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "sqla_memcache", "demo", "--servers", memcached.address],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    check_demo_output(proc.stdout)


def test_demo_starts_a_private_memcached(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqla_memcache.demo.runner import run_demo

    out = io.StringIO()
    assert run_demo(servers=["127.0.0.1:1"], out=out, err=io.StringIO()) == 0
    address = re.search(r"memcached: (\S+) \(started for this demo", out.getvalue())
    assert address, out.getvalue()
    check_demo_output(out.getvalue())
    assert not memcached_process.is_listening(address.group(1))  # stopped at the end


def test_demo_without_memcached_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from sqla_memcache.demo.runner import run_demo

    monkeypatch.setattr(memcached_process, "find_memcached_binary", lambda: None)  # as if not installed
    out, err = io.StringIO(), io.StringIO()
    assert run_demo(servers=["127.0.0.1:1"], out=out, err=err) == 1
    message = err.getvalue()
    assert message.count("\n") == 1 and "apt-get install memcached" in message
    assert out.getvalue() == ""


@pytest.mark.mysql
def test_demo_on_mariadb_twice(memcached: Any, mysql_db: str) -> None:
    from sqla_memcache.demo.runner import run_demo

    for run in range(2):  # the first run creates and loads, the second finds the data as it left it
        out, err = io.StringIO(), io.StringIO()
        assert run_demo(db_url=mysql_db, servers=[memcached.address], out=out, err=err) == 0
        check_demo_output(out.getvalue())
        assert ("created database" in err.getvalue()) == (run == 0)


@pytest.mark.parametrize("url, package", [
    ("mysql+pymysql://root@127.0.0.1:3306/sakila", "PyMySQL"),
    ("postgresql+psycopg2://postgres@127.0.0.1:5432/sakila", "psycopg2-binary"),
])
def test_demo_without_the_database_driver_says_what_to_install(memcached: Any, url: str, package: str) -> None:
    module = url.split("+", 1)[1].split(":", 1)[0]
    # the driver made unimportable for this process only, as if not installed
    code = (f"import sys; sys.modules[{module!r}] = None\n"
            f"from sqla_memcache.cli import main\n"
            f"sys.exit(main(['demo', '--servers', {memcached.address!r}, '--db', {url!r}]))\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("sqla-memcache demo: ") and f"pip install {package}" in lines[0], lines[0]


def test_demo_with_an_unknown_database_backend_is_one_line(memcached: Any) -> None:
    from sqla_memcache.demo.runner import run_demo

    err = io.StringIO()
    assert run_demo(db_url="nosuchdb://x/y", servers=[memcached.address], out=io.StringIO(), err=err) == 1
    assert err.getvalue().count("\n") == 1 and "nosuchdb" in err.getvalue()


@pytest.mark.parametrize("step", ["top5", "get_film", "report"])
def test_an_interrupted_demo_restores_film_1(memcached: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             step: str) -> None:
    from sqla_memcache.cli import main
    from sqla_memcache.demo import runner

    url = f"sqlite:///{tmp_path}/sakila.db"
    calls = {"top5": 0}
    original_top5 = runner.Demo.top5

    def interrupt(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt

    def top5_then_interrupt(self: Any, label: str) -> Any:
        calls["top5"] += 1
        if calls["top5"] == 3:  # the query after the UPDATE
            raise KeyboardInterrupt
        return original_top5(self, label)

    monkeypatch.setattr(runner.Demo, step, top5_then_interrupt if step == "top5" else interrupt)
    assert main(["demo", "--servers", memcached.address, "--db", url], out=io.StringIO()) == 130
    engine = create_engine(url)
    with engine.connect() as connection:
        rate = connection.execute(select(Film.rental_rate).where(Film.film_id == 1)).scalar_one()
    engine.dispose()
    assert rate == Decimal("0.99")
