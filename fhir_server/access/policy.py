"""The DMP access policy: R03-R15 and R18 as decisions, one entry point per interaction.

The service gathers the facts (the Requester, the PatientRecord of the patient concerned,
the resource for single reads and writes) and asks; the policy answers with a Permit whose
constraints the service adds to the store query, or a Deny it turns into an error and an
audit event. SMART scopes (R02) are checked by the service before it asks.

What each actor may do (types not listed are refused with rule "types"):

| actor | read / search | write |
|---|---|---|
| patient (R06) | own compartment, minus INVISIBLE_PATIENT; AuditEvents; Consents | documents (own: anything; others': MASQUE_PS only), Consents, Communications they send |
| representative (R07) | as the patient of a minor, minus INVISIBLE_REPRESENTANTS_LEGAUX too | as the patient |
| practitioner | Patient, DocumentReference, Binary (as its owning DocumentReference), List, Communication (sender/recipient only); directory types | deposits; own documents; removing INVISIBLE_* labels; own authorization (R10); Communications they send |
| system (R15) | Patient identities; admin/health insurer also RelatedPerson | deposits for open records; admin/health insurer: Patient, RelatedPerson |
| payers (R05) | nothing | health insurer: deposits and identities only |

Labels (R14) are looked for in both DocumentReference.securityLabel and meta.security.
AuditEvents and Communications about a labelled document must carry that document's DMP
labels in meta.security (the audit helper's side of the contract): that is how R07 hides
"the AuditEvents of accesses to" INVISIBLE_REPRESENTANTS_LEGAUX documents, and how the
patient is not told about an INVISIBLE_PATIENT document through its audit trail or its
deposit notification.

What a refusal reveals (R18), decided per case:
- A single read of a resource other than Patient that the requester may not see, for a
  reason that depends on the patient's data or choices (another patient's record, record
  status, consent, masking, habilitation, messaging), is a 404 worded exactly like a genuine
  not-found (`decision.not_found_message`).
- A search naming a patient, and a read of a Patient, answer with the reason the rules
  require (R03 record status, R10 missing authorization, R11/R12 oppositions), since the
  requester designated that patient and must know what to do next. A blocked practitioner
  (R09) gets the same answer as an unauthorized one in normal mode and a generic refusal in
  the other modes: the block itself is not disclosed (the audit still says R09).
- Refusals that depend only on the requester (R05, actor types, R11 missing reason, R04)
  are plain 403/400 answers.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

from fhir_server.access import deletion, initial_consent
from fhir_server.access.consent import actor_identifier, consent_patient_id, interpret_consent
from fhir_server.access.constraints import compartment_of, matches, reference_target
from fhir_server.access.decision import (
    RECORD_CLOSED_CODE,
    RECORD_OPPOSED_CODE,
    UNKNOWN_PATIENT_CODE,
    Decision,
    Deny,
    Note,
    Permit,
    forbidden,
    hidden,
)
from fhir_server.access.habilitation import ALL, HabilitationMatrix, Readable
from fhir_server.access.ownership import has_owner, owner_id, subject_patient
from fhir_server.access.record import PatientRecord
from fhir_server.access.requester import AccessMode, ActorKind, Requester
from fhir_server.documents import metadata_versions
from fhir_server.errors import FhirError
from fhir_server.search.query import (
    And,
    Everything,
    IdTest,
    InCompartment,
    Node,
    Not,
    Or,
    ReferenceTest,
    TokenTest,
    all_of,
)
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    OID_TRE_A03_CLASSE,
    RECORD_OPPOSED,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_IDNAT_STRUCT,
)

SYSTEM_CLASS = f"urn:oid:{OID_TRE_A03_CLASSE}"

# R05: organization types that never read clinical data.
PAYER_TYPES = frozenset({"insurer", "mutual_insurer", "employer", "health_insurer"})
HEALTH_INSURER = "health_insurer"
# R15: organization types whose systems manage records (Patient, RelatedPerson).
RECORD_ADMIN_TYPES = frozenset({"admin", HEALTH_INSURER})

DIRECTORY_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization"})
DEPOSIT_TYPES = frozenset({"DocumentReference", "Binary", "List"})
IDENTITY_TYPES = frozenset({"Patient", "RelatedPerson"})
PRACTITIONER_READ_TYPES = frozenset({"Patient", "DocumentReference", "List", "Communication"})
WRITE_INTERACTIONS = frozenset({"create", "update", "patch", "delete"})

NOTHING: Node = Not(Everything())
TYPES_RULE = "types"  # refusals by actor type (the table above), not by a numbered rule

MSG_R04 = (
    "A search must designate exactly one patient: patient, patient.identifier or subject "
    "parameter is missing"
)
MSG_R04_PATIENT = (
    "A search of Patient must designate exactly one patient: _id or identifier parameter is missing"
)
MSG_R05 = "Insurers, mutual insurers, employers and the health insurer do not read clinical data"
MSG_R10 = "The patient's authorization is missing for this access to their record"
MSG_REFUSED = "Access to this patient's record is not permitted"
MSG_R11_REASON = "Bris de glace access requires a declared reason"
MSG_R11_OPPOSED = "The patient has opposed bris de glace (emergency) access to their record"
MSG_R12_OPPOSED = "The patient has opposed centre 15 access to their record"
MSG_CONSENT_UNREADABLE = "The patient's consent cannot be evaluated; access is refused"


@dataclass(frozen=True, slots=True)
class _Grant:
    """Why a requester may act on a record, before type-specific constraints."""

    rule: str
    notes: tuple[str, ...] = ()
    general_practitioner: bool = False


@dataclass(frozen=True, slots=True)
class _Constraint:
    """One constraint of a granted access and the rule it enforces. `rare`: it excludes few
    resources (a label masking a document), so a store may check it late (`Permit`)."""

    rule: str
    node: Node
    rare: bool = False


class DmpPolicy:
    """The policy, holding the habilitation matrix it was started with (R13)."""

    def __init__(self, matrix: HabilitationMatrix) -> None:
        self.matrix = matrix
        # The systems J66 draws from: a document with no type coding in them has no J66
        # type, and R13 judges it by its class (`_readable_node`).
        self._type_systems = tuple(sorted({system for system, _ in matrix.axes.types}))

    def _readable(self, requester: Requester) -> Readable:
        """R13: what the requester's J65 roles (profession, specialty) read."""
        return self.matrix.readable(self.matrix.roles_of(requester.profession, requester.specialty))

    # --- searches --------------------------------------------------------------------

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
        refused = _refuse_payer(requester, resource_type)
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
                return _system_read(requester, resource_type)
            case ActorKind.PATIENT | ActorKind.REPRESENTATIVE:
                if record is None and patient_given:
                    # R18: naming an unknown patient answers like naming another patient's
                    # record, so a patient cannot probe which INS are registered.
                    return self._not_their_record(requester)
                grant = self._person_gate(requester, record)
            case ActorKind.PRACTITIONER:
                if resource_type not in PRACTITIONER_READ_TYPES:
                    return _practitioner_type_refused(resource_type)
                if record is None:
                    if not patient_given:
                        message = MSG_R04_PATIENT if resource_type == "Patient" else MSG_R04
                        return Deny("R04", 400, "invalid", message, "R04")
                    return _unknown_patient(404, "not-found")
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

    # --- single reads ----------------------------------------------------------------

    def decide_read(
        self,
        requester: Requester,
        resource_type: str,
        resource: dict,
        record: PatientRecord | None,
    ) -> Decision:
        """A read, vread or instance history of one resource (call once per version shown).

        `record`: the record of the patient in whose compartment the resource is (for a
        DocumentReference, its subject), or None for a resource in no patient's compartment.
        The resource is judged by the very constraints a search would use.
        """
        if resource_type == "Binary":
            raise TypeError("a Binary is judged through its DocumentReference: decide_binary_read")
        if requester.kind is ActorKind.INTERNAL:
            return Permit(Everything(), "internal")
        refused = _refuse_payer(requester, resource_type)
        if refused:
            return refused
        if resource_type in DIRECTORY_TYPES:
            return Permit(Everything(), TYPES_RULE)
        resource_id = str(resource.get("id", ""))
        if requester.kind is ActorKind.SYSTEM:
            return _system_read(requester, resource_type)
        if (
            requester.kind is ActorKind.PRACTITIONER
            and resource_type not in PRACTITIONER_READ_TYPES
        ):
            return _practitioner_type_refused(resource_type)
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
            return _hide(grant, resource_type, resource_id)
        for part in self._constraints(requester, resource_type, record, grant):
            if not matches(part.node, resource):
                return hidden(part.rule, resource_type, resource_id)
        return Permit(Everything(), grant.rule, grant.notes)

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
        refused = _refuse_payer(requester, "Binary")
        if refused:
            return refused
        if requester.kind is ActorKind.SYSTEM:
            return _system_read(requester, "Binary")
        if has_owner(binary):
            owner = owner_id(binary)
            judged = [d for d in documents if owner is not None and d.get("id") == owner]
        else:
            judged = [d for d in documents if _points_to(d, binary_id)]
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

    # --- writes ----------------------------------------------------------------------

    def decide_write(
        self,
        requester: Requester,
        interaction: str,
        resource_type: str,
        new: dict | None,
        old: dict | None,
        record: PatientRecord | None,
    ) -> Decision:
        """A create, update, patch (with `new` the patched result) or delete.

        `record`: the record of the patient whose compartment `new` (or `old`) is in; None
        when unknown. For a Consent the new version is interpreted and an uninterpretable
        one is refused (422 with the element's expression).
        """
        if interaction not in WRITE_INTERACTIONS:
            raise ValueError(f"unknown write interaction {interaction!r}")
        interaction = "update" if interaction == "patch" else interaction
        if interaction == "update" and old is None:
            interaction = "create"  # update as create (PUT to a new id)
        if resource_type == "AuditEvent":
            if interaction != "create":
                return Deny(
                    "R16", 405, "not-supported", "AuditEvents are never updated or deleted", "R16"
                )
            if requester.kind is ActorKind.INTERNAL:
                return Permit(Everything(), "internal")
            return forbidden("R16", "AuditEvents are written by the server only")
        if requester.kind is ActorKind.INTERNAL:
            return Permit(Everything(), "internal")
        if requester.organization_type in PAYER_TYPES and not (
            requester.organization_type == HEALTH_INSURER
            and (
                (interaction == "create" and resource_type in DEPOSIT_TYPES)
                or resource_type in IDENTITY_TYPES
            )
        ):
            return forbidden("R05", "This organization may not write to the record", "R05")
        if resource_type in IDENTITY_TYPES:
            return _identity_write(requester, interaction)
        if resource_type == "Binary" and interaction != "create":
            return forbidden(TYPES_RULE, "Binaries are replaced with their document, never changed")
        match requester.kind:
            case ActorKind.SYSTEM:
                decision = _system_write(requester, interaction, resource_type, new, old, record)
            case ActorKind.PATIENT | ActorKind.REPRESENTATIVE:
                decision = self._person_write(
                    requester, interaction, resource_type, new, old, record
                )
            case ActorKind.PRACTITIONER:
                decision = self._practitioner_write(
                    requester, interaction, resource_type, new, old, record
                )
            case _:
                return forbidden(TYPES_RULE, "This requester cannot write to the record")
        if (
            isinstance(decision, Permit)
            and new is not None
            and old is not None
            and compartment_of(new) != compartment_of(old)
        ):
            # Checked last, so that it says nothing about a resource the requester cannot see.
            return Deny(
                "R06", 422, "processing", "A resource cannot be moved to another patient's record"
            )
        return decision

    # --- gates -----------------------------------------------------------------------

    def _person_gate(
        self,
        requester: Requester,
        record: PatientRecord | None,
        *,
        own_patient: bool = False,
    ) -> _Grant | Deny:
        """R06/R07: the patient, or a representative of a minor, on that patient's record."""
        patient = requester.kind is ActorKind.PATIENT
        rule = "R06" if patient else "R07"
        if record is None:
            return Deny("R04", 400, "invalid", "The patient parameter is missing", "R04")
        acting = (
            record.patient_id == requester.subject_id
            if patient
            else requester.subject_id in record.representatives
        )
        if not acting:
            return self._not_their_record(requester)
        if not record.is_open and not own_patient:
            return _record_status_deny(record, 403)
        return _Grant(rule)

    @staticmethod
    def _not_their_record(requester: Requester) -> Deny:
        if requester.kind is ActorKind.PATIENT:
            return forbidden("R06", "A patient may only access their own record")
        return forbidden(
            "R07", "Only a legal representative of a minor patient may access this record"
        )

    def _practitioner_gate(self, requester: Requester, record: PatientRecord) -> _Grant | Deny:
        """R03, R08-R12 for a practitioner on one record."""
        if not record.is_open:
            return _record_status_deny(record, 403)
        idnat = requester.subject_id
        notes = _mode_notes(requester.access_mode)
        if record.is_general_practitioner(idnat):
            return _Grant("R08", notes, general_practitioner=True)
        mode = requester.access_mode
        if mode is AccessMode.BRIS_DE_GLACE and not (requester.access_reason or "").strip():
            return forbidden("R11", MSG_R11_REASON)
        if record.rules.is_blocked(idnat):
            if mode is AccessMode.NORMAL:
                return Deny("R09", 403, "forbidden", MSG_R10, "R10")
            return Deny("R09", 403, "forbidden", MSG_REFUSED, "access-refused")
        if record.uninterpretable_consents:
            return Deny("R09", 403, "forbidden", MSG_CONSENT_UNREADABLE, "access-refused")
        match mode:
            case AccessMode.NORMAL:
                if record.rules.is_authorized(idnat):
                    if not record.rules.initial_consent:
                        # CE 15/10/2025: no access under R10 before the patient's initial
                        # consent is collected (`access.initial_consent`). Told only to whom
                        # holds an authorization: the others are refused as before, so that
                        # a block stays undisclosed (R09).
                        return initial_consent.missing()
                    return _Grant("R10", notes)
                return forbidden("R10", MSG_R10)
            case AccessMode.BRIS_DE_GLACE:
                if record.rules.oppose_bris_de_glace:
                    return forbidden("R11", MSG_R11_OPPOSED)
                return _Grant("R11", notes)
            case AccessMode.CENTRE_15:
                if record.rules.oppose_centre_15:
                    return forbidden("R12", MSG_R12_OPPOSED)
                return _Grant("R12", notes)
        return forbidden("R10", MSG_R10)

    # --- constraints -----------------------------------------------------------------

    def _constraints(
        self, requester: Requester, resource_type: str, record: PatientRecord, grant: _Grant
    ) -> list[_Constraint]:
        """The constraints of a granted access, each tagged with the rule it enforces."""
        patient_id = record.patient_id
        parts: list[_Constraint] = []
        if resource_type == "Patient":
            parts.append(_Constraint(grant.rule, IdTest((patient_id,))))
        else:
            parts.append(_Constraint(grant.rule, InCompartment(patient_id)))
        document = resource_type == "DocumentReference"
        if document:
            parts.append(_Constraint(deletion.RULE, deletion.visible_unless_deleted(requester)))
        match requester.kind:
            case ActorKind.PATIENT:
                parts.append(_Constraint("R14", Not(_labelled(INVISIBLE_PATIENT, document)), True))
                if resource_type == "Communication":
                    parts.append(_Constraint("R06", _party_of_message((("Patient", patient_id),))))
            case ActorKind.REPRESENTATIVE:
                parts.append(_Constraint("R14", Not(_labelled(INVISIBLE_PATIENT, document)), True))
                hidden_node: Node = Not(_labelled(INVISIBLE_REPRESENTANTS_LEGAUX, document))
                parts.append(_Constraint("R07", hidden_node, True))
                if resource_type == "Communication":
                    refs = (("Patient", patient_id), ("RelatedPerson", requester.subject_id))
                    parts.append(_Constraint("R07", _party_of_message(refs)))
            case ActorKind.PRACTITIONER:
                if not grant.general_practitioner:
                    hidden_node = Not(_labelled(MASQUE_PS, document))
                    if document:
                        hidden_node = Or((hidden_node, _authored_by(requester.subject_id)))
                    parts.append(_Constraint("R14", hidden_node, True))
                if document:
                    readable = _readable_node(self._readable(requester), self._type_systems)
                    if not isinstance(readable, Everything):
                        parts.append(_Constraint("R13", readable))
                if resource_type == "Communication":
                    own = [("Practitioner", requester.subject_id)]
                    if requester.structure_idnat:  # their organisational mailbox's messages
                        own.append(("Organization", requester.structure_idnat))
                    parts.append(_Constraint("R18", _party_of_message(own)))
        return parts

    # --- writes by actor -------------------------------------------------------------

    def _person_write(
        self,
        requester: Requester,
        interaction: str,
        resource_type: str,
        new: dict | None,
        old: dict | None,
        record: PatientRecord | None,
    ) -> Decision:
        patient = requester.kind is ActorKind.PATIENT
        rule = "R06" if patient else "R07"
        if record is None:
            if resource_type == "Binary" and interaction == "create":
                # The bytes of a document the patient deposits (ITI-105 makes them a Binary
                # of the deposit's transaction), in no record until the document owns them,
                # as for a practitioner's deposit (`service.ownership`).
                return Permit(Everything(), rule)
            return _unknown_patient(422, "processing")
        grant = self._person_gate(requester, record)
        if isinstance(grant, Deny):
            if grant.details_code in (RECORD_OPPOSED_CODE, RECORD_CLOSED_CODE):
                return _record_status_deny(record, 422)
            if old is not None:
                return hidden(grant.rule, resource_type, str(old.get("id", "")))
            return grant
        if (
            new is not None
            and resource_type != "Binary"
            and record.patient_id not in compartment_of(new)
        ):
            return forbidden(rule, "A resource can only be written to the record of its patient")
        if old is not None and resource_type != "Binary":
            readable = self.decide_read(requester, resource_type, old, record)
            if isinstance(readable, Deny):
                return readable
        own_refs = {("Patient", record.patient_id)} | {
            ("RelatedPerson", rp) for rp in record.representatives
        }
        deposited = (Note.NOTIFY_DOCUMENT_DEPOSITED,) if not patient else ()
        match resource_type, interaction:
            case ("DocumentReference", "create"):
                return Permit(Everything(), rule, deposited)
            case ("Binary" | "List", "create"):
                return Permit(Everything(), rule)
            case ("DocumentReference", "update" | "delete"):
                assert old is not None
                if _authored_by_any(old, "author", own_refs):
                    return Permit(Everything(), rule)
                if (
                    interaction == "update"
                    and new is not None
                    and _only_labels_changed(old, new, {MASQUE_PS})
                ):
                    return Permit(Everything(), "R14")
                return forbidden(
                    "R06",
                    "A document deposited by a professional cannot be altered or deleted by the "
                    "patient; only its masking (MASQUE_PS) can change",
                )
            case ("List", "update" | "delete"):
                assert old is not None
                if _authored_by_any(old, "source", own_refs):
                    return Permit(Everything(), rule)
                return forbidden("R06", "Only lists created by the patient can be changed")
            case ("Consent", _):
                if new is not None:
                    invalid = _consent_invalid(new)
                    if invalid:
                        return invalid
                    if consent_patient_id(new) != record.patient_id:
                        return forbidden(
                            rule, "A Consent can only be written for the patient's own record"
                        )
                return Permit(Everything(), rule)
            case ("Communication", "create"):
                assert new is not None
                sender = reference_target((new.get("sender") or {}).get("reference"))
                own = ("Patient" if patient else "RelatedPerson", requester.subject_id)
                if sender == own:
                    return Permit(Everything(), rule)
                return forbidden(rule, "A message can only be sent in the requester's own name")
        return forbidden(
            TYPES_RULE, f"{resource_type} {interaction} is not permitted to this requester"
        )

    def _practitioner_write(
        self,
        requester: Requester,
        interaction: str,
        resource_type: str,
        new: dict | None,
        old: dict | None,
        record: PatientRecord | None,
    ) -> Decision:
        idnat = requester.subject_id
        if resource_type not in (*DEPOSIT_TYPES, "Consent", "Communication"):
            return forbidden(TYPES_RULE, f"Practitioners do not write {resource_type} resources")
        if record is None:
            if resource_type == "Binary":
                return Permit(Everything(), "deposit")
            return _unknown_patient(422, "processing")
        if not record.is_open:
            return _record_status_deny(record, 422)
        blocked = record.rules.is_blocked(idnat) and not record.is_general_practitioner(idnat)
        if blocked:
            return Deny("R09", 403, "forbidden", MSG_REFUSED, "access-refused")
        if interaction == "create" and resource_type in DEPOSIT_TYPES:
            # Deposits need an open record, not the patient's authorization (decided here).
            notes = (
                (Note.NOTIFY_DOCUMENT_DEPOSITED,) if resource_type == "DocumentReference" else ()
            )
            return Permit(Everything(), "deposit", notes)
        if resource_type == "Consent":
            if (
                interaction == "create"
                and new is not None
                and initial_consent.carries_initial_consent(new)
            ):
                return _initial_consent_declaration(requester, new, record)
            return _self_authorization(requester, interaction, new, old, record)
        gate = self._practitioner_gate(requester, record)
        if isinstance(gate, Deny):
            return hidden(gate.rule, resource_type, str(old.get("id", ""))) if old else gate
        if resource_type == "Communication":
            if interaction == "create" and new is not None:
                sender = new.get("sender") or {}
                if _is_practitioner_ref(sender, idnat) or _is_structure_ref(
                    sender, requester.structure_idnat
                ):
                    return Permit(Everything(), gate.rule, gate.notes)
                return forbidden(
                    TYPES_RULE, "A message can only be sent in the requester's own name"
                )
            return forbidden(TYPES_RULE, "Messages are never changed or deleted")
        assert old is not None
        readable = self.decide_read(requester, resource_type, old, record)
        if isinstance(readable, Deny):
            return readable
        if resource_type == "DocumentReference":
            if matches(_authored_by(idnat), old):
                return Permit(Everything(), gate.rule, gate.notes)
            if (
                interaction == "update"
                and new is not None
                and _only_labels_changed(
                    old, new, {INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX}
                )
                and _labels(new) <= _labels(old)
            ):
                return Permit(Everything(), "R14", gate.notes)
            return forbidden(
                "R14",
                "Only the author may change or delete a document; other professionals may only "
                "remove INVISIBLE_PATIENT or INVISIBLE_REPRESENTANTS_LEGAUX",
            )
        # List
        if _is_practitioner_ref(old.get("source") or {}, idnat):
            return Permit(Everything(), gate.rule, gate.notes)
        return forbidden(TYPES_RULE, "Only the list's source may change or delete it")


