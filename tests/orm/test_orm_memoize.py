"""``@cache.memoize(tables=...)``: results cached by arguments, invalidated by commits to those tables."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select, text, update

from orm_models import Actor, Film


def test_memoized_result_is_cached_by_arguments_and_invalidated_by_commits(Session, cache, sql):
    calls = []

    @cache.memoize(tables=[Film], expire=60)
    def count_rated(rating: str) -> int:
        calls.append(rating)
        with Session() as s:
            return s.scalar(select(func.count()).select_from(Film).where(Film.rating == rating))

    first = count_rated("PG")
    assert count_rated("PG") == first and calls == ["PG"]  # a hit: the function did not run
    with Session() as s:
        rated_r = s.scalar(select(func.count()).select_from(Film).where(Film.rating == "R"))
    assert count_rated("R") == rated_r and calls == ["PG", "R"]  # other arguments: another entry
    with Session() as s:  # a commit to the table invalidates, whatever path it takes
        s.execute(text("UPDATE t_film SET rating = 'PG' WHERE film_id = 1"))
        s.commit()
    with Session() as s:
        want = s.scalar(select(func.count()).select_from(Film).where(Film.rating == "PG"))
    assert count_rated("PG") == want and calls == ["PG", "R", "PG"]
    hits = cache.stats.hits
    with Session() as s:  # other tables leave it alone
        s.get(Actor, 1).name = "Renamed"
        s.commit()
    assert count_rated("PG") == want and cache.stats.hits == hits + 1
    count_rated.invalidate()
    assert count_rated("PG") == want and calls[-1] == "PG" and len(calls) == 4


def test_unstable_arguments_and_bad_tables(cache):
    runs = []

    @cache.memoize(tables=["t_film"])
    def f(arg):
        runs.append(arg)
        return 1

    f(object()), f(object())
    assert len(runs) == 2 and cache.stats.miss_reasons["uncacheable"] == 2
    with pytest.raises(ValueError):
        cache.memoize(tables=[])
    with pytest.raises(TypeError):
        cache.memoize(tables=[42])


def test_a_commit_while_the_function_runs_leaves_no_stale_result(Session, cache):
    """The counters are read before the function runs: a write committed meanwhile wins."""
    racing = [True]

    @cache.memoize(tables=[Film])
    def title(film_id):
        with Session() as s:
            found = s.get(Film, film_id).title
        if racing.pop() if racing else False:
            with Session() as s:  # another writer commits after our read, before we store
                s.execute(update(Film).where(Film.film_id == film_id).values(title="Newer"))
                s.commit()
        return found

    assert title(1) == "Film 01"  # computed from the row before the racing commit
    hits = cache.stats.hits
    assert title(1) == "Newer"  # not the old result: its tag predates the commit
    assert cache.stats.hits == hits
