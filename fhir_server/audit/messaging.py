"""Secure messaging between professionals and the patient, as Communication resources.

A practitioner writes to a patient (or to another practitioner about a patient); the patient,
or a representative of a minor, answers with ``inResponseTo``. Documents are attached by
reference to a DocumentReference of the record (``payload.contentReference``), never inlined,
so that they stay under the record's access rules. Messages are Communications with category
``message`` in :data:`~fhir_server.audit.notifications.SYSTEM_COMMUNICATION_CATEGORY`; the
server's notifications (category ``notification``) share the resource type and are read by the
same rules here.

Participants are compared as keys: ``Patient/<id>``, ``RelatedPerson/<id>``,
``Practitioner/<IdNat_PS>`` (a practitioner is named either by an identifier in the IdNat_PS
system or by a reference whose id is the IdNat_PS, as :attr:`Requester.reference` does) and
``Organization/<IdNat_Struct>`` (an organisational mailbox, such as a pharmacy's, named by its
IdNat_Struct identifier; a practitioner whose token names the organization acts for it).
Recipients that are practitioners or organizations must be given by identifier: they are not
stored as resources.

A message whose category names no code of ours is a message: the server adds
:data:`MESSAGE_CATEGORY` (:func:`fill_default_category`) instead of refusing it, since only the
server writes the other kind (notifications). Conversations (who opens one, closing it) are
described in :mod:`fhir_server.audit.conversations`.

Issues use IssueType ``forbidden`` when the requester may not send the message as written
(403), and ``required`` / ``value`` / ``invalid`` for a malformed message (400).
"""

from __future__ import annotations

import copy
import re
from collections.abc import Collection, Mapping
from datetime import UTC, datetime

from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.conversations import (
    CATEGORY_CLOSURE,
    RULE_INITIATIVE,
    organization_key,
)
from fhir_server.audit.notifications import (
    CATEGORY_MESSAGE,
    CATEGORY_NOTIFICATION,
    EXT_NOTIFICATION_FACT,
    SYSTEM_COMMUNICATION_CATEGORY,
)
from fhir_server.errors import Issue
from fhir_server.resources.references import NAMES_A_RECORD_ITEM, reference_target
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
)

MESSAGE_CATEGORY = {
    "coding": [
        {
            "system": SYSTEM_COMMUNICATION_CATEGORY,
            "code": CATEGORY_MESSAGE,
            "display": "Message",
        }
    ]
}


# --- participants -------------------------------------------------------------------------------


def participant_key(reference: Mapping | None) -> str | None:
    """``Patient/x``, ``RelatedPerson/x``, ``Practitioner/<IdNat>`` or
    ``Organization/<IdNat_Struct>`` for a Reference, or None."""
    if not isinstance(reference, Mapping):
        return None
    organization = organization_key(reference)
    if organization:
        return organization
    ref = reference.get("reference")
    if isinstance(ref, str) and ref:
        # Read as the index and the access rules read it (`resources.references`): a
        # reference to another server, or spelled loosely (a trailing slash), names no
        # participant here; its last two segments were taken for one, which the index and
        # the readers never matched (a message "to the patient" they never saw).
        target = reference_target(ref)
        if target is not None and target[0] in {"Patient", "RelatedPerson", "Practitioner"}:
            return f"{target[0]}/{target[1]}"
        return None
    identifier = reference.get("identifier")
    if (
        isinstance(identifier, Mapping)
        and identifier.get("system") == SYSTEM_IDNAT_PS
        and identifier.get("value")
        and reference.get("type", "Practitioner") == "Practitioner"
    ):
        return f"Practitioner/{identifier['value']}"
    return None


def sender_key(communication: Mapping) -> str | None:
    return participant_key(communication.get("sender"))


def recipient_keys(communication: Mapping) -> set[str]:
    keys = (participant_key(r) for r in communication.get("recipient", []) or [])
    return {k for k in keys if k}


def subject_patient(communication: Mapping) -> str | None:
    key = participant_key(communication.get("subject"))
    return key.split("/", 1)[1] if key and key.startswith("Patient/") else None


def acting_keys(requester: Requester) -> frozenset[str]:
    """The participant keys ``requester`` writes and reads as: themselves, and for a
    practitioner the organization their token names (its organisational mailbox)."""
    structure = requester.structure_idnat
    own = {requester.reference}
    if structure:
        own.add(f"Organization/{structure}")
    return frozenset(own)


