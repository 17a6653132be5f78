"""Reads and searches: a search's constraints, the judgement of one resource by those very
constraints, and a Binary read as the document that owns it."""

from __future__ import annotations

from collections.abc import Iterable

from fhir_server.access import deletion
from fhir_server.access.constraints import Follow, matches
from fhir_server.access.decision import Decision, Deny, Permit, forbidden, hidden
from fhir_server.access.ownership import has_owner, owner_id, subject_patient
from fhir_server.access.policy.gates import PolicyBase
from fhir_server.access.policy.labels import (
    authored_by,
    labelled,
    names_excluded_type,
    readable_node,
)
from fhir_server.access.policy.references import party_of_message, points_to
from fhir_server.access.policy.refusals import (
    hide,
    not_their_record,
    practitioner_type_refused,
    refuse_payer,
    unknown_patient,
)
from fhir_server.access.policy.tables import (
    DIRECTORY_TYPES,
    MSG_R04,
    MSG_R04_PATIENT,
    PRACTITIONER_READ_TYPES,
    RECORD_ADMIN_TYPES,
    TYPES_RULE,
    Constraint,
    Grant,
)
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.search.query import (
    Chain,
    Everything,
    IdTest,
    InCompartment,
    Node,
    Not,
    Or,
    ReferenceTest,
    all_of,
)
from fhir_server.terminology import INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX, MASQUE_PS


