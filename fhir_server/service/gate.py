"""The access gate: scopes (R02), then the DMP policy, then the audit, on every interaction.

The service calls it at fixed points; the gate gathers the facts the pure policy needs (the
patient's record: Patient, Consents, RelatedPersons) from the store, turns a Permit's
constraints into query clauses (invariant 2: pushed down, never filtered after) and a Deny
into an error plus an AuthZ-Consent AuditEvent.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from enum import StrEnum
from functools import lru_cache

import orjson

from fhir_server.access import binding as patient_binding
from fhir_server.access import hidden_references
from fhir_server.access.constraints import compartment_of
from fhir_server.access.constraints import matches as constraint_matches
from fhir_server.access.decision import Deny, Permit, not_found_message
from fhir_server.access.ownership import has_owner, one_patient, owner_id
from fhir_server.access.policy import DIRECTORY_TYPES, DmpPolicy
from fhir_server.access.record import PatientRecord, build_record
from fhir_server.access.requester import INTERNAL, ActorKind, Requester
from fhir_server.audit.balp import ROLE_QUERY, DataEntity, security_labels_of
from fhir_server.auth.scopes import ScopeError, ScopeSet
from fhir_server.errors import FhirError, error
from fhir_server.resources import record_closure
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search.parameters import parse_search
from fhir_server.search.query import (
    MAX_COUNT,
    And,
    Chain,
    Everything,
    Has,
    IdTest,
    InCompartment,
    Node,
    Not,
    Or,
    ReferenceTest,
    SearchQuery,
    TokenTest,
    UriTest,
    all_of,
)
from fhir_server.search.registry import SearchRegistry
from fhir_server.search.simplify import without_implied_compartment
from fhir_server.service import existence_check, lifecycle, messaging
from fhir_server.service.audit_trail import AuditTrail
from fhir_server.service.context import forget_request_facts, request_memo
from fhir_server.service.epoch_cache import EpochCache
from fhir_server.service.prepared import PreparedEvents
from fhir_server.store.base import PATIENTS_EPOCH, HistoryPage, ResourceStore, StoredResource

NOTHING: Node = Not(Everything())
# The resources a search's criteria may name whose labels its event carries, at most.
NAMED_TARGETS = 20
# Where an untyped id (`item=ID`) is looked for: the types that carry DMP labels.
LABELLED_TYPES = ("DocumentReference", "Binary", "List")
# The resources a PatientRecord is built from; a write to one of them moves the record epoch.
RECORD_FACT_TYPES = frozenset({"Patient", "Consent", "RelatedPerson"})
RECORD_CACHE_SIZE = 10_000
# A Binary without owner is judged by every document naming it; past this many, it is not
# served at all (all of them could not be judged).
LEGACY_POINTERS = 100

# What the server's own searches and writes are let through with: no constraint, no note.
INTERNAL_PERMIT = Permit(Everything(), "internal")


PATIENT_PARAMS = ("patient", "subject")
INTERNAL_BINDING = "internal"


class ReadPurpose(StrEnum):
    READ = "read"
    VREAD = "vread"
    HISTORY = "history-instance"


@lru_cache(maxsize=1024)
def _scope_set(scopes: tuple[str, ...]) -> ScopeSet:
    """A token's scopes parsed once: the same scopes come with every request of a token."""
    return ScopeSet.from_scopes(scopes)


# Search decisions kept per (requester, type, record): a record's facts are cached per record
# epoch, so a new fact (a Consent, a block) makes a new record object and a new decision.
SEARCH_DECISIONS = 4096


def _designated(where: Node) -> list[Node]:
    return list(where.parts) if isinstance(where, And) else [where]


