"""The fast hit path: compact entries of plain objects, partial version reads, stable keys, one round trip."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from decimal import Decimal

from sqlalchemy import event, select, update
from sqlalchemy.orm import selectinload, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from orm_models import Actor, Film, Language
from sqla_memcache.orm.options import FromCache
from sqla_memcache.orm.rows import Rows


def _payload(cache, key):
    entry = cache.decode(cache.client.get(key))
    assert entry is not None
    return entry[1]


def _count_calls(cache, monkeypatch):
    calls = []
    for name in ("get", "get_multi", "get_counters", "get_counters_begin", "add", "set", "incr", "delete"):
        original = getattr(cache.client, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls.append((_name, args[0]))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cache.client, name, counted)
    return calls


def test_plain_objects_are_stored_as_rows_and_rebuilt_as_merge_would(Session, cache, sql):
    stmt = select(Film).order_by(Film.film_id).limit(4).options(FromCache())
    with Session() as s:
        expected = [(f.film_id, f.title, f.rating, f.rental_rate, f.language_id) for f in s.scalars(stmt)]
    loaded = []

    def on_load(target, context):
        loaded.append(target.film_id)

    event.listen(Film, "load", on_load)
    try:
        sql.reset()
        with Session() as s:
            films = s.scalars(stmt).all()
            assert sql.count == 0
            assert [(f.film_id, f.title, f.rating, f.rental_rate, f.language_id) for f in films] == expected
            for film in films:
                state = film._sa_instance_state
                assert state.persistent and not state.modified and film in s
                assert s.get(Film, film.film_id) is film  # in the identity map
            assert loaded == [1, 2, 3, 4]  # the load event, once per rebuilt object
            assert films[0].language.name  # lazy loads still work
            assert sql.count == 1
    finally:
        event.remove(Film, "load", on_load)
    assert cache.stats.hits == 1


def test_object_already_in_the_session_is_overwritten_like_merge(Session, cache):
    stmt = select(Film).where(Film.film_id == 2).options(FromCache())
    with Session() as s:
        title = s.scalars(stmt).one().title  # stored
    with Session() as s:
        mine = s.scalars(select(Film).where(Film.film_id == 2)).one()  # plain query, no cache
        set_committed_value(mine, "title", "changed in memory only")
        got = s.scalars(stmt).one()
        assert got is mine and mine.title == title and not s.dirty
    assert cache.stats.hits == 1


def test_tuple_rows_and_objects_with_loaded_relationships(Session, cache, sql, engine):
    pairs = select(Film, Language).join(Film.language).order_by(Film.film_id).options(FromCache())
    eager = select(Film).options(selectinload(Film.actors)).order_by(Film.film_id).options(FromCache())
    with Session() as s:
        expected_pairs = [(f.film_id, lang.name) for f, lang in s.execute(pairs)]
        expected_eager = [(f.film_id, [a.name for a in f.actors]) for f in s.scalars(eager)]
    sql.reset()
    with Session() as s:
        got = s.execute(pairs).all()
        assert [(f.film_id, lang.name) for f, lang in got] == expected_pairs
        by_id = {}
        for _, lang in got:  # a language repeated in the rows is one object of the session
            assert by_id.setdefault(lang.language_id, lang) is lang and s.get(Language, lang.language_id) is lang
        assert [(f.film_id, [a.name for a in f.__dict__["actors"]]) for f in s.scalars(eager)] == expected_eager
    assert sql.count == 0 and cache.stats.hits == 2
    # objects carrying loaded relationships keep the FrozenResult payload (merged by Session.merge)
    keys = [name for name in _stored_keys(cache, engine)]
    kinds = {type(_payload(cache, key)).__name__ for key in keys}
    assert kinds == {"Rows", "FrozenResult"}


def _stored_keys(cache, engine):

    out = []
    for stmt in (
        select(Film, Language).join(Film.language).order_by(Film.film_id).options(FromCache()),
        select(Film).options(selectinload(Film.actors)).order_by(Film.film_id).options(FromCache()),
    ):
        out.append(cache.entry_key(stmt, engine))
    return out


def test_a_hit_is_one_get_multi_of_the_entry_and_its_tag(Session, cache, monkeypatch):
    stmt = select(Film).where(Film.rating == "PG").options(FromCache())
    with Session() as s:
        s.scalars(stmt).all()
        s.get(Film, 3)
    calls = _count_calls(cache, monkeypatch)
    with Session() as s:
        s.scalars(stmt).all()
        s.get(Film, 3)
    assert [name for name, _ in calls] == ["get_multi", "get_multi"]
    query_keys, object_keys = calls[0][1], calls[1][1]
    assert sorted(query_keys[1:]) == sorted([cache.table_keys(["t_film"])[0], cache.generation_key])
    assert sorted(object_keys[1:]) == sorted(cache.row_version_keys(Film.__mapper__, (3,))
                                             + cache.dml_version_keys(Film.__mapper__) + [cache.generation_key])
    assert not any(cache.namespace + ":epoch" in str(args) for _, args in calls)  # read on misses only
    assert cache.stats.hits == 2


def test_a_tag_wider_than_the_likely_keys_is_read_in_full(Session, cache, sql):
    """Entries of one statement shape may depend on different tables: every key of the tag is checked."""
    def stmt(film_id):
        loads = selectinload(Film.actors).selectinload(Actor.languages)
        return select(Film).where(Film.film_id == film_id).options(loads, FromCache())

    with Session() as s:
        s.add(Film(film_id=20, title="No actors", rating="G", rental_rate=1))
        s.commit()
    with Session() as s:
        assert s.scalars(stmt(5)).one().actors[0].languages is not None  # tagged with the language tables too
    with Session() as s:
        assert s.scalars(stmt(20)).one().actors == []  # same shape, no actors: now the likely keys
    sql.reset()
    with Session() as s:
        assert s.scalars(stmt(5)).one().__dict__["actors"]
    assert sql.count == 0 and cache.stats.hits == 1
    with Session() as s:  # a write to a table only film 5's entry depends on
        s.execute(update(Language).values(name=Language.name + "!"))
        s.commit()
    with Session() as s:
        s.scalars(stmt(5)).one()
    assert cache.stats.hits == 1 and sql.count > 0  # a miss, though the likely keys were unchanged
    with Session() as s:
        s.scalars(stmt(20)).one()
    assert cache.stats.hits == 2


def test_session_get_with_options_is_planned_apart_from_a_plain_get(Session, cache, sql):
    with Session() as s:
        s.get(Film, 1)
        s.get(Film, 1, options=[selectinload(Film.actors)])
    with Session() as s:
        s.execute(update(Actor).values(name="Renamed"))
        s.commit()
    sql.reset()
    with Session() as s:
        assert s.get(Film, 1).title  # only its row and DML versions: still a hit
    assert sql.count == 0
    with Session() as s:
        assert {a.name for a in s.get(Film, 1, options=[selectinload(Film.actors)]).actors} == {"Renamed"}


_FINGERPRINTS = """
import sys
sys.path[:0] = [%r, %r]
from sqlalchemy import select, func
from sqlalchemy.orm import selectinload, sessionmaker
from orm_models import Actor, Film
from sqla_memcache.orm import keys
stmts = [
    select(Film).order_by(Film.rental_rate.desc()).limit(5),
    select(Film).join(Film.actors).where(Actor.name.in_(["a", "b"]), Film.rental_rate > 1),
    select(Film.rating, func.count()).group_by(Film.rating).options(selectinload(Film.actors)),
]
print([keys.statement_fingerprint(s) for s in stmts])
"""


def test_statement_keys_do_not_depend_on_the_hash_seed():
    here = Path(__file__).resolve().parent
    code = _FINGERPRINTS % (str(here), str(here.parent.parent))
    outputs = set()
    for seed in ("1", "2", "3", "4"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outputs.add(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                                   check=True).stdout)
    assert len(outputs) == 1 and "None" not in outputs.pop()


def test_rows_payload_pickles_its_template_once_per_process(Session, cache, engine):
    import pickle

    stmt = select(Film).order_by(Film.film_id).limit(2).options(FromCache())
    with Session() as s:
        s.scalars(stmt).all()

    raw = cache.client.get(cache.entry_key(stmt, engine))
    first, second = pickle.loads(raw)[2], pickle.loads(raw)[2]
    assert isinstance(first, Rows) and first.template is second.template
    assert first.objects == second.objects and first.objects is not second.objects


def test_a_statement_reexecuted_keeps_its_key_unless_a_value_comes_from_a_callable(Session, cache):
    from sqlalchemy import bindparam

    from sqla_memcache.orm import keys

    fixed = select(Film).where(Film.film_id == 3).options(FromCache())
    assert keys.fingerprint(fixed) == keys.fingerprint(fixed) == keys.fingerprint(
        select(Film).where(Film.film_id == 3).options(FromCache()))
    wanted = {"id": 1}
    dynamic = select(Film).where(Film.film_id == bindparam("id", callable_=lambda: wanted["id"])).options(FromCache())
    with Session() as s:
        assert s.scalars(dynamic).one().film_id == 1
    wanted["id"] = 2
    with Session() as s:
        assert s.scalars(dynamic).one().film_id == 2
    with Session() as s:
        assert s.scalars(dynamic, {"id": 4}).one().film_id == 4
    assert cache.stats.misses == 3


def test_a_trailing_newline_is_not_a_valid_key_character():
    from sqla_memcache.orm import keys

    assert not keys.is_valid_key("ns:o:x:(a)\n")
    assert keys.make_key("ns", "tv", "film\n").startswith("ns:tv:#")
    assert keys.is_valid_key(keys.make_key("ns", "o", "(7)\n"))


def test_an_entry_stored_for_an_older_mapping_loads_what_it_lacks(Session, cache, sql, engine):
    """Columns added since the entry was stored are loaded from the database; removed ones ignored."""
    import pickle


    stmt = select(Film).where(Film.film_id == 4).options(FromCache())
    with Session() as s:
        title = s.scalars(stmt).one().title
    key = cache.entry_key(stmt, engine)
    fmt, tag, payload = pickle.loads(cache.client.get(key))
    i, j, cls, ident, path, values = payload.objects[0]
    values = {name: value for name, value in values.items() if name != "title"}
    values["dropped_column"] = "x"
    payload.objects[0] = (i, j, cls, ident, path, values)
    cache.client.set(key, pickle.dumps((fmt, tag, payload)))
    sql.reset()
    with Session() as s:
        film = s.scalars(stmt).one()
        assert sql.count == 0 and "title" not in film.__dict__ and not hasattr(film, "dropped_column")
        assert film.title == title and sql.count == 1  # loaded on access, as merge() leaves it
    assert cache.stats.hits == 1
    cache.client.set(key, pickle.dumps((fmt, tag, type(payload)(payload.template, payload.data,
                                                                 [(i, j, object, ident, path, values)]))))
    cache.held.clear()  # rewritten under the same versions: this process would keep serving what it holds
    with Session() as s:
        assert s.scalars(stmt).one().title == title  # an unmapped class: a miss, not an error
    assert cache.stats.hits == 1


def test_a_held_entry_is_checked_by_its_versions_alone_and_dropped_when_they_move(Session, cache, monkeypatch):
    stmt = select(Film).where(Film.rating == "PG").order_by(Film.film_id).options(FromCache())
    with Session() as s:
        s.scalars(stmt).all()  # miss, stored
    with Session() as s:
        first = [(f.film_id, f.title) for f in s.scalars(stmt)]  # hit: decoded once, held
    (key,) = cache.held.keys()
    calls = _count_calls(cache, monkeypatch)
    with Session() as s:
        assert [(f.film_id, f.title) for f in s.scalars(stmt)] == first
    # one round trip, integers only, sent before the objects are built
    assert [name for name, _ in calls] == ["get_counters_begin"]
    assert key not in calls[0][1]  # the entry itself was neither fetched nor unpickled
    calls.clear()
    with Session() as s:
        s.execute(update(Film).where(Film.rating == "PG").values(title="Held no more"))
        s.commit()
    with Session() as s:
        assert {f.title for f in s.scalars(stmt)} == {"Held no more"}
    assert key not in cache.held.keys()  # its versions moved: dropped (the new entry is held on its next hit)


def test_objects_built_while_the_versions_are_read_reach_the_session_only_when_current(Session, cache, monkeypatch):
    """A held entry's objects are built while memcached answers: when the versions moved,
    none of them is attached, loaded or seen (the session holds the database's rows,
    each loaded once); when building fails, the sent read is abandoned (its connection
    never pooled) and the next hit reads its own reply."""
    from sqla_memcache.orm import rows as rows_module
    stmt = select(Film).where(Film.rating == "G").order_by(Film.film_id).options(FromCache())
    with Session() as s:
        s.scalars(stmt).all()  # miss, stored
    with Session() as s:
        ids = [f.film_id for f in s.scalars(stmt)]  # hit: held
    built = []
    original = rows_module.prepare
    monkeypatch.setattr(rows_module, "prepare", lambda session, payload: built.append(1) or original(session, payload))
    with Session() as s:
        s.execute(update(Film).where(Film.rating == "G").values(title="Not the held one"))
        s.execute(update(Film).where(Film.film_id == ids[0]).values(rating="R"))  # leaves the result
        s.commit()
    ids = ids[1:]
    loaded = []
    with Session() as s:
        event.listen(s, "loaded_as_persistent", lambda session, obj: loaded.append(obj.film_id))
        films = s.scalars(stmt).all()
        assert built == [1] and [f.film_id for f in films] == ids  # built, then abandoned
        assert {f.title for f in films} == {"Not the held one"}
        # nothing of the held entry is in the session: not the film that left the result either
        assert sorted(loaded) == ids and len(s.identity_map) == len(ids)
        assert all(s.identity_map.get(key) in films for key in s.identity_map.keys())
    hits = cache.stats.hits
    with Session() as s:
        assert [f.title for f in s.scalars(stmt)] == ["Not the held one"] * len(ids)
    assert cache.stats.hits == hits + 1  # the new entry, fetched and decoded: held from now on

    def failing(session, payload):
        raise RuntimeError("building failed")

    monkeypatch.setattr(rows_module, "prepare", failing)
    with Session() as s:
        try:
            s.scalars(stmt).all()
        except RuntimeError:
            pass
        else:
            raise AssertionError("the failure was not raised")
    monkeypatch.setattr(rows_module, "prepare", original)
    with Session() as s:
        assert [f.title for f in s.scalars(stmt)] == ["Not the held one"] * len(ids)
    assert cache.stats.hits == hits + 2 and cache.stats.errors == 0  # its own reply, not the abandoned one


def test_objects_put_in_while_the_versions_are_read_leave_the_session_when_stale(Session, cache, engine, monkeypatch):
    """With nothing listening, a held entry's objects enter the identity map while its
    versions are read (``rows.attach_ahead``): when the versions moved they are taken out
    again (detached, in no session), and the session holds the database's rows alone;
    when they did not, the result's objects are the session's (and persistent)."""
    from sqlalchemy import inspect
    from sqla_memcache.orm import rows as rows_module
    stmt = select(Film).where(Film.rating == "PG").order_by(Film.film_id).options(FromCache())
    with Session() as s:
        s.scalars(stmt).all()  # miss, stored
    with Session() as s:
        ids = [f.film_id for f in s.scalars(stmt)]  # hit: held
    assert len(ids) > 1
    ahead = []
    original = rows_module.attach_ahead

    def recording(session, prepared):
        original(session, prepared)
        ahead.append([state.obj() for state, _dict in prepared.new] if prepared.ahead else None)

    monkeypatch.setattr(rows_module, "attach_ahead", recording)
    hits = cache.stats.hits
    with Session() as s:  # a hit: the objects put in ahead are the result's, persistent
        films = s.scalars(stmt).all()
        assert cache.stats.hits == hits + 1 and len(ahead) == 1 and ahead[0] == films
        assert all(inspect(f).persistent and s.identity_map.get(inspect(f).key) is f for f in films)
    with Session() as s:
        s.execute(update(Film).where(Film.rating == "PG").values(title="Not the held one"))
        s.execute(update(Film).where(Film.film_id == ids[0]).values(rating="R"))  # leaves the result
        s.commit()
    with Session() as s:
        films = s.scalars(stmt).all()
        assert len(ahead) == 2 and ahead[1] is not None, "the stale entry's objects were not put in ahead"
        assert [f.film_id for f in films] == ids[1:] and {f.title for f in films} == {"Not the held one"}
        for obj in ahead[1]:  # each withdrawn: in no session, not in the map
            state = inspect(obj)
            assert state.detached and state.session_id is None and obj not in s
            assert s.identity_map.get(state.key) is not obj
        # the session holds the database's rows alone: not the film that left the result
        assert len(s.identity_map) == len(films) and all(s.identity_map.get(k) in films for k in s.identity_map.keys())
        with sessionmaker(engine)() as control:  # the differential read: no cache listens on this session
            expected = [(f.film_id, f.title) for f in control.scalars(stmt)]
        assert [(f.film_id, f.title) for f in films] == expected


def _order_of_plan_and_read(monkeypatch, cache):
    """A list that gets "plan" when the loader works out a plan and "read" when a version
    read is sent (``get_counters_begin``)."""
    from sqla_memcache.orm import loader
    order = []
    planner = loader.plan_for
    monkeypatch.setattr(loader, "plan_for", lambda *a, **k: order.append("plan") or planner(*a, **k))
    begin = cache.client.get_counters_begin
    monkeypatch.setattr(cache.client, "get_counters_begin", lambda *a, **k: order.append("read") or begin(*a, **k))
    return order


def test_a_held_get_sends_its_read_before_working_out_its_plan(Session, cache, engine, monkeypatch):
    """From its fourth read on, a held ``session.get()`` sends the version read first and
    works out its plan while memcached answers; the answer stays right (equal to an
    uncached session's, fresh after a write), and a dirty session sends nothing."""
    from sqlalchemy.orm import Session as PlainSession
    for _ in range(3):  # a miss (stored), a hit (fetched, held), a held hit (the guess remembered)
        with Session() as s:
            s.get(Film, 7)
    order = _order_of_plan_and_read(monkeypatch, cache)
    hits = cache.stats.hits
    with Session() as s, PlainSession(engine) as plain:
        assert s.get(Film, 7).title == plain.get(Film, 7).title
    assert order == ["read", "plan"] and cache.stats.hits == hits + 1
    with Session() as s:
        s.execute(update(Film).where(Film.film_id == 7).values(title="Moved on"))
        s.commit()
    order.clear()
    with Session() as s:
        assert s.get(Film, 7).title == "Moved on"  # the early read saw the moved version: a miss
    assert order[:2] == ["read", "plan"] and cache.stats.hits == hits + 1
    with Session() as s:
        s.get(Film, 7)  # the new entry, fetched: held again
    order.clear()
    with Session() as s:
        s.add(Language(language_id=99, name="Pending"))  # unflushed: the cache is bypassed
        s.get(Film, 7)
        s.rollback()
    assert order == ["plan"]  # no read went out for a session that could not use it


def test_a_guess_that_named_another_plan_is_not_made_again(Session, cache, engine, monkeypatch):
    """The same primary key read with an option that changes the entry (another scope):
    the early read is dropped, the answer is the other entry's, and that guess is never
    sent ahead again."""
    from sqlalchemy.orm import Session as PlainSession
    for _ in range(3):
        with Session() as s:
            s.get(Film, 8)
    order = _order_of_plan_and_read(monkeypatch, cache)
    with Session() as s, PlainSession(engine) as plain:
        film = s.get(Film, 8, execution_options={"sqla_memcache_test_scope": None, "custom_option": 1})
        assert film.title == plain.get(Film, 8).title
    assert order[:2] == ["read", "plan"]  # sent ahead, then found to be another plan
    order.clear()
    for _ in range(2):
        with Session() as s:
            s.get(Film, 8)
    assert order == ["plan", "read"] * 2  # no longer guessed


def test_only_payloads_no_session_can_change_are_held():
    from sqla_memcache.orm.held import HeldEntries, holdable

    class Template:
        _source_supports_scalars = True

    plain = Rows(Template(), [None], [(0, 0, Film, None, (), {"film_id": 1, "title": "x", "rate": Decimal("1")})])
    mutable = Rows(Template(), [None], [(0, 0, Film, None, (), {"film_id": 1, "tags": ["a", "b"]})])
    assert holdable(plain) and not holdable(mutable) and not holdable(object())
    held = HeldEntries(max_bytes=2000)
    held.put("a", 100, {"v": 1}, plain)
    held.put("b", 100, {"v": 1}, mutable)
    assert held.get("a") is not None and held.get("b") is None
    for n in range(10):  # LRU within the byte budget
        held.put("k%d" % n, 80, {"v": 1}, plain)
    assert held.bytes <= 2000 and held.get("a") is None and held.get("k9") is not None


def test_a_pure_hit_begins_no_transaction_and_fires_events_only_when_listened(Session, cache):
    stmt = select(Film).where(Film.film_id == 5).options(FromCache())
    with Session() as s:
        s.scalars(stmt).one(), s.get(Film, 6)
    seen = []
    with Session() as s:
        event.listen(s, "loaded_as_persistent", lambda session, instance: seen.append(instance.film_id))
        hits = cache.stats.hits
        film, other = s.scalars(stmt).one(), s.get(Film, 6)
        assert cache.stats.hits == hits + 2
        assert not s.in_transaction()  # SQLAlchemy's loading begins none; Session.merge would
        assert film in s and other in s and not s.dirty and sorted(seen) == [5, 6]
        assert s.get(Film, 5) is film  # the identity map holds it
        film.title = "changed"  # an ordinary persistent object: tracked, flushed on commit
        assert film in s.dirty
        s.commit()
    with Session() as s:
        assert s.get(Film, 5).title == "changed"
