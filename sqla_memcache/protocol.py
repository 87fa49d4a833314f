"""memcached's text protocol, pure: commands to bytes, bytes to typed replies.

Nothing here touches a socket.  Encoding functions build one command as
``bytes``; :class:`ReplyBuffer` frames a byte stream that arrives in arbitrary
pieces (``feed``), and the ``parse_*`` functions turn framed replies into
values or raise :class:`~sqla_memcache.errors.ProtocolError`.  A parser that
finds its reply incomplete returns :data:`INCOMPLETE` and leaves the buffer
as it was, so the caller can ``feed`` more bytes and call it again.

Names follow memcached's ``doc/protocol.txt``: commands are lower-case
(``set``, ``gets``, ``touch``), replies are their tokens (``STORED``,
``NOT_STORED``, ``EXISTS``, ``NOT_FOUND``, ``END``, ``VALUE``).
"""
from __future__ import annotations

import re
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from .errors import ClientError, ProtocolError, ServerError

CRLF = b"\r\n"

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

#: A key may hold any byte but controls, space and DEL (doc/protocol.txt, "Keys").
_BAD_KEY_BYTE = re.compile(rb"[\x00-\x20\x7f]")

#: Largest value header length we accept before calling the reply malformed;
#: it keeps a corrupt stream from making us buffer without bound.
MAX_LINE = 8192


class _Incomplete:
    __slots__ = ()

    def __repr__(self) -> str:
        return "INCOMPLETE"

    def __bool__(self) -> bool:
        return False


#: A well-formed ``VALUE <key> <flags> <bytes> [<cas>]`` line (ASCII digits only).
_VALUE_HEADER = re.compile(rb"VALUE ([^ \r\n]+) (\d+) (\d+)(?: (\d+))?\r\n")

#: Returned by parsers when the buffer does not yet hold the whole reply.
INCOMPLETE = _Incomplete()


#: What the parsers return for one ``VALUE`` block: ``(key, flags, data, cas)``
#: (a plain tuple on the hot path; equal to the :class:`Item` with those fields).
ItemTuple = Tuple[bytes, int, bytes, Optional[int]]


class Item(NamedTuple):
    """One ``VALUE`` block of a retrieval reply."""

    key: bytes
    flags: int
    data: bytes
    cas: Optional[int]


# --------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------

def key_has_bad_bytes(key: bytes) -> bool:
    """True when *key* holds a byte that memcached's text protocol forbids."""
    return _BAD_KEY_BYTE.search(key) is not None


def storage_command(
    cmd: bytes,
    key: bytes,
    flags: int,
    exptime: int,
    data: bytes,
    cas: Optional[int] = None,
    noreply: bool = False,
) -> bytes:
    """``<cmd> <key> <flags> <exptime> <bytes> [<cas>] [noreply]\\r\\n<data>\\r\\n``."""
    # One format call: this builds every set on the hot path.
    if cas is None and not noreply:
        return b"%s %s %d %d %d\r\n%s\r\n" % (cmd, key, flags, exptime, len(data), data)
    options = b"" if cas is None else b" %d" % cas
    if noreply:
        options += b" noreply"
    return b"%s %s %d %d %d%s\r\n%s\r\n" % (cmd, key, flags, exptime, len(data), options, data)


def retrieval_command(cmd: bytes, keys: Sequence[bytes]) -> bytes:
    """``get``/``gets`` of one or many keys in a single command line."""
    return cmd + b" " + b" ".join(keys) + CRLF


def delete_command(key: bytes, noreply: bool = False) -> bytes:
    return b"delete " + key + (b" noreply\r\n" if noreply else CRLF)


def arith_command(cmd: bytes, key: bytes, delta: int, noreply: bool = False) -> bytes:
    """``incr``/``decr`` (delta must be a non-negative 64-bit integer)."""
    return b"%s %s %d%s\r\n" % (cmd, key, delta, b" noreply" if noreply else b"")


def touch_command(key: bytes, exptime: int, noreply: bool = False) -> bytes:
    return b"touch %s %d%s\r\n" % (key, exptime, b" noreply" if noreply else b"")


def simple_command(*words: Union[bytes, str]) -> bytes:
    """A command made of words, e.g. ``simple_command("stats", "slabs")``."""
    return b" ".join(w.encode("ascii") if isinstance(w, str) else w for w in words) + CRLF


# --------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------

