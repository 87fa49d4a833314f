"""What besides the statement decides a result: the database, schema translation, execution options.

Entry keys end in a short *scope* tag of these, so two databases (or
tenants via ``schema_translate_map``, or options such as ``yield_per`` that
change what is returned) never share an entry.
"""
from __future__ import annotations

import logging
import weakref
from typing import Any, Dict, Optional, Tuple

from sqlalchemy.orm import ORMExecuteState

from . import capture, keys
from ..memo import Memo

log = logging.getLogger(__name__)

__all__ = ["database_name", "execution_scope", "forget_database", "scope_of"]


#: execution options that do not change what a statement returns (left out of entry keys)
_NEUTRAL_OPTIONS = frozenset("""populate_existing autoflush yield_per stream_results max_row_buffer compiled_cache
    logging_token isolation_level synchronize_session dml_strategy is_delete_using is_update_from render_nulls
    preserve_rowcount insertmanyvalues_page_size no_parameters schema_translate_map driver_column_names""".split())
_PREFIX = "sqla_memcache_"


def database_name(engine: Any) -> str:
    """How entry keys name the database ``engine`` reads: its ``listen_on_engine(database=)`` name,
    else its URL without driver and password (so sync and async drivers share entries)."""
    engine = getattr(engine, "sync_engine", engine)
    found = capture.listening(engine)
    if found is not None and found.database:
        return found.database
    url = engine.url
    query = "&".join("%s=%s" % item for item in sorted(url.query.items()))
    return "%s://%s@%s:%s/%s?%s" % (url.get_backend_name(), url.username or "", url.host or "",
                                    url.port or "", url.database or "", query)


_SCOPES: Memo[Any, str] = Memo(1024)
#: engine -> (its database_name(), its scope without translation or options), as
#: far as known (an engine's URL never changes)
_DATABASES: "weakref.WeakKeyDictionary[Any, Tuple[str, Optional[str]]]" = weakref.WeakKeyDictionary()


def forget_database(engine: Any) -> None:
    """Drop the remembered database name of ``engine`` (after ``listen_on_engine(database=...)``)."""
    _DATABASES.pop(getattr(engine, "sync_engine", engine), None)


def scope_of(engine: Any, translate: Any = None, extra: Tuple[Tuple[str, Any], ...] = ()) -> Optional[str]:
    """Short tag of what besides the statement decides a result: the database, the schema
    translation and result-changing execution options; None when one has no stable rendering."""
    engine = getattr(engine, "sync_engine", engine)
    known = _DATABASES.get(engine)
    plain = not translate and not extra
    if known is None:
        known = _DATABASES[engine] = (database_name(engine), None)
    elif plain and known[1] is not None:
        return known[1]  # the usual scope: one look
    database = known[0]
    items = tuple(sorted(translate.items(), key=repr)) if translate else ()
    try:
        memo_key: Any = (database, items, extra)
        found = _SCOPES.get(memo_key)
    except TypeError:  # unhashable option values
        memo_key, found = None, None
    if found is None:
        try:
            text = "%s|%s|%s" % (database, keys.render_value(items), keys.render_value(extra))
        except keys.UnstableKey as exc:
            log.debug("execution options have no stable rendering (%s); not cached", exc)
            return None
        found = keys.digest(text)[:12]
        if memo_key is not None:
            _SCOPES.put(memo_key, found)
    if plain:
        _DATABASES[engine] = (database, found)
    return found


def _result_options(options: Any) -> Tuple[Tuple[str, Any], ...]:
    """The ``(name, value)`` pairs of ``options`` that may change what a statement returns."""
    for name in options:
        if name[0] != "_":  # SQLAlchemy's own (underscored) options are most, often all
            return tuple((name, value) for name, value in options.items()
                         if name[0] != "_" and name not in _NEUTRAL_OPTIONS and not name.startswith(_PREFIX))
    return ()


def execution_scope(state: ORMExecuteState) -> Optional[Tuple[str, Optional[Dict[Any, Any]]]]:
    """``(scope tag, schema_translate_map)`` of this execution, or None when it cannot be cached."""
    bind = state.session.get_bind(**state.bind_arguments)
    options = state.execution_options
    bind_options = bind.get_execution_options()
    translate = options.get("schema_translate_map") or bind_options.get("schema_translate_map")
    extra = _result_options(bind_options) + _result_options(options) if bind_options else _result_options(options)
    if len(extra) > 1:
        extra = tuple(sorted(set(extra), key=repr))
    found = scope_of(getattr(bind, "engine", bind), translate, extra)
    return None if found is None else (found, translate)
