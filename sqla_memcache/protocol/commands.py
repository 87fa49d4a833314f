"""memcached's text-protocol commands, pure: every request byte string is built here.

Names follow memcached's ``doc/protocol.txt``: commands are lower-case
(``set``, ``gets``, ``touch``).  The key rule (which bytes a key may hold, how
long it may be) is a protocol fact and is defined here once; the client's
:class:`~sqla_memcache.client.keys.KeyCodec` applies it.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence, Union

CRLF = b"\r\n"


#: memcached's own key limit (``KEY_MAX_LENGTH``, fixed at compile time): a
#: longer key is refused by every server, whatever the client is told.
MAX_KEY_LENGTH = 250

#: A valid key: one or more bytes, none of them a control, space or DEL
#: (doc/protocol.txt, "Keys"; python-memcached accepts the same bytes).
VALID_KEY = re.compile(rb"[\x21-\x7e\x80-\xff]+\Z")
#: The forbidden bytes of a key (the complement of :data:`VALID_KEY`).
BAD_KEY_BYTE = re.compile(rb"[\x00-\x20\x7f]")
#: The forbidden bytes but space: checks many keys joined by spaces in one pass.
BAD_KEY_BYTE_EXCEPT_SPACE = re.compile(rb"[\x00-\x1f\x7f]")


def key_has_bad_bytes(key: bytes) -> bool:
    """True when *key* holds a byte that memcached's text protocol forbids."""
    return BAD_KEY_BYTE.search(key) is not None


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



def get_command(key: bytes) -> bytes:
    """``get <key>\\r\\n``: the request of a one-key ``get``."""
    return b"get " + key + CRLF


def gets_command(key: bytes) -> bytes:
    """``gets <key>\\r\\n``: a one-key ``gets`` (the reply carries the CAS id)."""
    return b"gets " + key + CRLF


def delete_many_command(keys: Sequence[bytes], time: int = 0, noreply: bool = False) -> bytes:
    """One ``delete <key> [<time>] [noreply]`` line per key, pipelined."""
    tail = (b" %d" % time if time else b"") + (b" noreply\r\n" if noreply else CRLF)
    return b"".join([b"delete " + key + tail for key in keys])


FLUSH_ALL = b"flush_all\r\n"
QUIT = b"quit\r\n"
STATS = b"stats\r\n"
