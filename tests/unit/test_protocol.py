"""Pure tests of :mod:`sqla_memcache.protocol`: byte strings in, typed replies out.

No sockets: every reply is fed to a :class:`ReplyBuffer` by hand, in every
split a network could produce.
"""
from __future__ import annotations

import random
from typing import Callable, List, Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sqla_memcache import protocol
from sqla_memcache.errors import ClientError, ProtocolError, ServerError
from sqla_memcache.protocol import (
    INCOMPLETE,
    MAX_LINE,
    Item,
    ReplyBuffer,
    arith_command,
    delete_command,
    key_has_bad_bytes,
    parse_arith_reply,
    parse_line,
    parse_retrieval,
    parse_stats,
    parse_store_reply,
    parse_until,
    retrieval_command,
    simple_command,
    storage_command,
    touch_command,
)

Parser = Callable[[ReplyBuffer], object]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def chunks_at(data: bytes, cuts: Sequence[int]) -> List[bytes]:
    """*data* cut at the given offsets (empty pieces dropped)."""
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:]) if b > a]


def drive(parsers: Sequence[Parser], pieces: Sequence[bytes]) -> list:
    """Feed *pieces* one by one, running the parsers in order as their replies complete.

    Asserts that an INCOMPLETE parse consumes nothing (its position may be
    re-based when chunks are joined), as a caller feeding more bytes relies on.
    """
    rb = ReplyBuffer()
    results: list = []
    todo = list(parsers)
    for piece in pieces:
        rb.feed(piece)
        while todo:
            before = rb.available()
            result = todo[0](rb)
            if result is INCOMPLETE:
                assert rb.available() == before
                break
            results.append(result)
            todo.pop(0)
    assert not todo, "replies left unparsed: %r" % (todo,)
    assert rb.available() == 0
    return results


def every_split(data: bytes):
    """One piece, byte by byte, and every two-piece split."""
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]


def retrieval(rb: ReplyBuffer):
    return parse_retrieval(rb)


# --------------------------------------------------------------------------
# encoding
# --------------------------------------------------------------------------

class TestEncoders:
    def test_set(self):
        assert storage_command(b"set", b"k", 5, 60, b"abc") == b"set k 5 60 3\r\nabc\r\n"

    @pytest.mark.parametrize("cmd", [b"set", b"add", b"replace", b"append", b"prepend"])
    def test_each_storage_command(self, cmd):
        assert storage_command(cmd, b"key", 0, 0, b"v") == cmd + b" key 0 0 1\r\nv\r\n"

    def test_cas(self):
        assert storage_command(b"cas", b"k", 0, 0, b"abc", cas=99) == b"cas k 0 0 3 99\r\nabc\r\n"

    def test_cas_zero_is_sent(self):
        assert storage_command(b"cas", b"k", 0, 0, b"x", cas=0) == b"cas k 0 0 1 0\r\nx\r\n"

    def test_noreply(self):
        assert storage_command(b"set", b"k", 0, 0, b"abc", noreply=True) == b"set k 0 0 3 noreply\r\nabc\r\n"

    def test_cas_and_noreply(self):
        assert (
            storage_command(b"cas", b"k", 1, 2, b"abc", cas=12345678901234, noreply=True)
            == b"cas k 1 2 3 12345678901234 noreply\r\nabc\r\n"
        )

    def test_empty_value(self):
        assert storage_command(b"set", b"k", 0, 0, b"") == b"set k 0 0 0\r\n\r\n"

    def test_length_counts_crlf_inside_data(self):
        data = b"a\r\nEND\r\n"
        assert storage_command(b"set", b"k", 16, 0, data) == b"set k 16 0 8\r\n" + data + b"\r\n"

    def test_large_flags_and_negative_exptime(self):
        assert storage_command(b"set", b"k", 2**32 - 1, -1, b"x") == b"set k 4294967295 -1 1\r\nx\r\n"

    def test_get_one_key(self):
        assert retrieval_command(b"get", [b"a"]) == b"get a\r\n"

    def test_get_many_keys(self):
        assert retrieval_command(b"get", [b"a", b"bb", b"ccc"]) == b"get a bb ccc\r\n"

    def test_gets_many_keys(self):
        assert retrieval_command(b"gets", (b"x", b"y")) == b"gets x y\r\n"

    def test_delete(self):
        assert delete_command(b"k") == b"delete k\r\n"

    def test_delete_noreply(self):
        assert delete_command(b"k", noreply=True) == b"delete k noreply\r\n"

    def test_incr(self):
        assert arith_command(b"incr", b"n", 1) == b"incr n 1\r\n"

    def test_decr_noreply(self):
        assert arith_command(b"decr", b"n", 7, noreply=True) == b"decr n 7 noreply\r\n"

    def test_incr_max_delta(self):
        assert arith_command(b"incr", b"n", 2**64 - 1) == b"incr n 18446744073709551615\r\n"

    def test_touch(self):
        assert touch_command(b"k", 300) == b"touch k 300\r\n"

    def test_touch_noreply(self):
        assert touch_command(b"k", 0, noreply=True) == b"touch k 0 noreply\r\n"

    def test_simple_command_mixes_str_and_bytes(self):
        assert simple_command("stats", b"slabs") == b"stats slabs\r\n"
        assert simple_command("version") == b"version\r\n"
        assert simple_command("lru_crawler", "metadump", "all") == b"lru_crawler metadump all\r\n"


