"""``orm/rows.py``: entry payloads of plain objects, and merging them back as loading does (no server)."""
from __future__ import annotations

import pickle
from typing import Iterator, List

import pytest
import sqlalchemy as sa
from sqlalchemy import ForeignKey, event, select
from sqlalchemy.engine import FrozenResult
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload

from sqla_memcache.orm import rows, safepickle


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "rt_author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[List["Book"]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "rt_book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("rt_author.id"))
    author: Mapped[Author] = relationship(back_populates="books")


@pytest.fixture
def engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add_all([Author(id=1, name="Ada", books=[Book(id=1, title="Notes"), Book(id=2, title="Letters")]),
                   Author(id=2, name="Bea")])
        s.commit()
    yield engine
    engine.dispose()


def stored(engine: sa.Engine, stmt: sa.Select) -> object:
    """What the cache stores for ``stmt``: encoded, pickled, decoded by the allow-listed unpickler."""
    with Session(engine) as s:
        payload = rows.encode(s.execute(stmt).freeze())
    return safepickle.loads(pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))


def test_plain_objects_round_trip_as_rows_attached_like_loaded_objects(engine: sa.Engine) -> None:
    stmt = select(Book).order_by(Book.id)
    payload = stored(engine, stmt)
    assert isinstance(payload, rows.Rows) and len(payload.objects) == 2
    with Session(engine) as s:
        got = rows.merge(s, stmt, payload).scalars().all()
        assert [(b.id, b.title, b.author_id) for b in got] == [(1, "Notes", 1), (2, "Letters", 1)]
        assert all(b in s for b in got) and not s.dirty and not s.new
        assert not s.in_transaction()  # attached as loading does: no transaction begun
        assert all(not sa.inspect(b).modified and sa.inspect(b).persistent for b in got)
        assert s.get(Book, 1) is got[0]  # in the identity map


def test_rows_with_entities_and_columns(engine: sa.Engine) -> None:
    stmt = select(Book, Book.title, Author).join(Book.author).order_by(Book.id)
    payload = stored(engine, stmt)
    with Session(engine) as s:
        got = rows.merge(s, stmt, payload).all()
        assert [(b.id, title, a.id) for b, title, a in got] == [(1, "Notes", 1), (2, "Letters", 1)]
        assert got[0][2] is got[1][2]  # one identity repeated in the rows: one object


def test_an_object_already_in_the_session_is_overwritten_as_session_merge_does(engine: sa.Engine) -> None:
    stmt = select(Author).where(Author.id == 1)
    payload = stored(engine, stmt)
    with Session(engine) as s:
        mine = s.get(Author, 1)
        mine.name = "unsaved edit"
        got = rows.merge(s, stmt, payload).scalars().one()
        assert got is mine and mine.name == "Ada"  # merge(load=False) copies the entry's state


def test_objects_carrying_relationships_or_options_are_stored_as_frozen_results(engine: sa.Engine) -> None:
    with Session(engine) as s:
        eager = rows.encode(s.execute(select(Author).options(selectinload(Author.books))).freeze())
    assert isinstance(eager, FrozenResult)
    with Session(engine) as s:
        author = s.get(Author, 1)
        author.name = "dirty"
        with s.no_autoflush:
            dirty = rows.encode(s.execute(select(Author).where(Author.id == 1)).freeze())
    assert isinstance(dirty, FrozenResult)  # a modified object is never flattened


def test_load_events_fire_once_per_object_only_when_listened(engine: sa.Engine) -> None:
    stmt = select(Book).order_by(Book.id)
    payload = stored(engine, stmt)
    seen: List[int] = []

    def on_load(target: Book, context: object) -> None:
        assert not sa.inspect(target).modified  # committed before the listener sees it
        seen.append(target.id)

    event.listen(Book, "load", on_load)
    try:
        with Session(engine) as s:
            rows.merge(s, stmt, payload).scalars().all()
    finally:
        event.remove(Book, "load", on_load)
    assert seen == [1, 2]


def test_an_entry_of_an_older_mapping_expires_the_missing_columns(engine: sa.Engine) -> None:
    stmt = select(Book).where(Book.id == 1)
    payload = stored(engine, stmt)
    spec = payload.objects[0]
    del spec[5]["title"]  # as if stored before the column was mapped
    with Session(engine) as s:
        book = rows.merge(s, stmt, payload).scalars().one()
        assert "title" in sa.inspect(book).expired_attributes or "title" not in sa.inspect(book).dict
        assert book.title == "Notes"  # loaded from the database on access


def test_an_entry_naming_an_unmapped_class_is_refused() -> None:
    with pytest.raises(TypeError, match="not a mapped class"):
        rows._rows(pickle.dumps(None), [None], [(0, 0, int, ("k",), (), {"a": 1})])
