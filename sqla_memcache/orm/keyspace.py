"""``KeySpace``: the names of one namespace's keys -- entries, version counters, the generation.

Pure functions of the namespace and table names (``keys.py`` builds each
name); the store (``store.py``) reads and bumps the counters they name.
"""
from __future__ import annotations

from typing import Any, Dict, Iterable, List, Optional, Tuple

from sqlalchemy.orm import Mapper

from . import keys
from .tables import qualify, table_name
from ..memo import Memo

__all__ = ["KeySpace"]


def _mapper_table_names(mapper: Mapper) -> List[str]:
    return sorted(table_name(t) for t in mapper.tables)


class KeySpace:
    """Key names of the namespace ``namespace`` (printable ASCII, no ``:``)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = keys.validate_namespace(namespace)
        #: frozenset of tables -> its version key names
        self._names: Memo[Any, List[str]] = Memo(4096)
        self._generation_key = keys.generation_key(self.namespace)

    def key(self, kind: str, part: str) -> str:
        return keys.make_key(self.namespace, kind, part)

    @property
    def generation_key(self) -> str:
        return self._generation_key

    def table_keys(self, tables: Iterable[str], translate: Optional[Dict[Any, Any]] = None) -> List[str]:
        """Table version keys of ``tables`` (names as ``table_name()`` gives them), sorted.

        Memoised for frozensets without a schema translation (every hit asks).
        """
        if translate or not isinstance(tables, frozenset):
            return sorted({keys.table_version_key(self.namespace, qualify(name, translate)) for name in tables})
        return list(self._names.get_or_make(
            tables, lambda: sorted({keys.table_version_key(self.namespace, qualify(n)) for n in tables})))

    def row_version_keys(self, mapper: Mapper, identity: Tuple[Any, ...],
                         translate: Optional[Dict[Any, Any]] = None) -> List[str]:
        """Row version keys of one object: one per table of its mapper (joined inheritance: each)."""
        return [keys.row_version_key(self.namespace, qualify(name, translate), identity)
                for name in _mapper_table_names(mapper)]

    def dml_keys(self, tables: Iterable[str], translate: Optional[Dict[Any, Any]] = None) -> List[str]:
        """DML version keys of ``tables``: bumped when rows changed but which rows is unknown."""
        return sorted({keys.dml_version_key(self.namespace, qualify(name, translate)) for name in tables})

    def dml_version_keys(self, mapper: Mapper, translate: Optional[Dict[Any, Any]] = None) -> List[str]:
        """DML version keys of the mapper's tables (they guard its object entries)."""
        return self.dml_keys(_mapper_table_names(mapper), translate)

    def keys_for(self, writes: Any) -> List[str]:
        """The version keys a committed :class:`~.capture.Writes` bumps."""
        ns = self.namespace
        names = {keys.table_version_key(ns, t) for t in writes.full | writes.tables}
        names.update(keys.dml_version_key(ns, t) for t in writes.full)
        names.update(keys.row_version_key(ns, t, identity) for t, identity in writes.rows)
        if writes.everything:
            names.add(self._generation_key)
        return sorted(names)