class TestKeyHasBadBytes:
    BAD = [bytes([b]) for b in range(0x00, 0x21)] + [b"\x7f"]

    @pytest.mark.parametrize("bad", BAD, ids=lambda b: "0x%02x" % b[0])
    @pytest.mark.parametrize("where", ["start", "middle", "end", "alone"])
    def test_forbidden_bytes(self, bad, where):
        key = {"start": bad + b"key", "middle": b"ke" + bad + b"y", "end": b"key" + bad, "alone": bad}[where]
        assert key_has_bad_bytes(key)

    @pytest.mark.parametrize("name,key", [("space", b"a b"), ("cr", b"a\rb"), ("lf", b"a\nb"),
                                          ("nul", b"a\x00b"), ("del", b"a\x7fb"), ("crlf", b"a\r\nset x")])
    def test_named_cases(self, name, key):
        assert key_has_bad_bytes(key)

    def test_printable_ascii_ok(self):
        assert not key_has_bad_bytes(bytes(range(0x21, 0x7F)))

    def test_high_bytes_ok(self):
        assert not key_has_bad_bytes(bytes(range(0x80, 0x100)))
        for b in range(0x80, 0x100):
            assert not key_has_bad_bytes(b"k" + bytes([b]))

    def test_utf8_key_ok(self):
        assert not key_has_bad_bytes("clé-ключ-鍵".encode("utf-8"))

    def test_empty_key_has_no_bad_byte(self):
        assert not key_has_bad_bytes(b"")

    @given(st.binary(), st.sampled_from(BAD), st.binary())
    def test_property_any_forbidden_byte_flagged(self, head, bad, tail):
        assert key_has_bad_bytes(head + bad + tail)

    @given(st.binary().map(lambda b: bytes(x for x in b if 0x20 < x != 0x7F)))
    def test_property_allowed_bytes_pass(self, key):
        assert not key_has_bad_bytes(key)


# --------------------------------------------------------------------------
# ReplyBuffer framing
# --------------------------------------------------------------------------

class TestReplyBuffer:
    def test_line_and_block(self):
        rb = ReplyBuffer()
        rb.feed(b"hello\r\nabc\r\n")
        assert rb.line() == b"hello"
        assert rb.block(3) == b"abc"
        assert rb.available() == 0

    def test_line_none_until_crlf(self):
        rb = ReplyBuffer()
        rb.feed(b"hel")
        assert rb.line() is None
        rb.feed(b"lo\r")
        assert rb.line() is None
        rb.feed(b"\nrest")
        assert rb.line() == b"hello"
        assert rb.available() == 4

    def test_block_waits_for_trailing_crlf(self):
        rb = ReplyBuffer()
        rb.feed(b"abc")
        assert rb.block(3) is None
        rb.feed(b"\r")
        assert rb.block(3) is None
        rb.feed(b"\n")
        assert rb.block(3) == b"abc"

    def test_block_not_terminated(self):
        rb = ReplyBuffer()
        rb.feed(b"abcXY")
        with pytest.raises(ProtocolError):
            rb.block(3)

    def test_begin_rewind(self):
        rb = ReplyBuffer()
        rb.feed(b"one\r\ntwo\r\n")
        rb.begin()
        assert rb.line() == b"one"
        rb.rewind()
        assert rb.line() == b"one"
        rb.begin()
        assert rb.line() == b"two"
        rb.rewind()
        assert rb.line() == b"two"

    def test_rewind_across_merge(self):
        rb = ReplyBuffer()
        rb.feed(b"first\r\nsec")
        assert rb.line() == b"first"
        rb.begin()
        rb.feed(b"ond\r\nthi")
        assert rb.line() == b"second"
        rb.rewind()
        assert rb.line() == b"second"
        rb.feed(b"rd\r\n")
        assert rb.line() == b"third"

    def test_available_and_clear(self):
        rb = ReplyBuffer()
        rb.feed(b"ab\r\n")
        rb.feed(b"cd")
        assert rb.available() == 6
        rb.clear()
        assert rb.available() == 0
        assert rb.line() is None

    def test_empty_line(self):
        rb = ReplyBuffer()
        rb.feed(b"\r\nX")
        assert rb.line() == b""
        assert rb.available() == 1

    def test_empty_line_split_across_chunks(self):
        rb = ReplyBuffer()
        rb.feed(b"\r")
        rb.feed(b"\n")
        assert rb.line() == b""
        assert rb.is_empty()

    def test_block_whose_last_byte_is_in_the_next_chunk(self):
        rb = ReplyBuffer()
        rb.feed(b"abc\r")
        rb.feed(b"\n")
        assert rb.block(3) == b"abc"
        assert rb.is_empty()

    def test_is_empty(self):
        rb = ReplyBuffer()
        assert rb.is_empty()
        rb.feed(b"X\r\n")
        assert not rb.is_empty()
        rb.feed(b"Y")  # queued behind the first chunk
        assert rb.line() == b"X"
        assert not rb.is_empty()  # the first chunk is consumed, the second is not
        rb.feed(b"\r\n")
        assert rb.line() == b"Y"
        assert rb.is_empty()

    def test_take_block_within_the_buffer(self):
        rb = ReplyBuffer()
        rb.feed(b"VALUE k 0 3\r\nabc\r\n")
        assert rb.take_block(13, 3) == b"abc"
        assert rb.available() == 0 and rb.is_empty()
        rb = ReplyBuffer()
        rb.feed(b"VALUE k 0 3\r\nabc\r\nEND\r\n")
        assert rb.take_block(13, 3) == b"abc"
        assert rb.line() == b"END"

    def test_take_block_not_terminated_within_the_buffer(self):
        rb = ReplyBuffer()
        rb.feed(b"VALUE k 0 3\r\nabcXY")
        with pytest.raises(ProtocolError):
            rb.take_block(13, 3)

    def test_max_line_boundary(self):
        rb = ReplyBuffer()
        rb.feed(b"x" * MAX_LINE)
        assert rb.line() is None  # at the limit: still waiting
        rb.feed(b"x")
        with pytest.raises(ProtocolError):
            rb.line()


