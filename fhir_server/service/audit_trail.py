"""Writing AuditEvents (R16): BALP events into the audit log, never lost.

A write's events are staged in the write's own transaction and reach the audit log once it
has committed (`store.with_audit_log`); a read's events are appended to the log before the
response leaves (the caller waits; concurrent reads share one commit). The log seals each
event into its hash chain under its own lock (`store.audit_log`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime

from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import (
    DataEntity,
    build_audit_events,
    build_refusal_events,
    hiding_codes,
)
from fhir_server.search.registry import SearchRegistry
from fhir_server.service.context import current_request
from fhir_server.service.notify import Intent, Notifier
from fhir_server.service.prepared import PreparedEvents
from fhir_server.store.base import StoreTransaction
from fhir_server.store.with_audit_log import StoreWithAuditLog

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


class AuditTrail:
    def __init__(
        self,
        store: StoreWithAuditLog,
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
        if due:
            # Outside a write transaction the intents are committed whatever follows: they
            # count as told for the rest of the request; a write's only once it commits, so
            # never marked here (a rolled-back write would have silenced a later read's).
            due = _not_told_in_request(due, mark=tx is None)
        if tx is not None and prepared is not None:
            tx.stage_audit(events)
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

    @staticmethod
    def _prepared(events: list[dict]) -> PreparedEvents:
        """Events the log will seal and store: nothing to index beforehand (the log keeps
        them narrow), so preparing them is building them."""
        return PreparedEvents(events, [])

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
            tx.stage_audit(prepared.events)

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
                self._commit(collected.events, _one_told_per_access(collected.intents))

    def _append(
        self, events: list[dict], tx: StoreTransaction | None, intents: list[Intent] | None = None
    ) -> None:
        if not self.enabled:
            return
        if tx is not None:
            tx.stage_audit(events)
            if intents:
                self.notifier.apply(tx, intents)
            return
        collected = _collected.get()
        if collected is not None:
            collected.events.extend(events)
            collected.intents.extend(intents or ())
            return
        self._commit(events, intents or [])

    def _commit(self, events: list[dict], intents: list[Intent]) -> None:
        """Events of no write, durable on return. The R17 notifications a read calls for
        are resource writes: they and the events then make one write transaction."""
        if not intents:
            self.store.append_audit(events)
            return
        with self.store.transaction() as own:
            own.stage_audit(events)
            self.notifier.apply(own, intents)
        self.notifier.remember(intents)


def _one_told_per_access(intents: list[Intent]) -> list[Intent]:
    """The notifications of one `one_commit` block (one XDS transaction: one access), each
    patient told once of it (R17, "one access is one notification"): of the access intents
    for one patient, the one hiding from fewest (as `Notifier.for_access` chooses among one
    search's events); the others as they are. Each Binary read of an ITI-43 and each search
    of an ITI-18 told an emergency access again: a retrieve of two documents was two
    notifications. (A normal access is told once a day already.)"""
    chosen: dict[str, Intent] = {}
    for intent in intents:
        if intent.event != "access":
            continue
        known = chosen.get(intent.patient_id)
        if known is None or len(hiding_codes(intent.labels)) < len(hiding_codes(known.labels)):
            chosen[intent.patient_id] = intent
    return [i for i in intents if i.event != "access" or chosen.get(i.patient_id) is i]


def _not_told_in_request(intents: list[Intent], *, mark: bool) -> list[Intent]:
    """`intents` without the emergency accesses (bris de glace, centre 15) this request told
    the patient of already (R17, "one access is one notification"); with `mark`, those kept
    count as told. One request searching then writing (a conditional update or PATCH, an
    ITI-57), or making several searches (a transaction's conditional references), told one
    access once per search and write. An access hidden from the representatives is covered
    by any told; one they see only by one they see (`notify._told_keys`)."""
    told = current_request.get().told
    if told is None:
        return intents
    kept = []
    for intent in intents:
        if intent.event == "access" and not intent.first_of_day_only:
            hidden = bool(hiding_codes(intent.labels))
            key = (intent.patient_id, intent.requester.subject_id)
            if (*key, False) in told or (hidden and (*key, True) in told):
                continue
            if mark:
                told.add((*key, hidden))
        kept.append(intent)
    return kept