class Gate:
    def __init__(
        self,
        store: ResourceStore,
        registry: SearchRegistry,
        policy: DmpPolicy,
        audit: AuditTrail,
        cursor_key: bytes,
    ) -> None:
        self.store = store
        self.registry = registry
        self.policy = policy
        self.audit = audit
        self.cursor_key = cursor_key
        self._records: EpochCache[PatientRecord | None] = EpochCache(RECORD_CACHE_SIZE)
        self._decisions: OrderedDict[tuple, tuple[PatientRecord | None, object]] = OrderedDict()
        self._decisions_lock = threading.Lock()
        self._designations: EpochCache[list[str]] = EpochCache(RECORD_CACHE_SIZE)

    # -- facts -----------------------------------------------------------------------------

    def binding(self, requester: Requester) -> str:
        """What a paging cursor is bound to: the requester and the token's scopes."""
        material = f"{requester.kind}|{requester.subject_id}|{requester.access_mode}|{' '.join(requester.scopes)}"
        return hashlib.sha256(material.encode()).hexdigest()[:32]

    def _internal_search(
        self, resource_type: str, where: Node, count: int
    ) -> list[tuple[str, str, bytes]]:
        page = self.store.search(
            SearchQuery(resource_type, where=where, count=count),
            cursor_key=self.cursor_key,
            cursor_binding=INTERNAL_BINDING,
        )
        return [(row[0], row[1], row[2]) for row in page.rows]

    def _internal_search_all(self, resource_type: str, where: Node) -> list[bytes]:
        """Every match, page after page: a record's facts are all its Consents and
        RelatedPersons, never the first page of them (a practitioner recording their own
        authorization over and over must not push the patient's blocks out of sight)."""
        bodies: list[bytes] = []
        cursor: str | None = None
        while True:
            page = self.store.search(
                SearchQuery(resource_type, where=where, count=MAX_COUNT, cursor=cursor),
                cursor_key=self.cursor_key,
                cursor_binding=INTERNAL_BINDING,
            )
            bodies.extend(row[2] for row in page.rows)
            cursor = page.next_cursor
            if cursor is None or not page.rows:
                return bodies

    def record(self, patient_id: str) -> PatientRecord | None:
        """The facts about one patient's record, or None when there is no such patient.

        Computed once per request: a search asks for it for the query, its includes, its
        chained clauses and its audit.
        """
        memo = request_memo()
        if memo is None:
            return self._cached_record(patient_id)
        key = ("record", patient_id)
        if key not in memo:
            memo[key] = self._cached_record(patient_id)
        return memo[key]

    def _cached_record(self, patient_id: str) -> PatientRecord | None:
        """Record facts cached per process, valid while the record's epoch has not moved.

        Every write to the patient's Patient, Consents or RelatedPersons bumps the epoch in
        its own transaction (`after_write`), so one indexed lookup replaces a Patient read,
        two searches and the Consents' interpretation, whichever worker made the change.
        """
        key = (patient_id, datetime.now(UTC).date())
        epoch = self.store.record_epoch(patient_id)
        return self._records.get_or_compute(key, epoch, lambda: self._load_record(patient_id))

    def _load_record(self, patient_id: str) -> PatientRecord | None:
        stored = self.store.read("Patient", patient_id)
        if stored is None or stored.deleted:
            return None
        reference = ReferenceTest("patient", "Patient", patient_id)
        consents = [_json(body) for body in self._internal_search_all("Consent", reference)]
        related = [_json(body) for body in self._internal_search_all("RelatedPerson", reference)]
        return build_record(stored.json(), consents, related, datetime.now(UTC).date())

    def _acting_for(self, requester: Requester) -> str | None:
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

    def _designated_patient(self, resource_type: str, where: Node) -> tuple[bool, str | None]:
        """(a patient was designated, its id if exactly one is known) for R04, once per request."""
        memo = request_memo()
        if memo is None:
            return self._find_designated_patient(resource_type, where)
        key = ("designated", resource_type, where)
        if key not in memo:
            memo[key] = self._find_designated_patient(resource_type, where)
        return memo[key]

    def _remember_designated(
        self, resource_type: str, where: Node, found: tuple[bool, str | None]
    ) -> None:
        """The constrained query designates the same patient as the one it was made from."""
        memo = request_memo()
        if memo is not None:
            memo[("designated", resource_type, where)] = found

    def _find_designated_patient(self, resource_type: str, where: Node) -> tuple[bool, str | None]:
        for part in _designated(where):
            if (
                isinstance(part, ReferenceTest)
                and part.param in PATIENT_PARAMS
                and part.target_id
                and part.target_type in (None, "Patient")
            ):
                return True, part.target_id
            if (
                isinstance(part, Chain)
                and part.param in PATIENT_PARAMS
                and part.target_type == "Patient"
            ):
                ids = self.patients_matching(part.where)
                return True, ids[0] if len(ids) == 1 else None
            if resource_type == "Patient":
                if isinstance(part, IdTest) and len(part.ids) == 1:
                    return True, part.ids[0]
                if isinstance(part, TokenTest) and part.param == "identifier" and part.code:
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
            lambda: [row[1] for row in self._internal_search("Patient", where, 2)],
        )

    # -- the credentials' patient (XUA resource-id, SMART patient context) -----------------

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

    def _outside_binding(self, requester: Requester, patients: Iterable[str]) -> bool:
        """Whether a resource of `patients` is outside the record `requester` is bound to."""
        bound, bound_id = self.bound_patient(requester)
        return bound and patient_binding.outside(bound_id, patients)

    def _binding_node(self, requester: Requester, resource_type: str, constraints: Node) -> Node:
        """What a search (or an include) of `resource_type` is confined to by the binding:
        the bound patient's compartment, for any type but the directory's; nothing more when
        the policy's `constraints` hold that clause already."""
        bound, bound_id = self.bound_patient(requester)
        if not bound or resource_type in DIRECTORY_TYPES:
            return Everything()
        node = InCompartment(bound_id) if bound_id else NOTHING
        return Everything() if node in _designated(constraints) else node

    def _check_search_binding(
        self, requester: Requester, interaction: str, given: bool, patient_id: str | None
    ) -> None:
        """Refuse (403, audited) a search designating another patient than the bound one.

        Checked before that patient's record is looked at, so the answer is the same whether
        it exists, is open or opposed: a designation resolving to no Patient is refused too
        (no probing which INS are known), unless the credentials' own patient is just as
        unknown (then the policy answers "unknown patient", as without a binding)."""
        bound, bound_id = self.bound_patient(requester)
        if not given or not bound or patient_id == bound_id:
            return
        deny = patient_binding.refused_search_or_write()
        self.audit.refusal(requester, interaction, [patient_id] if patient_id else [], deny.rule)
        raise deny.to_error()

    def _check_write_binding(
        self, requester: Requester, interaction: str, resource_type: str, new, old
    ) -> None:
        """Refuse (audited) a write outside the bound record: an existing resource of another
        record as its read would be (not found), new content naming another patient 403."""
        deny = None
        patients: frozenset[str] = frozenset()
        if old is not None and self._outside_binding(requester, compartment_of(old)):
            patients = compartment_of(old)
            deny = patient_binding.hidden_resource(resource_type, str(old.get("id", "")))
        elif new is not None and self._outside_binding(requester, compartment_of(new)):
            patients = compartment_of(new)
            deny = patient_binding.refused_search_or_write()
        if deny is not None:
            self.audit.refusal(
                requester,
                interaction,
                sorted(patients),
                deny.rule,
                resource_type=resource_type,
                labels=security_labels_of(old) if old else (),
            )
            raise deny.to_error()

    # -- scopes (R02) ----------------------------------------------------------------------

    def _check_scopes(self, requester: Requester, resource_type: str, interaction: str) -> Node:
        """The scope constraint for this interaction, or a 403 when no scope grants it."""
        if requester.kind is ActorKind.INTERNAL:
            return Everything()
        scopes = _scope_set(requester.scopes)
        if not scopes.allows(resource_type, interaction):
            self.audit.refusal(requester, interaction, [], "R02", resource_type=resource_type)
            raise error(
                403,
                "forbidden",
                f"the token's scopes do not allow {interaction} on {resource_type}",
                details_code="R02",
            )
        contexts = scopes.contexts(resource_type, interaction)
        if contexts == frozenset({"patient"}):
            acting = self._acting_for(requester) or requester.patient_id
            return InCompartment(acting) if acting else NOTHING
        return Everything()

    # -- reads -----------------------------------------------------------------------------

    def _record_of(self, resource: dict, patients: list[str] | None = None) -> PatientRecord | None:
        """The record of the first patient in whose compartment `resource` is (`patients`:
        those, sorted, when the caller has them already)."""
        if patients is None:
            patients = _patients_of(resource)
        return self.record(patients[0]) if patients else None

    def authorize_read(
        self,
        requester: Requester,
        stored: StoredResource,
        purpose: ReadPurpose,
        current: StoredResource | None = None,
    ) -> StoredResource | None:
        """Judge one read; refuse it (raise) or audit it and notify the patient (R17).

        `current`: for a vread, the resource's current version, which must be readable too:
        masking a document hides all of its history (issue #18, finding 6).
        Returns the version to serve when the read itself changed the resource (a message's
        first read by a recipient sets ``received``), else None: serve `stored`.
        """
        if requester.kind is ActorKind.INTERNAL:
            return None
        resource_type = stored.resource_type
        scope_node = self._check_scopes(requester, resource_type, "read")
        resource = self._content(stored)
        decision, patients, record, labels = self._judge_read(
            requester, resource_type, stored.id, resource
        )
        if (
            current is not None
            and current.version != stored.version
            and isinstance(decision, Permit)
        ):
            now, now_patients, _ = self._decide_read(
                requester, resource_type, stored.id, self._content(current)
            )
            if isinstance(now, Deny):
                decision, patients = now, sorted(set(patients) | set(now_patients))
        if isinstance(scope_node, InCompartment) and scope_node.patient_id not in patients:
            decision = Deny("R02", 404, "not-found", not_found_message(resource_type, stored.id))
        if self._outside_binding(requester, patients):
            decision = patient_binding.hidden_resource(resource_type, stored.id)
        if isinstance(decision, Deny):
            self.audit.refusal(
                requester,
                purpose.value,
                patients,
                decision.rule,
                resource_type=resource_type,
                labels=labels,
            )
            raise decision.to_error()
        if stored.deleted:
            return None
        entity = DataEntity.from_resource(resource)
        if resource_type == "Binary":
            # The Binary's events carry its document's labels: whom the document is hidden
            # from is not shown the events naming its content either (R07, R14, R16).
            entity = replace(entity, security_labels=labels)
        self.audit.access(requester, purpose.value, patients, [entity], notes=decision.notes)
        if resource_type == "Communication" and purpose is ReadPurpose.READ:
            return messaging.received_on_read(
                self.store, self.registry, self.audit.clock, requester, stored, record
            )
        return None

    def refuse_unknown_id(
        self, requester: Requester, resource_type: str, purpose: ReadPurpose
    ) -> None:
        """Before a read of an id that names nothing answers 404: the refusal a read of an
        existing resource of this type gets whatever it is (scopes, R05, R15, the types a
        practitioner reads), audited alike, so that the answer does not tell which ids
        exist (R18; a professional was told 403 for an existing AuditEvent, 404 for an id
        naming nothing)."""
        if requester.kind is ActorKind.INTERNAL:
            return
        self._check_scopes(requester, resource_type, "read")
        deny = self.policy.type_refusal(requester, resource_type)
        if deny is not None:
            self.audit.refusal(requester, purpose.value, [], deny.rule, resource_type=resource_type)
            raise deny.to_error()

    def _content(self, stored: StoredResource) -> dict:
        """The resource a version shows; for a deletion, the last version that had content
        (the tombstone has none to judge)."""
        if stored.deleted:
            for version in range(stored.version - 1, 0, -1):
                previous = self.store.vread(stored.resource_type, stored.id, version)
                if previous is not None and not previous.deleted:
                    return previous.json()
        return stored.json()

    def hidden_deny(self, requester: Requester, current: StoredResource) -> Deny | None:
        """The refusal a read of `current` (a current version) by `requester` would get,
        when it is the one a resource that does not exist gets (a `hidden` 404): a write
        on it must then answer as on a missing id (R18, issue #18, finding 13). A refusal
        that tells nothing about the resource (R15: systems never read documents, yet
        deprecate them) is not hiding, and the write is judged as usual."""
        if requester.kind is ActorKind.INTERNAL or current.deleted:
            return None
        decision, _, _ = self._decide_read(
            requester, current.resource_type, current.id, current.json()
        )
        if isinstance(decision, Deny) and decision.status == 404:
            return decision
        return None

    def refuse_hidden(
        self, requester: Requester, interaction: str, current: StoredResource, deny: Deny
    ) -> FhirError:
        """Audit a write refused on a hidden resource (R16), as its read would be; the error
        to answer with when the answer is an error (`hidden_deny`)."""
        self.audit.refusal(
            requester, interaction, sorted(compartment_of(current.json())), deny.rule
        )
        return deny.to_error()

    def _decide_read(
        self, requester: Requester, resource_type: str, resource_id: str, resource: dict
    ) -> tuple[Deny | Permit, list[str], PatientRecord | None]:
        """The DMP rules on one version: (decision, patients concerned, their record)."""
        decision, patients, record, _ = self._judge_read(
            requester, resource_type, resource_id, resource
        )
        return decision, patients, record

    def _judge_read(
        self, requester: Requester, resource_type: str, resource_id: str, resource: dict
    ) -> tuple[Deny | Permit, list[str], PatientRecord | None, tuple]:
        """`_decide_read`, and the security labels of what the read is about (a Binary: its
        document's), for its AuditEvent. A Binary is judged as the document owning it
        (`access.ownership`), never through whatever else points at it."""
        if resource_type == "Binary":
            documents = self._binary_documents(resource_id, resource)
            patient_id = one_patient(documents)
            record = self.record(patient_id) if patient_id else None
            decision = self.policy.decide_binary_read(requester, resource, documents, record)
            own = security_labels_of(resource)
            labels = tuple(
                _unique_labels(
                    [*own, *(label for d in documents for label in security_labels_of(d))]
                )
            )
            return decision, [record.patient_id] if record else [], record, labels
        patients = _patients_of(resource)
        # A resource naming several patients (stored before writes were held to one record)
        # is read only by whom every one of those records lets read it: fail closed.
        record = None
        judged: list[str | None] = [*patients] or [None]  # never empty: `decision` is set
        for patient_id in judged:
            record = self.record(patient_id) if patient_id else None
            decision = self.policy.decide_read(requester, resource_type, resource, record)
            if isinstance(decision, Deny):
                break
        return decision, patients, record, security_labels_of(resource)

    def _binary_documents(self, binary_id: str, binary: dict) -> list[dict]:
        """The documents a Binary version is judged by: its owner's current version (none if
        that document is gone), or, for a Binary without owner, every current
        DocumentReference naming it (none if there are too many to be sure of all)."""
        if has_owner(binary):
            owner = owner_id(binary)
            stored = self.store.read("DocumentReference", owner) if owner else None
            return [] if stored is None or stored.deleted else [stored.json()]
        found = self._internal_search(
            "DocumentReference", UriTest("location", f"Binary/{binary_id}"), LEGACY_POINTERS + 1
        )
        if len(found) > LEGACY_POINTERS:
            return []
        return [_json(body) for _, _, body in found]

    def as_served(self, requester: Requester, stored: StoredResource) -> StoredResource:
        """`stored` as `requester` may be served it (see `served_body`)."""
        if stored.deleted:
            return stored
        body = self.served_body(requester, stored.resource_type, stored.body)
        return stored if body is stored.body else replace(stored, body=body)

    def served_body(self, requester: Requester, resource_type: str, body: bytes) -> bytes:
        """The bytes of a resource `requester` may read, as they may be served: without the
        List entries and DocumentReference.relatesTo naming resources they may not read (R14,
        R18, `access.hidden_references`); anything else, and what names nothing hidden, as
        stored."""
        if requester.kind is ActorKind.INTERNAL or not hidden_references.may_name_others(
            resource_type, body
        ):
            return body
        shown = hidden_references.without_hidden(orjson.loads(body), self._target_reader(requester))
        return body if shown is None else orjson.dumps(shown)

    def as_written(self, requester: Requester, new: dict, current: dict) -> dict:
        """An update by `requester` keeps what `current` names that is hidden from them."""
        if requester.kind is ActorKind.INTERNAL:
            return new
        return hidden_references.with_hidden_kept(new, current, self._target_reader(requester))

    def _target_reader(self, requester: Requester) -> hidden_references.MayRead:
        """Whether `requester` may read the resource an element names, as a read of it would
        judge (absent or deleted: nothing to hide); each target judged once per call."""
        judged: dict[tuple[str, str], bool] = {}

        def may_read(resource_type: str, resource_id: str) -> bool:
            key = (resource_type, resource_id)
            if key not in judged:
                judged[key] = self._may_read_target(requester, resource_type, resource_id)
            return judged[key]

        return may_read

    def may_read(self, requester: Requester, resource_type: str, resource_id: str) -> bool:
        """Whether `requester` may read the current version of a stored resource, as a read
        of it would judge, without auditing it (a resource absent or deleted: True, nothing
        to hide). For the registry's own lookups (ITI-41, ITI-65), so that what a deposit
        names is answered, when hidden from its depositor, exactly as when it is unknown."""
        return self._may_read_target(requester, resource_type, resource_id)

    def _may_read_target(self, requester: Requester, resource_type: str, resource_id: str) -> bool:
        if resource_type not in SERVED_TYPES:
            return True
        target = self.store.read(resource_type, resource_id)
        if target is None or target.deleted:
            return True
        decision, patients, _ = self._decide_read(
            requester, resource_type, resource_id, target.json()
        )
        return isinstance(decision, Permit) and not self._outside_binding(requester, patients)

    def authorize_history(self, requester: Requester, resource_type: str | None) -> None:
        if requester.kind is not ActorKind.INTERNAL:
            self.audit.refusal(
                requester,
                "history-type" if resource_type else "history-system",
                [],
                "types",
                resource_type=resource_type,
            )
            raise error(
                403,
                "forbidden",
                "type and system history are not available to clients; use a search or an instance history",
                details_code="types",
            )

    def filter_history(self, requester: Requester, page: HistoryPage) -> HistoryPage:
        """The versions of `page` that `requester` may read: each version, and the current
        version of its resource, must be readable (masking hides all of history: issue #18,
        finding 6; an instance history has had its current version judged already)."""
        if requester.kind is ActorKind.INTERNAL:
            return page
        kept = []
        current_readable: dict[tuple[str, str], bool] = {}
        for entry in page.entries:
            stored = entry.resource
            key = (stored.resource_type, stored.id)
            if key not in current_readable:
                current = self.store.read(*key)
                current_readable[key] = current is not None and (
                    stored.resource_type == "Binary"
                    or isinstance(
                        self._decide_read(requester, key[0], key[1], self._content(current))[0],
                        Permit,
                    )
                )
            if not current_readable[key]:
                continue
            if stored.deleted:
                kept.append(entry)
                continue
            resource = stored.json()
            decision = (
                self.policy.decide_read(
                    requester, stored.resource_type, resource, self._record_of(resource)
                )
                if stored.resource_type != "Binary"
                # Each version by its own owner (an older one may have had none yet).
                else self._decide_read(requester, "Binary", stored.id, resource)[0]
            )
            if isinstance(decision, Permit):
                kept.append(replace(entry, resource=self.as_served(requester, stored)))
        return replace(page, entries=kept)

    def constrain_search(
        self, requester: Requester, query: SearchQuery, conditional: bool = False
    ) -> tuple[SearchQuery, Permit]:
        """The search as `requester` may run it, and the Permit that let it through: its
        notes are for `after_search` (the caller hands them on with the result)."""
        if requester.kind is ActorKind.INTERNAL:
            return query, INTERNAL_PERMIT
        resource_type = query.resource_type
        if resource_type is None:
            self.audit.refusal(requester, "search-system", [], "R04")
            raise error(
                400,
                "invalid",
                "a search must name a resource type and one patient (R04)",
                details_code="R04",
            )
        scope_node = self._check_scopes(requester, resource_type, "search")
        given, patient_id = self._designated_patient(resource_type, query.where)
        self._check_search_binding(requester, "search-type", given, patient_id)
        acting = self._acting_for(requester)
        record_id = patient_id if given else acting
        record = self.record(record_id) if record_id else None
        decision = self._decide_search(requester, resource_type, record, given)
        patients = [record.patient_id] if record else []
        if isinstance(decision, Deny):
            self.audit.refusal(
                requester, "search-type", patients, decision.rule, resource_type=resource_type
            )
            raise decision.to_error()
        granular = self._granular_scopes(requester, resource_type)
        where = query.where
        if given and patient_id:
            where = self._resolved_patient_chain(requester, query, patient_id, record)
        where = self._constrain_joins(requester, query, where)
        constrained_where = without_implied_compartment(
            all_of(
                where,
                decision.constraints,
                scope_node,
                granular,
                self._binding_node(requester, resource_type, decision.constraints),
            ),
            resource_type,
            self.registry,
        )
        constrained = replace(
            query,
            where=constrained_where,
            rare_filters=_top_level(decision.rare_filters, constrained_where),
        )
        self._remember_designated(resource_type, constrained.where, (given, patient_id))
        return constrained, decision

    def existence_check(
        self, requester: Requester, check: existence_check.ExistenceCheck
    ) -> tuple[list[tuple[str, str, bytes]], bool]:
        """TD0.2 (`service.existence_check`): (the reduced Patient or nothing, answered). Not
        answered (False): the search is judged as any other. Scopes and the patient binding
        are checked first, refusing as a search would."""
        self._check_scopes(requester, "Patient", "search")
        given, patient_id = self._designated_patient("Patient", check.where)
        self._check_search_binding(requester, "search-type", given, patient_id)
        if patient_id is None:
            # No record for this INS: 0 entries, as TD0.2 says, audited as an empty search
            # (two would be a store fault: judged as usual).
            if self.patients_matching(check.where):
                return [], False
            self.audit.access(requester, "search-type", [], [])
            return [], True
        record = self.record(patient_id)
        if record is None:
            return [], False
        decision = self._decide_search(requester, "Patient", record, True)
        if not existence_check.answers_instead(decision):
            return [], False
        closed = None
        if not record.is_open:
            stored = self.store.read("Patient", patient_id)
            closed = existence_check.Closed(
                lifecycle.closed_since(self.store, patient_id),
                record_closure.closure_of(stored.json()) if stored is not None else None,
            )
        patient = existence_check.reduced_patient(
            check, record, closed, record.is_general_practitioner(requester.subject_id)
        )
        entity = replace(
            DataEntity.from_resource(patient),
            details=(("existence-check", "TD0.2"),),
        )
        self.audit.access(requester, "search-type", [patient_id], [entity])
        return [("Patient", patient_id, orjson.dumps(patient))], True

    def _decide_search(
        self,
        requester: Requester,
        resource_type: str,
        record: PatientRecord | None,
        given: bool,
    ):
        """`DmpPolicy.decide_search`, remembered for the record object it was decided on."""
        key = (requester, resource_type, id(record), given)
        with self._decisions_lock:
            known = self._decisions.get(key)
            if known is not None and known[0] is record:
                self._decisions.move_to_end(key)
                return known[1]
        decision = self.policy.decide_search(requester, resource_type, record, patient_given=given)
        with self._decisions_lock:
            self._decisions[key] = (record, decision)
            while len(self._decisions) > SEARCH_DECISIONS:
                self._decisions.popitem(last=False)
        return decision

    def _resolved_patient_chain(
        self,
        requester: Requester,
        query: SearchQuery,
        patient_id: str,
        record: PatientRecord | None,
    ) -> Node:
        """The query with its designating chain (`patient.identifier=INS`) replaced by the
        reference to the one Patient it resolved to, when the requester may see that Patient:
        the same matches, without a join per candidate.

        `record`: that patient's record facts, which hold the Patient they were read from
        (they are replaced whenever the Patient is written)."""
        parts = _designated(query.where)
        for index, part in enumerate(parts):
            if isinstance(part, ReferenceTest) and part.param in PATIENT_PARAMS:
                return query.where  # designated by a plain reference already
            if (
                isinstance(part, Chain)
                and part.param in PATIENT_PARAMS
                and part.target_type == "Patient"
            ):
                if record is None or record.patient_id != patient_id or record.patient is None:
                    return query.where
                constraint = self.include_constraint(
                    requester, query, "Patient", known=(True, patient_id, record)
                )
                try:
                    visible = constraint_matches(constraint, record.patient)
                except (TypeError, ValueError):
                    return query.where
                if not visible:
                    return query.where
                reference = ReferenceTest(part.param, "Patient", patient_id)
                rewritten = [*parts[:index], reference, *parts[index + 1 :]]
                return all_of(*rewritten)
        return query.where

    def _constrain_joins(
        self,
        requester: Requester,
        query: SearchQuery,
        node: Node,
        resource_type: str | None = None,
    ) -> Node:
        """Chained and `_has` clauses only look at what the requester could search, and a
        List `item` or DocumentReference `relatesto` naming a resource hidden from them
        matches nothing, as for one that does not exist (R18). `resource_type`: the type
        `node` is evaluated on (the query's, by default)."""
        resource_type = resource_type or query.resource_type or ""
        match node:
            case Chain(param, target_type, where):
                inner = self._constrain_joins(requester, query, where, target_type)
                return Chain(
                    param,
                    target_type,
                    all_of(inner, self.include_constraint(requester, query, target_type)),
                )
            case Has(source_type, param, where):
                inner = self._constrain_joins(requester, query, where, source_type)
                return Has(
                    source_type,
                    param,
                    all_of(inner, self.include_constraint(requester, query, source_type)),
                )
            case And(parts):
                return And(
                    tuple(
                        self._constrain_joins(requester, query, part, resource_type)
                        for part in parts
                    )
                )
            case Or(parts):
                return Or(
                    tuple(
                        self._constrain_joins(requester, query, part, resource_type)
                        for part in parts
                    )
                )
            case Not(part):
                return Not(self._constrain_joins(requester, query, part, resource_type))
            case ReferenceTest(param=param, target_type=target_type, target_id=target_id) if (
                target_id is not None
                and hidden_references.searches_naming(resource_type, param)
                and not self._may_read_reference(requester, target_type, target_id)
            ):
                return NOTHING
        return node

    def _may_read_reference(
        self, requester: Requester, target_type: str | None, target_id: str
    ) -> bool:
        """`_may_read_target` for a searched reference; without a type (`item=ID`), every
        served type's resource of that id must be readable."""
        types = [target_type] if target_type else SERVED_TYPES
        return all(self._may_read_target(requester, t, target_id) for t in types)

    def _granular_scopes(self, requester: Requester, resource_type: str) -> Node:
        """SMART v2 granular scopes (`patient/DocumentReference.rs?category=...`) as clauses."""
        scopes = _scope_set(requester.scopes)
        alternatives = scopes.constraints(resource_type, "search")
        if not alternatives:
            return Everything()
        return Or(
            tuple(
                parse_search(resource_type, params, self.registry).query.where
                for params in alternatives
            )
        )

    def include_constraint(
        self,
        requester: Requester,
        query: SearchQuery,
        target_type: str,
        known: tuple[bool, str | None, PatientRecord | None] | None = None,
    ) -> Node:
        """What an `_include`/`_revinclude` of `target_type` may add: what a search of it would.

        `known`: (a patient was designated, its id, the record) when the caller found them
        for this query already."""
        if requester.kind is ActorKind.INTERNAL:
            return Everything()
        if target_type == "Binary":
            return NOTHING
        if known is not None:
            given, _, record = known
        else:
            given, patient_id = self._designated_patient(query.resource_type or "", query.where)
            record_id = patient_id if given else self._acting_for(requester)
            record = self.record(record_id) if record_id else None
        try:
            scope_node = self._check_scopes_quietly(requester, target_type)
        except ScopeError:
            return NOTHING
        decision = self._decide_search(requester, target_type, record, given)
        if isinstance(decision, Deny):
            return NOTHING
        bound = self._binding_node(requester, target_type, decision.constraints)
        return all_of(decision.constraints, scope_node, bound)

    def _check_scopes_quietly(self, requester: Requester, resource_type: str) -> Node:
        scopes = _scope_set(requester.scopes)
        if not scopes.allows(resource_type, "search"):
            raise ScopeError("not granted")
        if scopes.contexts(resource_type, "search") == frozenset({"patient"}):
            acting = self._acting_for(requester) or requester.patient_id
            return InCompartment(acting) if acting else NOTHING
        return Everything()

    def after_search(self, requester: Requester, result) -> None:
        """Audit a search; `result.permit`: the Permit `constrain_search` returned for it."""
        if requester.kind is ActorKind.INTERNAL or not self.audit.enabled:
            return
        patients: set[str] = set()
        entities = []
        matches, included = result.resources()
        for resource in [*matches, *included]:
            patients |= compartment_of(resource)
            entities.append(DataEntity.from_resource(resource))
        given, patient_id = self._designated_patient(
            result.query.resource_type or "", result.query.where
        )
        if patient_id:
            patients.add(patient_id)
        notes = result.permit.notes if result.permit is not None else ()
        if result.asked is not None:
            entities.extend(self._named_in_criteria(result.asked.where))
        self.audit.access(requester, "search-type", patients, entities, notes=notes)

    def _named_in_criteria(self, where: Node) -> list[DataEntity]:
        """The labelled resources a search's criteria name by id (`_id`, `item=`,
        `relatesto=`, `_has`...), as entities of its event: the event keeps the query as
        asked (BALP), so it carries their labels too, and the AuditEvent views hide it from
        whom those labels hide the resources (R14, R18; issue #18, deliverable 5)."""
        entities = []
        for target_type, target_id in _named_targets(where, None)[:NAMED_TARGETS]:
            for kind in [target_type] if target_type else LABELLED_TYPES:
                stored = self.store.read(kind, target_id) if kind in SERVED_TYPES else None
                if stored is None or stored.deleted:
                    continue
                resource = stored.json()
                _, _, _, labels = self._judge_read(INTERNAL, kind, target_id, resource)
                if labels:
                    entities.append(
                        DataEntity(
                            reference=f"{kind}/{target_id}",
                            security_labels=tuple(labels),
                            role=ROLE_QUERY,
                        )
                    )
        return entities

    # -- writes ----------------------------------------------------------------------------

    def authorize_write(
        self, requester: Requester, interaction: str, resource_type: str, new, old
    ) -> Permit:
        """The Permit for this write, or the refusal raised (audited). Its notes are for
        `after_write`, to which the caller hands it."""
        if requester.kind is ActorKind.INTERNAL:
            if resource_type == "AuditEvent" and interaction != "create":
                raise error(
                    405,
                    "not-supported",
                    "AuditEvents are never updated or deleted",
                    details_code="R16",
                )
            return INTERNAL_PERMIT
        self._check_scopes(requester, resource_type, interaction)
        self._check_write_binding(requester, interaction, resource_type, new, old)
        subject = new if new is not None else old
        patients = sorted(compartment_of(subject)) if subject else []
        if resource_type == "Patient" and subject is not None and subject.get("id"):
            patients = [subject["id"]]
        if len(patients) > 1 and new is not None:
            # The record a write is judged on is the one record the resource belongs to: a
            # second Patient (in `author`, `source`, `recipient`...) would let a writer pick
            # the record their write is judged on (issue #18, finding 4).
            self.audit.refusal(
                requester,
                interaction,
                patients,
                "R06",
                resource_type=resource_type,
                labels=security_labels_of(old) if old else (),
            )
            raise error(
                422,
                "processing",
                f"a {resource_type} belongs to one patient's record; this one names "
                f"{len(patients)} Patients",
                details_code="R06",
            )
        record = self.record(patients[0]) if patients else None
        decision = self.policy.decide_write(requester, interaction, resource_type, new, old, record)
        if isinstance(decision, Deny):
            self.audit.refusal(
                requester,
                interaction,
                patients,
                decision.rule,
                resource_type=resource_type,
                labels=security_labels_of(old) if old else (),
            )
            raise decision.to_error()
        if resource_type == "Communication" and new is not None and old is None:
            try:
                messaging.check_message(
                    self.store, self.policy, requester, new, record, self._internal_search
                )
            except FhirError:
                self.audit.refusal(
                    requester, interaction, patients, "messaging", resource_type=resource_type
                )
                raise
        return decision

    def after_write(
        self,
        tx,
        requester: Requester,
        interaction: str,
        stored: StoredResource,
        resource,
        permit: Permit,
        prepared: PreparedEvents | None = None,
    ) -> None:
        """Audit the write and write the notifications it calls for, in its transaction.

        `permit`: what `authorize_write` returned for this write (its notes say what to
        notify). `prepared`: the write's AuditEvents as `prepare_write_audit` built them
        beforehand.
        """
        forget_request_facts()  # a Patient, Consent or RelatedPerson may have changed
        if stored.resource_type in RECORD_FACT_TYPES:
            for patient_id in _record_patients(stored, resource):
                tx.bump_record_epoch(patient_id)
        notes = permit.notes
        if not self.audit.records(requester) or stored.resource_type == "AuditEvent":
            return
        patients, entity = _write_audit_subject(stored, resource)
        intents = self.audit.notifier.for_write(
            requester,
            notes,
            interaction,
            stored.resource_type,
            stored.id,
            None if stored.deleted else stored.json(),
            entity.security_labels,
            patients,
            self.audit.notifier.now(),
        )
        if self.audit.writes_summarized():
            if intents:
                self.audit.notifier.apply(tx, intents)
            return
        self.audit.access(
            requester,
            interaction,
            patients,
            [entity],
            tx=tx,
            notes=notes,
            intents=intents,
            prepared=prepared,
        )

    def prepare_write_audit(
        self, requester: Requester, interaction: str, stored: StoredResource, resource
    ) -> PreparedEvents | None:
        """The AuditEvents `after_write` will write for this write, built ahead of time."""
        if (
            not self.audit.records(requester)
            or stored.resource_type == "AuditEvent"
            or self.audit.writes_summarized()
        ):
            return None
        patients, entity = _write_audit_subject(stored, resource)
        return self.audit.prepare_access(requester, interaction, patients, [entity])