# --------------------------------------------------------------------------
# parse_retrieval
# --------------------------------------------------------------------------

TRICKY = b"a\r\nEND\r\nVALUE x 0 1\r\n\r\n"  # data that looks like protocol
GET_REPLY = b"VALUE key 16 " + str(len(TRICKY)).encode() + b"\r\n" + TRICKY + b"\r\nEND\r\n"
GETS_REPLY = (
    b"VALUE a 0 3 101\r\nabc\r\n"
    b"VALUE b 2 0 102\r\n\r\n"
    b"VALUE c 1 2 18446744073709551615\r\n\r\n\r\n"
    b"END\r\n"
)
GETS_ITEMS = [
    Item(b"a", 0, b"abc", 101),
    Item(b"b", 2, b"", 102),
    Item(b"c", 1, b"\r\n", 2**64 - 1),
]


class TestParseRetrieval:
    def test_empty_reply(self):
        assert drive([retrieval], [b"END\r\n"]) == [[]]

    def test_single_value(self):
        assert drive([retrieval], [b"VALUE k 5 3\r\nabc\r\nEND\r\n"]) == [[Item(b"k", 5, b"abc", None)]]

    def test_zero_byte_value(self):
        assert drive([retrieval], [b"VALUE k 0 0\r\n\r\nEND\r\n"]) == [[Item(b"k", 0, b"", None)]]

    def test_multi_value_with_cas(self):
        assert drive([retrieval], [GETS_REPLY]) == [GETS_ITEMS]

    def test_key_with_high_bytes(self):
        key = "ключ".encode("utf-8")
        reply = b"VALUE " + key + b" 0 1\r\nx\r\nEND\r\n"
        assert drive([retrieval], [reply]) == [[Item(key, 0, b"x", None)]]

    @pytest.mark.parametrize("reply,items", [
        (GET_REPLY, [Item(b"key", 16, TRICKY, None)]),
        (GETS_REPLY, GETS_ITEMS),
        (b"END\r\n", []),
    ], ids=["tricky-data", "gets-multi", "empty"])
    def test_every_split(self, reply, items):
        for pieces in every_split(reply):
            assert drive([retrieval], pieces) == [items], pieces

    def test_every_three_piece_split(self):
        reply = b"VALUE k 0 4\r\n\r\n\r\n\r\nEND\r\n"
        for i in range(1, len(reply)):
            for j in range(i + 1, len(reply)):
                pieces = chunks_at(reply, [i, j])
                assert drive([retrieval], pieces) == [[Item(b"k", 0, b"\r\n\r\n", None)]], pieces

    def test_random_splits(self):
        rng = random.Random(1234)
        reply = GETS_REPLY + GET_REPLY
        for _ in range(300):
            cuts = rng.sample(range(1, len(reply)), rng.randint(1, 12))
            assert drive([retrieval, retrieval], chunks_at(reply, cuts)) == [
                GETS_ITEMS, [Item(b"key", 16, TRICKY, None)]
            ]

    def test_large_value_in_4k_chunks(self):
        rng = random.Random(7)
        data = rng.randbytes(200 * 1024 - 15) + b"\r\nEND\r\nVALUE \r\n"
        assert len(data) == 200 * 1024
        reply = b"VALUE big 1 %d 77\r\n" % len(data) + data + b"\r\nEND\r\n"
        pieces = [reply[i:i + 4096] for i in range(0, len(reply), 4096)]
        assert len(pieces) > 50
        assert drive([retrieval], pieces) == [[Item(b"big", 1, data, 77)]]

    def test_large_value_byte_counts_during_feed(self):
        data = b"z" * 50000
        reply = b"VALUE big 0 50000\r\n" + data + b"\r\nEND\r\n"
        rb = ReplyBuffer()
        for i in range(0, len(reply), 1000):
            rb.feed(reply[i:i + 1000])
            result = parse_retrieval(rb)
            if i + 1000 < len(reply):
                assert result is INCOMPLETE
                assert rb.available() == i + 1000
        assert result == [Item(b"big", 0, data, None)]
        assert rb.available() == 0

    def test_incomplete_then_more(self):
        rb = ReplyBuffer()
        rb.feed(b"VALUE a 0 3\r\nabc\r\nVALUE b 0 3\r\nde")
        assert parse_retrieval(rb) is INCOMPLETE
        assert rb.available() == len(b"VALUE a 0 3\r\nabc\r\nVALUE b 0 3\r\nde")
        assert parse_retrieval(rb) is INCOMPLETE  # re-parsing without new bytes is harmless
        rb.feed(b"f\r\nEND\r\n")
        assert parse_retrieval(rb) == [Item(b"a", 0, b"abc", None), Item(b"b", 0, b"def", None)]
        assert rb.available() == 0

    def test_back_to_back_in_one_chunk(self):
        rb = ReplyBuffer()
        rb.feed(b"VALUE a 0 1\r\nx\r\nEND\r\nVALUE b 0 1\r\ny\r\nEND\r\nEND\r\nVAL")
        assert parse_retrieval(rb) == [Item(b"a", 0, b"x", None)]
        assert parse_retrieval(rb) == [Item(b"b", 0, b"y", None)]
        assert parse_retrieval(rb) == []
        assert parse_retrieval(rb) is INCOMPLETE
        assert rb.available() == 3
        rb.feed(b"UE c 0 1\r\nz\r\nEND\r\n")
        assert parse_retrieval(rb) == [Item(b"c", 0, b"z", None)]
        assert rb.available() == 0

    def test_back_to_back_every_split(self):
        stream = b"STORED\r\n" + GET_REPLY + b"END\r\n" + b"NOT_FOUND\r\n"
        parsers = [parse_line, retrieval, retrieval, parse_line]
        expected = [b"STORED", [Item(b"key", 16, TRICKY, None)], [], b"NOT_FOUND"]
        for pieces in every_split(stream):
            assert drive(parsers, pieces) == expected

    def test_max_size_allows_equal(self):
        rb = ReplyBuffer()
        rb.feed(b"VALUE k 0 4\r\nabcd\r\nEND\r\n")
        assert parse_retrieval(rb, max_size=4) == [Item(b"k", 0, b"abcd", None)]

    def test_max_size_refuses_larger_before_data_arrives(self):
        rb = ReplyBuffer()
        rb.feed(b"VALUE k 0 1073741824\r\n")
        with pytest.raises(ProtocolError, match="limit"):
            parse_retrieval(rb, max_size=1024 * 1024)


