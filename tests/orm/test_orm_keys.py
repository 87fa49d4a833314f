"""Keys: always valid memcached keys, stable across processes, distinct for distinct statements."""
from __future__ import annotations

import multiprocessing

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import aliased, defer, joinedload, selectinload

from orm_models import Actor, Film, Language
from sqla_memcache.orm import keys


def statements():
    """A varied set of statements; each must get its own fingerprint."""
    return [
        (select(Film), None),
        (select(Film).where(Film.title == "x"), None),
        (select(Film).where(Film.title == "y"), None),
        (select(Film).options(selectinload(Film.actors)), None),
        (select(Film).options(joinedload(Film.actors)), None),
        (select(Film).options(defer(Film.title)), None),
        (select(Film).join(Film.actors).where(Actor.name.like("%a%")), None),
        (select(Film.film_id, Film.title).order_by(Film.title.desc()).limit(5), None),
        (select(Film.film_id, Film.title).order_by(Film.title.desc()).limit(6), None),
        (select(func.count()).select_from(Film), None),
        (select(aliased(Film)).where(Film.film_id.in_([1, 2, 3])), None),
        (select(Film).where(Film.film_id.in_([1, 2])), None),
        (select(Film).where(Film.film_id == bindparam("pk")), {"pk": 1}),
        (select(Film).where(Film.film_id == bindparam("pk")), {"pk": 2}),
        (select(Language).where(Language.name == "日本語"), None),
        (select(Film).where(Film.title.in_(select(Actor.name).where(Actor.actor_id > 3))), None),
    ]


def fingerprints():
    return [keys.statement_fingerprint(stmt, params) for stmt, params in statements()]


def test_fingerprints_are_distinct_and_deterministic():
    found = fingerprints()
    assert None not in found
    assert len(set(found)) == len(found)
    assert found == fingerprints()


def test_fingerprints_are_the_same_in_another_process():
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        assert pool.apply(_fingerprints_elsewhere) == fingerprints()


def _fingerprints_elsewhere():
    import test_orm_keys

    return test_orm_keys.fingerprints()


NAMESPACE = st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters=":"),
                    min_size=1, max_size=100)


@given(namespace=NAMESPACE, kind=st.sampled_from(["q", "o", "tv", "rv", "dv"]), part=st.text(max_size=400))
def test_make_key_is_always_valid(namespace, kind, part):
    key = keys.make_key(namespace, kind, part)
    assert keys.is_valid_key(key)
    assert key.startswith(namespace + ":" + kind + ":")
    assert key == keys.make_key(namespace, kind, part)


@given(part=st.text(max_size=300), other=st.text(max_size=300))
def test_different_parts_give_different_keys(part, other):
    if part != other:
        assert keys.make_key("ns", "q", part) != keys.make_key("ns", "q", other)


@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(part=st.text(min_size=1, max_size=400))
def test_memcached_accepts_every_key(memcached, part):
    from support.clients import make_client

    client = make_client(memcached.servers, strict=True)
    key = keys.make_key("ns", "q", part)
    assert client.set(key, b"v")
    assert client.get(key) == b"v"


def test_identity_strings():
    assert keys.identity_string([7]) == "(7)"
    assert keys.identity_string([1, "b"]) == "(1)(b)"
    assert keys.object_part(Film, (7,)) == "orm_models.Film:(7)"


@pytest.mark.parametrize("bad", ["", "has space", "a:b", "ü", "x" * 101])
def test_invalid_namespaces_are_refused(bad):
    with pytest.raises(ValueError):
        keys.validate_namespace(bad)


@pytest.mark.parametrize("text, parts", [("(7)", ("7",)), ("(1)(b)", ("1", "b")), ("(ü x)", ("ü x",))])
def test_parse_identity(text, parts):
    assert keys.parse_identity(text) == parts
    assert keys.identity_string(parts) == text


@pytest.mark.parametrize("bad", ["", "7", "(7", "(7)x", "x(7)", "((7))"])
def test_parse_identity_refuses_malformed(bad):
    with pytest.raises(ValueError):
        keys.parse_identity(bad)