def fill_default_category(communication: dict) -> None:
    """Make a Communication that names no category of ours a message (in place).

    Clients write messages only (notifications are the server's), so a missing category has
    one meaning; other categories the client gave (e.g. HL7 communication-category) are kept.
    """
    if category_codes(communication) & {CATEGORY_MESSAGE, CATEGORY_NOTIFICATION}:
        return
    categories = communication.get("category")
    if not isinstance(categories, list):
        categories = []
    communication["category"] = [*categories, copy.deepcopy(MESSAGE_CATEGORY)]


def category_codes(communication: Mapping) -> set[str]:
    return {
        coding.get("code")
        for concept in communication.get("category", []) or []
        for coding in concept.get("coding", []) or []
        if coding.get("system") == SYSTEM_COMMUNICATION_CATEGORY
    }


# --- validation ---------------------------------------------------------------------------------


def validate_message(
    requester: Requester,
    communication: Mapping,
    *,
    represented_patients: Collection[str] | None = None,
    representatives_of_patient: Collection[str] | None = None,
    pharmacies_of_patient: Collection[str] = (),
) -> list[Issue]:
    """What is wrong with a message ``requester`` wants to send; empty when it may be stored.

    Checks: category message; status completed; the sender is the requester; the subject is a
    Patient (the patient themselves when a patient writes; one they represent, from
    ``represented_patients`` or the token's patient, when a representative writes);
    recipients are the subject patient, RelatedPersons (members of
    ``representatives_of_patient`` when given), practitioners by IdNat_PS identifier or
    organizations by IdNat_Struct identifier; patients and representatives write only to
    professionals, and open a conversation (no ``inResponseTo``) only with one of
    ``pharmacies_of_patient`` (MSS-C); only professionals close a conversation, by answering
    with the closure category; ``partOf`` is the server's; payloads are text or references to
    DocumentReferences; ``received`` is left to the server. The server's own notifications are
    sent by the server (INTERNAL requester) only.
    """
    issues: list[Issue] = []

    def err(code: str, text: str, where: str, rule: str | None = None) -> None:
        issues.append(
            Issue(
                "error",
                code,
                text,
                (f"Communication.{where}" if where else "Communication",),
                details_code=rule,
            )
        )

    if communication.get("resourceType") != "Communication":
        err("invalid", "a message is a Communication resource", "")
        return issues
    if requester.kind == ActorKind.SYSTEM:
        err("forbidden", "systems do not send messages", "sender")
        return issues

    categories = category_codes(communication)
    if requester.kind != ActorKind.INTERNAL and (
        CATEGORY_NOTIFICATION in categories or _looks_like_a_notification(communication)
    ):
        # R17: a notification is the server's, however it is spelled (our category, the HL7
        # one a notification carries for generic clients, its facts' extension); a client's
        # message coded so was listed with the server's notifications.
        err("forbidden", "only the server writes notifications", "category")
    elif CATEGORY_MESSAGE not in categories and requester.kind != ActorKind.INTERNAL:
        err(
            "value",
            f"category must include {SYSTEM_COMMUNICATION_CATEGORY}|{CATEGORY_MESSAGE}",
            "category",
        )
    if communication.get("status") != "completed":
        err("value", "a sent message has status 'completed'", "status")

    if requester.kind != ActorKind.INTERNAL:
        sender = sender_key(communication)
        if sender is None:
            err("required", "the sender is required", "sender")
        elif sender not in acting_keys(requester):
            err(
                "forbidden",
                "the sender must be the author of the request (or the organization they act for)",
                "sender",
            )

    patient_id = subject_patient(communication)
    if patient_id is None:
        err("required", "the subject must be the Patient the message is about", "subject")
    elif requester.kind == ActorKind.PATIENT and patient_id != requester.subject_id:
        err("forbidden", "a patient writes only about their own record", "subject")
    elif requester.kind == ActorKind.REPRESENTATIVE:
        allowed = set(represented_patients or ())
        if requester.patient_id:
            allowed.add(requester.patient_id)
        if patient_id not in allowed:
            err(
                "forbidden",
                "a representative writes only about the patient they represent",
                "subject",
            )

    recipients = communication.get("recipient") or []
    if not recipients:
        err("required", "at least one recipient is required", "recipient")
    answering = requester.kind in (ActorKind.PATIENT, ActorKind.REPRESENTATIVE)
    for i, recipient in enumerate(recipients):
        where = f"recipient[{i}]"
        key = participant_key(recipient)
        if key is None:
            err(
                "value",
                "a recipient is a Patient, a RelatedPerson, a practitioner by IdNat_PS identifier "
                "or an organization by IdNat_Struct identifier",
                where,
            )
        elif key.startswith("Practitioner/") and "identifier" not in recipient:
            err("value", "address practitioners by their IdNat_PS identifier", where)
        elif answering and not key.startswith(("Practitioner/", "Organization/")):
            err("forbidden", "patients and representatives write only to professionals", where)
        elif (
            key.startswith("Patient/") and patient_id is not None and key != f"Patient/{patient_id}"
        ):
            err("forbidden", "a message about a patient is addressed to that patient only", where)
        elif (
            key.startswith("RelatedPerson/")
            and representatives_of_patient is not None
            and key.split("/", 1)[1] not in representatives_of_patient
        ):
            err("forbidden", "this RelatedPerson does not represent the patient", where)

    in_response_to = communication.get("inResponseTo") or []
    if answering and not in_response_to:
        outside = [
            i
            for i, recipient in enumerate(recipients)
            if participant_key(recipient) not in pharmacies_of_patient
        ]
        if outside or not recipients:
            err(
                "forbidden",
                "MSSanté citoyenne: only a professional opens a conversation with a patient; "
                "the patient (or their representative) answers it, and writes first only to "
                "one of their pharmacies (Patient extension patient-preferredPharmacy)",
                "inResponseTo",
                RULE_INITIATIVE,
            )
    if CATEGORY_CLOSURE in categories:
        if requester.kind not in (ActorKind.PRACTITIONER, ActorKind.INTERNAL):
            err(
                "forbidden",
                "MSSanté citoyenne: only a professional of the conversation closes it",
                "category",
            )
        elif not in_response_to:
            err(
                "required",
                "a closing message answers a message of the conversation it closes",
                "inResponseTo",
            )
    if communication.get("partOf") and not in_response_to:
        err(
            "value",
            "partOf is set by the server on answers (the conversation's first message); "
            "a message that opens a conversation has none",
            "partOf",
        )
    for i, ref in enumerate(in_response_to):
        target = ref.get("reference", "") if isinstance(ref, Mapping) else ""
        if not target.startswith("Communication/"):
            err("value", "inResponseTo references a Communication", f"inResponseTo[{i}]")

    for where, reference in _participants(communication):
        if (
            isinstance(reference, Mapping)
            and reference.get("reference")
            and reference.get("identifier")
        ):
            # Read two ways: the rules judged the literal reference (sender_key) and the
            # readers matched the identifier too (`policy.references.party_of_message`), so
            # a message sent in one's own name was read as, and by, whom the identifier named.
            err(
                "value",
                "a participant is named once: by its reference or by its identifier, not both",
                where,
            )
    issues.extend(_named_elsewhere_issues(communication))

    if communication.get("contained"):
        # A document inlined as a contained resource escapes the record's rules as a
        # `contentAttachment` would: its labels were not the message's, its content was
        # served to every recipient.
        err(
            "value",
            "a message contains no resource: attach documents by referencing their "
            "DocumentReference",
            "contained",
        )

    payloads = communication.get("payload") or []
    if not payloads:
        err("required", "a message has at least one payload", "payload")
    for i, payload in enumerate(payloads):
        where = f"payload[{i}]"
        if "contentAttachment" in payload:
            err("value", "attach documents by referencing their DocumentReference", where)
        elif "contentReference" in payload:
            target = payload["contentReference"].get("reference", "")
            if not target.startswith("DocumentReference/"):
                err("value", "attachments reference a DocumentReference", where)
        elif not str(payload.get("contentString", "")).strip():
            err("required", "a text payload cannot be empty", where)

    if "received" in communication:
        err("invalid", "'received' is set by the server when the recipient reads it", "received")
    return issues