def _named_targets(node: Node, resource_type: str | None) -> list[tuple[str | None, str]]:
    """(type or None, id) of every resource a search's criteria name by id."""
    match node:
        case And(parts) | Or(parts):
            return [found for part in parts for found in _named_targets(part, resource_type)]
        case Not(part):
            return _named_targets(part, resource_type)
        case Chain(_, target_type, where):
            return _named_targets(where, target_type)
        case Has(source_type, _, where):
            return _named_targets(where, source_type)
        case ReferenceTest(target_type=target_type, target_id=target_id) if target_id:
            return [(target_type, target_id)]
        case IdTest(ids):
            return [(resource_type, resource_id) for resource_id in ids]
    return []


def _patients_of(resource: dict) -> list[str]:
    """The patients whose records a resource belongs to, sorted; a Patient's is its own."""
    if resource.get("resourceType") == "Patient" and resource.get("id"):
        return [resource["id"]]
    return sorted(compartment_of(resource))


def _write_audit_subject(stored: StoredResource, resource) -> tuple[list[str], DataEntity]:
    """The patients a write concerns and the entity its AuditEvent names."""
    patients = sorted(compartment_of(resource)) if resource else []
    if stored.resource_type == "Patient":
        patients = [stored.id]
    return patients, DataEntity.from_resource(stored.json())


def _record_patients(stored: StoredResource, resource) -> set[str]:
    if stored.resource_type == "Patient":
        return {stored.id}
    return set(compartment_of(resource)) if resource else set()


def _unique_labels(labels) -> list:
    """Labels (codings) each once, in order."""
    seen: set[tuple] = set()
    unique = []
    for label in labels:
        key = (label.get("system"), label.get("code"))
        if key not in seen:
            seen.add(key)
            unique.append(label)
    return unique


def _json(body: bytes) -> dict:
    return orjson.loads(body)


__all__ = ["Gate", "ReadPurpose"]


def _top_level(nodes: tuple[Node, ...], where: Node) -> tuple[Node, ...]:
    """Those of `nodes` that are top-level conjuncts of `where` (`SearchQuery.rare_filters`)."""
    if not nodes:
        return ()
    parts = where.parts if isinstance(where, And) else (where,)
    return tuple(node for node in nodes if node in parts)
