"""memcached's replies, pure: typed replies from a :class:`~.buffer.ReplyBuffer`.

Reply tokens are named as in ``doc/txt`` (``STORED``,
``NOT_STORED``, ``EXISTS``, ``NOT_FOUND``, ``END``, ``VALUE``).  A parser is
called with the buffer each time bytes arrive; it returns the reply, or
:data:`~.buffer.INCOMPLETE` (the caller feeds more bytes and calls again), or
raises :class:`~sqla_memcache.errors.ProtocolError` (the stream is out of
step) or the typed error of an ``ERROR``/``CLIENT_ERROR``/``SERVER_ERROR``
line.  The per-command reply tables (which lines answer ``set``,
``delete``, ``touch``, ``incr``) are here, so the blocking and the asyncio
client read every reply with the same parser.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable, List, NamedTuple, Optional, Set, Tuple, Union

from ..errors import ClientError, ProtocolError, ServerError
from .buffer import CRLF, INCOMPLETE, MAX_LINE, ReplyBuffer, _Incomplete

# Reply tokens (doc/txt).
STORED = b"STORED"
NOT_STORED = b"NOT_STORED"
EXISTS = b"EXISTS"
NOT_FOUND = b"NOT_FOUND"
DELETED = b"DELETED"
TOUCHED = b"TOUCHED"
END = b"END"
OK = b"OK"
ERROR = b"ERROR"
CLIENT_ERROR = b"CLIENT_ERROR"
SERVER_ERROR = b"SERVER_ERROR"
#: ``lru_crawler`` answers this while another crawl runs.
BUSY = b"BUSY"

#: What each storage command may legitimately answer.
STORE_REPLIES = frozenset({STORED, NOT_STORED, EXISTS, NOT_FOUND})

#: Caps of a ``stats`` reply.  Real ones are far smaller (``stats items`` on
#: a server with every slab class in use is about 2,000 lines and 100 KB);
#: ``stats conns`` grows with the connections, 5 lines each.  ``stats
#: cachedump`` (deprecated, up to 2 MB) may need :meth:`Client.raw_command`.
MAX_STATS_LINES = 20_000
MAX_STATS_BYTES = 2 << 20

#: Default cap of a raw reply (``lru_crawler metadump all`` of a cache of
#: about a million keys); :meth:`Client.raw_command` takes another.
MAX_RAW_REPLY = 256 << 20


class Item(NamedTuple):
    """One ``VALUE`` block of a retrieval reply."""

    key: bytes
    flags: int
    data: bytes
    cas: Optional[int]


#: What the parsers return for one ``VALUE`` block: ``(key, flags, data, cas)``,
#: a plain tuple equal to the :class:`Item` with those fields.  Measured: building
#: an ``Item`` costs ~5x a tuple (about 90 ns per value, a tenth of a 100-key
#: ``get_multi``'s parse), so readers unpack the tuple by name instead
#: (``key, flags, data, cas = item``), never index it.
ItemTuple = Tuple[bytes, int, bytes, Optional[int]]

#: A well-formed ``VALUE <key> <flags> <bytes> [<cas>]\\r\\n`` line (ASCII digits only): the one
#: definition of a value header.  Each field is bounded, so matching never scans past one header's worth of bytes.
_NO_LIMIT = 1 << 62

_VALUE_HEADER = re.compile(rb"VALUE ([^ \r\n]{1,%d}) (\d{1,20}) (\d{1,20})(?: (\d{1,20}))?\r\n" % MAX_LINE)


def raise_for_error_line(line: bytes) -> None:
    """Raise the typed error for an ``ERROR``/``CLIENT_ERROR``/``SERVER_ERROR`` line."""
    if line.startswith(SERVER_ERROR):
        raise ServerError(line[len(SERVER_ERROR):].strip().decode("utf-8", "replace"))
    if line.startswith(CLIENT_ERROR):
        raise ClientError(line[len(CLIENT_ERROR):].strip().decode("utf-8", "replace"))
    if line == ERROR:
        raise ClientError("ERROR (unknown command)")
    if line.startswith(ERROR + b" "):
        raise ClientError(line.decode("utf-8", "replace"))
    if line.startswith(BUSY):
        raise ServerError(line.decode("utf-8", "replace"))




def parse_value_header(line: bytes) -> Tuple[bytes, int, int, Optional[int]]:
    """``VALUE <key> <flags> <bytes> [<cas>]`` -> (key, flags, size, cas).

    The same pattern (:data:`_VALUE_HEADER`) frames every ``VALUE`` block in
    :class:`RetrievalReply`: there is one definition of a well-formed header.
    """
    m = _VALUE_HEADER.match(line + CRLF)
    if m is None or m.end() != len(line) + 2:
        raise ProtocolError("malformed VALUE line: %r" % line[:100])
    key, flags, size, cas = m.groups()
    return key, int(flags), int(size), int(cas) if cas is not None else None


class RetrievalReply:
    """Parser of one ``get``/``gets`` reply that keeps its place between calls.

    Call it with the connection's :class:`ReplyBuffer` each time bytes
    arrive.  Each complete ``VALUE`` block is consumed as soon as it is
    buffered, so the buffer only ever holds the block being received and
    every byte is examined a bounded number of times (the header of a block
    split across chunks is read at most twice).  Returns the items as
    ``(key, flags, data, cas)`` tuples (equal to :class:`Item`) at ``END``;
    before that INCOMPLETE, with ``rb.need`` set to the bytes (from
    ``rb.pos``) to buffer before calling again.

    The reply is bounded by its request: with *keys*, a ``VALUE`` must name
    one of them, each at most once, and with *max_size* no value may be
    longer; anything else raises :class:`ProtocolError` at its header, before
    its data is buffered.  *keep* (for :func:`parse_retrieval`) leaves
    ``rb.mark`` at the reply's start so an INCOMPLETE parse can be rewound.
    """

    __slots__ = ("items", "_wanted", "_max_size", "_keep")

    def __init__(self, keys: Optional[Iterable[bytes]] = None, max_size: int = 0, keep: bool = False) -> None:
        self.items: List[ItemTuple] = []
        self._wanted: Optional[Set[bytes]] = set(keys) if keys is not None else None
        #: (no limit is a limit no value reaches: one comparison per block)
        self._max_size = max_size or _NO_LIMIT
        self._keep = keep

    def __call__(self, rb: "ReplyBuffer") -> Union[List[ItemTuple], _Incomplete]:
        items = self.items
        wanted = self._wanted
        match = _VALUE_HEADER.match
        buf = rb.buf
        pos = rb.pos
        last = len(buf) - 5  # where a final "END\r\n" would start
        # The position is kept in a local while whole blocks are consumed, and
        # written back (rb.pos, and rb.mark unless keep) before anything else.
        while True:
            m = match(buf, pos)
            if m is not None:  # a well-formed header (the common case): no separate line search
                key, flags, size, cas = m.groups()
                if wanted is not None:
                    try:
                        wanted.remove(key)
                    except KeyError:
                        raise ProtocolError("reply names key %r, which was not asked for or was already answered"
                                            % key[:100]) from None
                size = int(size)
                if size > self._max_size:
                    raise ProtocolError("VALUE of %d bytes exceeds the %d byte limit" % (size, self._max_size))
                start = m.end()
                data_end = start + size
                if data_end == last - 2 and buf.endswith(b"\r\nEND\r\n"):
                    # The last block, and the reply ends with it: the usual one-key reply, in one check.
                    items.append((key, int(flags), buf[start:data_end], None if cas is None else int(cas)))
                    pos = last + 5
                    rb.pos = pos
                    if not self._keep:
                        rb.mark = pos
                    rb.need = 0
                    return items
                if buf.startswith(CRLF, data_end):  # (False too when the block runs past this chunk)
                    items.append((key, int(flags), buf[start:data_end], None if cas is None else int(cas)))
                    pos = data_end + 2
                    continue
                if data_end + 2 <= len(buf):
                    raise ProtocolError("data block of %d bytes not terminated by \\r\\n" % size)
                # The block runs past this chunk.
                if wanted is not None:
                    wanted.add(key)  # not consumed yet: asked again when the block is complete
                keep = self._keep
                rb.pos = pos
                if not keep:
                    rb.mark = pos
                block = data_end + 2 - pos
                if rb.available() < block:
                    rb.need = block + 5  # this block and at least "END\r\n"
                    return INCOMPLETE
                if keep:
                    rb._merge()  # one-shot mode keeps every byte from the reply's start
                else:
                    if wanted is not None:
                        wanted.discard(key)
                    data = rb.take_block(start, size)
                    items.append((key, int(flags), data, None if cas is None else int(cas)))
                buf = rb.buf
                pos = rb.pos
                last = len(buf) - 5
                continue
            if buf.startswith(b"END\r\n", pos):
                pos += 5
                rb.pos = pos
                if not self._keep:
                    rb.mark = pos
                rb.need = 0
                return items
            rb.pos = pos
            if not self._keep:
                rb.mark = pos
            eol = buf.find(b"\r\n", pos, pos + MAX_LINE + 2)
            if eol < 0:
                if len(buf) - pos <= MAX_LINE + 1 and rb._pending:
                    # The line may end in the next chunk: join that one only.
                    rb._merge_next()
                    buf = rb.buf
                    pos = rb.pos
                    last = len(buf) - 5
                    continue
                if rb.available() > MAX_LINE + 1:
                    raise ProtocolError("reply line longer than %d bytes" % MAX_LINE)
                rb.need = rb.available() + 1
                return INCOMPLETE
            line = buf[pos:eol]
            raise_for_error_line(line)
            if line.startswith(b"VALUE "):
                raise ProtocolError("malformed VALUE line: %r" % line[:100])
            raise ProtocolError("unexpected reply to get: %r" % line[:100])


class OneValueReply:
    """Parser of the reply to ``get <key>`` for one key: stateless, so one instance
    per key (remembered with its request by the client's key memo) serves every
    thread.

    The usual reply -- ``VALUE <key> <flags> <bytes>`` and its data block, or a
    bare ``END``, whole in the buffer -- is read with a few bytes operations;
    anything else (a reply still arriving, an error line, a malformed header)
    goes to a one-shot :class:`RetrievalReply`, which gives the same result or
    error, re-reading from the reply's start (the connection receives the rest
    of a known-length block at once, so that happens at most a few times).
    """

    __slots__ = ("wire", "_header", "_start", "_max_size")

    def __init__(self, wire: bytes, max_size: int = 0) -> None:
        self.wire = wire
        self._header = b"VALUE " + wire + b" "
        self._start = len(self._header)
        self._max_size = max_size or _NO_LIMIT

    def __call__(self, rb: "ReplyBuffer") -> Union[List[ItemTuple], _Incomplete]:
        buf = rb.buf
        if rb.pos == 0:  # (the reply is the whole buffer: the connection's usual first chunk)
            if buf.endswith(b"\r\nEND\r\n") and buf.startswith(self._header):
                start = self._start
                eol = buf.find(b"\r\n", start, start + 64)
                try:
                    flags, size = buf[start:eol].split(b" ")
                except ValueError:  # a cas field, no line end: the full parser
                    flags = size = b""
                # (ASCII digits only, as the protocol's header pattern: int() alone takes "+1" or "1_0")
                if size.isdigit() and flags.isdigit():
                    n = int(size)
                    if len(buf) - eol == n + 9 and n <= self._max_size:  # "\r\n" data "\r\nEND\r\n"
                        rb.pos = rb.mark = n = len(buf)
                        return [(self.wire, int(flags), buf[eol + 2:n - 7], None)]
            elif buf == b"END\r\n":
                rb.pos = rb.mark = 5
                return []
        return _general(rb, (self.wire,), self._max_size)


class FewValuesReply:
    """Parser of the reply to ``get <k1> <k2> ...`` for a few distinct keys: stateless,
    as :class:`OneValueReply`, so one instance per batch of keys serves every thread.

    A reply whole in the buffer, each block ``VALUE <key> <flags> <bytes>``
    naming a requested key at most once, is read block by block with bytes
    operations; anything else goes to a one-shot :class:`RetrievalReply`, which
    gives the same result or error.
    """

    __slots__ = ("wires", "_max_size")

    def __init__(self, wires: Iterable[bytes], max_size: int = 0) -> None:
        self.wires = frozenset(wires)
        self._max_size = max_size or _NO_LIMIT

    def __call__(self, rb: "ReplyBuffer") -> Union[List[ItemTuple], _Incomplete]:
        buf = rb.buf
        if rb.pos == 0 and buf.endswith(b"END\r\n"):
            unanswered = set(self.wires)
            items = []
            pos = 0
            last = len(buf) - 5  # where "END\r\n" starts
            try:
                while pos < last:
                    eol = buf.index(b"\r\n", pos, pos + MAX_LINE)
                    tag, key, flags, size = buf[pos:eol].split(b" ")  # (a cas field, a short line: ValueError)
                    unanswered.remove(key)  # (a key not asked for, or answered twice: KeyError)
                    start = eol + 2
                    pos = start + int(size) + 2
                    # (ASCII digits only, as the protocol's header pattern: int() alone takes "+1" or "1_0")
                    if (tag != b"VALUE" or not (size.isdigit() and flags.isdigit())
                            or pos - start - 2 > self._max_size or buf[pos - 2:pos] != CRLF):
                        break
                    items.append((key, int(flags), buf[start:pos - 2], None))
                else:
                    if pos == last:
                        rb.pos = rb.mark = len(buf)
                        return items
            except (ValueError, KeyError):
                pass
        return _general(rb, self.wires, self._max_size)


def _general(rb: ReplyBuffer, keys: Iterable[bytes], max_size: int) -> Union[List[ItemTuple], _Incomplete]:
    """The fast parsers' fallback: the reply read from its start by a one-shot
    :class:`RetrievalReply` (the buffer rewound while it is incomplete)."""
    reply = _one_shot(rb, RetrievalReply(keys, max_size, keep=True))
    if reply is not INCOMPLETE:
        rb.mark = rb.pos
    return reply


def parse_retrieval(rb: ReplyBuffer, max_size: int = 0) -> Union[List[ItemTuple], _Incomplete]:
    """Parse a whole ``get``/``gets`` reply (``VALUE`` blocks then ``END``), any keys.

    Returns the items as ``(key, flags, data, cas)`` tuples (equal to
    :class:`Item`), or INCOMPLETE with the buffer untouched and ``rb.need``
    set to the byte count that must be buffered before trying again.
    *max_size*, when non-zero, refuses larger values so a corrupt length
    cannot make us wait for gigabytes.  One-shot: a caller reading a reply
    as it arrives uses :class:`RetrievalReply`, which does not start over.
    """
    return _one_shot(rb, RetrievalReply(None, max_size, keep=True))


def _one_shot(rb: ReplyBuffer, parser: Callable[[ReplyBuffer], Any]) -> Any:
    """Run an incremental *parser* in ``keep`` mode; rewind the buffer if the reply is incomplete."""
    rb.begin()
    reply = parser(rb)
    if reply is INCOMPLETE:
        rb.need += rb.pos - rb.mark
        rb.rewind()
    return reply


def parse_line(rb: ReplyBuffer) -> Union[bytes, _Incomplete]:
    """One reply line (``STORED``, ``DELETED``, a number...), error lines raised."""
    rb.begin()
    line = rb.line()
    if line is None:
        return INCOMPLETE
    if line.startswith((SERVER_ERROR, CLIENT_ERROR, ERROR)):
        raise_for_error_line(line)
    return line


def parse_store_reply(line: bytes) -> bytes:
    """Validate a storage reply token."""
    if line not in STORE_REPLIES:
        raise ProtocolError("unexpected reply to a storage command: %r" % line[:100])
    return line


def parse_arith_reply(line: bytes) -> Optional[int]:
    """``incr``/``decr`` reply: the new value, or None for ``NOT_FOUND``."""
    if line == NOT_FOUND:
        return None
    try:
        return int(line)
    except ValueError:
        raise ProtocolError("unexpected reply to incr/decr: %r" % line[:100]) from None



# --------------------------------------------------------------------------
# Reply tables of the one-line commands (storage, delete, touch, incr/decr)
# --------------------------------------------------------------------------

def read_store_line(rb: ReplyBuffer) -> Any:
    """A storage reply line; ``SERVER_ERROR`` is returned (the stream is still in step),
    ``CLIENT_ERROR``/``ERROR`` raised (the connection is then dropped)."""
    if rb.pos == 0 and rb.buf == b"STORED\r\n":  # the usual answer, the whole chunk: one comparison
        rb.pos = 8
        return STORED
    if rb.buf.startswith(b"STORED\r\n", rb.pos):  # no line search
        rb.pos += 8
        return STORED
    line = rb.line()
    if line is None:
        return INCOMPLETE
    if line.startswith((CLIENT_ERROR, ERROR)):
        raise_for_error_line(line)
    if not valid_store_line(line):
        # Not an answer to this command: the stream is out of step, drop the connection.
        raise ProtocolError("unexpected reply to a storage command: %r" % line[:100])
    return line


def valid_store_line(line: bytes) -> bool:
    """True for a line that answers a storage command (``SERVER_ERROR`` included)."""
    return line in STORE_REPLIES or line.startswith(SERVER_ERROR)


def valid_delete_line(line: bytes) -> bool:
    """True for a line that answers ``delete`` (``SERVER_ERROR`` included)."""
    return line in DELETE_REPLIES or line.startswith(SERVER_ERROR)


def expect_line(valid: Callable[[bytes], bool]) -> Callable[[ReplyBuffer], Any]:
    """Parser of a one-line reply: error lines raised, any line failing *valid* is a ProtocolError."""

    def parse(rb: ReplyBuffer) -> Any:
        line = parse_line(rb)
        if isinstance(line, bytes) and not valid(line):
            raise ProtocolError("unexpected reply: %r" % line[:100])
        return line

    return parse


#: What ``delete`` and ``touch`` may answer.
DELETE_REPLIES = frozenset({DELETED, NOT_FOUND})
TOUCH_REPLIES = frozenset({TOUCHED, NOT_FOUND})
read_delete_line = expect_line(valid_delete_line)
read_touch_line = expect_line(TOUCH_REPLIES.__contains__)


def read_arith_line(rb: ReplyBuffer) -> Any:
    """An ``incr``/``decr`` reply: digits, ``NOT_FOUND``, or a ``CLIENT_ERROR``/``SERVER_ERROR``
    line returned as it is (one line: the stream is still in step); anything else raises."""
    line = rb.line()
    if line is None:
        return INCOMPLETE
    if line == NOT_FOUND or line.isdigit() or line.startswith((CLIENT_ERROR, SERVER_ERROR)):
        return line
    raise_for_error_line(line)
    raise ProtocolError("unexpected reply to incr/decr: %r" % line[:100])


class _AllStored:
    __slots__ = ()

    def __repr__(self) -> str:
        return "ALL_STORED"


#: What :func:`store_lines_reply` returns when every command answered ``STORED``.
ALL_STORED = _AllStored()


def store_lines_reply(count: int) -> Callable[[ReplyBuffer], Any]:
    """Replies to *count* pipelined storage commands: :data:`ALL_STORED` when the
    buffer is exactly ``STORED`` x count (checked in one comparison), else the lines."""
    expected = b"STORED\r\n" * count
    general = lines_reply(count, valid_store_line)

    def parse(rb: ReplyBuffer) -> Any:
        if not rb._pending and len(rb.buf) - rb.pos == len(expected) and rb.buf.startswith(expected, rb.pos):
            rb.pos = rb.mark = len(rb.buf)
            return ALL_STORED
        reply = general(rb)
        if reply is INCOMPLETE:
            rb.need = len(expected)  # every storage reply line is at least 8 bytes
        return reply

    return parse


def lines_reply(count: int, valid: Callable[[bytes], bool]) -> Callable[[ReplyBuffer], Any]:
    """Parser for *count* pipelined one-line replies, each of which must pass *valid*."""

    def parse(rb: ReplyBuffer) -> Any:
        rb.begin()
        lines = []
        for _ in range(count):
            line = rb.line()
            if line is None:
                rb.rewind()
                return INCOMPLETE
            if not valid(line):
                raise_for_error_line(line)
                raise ProtocolError("unexpected reply in a pipelined batch: %r" % line[:100])
            lines.append(line)
        return lines

    return parse
