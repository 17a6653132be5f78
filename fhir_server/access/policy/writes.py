"""Writes: create, update, patch and delete, judged per actor family."""

from __future__ import annotations

from datetime import UTC, datetime

from fhir_server.access import initial_consent
from fhir_server.access.consent import consent_patient_id
from fhir_server.access.constraints import Follow, compartment_of, matches, reference_target
from fhir_server.access.decision import (
    RECORD_CLOSED_CODE,
    RECORD_OPPOSED_CODE,
    Decision,
    Deny,
    Note,
    Permit,
    forbidden,
    hidden,
)
from fhir_server.access.policy.authorizations import initial_consent_declaration, self_authorization
from fhir_server.access.policy.labels import (
    authored_by,
    dmp_labels,
    only_labels_changed,
    without,
    without_dmp_labels,
)
from fhir_server.access.policy.reads import ReadDecisions
from fhir_server.access.policy.references import (
    authored_by_any,
    is_practitioner_ref,
    is_structure_ref,
)
from fhir_server.access.policy.refusals import consent_invalid, record_status_deny, unknown_patient
from fhir_server.access.policy.tables import (
    DEPOSIT_TYPES,
    HEALTH_INSURER,
    IDENTITY_TYPES,
    MSG_CONSENT_UNREADABLE,
    MSG_REFUSED,
    PAYER_TYPES,
    RECORD_ADMIN_TYPES,
    TYPES_RULE,
    WRITE_INTERACTIONS,
)
from fhir_server.access.record import (
    PatientRecord,
    birth_date_problem,
    general_practitioner_problem,
    general_practitioners_by_reference,
    record_status,
)
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.search.query import Everything
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    RECORD_OPEN,
    RECORD_OPPOSED,
)


