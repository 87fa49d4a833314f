"""python-memcached's surface beyond the commands: debug lines, CAS ids, ``check_key``, class attributes.

:class:`MemcacheCompat` is mixed into both clients so code written for
python-memcached's ``memcache.Client`` finds what it uses: the key error
classes and flag constants as class attributes, ``debuglog`` writing
``MemCached: ...`` to stderr when ``debug`` is set, ``cas_ids`` remembered by
``gets`` (per thread, as python-memcached's ``threading.local`` client),
``reset_cas`` and ``check_key``.
"""
from __future__ import annotations

import sys
import threading
from typing import Any, Dict

from .. import errors
from ..serde import FLAG_COMPRESSED, FLAG_INTEGER, FLAG_LONG, FLAG_PICKLE, FLAG_TEXT


class MemcacheCompat:
    """python-memcached compatible attributes and helpers (see the module docstring)."""

    MemcachedKeyError = errors.MemcachedKeyError
    MemcachedKeyLengthError = errors.MemcachedKeyLengthError
    MemcachedKeyCharacterError = errors.MemcachedKeyCharacterError
    MemcachedKeyNoneError = errors.MemcachedKeyNoneError
    MemcachedKeyTypeError = errors.MemcachedKeyTypeError
    MemcachedStringEncodingError = errors.MemcachedStringEncodingError

    _FLAG_PICKLE = FLAG_PICKLE
    _FLAG_INTEGER = FLAG_INTEGER
    _FLAG_LONG = FLAG_LONG
    _FLAG_COMPRESSED = FLAG_COMPRESSED
    _FLAG_TEXT = FLAG_TEXT

    debug: int
    _keys: Any
    _local: threading.local

    def debuglog(self, str: str) -> None:  # noqa: A002 - python-memcached's parameter name
        """Write ``MemCached: <str>`` to stderr when ``debug`` is set (python-memcached's format)."""
        if self.debug:
            sys.stderr.write("MemCached: %s\n" % (str,))

    def check_key(self, key: Any, key_extra_len: int = 0) -> None:
        """Raise a ``MemcachedKeyError`` subclass if *key* is not a valid key."""
        self._keys.check_key(key, key_extra_len)

    # -- CAS bookkeeping (per thread, as python-memcached's threading.local client) --
    @property
    def cas_ids(self) -> Dict[Any, int]:
        local = self._local
        try:
            return local.cas_ids
        except AttributeError:
            local.cas_ids = {}
            return local.cas_ids

    def reset_cas(self) -> None:
        """Forget the CAS ids remembered by ``gets`` (with ``cache_cas=True``)."""
        self._local.cas_ids = {}
