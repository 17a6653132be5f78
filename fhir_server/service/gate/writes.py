"""Write decisions: scopes (R02), the patient binding, the one record a write is judged on,
the policy's answer (R06-R15), and secure messaging's checks on a new message.

Every refusal is audited before it is raised (R16); the Permit is returned to the caller,
who hands it to `after_write` with the stored version (its notes say what to notify).
"""

from __future__ import annotations

import re
from dataclasses import replace

from fhir_server.access.constraints import compartment_of
from fhir_server.access.decision import Deny, Permit
from fhir_server.access.ownership import owner_id
from fhir_server.access.record import INS_SYSTEMS
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import security_labels_of
from fhir_server.errors import FhirError, error
from fhir_server.resources.references import reference_target
from fhir_server.search.query import Everything, InCompartment, Node
from fhir_server.service.deposit import deposited_document
from fhir_server.service.gate.common import INTERNAL_PERMIT, GateCore


class WriteGate(GateCore):
    """`authorize_write`."""

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
        scope_node = self._check_scopes(requester, resource_type, interaction)
        self._check_write_scope_context(requester, interaction, resource_type, scope_node, new, old)
        self._check_write_binding(requester, interaction, resource_type, new, old)
        subject = new if new is not None else old
        patients = sorted(compartment_of(subject)) if subject else []
        if resource_type == "Patient" and subject is not None and subject.get("id"):
            patients = [subject["id"]]
        if len(patients) > 1 and new is not None:
            # The record a write is judged on is the one record the resource belongs to: a
            # second Patient (in `author`, `source`, `recipient`...) would let a writer pick
            # the record their write is judged on (issue #18, finding 4).
            raise self._unprocessable(
                requester,
                interaction,
                resource_type,
                patients,
                old,
                "R06",
                f"a {resource_type} belongs to one patient's record; this one names "
                f"{len(patients)} Patients",
            )
        record, epoch = self.judged_record(patients[0]) if patients else (None, None)
        decision = self.policy.decide_write(
            requester, interaction, resource_type, new, old, record, self.follow
        )
        if isinstance(decision, Deny):
            traced, labels = patients, security_labels_of(old) if old else ()
            if resource_type == "Binary" and not patients and subject is not None:
                traced, labels = self._owner_record(subject)
            self.audit.refusal(
                requester,
                interaction,
                traced,
                decision.rule,
                resource_type=resource_type,
                labels=labels,
            )
            raise decision.to_error()
        # After the policy: answered before it, the refusal told a writer the record may
        # refuse whether an INS is the patient's.
        if new is not None and record is not None and resource_type != "Patient":
            stray = _other_patient_ins(new, record.ins)
            if stray is not None:
                raise self._unprocessable(
                    requester,
                    interaction,
                    resource_type,
                    patients,
                    old,
                    "R04",
                    f"{resource_type}.{stray}.identifier is an INS that is not the INS of the "
                    f"patient whose record this {resource_type} is in: a reference names one "
                    "patient (R04)",
                )
        if resource_type == "Communication" and new is not None and old is None:
            try:
                self.facts.check_message(self.policy, requester, new, record)
            except FhirError:
                self.audit.refusal(
                    requester, interaction, patients, "messaging", resource_type=resource_type
                )
                raise
        # Last: a message naming another record's Patient is refused by its own check (400).
        stray = (
            _other_patient_reference(new, patients[0])
            if new is not None and len(patients) == 1 and resource_type != "Patient"
            else None
        )
        if stray is not None:
            raise self._unprocessable(
                requester,
                interaction,
                resource_type,
                patients,
                old,
                "R06",
                f"{resource_type}.{stray}.reference names a Patient other than the one whose "
                f"record this {resource_type} is in, or a Patient in a spelling the rules "
                "cannot read: a resource names one patient (R06)",
            )
        if epoch is not None:
            # Confirmed by the write's transaction, on the facts it commits on (R09, R10).
            return replace(decision, decided_on=((patients[0], epoch),))
        return decision

    def _unprocessable(
        self,
        requester: Requester,
        interaction: str,
        resource_type: str,
        patients: list[str],
        old: dict | None,
        rule: str,
        message: str,
    ) -> FhirError:
        """A write refused for what the resource says (422 naming `rule`), traced in the
        record's trail with the labels of the version it would replace (R16, R18)."""
        self.audit.refusal(
            requester,
            interaction,
            patients,
            rule,
            resource_type=resource_type,
            labels=security_labels_of(old) if old else (),
        )
        return error(422, "processing", message, details_code=rule)

    def _owner_record(self, binary: dict) -> tuple[list[str], tuple]:
        """(the patients, the labels) of the DocumentReference owning `binary`, as the deposit
        writes it or as stored, for the event of a refused write of it (R16). A Binary is of
        no compartment: the refusal of an insurer's or an occupational health service's
        deposit (R05), whose Binary is judged first, was traced in no record's trail, so the
        patient never saw it. With the document's labels, it is hidden from whom the
        document is (R14, R18)."""
        owner = owner_id(binary)
        if owner is None:
            return [], ()
        document = deposited_document(owner)
        if document is None:
            found = self.facts.current("DocumentReference", owner)
            document = None if found is None or found.deleted else found.json()
        if document is None:
            return [], ()
        return sorted(compartment_of(document)), security_labels_of(document)

    def _check_write_scope_context(
        self,
        requester: Requester,
        interaction: str,
        resource_type: str,
        scope_node: Node,
        new: dict | None,
        old: dict | None,
    ) -> None:
        """When only `patient/` scopes grant the write, what it writes (and what it changes)
        must be in no other compartment than the patient in context's; with no patient in
        context, no write is. The scope's node was computed and dropped: a practitioner holding
        `patient/*.cruds` with no patient in context wrote in any record."""
        if isinstance(scope_node, Everything):
            return
        patients: set[str] = set()
        for resource in (new, old):
            if resource is not None:
                patients |= set(compartment_of(resource))
                if resource_type == "Patient" and resource.get("id"):
                    patients.add(resource["id"])
        # A resource of no patient (a Binary, judged with the document that owns it) is
        # left to the rules when there is a patient in context.
        inside = isinstance(scope_node, InCompartment) and patients <= {scope_node.patient_id}
        if inside:
            return
        self.audit.refusal(
            requester, interaction, sorted(patients), "R02", resource_type=resource_type
        )
        raise error(
            403,
            "forbidden",
            f"the token's patient/ scopes allow {interaction} on {resource_type} in the record"
            " of the patient in context only",
            details_code="R02",
        )