class TestRetrievalHeaderAtTheLineLimit:
    """A VALUE line of exactly MAX_LINE bytes is accepted however it is split; one byte more is not."""

    @staticmethod
    def header(length: int) -> bytes:
        line = b"VALUE " + b"k" * (length - 10) + b" 0 1"
        assert len(line) == length
        return line

    @pytest.mark.parametrize("cut", [-1, 0, 1])  # the chunk ends just before, at, or after the "\r"
    def test_longest_header_split_at_its_end(self, cut):
        line = self.header(MAX_LINE)
        reply = line + b"\r\nx\r\nEND\r\n"
        at = len(line) + 1 + cut
        for parse in (parse_retrieval, protocol.RetrievalReply()):
            rb = ReplyBuffer()
            rb.feed(reply[:at])
            rb.feed(reply[at:])
            assert parse(rb) == [Item(line[6:-4], 0, b"x", None)]

    def test_longest_header_waits_for_its_last_byte(self):
        line = self.header(MAX_LINE)
        for parse in (parse_retrieval, protocol.RetrievalReply()):
            rb = ReplyBuffer()
            rb.feed(line + b"\r")  # MAX_LINE + 1 bytes, no line end yet: not too long
            assert parse(rb) is INCOMPLETE
            rb.feed(b"\nx\r\nEND\r\n")
            assert parse(rb) == [Item(line[6:-4], 0, b"x", None)]

    def test_longer_header_is_refused(self):
        line = self.header(MAX_LINE + 1)
        rb = ReplyBuffer()
        rb.feed(line + b"\r")
        rb.feed(b"\nx\r\nEND\r\n")
        with pytest.raises(ProtocolError):
            protocol.RetrievalReply()(rb)


