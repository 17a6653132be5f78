"""The ResourceStore port: what the service needs from a storage engine, and nothing more.

Two engines implement it (`sqlite.py`, `mongo.py`) and one contract test suite runs against
both. The store knows nothing of FHIR semantics beyond versions and index entries: the
service decides ids, versions, meta and index values; the store persists them atomically and
answers queries.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import orjson

from fhir_server.search.index import IndexEntries
from fhir_server.search.query import Include, SearchQuery
from fhir_server.store.cursor import invalid_cursor
from fhir_server.store.page import SearchPage


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of a resource as stored: its bytes are served as they are."""

    resource_type: str
    id: str
    version: int
    last_updated: int  # epoch microseconds, UTC
    deleted: bool
    body: bytes  # JSON, meta included; for a deleted version, a tombstone body

    def json(self) -> dict:
        return orjson.loads(self.body)


@dataclass(frozen=True, slots=True)
class HistoryEntry:
    resource: StoredResource
    method: str  # POST | PUT | DELETE


@dataclass(frozen=True, slots=True)
class HistoryPage:
    entries: list[HistoryEntry]
    next_cursor: str | None
    total: int | None = None


@dataclass(frozen=True, slots=True)
class VersionWrite:
    """A new version to persist. `expected_version` is the version it replaces (0: none)."""

    resource: StoredResource
    method: str
    expected_version: int
    index: IndexEntries | None  # None for deletions
    # `extract.sort_values(index)`, for an engine that stores them (MongoDB); None: the engine
    # computes them if it needs them (SQLite derives `_sort` keys from its index rows).
    sort_values: dict | None = None
    shard_key: str = ""  # MongoDB shard key (primary patient id of the compartment)
    # `audit.entity_facts.EntityFacts` of this version, encoded, for an engine that keeps them
    # beside it (SQLite); None: searches parse the version instead.
    facts: bytes | None = None


@dataclass(frozen=True, slots=True)
class FactsOf:
    """How a store derives the audit facts (`audit.entity_facts`) of a version it holds from
    before them: `derive(body)`, the encoded facts (ValueError: none can be); `prefix`, how
    every encoding of that derivation starts (facts kept by another are derived again)."""

    derive: Callable[[bytes], bytes]
    prefix: bytes

    @property
    def task(self) -> str:
        """The name under which a store marks this derivation's backfill done."""
        return f"resource_facts {self.prefix.hex()}"


class VersionConflict(Exception):
    """Another writer changed the resource since it was read (optimistic locking)."""

    def __init__(self, resource_type: str, resource_id: str) -> None:
        super().__init__(f"{resource_type}/{resource_id} was changed by another request")
        self.resource_type = resource_type
        self.resource_id = resource_id


class RecordMoved(VersionConflict):
    """A write was decided on a record's facts (its Consents, RelatedPersons, Patient) that
    are not the ones its transaction commits on: a change of them (a block) committed, or
    on SQLite was written by an earlier unit of the same batch, after the decision. Its
    write is judged again (a create, `FhirService.replayed`) or refused as a conflict."""

    def __init__(self, patient_id: str) -> None:
        super().__init__("Patient", patient_id)
        self.args = ("the record's access rights changed during the write; try again",)


# The record-epoch key every Patient write bumps (a FHIR id cannot contain "*"): what a
# Patient identifier resolves to holds while it has not moved.
PATIENTS_EPOCH = "*"


