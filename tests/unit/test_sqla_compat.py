"""Each private SQLAlchemy API in ``sqla_memcache.orm._compat`` still does what the cache relies on.

Runs on every SQLAlchemy of the version matrix (``.ci/run``: the oldest
supported 2.0.x on Python 3.9, the latest on the newest Python). SQLite in
memory only: no server needed.
"""
from __future__ import annotations

from typing import Any, Iterator, List

import pytest
import sqlalchemy as sa
from sqlalchemy import ForeignKey, event, select, text
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload

from sqla_memcache.orm import _compat


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "compat_author"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]
    books: Mapped[List["Book"]] = relationship(back_populates="author")


class Book(Base):
    __tablename__ = "compat_book"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str]
    author_id: Mapped[int] = mapped_column(ForeignKey("compat_author.id"))
    author: Mapped[Author] = relationship(back_populates="books")


@pytest.fixture
def session() -> Iterator[Session]:
    engine = sa.create_engine("sqlite://")
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Author(id=1, name="Ada", books=[Book(id=1, title="Notes")]))
        s.commit()
        yield s
    engine.dispose()


def test_version_tuple() -> None:
    installed = tuple(int(part) for part in sa.__version__.split(".")[:2])
    assert _compat.SQLALCHEMY_VERSION[:2] == installed and installed >= (2, 0)
    assert _compat._version("2.1.0b2") == (2, 1, 0) and _compat._version("2.0.5.post1") == (2, 0, 5)


def test_cache_key_separates_shapes_and_carries_bound_values() -> None:
    one = _compat.cache_key(select(Author).where(Author.id == 1))
    two = _compat.cache_key(select(Author).where(Author.id == 2))
    other = _compat.cache_key(select(Author).where(Author.name == "x"))
    assert one.key == two.key and one.key != other.key
    assert [b.value for b in one.bindparams] == [1] and [b.value for b in two.bindparams] == [2]


def test_statement_parts() -> None:
    stmt = select(Author).where(Author.id == 1)
    assert _compat.plugin_subject(stmt) is sa.inspect(Author)
    assert len(_compat.where_criteria(stmt)) == 1
    assert list(_compat.raw_columns(stmt)) == [sa.inspect(Author).__clause_element__()]
    assert _compat.where_criteria(sa.insert(Author)) == ()
    assert _compat.raw_columns(text("SELECT 1")) == ()
    assert not _compat.has_loader_options(stmt)
    assert _compat.has_loader_options(stmt.options(selectinload(Author.books)))
    assert _compat.for_update_arg(stmt) is None
    assert _compat.for_update_arg(stmt.with_for_update()) is not None
    hash(_compat.compile_options(stmt))  # the loader memoises on it


def test_annotations_name_the_parent_mapper() -> None:
    column = Author.__table__.c.name
    assert _compat.element_annotations(column) == {}
    annotated = Author.name.__clause_element__()
    assert _compat.element_annotations(annotated)["parentmapper"] is sa.inspect(Author)


def test_mapper_get_clause_is_what_session_get_filters_on(session: Session) -> None:
    mapper = sa.inspect(Author)
    clause, binds = _compat.mapper_get_clause(mapper)
    seen: List[Any] = []

    @event.listens_for(session, "do_orm_execute")
    def capture(state: Any) -> None:
        seen.append((state.statement, dict(state.parameters or {})))

    session.expunge_all()
    assert session.get(Author, 1).name == "Ada"
    statement, params = seen[0]
    criterion = _compat.where_criteria(statement)[0]
    # the loader's fast path checks identity (2.0.x later releases), its slow path compare()
    assert criterion is clause or criterion.compare(clause)
    assert params == {binds[mapper.primary_key[0]].key: 1}


def test_is_from_statement_and_has_pending_changes(session: Session) -> None:
    seen: List[bool] = []

    @event.listens_for(session, "do_orm_execute")
    def capture(state: Any) -> None:
        seen.append(_compat.is_from_statement(state))

    session.scalars(select(Author)).all()
    session.scalars(select(Author).from_statement(text("SELECT * FROM compat_author"))).all()
    assert seen == [False, True]
    assert isinstance(select(Author).from_statement(text("SELECT 1")), _compat.FromStatement)
    assert not _compat.has_pending_changes(session)
    session.get(Author, 1).name = "Ada King"
    assert _compat.has_pending_changes(session)


