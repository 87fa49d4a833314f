"""Per-session, per-cache bookkeeping of the current transaction (kept in ``session.info``)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional


@dataclass
class TxState:
    """What one ``ORMCache`` knows about a session's current root transaction.

    ``connections``: the connections the transaction uses (their writes are
    captured by ``capture.py``: any write makes the transaction bypass the cache).
    ``began``: a database connection began inside this transaction (a snapshot may exist).
    ``epoch``: the namespace's commit epoch read when that connection began.
    ``pending``: version keys to bump after COMMIT.
    """

    connections: List[Any] = field(default_factory=list)
    began: bool = False
    epoch: Optional[int] = None


def tx_key(cache: Any) -> tuple:
    """The key of ``cache``'s :class:`TxState` in ``session.info``."""
    return ("sqla_memcache", id(cache))


def tx_state(session: Any, cache: Any) -> TxState:
    """The :class:`TxState` of ``session`` for ``cache``, created on first use."""
    info = session.info
    key = tx_key(cache)
    state = info.get(key)
    if state is None:
        state = info[key] = TxState()
    return state


def reset_tx_state(session: Any, cache: Any) -> None:
    """Forget the transaction (after it ended, committed or rolled back)."""
    session.info.pop(tx_key(cache), None)
