"""What textual SQL writes, read from its text (the write capture's fallback for ``text()``)."""
from __future__ import annotations

import pytest

from sqla_memcache.memo import Memo
from sqla_memcache.orm.sqltext import READ, UNKNOWN, TextWrite, classify, split_name


@pytest.mark.parametrize("sql", [
    "SELECT 1", "  select * from t_film where title = 'UPDATE x SET'", "(SELECT 1) UNION (SELECT 2)",
    "SHOW TABLES", "EXPLAIN SELECT 1", "SET NAMES utf8mb4", "SAVEPOINT sa_1", "RELEASE SAVEPOINT sa_1",
    "ROLLBACK TO SAVEPOINT sa_1", "PRAGMA foreign_keys=ON", "WITH x AS (SELECT 1) SELECT * FROM x", "",
    "BEGIN", "COMMIT",
])
def test_reads_and_control_statements_write_nothing(sql):
    assert classify(sql) is READ


@pytest.mark.parametrize("sql, tables, insert_only", [
    ("UPDATE t_film SET title = 'x'", {"t_film"}, False),
    ("update `sakila`.`film` f set x = 1 where y = 2", {"sakila.film"}, False),
    ('/* hint */ UPDATE "Film" AS f SET a = 1', {"film"}, False),
    ("-- c\nUPDATE ONLY public.t SET a = 1", {"public.t"}, False),
    ("INSERT INTO t_film VALUES (1)", {"t_film"}, True),
    ("INSERT IGNORE INTO t_film VALUES (1)", {"t_film"}, True),
    ("insert or replace into t_film values (1)", {"t_film"}, False),
    ("INSERT INTO t (a) VALUES (1) ON DUPLICATE KEY UPDATE a = 1", {"t"}, False),
    ("INSERT INTO t (a) VALUES (1) ON CONFLICT (a) DO UPDATE SET a = 2", {"t"}, False),
    ("REPLACE INTO t VALUES (1)", {"t"}, False),
    ("DELETE FROM t_film WHERE film_id = 1", {"t_film"}, False),
    ("DELETE FROM t_film", {"t_film"}, False),
    ("DELETE FROM t USING u WHERE t.a = u.a", {"t"}, False),
    ("MERGE INTO t USING u ON t.a = u.a WHEN MATCHED THEN DELETE", {"t"}, False),
    ("TRUNCATE TABLE t_film, t_actor", {"t_film", "t_actor"}, False),
    ("UPDATE t SET title = 'a;b'", {"t"}, False),
    ("EXPLAIN ANALYZE DELETE FROM t", {"t"}, False),
])
def test_writes_name_their_targets(sql, tables, insert_only):
    assert classify(sql) == TextWrite(frozenset(tables), insert_only)


@pytest.mark.parametrize("sql", [
    "UPDATE a SET x = 1; UPDATE b SET y = 2", "DELETE t1 FROM t1 JOIN t2 ON t1.a = t2.a",
    "DELETE FROM t1, t2 USING t1 JOIN t2", "UPDATE t1 JOIN t2 ON t1.a = t2.a SET t1.b = 1", "UPDATE t1, t2 SET a = 1",
    "WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT * FROM x", "SELECT * INTO t2 FROM t", "CREATE TABLE t (a int)",
    "DROP TABLE t", "ALTER TABLE t ADD b int", "CALL refresh()", "DO $$ BEGIN END $$", "COPY t FROM STDIN",
    "LOAD DATA INFILE 'x' INTO TABLE t", "TRUNCATE t CASCADE", "# mysql comment\nUPDATE t SET a = 1", "VACUUM",
    "SHOW TABLES; DELETE FROM t",
])
def test_unknown_targets_invalidate_everything(sql):
    assert classify(sql) == UNKNOWN


@pytest.mark.parametrize("sql", [
    "PRAGMA journal_mode = DELETE",  # PRAGMA and SET change no rows, whatever words follow
    "SET @update = 1",
])
def test_pragma_and_set_write_nothing_even_naming_a_dml_word(sql):
    assert classify(sql) is READ


@pytest.mark.parametrize("sql", [
    "PREPARE p AS UPDATE film SET title = 1",  # other control statements naming one may write
    "SHOW TABLES WHERE DELETE",
])
def test_control_statements_naming_a_dml_word_are_unknown(sql):
    assert classify(sql) == UNKNOWN


def test_split_name():
    assert split_name("sakila.film") == ("sakila", "film")
    assert split_name("film") == (None, "film")


def test_memo_evicts_the_least_recently_used():
    memo: Memo[str, int] = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == 1  # a is now the most recent
    memo.put("c", 3)
    assert "b" not in memo and memo.get("a") == 1 and memo.get("c") == 3 and len(memo) == 2
    assert memo.get_or_make("d", lambda: 4) == 4 and memo.get_or_make("d", lambda: 5) == 4
    with pytest.raises(ValueError):
        Memo(0)