class ReplyBuffer:
    """Bytes received but not yet consumed, with line and block framing.

    ``feed`` queues a chunk without copying; chunks are joined only when a
    line or a block needs them, so a large value arriving in many pieces is
    copied once.
    """

    __slots__ = ("buf", "pos", "mark", "need", "_pending", "_pending_len")

    def __init__(self) -> None:
        self.buf = b""
        self.pos = 0
        #: Start of the reply being parsed; bytes from here are kept on merge
        #: so an incomplete parse can be rewound.
        self.mark = 0
        #: Set by a parser that returned INCOMPLETE: bytes (from the reply's
        #: start) to buffer before parsing again; saves re-parsing per chunk.
        self.need = 0
        self._pending: List[bytes] = []
        self._pending_len = 0

    def feed(self, data: bytes) -> None:
        # pos == len(buf) only after a complete parse consumed everything
        # (incomplete parses rewind), so the old buffer can be dropped.
        if self.pos == len(self.buf) and not self._pending:
            self.buf = data
            self.pos = self.mark = 0
        else:
            self._pending.append(data)
            self._pending_len += len(data)

    def is_empty(self) -> bool:
        """True when nothing is buffered (the state between two replies)."""
        return self.pos == len(self.buf) and not self._pending

    def available(self) -> int:
        """Bytes buffered and not consumed yet."""
        return len(self.buf) - self.pos + self._pending_len

    def clear(self) -> None:
        self.buf = b""
        self.pos = self.mark = 0
        self._pending.clear()
        self._pending_len = 0

    def begin(self) -> None:
        """Start parsing a reply: remember where it starts."""
        self.mark = self.pos

    def rewind(self) -> None:
        """Forget what was consumed since :meth:`begin` (reply incomplete)."""
        self.pos = self.mark

    def _merge(self) -> None:
        base = min(self.mark, self.pos)
        self._pending.insert(0, self.buf[base:])
        self.buf = b"".join(self._pending)
        self.pos -= base
        self.mark = 0
        self._pending.clear()
        self._pending_len = 0

    def line(self) -> Optional[bytes]:
        """Next ``\\r\\n``-terminated line without its terminator, or None."""
        end = self.buf.find(CRLF, self.pos)
        if end < 0:
            if not self._pending:
                self._check_line_length()
                return None
            self._merge()
            end = self.buf.find(CRLF, self.pos)
            if end < 0:
                self._check_line_length()
                return None
        line = self.buf[self.pos:end]
        self.pos = end + 2
        return line

    def _check_line_length(self) -> None:
        if len(self.buf) - self.pos > MAX_LINE:
            raise ProtocolError("reply line longer than %d bytes" % MAX_LINE)

    def block(self, size: int) -> Optional[bytes]:
        """Next *size* data bytes followed by ``\\r\\n``, or None if not all here."""
        if self.available() < size + 2:
            return None
        if len(self.buf) - self.pos < size + 2:
            self._merge()
        start = self.pos
        end = start + size
        if self.buf[end:end + 2] != CRLF:
            raise ProtocolError("data block of %d bytes not terminated by \\r\\n" % size)
        self.pos = end + 2
        return self.buf[start:end]


# --------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------

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
    """``VALUE <key> <flags> <bytes> [<cas>]`` -> (key, flags, size, cas)."""
    parts = line.split(b" ")
    try:
        if parts[0] != b"VALUE" or len(parts) not in (4, 5):
            raise ValueError
        flags = int(parts[2])
        size = int(parts[3])
        cas = int(parts[4]) if len(parts) == 5 else None
    except ValueError:
        raise ProtocolError("malformed VALUE line: %r" % line[:100]) from None
    if size < 0 or flags < 0:
        raise ProtocolError("malformed VALUE line: %r" % line[:100])
    return parts[1], flags, size, cas


def parse_retrieval(rb: ReplyBuffer, max_size: int = 0) -> Union[List[ItemTuple], _Incomplete]:
    """Parse a whole ``get``/``gets`` reply (``VALUE`` blocks then ``END``).

    Returns the items as ``(key, flags, data, cas)`` tuples (equal to
    :class:`Item`), or INCOMPLETE with the buffer untouched and ``rb.need``
    set to the byte count that must be buffered before trying again.
    *max_size*, when non-zero, refuses larger values so a corrupt length
    cannot make us wait for gigabytes.
    """
    # The hot path of every get: one pass over a flat buffer with locals,
    # no per-item method calls.
    if rb._pending:
        rb.mark = rb.pos
        rb._merge()
    buf = rb.buf
    pos = start = rb.pos
    n = len(buf)
    find = buf.find
    items: List[ItemTuple] = []
    append = items.append
    match = _VALUE_HEADER.match
    while True:
        m = match(buf, pos)
        if m is not None:
            # Well-formed header (the common case): one C call splits it.
            key, flags, size, cas = m.groups()
            size = int(size)
            data_start = m.end()
            data_end = data_start + size
            if max_size and size > max_size:
                raise ProtocolError("VALUE of %d bytes exceeds the %d byte limit" % (size, max_size))
            if data_end + 2 > n:
                rb.need = data_end + 2 + 5 - start
                return INCOMPLETE
            if buf[data_end:data_end + 2] != b"\r\n":
                raise ProtocolError("data block of %d bytes not terminated by \\r\\n" % size)
            append((key, int(flags), buf[data_start:data_end], int(cas) if cas is not None else None))
            pos = data_end + 2
            continue
        eol = find(b"\r\n", pos)
        if eol < 0:
            if n - pos > MAX_LINE:
                raise ProtocolError("reply line longer than %d bytes" % MAX_LINE)
            rb.need = n - start + 1
            return INCOMPLETE
        if eol == pos + 3 and buf[pos:eol] == b"END":
            rb.pos = rb.mark = eol + 2
            rb.need = 0
            return items
        if buf[pos:pos + 6] != b"VALUE ":
            line = buf[pos:eol]
            raise_for_error_line(line)
            raise ProtocolError("unexpected reply to get: %r" % line[:100])
        parts = buf[pos + 6:eol].split(b" ")
        try:
            if len(parts) == 3:
                key, flags, size = parts[0], int(parts[1]), int(parts[2])
                cas = None
            elif len(parts) == 4:
                key, flags, size, cas = parts[0], int(parts[1]), int(parts[2]), int(parts[3])
            else:
                raise ValueError
            if size < 0 or flags < 0 or not key:
                raise ValueError
        except ValueError:
            raise ProtocolError("malformed VALUE line: %r" % buf[pos:eol][:100]) from None
        if max_size and size > max_size:
            raise ProtocolError("VALUE of %d bytes exceeds the %d byte limit" % (size, max_size))
        data_end = eol + 2 + size
        if data_end + 2 > n:
            rb.need = data_end + 2 + 5 - start  # this block plus at least "END\r\n"
            return INCOMPLETE
        if buf[data_end:data_end + 2] != b"\r\n":
            raise ProtocolError("data block of %d bytes not terminated by \\r\\n" % size)
        append((key, flags, buf[eol + 2:data_end], cas))
        pos = data_end + 2