class WriteDecisions(ReadDecisions):
    """decide_write; an update or delete is also judged as a read of the old version."""

    def decide_write(
        self,
        requester: Requester,
        interaction: str,
        resource_type: str,
        new: dict | None,
        old: dict | None,
        record: PatientRecord | None,
        follow: Follow | None = None,
    ) -> Decision:
        """A create, update, patch (with `new` the patched result) or delete.

        `record`: the record of the patient whose compartment `new` (or `old`) is in; None
        when unknown. `follow`: what `old` names, read as `decide_read` reads it (a change
        of a resource hidden from the requester answers as on a missing one). For a Consent the new version is interpreted and an uninterpretable
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
        if old is not None and interaction != "create":
            refused = self.change_refusal(requester, interaction, resource_type)
            if refused is not None:
                return refused
        if requester.organization_type in PAYER_TYPES and not (
            requester.organization_type == HEALTH_INSURER
            and (
                (interaction == "create" and resource_type in DEPOSIT_TYPES)
                or resource_type in IDENTITY_TYPES
            )
        ):
            return forbidden("R05", "This organization may not write to the record", "R05")
        if resource_type in IDENTITY_TYPES:
            decision = identity_write(requester, interaction)
            if isinstance(decision, Permit):
                return identity_refusal(resource_type, new, old, record) or decision
            return decision
        if resource_type == "Binary" and interaction != "create":
            return forbidden(TYPES_RULE, "Binaries are replaced with their document, never changed")
        match requester.kind:
            case ActorKind.SYSTEM:
                decision = system_write(requester, interaction, resource_type, new, old, record)
            case ActorKind.PATIENT | ActorKind.REPRESENTATIVE:
                decision = self._person_write(
                    requester, interaction, resource_type, new, old, record, follow
                )
            case ActorKind.PRACTITIONER:
                decision = self._practitioner_write(
                    requester, interaction, resource_type, new, old, record, follow
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

    def change_refusal(
        self, requester: Requester, interaction: str, resource_type: str
    ) -> Deny | None:
        """The refusal every update, patch or delete (a change) of a `resource_type` by
        `requester` gets, whatever the resource is, whose record it is in and what the new
        content says, or None: then the change is judged on the resource (`decide_write`).

        The gate asks it before it looks at the id a change names, so that a change of an
        id that names nothing, of one hidden from the requester and of one they may see get
        the same refusal (R18): judged after, a practitioner was told 403 for an existing
        Consent or RelatedPerson and 404 (204 for a DELETE, 412 with an If-Match) for a
        missing id, an oracle of which ids exist in records they may not read."""
        if requester.kind is ActorKind.INTERNAL:
            return None
        if interaction not in WRITE_INTERACTIONS or interaction == "create":
            raise ValueError(f"not a change: {interaction!r}")
        if resource_type == "AuditEvent":
            return Deny(
                "R16", 405, "not-supported", "AuditEvents are never updated or deleted", "R16"
            )
        if requester.organization_type in PAYER_TYPES and not (
            requester.organization_type == HEALTH_INSURER and resource_type in IDENTITY_TYPES
        ):
            return forbidden("R05", "This organization may not write to the record", "R05")
        if resource_type in IDENTITY_TYPES:
            decision = identity_write(
                requester, "update" if interaction == "patch" else interaction
            )
            return decision if isinstance(decision, Deny) else None
        if resource_type == "Binary":
            return forbidden(TYPES_RULE, "Binaries are replaced with their document, never changed")
        if resource_type == "Communication":
            return forbidden(TYPES_RULE, "Messages are never changed or deleted")
        match requester.kind:
            case ActorKind.SYSTEM if resource_type not in DEPOSIT_TYPES:
                return forbidden("R15", f"System clients do not write {resource_type} resources")
            case ActorKind.SYSTEM if resource_type != "DocumentReference" or interaction in (
                "delete",
                "patch",
            ):
                # A system deprecates a replaced document by a PUT of it whole, the status
                # changed (`system_write`). A PATCH (PDSm's metadata update: logical
                # deletion, archiving, labels) names the document by its id alone: judged on
                # the document, a system, which reads none, changed the status of any
                # document of an open record and was answered the document whole (R15).
                return forbidden("R15", "System clients only deposit documents and deprecate them")
            case ActorKind.PRACTITIONER if resource_type == "Consent":
                # Practitioners never read Consents: they record their own authorization as
                # a new one (R10, `self_authorization`), and change none. Judged on the
                # Consent, a change told which ids exist and whether a guess of a Consent's
                # content was right (403 or 200).
                return forbidden(
                    "R10",
                    "A practitioner records their own authorization as a new Consent; they "
                    "never change or delete one",
                )
            case ActorKind.PRACTITIONER if resource_type not in DEPOSIT_TYPES:
                return forbidden(
                    TYPES_RULE, f"Practitioners do not write {resource_type} resources"
                )
            case ActorKind.PATIENT | ActorKind.REPRESENTATIVE if resource_type not in (
                *DEPOSIT_TYPES,
                "Consent",
            ):
                return forbidden(
                    TYPES_RULE, f"{resource_type} {interaction} is not permitted to this requester"
                )
        return None

    def _person_write(
        self,
        requester: Requester,
        interaction: str,
        resource_type: str,
        new: dict | None,
        old: dict | None,
        record: PatientRecord | None,
        follow: Follow | None = None,
    ) -> Decision:
        patient = requester.kind is ActorKind.PATIENT
        rule = "R06" if patient else "R07"
        if record is None:
            if resource_type == "Binary" and interaction == "create":
                # The bytes of a document the patient deposits (ITI-105 makes them a Binary
                # of the deposit's transaction), in no record until the document owns them,
                # as for a practitioner's deposit (`service.ownership`).
                return Permit(Everything(), rule)
            return unknown_patient(422, "processing")
        grant = self._person_gate(requester, record)
        if isinstance(grant, Deny):
            if grant.details_code in (RECORD_OPPOSED_CODE, RECORD_CLOSED_CODE):
                return record_status_deny(record, 422)
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
            readable = self.decide_read(requester, resource_type, old, record, follow)
            if isinstance(readable, Deny):
                return readable
        own_refs = {("Patient", record.patient_id)} | {
            ("RelatedPerson", rp) for rp in record.representatives
        }
        deposited = (Note.NOTIFY_DOCUMENT_DEPOSITED,) if not patient else ()
        match resource_type, interaction:
            case ("DocumentReference", "create"):
                return invisible_patient_written(new) or Permit(Everything(), rule, deposited)
            case ("Binary" | "List", "create"):
                return Permit(Everything(), rule)
            case ("DocumentReference", "update" | "delete"):
                assert old is not None
                if authored_by_any(old, "author", own_refs):
                    return invisible_patient_written(new) or Permit(Everything(), rule)
                if (
                    interaction == "update"
                    and new is not None
                    and only_labels_changed(old, new, {MASQUE_PS})
                ):
                    return Permit(Everything(), "R14")
                return forbidden(
                    "R06",
                    "A document deposited by a professional cannot be altered or deleted by the "
                    "patient; only its masking (MASQUE_PS) can change",
                )
            case ("List", "update" | "delete"):
                assert old is not None
                if authored_by_any(old, "source", own_refs):
                    return Permit(Everything(), rule)
                return forbidden("R06", "Only lists created by the patient can be changed")
            case ("Consent", _):
                if new is not None:
                    invalid = consent_invalid(new)
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
        follow: Follow | None = None,
    ) -> Decision:
        idnat = requester.subject_id
        if resource_type not in (*DEPOSIT_TYPES, "Consent", "Communication"):
            return forbidden(TYPES_RULE, f"Practitioners do not write {resource_type} resources")
        if record is None:
            if resource_type == "Binary":
                return Permit(Everything(), "deposit")
            return unknown_patient(422, "processing")
        if not record.is_open:
            return record_status_deny(record, 422)
        general_practitioner = record.is_general_practitioner(idnat)
        blocked = record.rules.is_blocked(idnat) and not general_practitioner
        if blocked:
            return Deny("R09", 403, "forbidden", MSG_REFUSED, "access-refused")
        if record.uninterpretable_consents and not general_practitioner:
            # R09's fail closed, for writes as for reads (`_practitioner_gate`): a Consent the
            # rules cannot read may block this practitioner. Judged on the readable Consents
            # only, a practitioner it named in a deny deposited documents and recorded their
            # own authorization (notified to the patient, in force once the Consent is gone).
            return Deny("R09", 403, "forbidden", MSG_CONSENT_UNREADABLE, "access-refused")
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
                return initial_consent_declaration(requester, new, record)
            return self_authorization(requester, interaction, new, record)
        gate = self._practitioner_gate(requester, record)
        if isinstance(gate, Deny):
            return hidden(gate.rule, resource_type, str(old.get("id", ""))) if old else gate
        if resource_type == "Communication":
            if interaction == "create" and new is not None:
                sender = new.get("sender") or {}
                if is_practitioner_ref(sender, idnat) or is_structure_ref(
                    sender, requester.structure_idnat
                ):
                    return Permit(Everything(), gate.rule, gate.notes)
                return forbidden(
                    TYPES_RULE, "A message can only be sent in the requester's own name"
                )
            return forbidden(TYPES_RULE, "Messages are never changed or deleted")
        assert old is not None
        readable = self.decide_read(requester, resource_type, old, record, follow)
        if isinstance(readable, Deny):
            return readable
        if resource_type == "DocumentReference":
            if matches(authored_by(idnat), old):
                if new is not None and MASQUE_PS in dmp_labels(old) - dmp_labels(new):
                    # MASQUE_PS is the patient's choice (R14: they set and remove it): its
                    # author lifted the mask the patient put on their document, which every
                    # authorized professional then read (decided here: the server cannot
                    # tell who set it, so only the patient or a representative removes it).
                    return forbidden(
                        "R14",
                        "MASQUE_PS is removed by the patient or their representative only",
                    )
                return Permit(Everything(), gate.rule, gate.notes)
            if (
                interaction == "update"
                and new is not None
                and only_labels_changed(
                    old, new, {INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX}
                )
                and dmp_labels(new) <= dmp_labels(old)
            ):
                return Permit(Everything(), "R14", gate.notes)
            return forbidden(
                "R14",
                "Only the author may change or delete a document; other professionals may only "
                "remove INVISIBLE_PATIENT or INVISIBLE_REPRESENTANTS_LEGAUX",
            )
        # List
        if is_practitioner_ref(old.get("source") or {}, idnat):
            return Permit(Everything(), gate.rule, gate.notes)
        return forbidden(TYPES_RULE, "Only the list's source may change or delete it")


def system_write(
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
        return unknown_patient(422, "processing")
    if not record.is_open:
        return record_status_deny(record, 422)
    if interaction == "create":
        notes = (Note.NOTIFY_DOCUMENT_DEPOSITED,) if resource_type == "DocumentReference" else ()
        return Permit(Everything(), "R15", notes)
    if (
        interaction == "update"
        and resource_type == "DocumentReference"
        and new is not None
        and old is not None
        and old.get("status") == "current"
        and new.get("status") == "superseded"
        and without_dmp_labels(without(old, ("status",)))
        == without_dmp_labels(without(new, ("status",)))
    ):
        # The DMP labels aside: the patient masks a deposited document, its author labels it,
        # and the system, which reads no document (R15), was never shown it. Compared with
        # them, a deprecation refused told the system that its deposit had been masked; the
        # stored labels are kept (`Gate.as_written`).
        # Deprecating a replaced document (XDS RPLC, MHD) changes its status only, from
        # current to superseded: any other status change is no deprecation. Judged on "the
        # status only", a system deleted its deposit (entered-in-error, PDSm4DMP TD3.3c, a
        # DELETE by another name, hidden at once from every reader but its author) and
        # restored a superseded or deleted one to current (R15).
        return Permit(Everything(), "R15")
    return forbidden("R15", "System clients only deposit documents and deprecate them")


def record_status_change(old: dict, new: dict | None) -> Deny | None:
    """R03: the refusal of a Patient update that lifts its record's closure or the patient's
    opposition (or exchanges one for the other), or None.

    Reopening is the operator's (`fhir-server record reopen`, which refuses to reopen a record
    the patient opposed); the FHIR door closes or opposes a record, never reopens one. An
    update that left the record-status extension out reopened a closed or opposed record (its
    absence reads as open): the health insurer's identity feed updating an address, which
    knows nothing of the extension, opened to deposits and readers the record of a patient
    who had opposed it (decided here: a closure or an opposition is lifted by the operator
    only, as the CLI does; a feed sends the status it read)."""
    if new is None:
        return None
    before, after = record_status(old), record_status(new)
    if before in (after, RECORD_OPEN):
        return None
    if before == RECORD_OPPOSED:
        message = (
            "The patient opposed the creation of their record: no Patient update lifts it "
            "(the record-status extension stays 'opposed')"
        )
    else:
        message = (
            "The record is closed: it is reopened by the operator (fhir-server record reopen), "
            "not by a Patient update (the record-status extension stays 'closed')"
        )
    return Deny("R03", 409, "business-rule", message, "record-status")


def identity_refusal(
    resource_type: str, new: dict | None, old: dict | None, record: PatientRecord | None
) -> Deny | None:
    """What an identity write the feed may make (`identity_write`) may still not say, or
    None: an `active` that is no JSON boolean; a Patient's `generalPractitioner` reference
    naming two practitioners (R08), or a record status it may not change
    (`inactive_but_open`, `record_status_change`, R03); a RelatedPerson naming no known
    patient or moved to another one (R07). The rules read these facts as written: what they
    cannot read as one fact is refused, never read one way or the other."""
    if new is not None and "implicitRules" in new:
        # FHIR R4: a modifier element, rules that change what the resource means; the rules
        # read the identity as written (R03, R07, R08), so it is refused, as a Consent's is.
        return Deny(
            "R07" if resource_type == "RelatedPerson" else "R03",
            422,
            "processing",
            f"{resource_type}.implicitRules changes what the resource means in a way the "
            "access rules do not evaluate",
            None,
            (f"{resource_type}.implicitRules",),
        )
    modifier = _modifier_extension_path(new, resource_type) if new is not None else None
    if modifier is not None:
        # FHIR R4: a modifierExtension, like implicitRules, changes what the element holding
        # it means (a guardianship "revoked", an identity "not this person"); one the server
        # does not understand is not ignored. The rules read the identity without it: the
        # implicitRules refusal spelled as an extension was stored and read as if absent.
        return Deny(
            "R07" if resource_type == "RelatedPerson" else "R03",
            422,
            "processing",
            f"{modifier} changes what the resource means in a way the access rules do not evaluate",
            None,
            (modifier,),
        )
    if new is not None and "active" in new and not isinstance(new["active"], bool):
        # The models read `"false"`, `0` or `"no"` as false and the JSON was stored as sent;
        # the rules read a RelatedPerson whose `active` is not the JSON false as active
        # (`record._is_representative`): a guardianship its feed ended stayed in force.
        return Deny(
            "R07" if resource_type == "RelatedPerson" else "R03",
            422,
            "invalid",
            f"{resource_type}.active is a JSON boolean (true or false)",
            None,
            (f"{resource_type}.active",),
        )
    if resource_type == "Patient" and new is not None:
        for index in range(len(new.get("generalPractitioner") or [])):
            problem = general_practitioner_problem(new, index)
            if problem is not None:
                return Deny("R08", 422, "processing", problem[0], None, (problem[1],))
        for index, named in enumerate(general_practitioners_by_reference(new)):
            if len(named) > 1:
                # R08: the médecin traitant is never blocked and sees MASQUE_PS; a reference
                # naming two practitioners (its identifier one, its literal or contained
                # Practitioner another) made both so, as a Consent actor naming two was
                # read as one of them (`consent._actor_ids` refuses it the same way).
                return Deny(
                    "R08",
                    422,
                    "invalid",
                    f"Patient.generalPractitioner[{index}] names {len(named)} practitioners "
                    f"({', '.join(sorted(named))}): one reference names one",
                    None,
                    (f"Patient.generalPractitioner[{index}]",),
                )
    if resource_type == "Patient" and new is not None:
        birth_problem = birth_date_problem(new.get("birthDate"), datetime.now(UTC))
        if birth_problem is not None:
            # R07: a birthDate still to come was read as a minor's (negative age), opening
            # an adult's record to the RelatedPersons once their parents.
            return Deny("R07", 422, "invalid", birth_problem, None, ("Patient.birthDate",))
    if resource_type == "Patient":
        refused = inactive_but_open(new) if new is not None else None
        return refused or (record_status_change(old, new) if old is not None else None)
    if new is None:
        return None
    if record is None:
        # R07: a representative is a RelatedPerson naming a known Patient by a local
        # reference (`record._is_representative`); one naming its patient by identifier, a
        # contained or a foreign reference or an unknown id was stored and counted for no
        # record (decided here: refused, as a Consent naming no known patient is).
        return unknown_patient(422, "processing")
    if old is not None and compartment_of(new) != compartment_of(old):
        # R06, R07: a RelatedPerson is one patient's for its whole life (its history, its
        # events, the credentials naming it); re-pointed, a minor's parent became, with the
        # same credentials, another family's child's representative. Another guardianship
        # is another RelatedPerson.
        return Deny(
            "R07", 422, "processing", "A RelatedPerson cannot be moved to another patient's record"
        )
    return None


def invisible_patient_written(document: dict | None) -> Deny | None:
    """R14: the refusal of a patient's or a representative's document carrying
    INVISIBLE_PATIENT, or None.

    The label is a professional's, lifted by a practitioner after the medical announcement.
    Written by a representative, it planted on a minor's record a document the minor never
    sees and no one of the family can change or delete (it hides it from its writer too);
    written by a patient, a document of their own they could no longer read, change or
    delete (decided here: refused)."""
    if document is not None and INVISIBLE_PATIENT in dmp_labels(document):
        return forbidden(
            "R14",
            "INVISIBLE_PATIENT is set by a professional, never by the patient or their "
            "representative",
        )
    return None


def inactive_but_open(patient: dict) -> Deny | None:
    """R03: the refusal of a Patient written `active: false` whose record-status is open
    (or absent), or None.

    PDSm4DMP's TD0.2 tells a closed record by `Patient.active` false (the server answers it
    so, `service.existence_check`); the rules read the record-status extension only. A feed
    closing a record the guide's way left it open to every reader and depositor (decided
    here: the contradiction is refused rather than read either way; the record is closed by
    its record-status, R03). `active: true` on a closed record is read as closed."""
    if patient.get("active") is False and record_status(patient) == RECORD_OPEN:
        return Deny(
            "R03",
            422,
            "business-rule",
            "Patient.active is false but the record is open: a record is closed by its "
            "record-status extension ('closed'), which the access rules read",
            None,
            ("Patient.active",),
        )
    return None


def identity_write(requester: Requester, interaction: str) -> Decision:
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


def _modifier_extension_path(node: object, path: str) -> str | None:
    """The FHIRPath of the first `modifierExtension` in `node` (a Patient or RelatedPerson,
    contained resources and extensions included), or None."""
    if isinstance(node, list):
        for index, item in enumerate(node):
            found = _modifier_extension_path(item, f"{path}[{index}]")
            if found is not None:
                return found
        return None
    if not isinstance(node, dict):
        return None
    if "modifierExtension" in node:
        return f"{path}.modifierExtension"
    for key, child in node.items():
        if isinstance(child, dict | list):
            found = _modifier_extension_path(child, f"{path}.{key}")
            if found is not None:
                return found
    return None
