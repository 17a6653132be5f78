"""The gate's facts, read from the store and cached: the one part of the gate that reads it.

The pure policy decides on facts (`access.policy`); gathering them costs store reads, which
is why they are cached here and nowhere else: a patient's record per process while its epoch
has not moved, an INS's Patients while no Patient has been written, and both once per
request (the request memo), since a search asks for them for its query, its includes, its
chained clauses and its audit. `RecordFacts` answers the `port.Facts` interface the decision
modules ask through.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import orjson

from fhir_server.access import binding as patient_binding
from fhir_server.access.ownership import has_owner, owner_id
from fhir_server.access.policy import DmpPolicy
from fhir_server.access.record import PatientRecord, build_record, latest_date
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.resources import record_closure
from fhir_server.resources.document_state import DELETED_STATUS
from fhir_server.search.query import (
    MAX_COUNT,
    Chain,
    IdTest,
    Node,
    ReferenceTest,
    SearchQuery,
    TokenTest,
    UriTest,
)
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import lifecycle, messaging
from fhir_server.service.context import request_memo
from fhir_server.service.epoch_cache import EpochCache
from fhir_server.service.existence_check import Closed
from fhir_server.service.gate.common import (
    INTERNAL_BINDING,
    conjuncts,
    designates_patients,
    patient_designation,
)
from fhir_server.store.base import PATIENTS_EPOCH, ResourceStore, StoredResource

RECORD_CACHE_SIZE = 10_000
# A Binary without owner is judged by every document naming it; past this many, it is not
# served at all (all of them could not be judged).
LEGACY_POINTERS = 100


class RecordFacts:
    """The facts of `port.Facts`, read from `store` with the server's own searches (no
    access constraint: the facts are what the constraints are decided on)."""

    def __init__(self, store: ResourceStore, cursor_key: bytes) -> None:
        self.store = store
        self.cursor_key = cursor_key
        self._records: EpochCache[PatientRecord | None] = EpochCache(RECORD_CACHE_SIZE)
        self._designations: EpochCache[list[str]] = EpochCache(RECORD_CACHE_SIZE)

    # -- the server's own searches ---------------------------------------------------------

    def internal_search(
        self, resource_type: str, where: Node, count: int | None
    ) -> list[tuple[str, str, bytes]]:
        """The first `count` matches (None: every match, page after page) as (type, id,
        body), unconstrained."""
        found: list[tuple[str, str, bytes]] = []
        cursor: str | None = None
        while True:
            page = self.store.search(
                SearchQuery(
                    resource_type,
                    where=where,
                    count=MAX_COUNT if count is None else count,
                    cursor=cursor,
                ),
                cursor_key=self.cursor_key,
                cursor_binding=INTERNAL_BINDING,
            )
            found += [(row[0], row[1], row[2]) for row in page.rows]
            cursor = page.next_cursor
            if count is not None or cursor is None or not page.rows:
                return found

    def _internal_search_all(self, resource_type: str, where: Node) -> list[bytes]:
        """Every match, page after page: a record's facts are all its Consents and
        RelatedPersons, never the first page of them (a practitioner recording their own
        authorization over and over must not push the patient's blocks out of sight)."""
        return [row[2] for row in self.internal_search(resource_type, where, None)]

    # -- a patient's record ----------------------------------------------------------------

    def record(self, patient_id: str) -> PatientRecord | None:
        """The facts about one patient's record, or None when there is no such patient.

        Computed once per request: a search asks for it for the query, its includes, its
        chained clauses and its audit.
        """
        return self.record_and_epoch(patient_id)[0]

    def record_and_epoch(self, patient_id: str) -> tuple[PatientRecord | None, int]:
        """`record` and the epoch its facts hold under: a write's transaction confirms the
        epoch its decision was made on (`Gate.judged_record`)."""
        memo = request_memo()
        if memo is None:
            return self._cached_record(patient_id)
        key = ("record", patient_id)
        if key not in memo:
            memo[key], memo[("epoch", patient_id)] = self._cached_record(patient_id)
        return memo[key], memo[("epoch", patient_id)]

    def epochs_read(self) -> dict[str, int]:
        """The epoch of each record whose facts this request's decisions were made on (its
        memo's; none outside a request): what `moved_since` compares at the time of use."""
        memo = request_memo() or {}
        return {
            key[1]: epoch
            for key, epoch in memo.items()
            if isinstance(key, tuple) and len(key) == 2 and key[0] == "epoch"
        }

    def moved_since(self, epochs: dict[str, int]) -> bool:
        """Whether a write to one of these records' facts (a Consent, a RelatedPerson, the
        Patient) committed since their epochs were read: a decision made on them before is
        to be made again before what it allowed is served (R09, R10: a block committed
        between a search's decision and its page). A write confirms its decision through its
        transaction instead (`StoreTransaction.facts_epoch`), which sees what it commits on."""
        return any(self.store.record_epoch(patient) != epoch for patient, epoch in epochs.items())

    def _cached_record(self, patient_id: str) -> tuple[PatientRecord | None, int]:
        """Record facts cached per process, valid while the record's epoch has not moved, and
        the epoch they hold under (read before them).

        Every write to the patient's Patient, Consents or RelatedPersons bumps the epoch in
        its own transaction (`Gate.after_write`), so one indexed lookup replaces a Patient
        read, two searches and the Consents' interpretation, whichever worker made the change.
        """
        now = datetime.now(UTC)
        # The latest date anywhere too: a minor's age is taken on it (`record.latest_date`).
        key = (patient_id, now.date(), latest_date(now))
        epoch = self.store.record_epoch(patient_id)
        return self._records.get_or_compute(
            key,
            epoch,
            lambda: self.load_record(patient_id, now),
            # A Consent's or a representative's period that began or ended since: read
            # again (a permit ended at 10:00 held until midnight).
            lambda record: record is None or record.valid_until is None or now < record.valid_until,
        ), epoch

    def load_record(self, patient_id: str, now: datetime | None = None) -> PatientRecord | None:
        """A record's facts read afresh (no cache): what a first request in it costs."""
        stored = self.store.read("Patient", patient_id)
        if stored is None or stored.deleted:
            return None
        reference = ReferenceTest("patient", "Patient", patient_id)
        consents = [orjson.loads(body) for body in self._internal_search_all("Consent", reference)]
        related = [
            orjson.loads(body) for body in self._internal_search_all("RelatedPerson", reference)
        ]
        now = now or datetime.now(UTC)
        return build_record(stored.json(), consents, related, now.date(), now)

    def closed(self, patient_id: str) -> Closed:
        """When the record was closed (the Patient's history) and the closure it carries."""
        stored = self.store.read("Patient", patient_id)
        return Closed(
            lifecycle.closed_since(self.store, patient_id),
            record_closure.closure_of(stored.json()) if stored is not None else None,
        )

    # -- who is asking, for whom -----------------------------------------------------------

    def acting_for(self, requester: Requester) -> str | None:
        """A patient's own id; a representative's patient, from the token or else from
        their RelatedPerson."""
        if requester.kind is ActorKind.PATIENT:
            return requester.subject_id
        if requester.kind is ActorKind.REPRESENTATIVE:
            if requester.patient_id:
                return requester.patient_id
            related = self.store.read("RelatedPerson", requester.subject_id)
            if related is not None and not related.deleted:
                reference = (related.json().get("patient") or {}).get("reference", "")
                return reference.removeprefix("Patient/") or None
        return None

    def designated_patient(self, resource_type: str, where: Node) -> tuple[bool, str | None]:
        """(a patient was designated, its id if exactly one is known) for R04, once per request."""
        memo = request_memo()
        if memo is None:
            return self._find_designated_patient(resource_type, where)
        key = ("designated", resource_type, where)
        if key not in memo:
            memo[key] = self._find_designated_patient(resource_type, where)
        return memo[key]

    def remember_designated(
        self, resource_type: str, where: Node, found: tuple[bool, str | None]
    ) -> None:
        """The constrained query designates the same patient as the one it was made from."""
        memo = request_memo()
        if memo is not None:
            memo[("designated", resource_type, where)] = found

    def _find_designated_patient(self, resource_type: str, where: Node) -> tuple[bool, str | None]:
        for part in conjuncts(where):
            designating = patient_designation(part)
            if isinstance(designating, ReferenceTest):
                return True, designating.target_id
            if isinstance(designating, Chain):
                ids = self.patients_matching(designating.where)
                return True, ids[0] if len(ids) == 1 else None
            if resource_type == "Patient" and designates_patients(part):
                if isinstance(part, IdTest):
                    return True, part.ids[0]
                ids = self.patients_matching(part)
                return True, ids[0] if len(ids) == 1 else None
        return False, None

    def patients_matching(self, where: Node) -> list[str]:
        """The ids of (at most two) Patients matching a designating clause (an INS).

        Cached per process while no Patient has been written anywhere: every Patient write
        bumps `PATIENTS_EPOCH` in its own transaction, so one indexed lookup replaces a search.
        """
        epoch = self.store.record_epoch(PATIENTS_EPOCH)
        return self._designations.get_or_compute(
            where,
            epoch,
            lambda: [row[1] for row in self.internal_search("Patient", where, 2)],
        )

    def bound_patient(self, requester: Requester) -> tuple[bool, str | None]:
        """(the request is bound to a patient, that Patient's id) per `access.binding`.

        An INS is resolved like a search's `patient.identifier`; an INS that names no single
        Patient, or that names another Patient than the `patient` id beside it, binds to no
        record (None): fail closed.
        """
        context = patient_binding.context_of(requester)
        if context is None:
            return False, None
        if context.ins is None:
            return True, context.patient_id
        memo = request_memo()
        if memo is None:
            return True, self._resolved_context(context)
        key = ("bound", context)
        if key not in memo:
            memo[key] = self._resolved_context(context)
        return True, memo[key]

    def _resolved_context(self, context: patient_binding.PatientContext) -> str | None:
        assert context.ins is not None
        system, _, value = context.ins.partition("|")
        ids = self.patients_matching(TokenTest("identifier", system, value))
        resolved = ids[0] if len(ids) == 1 else None
        if context.patient_id is not None and resolved != context.patient_id:
            return None
        return resolved

    # -- resources -------------------------------------------------------------------------

    def current(self, resource_type: str, resource_id: str) -> StoredResource | None:
        """The current version, a deletion's tombstone included (the caller decides what
        an absent or deleted resource means for it)."""
        return self.store.read(resource_type, resource_id)

    def content(self, stored: StoredResource) -> dict:
        """The resource a version shows; for a deletion, the last version that had content
        (the tombstone has none to judge)."""
        if stored.deleted:
            for version in range(stored.version - 1, 0, -1):
                previous = self.store.vread(stored.resource_type, stored.id, version)
                if previous is not None and not previous.deleted:
                    last = previous.json()
                    if stored.resource_type == "DocumentReference":
                        # A document deleted (REST DELETE) is judged as one deleted logically
                        # (PDSm4DMP TD3.3c, `access.deletion`): seen by its author only. As
                        # its last version, its vread and _history stayed open to every
                        # reader of that version, where its logical deletion hides them.
                        last["status"] = DELETED_STATUS
                    return last
        return stored.json()

    def binary_documents(self, binary_id: str, binary: dict) -> list[dict]:
        """The documents a Binary version is judged by: its owner's current version (none if
        that document is gone), or, for a Binary without owner, every current
        DocumentReference naming it (none if there are too many to be sure of all)."""
        if has_owner(binary):
            owner = owner_id(binary)
            stored = self.store.read("DocumentReference", owner) if owner else None
            return [] if stored is None or stored.deleted else [stored.json()]
        found = self.internal_search(
            "DocumentReference", UriTest("location", f"Binary/{binary_id}"), LEGACY_POINTERS + 1
        )
        if len(found) > LEGACY_POINTERS:
            return []
        return [orjson.loads(body) for _, _, body in found]

    # -- secure messaging (it reads what a message answers and attaches) -------------------

    def check_message(
        self, policy: DmpPolicy, requester: Requester, message: dict, record: PatientRecord | None
    ) -> None:
        messaging.check_message(
            self.store, policy, requester, message, record, self.internal_search
        )

    def received_on_read(
        self,
        registry: SearchRegistry,
        clock: Callable[[], int],
        requester: Requester,
        stored: StoredResource,
        record: PatientRecord | None,
    ) -> StoredResource | None:
        """The one write a read makes (a recipient's first read sets ``received``): here
        with the store, so that the read decisions need none."""
        return messaging.received_on_read(self.store, registry, clock, requester, stored, record)
