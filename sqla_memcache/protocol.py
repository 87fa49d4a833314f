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
from typing import Any, Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Set, Tuple, Union

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

#: memcached's own key limit (``KEY_MAX_LENGTH``, fixed at compile time): a
#: longer key is refused by every server, whatever the client is told.
MAX_KEY_LENGTH = 250

#: Caps of a ``stats`` reply.  Real ones are far smaller (``stats items`` on
#: a server with every slab class in use is about 2,000 lines and 100 KB);
#: ``stats conns`` grows with the connections, 5 lines each.  ``stats
#: cachedump`` (deprecated, up to 2 MB) may need :meth:`Client.raw_command`.
MAX_STATS_LINES = 20_000
MAX_STATS_BYTES = 2 << 20

#: Default cap of a raw reply (``lru_crawler metadump all`` of a cache of
#: about a million keys); :meth:`Client.raw_command` takes another.
MAX_RAW_REPLY = 256 << 20


class _Incomplete:
    __slots__ = ()

    def __repr__(self) -> str:
        return "INCOMPLETE"

    def __bool__(self) -> bool:
        return False


#: A well-formed ``VALUE <key> <flags> <bytes> [<cas>]`` line (ASCII digits only).
#: Each field is bounded, so matching never scans past one header's worth of bytes.
_VALUE_HEADER = re.compile(rb"VALUE ([^ \r\n]{1,%d}) (\d{1,20}) (\d{1,20})(?: (\d{1,20}))?\r\n" % MAX_LINE)

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

    def _merge_next(self) -> None:
        """Join the unconsumed bytes with the next pending chunk only (a line split
        across two chunks), not with every chunk queued after it."""
        base = min(self.mark, self.pos)
        chunk = self._pending.pop(0)
        self._pending_len -= len(chunk)
        self.buf = self.buf[base:] + chunk
        self.pos -= base
        self.mark -= base

    def take_block(self, start: int, size: int) -> bytes:
        """The *size* data bytes at offset *start* of ``buf``, which must be
        followed by ``\\r\\n``; consumes them (``pos`` and ``mark`` move past).

        The caller has checked that enough bytes are buffered.  A block that
        runs into the pending chunks is joined from their pieces alone: one
        copy of the value, none of the bytes after it.
        """
        buf = self.buf
        end = start + size
        if end + 2 <= len(buf):
            if buf[end:end + 2] != CRLF:
                raise ProtocolError("data block of %d bytes not terminated by \\r\\n" % size)
            self.pos = self.mark = end + 2
            return buf[start:end]
        pieces: List[Any] = [memoryview(buf)[start:]]
        got = len(buf) - start
        want = size + 2
        pending = self._pending
        used = 0
        chunk = buf
        take = 0
        while got < want:
            chunk = pending[used]
            used += 1
            take = min(len(chunk), want - got)
            pieces.append(memoryview(chunk)[:take])
            got += take
        tail = b"".join(bytes(p[-2:]) for p in pieces[-2:])[-2:]
        if tail != CRLF:
            raise ProtocolError("data block of %d bytes not terminated by \\r\\n" % size)
        trim = 2
        while trim:
            last = pieces[-1]
            if len(last) <= trim:
                trim -= len(last)
                pieces.pop()
            else:
                pieces[-1] = last[:len(last) - trim]
                trim = 0
        data = b"".join(pieces)
        self._pending_len -= sum(len(c) for c in pending[:used])
        del pending[:used]
        self.buf = chunk
        self.pos = self.mark = take
        return data

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
        self._max_size = max_size
        self._keep = keep

    def __call__(self, rb: "ReplyBuffer") -> Union[List[ItemTuple], _Incomplete]:
        items = self.items
        append = items.append
        wanted = self._wanted
        max_size = self._max_size
        keep = self._keep
        match = _VALUE_HEADER.match
        while True:
            buf = rb.buf
            pos = rb.pos
            m = match(buf, pos)
            if m is not None:
                # A well-formed header (the common case): no separate line search.
                eol = m.end() - 2
            else:
                eol = buf.find(b"\r\n", pos, pos + MAX_LINE + 2)
            if eol < 0:
                if len(buf) - pos <= MAX_LINE + 1 and rb._pending:
                    # The line may end in the next chunk: join that one only.
                    if not keep:
                        rb.mark = pos
                    rb._merge_next()
                    continue
                if rb.available() > MAX_LINE + 1:
                    raise ProtocolError("reply line longer than %d bytes" % MAX_LINE)
                rb.need = rb.available() + 1
                return INCOMPLETE
            if m is None:
                if eol == pos + 3 and buf.startswith(END, pos):
                    rb.pos = eol + 2
                    if not keep:
                        rb.mark = rb.pos
                    rb.need = 0
                    return items
                line = buf[pos:eol]
                raise_for_error_line(line)
                if line.startswith(b"VALUE "):
                    raise ProtocolError("malformed VALUE line: %r" % line[:100])
                raise ProtocolError("unexpected reply to get: %r" % line[:100])
            key, flags, size, cas = m.groups()
            if wanted is not None and key not in wanted:
                raise ProtocolError("reply names key %r, which was not asked for or was already answered" % key[:100])
            size = int(size)
            if max_size and size > max_size:
                raise ProtocolError("VALUE of %d bytes exceeds the %d byte limit" % (size, max_size))
            data_end = eol + 2 + size
            if data_end + 2 <= len(buf):
                if buf[data_end:data_end + 2] != CRLF:
                    raise ProtocolError("data block of %d bytes not terminated by \\r\\n" % size)
                data = buf[eol + 2:data_end]
                rb.pos = data_end + 2
                if not keep:
                    rb.mark = rb.pos
            else:
                block = data_end + 2 - pos
                if rb.available() < block:
                    rb.need = block + 5  # this block and at least "END\r\n"
                    return INCOMPLETE
                if keep:
                    rb._merge()  # one-shot mode keeps every byte from the reply's start
                    continue
                data = rb.take_block(eol + 2, size)
            if wanted is not None:
                wanted.discard(key)
            append((key, int(flags), data, int(cas) if cas is not None else None))


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


