"""The fast get-reply parsers against the general one (differential, pure, no server).

:class:`OneValueReply` and :class:`FewValuesReply` read the usual reply with a
few bytes operations and hand anything else to :class:`RetrievalReply`; for
every reply -- well formed, split into chunks, corrupt -- they must give what
the general parser gives: the same items, or the same error type.
"""
from __future__ import annotations

import random

import pytest

from sqla_memcache.errors import ClientError, ProtocolError, ServerError
from sqla_memcache.protocol import INCOMPLETE, FewValuesReply, OneValueReply, ReplyBuffer, RetrievalReply, retrieval


def parse(make_parser, reply: bytes, chunks: int = 1, seed: int = 0):
    """Feed *reply* in *chunks* pieces to a parser from *make_parser()*, calling it
    after each piece as a connection does; ``(items, bytes left unread)``, or the error's type."""
    rng = random.Random(seed)
    cuts = sorted(rng.sample(range(1, len(reply)), min(chunks - 1, len(reply) - 1))) if chunks > 1 else []
    pieces = [reply[a:b] for a, b in zip([0] + cuts, cuts + [len(reply)])]
    rb = ReplyBuffer()
    parser = make_parser()
    result = INCOMPLETE
    try:
        for piece in pieces:
            rb.feed(piece)
            result = parser(rb)
            if result is not INCOMPLETE:
                break
    except (ProtocolError, ClientError, ServerError) as exc:
        return type(exc)
    if result is INCOMPLETE:
        return "incomplete"
    assert rb.mark == rb.pos, "the parser left the reply's start marked"
    # (a remembered reply's items come back as the remembered tuple: compared as a list)
    items = list(result) if isinstance(result, tuple) else result
    return items, rb.available()  # (bytes after the reply stay for the next one)


def block(key: bytes, data: bytes, flags: int = 0) -> bytes:
    return b"VALUE %s %d %d\r\n%s\r\n" % (key, flags, len(data), data)


VALUE = b"x\r\nEND\r\n" * 3  # data that looks like the end of a reply


ONE_KEY = [
    block(b"k", b"abc") + b"END\r\n",
    block(b"k", b"", 5) + b"END\r\n",
    block(b"k", VALUE, 2) + b"END\r\n",
    b"END\r\n",
    block(b"other", b"abc") + b"END\r\n",  # a key not asked for
    block(b"k", b"abc") + block(b"k", b"abc") + b"END\r\n",  # twice
    b"VALUE k +1 3\r\nabc\r\nEND\r\n",  # not digits
    b"VALUE k 1_0 3\r\nabc\r\nEND\r\n",
    b"VALUE k 0 +3\r\nabc\r\nEND\r\n",
    b"VALUE k 0 4\r\nabc\r\nEND\r\n",  # length too long
    b"VALUE k 0 2\r\nabc\r\nEND\r\n",  # too short
    b"VALUE k 0 3 77\r\nabc\r\nEND\r\n",  # a cas field
    b"VALUE k 0 3\r\nabcXYEND\r\n",  # data not ended by CRLF
    b"VALUE k 0\r\nabc\r\nEND\r\n",
    b"SERVER_ERROR out of memory\r\n",
    b"CLIENT_ERROR bad command line format\r\n",
    b"STORED\r\n",
    b"END\r\nEND\r\n",
]


@pytest.mark.parametrize("reply", ONE_KEY)
@pytest.mark.parametrize("chunks", [1, 2, 3, 7])
def test_one_value_reply_gives_what_the_general_parser_gives(reply, chunks):
    general = parse(lambda: RetrievalReply((b"k",), 1000, keep=False), reply, chunks)
    fast = parse(lambda: OneValueReply(b"k", 1000), reply, chunks)
    assert fast == general


def test_one_value_reply_refuses_a_value_over_the_limit_as_the_general_parser():
    reply = block(b"k", b"a" * 11) + b"END\r\n"
    assert parse(lambda: OneValueReply(b"k", 10), reply) is ProtocolError
    assert parse(lambda: OneValueReply(b"k", 11), reply) == ([(b"k", 0, b"a" * 11, None)], 0)