def _other_patient_ins(resource: dict, own: tuple[tuple[str, str], ...]) -> str | None:
    """The path of a Reference in `resource` whose `identifier` is an INS other than the
    record's own (`own`), or None.

    The record a write is bound to is read from literal references (`compartment_of`); a
    Reference's `identifier` is read by no rule. An INS there that is not the record's (a
    subject `Patient/A` with B's INS, a logical `author` naming B) was stored in A's record
    and served to its readers as naming B, and `patient:identifier=` found it under B's INS:
    one Reference, one patient, or it is refused (fail closed). Contained resources are
    left out: a contained Patient is the source's identity (`context.sourcePatientInfo`),
    which may carry a local identifier of the patient."""
    stack: list[tuple[object, str]] = [(resource, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, list):
            stack.extend((item, path) for item in node)
        elif isinstance(node, dict):
            identifier = node.get("identifier")
            if (
                path
                and isinstance(identifier, dict)
                and identifier.get("system") in INS_SYSTEMS
                and (identifier.get("system"), identifier.get("value")) not in own
            ):
                return path
            for key, value in node.items():
                if key != "contained" and isinstance(value, dict | list):
                    stack.append((value, f"{path}.{key}" if path else key))
    return None


# A literal that names a Patient however spelled (any case, spaces, after a `/`): read by no
# rule when it is not `Patient/<id>` exactly (`reference_target`).
_NAMES_A_PATIENT = re.compile(r"(?:^|[/\s])patient\s*/", re.IGNORECASE)


def _other_patient_reference(resource: dict, own: str) -> str | None:
    """The path of a literal Reference in `resource` naming a Patient of this server other
    than `own`, or a Patient in a relative spelling the rules cannot read, or None.

    The record a write is bound to is read from the compartment's references
    (`compartment_of`: a DocumentReference's `subject` and `author`); a second Patient there
    is refused (R06), but not elsewhere, nor spelled otherwise: `author` `Patient/B\n`,
    `Patient/B/` or `patient/B`, an `authenticator` or `context.encounter` `Patient/B`, were
    stored in A's record and served to its readers as naming B. One resource, one patient
    (fail closed). References to another server (absolute, still so after the normal form),
    to contained resources and Bundle-local URNs name no Patient of this server."""
    stack: list[tuple[object, str]] = [(resource, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, list):
            stack.extend((item, path) for item in node)
        elif isinstance(node, dict):
            literal = node.get("reference")
            if path and isinstance(literal, str):
                target = reference_target(literal)
                if target is not None:
                    if target[0] == "Patient" and target[1] != own:
                        return path
                elif (
                    "://" not in literal
                    and not literal.startswith(("#", "urn:"))
                    and _NAMES_A_PATIENT.search(literal)
                ):
                    return path
            for key, value in node.items():
                if key != "contained" and isinstance(value, dict | list):
                    stack.append((value, f"{path}.{key}" if path else key))
    return None