# --- module helpers ------------------------------------------------------------------


def _party_of_message(targets: Iterable[tuple[str, str]]) -> Node:
    """The message was sent by or to one of `targets` (type, id); a practitioner also by
    IdNat_PS identifier, since messages name professionals by identifier; an organization
    only by IdNat_Struct identifier (its organisational mailbox)."""
    tests: list[Node] = []
    for param in ("sender", "recipient"):
        for target_type, target_id in targets:
            if target_type == "Organization":
                tests.append(
                    ReferenceTest(
                        param, identifier_system=SYSTEM_IDNAT_STRUCT, identifier_value=target_id
                    )
                )
                continue
            tests.append(ReferenceTest(param, target_type, target_id))
            if target_type == "Practitioner":
                tests.append(
                    ReferenceTest(
                        param, identifier_system=SYSTEM_IDNAT_PS, identifier_value=target_id
                    )
                )
    return Or(tuple(tests))


def _labelled(code: str, document: bool) -> Node:
    meta = TokenTest("_security", SYSTEM_DMP_CONFIDENTIALITY, code)
    if not document:
        return meta
    return Or((TokenTest("security-label", SYSTEM_DMP_CONFIDENTIALITY, code), meta))


def _authored_by(idnat: str) -> Node:
    return TokenTest("author-identifier", SYSTEM_IDNAT_PS, idnat)