FEW_KEYS = (b"a", b"b", b"c")

FEW = [
    block(b"a", b"1") + block(b"b", b"22", 2) + block(b"c", VALUE) + b"END\r\n",
    block(b"c", b"1") + block(b"a", b"") + b"END\r\n",
    b"END\r\n",
    block(b"a", b"1") + block(b"a", b"1") + b"END\r\n",  # twice
    block(b"a", b"1") + block(b"z", b"1") + b"END\r\n",  # not asked for
    block(b"a", b"1") + b"VALUE b 0 9\r\n1\r\nEND\r\n",  # a length past the end
    block(b"a", b"1") + b"VALUE b 0 1\r\n1XYEND\r\n",
    block(b"a", b"1") + b"VALUE b -0 1\r\n1\r\nEND\r\n",
    block(b"a", b"1") + b"VALUE b 0 1 5\r\n1\r\nEND\r\n",
    block(b"a", b"1") + b"VALUX b 0 1\r\n1\r\nEND\r\n",
    block(b"a", b"1") + b"SERVER_ERROR busy\r\n",
    block(b"a", b"1") + b"END\r\nEND\r\n",
]


@pytest.mark.parametrize("reply", FEW)
@pytest.mark.parametrize("chunks", [1, 2, 5])
def test_few_values_reply_gives_what_the_general_parser_gives(reply, chunks):
    general = parse(lambda: RetrievalReply(FEW_KEYS, 1000, keep=False), reply, chunks)
    fast = parse(lambda: FewValuesReply(FEW_KEYS, 1000), reply, chunks)
    assert fast == general


def primed(parser, reply: bytes):
    """*parser* after it read *reply* (so that it remembers it), as a factory for :func:`parse`."""
    assert parse(lambda: parser, reply) != "incomplete"
    return lambda: parser


@pytest.mark.parametrize("reply", ONE_KEY + [block(b"k", b"xyz") + b"END\r\n", block(b"k", b"abc", 1) + b"END\r\n",
                                             block(b"k", b"abcd") + b"END\r\n"])
@pytest.mark.parametrize("chunks", [1, 3])
def test_a_one_value_reply_that_remembers_a_header_still_reads_every_reply_alike(reply, chunks):
    """After reading ``VALUE k 0 3``, the remembered header must not decide any other reply."""
    general = parse(lambda: RetrievalReply((b"k",), 1000, keep=False), reply, chunks)
    fast = parse(primed(OneValueReply(b"k", 1000), block(b"k", b"abc") + b"END\r\n"), reply, chunks)
    assert fast == general


@pytest.mark.parametrize("reply", FEW + [block(b"a", b"2") + block(b"b", b"22", 2) + block(b"c", VALUE) + b"END\r\n"])
@pytest.mark.parametrize("chunks", [1, 3])
def test_a_few_values_reply_that_remembers_a_reply_still_reads_every_reply_alike(reply, chunks):
    general = parse(lambda: RetrievalReply(FEW_KEYS, 1000, keep=False), reply, chunks)
    fast = parse(primed(FewValuesReply(FEW_KEYS, 1000), FEW[0]), reply, chunks)
    assert fast == general


def test_a_remembered_reply_is_what_reads_the_same_reply_again():
    """The repeat is read from the memory (a planted memory shows it): a new list for one value,
    the remembered (immutable) tuple itself for a few."""
    one = OneValueReply(b"k", 1000)
    reply = block(b"k", b"abc") + b"END\r\n"
    assert parse(lambda: one, reply) == ([(b"k", 0, b"abc", None)], 0)
    head, at, flags, total = one._seen
    assert (head, at, flags, total) == (b"VALUE k 0 3\r\n", 13, 0, len(reply))
    one._seen = (head, at, 99, total)
    assert parse(lambda: one, reply) == ([(b"k", 99, b"abc", None)], 0)

    few = FewValuesReply(FEW_KEYS, 1000)
    first, _ = parse(lambda: few, FEW[0])
    planted = ((b"a", 5, b"planted", None),)
    few._seen = (FEW[0], planted)
    rb = ReplyBuffer()
    rb.feed(FEW[0])
    again = few(rb)
    assert again is planted and rb.available() == 0  # the remembered tuple itself: a repeat is recognisable
    assert parse(lambda: few, FEW[0])[0] == list(planted)


