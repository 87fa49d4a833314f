"""Flask-SQLAlchemy recipe: cache queries made through ``db.session``, invalidated on commit.

Run: ``python -m examples.flask_sqlalchemy_recipe [--servers HOST:PORT]``
(needs ``pip install flask-sqlalchemy``; it is in the ``test`` extra).

The whole integration is two lines after ``db = SQLAlchemy(...)``::

    cache = ORMCache(Client(app.config["MEMCACHED_SERVERS"]), namespace="myapp", expire=300)
    cache.listen_on_session(db.session)   # db.session is a scoped_session

Then any query made with ``db.session`` can take ``.options(FromCache())``, and
every commit through ``db.session`` invalidates what it changed. The recipe runs
a small app on SQLite in a temporary directory and calls it with Flask's test
client; each line says whether the database was asked (SQL statements counted
with engine events).
"""
from __future__ import annotations

import sys
import tempfile
import uuid
from decimal import Decimal
from typing import Any, Dict, List, Optional, Sequence

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Numeric, String, event, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_memcache import Client, FromCache, ORMCache

from ._common import main_for


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)


class Film(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "film"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(100))
    rental_rate: Mapped[Decimal] = mapped_column(Numeric(4, 2))


def create_app(database_url: str, servers: List[str]) -> Flask:
    """The application factory, with the cache wired to ``db.session``."""
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = database_url
    app.config["MEMCACHED_SERVERS"] = servers
    db.init_app(app)

    cache = ORMCache(Client(app.config["MEMCACHED_SERVERS"]), namespace=f"flask_{uuid.uuid4().hex[:8]}",
                     expire=300)
    cache.listen_on_session(db.session)
    app.extensions["sqla_memcache"] = cache

    @app.get("/films/top")
    def top_films() -> Any:
        films = db.session.scalars(
            select(Film).order_by(Film.rental_rate.desc(), Film.title).limit(3).options(FromCache(expire=60))
        ).all()
        return jsonify([{"title": f.title, "rental_rate": str(f.rental_rate)} for f in films])

    @app.post("/films/<int:film_id>/rate")
    def set_rate(film_id: int) -> Any:
        film = db.get_or_404(Film, film_id)
        film.rental_rate = Decimal(request.get_json()["rental_rate"])
        db.session.commit()  # the cache invalidates the film's table here
        return jsonify({"id": film.id, "rental_rate": str(film.rental_rate)})

    return app


def recipe(servers: List[str]) -> None:
    with tempfile.TemporaryDirectory() as directory:
        app = create_app(f"sqlite:///{directory}/films.db", servers)
        statements: Dict[str, int] = {"count": 0}
        with app.app_context():
            db.create_all()
            db.session.add_all([Film(id=1, title="ACADEMY DINOSAUR", rental_rate=Decimal("0.99")),
                                Film(id=2, title="ACE GOLDFINGER", rental_rate=Decimal("4.99")),
                                Film(id=3, title="ADAPTATION HOLES", rental_rate=Decimal("2.99")),
                                Film(id=4, title="AFFAIR PREJUDICE", rental_rate=Decimal("2.99"))])
            db.session.commit()
            event.listen(db.engine, "before_cursor_execute",
                         lambda *args: statements.__setitem__("count", statements["count"] + 1))
        client = app.test_client()

        def call(label: str, method: str, path: str, body: Optional[Dict[str, str]] = None) -> None:
            before = statements["count"]
            response = client.open(path, method=method, json=body)
            sql = statements["count"] - before
            source = ("memcached, 0 SQL" if sql == 0 else f"database, {sql} SQL") if method == "GET" else f"{sql} SQL"
            titles = [f"{f['title']} {f['rental_rate']}" for f in response.get_json()] if method == "GET" else \
                response.get_json()
            print(f"{label:<34} {response.status_code} {titles} [{source}]")

        call("GET /films/top", "GET", "/films/top")
        call("GET /films/top (again)", "GET", "/films/top")
        call("POST /films/1/rate 5.99", "POST", "/films/1/rate", {"rental_rate": "5.99"})
        call("GET /films/top (after the commit)", "GET", "/films/top")
        call("GET /films/top (again)", "GET", "/films/top")
        stats = app.extensions["sqla_memcache"].stats
        print(f"cache stats: hits={stats.hits} misses={stats.misses} stores={stats.stores} "
              f"invalidations={stats.invalidations}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    return main_for(recipe, "Flask-SQLAlchemy: FromCache on db.session, invalidated on commit", argv)


if __name__ == "__main__":
    sys.exit(main())
