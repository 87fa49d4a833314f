"""``orm/tables.py``: which tables a statement, a mapper or loaded objects depend on (no server)."""
from __future__ import annotations

from typing import Iterator, List, Optional

import pytest
import sqlalchemy as sa
from sqlalchemy import ForeignKey, func, select, text
from sqlalchemy.orm import (DeclarativeBase, Mapped, Session, column_property, mapped_column, relationship,
                            selectinload)

from sqla_memcache.orm import tables


class Base(DeclarativeBase):
    pass


tag_link = sa.Table(
    "tt_book_tag", Base.metadata,
    sa.Column("book_id", ForeignKey("tt_book.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("tag_id", ForeignKey("tt_tag.id"), primary_key=True),
)


class Author(Base):
    __tablename__ = "tt_author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[List["Book"]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "tt_book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("tt_author.id", ondelete="CASCADE"))
    author: Mapped[Author] = relationship(back_populates="books")
    tags: Mapped[List["Tag"]] = relationship(secondary=tag_link)


class Tag(Base):
    __tablename__ = "tt_tag"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str]


class Review(Base):
    __tablename__ = "tt_review"
    __table_args__ = {"schema": "Shop"}
    id: Mapped[int] = mapped_column(primary_key=True)
    book_id: Mapped[Optional[int]] = mapped_column(ForeignKey("tt_book.id", ondelete="SET NULL"))


class Person(Base):
    __tablename__ = "tt_person"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str]
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "person"}


class Staff(Person):
    __tablename__ = "tt_staff"
    id: Mapped[int] = mapped_column(ForeignKey("tt_person.id"), primary_key=True)
    __mapper_args__ = {"polymorphic_identity": "staff"}


Author.book_count = column_property(
    select(func.count(Book.id)).where(Book.author_id == Author.id).correlate_except(Book).scalar_subquery())


def test_table_names_are_schema_qualified() -> None:
    assert tables.table_name(Book.__table__) == "tt_book"
    assert tables.table_name(Review.__table__) == "Shop.tt_review"
    assert tables.table_name(sa.table("loose")) == "loose"


def test_qualify_folds_case_and_applies_the_schema_translation() -> None:
    assert tables.qualify("Shop.TT_Review") == "shop.tt_review"
    assert tables.qualify("Shop.tt_review", {"Shop": "tenant1"}) == "tenant1.tt_review"
    assert tables.qualify("tt_book", {None: "tenant2"}) == "tenant2.tt_book"
    assert tables.qualify("tt_book") == "tt_book"


def test_compiled_tables_of_joins_subqueries_ctes_and_text() -> None:
    stmt = select(Author.name).join(Book).where(Book.id.in_(select(tag_link.c.book_id)))
    assert tables.compiled_tables(stmt) == {"tt_author", "tt_book", "tt_book_tag"}
    cte = select(Tag.id).cte("t")
    assert tables.compiled_tables(select(cte.c.id)) == {"tt_tag"}
    assert tables.compiled_tables(select(Review)) == {"Shop.tt_review"}
    assert tables.compiled_tables(text("SELECT * FROM tt_book")) == frozenset()


def test_mapper_tables_own_tables_and_closure() -> None:
    author = sa.inspect(Author)
    assert tables.own_tables(author) == {"tt_author"}
    assert tables.mapper_tables(author) == {"tt_author", "tt_book"}  # the column property reads tt_book
    assert tables.own_tables(sa.inspect(Staff)) == {"tt_person", "tt_staff"}
    # through relationships, the secondary table included; a base reaches its subclasses' tables
    assert tables.mapper_closure(author) >= {"tt_author", "tt_book", "tt_book_tag", "tt_tag"}
    assert "tt_staff" in tables.mapper_closure(sa.inspect(Person))
    assert tables.mapper_closure(author) is tables.mapper_closure(author)  # remembered
    assert tables.relationship_tables(Book.tags.property) == {"tt_book_tag", "tt_tag"}


def test_dependents_follow_declared_cascades_transitively() -> None:
    found = {t.name for t in tables.dependents([Author.__table__])}
    assert found == {"tt_book", "tt_book_tag", "tt_review"}  # book cascades, and from book: links, reviews
    assert tables.dependents([Tag.__table__]) == []  # tt_book_tag.tag_id has no ON DELETE action
    assert tables.dependents([Author.__table__], how="onupdate") == []


@pytest.fixture
def session() -> Iterator[Session]:
    engine = sa.create_engine("sqlite://")
    with engine.begin() as conn:
        conn.exec_driver_sql("ATTACH DATABASE ':memory:' AS Shop")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Author(id=1, name="Ada", books=[Book(id=1, title="Notes", tags=[Tag(id=1, label="math")])]))
        s.commit()
    with Session(engine) as s:
        yield s
    engine.dispose()


def test_loaded_tables_follow_what_the_objects_carry(session: Session) -> None:
    plain = session.scalars(select(Book)).all()
    assert tables.loaded_tables(plain) == {"tt_book"}
    assert tables.loaded_tables(plain, include_roots=False) == frozenset()
    session.expunge_all()
    eager = session.scalars(select(Book).options(selectinload(Book.tags), selectinload(Book.author))).all()
    assert tables.loaded_tables(eager) == {"tt_book", "tt_book_tag", "tt_tag", "tt_author"}
    assert tables.loaded_tables([("not an object", 3)]) == frozenset()


def test_entity_mappers_and_read_superset() -> None:
    stmt = select(Book.title, Author).join(Book.author)
    assert set(tables.entity_mappers(stmt)) == {sa.inspect(Book), sa.inspect(Author)}
    superset = tables.read_superset(stmt, tables.entity_mappers(stmt))
    assert superset >= {"tt_book", "tt_author", "tt_tag", "tt_book_tag"}


def test_statement_tables_are_memoised_by_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = tables.compiled_tables
    monkeypatch.setattr(tables, "compiled_tables", lambda stmt: calls.append(stmt) or real(stmt))
    one = tables.statement_tables("shape-x", select(Book).where(Book.id == 1), lambda: [sa.inspect(Book)])
    first = len(calls)
    two = tables.statement_tables("shape-x", select(Book).where(Book.id == 2), lambda: [sa.inspect(Book)])
    assert one is two and first > 0 and len(calls) == first  # the same shape: not compiled again
    tables.statement_tables(None, select(Book), lambda: [])  # no shape: computed every time
    tables.statement_tables(None, select(Book), lambda: [])
    assert len(calls) == 3 * first