def _readable_node(readable: Readable, type_systems: tuple[str, ...]) -> Node:
    """R13 as a clause: the document's J66 type is one the roles read; a document with no
    type in a J66 system (written before types were required) is judged by its class."""
    if readable.every_type and readable.untyped_classes is ALL:
        return Everything()
    parts: list[Node] = [TokenTest("type", system, code) for system, code in sorted(readable.types)]
    untyped = Not(Or(tuple(TokenTest("type", system) for system in type_systems)))
    if readable.untyped_classes is ALL:
        parts.append(untyped)
    elif readable.untyped_classes:
        classes = sorted(readable.untyped_classes)  # type: ignore[arg-type]
        tests = tuple(TokenTest("category", SYSTEM_CLASS, code) for code in classes)
        parts.append(And((untyped, tests[0] if len(tests) == 1 else Or(tests))))
    if not parts:
        return NOTHING  # only reached by single reads: searches are refused earlier (R13)
    return parts[0] if len(parts) == 1 else Or(tuple(parts))


def _mode_notes(mode: AccessMode) -> tuple[str, ...]:
    match mode:
        case AccessMode.BRIS_DE_GLACE:
            return (Note.NOTIFY_BRIS_DE_GLACE,)
        case AccessMode.CENTRE_15:
            return (Note.NOTIFY_CENTRE_15,)
    return (Note.NOTIFY_IF_FIRST_ACCESS_OF_DAY,)


