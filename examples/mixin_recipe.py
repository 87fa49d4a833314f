"""The ``MemcachedORMObject`` mixin recipe: objects cached by primary key and by field.

Run: ``python -m examples.mixin_recipe [--servers HOST:PORT]``

Mix :class:`~sqla_memcache.orm.MemcachedORMObject` into a mapped class and let
an :class:`~sqla_memcache.orm.ORMCache` listen on your sessionmaker; lookups go
to memcached first and to the database on a miss, and every commit that
changes a row makes its cached copy unreachable. Runs on SQLite in a temporary
directory; each line says whether the database was asked (SQL statements
counted with engine events).
"""
from __future__ import annotations

import sys
import tempfile
import uuid
from typing import Any, Callable, List, Optional, Sequence

from sqlalchemy import String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from sqla_memcache.client import Client
from sqla_memcache.demo.runner import StatementCounter
from sqla_memcache.orm import MemcachedORMObject, ORMCache

from ._common import main_for


class Base(DeclarativeBase):
    pass


class User(MemcachedORMObject, Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(80))
    email: Mapped[str] = mapped_column(String(120), unique=True)

    def __repr__(self) -> str:
        return f"User({self.id}, {self.name!r})"


def recipe(servers: List[str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        engine = create_engine(f"sqlite:///{directory}/users.db")
        Base.metadata.create_all(engine)
        sql = StatementCounter(engine)

        Session = sessionmaker(engine)
        cache = ORMCache(Client(servers), namespace=f"recipe_{uuid.uuid4().hex[:8]}", expire=300)
        cache.listen_on_session(Session)  # also the mixin's default cache and session factory

        with Session() as session:
            session.add_all([User(id=1, name="Ada Lovelace", email="ada@example.org"),
                             User(id=2, name="Grace Hopper", email="grace@example.org")])
            session.commit()

        def show(label: str, call: Callable[[], Any], read: bool = True) -> Any:
            before = sql.count
            result = call()
            statements = sql.count - before
            if read:
                source = "memcached, 0 SQL" if statements == 0 else f"database, {statements} SQL"
            else:
                source = f"{statements} SQL"
            print(f"{label:<46} -> {result!r:<28} [{source}]")
            return result

        ada = show('User.get_cached_instance("(1)")', lambda: User.get_cached_instance("(1)"))
        show('User.get_cached_instance("(1)")', lambda: User.get_cached_instance("(1)"))
        with Session() as session:  # plain session.get() reads the same cache entry
            show("session.get(User, 1)", lambda: session.get(User, 1))
        show('User.fetch_by_field(User.email, "grace@...")',
             lambda: User.fetch_by_field(User.email, "grace@example.org"))
        show('User.fetch_by_field(User.email, "grace@...")',
             lambda: User.fetch_by_field(User.email, "grace@example.org"))

        print(f"ada.get_cache_key() = {ada.get_cache_key()!r}")
        ada.name = "Ada King"
        show('ada.name = "Ada King"; ada.update()  (commit)', ada.update, read=False)
        show('User.get_cached_instance("(1)")', lambda: User.get_cached_instance("(1)"))
        show('User.get_cached_instance("(1)")', lambda: User.get_cached_instance("(1)"))
        show("ada.delete_cached_instance()", ada.delete_cached_instance, read=False)
        show('User.get_cached_instance("(1)")', lambda: User.get_cached_instance("(1)"))
        print("cache stats: " + ", ".join(f"{k}={v}" for k, v in cache.stats.as_dict().items()))
        engine.dispose()


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for(recipe, "The MemcachedORMObject mixin recipe on SQLite.", argv)


if __name__ == "__main__":
    sys.exit(main())