def test_frozen_results_and_path_registry(session: Session) -> None:
    frozen = session.execute(select(Author)).freeze()
    assert _compat.supports_scalars(frozen)
    assert not _compat.supports_scalars(session.execute(select(Author.id, Author.name)).freeze())
    author = session.get(Author, 1)
    path = _compat.instance_state(author).load_path
    assert _compat.PathRegistry.deserialize(path.serialize()) == path if path else True
    assert _compat.PathRegistry.root is not None


def test_merge_without_load_pieces(session: Session) -> None:
    """The steps rows.merge() takes to put a cached row into a session without a query."""
    manager = _compat.class_manager(Author)
    assert manager is not None and manager.class_ is Author and _compat.class_manager(int) is None
    key = sa.inspect(session.get(Author, 1)).key
    session.expunge_all()
    merged_events: List[Any] = []
    event.listen(Author, "load", lambda target, context: merged_events.append(target))

    obj = manager.new_instance()
    state = _compat.instance_state(obj)
    state.key = key
    _compat.update_impl(session, state)
    obj.__dict__.update({"id": 1})
    _compat.expire_attributes(state, obj.__dict__, ["name"])
    _compat.commit_all_states([(state, obj.__dict__)], session.identity_map)
    _compat.dispatch_merge_without_load(manager, state)
    assert session.identity_map.get(key) is obj and not session.dirty
    assert "name" in state.expired_attributes
    assert obj.name == "Ada"  # the expired attribute loads on access

    # an object already in the session is overwritten, as Session.merge does
    other = manager.new_instance()
    other_state = _compat.instance_state(other)
    other_state.key = key
    other.__dict__.update({"id": 1, "name": "Cached Ada"})
    result = _compat.merge_state(session, other_state, other.__dict__)
    assert result is obj and obj.name == "Cached Ada"


def test_populate_existing(session: Session) -> None:
    seen: List[bool] = []

    @event.listens_for(session, "do_orm_execute")
    def capture(state: Any) -> None:
        seen.append(_compat.populate_existing(state))

    session.scalars(select(Author)).all()
    session.scalars(select(Author).execution_options(populate_existing=True)).all()
    session.execute(text("SELECT 1"))
    assert seen == [False, True, False]


def test_connection_helpers() -> None:
    engine = sa.create_engine("sqlite://")
    with engine.connect() as conn:
        assert not _compat.is_autocommit(conn)
        assert _compat.dbapi_in_transaction(conn) is False  # sqlite3 reports it; nothing written yet
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
        assert _compat.dbapi_in_transaction(conn) is True
        conn.rollback()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        assert _compat.is_autocommit(conn)
    engine.dispose()


def test_after_dbapi_commit_runs_after_the_commit_once_per_hook() -> None:
    engine = sa.create_engine("sqlite://")
    calls: List[Any] = []

    def hook(dbapi_connection: Any) -> None:
        calls.append(dbapi_connection.in_transaction)  # False: the DBAPI commit has happened

    _compat.after_dbapi_commit(engine.dialect, hook)
    _compat.after_dbapi_commit(engine.dialect, hook)  # registered once
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")
    assert calls == [False]
    engine.dispose()


def test_dml_parts() -> None:
    table = Author.__table__
    update = sa.update(table).where(table.c.id == 1).values(name="x")
    assert [getattr(c, "key", c) for c in _compat.values_columns(update)] == ["name"]
    ordered = sa.update(table).ordered_values((table.c.name, "y"), (table.c.id, 2))
    assert [getattr(c, "key", c) for c in _compat.set_columns(ordered)] == ["name", "id"]
    assert _compat.values_columns(sa.delete(table)) == []
    assert _compat.post_values_clause(sa.insert(table)) is None
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    upsert = sqlite_insert(table).values(id=1, name="z").on_conflict_do_update(index_elements=["id"],
                                                                                set_={"name": "z"})
    assert _compat.post_values_clause(upsert) is not None
    cte = sa.delete(Book.__table__).cte("gone")
    assert list(_compat.independent_ctes(select(Author).add_cte(cte))) == [cte]
    assert list(_compat.independent_ctes(select(Author))) == []


def test_session_binds_and_object_state(session: Session) -> None:
    engine = session.get_bind()
    bound = Session(binds={Author: engine})
    assert set(_compat.session_binds(bound).values()) == {engine} and Author in _compat.session_binds(bound)
    assert _compat.session_binds(Session()) == {}
    author = session.get(Author, 1)
    assert _compat.state_of(author) is sa.inspect(author) and _compat.state_of(object()) is None
    assert _compat.own_class_manager(Author) is _compat.class_manager(Author) is not None
    assert _compat.own_class_manager(type("Plain", (), {})) is None


