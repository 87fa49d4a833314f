"""memcached's replies, pure: typed replies from a :class:`~.buffer.ReplyBuffer`.

Reply tokens are named as in memcached's ``doc/protocol.txt`` (``STORED``,
``NOT_STORED``, ``EXISTS``, ``NOT_FOUND``, ``END``, ``VALUE``).  A parser is
called with the buffer each time bytes arrive; it returns the reply, or
:data:`~.buffer.INCOMPLETE` (the caller feeds more bytes and calls again), or
raises :class:`~sqla_memcache.errors.ProtocolError` (the stream is out of
step) or the typed error of an ``ERROR``/``CLIENT_ERROR``/``SERVER_ERROR``
line.  The per-command reply tables (which lines answer ``set``,
``delete``, ``touch``, ``incr``) are here, the retrieval readers in
:mod:`.retrieval`, so the blocking and the asyncio client read every reply
with the same parser.
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional, Tuple, Union

from ..errors import ClientError, ProtocolError, ServerError
from .buffer import INCOMPLETE, ReplyBuffer, _Incomplete

# Reply tokens (doc/protocol.txt).
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
