"""The error tree of sqla_memcache.

::

    Exception
    ├── MemcachedKeyError                 invalid key (python-memcached name)
    │   ├── MemcachedKeyLengthError       key longer than server_max_key_length or 250 bytes
    │   ├── MemcachedKeyCharacterError    space, control character, \\r\\n in a key
    │   ├── MemcachedKeyNoneError         key is None
    │   └── MemcachedKeyTypeError         key is not str / bytes / (hash, key)
    ├── MemcachedStringEncodingError      (python-memcached name, kept for compatibility)
    └── MemcacheError                     base of the strict-mode errors below
        ├── ServerDeadError               no usable server for the key (connect failed, marked dead)
        │   └── ConnectFailed             asyncio: the connect failed before anything was sent
        ├── ConnectionLostError           socket error / timeout / missed call deadline / EOF mid-command
        ├── ProtocolError                 reply the client cannot parse or that exceeds its request
        │                                 (malformed, oversized, a key not asked or twice, over a cap)
        ├── ServerError                   ``SERVER_ERROR <msg>`` reply
        ├── ClientError                   ``CLIENT_ERROR <msg>`` or ``ERROR`` reply
        ├── ValueTooLargeError            value longer than server_max_value_length (never sent)
        ├── SerializationError            value cannot be pickled / encoded by the serde
        └── SignatureError                signed serde refused an unsigned or tampered value

    MemcachedDictError                    base of the MemcachedDict errors
    ├── DumpingNotAllowed                 server refuses ``lru_crawler metadump`` (``-X``); also a
    │                                     NotImplementedError: the keys cannot be listed
    └── EditConflict                      a CAS write-back lost to concurrent writers N times in a row
    RuntimeError
    └── MemcachedUnavailable              no memcached answers and none can be started (``memcached_process``)
    ValueError
    └── UnstableKey                       a statement holds an object with no process-independent
                                          rendering: the ORM cache runs it uncached (never raised to callers)
    pickle.UnpicklingError
    └── EntryRefused                      an ORM cache entry names a global outside the allow-list: read as
                                          a miss (``orm/safepickle.py``; never raised to callers)

The key errors are raised whatever the ``strict`` setting, as python-memcached
does.  The :class:`MemcacheError` family is raised only by a ``Client`` built
with ``strict=True``; otherwise the same faults give python-memcached's quiet
results (``False``/``0``/``None``) plus a ``debug`` message and a log record.
"""
from __future__ import annotations

import pickle


class MemcachedKeyError(Exception):
    """Base of the invalid-key errors (python-memcached compatible)."""


class MemcachedKeyLengthError(MemcachedKeyError):
    """The key is longer than ``server_max_key_length`` (250 bytes by default), or than
    memcached's own 250-byte limit, which applies even with ``check_keys=False``."""


class MemcachedKeyCharacterError(MemcachedKeyError):
    """The key contains a space, a control character or DEL: it could inject a command."""


class MemcachedKeyNoneError(MemcachedKeyError):
    """The key is ``None``."""


class MemcachedKeyTypeError(MemcachedKeyError):
    """The key is neither ``str``, ``bytes`` nor a ``(hashvalue, key)`` tuple."""


class MemcachedStringEncodingError(Exception):
    """Kept for python-memcached compatibility; text values are always UTF-8 here."""


class MemcacheError(Exception):
    """Base of the errors raised in strict mode."""


class ServerDeadError(MemcacheError):
    """No usable server for the key: every candidate is down or marked dead."""


class ConnectFailed(ServerDeadError):
    """The connect (or the reconnect ``flush_all``) failed before any command was sent:
    the host is now marked dead and the key may be tried on the next server
    (the asyncio client's transport raises it; callers see it as a ``ServerDeadError``)."""


class ConnectionLostError(MemcacheError):
    """A socket error, timeout or EOF happened while a command was in flight, or the
    command's deadline passed before its reply was complete ("timed out")."""


class ProtocolError(MemcacheError):
    """The server sent a reply that does not follow memcached's protocol or does not
    answer the request (a key not asked for or answered twice, a value or reply over
    its cap)."""


class ServerError(MemcacheError):
    """The server answered ``SERVER_ERROR <message>`` (e.g. object too large for cache)."""


class ClientError(MemcacheError):
    """The server answered ``CLIENT_ERROR <message>`` or ``ERROR``."""


class ValueTooLargeError(MemcacheError):
    """The encoded value exceeds ``server_max_value_length``; nothing was sent."""


class SerializationError(MemcacheError):
    """The serde could not encode (e.g. unpicklable object) or decode a value."""


class SignatureError(SerializationError):
    """A signed serde met a value that is unsigned or whose signature does not match."""


class MemcachedDictError(Exception):
    """Base class of MemcachedDict errors."""


class DumpingNotAllowed(MemcachedDictError, NotImplementedError):
    """The server refuses ``lru_crawler metadump`` (started with ``-X``), so keys cannot be listed."""


class EditConflict(MemcachedDictError):
    """A CAS write-back lost to a concurrent writer ``attempts`` times in a row."""

    def __init__(self, key: str, attempts: int) -> None:
        super().__init__(f"edit of {key!r} lost to concurrent writers {attempts} time(s) in a row")
        self.key = key
        self.attempts = attempts


class MemcachedUnavailable(RuntimeError):
    """No memcached answers and none can be started; ``str(exc)`` is a one-line hint."""


class UnstableKey(ValueError):
    """A statement holds an object with no process-independent rendering."""


class EntryRefused(pickle.UnpicklingError):
    """An ORM cache entry names a global outside the allow-list; it is never resolved."""


__all__ = [
    "MemcachedKeyError",
    "MemcachedKeyLengthError",
    "MemcachedKeyCharacterError",
    "MemcachedKeyNoneError",
    "MemcachedKeyTypeError",
    "MemcachedStringEncodingError",
    "MemcacheError",
    "ServerDeadError",
    "ConnectionLostError",
    "ProtocolError",
    "ServerError",
    "ClientError",
    "ValueTooLargeError",
    "SerializationError",
    "SignatureError",
    "MemcachedDictError",
    "DumpingNotAllowed",
    "EditConflict",
    "MemcachedUnavailable",
    "UnstableKey",
    "EntryRefused",
]
