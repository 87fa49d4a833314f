"""The durable invalidation log: a commit's version bumps recorded in the database it commits to.

Bumps are sent to memcached after COMMIT. What one process cannot guarantee
-- that it lives to send them, or reaches the server when others do -- the
database can: with the log enabled (``ORMCache(..., durable_log=True)`` or
:meth:`ORMCache.enable_durable_log`), each committing transaction that wrote
anything inserts one row into ``sqla_memcache_invalidations``, **in the same
transaction** (on the connection, in the ``commit`` event, before the DBAPI
commit), naming the version keys it bumps:

* committed with the data, or rolled back with it -- never one without the other;
* after the DBAPI commit the writer bumps the keys, and deletes the row once
  every bump is delivered;
* a row left behind -- the writer died between COMMIT and bump, or memcached
  did not answer it -- is delivered by any process: the background
  :class:`Deliverer` (``cache.start_deliverer(engine, interval=1.0)``) or
  ``sqla-memcache deliver --db URL --servers ... --namespace NS`` from cron.
  Rows are deleted only once their bumps are delivered. Delivering twice is
  harmless (a bump only makes entries older than it unreachable).

What remains: between the COMMIT and the delivery, other processes may read
the old entries -- microseconds normally, at most the deliverer's interval
(plus one query and the bumps) when the writer died. Writes in
``AUTOCOMMIT`` mode are delivered after each statement and are not logged.
On PostgreSQL the insert runs inside a savepoint, so a log problem can never
abort the user's transaction; on SQLite and MariaDB a failed statement leaves
the transaction as it was. Either way it is logged and the commit proceeds.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from typing import TYPE_CHECKING, Any, List, Optional

import sqlalchemy as sa

if TYPE_CHECKING:  # pragma: no cover
    from .cache import ORMCache

log = logging.getLogger(__name__)

TABLE_NAME = "sqla_memcache_invalidations"
#: execution option marking the log's own statements: the write capture ignores them
INTERNAL = "sqla_memcache_internal"

_metadata = sa.MetaData()
#: one row per committed transaction and namespace: the version keys it bumps, space-separated
table = sa.Table(
    TABLE_NAME,
    _metadata,
    sa.Column("token", sa.String(32), primary_key=True),
    sa.Column("namespace", sa.String(200), nullable=False, index=True),
    sa.Column("names", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)


def create_table(engine: Any) -> None:
    """Create the log table when it is missing (idempotent)."""
    with engine.connect() as conn:
        conn = conn.execution_options(**{INTERNAL: True})
        _metadata.create_all(conn, checkfirst=True)
        conn.commit()


class DurableLog:
    """The log of one cache on one engine: records in the commit, settles after it, delivers leftovers."""

    def __init__(self, cache: "ORMCache", engine: Any, create: bool = True) -> None:
        self.cache = cache
        self.engine = getattr(engine, "sync_engine", engine)
        if create:
            try:
                create_table(self.engine)
            except Exception:  # e.g. an async driver outside its event loop: the commit path still works
                log.warning("could not create %s on %r; create it yourself (durable.create_table) or commits "
                            "will log that they could not record their invalidations", TABLE_NAME, self.engine,
                            exc_info=True)
        self._delete = sa.delete(table).where(table.c.token == sa.bindparam("token")).compile(
            dialect=self.engine.dialect)
        self._savepoint = self.engine.dialect.name == "postgresql"

    # -- in the writer's transaction ----------------------------------------------------------
    def record(self, conn: Any, writes: Any) -> Optional[str]:
        """Insert the row naming what ``writes`` bumps, on ``conn`` before its DBAPI commit; its token."""
        names = self.cache.keys_for(writes)
        if not names:
            return None
        token = secrets.token_hex(16)
        row = {"token": token, "namespace": self.cache.namespace, "names": " ".join(names), "created": time.time()}
        internal = {INTERNAL: True}  # per statement: Connection.execution_options() would stick to it
        try:
            if self._savepoint:
                conn.exec_driver_sql("SAVEPOINT sqla_memcache_log", execution_options=internal)
            try:
                conn.execute(table.insert(), row, execution_options=internal)
            except Exception:
                if self._savepoint:
                    conn.exec_driver_sql("ROLLBACK TO SAVEPOINT sqla_memcache_log", execution_options=internal)
                raise
            if self._savepoint:
                conn.exec_driver_sql("RELEASE SAVEPOINT sqla_memcache_log", execution_options=internal)
        except Exception:  # the log must never fail the user's commit
            log.warning("could not record invalidations in %s; this commit relies on the direct bump only",
                        TABLE_NAME, exc_info=True)
            return None
        return token

    def settle(self, dbapi_connection: Any, token: str, writes: Any) -> None:
        """After the DBAPI commit: bump, and delete the row when every bump was delivered."""
        if not self.cache.deliver(writes):
            return  # kept: a deliverer (or this process's next run) sends it
        try:
            cursor = dbapi_connection.cursor()
            try:
                params: Any = (token,) if self._delete.positional else {"token": token}
                cursor.execute(self._delete.string, params)
            finally:
                cursor.close()
            dbapi_connection.commit()
        except Exception:  # the row is delivered again later: harmless
            log.debug("could not delete delivered log row %s", token, exc_info=True)
            try:
                dbapi_connection.rollback()
            except Exception:
                pass

    # -- any process --------------------------------------------------------------------------
    def deliver_pending(self, limit: int = 1000) -> int:
        """Deliver rows left in the log for this namespace; returns how many were delivered (and deleted)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{INTERNAL: True})
            rows = conn.execute(
                sa.select(table.c.token, table.c.names).where(table.c.namespace == self.cache.namespace)
                .order_by(table.c.created).limit(limit)
            ).all()
            conn.rollback()
            if not rows:
                return 0
            names = sorted({name for _, text in rows for name in text.split()})
            if not self.cache.bump(names):
                return 0  # memcached did not take them all: rows kept for the next round
            conn.execute(table.delete().where(table.c.token.in_([token for token, _ in rows])))
            conn.commit()
        log.info("delivered %d logged transaction(s) (%d version keys)", len(rows), len(names))
        return len(rows)

    def pending(self) -> int:
        """How many rows of this namespace wait in the log."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{INTERNAL: True})
            return int(conn.execute(sa.select(sa.func.count()).select_from(table)
                                    .where(table.c.namespace == self.cache.namespace)).scalar_one())


class Deliverer:
    """A daemon thread delivering a :class:`DurableLog`'s leftover rows every ``interval`` seconds."""

    def __init__(self, durable: DurableLog, interval: float = 1.0) -> None:
        if interval <= 0:
            raise ValueError("interval must be positive, got %r" % (interval,))
        self.durable = durable
        self.interval = interval
        self.stopped = threading.Event()
        self.delivered = 0
        self._thread = threading.Thread(target=self._run, name="sqla-memcache-deliverer", daemon=True)

    def start(self) -> "Deliverer":
        self._thread.start()
        return self

    def stop(self, timeout: Optional[float] = None) -> None:
        self.stopped.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self.stopped.is_set():
            started = time.monotonic()
            try:
                self.delivered += self.durable.deliver_pending()
            except Exception:  # database or memcached away: try again next round
                log.warning("delivering the invalidation log failed", exc_info=True)
            self.stopped.wait(max(0.0, self.interval - (time.monotonic() - started)))


def logs_for(caches: List["ORMCache"], engine: Any) -> List[DurableLog]:
    """The durable logs of ``caches`` on ``engine``."""
    found = []
    for cache in caches:
        durable = cache._durable.get(engine)
        if durable is not None:
            found.append(durable)
    return found