def test_a_long_few_values_reply_is_not_remembered():
    few = FewValuesReply(FEW_KEYS, 10 ** 6)
    reply = block(b"a", b"x" * retrieval.FEW_SEEN_BYTES) + b"END\r\n"
    assert parse(lambda: few, reply) == ([(b"a", 0, b"x" * retrieval.FEW_SEEN_BYTES, None)], 0)
    assert few._seen == (None, ())


def test_random_corruptions_parse_alike():
    """Flip, drop or insert bytes in good replies: the fast parsers never accept what
    the general one refuses, nor read different items -- fresh, or remembering the good reply."""
    rng = random.Random(7)
    good_one = block(b"k", b"v\r\nEND\r\n" * 2, 3) + b"END\r\n"
    good_few = FEW[0]
    for i in range(3000):
        for good, fast, general in (
            (good_one, lambda: OneValueReply(b"k", 1000), lambda: RetrievalReply((b"k",), 1000)),
            (good_few, lambda: FewValuesReply(FEW_KEYS, 1000), lambda: RetrievalReply(FEW_KEYS, 1000)),
            (good_one, primed(OneValueReply(b"k", 1000), good_one), lambda: RetrievalReply((b"k",), 1000)),
            (good_few, primed(FewValuesReply(FEW_KEYS, 1000), good_few), lambda: RetrievalReply(FEW_KEYS, 1000)),
        ):
            reply = bytearray(good)
            at = rng.randrange(len(reply))
            what = rng.randrange(3)
            if what == 0:
                reply[at] = rng.choice(b"0123456789 \r\nVALUEND+-_x")
            elif what == 1:
                del reply[at]
            else:
                reply.insert(at, rng.choice(b"0 \r\n"))
            reply = bytes(reply)
            chunks = rng.choice([1, 1, 2, 3])
            assert parse(fast, reply, chunks, i) == parse(general, reply, chunks, i), reply


def test_one_fast_parser_instance_serves_every_call():
    one = OneValueReply(b"k")
    few = FewValuesReply(FEW_KEYS)
    for _ in range(3):
        assert parse(lambda: one, block(b"k", b"abc") + b"END\r\n", 2) == ([(b"k", 0, b"abc", None)], 0)
        assert parse(lambda: few, FEW[1], 3) == ([(b"c", 0, b"1", None), (b"a", 0, b"", None)], 0)


def test_the_limit_on_a_value_holds_on_the_fast_path_too():
    for limit in (10, 11):
        want = ProtocolError if limit == 10 else ([(b"a", 0, b"a" * 11, None), (b"b", 0, b"1", None)], 0)
        reply = block(b"a", b"a" * 11) + block(b"b", b"1") + b"END\r\n"
        assert parse(lambda: FewValuesReply(FEW_KEYS, limit), reply) == want
        assert parse(lambda: RetrievalReply(FEW_KEYS, limit), reply) == want


USUAL = [
    (lambda: OneValueReply(b"k", 3), block(b"k", b"abc", 7) + b"END\r\n"),  # (a value of exactly the limit)
    (lambda: OneValueReply(b"k", 3), b"END\r\n"),
    (lambda: FewValuesReply(FEW_KEYS, 2), block(b"a", b"12") + block(b"c", b"", 3) + b"END\r\n"),
    (lambda: FewValuesReply(FEW_KEYS, 2), b"END\r\n"),
]


@pytest.mark.parametrize("make_parser, reply", USUAL)
def test_the_usual_reply_whole_in_one_chunk_never_takes_the_general_parser(monkeypatch, make_parser, reply):
    """The point of the fast readers (a get on the hit path builds no parser object)."""
    def general(*args):
        raise AssertionError("the general parser was used for %r" % reply)

    monkeypatch.setattr(retrieval, "_general", general)
    items, left = parse(make_parser, reply)
    assert left == 0 and items == parse(lambda: RetrievalReply(FEW_KEYS + (b"k",), 3), reply)[0]
