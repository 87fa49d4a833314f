"""Pure tests of :mod:`sqla_memcache.orm.keys`: key validity, namespaces, row names, value rendering.

The fingerprints of real statements and memcached's acceptance of the keys are
tested in ``tests/orm/test_orm_keys.py``.
"""
from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, bindparam, column, select, table

from sqla_memcache.orm import keys


class TestIsValidKey:
    def test_length_limit_is_inclusive(self):
        assert keys.is_valid_key("k" * 250)
        assert not keys.is_valid_key("k" * 251)

    @pytest.mark.parametrize("key", ["", "a b", "a\nb", "a\x7fb", "é"])
    def test_invalid(self, key):
        assert not keys.is_valid_key(key)

    def test_make_key_keeps_a_valid_part_and_hashes_another(self):
        assert keys.make_key("ns", "q", "abc") == "ns:q:abc"
        long = "p" * 250
        assert keys.make_key("ns", "q", long) == "ns:q:#" + keys.digest(long)
        assert keys.make_key("ns", "q", "a b") == "ns:q:#" + keys.digest("a b")


class TestValidateNamespace:
    @pytest.mark.parametrize("namespace", ["app", "a", "n" * 100, "my-app_2.v1"])
    def test_valid_is_returned(self, namespace):
        assert keys.validate_namespace(namespace) == namespace

    @pytest.mark.parametrize("namespace", ["", "n" * 101, "a:b", "a b", "é", "a\tb"])
    def test_invalid_is_refused(self, namespace):
        with pytest.raises(ValueError):
            keys.validate_namespace(namespace)


class TestRowIdentity:
    def test_integers_and_uuids_are_kept(self):
        u = uuid.UUID(int=7)
        assert keys.row_identity([7, u]) == (7, u)

    def test_ascii_strings_fold_like_mysql(self):
        assert keys.row_identity(["AbC  ", "x"]) == ("abc", "x")
        assert keys.row_identity([" lead"]) == (" lead",)

    @pytest.mark.parametrize("value", [True, False, 1.5, None, b"x", "é", ("a",)])
    def test_values_without_a_safe_name(self, value):
        assert keys.row_identity([1, value]) is None

    def test_row_version_keys_of_folded_values_are_shared(self):
        a = keys.row_version_key("ns", "film", keys.row_identity(["ABC "]))
        assert a == keys.row_version_key("ns", "film", keys.row_identity(["abc"])) == "ns:rv:film:(abc)"


class TestRenderValue:
    def test_a_string_that_looks_like_an_address_is_rendered(self):
        assert keys.render_value("lives at 0xBEEF") == repr("lives at 0xBEEF")

    def test_plain_values(self):
        assert keys.render_value(None) == "None"
        assert keys.render_value([1, "a"]) == "(1,'a',)"
        assert keys.render_value((b"x", True, 1.5)) == "(b'x',True,1.5,)"

    def test_an_object_with_a_stable_repr_is_rendered_by_it(self):
        assert keys.render_value(Decimal("1.50")) == "Decimal('1.50')"

    def test_tables_are_named_with_their_schema(self):
        metadata = MetaData()
        plain = Table("film", metadata, Column("id", Integer))
        qualified = Table("film", metadata, Column("id", Integer), schema="other")
        assert keys.render_value(plain) == "T:film"
        assert keys.render_value(qualified) == "T:other.film"
        assert keys.render_value(table("film", column("id"))) == "T:film"

    def test_an_object_with_an_address_is_unstable(self):
        with pytest.raises(keys.UnstableKey):
            keys.render_value(object())


class TestFingerprint:
    def test_one_statement_object_with_other_parameters_gets_other_fingerprints(self):
        t = table("film", column("film_id"), column("title"))
        stmt = select(t).where(t.c.film_id == bindparam("pk"))
        first = keys.fingerprint(stmt, {"pk": 1})
        second = keys.fingerprint(stmt, {"pk": 2})
        assert first is not None and second is not None
        assert first[0] == second[0]  # same shape
        assert first[1] != second[1]
        assert keys.fingerprint(stmt, {"pk": 1}) == first
        assert keys.fingerprint(stmt) not in (first, second)  # the bound value None
        assert keys.fingerprint(stmt, {"pk": 2}) == second  # not the one remembered without parameters

    def test_a_statement_executed_again_has_the_same_fingerprint(self):
        t = table("film", column("film_id"))
        stmt = select(t).where(t.c.film_id == 7)
        found = keys.fingerprint(stmt)
        assert found is not None
        assert keys.fingerprint(stmt) == found == keys.fingerprint(select(t).where(t.c.film_id == 7))
        assert keys.fingerprint(select(t).where(t.c.film_id == 8))[1] != found[1]
        assert keys.statement_fingerprint(stmt) == found[1]

    def test_a_callable_bound_value_is_read_at_every_execution(self):
        t = table("film", column("film_id"))
        value = [1]
        stmt = select(t).where(t.c.film_id == bindparam("pk", callable_=lambda: value[0]))
        first = keys.fingerprint(stmt)
        value[0] = 2
        assert keys.fingerprint(stmt) != first
