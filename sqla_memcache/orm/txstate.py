"""Per-session, per-cache bookkeeping of the current transaction (kept in ``session.info``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Set


@dataclass
class TxState:
    """What one ``ORMCache`` knows about a session's current root transaction.

    ``dirty``: changes were flushed or DML executed and not yet committed.
    ``began``: a database connection began inside this transaction (a snapshot may exist).
    ``epoch``: the namespace's commit epoch read when that connection began.
    ``pending``: version keys to bump after COMMIT.
    """

    dirty: bool = False
    began: bool = False
    epoch: Optional[int] = None
    pending: Set[str] = field(default_factory=set)


def _info_key(cache: Any) -> tuple:
    return ("sqla_memcache", id(cache))


def tx_state(session: Any, cache: Any) -> TxState:
    """The :class:`TxState` of ``session`` for ``cache``, created on first use."""
    info = session.info
    key = _info_key(cache)
    state = info.get(key)
    if state is None:
        state = info[key] = TxState()
    return state


def is_dirty(session: Any, cache: Any) -> bool:
    """True when ``session``'s transaction wrote for ``cache`` (no state is created when there is none)."""
    state = session.info.get(_info_key(cache))
    return state is not None and state.dirty


def reset_tx_state(session: Any, cache: Any) -> None:
    """Forget the transaction (after it ended, committed or rolled back)."""
    session.info.pop(_info_key(cache), None)
