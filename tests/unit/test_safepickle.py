"""The ORM's allow-listed unpickler and integer-only counter decoding (no memcached, no database)."""
from __future__ import annotations

import datetime
import decimal
import enum
import fractions
import logging
import pickle
import sys
import uuid
import zoneinfo
from collections import OrderedDict

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from sqla_memcache.errors import SerializationError
from sqla_memcache.orm import safepickle
from sqla_memcache.serde import FLAG_INTEGER, FLAG_PICKLE, FLAG_TEXT


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


class Unmapped:
    pass


class _Base(DeclarativeBase):
    pass


class Diary(_Base):
    __tablename__ = "sp_diary"
    diary_id: Mapped[int] = mapped_column(primary_key=True)
    mood: Mapped[Mood] = mapped_column(sa.Enum(Mood))


VALUES = [
    datetime.datetime(2026, 12, 1, 23, 0, tzinfo=datetime.timezone.utc),
    datetime.datetime(2026, 12, 1, 23, 0, tzinfo=zoneinfo.ZoneInfo("Europe/Paris")),
    datetime.date(2026, 12, 1), datetime.time(23, 0), datetime.timedelta(seconds=5),
    decimal.Decimal("0.99"), fractions.Fraction(1, 3), uuid.UUID(int=7), {1, 2}, frozenset({3}),
    bytearray(b"x"), 1 + 2j, OrderedDict(a=1), [1, "a", b"b", None, True, 1.5, (2, 3), {"k": "v"}],
]


@pytest.mark.parametrize("value", VALUES, ids=lambda v: type(v).__name__)
def test_standard_value_types_round_trip(value):
    assert safepickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) == value


def test_mapped_classes_and_their_enum_types_are_allowed_others_refused():
    diary = Diary(diary_id=1, mood=Mood.SAD)
    back = safepickle.loads(pickle.dumps(diary, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(back) is Diary and back.mood is Mood.SAD
    with pytest.raises(safepickle.Refused):
        safepickle.loads(pickle.dumps(Unmapped()))


@pytest.mark.parametrize("module, name", [("os", "system"), ("builtins", "exec"), ("builtins", "eval"),
                                          ("subprocess", "Popen"), ("pickle", "loads"), ("copyreg", "_reconstructor")])
def test_dangerous_globals_are_refused_before_they_are_called(module, name):
    payload = b"\x80\x04c" + module.encode() + b"\n" + name.encode() + b"\n" + b"(S'echo ran'\ntR."
    with pytest.raises(safepickle.Refused):
        safepickle.loads(payload)


def test_getattr_only_for_the_zoneinfo_reconstructor():
    # the classic escape: getattr(object, "__subclasses__")() reaches every class of the process
    payload = b"\x80\x04cbuiltins\ngetattr\ncbuiltins\nobject\nS'__subclasses__'\n\x86R."
    with pytest.raises(safepickle.Refused):
        safepickle.loads(payload)


def test_a_module_not_yet_imported_is_never_imported():
    assert "this_module_does_not_exist_xyz" not in sys.modules
    assert "antigravity" not in sys.modules  # importing it opens a web browser
    for module in ("antigravity", "this_module_does_not_exist_xyz"):
        with pytest.raises(safepickle.Refused):
            safepickle.loads(b"\x80\x04c" + module.encode() + b"\nfly\n.")
        assert module not in sys.modules


def test_refusals_are_counted_and_warned_at_most_once_a_minute(caplog, monkeypatch):
    monkeypatch.setattr(safepickle, "_REFUSALS", safepickle._RateLimited(60))
    with caplog.at_level(logging.WARNING, logger="sqla_memcache.orm.safepickle"):
        for _ in range(5):
            with pytest.raises(safepickle.Refused):
                safepickle.loads(pickle.dumps(Unmapped()))
    assert safepickle.refused_count() == 5
    assert len(caplog.records) == 1


def test_orm_deserialize_gives_bytes_and_integers_only():
    assert safepickle.orm_deserialize(b"k", b"\x80raw", 0) == b"\x80raw"
    assert safepickle.orm_deserialize(b"k", b"123", FLAG_INTEGER) == 123
    for data, flags in [(pickle.dumps(1), FLAG_PICKLE), (b"123", FLAG_TEXT), (b"12a", FLAG_INTEGER),
                        (b"-1", FLAG_INTEGER), (b"1" * 40, FLAG_INTEGER)]:
        with pytest.raises(SerializationError):
            safepickle.orm_deserialize(b"k", data, flags)


def test_the_orm_view_decodes_safely_and_leaves_the_users_client_alone():
    from sqla_memcache import Client
    from sqla_memcache.orm import ORMCache

    client = Client(["127.0.0.1:1"])
    cache = ORMCache(client, namespace="view")
    assert cache.client._deserialize is safepickle.orm_deserialize
    assert client._deserialize is not safepickle.orm_deserialize


def test_the_async_facade_decodes_through_the_allow_list_too():
    from sqla_memcache import AsyncClient, Client
    from sqla_memcache.orm.cache import ORMCache
    from sqla_memcache.orm.safepickle import orm_deserialize

    sync, aclient = Client(["127.0.0.1:1"]), AsyncClient(["127.0.0.1:1"])
    cache = ORMCache(sync, namespace="hardened", async_client=aclient)
    assert cache.client.sync_client._deserialize is orm_deserialize
    assert cache.client.async_client._deserialize is orm_deserialize
    # the application's own clients keep their serde
    assert sync._deserialize is not orm_deserialize and aclient._deserialize is not orm_deserialize
