"""memcached's text protocol, pure: commands to bytes, bytes to typed replies.

Nothing here touches a socket.

* :mod:`.commands` -- every request byte string, and the key rule;
* :mod:`.buffer` -- :class:`ReplyBuffer`, framing a stream that arrives in
  arbitrary pieces, and the :data:`INCOMPLETE` sentinel;
* :mod:`.replies` -- reply tokens, error lines and the per-command reply tables;
* :mod:`.retrieval` -- the one ``VALUE`` header pattern, :class:`RetrievalReply`,
  and :class:`OneValueReply` / :class:`FewValuesReply` for the usual replies;
* :mod:`.multiline` -- ``stats`` and raw replies up to a terminator.

A parser that finds its reply incomplete returns :data:`INCOMPLETE` and
leaves the buffer as it was, so the caller can ``feed`` more bytes and call
it again.  Every public name of the submodules is re-exported here.
"""
from __future__ import annotations

from .buffer import CRLF, INCOMPLETE, MAX_LINE, ReplyBuffer
from .commands import (
    BAD_KEY_BYTE,
    BAD_KEY_BYTE_EXCEPT_SPACE,
    FLUSH_ALL,
    MAX_KEY_LENGTH,
    QUIT,
    STATS,
    VALID_KEY,
    arith_command,
    delete_command,
    delete_many_command,
    get_command,
    gets_command,
    key_has_bad_bytes,
    retrieval_command,
    simple_command,
    storage_command,
    touch_command,
)
from .multiline import StatsReply, UntilReply, parse_stats, parse_until
from .retrieval import FewValuesReply, OneValueReply, RetrievalReply, parse_retrieval, parse_value_header
from .replies import (
    ALL_STORED,
    BUSY,
    CLIENT_ERROR,
    DELETE_REPLIES,
    DELETED,
    END,
    ERROR,
    EXISTS,
    MAX_RAW_REPLY,
    MAX_STATS_BYTES,
    MAX_STATS_LINES,
    NOT_FOUND,
    NOT_STORED,
    OK,
    SERVER_ERROR,
    STORE_REPLIES,
    STORED,
    TOUCH_REPLIES,
    TOUCHED,
    Item,
    ItemTuple,
    expect_line,
    lines_reply,
    parse_arith_reply,
    parse_line,
    parse_store_reply,
    raise_for_error_line,
    read_arith_line,
    read_delete_line,
    read_store_line,
    read_touch_line,
    store_lines_reply,
    valid_delete_line,
    valid_store_line,
)

__all__ = [
    "ALL_STORED", "BAD_KEY_BYTE", "BAD_KEY_BYTE_EXCEPT_SPACE", "BUSY", "CLIENT_ERROR", "CRLF", "DELETE_REPLIES",
    "DELETED", "END", "ERROR", "EXISTS", "FLUSH_ALL", "INCOMPLETE", "MAX_KEY_LENGTH", "MAX_LINE", "MAX_RAW_REPLY",
    "MAX_STATS_BYTES", "MAX_STATS_LINES", "NOT_FOUND", "NOT_STORED", "OK", "QUIT", "SERVER_ERROR", "STATS",
    "STORE_REPLIES", "STORED", "TOUCH_REPLIES", "TOUCHED", "VALID_KEY", "FewValuesReply", "Item", "ItemTuple", "OneValueReply",
    "ReplyBuffer", "RetrievalReply", "StatsReply", "UntilReply", "arith_command", "delete_command", "delete_many_command",
    "expect_line", "get_command", "gets_command", "key_has_bad_bytes", "lines_reply", "parse_arith_reply",
    "parse_line", "parse_retrieval", "parse_stats", "parse_store_reply", "parse_until", "parse_value_header",
    "raise_for_error_line", "read_arith_line", "read_delete_line", "read_store_line", "read_touch_line",
    "retrieval_command", "simple_command", "storage_command", "store_lines_reply", "touch_command",
    "valid_delete_line", "valid_store_line",
]
