"""Multi-line replies, pure: ``stats`` (:class:`StatsReply`) and raw replies up to a terminator (:class:`UntilReply`).

Both are bounded (lines, bytes) and consume complete lines as they arrive.
"""
from __future__ import annotations

from typing import Dict, List, Union

from ..errors import ProtocolError
from .buffer import CRLF, INCOMPLETE, MAX_LINE, ReplyBuffer, _Incomplete
from .replies import BUSY, CLIENT_ERROR, ERROR, MAX_RAW_REPLY, MAX_STATS_BYTES, MAX_STATS_LINES, SERVER_ERROR
from .replies import _one_shot, raise_for_error_line

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
