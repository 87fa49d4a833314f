"""Framing of memcached's byte stream: :class:`ReplyBuffer` and the :data:`INCOMPLETE` sentinel.

Pure: bytes in (``feed``), lines and data blocks out.  The reply parsers in
:mod:`.replies` and :mod:`.multiline` read from it.
"""
from __future__ import annotations

from typing import Any, List, Optional

from ..errors import ProtocolError

CRLF = b"\r\n"

#: Largest value header length we accept before calling the reply malformed;
#: it keeps a corrupt stream from making us buffer without bound.
MAX_LINE = 8192


class _Incomplete:
    __slots__ = ()

    def __repr__(self) -> str:
        return "INCOMPLETE"

    def __bool__(self) -> bool:
        return False



#: Returned by parsers when the buffer does not yet hold the whole reply.
INCOMPLETE = _Incomplete()


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

