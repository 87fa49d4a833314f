"""Declarative models for the six sakila tables the demo ships.

Column types follow MySQL's sakila schema closely enough for the data to
round-trip on SQLite, MySQL/MariaDB and PostgreSQL: ``YEAR`` becomes an
integer, ``ENUM``/``SET`` become strings, ``TIMESTAMP`` a ``DateTime``.
:class:`Film` is a :class:`~sqla_memcache.orm.MemcachedORMObject`, so
``session.get(Film, 7)`` and ``Film.fetch_by_field(Film.title, ...)`` are
served from memcached once an :class:`~sqla_memcache.orm.ORMCache` listens on
the session.
"""
from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import List, Optional

from sqlalchemy import Column, DateTime, ForeignKey, Integer, Numeric, String, Table, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from ..orm import MemcachedORMObject


def _now() -> datetime:
    """Naive UTC now, as sakila's TIMESTAMP columns hold."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    """Declarative base of the sakila models."""


film_actor = Table(
    "film_actor",
    Base.metadata,
    Column("actor_id", Integer, ForeignKey("actor.actor_id"), primary_key=True),
    Column("film_id", Integer, ForeignKey("film.film_id"), primary_key=True, index=True),
    Column("last_update", DateTime, nullable=False),
)

film_category = Table(
    "film_category",
    Base.metadata,
    Column("film_id", Integer, ForeignKey("film.film_id"), primary_key=True),
    Column("category_id", Integer, ForeignKey("category.category_id"), primary_key=True),
    Column("last_update", DateTime, nullable=False),
)


class Language(Base):
    __tablename__ = "language"

    language_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
    last_update: Mapped[datetime] = mapped_column(DateTime)

    def __repr__(self) -> str:
        return f"Language({self.language_id}, {self.name!r})"


class Category(Base):
    __tablename__ = "category"

    category_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(25))
    last_update: Mapped[datetime] = mapped_column(DateTime)

    def __repr__(self) -> str:
        return f"Category({self.category_id}, {self.name!r})"


class Actor(Base):
    __tablename__ = "actor"

    actor_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    first_name: Mapped[str] = mapped_column(String(45))
    last_name: Mapped[str] = mapped_column(String(45), index=True)
    last_update: Mapped[datetime] = mapped_column(DateTime)

    films: Mapped[List["Film"]] = relationship(secondary=film_actor, back_populates="actors")

    def __repr__(self) -> str:
        return f"Actor({self.actor_id}, {self.first_name!r}, {self.last_name!r})"


class Film(MemcachedORMObject, Base):
    __tablename__ = "film"

    film_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(128), index=True)
    description: Mapped[Optional[str]] = mapped_column(Text)
    release_year: Mapped[Optional[int]] = mapped_column(Integer)
    language_id: Mapped[int] = mapped_column(ForeignKey("language.language_id"))
    original_language_id: Mapped[Optional[int]] = mapped_column(ForeignKey("language.language_id"))
    rental_duration: Mapped[int] = mapped_column(Integer, default=3)
    rental_rate: Mapped[Decimal] = mapped_column(Numeric(4, 2), default=Decimal("4.99"), index=True)
    length: Mapped[Optional[int]] = mapped_column(Integer)
    replacement_cost: Mapped[Decimal] = mapped_column(Numeric(5, 2), default=Decimal("19.99"))
    rating: Mapped[Optional[str]] = mapped_column(String(5), default="G")
    last_update: Mapped[datetime] = mapped_column(DateTime, default=_now, onupdate=_now)
    special_features: Mapped[Optional[str]] = mapped_column(String(64))

    language: Mapped[Language] = relationship(foreign_keys=[language_id])
    original_language: Mapped[Optional[Language]] = relationship(foreign_keys=[original_language_id])
    actors: Mapped[List[Actor]] = relationship(secondary=film_actor, back_populates="films")
    categories: Mapped[List[Category]] = relationship(secondary=film_category)

    def __repr__(self) -> str:
        return f"Film({self.film_id}, {self.title!r}, rental_rate={self.rental_rate})"


#: Tables in load order (parents before children).
TABLES: List[Table] = [
    Language.__table__, Category.__table__, Actor.__table__, Film.__table__,  # type: ignore[list-item]
    film_actor, film_category,
]
