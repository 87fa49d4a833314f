"""The blocking client, :class:`Client`, in layers (each importable on its own).

* :mod:`.keys` -- :class:`~.keys.KeyCodec`: key validity and encoding, defined once;
* :mod:`.base` -- settings, values, routing and the failure policy shared with ``AsyncClient``;
* :mod:`.commands` -- every command as a plan (request, parser, result), no I/O;
* :mod:`.compat` -- python-memcached's surface (debug lines, ``cas_ids``, ``check_key``);
* :mod:`.client` -- :class:`Client`: the plans run on the blocking transport.
"""
from __future__ import annotations

from .base import SERVER_MAX_KEY_LENGTH, SERVER_MAX_VALUE_LENGTH, Key, ServerSpec
from .client import Client, PendingReply
from .keys import KEY_MEMO_SIZE as _KEY_MEMO_SIZE  # noqa: F401 - imported by tests
from .keys import KeyCodec

__all__ = ["SERVER_MAX_KEY_LENGTH", "SERVER_MAX_VALUE_LENGTH", "Client", "Key", "KeyCodec", "PendingReply",
           "ServerSpec"]
