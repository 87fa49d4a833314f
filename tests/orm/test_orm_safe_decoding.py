"""Planted pickles on every key the ORM cache reads: nothing runs, every read answers from the database.

Someone who can write to memcached plants values whose ``__reduce__`` runs
code (``os.system`` writing a marker file, ``exec``, a function of an
imported module setting a flag) on every key a warm cache reads: query and
object entries, the result template inside a ``Rows`` payload, lease keys,
version keys, the epoch and the generation. The rows are renamed behind the
cache's back first, so a read answered from anything but the database shows.
"""
from __future__ import annotations

import builtins
import os
import pickle
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, List, Set

import pytest
import sqlalchemy as sa
from sqlalchemy import select
from sqlalchemy.orm import selectinload, sessionmaker

from orm_models import Film, Language
from sqla_memcache import Client
from sqla_memcache.orm import FromCache, ORMCache
from sqla_memcache.orm import keys as orm_keys
from sqla_memcache.orm import rows as orm_rows
from sqla_memcache.orm import stampede

RAN: List[str] = []


def mark(path: str) -> None:
    """What a planted payload calls when it is unpickled: a flag here and a file on disk."""
    RAN.append(path)
    Path(path).write_text("ran")


class SystemCall:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return os.system, ("echo ran > %s" % self.marker,)


class Exec:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return builtins.exec, ("open(%r, 'w').write('ran')" % self.marker,)


class ModuleFunction:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> Any:
        return mark, (self.marker,)


class EvilTemplate:
    """Unpickles as ``rows._rows(blob, [], [])``: a ``Rows`` payload whose template blob is the evil pickle."""

    def __init__(self, inner: bytes) -> None:
        self.inner = inner

    def __reduce__(self) -> Any:
        return orm_rows._rows, (self.inner, [], [])


EVILS = [SystemCall, Exec, ModuleFunction]


def plants(kind: str, marker: str) -> Callable[[int], Any]:
    """``n -> value`` to plant on the n-th key (the three evil payloads in turn)."""
    def evil(n: int) -> Any:
        return EVILS[n % len(EVILS)]("%s.%d" % (marker, n))

    if kind == "pickle-flag":  # the client's flags say "pickle": the default serde would unpickle it
        return evil
    if kind == "entry-bytes":  # flags 0, an entry-shaped pickle: reaches the ORM's own decoding
        return lambda n: pickle.dumps((2, {"x": 1}, evil(n)), protocol=pickle.HIGHEST_PROTOCOL)
    if kind == "rows-template":  # a Rows payload whose inner template pickle is the evil one
        return lambda n: pickle.dumps(
            (2, {"x": 1}, EvilTemplate(pickle.dumps(evil(n), protocol=pickle.HIGHEST_PROTOCOL))),
            protocol=pickle.HIGHEST_PROTOCOL)
    assert kind == "text"  # a counter that is not an integer
    return lambda n: "%d" % (12345 + n)


READS: Dict[str, Callable[[Any], Any]] = {
    "session.get": lambda s: [(f.film_id, f.title) for f in [s.get(Film, 1), s.get(Film, 2)]],
    "FromCache objects": lambda s: [(f.film_id, f.title) for f in s.scalars(
        select(Film).order_by(Film.film_id).options(FromCache()))],
    "FromCache scalars": lambda s: list(s.scalars(
        select(Film.title).where(Film.film_id < 3).order_by(Film.film_id).options(FromCache()))),
    "FromCache rows": lambda s: [tuple(r) for r in s.execute(
        select(Film.film_id, Film.title).order_by(Film.film_id).options(FromCache()))],
    "FromCache with relationship": lambda s: [(lang.name, sorted(f.title for f in lang.films)) for lang in s.scalars(
        select(Language).order_by(Language.language_id).options(selectinload(Language.films), FromCache()))],
}


def read_all(factory: sessionmaker) -> Dict[str, Any]:
    out = {}
    for name, read in READS.items():
        with factory() as s:
            out[name] = read(s)
    return out