def _refuse_payer(requester: Requester, resource_type: str) -> Deny | None:
    """R05; the health insurer and administration systems may still read identities (R15)."""
    if requester.organization_type not in PAYER_TYPES:
        return None
    if (
        requester.kind is ActorKind.SYSTEM
        and requester.organization_type == HEALTH_INSURER
        and resource_type in IDENTITY_TYPES
    ):
        return None
    return forbidden("R05", MSG_R05)


def _system_read(requester: Requester, resource_type: str) -> Decision:
    """R15: systems read identities (to resolve an INS), never the record's content."""
    if resource_type == "Patient" or (
        resource_type == "RelatedPerson" and requester.organization_type in RECORD_ADMIN_TYPES
    ):
        return Permit(Everything(), "R15")
    return forbidden(
        "R15", "System clients do not read the record; a deposit's answer returns what was stored"
    )


def _system_write(
    requester: Requester,
    interaction: str,
    resource_type: str,
    new: dict | None,
    old: dict | None,
    record: PatientRecord | None,
) -> Decision:
    if resource_type not in DEPOSIT_TYPES:
        return forbidden("R15", f"System clients do not write {resource_type} resources")
    if record is None:
        if resource_type == "Binary":
            return Permit(Everything(), "R15")
        return _unknown_patient(422, "processing")
    if not record.is_open:
        return _record_status_deny(record, 422)
    if interaction == "create":
        notes = (Note.NOTIFY_DOCUMENT_DEPOSITED,) if resource_type == "DocumentReference" else ()
        return Permit(Everything(), "R15", notes)
    if (
        interaction == "update"
        and resource_type == "DocumentReference"
        and new is not None
        and old is not None
        and _without(old, ("status",)) == _without(new, ("status",))
    ):
        # Deprecating a replaced document (XDS RPLC, MHD) changes its status only.
        return Permit(Everything(), "R15")
    return forbidden("R15", "System clients only deposit documents and deprecate them")


