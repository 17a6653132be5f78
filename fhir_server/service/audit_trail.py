"""Writing AuditEvents (R16): BALP events sealed into the hash chain, never lost.

A write's events are appended inside the write's own transaction; a read's events are
committed in a transaction of their own before the response leaves (the caller waits for
it). Each event is sealed with the chain head read under the store's write lock, so the
chain is one sequence whatever the number of workers.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from datetime import UTC, datetime

from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import DataEntity, build_audit_events, build_refusal_events
from fhir_server.audit.chain import GENESIS_HASH, chain_link, seal
from fhir_server.search.extract import PreparedEntries, extract, prepare
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions
from fhir_server.service.context import current_request
from fhir_server.service.notify import Intent, Notifier
from fhir_server.service.prepared import PreparedEvents
from fhir_server.store.base import ResourceStore, StoreTransaction, VersionConflict, VersionWrite

# Refusal events raised while a write transaction is open: that transaction is about to roll
# back, so they are committed on their own once it has ended.
_deferred: ContextVar[list[dict] | None] = ContextVar("deferred_refusals", default=None)


class _Collected:
    """The events (and R17 notifications) of a `one_commit` block, committed at its end."""

    __slots__ = ("events", "intents")

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.intents: list[Intent] = []


_collected: ContextVar[_Collected | None] = ContextVar("collected_audit", default=None)

# Set while the writes being made are audited by one event of the transaction that makes
# them (an XDS deposit's ITI-41 event), instead of one BALP event each.
_writes_summarized: ContextVar[bool] = ContextVar("writes_summarized", default=False)


class GroupCommitter:
    """Group commit: events from concurrent requests share one durable commit.

    Each caller waits until its events are committed (a read's AuditEvent is durable before
    its response is sent); one writer thread per process drains everything queued meanwhile
    into a single transaction, so the cost of a synchronous commit is shared. The R17
    notifications a read calls for ride in the same transaction.
    """

    def __init__(
        self,
        commit_batch: Callable[[PreparedEvents, list[Intent]], None],
        turn: Callable[[], AbstractContextManager] = nullcontext,
    ) -> None:
        self.pid = os.getpid()
        self._commit_batch = commit_batch
        self._turn = turn
        self._queue: queue.SimpleQueue[tuple[PreparedEvents, list[Intent], _Waiter]] = (
            queue.SimpleQueue()
        )
        threading.Thread(target=self._run, name="audit-group-commit", daemon=True).start()

    def commit(self, events: PreparedEvents, intents: list[Intent] | None = None) -> None:
        waiter = _Waiter()
        self._queue.put((events, intents or [], waiter))
        waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error

    def _run(self) -> None:
        while True:
            batch = [self._queue.get()]
            error: BaseException | None = None
            try:
                # Wait for this process's turn at the database first: events queued while
                # another process commits join this batch instead of waiting for the next.
                with self._turn():
                    while len(batch) < 256:
                        try:
                            batch.append(self._queue.get_nowait())
                        except queue.Empty:
                            break
                    self._commit_batch(
                        PreparedEvents(
                            [event for prepared, _, _ in batch for event in prepared.events],
                            [entry for prepared, _, _ in batch for entry in prepared.entries],
                        ),
                        [intent for _, intents, _ in batch for intent in intents],
                    )
            except BaseException as exc:  # handed to every waiting request
                error = exc
            for _, _, waiter in batch:
                waiter.error = error
                waiter.done.set()


class _Waiter:
    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


class AuditTrail:
    def __init__(
        self,
        store: ResourceStore,
        registry: SearchRegistry,
        base_url: str,
        clock: Callable[[], int],
    ) -> None:
        self.store = store
        self.registry = registry
        self.base_url = base_url
        self.clock = clock
        self.notifier = Notifier(registry, base_url, clock)
        # Benchmarks only: False drops events instead of storing them (the "audit sink
        # disabled" baseline the audited read path is compared to).
        self.enabled = True

    @staticmethod
    def records(requester: Requester) -> bool:
        """The server's own work (loading, retention) is not an access to anyone's record."""
        return requester.kind is not ActorKind.INTERNAL

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock() / 1_000_000, tz=UTC)

    def access(
        self,
        requester: Requester,
        interaction: str,
        patients: Iterable[str],
        entities: Iterable[DataEntity] = (),
        tx: StoreTransaction | None = None,
        notes: Iterable[str] = (),
        intents: Iterable[Intent] = (),
        prepared: PreparedEvents | None = None,
    ) -> list[dict]:
        """Record an access; with `notes` (the Permit's), the R17 notifications it calls for
        are written in the same transaction, as are the extra `intents` of a write."""
        if not self.records(requester) or not self.enabled:
            return []
        events = (
            prepared.events
            if prepared is not None
            else self._build(requester, interaction, patients, entities)
        )
        due = (
            [*self.notifier.for_access(requester, notes, events, self._now()), *intents]
            if notes or intents
            else []
        )
        if tx is not None and prepared is not None:
            self._append_in(tx, events, prepared.entries)
            if due:
                self.notifier.apply(tx, due)
        else:
            self._append(events, tx, due)
        return events

    def prepare_access(
        self,
        requester: Requester,
        interaction: str,
        patients: Iterable[str],
        entities: Iterable[DataEntity] = (),
    ) -> PreparedEvents | None:
        """The events `access` would record, with their index entries, built ahead of the
        write transaction they will be appended in (see `service.prepared`)."""
        if not self.records(requester) or not self.enabled:
            return None
        return self._prepared(self._build(requester, interaction, patients, entities))

    def _prepared(self, events: list[dict]) -> PreparedEvents:
        return PreparedEvents(events, [prepare(event, self.registry) for event in events])

    def _build(
        self,
        requester: Requester,
        interaction: str,
        patients: Iterable[str],
        entities: Iterable[DataEntity],
    ) -> list[dict]:
        info = current_request.get()
        return build_audit_events(
            interaction=interaction,
            requester=requester,
            patients=sorted(set(patients)),
            recorded=self._now(),
            server_base=self.base_url,
            request_id=info.request_id,
            raw_query=info.raw_query,
            entities=tuple(entities),
            client_address=info.client_address,
        )

    def refusal(
        self,
        requester: Requester,
        interaction: str,
        patients: Iterable[str],
        rule: str,
        *,
        resource_type: str | None = None,
        labels: Iterable[Mapping[str, str]] = (),
    ) -> None:
        """Record a refusal (R16) that names nothing the patient's trace may not show (R18):
        the resource type and the interaction, never the request's path or query (which
        name the resource refused, maybe one hidden from the patient or a representative);
        `labels`: the security labels of the resource refused (a Binary: its document's), so
        that the event is hidden from whom that resource is hidden."""
        if not self.records(requester):
            return
        info = current_request.get()
        events = build_refusal_events(
            requester=requester,
            patients=sorted(set(patients)),
            denied_rule=rule,
            recorded=self._now(),
            server_base=self.base_url,
            interaction=interaction,
            resource_type=resource_type,
            security_labels=tuple(labels),
            request_id=info.request_id,
            client_address=info.client_address,
        )
        pending = _deferred.get()
        if pending is not None:
            pending.extend(events)
        else:
            self._append(events, None)

    @contextmanager
    def deferring_refusals(self) -> Iterator[None]:
        """Around a write transaction: refusals inside it are committed after it ends."""
        if _deferred.get() is not None:  # nested: the outermost one flushes
            yield
            return
        token = _deferred.set([])
        try:
            yield
        finally:
            pending = _deferred.get()
            _deferred.reset(token)
            if pending:
                self._append(pending, None)

    def record(self, events: list[dict]) -> None:
        """Append events built elsewhere (the XDS transaction events), durably, in chain order."""
        self._append(events, None)

    def record_in(self, tx: StoreTransaction, prepared: PreparedEvents) -> None:
        """Append events built elsewhere in the write transaction `tx` (an XDS deposit's own
        event is stored with the deposit, or not at all). `prepared`: see `prepare_events`."""
        if self.enabled and prepared.events:
            self._append_in(tx, prepared.events, prepared.entries)

    def prepare_events(self, events: list[dict]) -> PreparedEvents:
        """Events with their index entries extracted, ahead of the transaction they go in."""
        return self._prepared(events)

    @contextmanager
    def summarizing_writes(self) -> Iterator[None]:
        """Within the block, writes record no event of their own: the caller stores the one
        event of the transaction making them (IHE ATNA: an ITI-41 deposit is one event naming
        its patient, submission set and documents), in the same write transaction. The R17
        notifications the writes call for are still written."""
        token = _writes_summarized.set(True)
        try:
            yield
        finally:
            _writes_summarized.reset(token)

    @staticmethod
    def writes_summarized() -> bool:
        return _writes_summarized.get()

    @contextmanager
    def one_commit(self) -> Iterator[None]:
        """Within the block, accesses recorded outside a write transaction (reads, searches,
        refusals, `record`) are committed together when it ends, durably, before it returns.

        For a request whose several service calls make one answer (an XDS transaction): one
        wait for a durable commit instead of one per call. The answer must be sent after the
        block, which raises if the events could not be stored. Nested blocks join the outer.
        """
        if _collected.get() is not None:
            yield
            return
        collected = _Collected()
        token = _collected.set(collected)
        try:
            yield
        finally:
            _collected.reset(token)
            if collected.events or collected.intents:
                self._committer.commit(self._prepared(collected.events), collected.intents)

    def _append(
        self, events: list[dict], tx: StoreTransaction | None, intents: list[Intent] | None = None
    ) -> None:
        if not self.enabled:
            return
        if tx is not None:
            self._append_in(tx, events)
            if intents:
                self.notifier.apply(tx, intents)
            return
        collected = _collected.get()
        if collected is not None:
            collected.events.extend(events)
            collected.intents.extend(intents or ())
            return
        # The index entries are extracted here, in the request's thread, so that the
        # committer's transaction (one at a time) only seals and writes.
        self._committer.commit(self._prepared(events), intents)

    @property
    def _committer(self) -> GroupCommitter:
        committer = self.__dict__.get("_group")
        if committer is None or committer.pid != os.getpid():  # new after a fork
            committer = self.__dict__["_group"] = GroupCommitter(self._commit_batch, self._turn)
        return committer

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """One audit committer at a time across worker processes, queued by the OS.

        SQLite's own busy handler makes a second process sleep for growing intervals while
        the first commits; a blocking file lock next to the database wakes the next
        committer as soon as the lock is released, and its batch grows meanwhile.
        """
        path = getattr(self.store, "path", None)
        if not isinstance(path, str) or path == ":memory:":
            yield
            return
        with open(f"{path}-audit.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _commit_batch(self, prepared: PreparedEvents, intents: list[Intent] | None = None) -> None:
        for attempt in range(5):
            try:
                with self.store.transaction() as own:
                    self._append_in(own, prepared.events, prepared.entries)
                    if intents:
                        self.notifier.apply(own, intents)
                self.notifier.remember(intents or [])
                return
            except VersionConflict:
                if attempt == 4:
                    raise

    def _append_in(
        self,
        tx: StoreTransaction,
        events: list[dict],
        prepared_entries: list[PreparedEntries] | None = None,
    ) -> None:
        head = tx.audit_head() or (0, GENESIS_HASH)
        sequence, previous = head
        for position, event in enumerate(events):
            sequence += 1
            sealed = seal(event, previous, sequence)
            previous = chain_link(sealed).hash
            stored = versions.stamp(sealed, sealed["id"], 1, self.clock())
            content = prepared_entries[position].entries() if prepared_entries else None
            entries = extract(sealed, self.registry, content=content)
            tx.append_audit(
                VersionWrite(
                    stored,
                    "POST",
                    0,
                    entries,
                    shard_key=entries.compartment[0] if entries.compartment else "",
                )
            )
        tx.set_audit_head(sequence, previous)