def _looks_like_a_notification(communication: Mapping) -> bool:
    """Whether a Communication carries a mark of the server's notifications other than our
    category: a category coded ``notification`` under any system, or none (the HL7
    ``communication-category#notification`` a notification carries for generic clients, a
    near miss of ours), or the facts' extension (:data:`EXT_NOTIFICATION_FACT`)."""
    for concept in communication.get("category") or []:
        for coding in (concept.get("coding") if isinstance(concept, Mapping) else None) or []:
            code = coding.get("code") if isinstance(coding, Mapping) else None
            if isinstance(code, str) and code.strip().lower() == CATEGORY_NOTIFICATION:
                return True
    return any(
        isinstance(extension, Mapping) and extension.get("url") == EXT_NOTIFICATION_FACT
        for key in ("extension", "modifierExtension")
        for extension in communication.get(key) or []
    )


# The References of a message judged as its parties, its thread and its attachments (above
# and in `service.messaging.check_message`), by FHIRPath; any other is `named_documents`' or
# refused. Their insides (an extension of a payload, an Identifier's assigner) are looked at.
_JUDGED_REFERENCE = re.compile(
    r"^(subject|sender|recipient\[\d+\]|inResponseTo\[\d+\]|partOf\[\d+\]"
    r"|payload\[\d+\]\.contentReference)$"
)


