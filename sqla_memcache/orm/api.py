"""The ORM cache's shared vocabulary (a leaf module: it imports nothing of the package).

Entry format, the tag type and the execution options the read hook honours,
in one place for the store, the hooks and the mixin.
"""
from __future__ import annotations

from typing import Any, Dict, NamedTuple

#: 2: the payload is a FrozenResult or, for rows of plain objects, ``rows.Rows``
ENTRY_FORMAT = 2
#: the version keys an entry depends on, with the values read before its data
Tag = Dict[str, int]


class Entry(NamedTuple):
    """A decoded entry: the versions it was tagged with and what it holds (a frozen result,
    ``rows.Rows``, or a memoized value)."""

    tag: Tag
    payload: Any

#: execution option: skip the lookup and store a fresh copy (used by the mixin's refresh)
REFRESH = "sqla_memcache_refresh"
#: execution option: expiry for the stored entry
EXPIRE = "sqla_memcache_expire"
#: execution option: the ORMCache for a ``session.get()`` (default: the model's, else the listening one)
CACHE = "sqla_memcache_cache"
#: execution option: min_compress_len for the stored entry
MIN_COMPRESS_LEN = "sqla_memcache_min_compress_len"