class StoreTransaction(Protocol):
    """The view of the store inside one atomic unit of work."""

    def read(self, resource_type: str, resource_id: str) -> StoredResource | None: ...

    def write(self, version: VersionWrite) -> None: ...

    def stage_audit(self, events: Sequence[dict]) -> Sequence[object]:
        """Stage this write's AuditEvents in its commit (the outbox the audit log is fed
        from, `store.with_audit_log`); returns their outbox keys."""
        ...

    def clear_outbox(self, keys: Sequence[object]) -> None:
        """Remove outbox rows whose events the audit log holds."""

    def notified_day(self, patient_id: str, practitioner_id: str) -> str | None:
        """The last day (ISO date) the patient was told of this practitioner's access (R17)."""

    def set_notified_day(self, patient_id: str, practitioner_id: str, day: str) -> None: ...

    def bump_record_epoch(self, patient_id: str) -> None:
        """Mark the patient's record facts (Patient, Consents, RelatedPersons) as changed.

        The engines also bump `PATIENTS_EPOCH` on every Patient write and purge themselves."""

    def facts_epoch(self, patient_id: str) -> int:
        """The record's epoch (`ResourceStore.record_epoch`) as this transaction commits on
        it, its own bumps left out: read inside the transaction (on SQLite, on the writer
        connection, which sees the earlier units of its batch that a reader does not), and
        where transactions overlap (MongoDB) claimed, so that a change of the record's facts
        committing before this transaction does conflicts with it. Read once per transaction
        and record: a write decided on another epoch is decided on facts it does not commit
        on (`RecordMoved`)."""
        ...

    def confirm_facts_epoch(self, patient_id: str, epoch: int) -> None:
        """Raise `RecordMoved` unless `facts_epoch(patient_id)` is `epoch`."""
        ...

    def search(self, query: SearchQuery, *, cursor_key: bytes, cursor_binding: str) -> SearchPage:
        """`ResourceStore.search` as this transaction sees the store: what was committed
        before it began and what it (and, on SQLite, the earlier units of its group commit)
        wrote. A conditional create re-runs its criteria here, after `claim`."""

    def claim(self, key: str) -> None:
        """Make every other transaction claiming `key` conflict with this one (issue #18,
        finding 7): of two that overlap, one fails with `VersionConflict` (and is retried
        by the service), so a check made in the survivor after its claim (a conditional
        create's search) cannot miss what the other one wrote. An engine whose writers take
        turns (SQLite's write lock) already has this and may do nothing."""

    def purge(self, resource_type: str, resource_id: str) -> None:
        """Remove a resource's current row, index entries and every history version.

        For the retention job only (R03: a closed record's data is purged after ten years);
        no HTTP path reaches it. It breaks the append-only history on purpose, and is never
        applied to AuditEvents.
        """


class ResourceStore(Protocol):
    """The port. Every method is safe to call from several threads."""

    name: str

    def read(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """The current version (possibly a deletion tombstone), or None if never stored."""

    def vread(
        self, resource_type: str, resource_id: str, version: int
    ) -> StoredResource | None: ...

    def transaction(self) -> AbstractContextManager[StoreTransaction]:
        """An atomic unit of work: everything written inside is committed together or not at all."""

    def history(
        self,
        resource_type: str | None,
        resource_id: str | None,
        *,
        since: int | None,
        count: int,
        cursor: str | None,
    ) -> HistoryPage:
        """Versions newest first: system (type None), type, or instance history."""

    def search(
        self, query: SearchQuery, *, cursor_key: bytes, cursor_binding: str
    ) -> SearchPage: ...

    def resolve_includes(
        self, rows: Sequence, includes: Sequence[Include], allowed
    ) -> list[tuple[str, str, bytes]]: ...

    def record_epoch(self, patient_id: str) -> int:
        """How many times the patient's record facts changed (0: never): a cache validator."""

    def ping(self) -> bool:
        """Whether the database answers (for /healthz)."""

    def close(self) -> None: ...


def encode_history_cursor(position: object) -> str:
    return base64.urlsafe_b64encode(orjson.dumps({"after": position})).decode().rstrip("=")


def decode_history_cursor(cursor: str) -> object:
    """The position an `encode_history_cursor` cursor holds. Anything else in it is refused:
    the request is audited as asked, and a value the cursor carried unread went into the
    patient's trace (R18)."""
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        decoded = orjson.loads(base64.urlsafe_b64decode(padded))
        if not isinstance(decoded, dict) or decoded.keys() != {"after"}:
            raise invalid_cursor()
        return decoded["after"]
    except (ValueError, KeyError, TypeError) as exc:
        raise invalid_cursor() from exc


# What SQLite's INTEGER and BSON's int64 hold: a history cursor is the client's to send back,
# so a number beyond them is a malformed cursor, not a query that fails (500) in the engine.
_INT64 = range(-(2**63), 2**63)


def history_int(value: object) -> int:
    """`value`, a number read from a history cursor, if an engine can compare it (an
    integer of 64 bits, not a bool); else the cursor is invalid (400)."""
    if not isinstance(value, int) or isinstance(value, bool) or value not in _INT64:
        raise invalid_cursor()
    return value


def chunked(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