def parse_single_get(chunk: bytes) -> Optional[tuple]:
    """Fast path for a one-key ``get`` reply that arrived in one piece.

    Returns ``()`` for a miss (``END``), ``(key, flags, data)`` for a hit,
    or None when *chunk* is anything else (split, several values, an error):
    the caller then feeds it to :class:`ReplyBuffer` and the full parser.
    """
    eol = chunk.find(b"\r\n")
    try:
        key, flags, size = chunk[6:eol].split(b" ")
        end = eol + 2 + int(size)
    except ValueError:
        return () if chunk == b"END\r\n" else None
    if end + 7 != len(chunk) or chunk[:6] != b"VALUE " or not chunk.endswith(b"\r\nEND\r\n"):
        return None
    if not (flags.isdigit() and size.isdigit()):
        return None
    return key, int(flags), chunk[eol + 2:end]


def split_value_start(chunk: bytes, max_size: int = 0) -> Optional[Tuple[bytes, int, int, int]]:
    """For a one-key ``get`` reply whose first piece holds the header but not the
    whole value: ``(key, flags, size, data_start)``, else None (use the full parser).
    """
    eol = chunk.find(b"\r\n")
    if eol < 0 or chunk[:6] != b"VALUE ":
        return None
    parts = chunk[6:eol].split(b" ")
    if len(parts) != 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    size = int(parts[2])
    if len(chunk) - eol - 2 >= size or (max_size and size > max_size):
        return None
    return parts[0], int(parts[1]), size, eol + 2


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


def parse_stats(rb: ReplyBuffer) -> Union[Dict[str, str], _Incomplete]:
    """``STAT <name> <value>`` lines up to ``END`` -> {name: value}."""
    rb.begin()
    stats: Dict[str, str] = {}
    while True:
        line = rb.line()
        if line is None:
            rb.rewind()
            return INCOMPLETE
        if line == END:
            return stats
        if line.startswith(b"STAT "):
            parts = line.decode("utf-8", "replace").split(" ", 2)
            stats[parts[1]] = parts[2] if len(parts) > 2 else ""
        elif line.startswith(b"ITEM "):
            # "stats items"/"stats cachedump" style lines.
            parts = line.decode("utf-8", "replace").split(" ", 2)
            stats[parts[1]] = parts[2] if len(parts) > 2 else ""
        else:
            raise_for_error_line(line)
            raise ProtocolError("unexpected line in stats reply: %r" % line[:100])


def parse_until(rb: ReplyBuffer, terminator: bytes) -> Union[bytes, _Incomplete]:
    """Raw bytes up to and including the line that starts with *terminator*.

    The terminator must start a line (``END``, ``VERSION``...), and the reply
    is consumed through that line's ``\\r\\n``; lines before it may end in ``\\n``
    alone (``lru_crawler metadump`` does that).  An error line first is raised.
    """
    rb.begin()
    if rb._pending:
        rb._merge()
    data, pos = rb.buf, rb.pos
    if data.startswith((SERVER_ERROR, CLIENT_ERROR, ERROR, BUSY), pos):
        eol = data.find(CRLF, pos)
        if eol < 0:
            return INCOMPLETE
        raise_for_error_line(data[pos:eol])
    if data.startswith(terminator, pos):
        start = pos
    else:
        start = data.find(b"\n" + terminator, pos)
        if start < 0:
            rb.rewind()
            return INCOMPLETE
        start += 1
    eol = data.find(CRLF, start)
    if eol < 0:
        rb.rewind()
        return INCOMPLETE
    rb.pos = eol + 2
    return data[pos:rb.pos]
