"""Group commit for the audit log engines: one committer thread per process.

A read's AuditEvent must be durable before its answer leaves, and a durable commit costs
a fixed amount (on SQLite a WAL flush, on MongoDB a journaled majority write) whatever it
holds. So every append queued while a batch commits waits for the next commit and shares
it: the more concurrent readers, the larger the batches, the less each event pays.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

from fhir_server.store.audit_log.record import LogRecord

# A batch stops growing here, so that a steady stream of readers still gets commits.
MAX_BATCH = 512
# The committer thread ends after this long without appends (the next append starts one):
# a log nobody closes (a store dropped without `close`) leaves no thread behind.
IDLE_SECONDS = 2.0


class PendingAppend:
    """One caller's events, waiting in the queue for the commit that stores them."""

    __slots__ = ("done", "error", "events", "records", "skip_known")

    def __init__(self, events: list[dict], skip_known: bool) -> None:
        self.events = events
        self.skip_known = skip_known
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.records: list[LogRecord] = []


class GroupAppender:
    """Group commit for an audit log engine: one committer thread per process drains the
    queue, so every append queued while a batch commits shares the next commit.

    `commit(batch)` stores the batch durably and sets each member's `records` (or its own
    `error`); an exception it raises is handed to every member. `turn`, if the engine has
    one, is held while a batch is gathered and committed (the SQLite log's cross-process
    `WriteTurn`); MongoDB has none (`MongoAuditLog`).
    """

    def __init__(
        self,
        commit: Callable[[list[PendingAppend]], None],
        *,
        turn: Callable[[], AbstractContextManager] = nullcontext,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._commit = commit
        self._turn = turn
        self._max_batch = max_batch
        self._queue: queue.SimpleQueue[PendingAppend | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._committer_pid = 0  # the process whose committer thread runs, 0 for none
        self._stopped = False

    def append(self, events: Sequence[dict], skip_known: bool) -> list[LogRecord]:
        if self._stopped:
            raise RuntimeError("the audit log is closed")
        pending = PendingAppend(list(events), skip_known)
        with self._lock:  # with the committer's idle exit: never an append left unserved
            self._queue.put(pending)
            if self._committer_pid != os.getpid():  # none yet, idle-ended, or forked
                self._committer_pid = os.getpid()
                threading.Thread(target=self._run, name="audit-log", daemon=True).start()
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.records

    def stop(self) -> None:
        """The committer ends once the appends queued before this have committed."""
        self._stopped = True
        self._queue.put(None)

    def _run(self) -> None:
        stop = False
        while not stop:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._committer_pid = 0
                        return
                continue
            if first is None:
                return
            batch = [first]
            try:
                # The turn first (if the engine has one): what is queued while another
                # process commits joins this batch instead of waiting for the next.
                with self._turn():
                    stop = self._drain(batch)
                    self._commit(batch)
            except BaseException as exc:  # handed to every waiting request
                for pending in batch:
                    pending.records = []
                    pending.error = exc
            for pending in batch:
                pending.done.set()

    def _drain(self, batch: list[PendingAppend]) -> bool:
        """Add what is queued to `batch`, up to its size; True if `stop` was asked."""
        while len(batch) < self._max_batch:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return False
            if pending is None:
                return True
            batch.append(pending)
        return False