def _participants(communication: Mapping) -> list[tuple[str, object]]:
    found: list[tuple[str, object]] = [
        ("subject", communication.get("subject")),
        ("sender", communication.get("sender")),
    ]
    recipients = communication.get("recipient")
    if isinstance(recipients, list):
        found += [(f"recipient[{i}]", r) for i, r in enumerate(recipients)]
    return found


def named_documents(communication: Mapping) -> list[tuple[str, str]]:
    """(FHIRPath, id) of every DocumentReference the message names outside its payload
    (``about``, ``basedOn``, an extension's ``valueReference``...): a message about a
    document, however it says so, is judged and labelled as one attaching it."""
    found: list[tuple[str, str]] = []
    for path, reference in _other_references(communication, with_logical=True):
        target = reference_target(reference.get("reference"))
        if target is not None and target[0] == "DocumentReference":
            found.append((path, target[1]))
    return found


def _named_elsewhere_issues(communication: Mapping) -> list[Issue]:
    """What a message names outside its parties, thread and payload that the rules cannot
    judge: a reference to a resource of this server other than a DocumentReference (another
    Patient, a Binary, a List...), one to a contained resource or by identifier only (a
    document's uniqueId is as much its name as its id). Refused rather than stored: served
    to the recipients, it named what may be hidden from them, in another record even."""
    issues: list[Issue] = []
    for path, reference in _other_references(communication, with_logical=True):
        literal = reference.get("reference")
        if literal is None:
            text = "a message names resources by literal reference only, not by identifier"
        elif not isinstance(literal, str) or literal.startswith("#"):
            text = "a message names no contained resource"
        else:
            target = reference_target(literal)
            if target is None and NAMES_A_RECORD_ITEM.search(literal):
                # `documentreference/<id>`, `DocumentReference/<id>/`, another base...: not
                # read as a document, the message was not judged nor labelled as naming
                # one, and was served with the id of a document masked from its recipient.
                text = "a message names a document by a relative literal reference only"
            elif target is None or target[0] == "DocumentReference":
                continue  # foreign (names nothing here), or a document judged as attached
            else:
                text = (
                    "besides its parties and its thread, a message names only documents of "
                    f"its record (DocumentReference), not {target[0]}"
                )
        issues.append(Issue("error", "value", text, (f"Communication.{path}",)))
    return issues


