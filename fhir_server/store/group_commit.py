"""Group commit: the write transactions of one process share a durable commit.

On this kind of machine a `synchronous=FULL` commit costs about 0.2 ms plus the time to
flush every page the transaction dirtied, and one resource write dirties about a hundred
pages (its row, its history row and a leaf of each index it touches). Concurrent writers
touch mostly the same pages (the right edges of the same B-trees), so committing them
together flushes those pages once.

Each write transaction runs as a *unit* inside the batch's SQLite transaction, under its
own SAVEPOINT: a unit that fails is rolled back alone and the others go on. Units run one
at a time on the writer connection; the unit that finds nobody queued behind it commits
the batch, and every member waits for that commit before it returns, so a write is never
acknowledged before it is durable. A unit sees the uncommitted work of the earlier units
of its batch: they are committed together or not at all, so nothing it decides on can be
lost without it. A reader connection does not see them until the commit: a write decided on
facts read there confirms them through its unit (`StoreTransaction.facts_epoch`).
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress

# A batch stops growing here, so that a steady stream of writers still gets commits.
MAX_UNITS = 64


class _Batch:
    __slots__ = ("done", "error", "turn", "units")

    def __init__(self, turn: AbstractContextManager) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.turn = turn
        self.units = 0


class GroupCommit:
    """Runs write units on one connection, committing queued units together.

    `turn` is held from the batch's BEGIN to its COMMIT: the cross-process writer lock.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        turn: Callable[[], AbstractContextManager],
        max_units: int = MAX_UNITS,
    ) -> None:
        self._connection = connection
        self._turn = turn
        self._max_units = max_units
        self._unit_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queued = 0
        self._batch: _Batch | None = None
        self.commits = 0  # durable commits so far (a batch of any size counts once)

    def waiting(self) -> bool:
        """Whether a unit of this process is queued for the writer connection: a long
        background unit (the AuditEvent journal move) ends early so that it goes next."""
        return self._queued > 0

    @contextmanager
    def unit(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: all of it is durable when the block exits, or none of it."""
        with self._queue_lock:
            self._queued += 1
        self._unit_lock.acquire()
        with self._queue_lock:
            self._queued -= 1
        try:
            batch = self._batch or self._open()
        except BaseException:
            self._unit_lock.release()
            raise
        try:
            self._connection.execute("SAVEPOINT unit")
            try:
                yield self._connection
                self._connection.execute("RELEASE unit")
            except BaseException:
                self._undo_unit(batch)
                raise
            batch.units += 1
        finally:
            if self._batch is batch and (
                batch.error is not None or self._queued == 0 or batch.units >= self._max_units
            ):
                self._close(batch)
            self._unit_lock.release()
        batch.done.wait()
        if batch.error is not None:
            raise batch.error

    def _open(self) -> _Batch:
        turn = self._turn()
        turn.__enter__()
        try:
            self._connection.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            turn.__exit__(type(exc), exc, exc.__traceback__)
            raise
        self._batch = _Batch(turn)
        return self._batch

    def _undo_unit(self, batch: _Batch) -> None:
        """Roll back the failed unit only; if SQLite ended the whole transaction, the batch
        is lost and its earlier members are told so."""
        connection = self._connection
        if connection.in_transaction:
            try:
                connection.execute("ROLLBACK TO unit")
                connection.execute("RELEASE unit")
                return
            except sqlite3.Error as exc:
                batch.error = exc
                return
        batch.error = sqlite3.OperationalError(
            "the write transaction was rolled back by the database; nothing was stored"
        )

    def _close(self, batch: _Batch) -> None:
        self._batch = None
        connection = self._connection
        try:
            if batch.error is None and batch.units:
                connection.execute("COMMIT")
                self.commits += 1
            elif connection.in_transaction:
                connection.execute("ROLLBACK")
        except BaseException as exc:
            batch.error = exc
            if connection.in_transaction:
                with suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
        finally:
            batch.turn.__exit__(None, None, None)
            batch.done.set()