def _identity_write(requester: Requester, interaction: str) -> Decision:
    if (
        requester.kind is ActorKind.SYSTEM
        and requester.organization_type in RECORD_ADMIN_TYPES
        and interaction in ("create", "update")
    ):
        return Permit(Everything(), "R15")
    return forbidden(
        "R15",
        "Patient and RelatedPerson resources are managed by the health insurer's or an "
        "administration system",
    )


def _practitioner_type_refused(resource_type: str) -> Deny:
    rule = "R16" if resource_type == "AuditEvent" else TYPES_RULE
    return forbidden(rule, f"Practitioners do not read {resource_type} resources")


def _record_status_deny(record: PatientRecord, status: int) -> Deny:
    if record.status == RECORD_OPPOSED:
        return Deny(
            "R03",
            status,
            "processing",
            "The patient opposed the creation of their record",
            RECORD_OPPOSED_CODE,
        )
    return Deny("R03", status, "processing", "The patient's record is closed", RECORD_CLOSED_CODE)


def _unknown_patient(status: int, code: str) -> Deny:
    return Deny("R03", status, code, "No record is known for this patient", UNKNOWN_PATIENT_CODE)


def _hide(grant: Deny, resource_type: str, resource_id: str) -> Deny:
    """Keep requester-only refusals (R05, types, R11 reason) as they are; hide the rest."""
    if grant.rule in ("R05", TYPES_RULE) or grant.message == MSG_R11_REASON:
        return grant
    return hidden(grant.rule, resource_type, resource_id)