def test_registries_count_mapped_classes() -> None:
    before = _compat.mapped_classes_count()
    assert any(Author in {m.class_ for m in r.mappers} for r in _compat.all_registries())

    class Local(DeclarativeBase):
        pass

    class Thing(Local):
        __tablename__ = "compat_thing"
        id: Mapped[int] = mapped_column(primary_key=True)

    assert _compat.mapped_classes_count() > before


def test_pickled_frozen_results_name_only_listed_classes(session: Session) -> None:
    """A pickled FrozenResult of ORM objects, with its load options, refers to no SQLAlchemy
    class outside PICKLED_CLASSES (what safepickle allows)."""
    import pickle
    import pickletools

    result = session.execute(select(Author).options(selectinload(Author.books)))
    blob = pickle.dumps(result.freeze())
    found = set()
    strings: List[str] = []
    for op, arg, _pos in pickletools.genops(blob):
        if op.name == "GLOBAL":
            found.add(tuple(arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL":  # takes the module and the name pushed just before it
            found.add((strings[-2], strings[-1]))
        elif isinstance(arg, str):
            strings.append(arg)
    sqla = {pair for pair in found if pair[0].startswith("sqlalchemy")}
    listed = {(cls.__module__, cls.__qualname__) for cls in _compat.PICKLED_CLASSES}
    assert sqla and sqla <= listed, sqla - listed


def test_greenlet_helpers() -> None:
    import asyncio

    def inside() -> Any:
        assert _compat.in_greenlet()

        async def three() -> int:
            return 3

        return _compat.await_(three())

    assert not _compat.in_greenlet()
    assert asyncio.run(_compat.greenlet_spawn(inside)) == 3


def test_commit_all_states_is_the_state_method(session: Session) -> None:
    author = session.get(Author, 1)
    state = sa.inspect(author)
    author.name = "changed"
    assert state.modified
    _compat.commit_all_states([(state, state.dict)], session.identity_map)
    assert not state.modified and not session.dirty


def test_attach_committed_is_what_loading_does(session: Session) -> None:
    """New persistent objects in the identity map, committed, no transaction begun, no attach events."""
    key = sa.inspect(session.get(Author, 1)).key
    session.commit()
    session.expunge_all()
    attached: List[Any] = []
    event.listen(session, "after_attach", lambda s, obj: attached.append(obj))
    manager = _compat.class_manager(Author)
    obj = manager.new_instance()
    state = _compat.instance_state(obj)
    state.key = key
    obj.__dict__.update({"id": 1, "name": "Ada"})
    assert not session.in_transaction()
    _compat.attach_committed(session, [(state, obj.__dict__)])
    assert session.identity_map.get(key) is obj and state.persistent and state.session_id == session.hash_key
    assert not state.modified and not state.committed_state and not session.dirty
    assert attached == [] and not session.in_transaction()
    assert session.get(Author, 1) is obj and obj.name == "Ada"


def test_load_kind_and_user_options_are_the_execute_state_properties(session: Session) -> None:
    """What plan_for asks in one look agrees with ORMExecuteState's public properties."""
    from sqla_memcache.orm.options import FromCache
    seen: List[Any] = []

    def look(state: Any) -> None:
        column, relationship_path = _compat.load_kind(state) if state.is_select else (False, None)
        seen.append((bool(column), relationship_path, list(_compat.user_options(state)),
                     bool(state.is_select and state.is_column_load), state.is_select and state.is_relationship_load,
                     state.is_select and state.is_relationship_load and state.loader_strategy_path,
                     list(state.user_defined_options)))

    event.listen(session, "do_orm_execute", look)
    option = FromCache(expire=5)
    session.execute(select(Author).options(option)).scalars().all()  # a query with a user option
    author = session.get(Author, 1)
    session.expire(author, ["name"])
    author.name  # a column load (refresh of an expired attribute)
    author.books  # a relationship (lazy) load
    session.execute(text("select 1"))
    assert len(seen) == 4
    for column, relationship_path, options, is_column, is_relationship, path, public_options in seen:
        assert column == is_column and options == public_options
        assert (relationship_path is not None) == bool(is_relationship)
        if relationship_path is not None:
            assert relationship_path is path
    assert seen[0][2] == [option] and seen[1][0] and seen[2][1] is not None and seen[3][2] == []


def test_is_plain_select_is_true_for_a_plain_get_only(session: Session) -> None:
    """The plan's shortcut applies to ``session.get()`` without options or locking, and
    whenever it applies, ``load_kind`` and ``user_options`` say what it assumes."""
    from sqla_memcache.orm.options import FromCache
    from sqlalchemy.orm import selectinload
    seen: List[Any] = []

    def look(state: Any) -> None:
        if state.is_select:
            seen.append((_compat.is_plain_select(state.statement), _compat.load_kind(state),
                         list(_compat.user_options(state)), _compat.for_update_arg(state.statement)))

    event.listen(session, "do_orm_execute", look)
    session.get(Author, 1)                                   # plain: True
    session.expunge_all()
    session.get(Author, 1, options=[selectinload(Author.books)])  # options (and the selectin load): False
    session.expunge_all()
    session.get(Author, 1, with_for_update=True)             # locking: False (SQLite ignores FOR UPDATE)
    session.expunge_all()
    session.execute(select(Author).options(FromCache())).scalars().all()  # a user option: False
    session.expunge_all()
    author = session.get(Author, 1)                          # plain: True
    session.expire(author, ["name"])
    author.name                                              # a column load: False
    author.books                                             # a lazy load: False
    plain = [entry[0] for entry in seen]
    # get, get with options and its selectin load, locking get, FromCache query, get, column load, lazy load
    assert plain == [True, False, False, False, False, True, False, False]
    for is_plain, kind, options, for_update in seen:
        if is_plain:
            assert kind == (False, None) and options == [] and for_update is None


def test_session_info_is_the_info_dict_once_made_and_never_makes_it() -> None:
    fresh = Session()
    assert _compat.session_info(fresh) is None and "info" not in fresh.__dict__
    fresh.info["x"] = 1
    assert _compat.session_info(fresh) is fresh.info
    given = Session(info={"y": 2})
    assert _compat.session_info(given) == {"y": 2}


def test_identity_dict_answers_in_as_the_identity_map_does(session: Session) -> None:
    raw = _compat.identity_dict(session.identity_map)
    assert raw is not session.identity_map, "SQLAlchemy's IdentityMap._dict is gone: the fallback is used"
    author = session.get(Author, 1)
    key = sa.inspect(author).key
    assert key in raw and key in session.identity_map
    session.expunge(author)
    assert key not in raw and key not in session.identity_map


def test_detach_new_undoes_attach_committed(session: Session) -> None:
    """``detach_new`` after ``attach_committed``: the object is detached and the session
    as before (empty map, no transaction), and the identity can be loaded afresh."""
    key = sa.inspect(session.get(Author, 1)).key
    session.commit()
    session.expunge_all()
    obj = _compat.class_manager(Author).new_instance()
    state = _compat.instance_state(obj)
    state.key = key
    obj.__dict__.update({"id": 1, "name": "Ada"})
    _compat.commit_all_states([(state, obj.__dict__)])
    _compat.attach_committed(session, [(state, obj.__dict__)], committed=True)
    assert state.persistent and obj in session
    _compat.detach_new(session, [(state, obj.__dict__)])
    assert state.detached and obj not in session and len(session.identity_map) == 0
    assert not session.in_transaction() and not session.dirty and not session.new
    loaded = session.get(Author, 1)
    assert loaded is not obj and sa.inspect(loaded).persistent and session.identity_map.get(key) is loaded


def test_states_committed_before_they_are_attached_are_as_loaded(session: Session) -> None:
    """``commit_all_states`` on states in no session, then ``attach_committed(committed=True)``:
    the same persistent, clean objects as the one-step call (what a prepared hit does)."""
    key = sa.inspect(session.get(Author, 1)).key
    session.commit()
    session.expunge_all()
    obj = _compat.class_manager(Author).new_instance()
    state = _compat.instance_state(obj)
    state.key = key
    obj.__dict__.update({"id": 1, "name": "Ada"})
    _compat.commit_all_states([(state, obj.__dict__)])
    assert not state.modified and state.session_id is None and session.identity_map.get(key) is None
    _compat.attach_committed(session, [(state, obj.__dict__)], committed=True)
    assert session.identity_map.get(key) is obj and state.persistent and not session.dirty
    assert not session.in_transaction() and session.get(Author, 1) is obj
    obj.name = "Grace"
    assert session.dirty and state.committed_state == {"name": "Ada"}