def parse_single_get(chunk: bytes) -> Optional[tuple]:
    """Fast path for a one-key ``get`` reply that arrived in one piece.

    Returns ``()`` for a miss (``END``), ``(key, flags, data)`` for a hit,
    or None when *chunk* is anything else (split, several values, an error):
    the caller then feeds it to :class:`ReplyBuffer` and the full parser.
    """
    eol = chunk.find(b"\r\n", 0, MAX_LINE)
    if eol < 0:
        return None
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


class StatsReply:
    """Incremental parser of a ``stats`` reply (``STAT``/``ITEM`` lines up to ``END``) -> {name: value}.

    Complete lines are consumed as they arrive (each examined a bounded
    number of times); more than *max_lines* lines or *max_bytes* bytes raise
    :class:`ProtocolError`, checked on each received block before its lines
    are parsed, so an endless reply costs neither unbounded memory nor time.
    """

    __slots__ = ("stats", "_lines", "_bytes", "_max_lines", "_max_bytes", "_keep")

    def __init__(self, max_lines: int = MAX_STATS_LINES, max_bytes: int = MAX_STATS_BYTES, keep: bool = False) -> None:
        self.stats: Dict[str, str] = {}
        self._lines = 0
        self._bytes = 0
        self._max_lines = max_lines
        self._max_bytes = max_bytes
        self._keep = keep

    def __call__(self, rb: ReplyBuffer) -> Union[Dict[str, str], _Incomplete]:
        if rb._pending:
            if not self._keep:
                rb.mark = rb.pos  # the join starts here: consumed lines are dropped
            rb._merge()
        buf, pos = rb.buf, rb.pos
        last = buf.rfind(CRLF, pos)
        if last < 0:
            if len(buf) - pos > MAX_LINE:
                raise ProtocolError("reply line longer than %d bytes" % MAX_LINE)
            return INCOMPLETE
        # The complete lines here, up to the END line if it is among them.
        if buf.startswith(b"END\r\n", pos):
            stop = pos
        else:
            stop = buf.find(b"\r\nEND\r\n", pos, last + 2)
            if stop >= 0:
                stop += 2
        end = stop if stop >= 0 else last + 2
        # Caps checked on the whole block first (in C): an endless reply is
        # refused without a Python step per line.
        self._lines += buf.count(CRLF, pos, end)
        self._bytes += end - pos
        if self._lines > self._max_lines or self._bytes > self._max_bytes:
            raise ProtocolError("stats reply longer than %d lines or %d bytes" % (self._max_lines, self._max_bytes))
        stats = self.stats
        find = buf.find
        while pos < end:
            eol = find(CRLF, pos, end)
            line = buf[pos:eol]
            pos = eol + 2
            if line.startswith((b"STAT ", b"ITEM ")):
                # "stats items"/"stats cachedump" answer ITEM lines.
                parts = line.decode("utf-8", "replace").split(" ", 2)
                stats[parts[1]] = parts[2] if len(parts) > 2 else ""
            else:
                raise_for_error_line(line)
                raise ProtocolError("unexpected line in stats reply: %r" % line[:100])
        if stop >= 0:
            rb.pos = stop + 5
        else:
            rb.pos = end
            if len(buf) - end > MAX_LINE:
                raise ProtocolError("reply line longer than %d bytes" % MAX_LINE)
        if not self._keep:
            rb.mark = rb.pos
        return stats if stop >= 0 else INCOMPLETE