class TestParseRetrievalMalformed:
    @pytest.mark.parametrize("reply, message", [
        (b"VALUE k\r\n", "malformed VALUE line"),
        (b"VALUE k 0 x\r\nEND\r\n", "malformed VALUE line"),
        (b"HELLO\r\n", "unexpected reply to get"),
    ])
    def test_the_error_says_what_was_wrong(self, reply, message):
        for parse in (parse_retrieval, protocol.RetrievalReply()):
            rb = ReplyBuffer()
            rb.feed(reply)
            with pytest.raises(ProtocolError, match=message):
                parse(rb)

    @pytest.mark.parametrize("reply", [
        b"VALUE k 0\r\nEND\r\n",                      # too few fields
        b"VALUE k\r\n",
        b"VALUE k 0 1 2 3\r\nx\r\nEND\r\n",          # too many fields
        b"VALUE k x 1\r\nx\r\nEND\r\n",              # non-numeric flags
        b"VALUE k 0 y\r\nx\r\nEND\r\n",              # non-numeric length
        b"VALUE k 0 1.5\r\nx\r\nEND\r\n",
        b"VALUE k 0 \r\nx\r\nEND\r\n",               # empty length
        b"VALUE k 0 1 cas\r\nx\r\nEND\r\n",          # non-numeric cas
        b"VALUE k 0 -1\r\nEND\r\n",                  # negative length
        b"VALUE k -1 1\r\nx\r\nEND\r\n",             # negative flags
        b"VALUE k 0 3\r\nabcdEND\r\n",               # block not followed by \r\n
        b"VALUE k 0 3\r\nabc\nEND\r\n",
        b"VALUE k 0 2\r\nabc\r\nEND\r\n",            # length shorter than data
        b"HELLO\r\n",                                # garbage instead of VALUE/END
        b"STORED\r\n",
        b"VALUE\r\n",
        b"value k 0 1\r\nx\r\nEND\r\n",              # tokens are case-sensitive
        b"END \r\n",
        b"VALUE a 0 1\r\nx\r\nBOGUS\r\n",            # garbage after a good item
        b"\r\nEND\r\n",                              # an empty line
    ])
    def test_protocol_error(self, reply):
        rb = ReplyBuffer()
        rb.feed(reply)
        with pytest.raises(ProtocolError):
            parse_retrieval(rb)

    @pytest.mark.parametrize("reply", [
        b"VALUE k x 1\r\nx\r\nEND\r\n",
        b"VALUE k 0 3\r\nabcdEND\r\n",
        b"HELLO\r\n",
    ])
    def test_protocol_error_when_fed_byte_by_byte(self, reply):
        rb = ReplyBuffer()
        with pytest.raises(ProtocolError):
            for i in range(len(reply)):
                rb.feed(reply[i:i + 1])
                parse_retrieval(rb)

    def test_line_longer_than_max_line(self):
        rb = ReplyBuffer()
        rb.feed(b"VALUE " + b"k" * (MAX_LINE + 10))
        with pytest.raises(ProtocolError, match="longer"):
            parse_retrieval(rb)

    def test_line_longer_than_max_line_in_chunks(self):
        rb = ReplyBuffer()
        with pytest.raises(ProtocolError, match="longer"):
            for _ in range(MAX_LINE):  # would be 4 * MAX_LINE bytes: the error comes well before
                rb.feed(b"garb")
                parse_retrieval(rb)
        assert rb.available() <= MAX_LINE + 4

    def test_garbage_after_good_item_when_split(self):
        rb = ReplyBuffer()
        rb.feed(b"VALUE a 0 1\r\nx\r\n")
        assert parse_retrieval(rb) is INCOMPLETE
        rb.feed(b"NOPE\r\n")
        with pytest.raises(ProtocolError):
            parse_retrieval(rb)


@pytest.mark.parametrize("parser", [retrieval, parse_line, parse_stats], ids=["retrieval", "line", "stats"])
class TestErrorReplies:
    def test_server_error(self, parser):
        rb = ReplyBuffer()
        rb.feed(b"SERVER_ERROR out of memory storing object\r\n")
        with pytest.raises(ServerError, match="out of memory storing object"):
            parser(rb)

    def test_client_error(self, parser):
        rb = ReplyBuffer()
        rb.feed(b"CLIENT_ERROR bad data chunk\r\n")
        with pytest.raises(ClientError, match="bad data chunk"):
            parser(rb)

    def test_error(self, parser):
        rb = ReplyBuffer()
        rb.feed(b"ERROR\r\n")
        with pytest.raises(ClientError):
            parser(rb)

    def test_error_split(self, parser):
        rb = ReplyBuffer()
        rb.feed(b"SERVER_ERR")
        assert parser(rb) is INCOMPLETE
        rb.feed(b"OR busy\r")
        assert parser(rb) is INCOMPLETE
        rb.feed(b"\n")
        with pytest.raises(ServerError, match="busy"):
            parser(rb)


def test_server_error_after_value_block():
    rb = ReplyBuffer()
    rb.feed(b"VALUE a 0 1\r\nx\r\nSERVER_ERROR object too large for cache\r\n")
    with pytest.raises(ServerError):
        parse_retrieval(rb)


def test_error_classes_are_memcache_errors():
    from sqla_memcache.errors import MemcacheError

    assert issubclass(ProtocolError, MemcacheError)
    assert issubclass(ServerError, MemcacheError)
    assert issubclass(ClientError, MemcacheError)


