"""memcached's retrieval replies, pure: the ``VALUE`` blocks of ``get``/``gets``.

One definition of a value header (:data:`_VALUE_HEADER`) and one general
reader, :class:`RetrievalReply`, which frames every block, bounds the reply by
its request and keeps its place between chunks; :class:`OneValueReply` and
:class:`FewValuesReply` read the usual reply of one key or a few keys, whole
in one chunk, with a few bytes operations and hand anything else to it.
"""
from __future__ import annotations

import re
from typing import Iterable, List, Optional, Set, Tuple, Union

from ..errors import ProtocolError
from .buffer import CRLF, INCOMPLETE, MAX_LINE, ReplyBuffer, _Incomplete
from .replies import ItemTuple, _one_shot, raise_for_error_line

#: A well-formed ``VALUE <key> <flags> <bytes> [<cas>]\\r\\n`` line (ASCII digits only): the one
#: definition of a value header.  Each field is bounded, so matching never scans past one header's worth of bytes.
_NO_LIMIT = 1 << 62
#: Longest reply :class:`FewValuesReply` remembers whole (a few version counters need ~100 bytes).
FEW_SEEN_BYTES = 1024
#: The end of a one-value reply: the data block's CRLF and END.
_END_BLOCK = b"\r\nEND\r\n"

_VALUE_HEADER = re.compile(rb"VALUE ([^ \r\n]{1,%d}) (\d{1,20}) (\d{1,20})(?: (\d{1,20}))?\r\n" % MAX_LINE)



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
                if data_end == last - 2 and buf.endswith(_END_BLOCK):
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
    """Parser of the reply to ``get <key>`` for one key: it keeps no reply in
    progress, so one instance per key (remembered with its request by the
    client's key memo) serves every thread.

    The usual reply -- ``VALUE <key> <flags> <bytes>`` and its data block, or a
    bare ``END``, whole in the buffer -- is read with a few bytes operations;
    anything else (a reply still arriving, an error line, a malformed header)
    goes to a one-shot :class:`RetrievalReply`, which gives the same result or
    error, re-reading from the reply's start (the connection receives the rest
    of a known-length block at once, so that happens at most a few times).

    The last header line read this way is remembered (one tuple, replaced
    whole, so threads sharing the parser see an old or a new one): a key's
    value usually keeps its flags and length, and a reply that is exactly
    that header, that many bytes and ``\r\nEND\r\n`` is then read with two
    comparisons.
    """

    __slots__ = ("wire", "_header", "_start", "_max_size", "_seen")

    def __init__(self, wire: bytes, max_size: int = 0) -> None:
        self.wire = wire
        self._header = b"VALUE " + wire + b" "
        self._start = len(self._header)
        self._max_size = max_size or _NO_LIMIT
        #: (header line with its CRLF, its length, flags, whole reply's length) of the last reply read
        self._seen: Optional[Tuple[bytes, int, int, int]] = None

    def __call__(self, rb: "ReplyBuffer") -> Union[List[ItemTuple], _Incomplete]:
        buf = rb.buf
        if rb.pos == 0:  # (the reply is the whole buffer: the connection's usual first chunk)
            seen = self._seen
            if seen is not None:
                head, at, flags, total = seen
                if len(buf) == total and buf[:at] == head and buf[-7:] == _END_BLOCK:
                    rb.pos = rb.mark = total
                    return [(self.wire, flags, buf[at:-7], None)]
            if buf.endswith(_END_BLOCK) and buf.startswith(self._header):
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
                        at = eol + 2
                        flags = int(flags)
                        self._seen = (buf[:at], at, flags, n)
                        return [(self.wire, flags, buf[at:n - 7], None)]
            elif buf == b"END\r\n":
                rb.pos = rb.mark = 5
                return []
        return _general(rb, (self.wire,), self._max_size)


class FewValuesReply:
    """Parser of the reply to ``get <k1> <k2> ...`` for a few distinct keys: it keeps
    no reply in progress, as :class:`OneValueReply`, so one instance per batch of
    keys serves every thread.

    A reply whole in the buffer, each block ``VALUE <key> <flags> <bytes>``
    naming a requested key at most once, is read block by block with bytes
    operations; anything else goes to a one-shot :class:`RetrievalReply`, which
    gives the same result or error.

    The last reply read this way, when short (:data:`FEW_SEEN_BYTES`: version
    counters, which mostly stay as they are), is remembered with its items (one
    tuple, replaced whole): the same bytes again are read with one comparison,
    and the answer is that same tuple (so a caller can recognise a repeat by
    identity and reuse what it made of it).
    """

    __slots__ = ("wires", "_max_size", "_seen")

    def __init__(self, wires: Iterable[bytes], max_size: int = 0) -> None:
        self.wires = frozenset(wires)
        self._max_size = max_size or _NO_LIMIT
        #: (reply, its items) of the last short reply read
        self._seen: Tuple[Optional[bytes], Tuple[ItemTuple, ...]] = (None, ())

    def __call__(self, rb: "ReplyBuffer") -> Union[List[ItemTuple], _Incomplete]:
        buf = rb.buf
        if rb.pos == 0:
            seen, seen_items = self._seen
            if buf == seen:  # (never equal to None)
                rb.pos = rb.mark = len(buf)
                return seen_items  # type: ignore[return-value]  # (a tuple: nobody can change it)
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
                        if len(buf) <= FEW_SEEN_BYTES:
                            self._seen = (buf, tuple(items))
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
