"""Read decisions: a single read, a version, a history page, and what a served resource may
name (R14, R18), judged on the facts the port gives (`port.Facts`), never on store reads.

A resource is judged as the policy judges it in a search, on the record of every patient it
belongs to; a Binary as the document owning it (`access.ownership`, invariant 8); a version
only while the current version is readable too (masking hides all of history).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import orjson

from fhir_server.access import binding as patient_binding
from fhir_server.access import hidden_references, list_labels
from fhir_server.access.decision import Deny, Permit, not_found_message
from fhir_server.access.ownership import one_patient
from fhir_server.access.policy.labels import with_dmp_labels_of
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import DataEntity, security_labels_of
from fhir_server.audit.chain import unchained
from fhir_server.errors import FhirError, error
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search.query import Everything, InCompartment
from fhir_server.service.gate.common import GateCore, ReadPurpose, patients_of

if TYPE_CHECKING:
    from fhir_server.store.base import HistoryPage, StoredResource


class ReadGate(GateCore):
    """`authorize_read`, `filter_history`, `hidden_deny` and what a served body may name."""

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
        resource = self.facts.content(stored)
        decision, patients, record, labels = self._judge_read(
            requester, resource_type, stored.id, resource
        )
        newer = current if current is not None and current.version != stored.version else None
        if newer is not None and resource_type != "Binary":
            # An older version is read only while the current one may be read: its events,
            # a refusal's too, carry the current version's labels, or a version written
            # before INVISIBLE_PATIENT was added would name the document, unlabelled, in the
            # trail of whom the label now hides it from, and a refused vread of it would show
            # there where one of an unknown id shows nowhere (R07, R14, R18). A deletion
            # stands for the last version the document was (`Facts.content`): its labels
            # were otherwise dropped from these events once it was deleted. (A Binary's
            # labels are its owning document's already.)
            now_labels = security_labels_of(self.facts.content(newer))
            labels = tuple(_unique_labels([*labels, *now_labels]))
        if newer is not None and isinstance(decision, Permit):
            now, now_patients, _ = self._decide_read(
                requester, resource_type, stored.id, self.facts.content(newer)
            )
            if isinstance(now, Deny):
                decision, patients = now, sorted(set(patients) | set(now_patients))
        if not isinstance(scope_node, Everything) and not (
            isinstance(scope_node, InCompartment) and scope_node.patient_id in patients
        ):
            # Only `patient/` scopes grant the read: it must be in the compartment of the
            # patient in context; with no patient in context (NOTHING) nothing is, where
            # the read was served as if the scopes said nothing.
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
        # A deletion is audited too: its history (every version before it, the author's
        # only) and its 410 answer are reads of the record. Unaudited, a deleted document's
        # whole history was served with no event (R16).
        entity = DataEntity.from_resource(resource)
        if resource_type == "Binary" or newer is not None:
            # The Binary's events carry its document's labels: whom the document is hidden
            # from is not shown the events naming its content either (R07, R14, R16). An
            # older version's, the current version's too (above).
            entity = replace(entity, security_labels=labels)
        self.audit.access(requester, purpose.value, patients, [entity], notes=decision.notes)
        if stored.deleted:
            return None
        if resource_type == "Communication" and purpose is ReadPurpose.READ:
            return self.facts.received_on_read(
                self.registry, self.audit.clock, requester, stored, record
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
        to answer with when the answer is an error (`hidden_deny`). The event carries the
        resource's labels (a Binary: its document's), so that it is hidden from whom the
        resource is hidden (R07, R14): in their trail it would tell that the id is in their
        record, which the answer, the one of a missing id, does not (R18)."""
        patients, labels = self._concerned(requester, current)
        self.audit.refusal(
            requester,
            interaction,
            patients,
            deny.rule,
            resource_type=current.resource_type,
            labels=labels,
        )
        return deny.to_error()

    def refuse_change(
        self,
        requester: Requester,
        interaction: str,
        resource_type: str,
        current: StoredResource | None,
    ) -> None:
        """Before a change (update, patch, delete) of an id is judged on what the id names:
        the refusal of the token's scopes (R02, audited in no record's trail, as for every
        interaction) or the one the policy gives every change of `resource_type` by
        `requester` (`DmpPolicy.change_refusal`), raised and audited.

        The answer is the same whether `current` (the id's current version, None for an id
        that names nothing) exists, is hidden from the requester or not (R18). The refusal
        is traced in the trail of the record the resource is in, with its labels (R16), or
        in no record's for an id that names nothing or a deletion."""
        if requester.kind is ActorKind.INTERNAL:
            return
        self._check_scopes(requester, resource_type, interaction)
        deny = self.policy.change_refusal(requester, interaction, resource_type)
        if deny is None:
            return
        live = current if current is not None and not current.deleted else None
        patients, labels = self._concerned(requester, live) if live is not None else ([], ())
        self.audit.refusal(
            requester, interaction, patients, deny.rule, resource_type=resource_type, labels=labels
        )
        raise deny.to_error()

    def _concerned(self, requester: Requester, current: StoredResource) -> tuple[list[str], tuple]:
        """(the patients whose record `current` is in, its labels; a Binary's: its owning
        document's), for the event of a refusal concerning it."""
        _, patients, _, labels = self._judge_read(
            requester, current.resource_type, current.id, self.facts.content(current)
        )
        return patients, labels

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
            documents = self.facts.binary_documents(resource_id, resource)
            patient_id = one_patient(documents)
            record = self.facts.record(patient_id) if patient_id else None
            decision = self.policy.decide_binary_read(requester, resource, documents, record)
            own = security_labels_of(resource)
            labels = tuple(
                _unique_labels(
                    [*own, *(label for d in documents for label in security_labels_of(d))]
                )
            )
            return decision, [record.patient_id] if record else [], record, labels
        patients = patients_of(resource)
        # A resource naming several patients (stored before writes were held to one record)
        # is read only by whom every one of those records lets read it: fail closed.
        record = None
        judged: list[str | None] = [*patients] or [None]  # never empty: `decision` is set
        for patient_id in judged:
            record = self.facts.record(patient_id) if patient_id else None
            decision = self.policy.decide_read(
                requester, resource_type, resource, record, self.follow
            )
            if isinstance(decision, Deny):
                break
        return decision, patients, record, security_labels_of(resource)

    # -- what a served resource names ------------------------------------------------------

    def as_served(self, requester: Requester, stored: StoredResource) -> StoredResource:
        """`stored` as `requester` may be served it (see `served_body`)."""
        if stored.deleted:
            return stored
        body = self.served_body(requester, stored.resource_type, stored.body)
        return stored if body is stored.body else replace(stored, body=body)

    def served_body(self, requester: Requester, resource_type: str, body: bytes) -> bytes:
        """The bytes of a resource `requester` may read, as they may be served: without the
        List entries and DocumentReference.relatesTo naming resources they may not read (R14,
        R18, `access.hidden_references`); an AuditEvent without the log's hash chain
        (`audit.chain.unchained`: its sequence would count the events hidden from them);
        anything else, and what names nothing hidden, as stored."""
        if requester.kind is ActorKind.INTERNAL:
            return body
        if resource_type == "AuditEvent":
            return unchained(body)
        if not hidden_references.may_name_others(resource_type, body):
            return body
        shown = hidden_references.without_hidden(orjson.loads(body), self._target_reader(requester))
        if shown is None:
            return body
        # The labels a List takes are those all its entries share (`access.list_labels`), the
        # hidden ones included: served as stored, a List of a masked document and one
        # invisible to the patient carried no MASQUE_PS where a List of the masked one alone
        # did, and told the patient that another, hidden, entry was there (R14, R18).
        # Served, it takes those its served entries share too, as a List of them alone would.
        if resource_type == "List" and list_labels.add_shared_labels(shown, self._document_of):
            shown["meta"] = _security_first(shown["meta"])
        return orjson.dumps(shown)

    def _document_of(self, resource_type: str, resource_id: str) -> dict | None:
        """The current version of a stored resource a List entry names (None: absent or
        deleted), for the labels its entries share."""
        current = self.facts.current(resource_type, resource_id)
        return None if current is None or current.deleted else current.json()

    def as_written(self, requester: Requester, new: dict, current: dict) -> dict:
        """An update by `requester` keeps what `current` names that is hidden from them."""
        if requester.kind is ActorKind.INTERNAL:
            return new
        if requester.kind is ActorKind.SYSTEM and new.get("resourceType") == "DocumentReference":
            # A system's deprecation (R15) keeps the document's DMP labels, which it was never
            # shown: sent without them, it lifted the patient's mask (R14).
            new = with_dmp_labels_of(new, current)
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
        target = self.facts.current(resource_type, resource_id)
        if target is None or target.deleted:
            return True
        decision, patients, _ = self._decide_read(
            requester, resource_type, resource_id, target.json()
        )
        return isinstance(decision, Permit) and not self._outside_binding(requester, patients)

    # -- history ---------------------------------------------------------------------------

    def authorize_history(self, requester: Requester, resource_type: str | None) -> None:
        """Type and system history are the server's own: they cross every record."""
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
                current = self.facts.current(*key)
                current_readable[key] = current is not None and (
                    stored.resource_type == "Binary"
                    or isinstance(
                        self._decide_read(requester, *key, self.facts.content(current))[0],
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
                    requester,
                    stored.resource_type,
                    resource,
                    self._record_of(resource),
                    self.follow,
                )
                if stored.resource_type != "Binary"
                # Each version by its own owner (an older one may have had none yet).
                else self._decide_read(requester, "Binary", stored.id, resource)[0]
            )
            if isinstance(decision, Permit):
                kept.append(replace(entry, resource=self.as_served(requester, stored)))
        return replace(page, entries=kept)


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


def _security_first(meta: dict) -> dict:
    """`meta` with `security` before `versionId` and `lastUpdated`, where the write of a List
    labelled at its deposit puts it (`versions.stamp` appends them after the labels)."""
    stamped = ("versionId", "lastUpdated")
    ordered = {k: v for k, v in meta.items() if k not in stamped}
    ordered.update((k, meta[k]) for k in stamped if k in meta)
    return ordered