def test_incomplete_sentinel():
    assert not INCOMPLETE
    assert repr(INCOMPLETE) == "INCOMPLETE"
    assert protocol.INCOMPLETE is INCOMPLETE


# --------------------------------------------------------------------------
# parse_line, parse_store_reply, parse_arith_reply
# --------------------------------------------------------------------------

class TestParseLine:
    def test_line(self):
        assert drive([parse_line], [b"STORED\r\n"]) == [b"STORED"]

    def test_every_split(self):
        stream = b"STORED\r\nDELETED\r\n42\r\nTOUCHED\r\n"
        for pieces in every_split(stream):
            assert drive([parse_line] * 4, pieces) == [b"STORED", b"DELETED", b"42", b"TOUCHED"]

    def test_incomplete(self):
        rb = ReplyBuffer()
        rb.feed(b"STOR")
        assert parse_line(rb) is INCOMPLETE
        rb.feed(b"ED\r\n")
        assert parse_line(rb) == b"STORED"

    def test_error_prefix_that_is_not_an_error_is_returned(self):
        rb = ReplyBuffer()
        rb.feed(b"ERRORS\r\n")
        assert parse_line(rb) == b"ERRORS"


class TestParseStoreReply:
    @pytest.mark.parametrize("token", [b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND"])
    def test_valid(self, token):
        assert parse_store_reply(token) == token

    @pytest.mark.parametrize("token", [b"DELETED", b"TOUCHED", b"END", b"", b"stored", b"STORED "])
    def test_invalid(self, token):
        with pytest.raises(ProtocolError):
            parse_store_reply(token)

    def test_table(self):
        assert protocol.STORE_REPLIES == {b"STORED", b"NOT_STORED", b"EXISTS", b"NOT_FOUND"}


class TestParseArithReply:
    @pytest.mark.parametrize("line,value", [(b"0", 0), (b"42", 42), (b"18446744073709551615", 2**64 - 1)])
    def test_number(self, line, value):
        assert parse_arith_reply(line) == value

    def test_not_found(self):
        assert parse_arith_reply(b"NOT_FOUND") is None

    @pytest.mark.parametrize("line", [b"STORED", b"", b"4x", b"NOT_FOUND ", b"1.5"])
    def test_garbage(self, line):
        with pytest.raises(ProtocolError):
            parse_arith_reply(line)


# --------------------------------------------------------------------------
# parse_stats
# --------------------------------------------------------------------------

STATS_REPLY = (
    b"STAT pid 1234\r\n"
    b"STAT version 1.6.18\r\n"
    b"STAT rusage_user 0.123456\r\n"
    b"STAT libevent 2.1.12-stable\r\n"
    b"STAT with spaces a b  c\r\n"
    b"STAT empty\r\n"
    b"END\r\n"
)
STATS = {
    "pid": "1234",
    "version": "1.6.18",
    "rusage_user": "0.123456",
    "libevent": "2.1.12-stable",
    "with": "spaces a b  c",
    "empty": "",
}


class TestParseStats:
    def test_stats(self):
        assert drive([parse_stats], [STATS_REPLY]) == [STATS]

    def test_empty(self):
        assert drive([parse_stats], [b"END\r\n"]) == [{}]

    def test_every_split(self):
        for pieces in every_split(STATS_REPLY):
            assert drive([parse_stats], pieces) == [STATS]

    def test_item_lines(self):
        reply = b"ITEM foo [5 b; 0 s]\r\nITEM bar [1 b; 1700000000 s]\r\nEND\r\n"
        assert drive([parse_stats], [reply]) == [{"foo": "[5 b; 0 s]", "bar": "[1 b; 1700000000 s]"}]

    def test_back_to_back(self):
        stream = b"STAT a 1\r\nEND\r\nSTAT b 2\r\nEND\r\n"
        for pieces in every_split(stream):
            assert drive([parse_stats, parse_stats], pieces) == [{"a": "1"}, {"b": "2"}]

    def test_incomplete_keeps_buffer(self):
        rb = ReplyBuffer()
        rb.feed(b"STAT a 1\r\nSTAT b")
        assert parse_stats(rb) is INCOMPLETE
        assert rb.available() == len(b"STAT a 1\r\nSTAT b")
        rb.feed(b" 2\r\nEND\r\n")
        assert parse_stats(rb) == {"a": "1", "b": "2"}

    @pytest.mark.parametrize("reply", [b"STAT a 1\r\nBOGUS\r\nEND\r\n", b"STAT\r\nEND\r\n", b"VALUE k 0 1\r\n"])
    def test_unexpected_line(self, reply):
        rb = ReplyBuffer()
        rb.feed(reply)
        with pytest.raises(ProtocolError):
            parse_stats(rb)


# --------------------------------------------------------------------------
# parse_until
# --------------------------------------------------------------------------

METADUMP = (
    b"key=alpha exp=-1 la=1700000000 cas=1 fetch=no cls=1 size=63\n"
    b"key=b%20c exp=1700000100 la=1700000001 cas=2 fetch=yes cls=1 size=64\n"
    b"key=ENDING exp=-1 la=1700000002 cas=3 fetch=no cls=2 size=100\n"
    b"END\r\n"
)


def until_end(rb):
    return parse_until(rb, b"END")


def until_version(rb):
    return parse_until(rb, b"VERSION")


class TestParseUntil:
    def test_metadump(self):
        assert drive([until_end], [METADUMP]) == [METADUMP]

    def test_metadump_every_split(self):
        for pieces in every_split(METADUMP):
            assert drive([until_end], pieces) == [METADUMP]

    def test_only_terminator(self):
        assert drive([until_end], [b"END\r\n"]) == [b"END\r\n"]

    def test_version(self):
        assert drive([until_version], [b"VERSION 1.6.18\r\n"]) == [b"VERSION 1.6.18\r\n"]

    def test_version_every_split(self):
        for pieces in every_split(b"VERSION 1.6.18\r\n"):
            assert drive([until_version], pieces) == [b"VERSION 1.6.18\r\n"]

    def test_back_to_back(self):
        stream = METADUMP + b"VERSION 1.6.18\r\n" + b"STORED\r\n"
        expected = [METADUMP, b"VERSION 1.6.18\r\n", b"STORED"]
        for pieces in every_split(stream):
            assert drive([until_end, until_version, parse_line], pieces) == expected

    def test_crlf_terminated_lines_before_terminator(self):
        reply = b"line one\r\nline two\r\nEND\r\n"
        assert drive([until_end], [reply]) == [reply]

    def test_incomplete_keeps_buffer(self):
        rb = ReplyBuffer()
        rb.feed(METADUMP[:-3])  # "...\nEN"
        assert until_end(rb) is INCOMPLETE
        assert rb.available() == len(METADUMP) - 3
        rb.feed(METADUMP[-3:-1])  # "...\nEND\r"
        assert until_end(rb) is INCOMPLETE
        rb.feed(METADUMP[-1:])
        assert until_end(rb) == METADUMP
        assert rb.available() == 0

    @pytest.mark.parametrize("reply,exc", [
        (b"SERVER_ERROR busy\r\n", ServerError),
        (b"CLIENT_ERROR bad command line format\r\n", ClientError),
        (b"ERROR\r\n", ClientError),
    ])
    def test_error_first(self, reply, exc):
        for pieces in every_split(reply):
            rb = ReplyBuffer()
            with pytest.raises(exc):
                for piece in pieces:
                    rb.feed(piece)
                    assert until_end(rb) is INCOMPLETE


# --------------------------------------------------------------------------
# RetrievalReply / StatsReply / UntilReply: incremental, bounded by the request
# --------------------------------------------------------------------------

from sqla_memcache.protocol import RetrievalReply, StatsReply, UntilReply  # noqa: E402

MULTI = (
    b"VALUE a 0 3\r\nabc\r\n"
    b"VALUE bb 5 0\r\n\r\n"
    b"VALUE ccc 7 12 99\r\nEND\r\nVALUE x\r\n"
    b"END\r\n"
)
MULTI_ITEMS = [(b"a", 0, b"abc", None), (b"bb", 5, b"", None), (b"ccc", 7, b"END\r\nVALUE x", 99)]


def feed_incrementally(parser, pieces):
    """Feed *pieces*, calling *parser* after each as a connection does; the reply or INCOMPLETE."""
    rb = ReplyBuffer()
    reply = INCOMPLETE
    for piece in pieces:
        assert reply is INCOMPLETE, "parser answered before its last byte"
        rb.feed(piece)
        reply = parser(rb)
    assert rb.available() == 0
    return reply


class TestRetrievalReply:
    def test_every_split(self):
        for pieces in every_split(MULTI):
            assert feed_incrementally(RetrievalReply([b"a", b"bb", b"ccc"]), pieces) == MULTI_ITEMS

    @given(st.lists(st.integers(0, len(MULTI)), max_size=12))
    def test_any_chunking(self, cuts):
        assert feed_incrementally(RetrievalReply(None), chunks_at(MULTI, cuts)) == MULTI_ITEMS

    def test_consumed_blocks_leave_the_buffer(self):
        # each complete block is consumed as soon as it is buffered: the buffer
        # never holds more than the block being received
        rb = ReplyBuffer()
        parser = RetrievalReply([b"k%d" % i for i in range(100)])
        held = []
        for i in range(100):
            rb.feed(b"VALUE k%d 0 1000\r\n" % i + b"x" * 1000 + b"\r\n")
            assert parser(rb) is INCOMPLETE
            held.append(rb.available())
        assert max(held) == 0
        rb.feed(b"END\r\n")
        assert len(parser(rb)) == 100

    def test_block_spanning_many_chunks_is_joined_once(self):
        value = bytes(range(256)) * 40
        reply = b"VALUE k 3 %d\r\n" % len(value) + value + b"\r\nVALUE j 0 1\r\nz\r\nEND\r\n"
        for size in (1, 7, 1000, 4096):
            pieces = [reply[i:i + size] for i in range(0, len(reply), size)]
            rb = ReplyBuffer()
            parser = RetrievalReply([b"k", b"j"])
            for piece in pieces[:-1]:
                rb.feed(piece)
            assert parser(rb) is INCOMPLETE
            rb.feed(pieces[-1])
            assert parser(rb) == [(b"k", 3, value, None), (b"j", 0, b"z", None)]

    @pytest.mark.parametrize("reply", [
        b"VALUE a 0 1\r\nx\r\nVALUE a 0 1\r\ny\r\nEND\r\n",  # the same key twice
        b"VALUE zz 0 1\r\nx\r\nEND\r\n",  # a key not asked for
    ])
    def test_only_asked_keys_each_once(self, reply):
        for pieces in every_split(reply):
            with pytest.raises(ProtocolError, match="not asked for or was already answered"):
                feed_incrementally(RetrievalReply([b"a", b"b"]), pieces)

    def test_stops_at_the_header_of_a_duplicate_before_its_data(self):
        rb = ReplyBuffer()
        parser = RetrievalReply([b"a"])
        rb.feed(b"VALUE a 0 1\r\nx\r\nVALUE a 0 1000000\r\n")
        with pytest.raises(ProtocolError):
            parser(rb)

    def test_max_size_refused_at_the_header(self):
        rb = ReplyBuffer()
        rb.feed(b"VALUE a 0 101\r\n")
        with pytest.raises(ProtocolError, match="exceeds"):
            RetrievalReply([b"a"], max_size=100)(rb)

    def test_data_not_followed_by_crlf_across_chunks(self):
        for pieces in every_split(b"VALUE a 0 3\r\nabcXY"):
            with pytest.raises(ProtocolError, match="not terminated"):
                feed_incrementally(RetrievalReply([b"a"]), pieces)

    def test_error_reply(self):
        rb = ReplyBuffer()
        rb.feed(b"SERVER_ERROR out of memory\r\n")
        with pytest.raises(ServerError):
            RetrievalReply([b"a"])(rb)


class TestStatsReply:
    def test_an_empty_line_is_an_error(self):
        for reply in (b"\r\nEND\r\n", b"\r\n"):
            rb = ReplyBuffer()
            rb.feed(reply)
            with pytest.raises(ProtocolError):
                StatsReply()(rb)

    def test_a_line_of_max_line_bytes_waits_for_its_end(self):
        line = b"STAT a " + b"x" * (MAX_LINE - 7)
        rb = ReplyBuffer()
        rb.feed(line)
        parser = StatsReply()
        assert parser(rb) is INCOMPLETE
        rb.feed(b"\r\nEND\r\n")
        assert parser(rb) == {"a": "x" * (MAX_LINE - 7)}

    def test_every_split(self):
        for pieces in every_split(b"STAT a 1\r\nSTAT b two words\r\nEND\r\n"):
            assert feed_incrementally(StatsReply(), pieces) == {"a": "1", "b": "two words"}

    def test_line_cap(self):
        rb = ReplyBuffer()
        rb.feed(b"STAT a 1\r\n" * 11)
        with pytest.raises(ProtocolError, match="longer than 10 lines"):
            StatsReply(max_lines=10)(rb)

    def test_byte_cap(self):
        rb = ReplyBuffer()
        rb.feed(b"STAT a " + b"1" * 100 + b"\r\n")
        with pytest.raises(ProtocolError, match="50 bytes"):
            StatsReply(max_bytes=50)(rb)


class TestUntilReply:
    def test_every_split(self):
        for pieces in every_split(METADUMP):
            assert feed_incrementally(UntilReply(b"END"), pieces) == METADUMP

    def test_byte_cap(self):
        rb = ReplyBuffer()
        with pytest.raises(ProtocolError, match="longer than 100 bytes"):
            parser = UntilReply(b"END", max_bytes=100)
            for _ in range(10):
                rb.feed(b"key=k exp=-1 la=1 cas=1 fetch=no cls=1 size=60\n")
                assert parser(rb) is INCOMPLETE


class TestParseValueHeader:
    def test_without_cas(self):
        assert protocol.parse_value_header(b"VALUE k 16 3") == (b"k", 16, 3, None)

    def test_with_cas(self):
        assert protocol.parse_value_header(b"VALUE k 0 3 101") == (b"k", 0, 3, 101)
        assert protocol.parse_value_header(b"VALUE k 0 0 0") == (b"k", 0, 0, 0)

    @pytest.mark.parametrize("line", [
        b"VALUE k 0", b"VALUE k", b"VALUE k 0 3 101 7", b"VALUES k 0 3", b"value k 0 3", b"VALUE k x 3",
        b"VALUE k 0 -1", b"VALUE k -1 3", b"VALUE k 0 3 x",
    ])
    def test_malformed(self, line):
        with pytest.raises(ProtocolError):
            protocol.parse_value_header(line)