def _points_to(document: dict, binary_id: str) -> bool:
    for content in document.get("content") or []:
        target = reference_target((content.get("attachment") or {}).get("url"))
        if target == ("Binary", binary_id):
            return True
    return False


def _is_practitioner_ref(reference: dict, idnat: str) -> bool:
    identifier = reference.get("identifier") or {}
    if identifier.get("system") == SYSTEM_IDNAT_PS and identifier.get("value") == idnat:
        return True
    return reference_target(reference.get("reference")) == ("Practitioner", idnat)


def _is_structure_ref(reference: dict, structure: str | None) -> bool:
    """`reference` names, by IdNat_Struct identifier, the organization `structure`."""
    identifier = reference.get("identifier") or {}
    return (
        structure is not None
        and reference.get("type") == "Organization"
        and identifier.get("system") == SYSTEM_IDNAT_STRUCT
        and identifier.get("value") == structure
    )


def _authored_by_any(resource: dict, element: str, refs: set[tuple[str, str]]) -> bool:
    value = resource.get(element)
    values = value if isinstance(value, list) else [value] if value else []
    return any(reference_target((v or {}).get("reference")) in refs for v in values)


def _labels(resource: dict) -> set[str]:
    codes = {
        c.get("code")
        for c in (resource.get("meta") or {}).get("security") or []
        if c.get("system") == SYSTEM_DMP_CONFIDENTIALITY
    }
    for concept in resource.get("securityLabel") or []:
        codes.update(
            c.get("code")
            for c in concept.get("coding") or []
            if c.get("system") == SYSTEM_DMP_CONFIDENTIALITY
        )
    return {c for c in codes if c}