class KeyRecorder:
    """Records every key the cache's client view is asked to read or write."""

    def __init__(self, view: Any) -> None:
        self.keys: Set[str] = set()
        self.stored: Set[str] = set()
        self._wrap(view, "get_multi", lambda args: args[0])
        for name in ("get", "set", "add"):
            self._wrap(view, name, lambda args: [args[0]], stored=(name == "set"))

    def _wrap(self, view: Any, name: str, keys_of: Callable[[Any], Any], stored: bool = False) -> None:
        inner = getattr(view, name)

        def recorded(*args: Any, **kwargs: Any) -> Any:
            found = list(keys_of(args))
            self.keys.update(found)
            if stored:
                self.stored.update(found)
            return inner(*args, **kwargs)

        setattr(view, name, recorded)


@pytest.mark.parametrize("kind", ["pickle-flag", "entry-bytes", "rows-template", "text"])
def test_planted_payloads_on_every_key_run_nothing_and_reads_answer_from_the_database(
        kind, engine, memcached, tmp_path, caplog):
    RAN.clear()
    cache = ORMCache(Client(memcached.servers, socket_timeout=1), namespace="safe" + uuid.uuid4().hex[:8])
    recorder = KeyRecorder(cache.client)
    Session = sessionmaker(engine)
    cache.listen_on_session(Session)
    plain = sessionmaker(engine)  # not listening: the database's answer

    first = read_all(Session)
    assert read_all(Session) == first
    assert cache.stats.hits > 0
    # rename every film behind the cache's back (an engine nobody captures)
    other = sa.create_engine(engine.url)
    with other.begin() as conn:
        conn.execute(sa.update(Film.__table__).values(title=Film.__table__.c.title + " (renamed)"))
    other.dispose()
    truth = read_all(plain)
    assert truth != first

    ns = cache.namespace
    targets = set(recorder.keys) | {orm_keys.epoch_key(ns), orm_keys.generation_key(ns)}
    targets |= {stampede.lease_key(cache, key) for key in recorder.stored}
    planted = sorted(k for k in targets if k.startswith(ns + ":"))
    kinds = {k.split(":")[1] for k in planted}
    assert {"epoch", "gen", "l", "o", "q"} <= kinds, kinds
    marker = str(tmp_path / "ran")
    value = plants(kind, marker)
    attacker = Client(memcached.servers)  # the default pickle serde, no secret
    for n, key in enumerate(planted):
        assert attacker.set(key, value(n)), key

    answered = read_all(Session)
    answered_again = read_all(Session)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert not files and not RAN, "planted payloads ran: %d marker files, %d calls" % (len(files), len(RAN))
    assert answered == truth
    assert answered_again == truth


def test_a_counter_that_is_not_an_integer_is_missing_and_replaced(engine, memcached):
    """A version key holding text (or bytes) is a missing counter: never cached against, then replaced."""
    cache = ORMCache(Client(memcached.servers, socket_timeout=1), namespace="safe" + uuid.uuid4().hex[:8])
    Session = sessionmaker(engine)
    cache.listen_on_session(Session)
    name = orm_keys.generation_key(cache.namespace)
    Client(memcached.servers).set(name, "123")
    with Session() as s:
        s.get(Film, 1)
    assert isinstance(cache.client.get(name), int)
    with Session() as s:
        s.get(Film, 1)
    assert cache.stats.hits == 1


def test_one_warning_without_a_secret_key_on_a_non_loopback_server(caplog, monkeypatch):
    from sqla_memcache.orm import safepickle

    monkeypatch.setattr(safepickle, "_WARNED", set())
    with caplog.at_level("WARNING", logger="sqla_memcache.orm.safepickle"):
        ORMCache(Client(["127.0.0.1:1"]), namespace="local")
        ORMCache(Client(["127.0.0.1:1"], secret_key="s"), namespace="signed")
        ORMCache(Client(["192.0.2.1:11211"], secret_key="s"), namespace="remotesigned")
        assert "secret_key" not in caplog.text
        ORMCache(Client(["192.0.2.1:11211"]), namespace="remote1")
        ORMCache(Client(["192.0.2.1:11211"]), namespace="remote2")
    assert caplog.text.count("secret_key") == 1, caplog.text
