"""Processes for the race tests (imported by spawned children, so it holds no test code)."""
from __future__ import annotations



TIMEOUT = 60


def _cache(servers, namespace, cls=None):
    from sqla_memcache.client import Client
    from sqla_memcache.orm.cache import ORMCache

    return (cls or ORMCache)(Client(servers, socket_timeout=5), namespace=namespace)


def read_statement(kind: str):
    from sqlalchemy import select

    from orm_models import Film
    from sqla_memcache.orm.options import FromCache

    if kind == "query":
        return lambda s: s.scalars(select(Film.title).where(Film.film_id == 1).options(FromCache())).one()
    return lambda s: s.get(Film, 1).title


def reader(db_url: str, servers, namespace: str, kind: str, read_done, write_done, out) -> None:
    """Read film 1 through the cache, pausing right after the database read until the writer committed."""
    import sqlalchemy as sa
    from sqlalchemy.orm import sessionmaker

    engine = sa.create_engine(db_url)

    def pause_after_select(conn, cursor, statement, parameters, context, executemany) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "t_film" in statement and not read_done.is_set():
            read_done.set()
            if not write_done.wait(TIMEOUT):
                raise RuntimeError("writer never committed")

    sa.event.listen(engine, "after_cursor_execute", pause_after_select)
    cache = _cache(servers, namespace)
    factory = sessionmaker(engine)
    cache.listen_on_session(factory)
    with factory() as session:
        title = read_statement(kind)(session)
    out.put({"title": title, **cache.stats.as_dict()})
    engine.dispose()


def writer(db_url: str, servers, namespace: str, read_done, write_done, out) -> None:
    """After the reader's database read, rename film 1 and commit through a listening session."""
    import sqlalchemy as sa
    from sqlalchemy.orm import sessionmaker

    from orm_models import Film

    engine = sa.create_engine(db_url)
    cache = _cache(servers, namespace)
    factory = sessionmaker(engine)
    cache.listen_on_session(factory)
    if not read_done.wait(TIMEOUT):
        raise RuntimeError("reader never read")
    with factory() as session:
        session.execute(sa.update(Film).where(Film.film_id == 1).values(title="Raced"))
        session.commit()
    write_done.set()
    out.put(cache.stats.as_dict())
    engine.dispose()

