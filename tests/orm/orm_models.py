"""Small test schema: films, actors (many-to-many), languages, and a composite-key model."""
from __future__ import annotations

from decimal import Decimal
from typing import List, Optional

from sqlalchemy import Column, ForeignKey, Integer, Numeric, String, Table
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

from sqla_memcache.orm.mixin import MemcachedORMObject


class Base(DeclarativeBase):
    pass


film_actor = Table(
    "t_film_actor",
    Base.metadata,
    Column("film_id", ForeignKey("t_film.film_id", ondelete="CASCADE"), primary_key=True),
    Column("actor_id", ForeignKey("t_actor.actor_id", ondelete="CASCADE"), primary_key=True),
)


class Language(MemcachedORMObject, Base):
    __tablename__ = "t_language"
    language_id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(20))
    films: Mapped[List["Film"]] = relationship(back_populates="language", order_by="Film.film_id")


class Film(MemcachedORMObject, Base):
    __tablename__ = "t_film"
    film_id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    rating: Mapped[str] = mapped_column(String(5))
    rental_rate: Mapped[Decimal] = mapped_column(Numeric(4, 2))
    language_id: Mapped[Optional[int]] = mapped_column(ForeignKey("t_language.language_id"))
    language: Mapped[Optional[Language]] = relationship(back_populates="films")
    actors: Mapped[List["Actor"]] = relationship(
        secondary=film_actor, back_populates="films", order_by="Actor.actor_id"
    )


actor_language = Table(
    "t_actor_language",
    Base.metadata,
    Column("actor_id", ForeignKey("t_actor.actor_id", ondelete="CASCADE"), primary_key=True),
    Column("language_id", ForeignKey("t_language.language_id", ondelete="CASCADE"), primary_key=True),
)


class Actor(Base):
    __tablename__ = "t_actor"
    actor_id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    films: Mapped[List[Film]] = relationship(
        secondary=film_actor, back_populates="actors", order_by=Film.film_id
    )
    # one-directional many-to-many: only the association table changes when it does
    languages: Mapped[List[Language]] = relationship(secondary=actor_language, order_by=Language.language_id)


class StoreFilm(MemcachedORMObject, Base):
    """Composite primary key: copies of a film in a store."""

    __tablename__ = "t_store_film"
    store_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # no relationship: only the database knows to delete these rows with their film
    film_id: Mapped[int] = mapped_column(
        ForeignKey("t_film.film_id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    copies: Mapped[int] = mapped_column(Integer)


class Person(MemcachedORMObject, Base):
    """Joined-table inheritance: a staff member's row is split over t_person and t_staff."""

    __tablename__ = "t_person"
    person_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(100))
    kind: Mapped[str] = mapped_column(String(20))
    __mapper_args__ = {"polymorphic_on": "kind", "polymorphic_identity": "person"}


class Staff(Person):
    __tablename__ = "t_staff"
    person_id: Mapped[int] = mapped_column(ForeignKey("t_person.person_id", ondelete="CASCADE"), primary_key=True)
    salary: Mapped[int] = mapped_column(Integer)
    __mapper_args__ = {"polymorphic_identity": "staff"}


RATINGS = ["G", "PG", "PG-13", "R", "NC-17"]


def seed(session) -> None:
    """Insert a fixed data set: 3 languages, 12 films, 6 actors, links and store copies."""
    languages = [Language(language_id=i, name=n) for i, n in enumerate(["English", "Français", "日本語"], 1)]
    actors = [Actor(actor_id=i, name="Actor %d" % i) for i in range(1, 7)]
    films = []
    for i in range(1, 13):
        film = Film(
            film_id=i,
            title="Film %02d" % i,
            rating=RATINGS[i % len(RATINGS)],
            rental_rate=Decimal("0.99") + Decimal(i % 4),
            language=languages[i % 3],
        )
        film.actors = [actors[(i + k) % 6] for k in range(i % 3 + 1)]
        films.append(film)
    session.add_all(languages + actors + films)
    session.flush()  # no relationship orders StoreFilm after Film
    session.add_all(StoreFilm(store_id=s, film_id=f, copies=s + f) for s in (1, 2) for f in range(1, 5))
    session.add_all([Person(person_id=1, name="Visitor"), Staff(person_id=2, name="Clerk", salary=100),
                     Staff(person_id=3, name="Manager", salary=300)])
    session.commit()