class ReadDecisions(PolicyBase):
    """decide_search, decide_read, decide_binary_read."""

    def decide_search(
        self,
        requester: Requester,
        resource_type: str,
        record: PatientRecord | None,
        *,
        patient_given: bool,
    ) -> Decision:
        """A search (or type-level history) of `resource_type`.

        `record`: the record of the patient the search designates (`patient=`,
        `patient.identifier=`, `subject=`, Patient `_id`/`identifier`), or for a patient or
        representative who designates none, the record they act for. `patient_given`: the
        search itself designated that patient (R04). A Permit's constraints must be and-ed
        to the query.
        """
        if requester.kind is ActorKind.INTERNAL:
            return Permit(Everything(), "internal")
        refused = refuse_payer(requester, resource_type)
        if refused:
            return refused
        if resource_type in DIRECTORY_TYPES:
            return Permit(Everything(), TYPES_RULE)
        if resource_type == "Binary":
            return forbidden(
                TYPES_RULE, "Binary is read through its DocumentReference, not searched"
            )
        match requester.kind:
            case ActorKind.SYSTEM:
                return system_read(requester, resource_type)
            case ActorKind.PATIENT | ActorKind.REPRESENTATIVE:
                if record is None and patient_given:
                    # R18: naming an unknown patient answers like naming another patient's
                    # record, so a patient cannot probe which INS are registered.
                    return not_their_record(requester)
                grant = self._person_gate(requester, record)
            case ActorKind.PRACTITIONER:
                if resource_type not in PRACTITIONER_READ_TYPES:
                    return practitioner_type_refused(resource_type)
                if record is None:
                    if not patient_given:
                        message = MSG_R04_PATIENT if resource_type == "Patient" else MSG_R04
                        return Deny("R04", 400, "invalid", message, "R04")
                    return unknown_patient(404, "not-found")
                grant = self._practitioner_gate(requester, record)
                if (
                    resource_type == "DocumentReference"
                    and not isinstance(grant, Deny)
                    and self._readable(requester).nothing
                ):
                    return forbidden("R13", "This profession may not read documents of the record")
            case _:
                return forbidden(TYPES_RULE, "This requester cannot read the record")
        if isinstance(grant, Deny):
            return grant
        assert record is not None
        parts = self._constraints(requester, resource_type, record, grant)
        return Permit(
            all_of(*(part.node for part in parts)),
            grant.rule,
            grant.notes,
            rare_filters=tuple(part.node for part in parts if part.rare),
        )

    def decide_read(
        self,
        requester: Requester,
        resource_type: str,
        resource: dict,
        record: PatientRecord | None,
        follow: Follow | None = None,
    ) -> Decision:
        """A read, vread or instance history of one resource (call once per version shown).

        `record`: the record of the patient in whose compartment the resource is (for a
        DocumentReference, its subject), or None for a resource in no patient's compartment.
        The resource is judged by the very constraints a search would use. `follow`: how to
        read the current version of what the resource names, for the constraints that look
        at it (a List through its DocumentReference entries, `_list_entries_readable`); a
        List judged without it for a reader such a constraint applies to raises.
        """
        if resource_type == "Binary":
            raise TypeError("a Binary is judged through its DocumentReference: decide_binary_read")
        if requester.kind is ActorKind.INTERNAL:
            return Permit(Everything(), "internal")
        refused = refuse_payer(requester, resource_type)
        if refused:
            return refused
        if resource_type in DIRECTORY_TYPES:
            return Permit(Everything(), TYPES_RULE)
        resource_id = str(resource.get("id", ""))
        if requester.kind is ActorKind.SYSTEM:
            return system_read(requester, resource_type)
        if (
            requester.kind is ActorKind.PRACTITIONER
            and resource_type not in PRACTITIONER_READ_TYPES
        ):
            return practitioner_type_refused(resource_type)
        if record is None:
            return hidden("R04", resource_type, resource_id)
        person = requester.kind in (ActorKind.PATIENT, ActorKind.REPRESENTATIVE)
        if person:
            grant = self._person_gate(requester, record, own_patient=resource_type == "Patient")
        elif requester.kind is ActorKind.PRACTITIONER:
            grant = self._practitioner_gate(requester, record)
        else:
            return forbidden(TYPES_RULE, "This requester cannot read the record")
        if isinstance(grant, Deny):
            if (not person and resource_type == "Patient") or (person and grant.rule == "R03"):
                # The requester designated this patient (or it is their own record): the
                # reason is theirs to know.
                return grant
            return hide(grant, resource_type, resource_id)
        for part in self._constraints(requester, resource_type, record, grant):
            if not matches(part.node, resource, follow):
                return hidden(part.rule, resource_type, resource_id)
        return Permit(Everything(), grant.rule, grant.notes)

    def type_refusal(self, requester: Requester, resource_type: str) -> Deny | None:
        """The refusal `decide_read` (or `decide_binary_read`) gives `requester` for any
        resource of `resource_type`, before looking at it (R05, R15, the types practitioners
        read), or None. A read of an id that names nothing answers with it too, so that the
        answer does not tell whether the id exists (R18)."""
        if requester.kind is ActorKind.INTERNAL:
            return None
        refused = refuse_payer(requester, resource_type)
        if refused:
            return refused
        if resource_type in DIRECTORY_TYPES:
            return None
        if requester.kind is ActorKind.SYSTEM:
            decision = system_read(requester, resource_type)
            return decision if isinstance(decision, Deny) else None
        if (
            requester.kind is ActorKind.PRACTITIONER
            and resource_type != "Binary"  # judged as the document owning it
            and resource_type not in PRACTITIONER_READ_TYPES
        ):
            return practitioner_type_refused(resource_type)
        return None

    def decide_binary_read(
        self,
        requester: Requester,
        binary: dict,
        documents: Iterable[dict],
        record: PatientRecord | None,
    ) -> Decision:
        """A Binary is read as the document that owns it (architecture invariant 8).

        `documents`: for a Binary with an owner (`Binary.securityContext`), the current
        version of that DocumentReference (none when it is gone); for a Binary without one
        (data written before owners were recorded), every current DocumentReference whose
        content names it. `record`: their subject's record. Every one of them must be
        readable and all must be of that one record, so that a pointer someone else wrote
        can never grant access, only take it away.
        """
        binary_id = str(binary.get("id", ""))
        if requester.kind is ActorKind.INTERNAL:
            return Permit(Everything(), "internal")
        refused = refuse_payer(requester, "Binary")
        if refused:
            return refused
        if requester.kind is ActorKind.SYSTEM:
            return system_read(requester, "Binary")
        if has_owner(binary):
            owner = owner_id(binary)
            judged = [d for d in documents if owner is not None and d.get("id") == owner]
        else:
            judged = [d for d in documents if points_to(d, binary_id)]
        if (
            not judged
            or record is None
            or any(subject_patient(d) != record.patient_id for d in judged)
        ):
            return hidden("R18", "Binary", binary_id)
        allowed: Permit | None = None
        for document in judged:
            decision = self.decide_read(requester, "DocumentReference", document, record)
            if isinstance(decision, Deny):
                if decision.status != 404:
                    return decision
                return hidden(decision.rule, "Binary", binary_id)
            allowed = allowed or decision
        assert allowed is not None
        return allowed

    def _constraints(
        self, requester: Requester, resource_type: str, record: PatientRecord, grant: Grant
    ) -> list[Constraint]:
        """The constraints of a granted access, each tagged with the rule it enforces."""
        patient_id = record.patient_id
        parts: list[Constraint] = []
        if resource_type == "Patient":
            parts.append(Constraint(grant.rule, IdTest((patient_id,))))
        else:
            parts.append(Constraint(grant.rule, InCompartment(patient_id)))
        document = resource_type == "DocumentReference"
        if document:
            parts.append(Constraint(deletion.RULE, deletion.visible_unless_deleted(requester)))
        person = requester.kind in (ActorKind.PATIENT, ActorKind.REPRESENTATIVE)
        if resource_type == "AuditEvent" and person:
            # The events about their record, not every event in its compartment: a patient
            # is an agent of their own refused attempts on another record, whose events
            # name that record (R18: a 404 worded as for a missing id must not be undone by
            # the trail). Every event about a record names its Patient as an entity.
            parts.append(Constraint("R16", ReferenceTest("entity", "Patient", patient_id)))
        match requester.kind:
            case ActorKind.PATIENT:
                parts.append(Constraint("R14", Not(labelled(INVISIBLE_PATIENT, document)), True))
                if resource_type == "Communication":
                    parts.append(Constraint("R06", party_of_message((("Patient", patient_id),))))
            case ActorKind.REPRESENTATIVE:
                parts.append(Constraint("R14", Not(labelled(INVISIBLE_PATIENT, document)), True))
                hidden_node: Node = Not(labelled(INVISIBLE_REPRESENTANTS_LEGAUX, document))
                parts.append(Constraint("R07", hidden_node, True))
                if resource_type == "Communication":
                    refs = (("Patient", patient_id), ("RelatedPerson", requester.subject_id))
                    parts.append(Constraint("R07", party_of_message(refs)))
            case ActorKind.PRACTITIONER:
                if not grant.general_practitioner:
                    hidden_node = Not(labelled(MASQUE_PS, document))
                    if document:
                        hidden_node = Or((hidden_node, authored_by(requester.subject_id)))
                    parts.append(Constraint("R14", hidden_node, True))
                if document:
                    readable = readable_node(
                        self._readable(requester), self._type_systems, self.matrix.axes.types
                    )
                    if not isinstance(readable, Everything):
                        parts.append(Constraint("R13", readable))
                if resource_type == "Communication":
                    names = names_excluded_type(self._readable(requester), self.matrix.axes.types)
                    if names is not None:
                        parts.append(Constraint("R13", Not(names)))
                    own = [("Practitioner", requester.subject_id)]
                    if requester.structure_idnat:  # their organisational mailbox's messages
                        own.append(("Organization", requester.structure_idnat))
                    parts.append(Constraint("R18", party_of_message(own)))
        if resource_type == "List":
            parts.append(self._list_entries_readable(requester, record, grant))
        return parts

    def _list_entries_readable(
        self, requester: Requester, record: PatientRecord, grant: Grant
    ) -> Constraint:
        """R13, R14, R18 on a List (an MHD SubmissionSet): a List naming documents of the
        record is read only if one of them may be read, by a practitioner by its type (R13:
        an untyped one by its class, as `readable_node`) and its MASQUE_PS label (R14), by
        the patient or a representative by its INVISIBLE_* labels (R14, R07), and by all by
        its logical deletion (`deletion`: read by its author only).

        A List is served without the entries its reader may not read, but still says when,
        by whom and as what something was deposited: a pharmacist was shown the empty
        SubmissionSet of a document of a type pharmacists do not read (`List?patient=` 0 ->
        1, `List/{id}` 200 where a missing one is 404, ITI-18 alike). DMP labels all its
        entries share hide a List already (`access.list_labels`); a type is no label, and
        entries hidden for different reasons (one masked, one of an unreadable type) share
        none. So the List is judged through its entries as they are now: nothing to store
        or keep current when a document's type or labels change, and Lists stored before
        are judged alike. A List naming no document of the record (none, or only ones
        deleted from the store) is judged as before. Never None: no practitioner reads every
        document of a record, one deleted logically by another author being hidden from
        them (the médecin traitant's Lists were served whatever their documents' state).
        """
        # A document deleted logically is read by its author only (TD3.3c): it is not one
        # the List's reader may read either, or a SubmissionSet of one excluded-type and one
        # deleted document was served, empty, where its documents are both missing.
        document_parts: list[Node] = [deletion.visible_unless_deleted(requester)]
        rule = "R14"
        if requester.kind in (ActorKind.PATIENT, ActorKind.REPRESENTATIVE):
            # The labels a List takes from its entries (`access.list_labels`) are those all
            # of them share: one INVISIBLE_PATIENT document and one deleted share none, and
            # the patient was served the empty SubmissionSet of both.
            document_parts.append(Not(labelled(INVISIBLE_PATIENT, True)))
            if requester.kind is ActorKind.REPRESENTATIVE:
                document_parts.append(Not(labelled(INVISIBLE_REPRESENTANTS_LEGAUX, True)))
        else:
            if not grant.general_practitioner:
                document_parts.append(
                    Or((Not(labelled(MASQUE_PS, True)), authored_by(requester.subject_id)))
                )
            readable = readable_node(
                self._readable(requester), self._type_systems, self.matrix.axes.types
            )
            if not isinstance(readable, Everything):
                document_parts.append(readable)
                rule = "R13"
        of_record = InCompartment(record.patient_id)
        names_documents = Chain("item", "DocumentReference", of_record)
        names_readable = Chain("item", "DocumentReference", all_of(of_record, *document_parts))
        return Constraint(rule, Or((Not(names_documents), names_readable)))


def system_read(requester: Requester, resource_type: str) -> Decision:
    """R15: systems read identities (to resolve an INS), never the record's content."""
    if resource_type == "Patient" or (
        resource_type == "RelatedPerson" and requester.organization_type in RECORD_ADMIN_TYPES
    ):
        return Permit(Everything(), "R15")
    return forbidden(
        "R15", "System clients do not read the record; a deposit's answer returns what was stored"
    )