def _only_labels_changed(old: dict, new: dict, codes: set[str]) -> bool:
    """Whether old and new differ at most by DMP labels in `codes` (and version metadata).
    The new entryUUID of a new metadata version is the registry's doing, not a change of
    the requester's (`documents.metadata_versions`)."""
    if metadata_versions.is_step(old, new):
        old, new = (
            metadata_versions.without_entry_uuids(old),
            metadata_versions.without_entry_uuids(new),
        )
    return _strip_labels(old, codes) == _strip_labels(new, codes)


def _strip_labels(resource: dict, codes: set[str]) -> dict:
    def keep(coding: dict) -> bool:
        return not (
            coding.get("system") == SYSTEM_DMP_CONFIDENTIALITY and coding.get("code") in codes
        )

    result = _without(resource, ())
    meta = result.get("meta") or {}
    if "security" in meta:
        meta["security"] = [c for c in meta["security"] if keep(c)]
        if not meta["security"]:
            del meta["security"]
    if not meta:
        result.pop("meta", None)
    labels = []
    for concept in result.get("securityLabel") or []:
        codings = [c for c in concept.get("coding") or [] if keep(c)]
        if codings or concept.get("text"):
            labels.append({**concept, "coding": codings} if codings else {"text": concept["text"]})
    if labels:
        result["securityLabel"] = labels
    else:
        result.pop("securityLabel", None)
    return result


