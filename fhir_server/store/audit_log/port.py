"""The audit log's port: what the server needs of an engine that keeps AuditEvents."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Protocol

from fhir_server.store.audit_log.record import LogRecord


class AuditLogEngine(Protocol):
    """An append-only, hash-chained log of AuditEvents (`audit_log` package docstring).

    `append` returns once the events are durable; concurrent callers share one commit.
    Nothing updates or deletes an event.
    """

    name: str

    def append(self, events: Sequence[dict], *, skip_known: bool = False) -> list[LogRecord]:
        """Seal `events` after the chain's head, in order, and store them durably.

        `skip_known`: events whose id the log already holds are left out (an outbox replayed
        after a crash: see `store.with_audit_log`)."""
        ...

    def import_sealed(self, records: Sequence[LogRecord]) -> int:
        """Store events sealed elsewhere (migration from the resource tables), keeping their
        chain links; ids already held are skipped. Returns how many were stored."""
        ...

    def head(self) -> tuple[int, str] | None:
        """(sequence, hash) of the newest event, or None for an empty log."""
        ...

    def get(self, event_id: str) -> LogRecord | None: ...

    def known(self, event_ids: Iterable[str]) -> set[str]:
        """Which of `event_ids` the log holds."""
        ...

    def scan(self, patients: Sequence[str] | None = None) -> Iterator[LogRecord]:
        """Events in chain order; with `patients`, only those in one of their compartments."""
        ...

    def patient_keys(
        self, *, after: int | None = None, up_to: int | None = None
    ) -> Iterator[tuple[int, str]]:
        """(sequence, Patient id) of every key the patients' trace view finds events by
        (`scan(patients)`), by sequence: what `fhir-server audit verify` checks against the
        Patients each event's sealed body names. `after` (exclusive) and `up_to` (inclusive)
        bound the sequences; None: no bound."""
        ...

    def newest_first(
        self, *, before: int | None, since: int | None, event_id: str | None, limit: int
    ) -> list[LogRecord]:
        """For `_history`: up to `limit` events by descending sequence, below `before`,
        recorded at or after `since`, with id `event_id` if given."""
        ...

    def integrity_problem(self) -> str | None:
        """Why the engine's own storage is not consistent (an index that disagrees with its
        table, which a read would go by and `scan` not) or not the one the server creates
        (a trigger, an index's definition), as a sentence, or None: for `audit verify`."""
        ...

    def close(self) -> None: ...
