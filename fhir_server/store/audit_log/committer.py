"""Group commit for the audit log engines, led by the appending threads themselves.

A read's AuditEvent must be durable before its answer leaves, and a durable commit costs
a fixed amount (on SQLite a WAL flush, on MongoDB a journaled majority write) whatever it
holds. So every append queued while a batch commits waits for the next commit and shares
it: the more concurrent readers, the larger the batches, the less each event pays.

There is no committer thread: the first request thread to append when no commit runs leads
one, committing what is queued (its own event and those of whoever queued meanwhile); when
it is done, the next queued append, if any, leads the next batch. Handing a batch to a
dedicated thread would cost a thread switch per commit and per answer, and on a worker
whose other threads are busy interpreting requests, a thread woken must wait for the
interpreter lock (up to a switch interval, 5 ms) before it can even start the commit.

An engine may make a batch durable in two steps: its commit under the turn, visible to the
other writers, then a `sync` after the turn is released and before any member returns. The
turn is the one lock every worker process's leader queues on; a leader that gave up the
interpreter lock inside it (for the flush) waits to take it back while holding the turn,
behind its own worker's busy threads, and the other worker's leader waits with it.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext

from fhir_server.store.audit_log.record import LogRecord

# A batch stops growing here, so that a steady stream of readers still gets commits.
MAX_BATCH = 512


class PendingAppend:
    """One caller's events, waiting in the queue for the commit that stores them. `done`
    is released once, when they are stored (or failed: `error`), or when this caller is to
    lead the next commit (`lead`): a bare lock, held from the start, is the cheapest thing
    a thread can block on and another release."""

    __slots__ = ("done", "error", "events", "lead", "records", "skip_known")

    def __init__(self, events: list[dict], skip_known: bool) -> None:
        self.events = events
        self.skip_known = skip_known
        self.done = threading.Lock()
        self.done.acquire()
        self.error: BaseException | None = None
        self.records: list[LogRecord] = []
        self.lead = False


class GroupAppender:
    """Group commit for an audit log engine (module docstring).

    `commit(batch)` stores the batch and sets each member's `records` (or its own
    `error`); an exception it raises is handed to every member. `turn`, if the engine has
    one, is held while a batch is gathered and committed (the SQLite log's cross-process
    `WriteTurn`); MongoDB has none (`MongoAuditLog`). `sync`, if the engine has one, makes
    what `commit` stored durable, after the turn is released: the members return only once
    it has (an exception it raises is handed to every member, as one of `commit`'s).
    """

    def __init__(
        self,
        commit: Callable[[list[PendingAppend]], None],
        *,
        turn: Callable[[], AbstractContextManager] = nullcontext,
        sync: Callable[[], None] | None = None,
        max_batch: int = MAX_BATCH,
    ) -> None:
        self._commit = commit
        self._turn = turn
        self._sync = sync
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._queue: deque[PendingAppend] = deque()
        self._leading = False
        self._pid = os.getpid()
        self._stopped = False

    def append(self, events: Sequence[dict], skip_known: bool) -> list[LogRecord]:
        if self._stopped:
            raise RuntimeError("the audit log is closed")
        pending = PendingAppend(list(events), skip_known)
        with self._lock:
            if self._pid != os.getpid():  # a forked child: its parent's commits are not its
                self._pid, self._queue, self._leading = os.getpid(), deque(), False
            self._queue.append(pending)
            leads = not self._leading
            self._leading = True
        if not leads:
            pending.done.acquire()
        if leads or pending.lead:
            self._lead(pending)
        if pending.error is not None:
            raise pending.error
        return pending.records

    def stop(self) -> None:
        """Later appends are refused; those already queued are committed by their leaders."""
        self._stopped = True

    def _lead(self, own: PendingAppend) -> None:
        """Commit one batch (the leader's own append is in it: it was queued first, or it
        was promoted at the head of the queue), then pass the lead to the next queued
        append, or end it."""
        batch: list[PendingAppend] = []
        try:
            with self._turn():
                batch = self._take()  # under the turn: what queued while it was held joins
                self._commit(batch)
            if self._sync is not None:
                self._sync()
        except BaseException as exc:  # handed to every waiting request
            batch = batch or self._take()
            for pending in batch:
                pending.records = []
                pending.error = exc
        with self._lock:
            if self._queue:
                self._queue[0].lead = True
                self._queue[0].done.release()
            else:
                self._leading = False
        for pending in batch:
            if pending is not own:  # the leader does not wait for itself
                pending.done.release()

    def _take(self) -> list[PendingAppend]:
        with self._lock:
            return [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch))]
