"""The two memo tables: a bounded LRU, and a weakly keyed one that forgets discarded objects."""
from __future__ import annotations

import gc
from typing import List

import pytest
from sqlalchemy import inspect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_memcache.memo import Memo, WeakMemo


def test_memo_evicts_the_least_recently_used() -> None:
    memo: Memo[str, int] = Memo(2)
    memo.put("a", 1)
    memo.put("b", 2)
    assert memo.get("a") == 1  # "a" is now the most recent
    memo.put("c", 3)
    assert "b" not in memo and memo.get("a") == 1 and memo.get("c") == 3 and len(memo) == 2
    assert memo.get_or_make("d", lambda: 4) == 4 and memo.get_or_make("d", lambda: 5) == 4
    with pytest.raises(ValueError):
        Memo(0)


class Thing:
    pass


def test_weak_memo_computes_once_per_live_object_and_forgets_dead_ones() -> None:
    memo: WeakMemo[List[int]] = WeakMemo()
    made: List[int] = []

    def make() -> List[int]:
        made.append(1)
        return [len(made)]

    one, two = Thing(), Thing()
    first = memo.get_or_make(one, make)
    assert memo.get_or_make(one, make) is first and memo.get_or_make(two, make) is not first
    assert len(made) == 2 and len(memo) == 2
    del one
    gc.collect()
    assert len(memo) == 1  # the dead object's entry is gone (its id may be reused)
    assert memo.get_or_make(3, make) == [3] and memo.get_or_make(3, make) == [4]  # ints: not remembered


def test_a_discarded_mapper_is_not_kept_alive_by_the_orm_memos() -> None:
    """rows.py and plans.py remember per-mapper facts in WeakMemos: a mapped class that goes
    away (e.g. a test's throwaway models) is collected."""
    import weakref

    from sqla_memcache.orm import plans, rows

    class Base(DeclarativeBase):
        pass

    class Throwaway(Base):
        __tablename__ = "throwaway"
        id: Mapped[int] = mapped_column(primary_key=True)
        name: Mapped[str]

    mapper = inspect(Throwaway)
    assert rows._attribute_keys(mapper)[0] == ("id", "name")
    assert plans._hierarchy_tables(mapper) == frozenset({"throwaway"})
    plans._get_tables(mapper).put("options", (frozenset(), frozenset()))
    gone = weakref.ref(mapper)
    sizes = len(rows._MAPPERS), len(plans._HIERARCHY), len(plans._GET_TABLES)
    registry = Base.registry
    del mapper, Throwaway, Base
    registry.dispose()
    del registry
    gc.collect()
    assert gone() is None
    assert (len(rows._MAPPERS), len(plans._HIERARCHY), len(plans._GET_TABLES)) == tuple(n - 1 for n in sizes)