def parse_stats(rb: ReplyBuffer) -> Union[Dict[str, str], _Incomplete]:
    """``STAT <name> <value>`` lines up to ``END`` -> {name: value} (one-shot, see :class:`StatsReply`)."""
    return _one_shot(rb, StatsReply(keep=True))


class UntilReply:
    """Incremental reader of a raw reply up to and including the line that starts with *terminator*.

    The terminator must start a line (``END``, ``VERSION``...), and the reply
    is consumed through that line's ``\\r\\n``; lines before it may end in
    ``\\n`` alone (``lru_crawler metadump`` does that).  An error line first
    is raised.  Complete lines are moved out of the buffer as they arrive
    and searched once; more than *max_bytes* raise :class:`ProtocolError`.
    """

    __slots__ = ("_terminator", "_max_bytes", "_parts", "_size", "_keep")

    def __init__(self, terminator: bytes, max_bytes: int = MAX_RAW_REPLY, keep: bool = False) -> None:
        self._terminator = terminator
        self._max_bytes = max_bytes
        self._parts: List[memoryview] = []
        self._size = 0
        self._keep = keep

    def __call__(self, rb: ReplyBuffer) -> Union[bytes, _Incomplete]:
        if rb._pending:
            if not self._keep:
                rb.mark = rb.pos
            rb._merge()
        buf, pos = rb.buf, rb.pos
        terminator = self._terminator
        if not self._parts and buf.startswith((SERVER_ERROR, CLIENT_ERROR, ERROR, BUSY), pos):
            eol = buf.find(CRLF, pos, pos + MAX_LINE + 2)
            if eol >= 0:
                raise_for_error_line(buf[pos:eol])
        # pos is always at the start of a line: whole lines are consumed.
        last = buf.rfind(b"\n", pos)
        if buf.startswith(terminator, pos):
            hit = pos
        else:
            hit = buf.find(b"\n" + terminator, pos, last)
            if hit >= 0:
                hit += 1
        if hit >= 0:
            eol = buf.find(CRLF, hit)
            if eol >= 0:
                end = eol + 2
                self._take(buf, pos, end)
                rb.pos = end
                if not self._keep:
                    rb.mark = end
                return b"".join(self._parts)
            last = hit - 1  # keep the terminator line (not complete yet) in the buffer
        if last >= pos:
            self._take(buf, pos, last + 1)
            rb.pos = last + 1
            if not self._keep:
                rb.mark = rb.pos
        if len(rb.buf) - rb.pos > MAX_LINE:
            raise ProtocolError("reply line longer than %d bytes" % MAX_LINE)
        return INCOMPLETE

    def _take(self, buf: bytes, start: int, end: int) -> None:
        """Keep ``buf[start:end]`` for the reply (a view: the bytes are copied once, by the final join)."""
        self._size += end - start
        if self._size > self._max_bytes:
            raise ProtocolError("reply longer than %d bytes" % self._max_bytes)
        self._parts.append(memoryview(buf)[start:end])


def parse_until(rb: ReplyBuffer, terminator: bytes) -> Union[bytes, _Incomplete]:
    """Raw bytes up to and including the line that starts with *terminator* (one-shot, see :class:`UntilReply`)."""
    return _one_shot(rb, UntilReply(terminator, keep=True))