def _without(resource: dict, fields: tuple[str, ...]) -> dict:
    """A copy without `fields` and without the version metadata the server sets."""
    result = copy.deepcopy(resource)
    for name in fields:
        result.pop(name, None)
    meta = result.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        if not meta:
            del result["meta"]
    result.pop("text", None)
    return result


def _consent_invalid(consent: dict) -> Deny | None:
    try:
        interpret_consent(consent)
    except FhirError as exc:
        issue = exc.issues[0]
        return Deny("R10", exc.status, issue.code, issue.diagnostics, None, issue.expression)
    return None


def _is_self_permit(provision: object, idnat: str) -> bool:
    if not isinstance(provision, dict) or provision.get("type") != "permit":
        return False
    if provision.get("purpose"):
        return False
    actors = provision.get("actor") or []
    return bool(actors) and all((actor_identifier(a) or {}).get("value") == idnat for a in actors)


def _self_authorization(
    requester: Requester,
    interaction: str,
    new: dict | None,
    old: dict | None,
    record: PatientRecord,
) -> Decision:
    """R10: a practitioner in the care team records their own authorization (presumed
    consent), as a new Consent naming only them or as permit provisions added to one."""
    idnat = requester.subject_id
    refused = forbidden("R10", "A practitioner may only record their own authorization")
    if interaction == "delete" or new is None:
        return refused
    if not record.rules.initial_consent:
        # Presumed consent opens nothing before the initial consent (CE 15/10/2025).
        return initial_consent.missing()
    if record.rules.is_authorized(idnat):
        # Once is enough: every new one notified the patient again and lengthened the record
        # the rules read (issue #18 attack pass: a flood of self-authorizations).
        return Deny(
            "R10", 409, "duplicate", "This practitioner's authorization is already recorded"
        )
    invalid = _consent_invalid(new)
    if invalid:
        return invalid
    if consent_patient_id(new) != record.patient_id or new.get("status") != "active":
        return refused
    nested = (new.get("provision") or {}).get("provision") or []
    added = [p for p in nested if _is_self_permit(p, idnat)]
    if interaction == "create":
        if not nested or len(added) != len(nested):
            return refused
    else:
        assert old is not None
        old_nested = (old.get("provision") or {}).get("provision") or []
        kept = [p for p in nested if p not in added or p in old_nested]
        if kept != old_nested or len(kept) == len(nested):
            return refused
        if _without_provisions(old) != _without_provisions(new):
            return refused
    return Permit(Everything(), "R10", (Note.NOTIFY_AUTHORIZATION_RECORDED,))


def _initial_consent_declaration(
    requester: Requester, new: dict, record: PatientRecord
) -> Decision:
    """A professional declares they collected the patient's initial consent (CE 15/10/2025):
    a new Consent of that shape only (`initial_consent.declaration_problem`), once."""
    invalid = _consent_invalid(new)
    if invalid:
        return invalid
    if consent_patient_id(new) != record.patient_id:
        return forbidden("R10", "A Consent can only be written for the patient's own record")
    problem = initial_consent.declaration_problem(new, requester.subject_id)
    if problem:
        return problem
    if record.rules.initial_consent:
        return Deny("R10", 409, "duplicate", "The patient's initial consent is already recorded")
    return Permit(Everything(), "R10", (Note.NOTIFY_INITIAL_CONSENT_DECLARED,))


def _without_provisions(consent: dict) -> dict:
    result = _without(consent, ())
    provision = dict(result.get("provision") or {})
    provision.pop("provision", None)
    result["provision"] = provision
    return result
