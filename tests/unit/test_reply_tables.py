"""Pure tests of the per-command reply tables in :mod:`sqla_memcache.protocol.replies`.

Every reply is fed byte by byte too: a parser that answers before its last
byte, or that loses its place between calls, fails here.
"""
from __future__ import annotations

from typing import Any, Callable

import pytest

from sqla_memcache.errors import ClientError, ProtocolError, ServerError
from sqla_memcache.protocol import (
    ALL_STORED,
    INCOMPLETE,
    ReplyBuffer,
    lines_reply,
    read_arith_line,
    read_delete_line,
    read_store_line,
    read_touch_line,
    store_lines_reply,
    valid_delete_line,
    valid_store_line,
)

Parser = Callable[[ReplyBuffer], Any]


def whole(parse: Parser, reply: bytes) -> Any:
    rb = ReplyBuffer()
    rb.feed(reply)
    out = parse(rb)
    assert rb.pos == len(rb.buf), "the reply was not consumed"
    return out


def bytewise(parse: Parser, reply: bytes) -> Any:
    rb = ReplyBuffer()
    out: Any = INCOMPLETE
    for i in range(len(reply)):
        assert out is INCOMPLETE, "answered before byte %d of %r" % (i, reply)
        rb.feed(reply[i:i + 1])
        out = parse(rb)
    return out


BOTH = [whole, bytewise]


@pytest.mark.parametrize("feed", BOTH)
class TestStore:
    @pytest.mark.parametrize("line", [b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND", b"SERVER_ERROR out of memory"])
    def test_answers_are_returned(self, feed, line):
        assert feed(read_store_line, line + b"\r\n") == line

    @pytest.mark.parametrize("line, error", [(b"CLIENT_ERROR bad data chunk", ClientError), (b"ERROR", ClientError),
                                             (b"DELETED", ProtocolError), (b"VALUE k 0 1", ProtocolError)])
    def test_others_raise(self, feed, line, error):
        with pytest.raises(error):
            feed(read_store_line, line + b"\r\n")

    def test_stored_is_not_taken_from_a_longer_line(self, feed):
        with pytest.raises(ProtocolError):
            feed(read_store_line, b"STOREDX\r\n")


def test_stored_leaves_the_next_reply_in_the_buffer():
    rb = ReplyBuffer()
    rb.feed(b"STORED\r\nNOT_STORED\r\n")
    assert read_store_line(rb) == b"STORED" and read_store_line(rb) == b"NOT_STORED"


def test_valid_lines():
    assert valid_store_line(b"EXISTS") and not valid_store_line(b"DELETED")
    assert valid_delete_line(b"NOT_FOUND") and valid_delete_line(b"SERVER_ERROR x") and not valid_delete_line(b"STORED")


@pytest.mark.parametrize("feed", BOTH)
class TestOneLine:
    def test_delete(self, feed):
        assert feed(read_delete_line, b"DELETED\r\n") == b"DELETED"
        assert feed(read_delete_line, b"NOT_FOUND\r\n") == b"NOT_FOUND"
        with pytest.raises(ProtocolError):
            feed(read_delete_line, b"TOUCHED\r\n")

    def test_touch(self, feed):
        assert feed(read_touch_line, b"TOUCHED\r\n") == b"TOUCHED"
        with pytest.raises(ProtocolError):
            feed(read_touch_line, b"DELETED\r\n")
        with pytest.raises(ServerError):
            feed(read_touch_line, b"SERVER_ERROR busy\r\n")

    @pytest.mark.parametrize("line", [b"0", b"18446744073709551615", b"NOT_FOUND",
                                      b"CLIENT_ERROR cannot increment or decrement non-numeric value",
                                      b"SERVER_ERROR out of memory"])
    def test_arith_answers_are_returned(self, feed, line):
        assert feed(read_arith_line, line + b"\r\n") == line

    @pytest.mark.parametrize("line, error", [(b"STORED", ProtocolError), (b"-1", ProtocolError), (b"ERROR", ClientError)])
    def test_arith_others_raise(self, feed, line, error):
        with pytest.raises(error):
            feed(read_arith_line, line + b"\r\n")


@pytest.mark.parametrize("feed", BOTH)
class TestPipelined:
    def test_all_stored_in_one_comparison(self, feed):
        out = feed(store_lines_reply(3), b"STORED\r\n" * 3)
        assert out is ALL_STORED if feed is whole else out == [b"STORED"] * 3

    def test_mixed_answers_are_listed_in_order(self, feed):
        reply = b"STORED\r\nNOT_STORED\r\nSERVER_ERROR object too large for cache\r\n"
        assert feed(store_lines_reply(3), reply) == [b"STORED", b"NOT_STORED", b"SERVER_ERROR object too large for cache"]

    def test_a_foreign_line_raises(self, feed):
        with pytest.raises(ProtocolError):
            feed(store_lines_reply(2), b"STORED\r\nDELETED\r\n")

    def test_deletes(self, feed):
        parse = lines_reply(2, valid_delete_line)
        assert feed(parse, b"DELETED\r\nNOT_FOUND\r\n") == [b"DELETED", b"NOT_FOUND"]


def test_lines_reply_rewinds_when_incomplete():
    rb = ReplyBuffer()
    parse = lines_reply(2, valid_delete_line)
    rb.feed(b"DELETED\r\nNOT_")
    assert parse(rb) is INCOMPLETE and rb.pos == 0
    rb.feed(b"FOUND\r\n")
    assert parse(rb) == [b"DELETED", b"NOT_FOUND"]


def test_all_stored_needs_exactly_count_lines():
    rb = ReplyBuffer()
    rb.feed(b"STORED\r\n" * 2)
    assert store_lines_reply(3)(rb) is INCOMPLETE
    assert rb.need == len(b"STORED\r\n") * 3
    rb.feed(b"STORED\r\n")
    # the last chunk is queued, not joined: the general reader answers with the lines
    assert store_lines_reply(3)(rb) == [b"STORED"] * 3


def test_a_retrieval_line_longer_than_the_limit_is_refused_at_the_limit():
    from sqla_memcache.protocol import MAX_LINE, RetrievalReply

    rb = ReplyBuffer()
    rb.feed(b"X" * (MAX_LINE + 1))
    assert RetrievalReply([b"k"])(rb) is INCOMPLETE  # it may still end in the next byte
    rb = ReplyBuffer()
    rb.feed(b"X" * (MAX_LINE + 2))
    with pytest.raises(ProtocolError, match="longer than"):
        RetrievalReply([b"k"])(rb)


def test_a_raw_reply_opening_with_an_empty_line_ends_at_its_terminator_at_once():
    """``lru_crawler metadump`` lines end in \\n alone; an empty one first must not hide the END."""
    from sqla_memcache.protocol import UntilReply

    rb = ReplyBuffer()
    rb.feed(b"\nEND\r\n")
    assert UntilReply(b"END")(rb) == b"\nEND\r\n"