def _other_references(
    communication: Mapping, *, with_logical: bool = False
) -> list[tuple[str, Mapping]]:
    """(FHIRPath, Reference) outside the judged References and contained resources; with
    `with_logical`, also a Reference given by identifier alone, and an Attachment whose
    `url` is a local reference (as a Reference whose `reference` is that url)."""
    found: list[tuple[str, Mapping]] = []

    def walk(node: object, path: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")
        elif isinstance(node, Mapping):
            if not _JUDGED_REFERENCE.match(path):
                if "reference" in node or (
                    with_logical and "identifier" in node and _reference_shaped(node)
                ):
                    found.append((path, node))
                elif with_logical and reference_target(node.get("url")) is not None:
                    # An Attachment pointing at this server (`Binary/<id>`): a Binary is
                    # read as its document, never named by a message.
                    found.append((path, {"reference": node["url"]}))
            for key, value in node.items():
                walk(value, f"{path}.{key}")

    for key, value in communication.items():
        if key != "contained":
            walk(value, key)
    return found


def _reference_shaped(node: Mapping) -> bool:
    """A Reference by identifier: only the elements of a Reference, its identifier an
    Identifier (not an element `identifier` of something else)."""
    return set(node) <= {"id", "extension", "reference", "type", "identifier", "display"} and (
        isinstance(node.get("identifier"), Mapping)
    )


def validate_reply(
    reply: Mapping, original: Mapping, acting_for: Collection[str] = ()
) -> list[Issue]:
    """What is wrong with ``reply`` as an answer to ``original`` (the inResponseTo target).

    The caller has already checked (with :func:`may_read_message` and the policy's read of
    it, `service.messaging.check_message`) that the sender may read the original. A reply stays about the same patient, comes from a participant of the original
    (the sender, or one of ``acting_for``: the keys the author acts as, e.g. the pharmacy a
    pharmacist answers for) and goes only to its participants; notifications are not answered.
    """
    issues: list[Issue] = []
    participants = recipient_keys(original) | ({sender_key(original)} - {None})
    if CATEGORY_MESSAGE not in category_codes(original):
        issues.append(
            Issue(
                "error",
                "forbidden",
                "only messages can be answered",
                ("Communication.inResponseTo",),
            )
        )
    if subject_patient(reply) != subject_patient(original):
        issues.append(
            Issue("error", "value", "a reply is about the same patient", ("Communication.subject",))
        )
    if sender_key(reply) not in participants and not set(acting_for) & participants:
        issues.append(
            Issue("error", "forbidden", "only a participant can answer", ("Communication.sender",))
        )
    for i, recipient in enumerate(reply.get("recipient", []) or []):
        if participant_key(recipient) not in participants:
            issues.append(
                Issue(
                    "error",
                    "forbidden",
                    "a reply goes to the participants of the message it answers",
                    (f"Communication.recipient[{i}]",),
                )
            )
    return issues


# --- reading ------------------------------------------------------------------------------------


def may_read_message(
    requester: Requester,
    communication: Mapping,
    representatives_of_patient: Collection[str],
    patient_is_minor: bool,
) -> bool:
    """Whether ``requester`` may read a message or notification.

    Messages: the sender and the recipients; a representative of the subject patient (minor,
    R07) also reads what the patient sends and receives, except messages labelled
    INVISIBLE_REPRESENTANTS_LEGAUX. Notifications: the patient (not when labelled
    INVISIBLE_PATIENT) and the representatives of a minor (not when labelled
    INVISIBLE_REPRESENTANTS_LEGAUX or INVISIBLE_PATIENT). Practitioners read only messages they
    sent or received; systems read none; the server reads all.
    """
    if requester.kind == ActorKind.INTERNAL:
        return True
    if requester.kind == ActorKind.SYSTEM:
        return False
    labels = _dmp_labels(communication)
    categories = category_codes(communication)
    patient_id = subject_patient(communication)
    is_representative = (
        requester.kind == ActorKind.REPRESENTATIVE
        and patient_is_minor
        and requester.subject_id in representatives_of_patient
    )

    if CATEGORY_NOTIFICATION in categories:
        if patient_id is None:
            return False
        if requester.kind == ActorKind.PATIENT:
            return requester.subject_id == patient_id and INVISIBLE_PATIENT not in labels
        if is_representative:
            return not labels & {INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX}
        return False

    if CATEGORY_MESSAGE not in categories:
        return False
    participants = recipient_keys(communication) | ({sender_key(communication)} - {None})
    if requester.kind == ActorKind.REPRESENTATIVE:
        if not is_representative or INVISIBLE_REPRESENTANTS_LEGAUX in labels:
            return False
        return requester.reference in participants or f"Patient/{patient_id}" in participants
    return bool(acting_keys(requester) & participants)


def mark_received(
    communication: Mapping,
    now: datetime,
    *,
    reader: Requester | None = None,
    reader_represents: Collection[str] = (),
) -> dict | None:
    """A copy with ``received`` set when a recipient first reads it; None when nothing changes.

    With ``reader``, only a recipient's reading counts (a representative counts for the patient
    ids in ``reader_represents``, i.e. the minors they act for); the sender re-reading their own
    message does not. Without ``reader``, the caller has decided it is a recipient's read.
    """
    if communication.get("received"):
        return None
    if reader is not None:
        recipients = recipient_keys(communication)
        acting_as = set(acting_keys(reader))
        if reader.kind == ActorKind.REPRESENTATIVE:
            acting_as |= {f"Patient/{p}" for p in reader_represents}
        if not recipients & acting_as:
            return None
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    updated = copy.deepcopy(dict(communication))
    updated["received"] = now.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    return updated


def _dmp_labels(resource: Mapping) -> set[str]:
    return {
        c.get("code")
        for c in resource.get("meta", {}).get("security", []) or []
        if c.get("system") == SYSTEM_DMP_CONFIDENTIALITY
    }
