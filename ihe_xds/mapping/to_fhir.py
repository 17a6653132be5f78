"""ebRIM -> FHIR (ITI-41 deposit): a validated Submission and its documents as MHD resources.

`submission_to_fhir` gives plain FHIR JSON dicts: one List (MHD SubmissionSet), one
DocumentReference per DocumentEntry, one Binary per document, and the transaction Bundle
holding them. The decisions it follows (ids, availability, authors, relationships, extra
metadata) are listed in the package docstring (`ihe_xds.mapping`); `from_fhir` reads back
what this module writes.
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pybase64

from fhir_server.resources.document_state import set_archived
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    SYSTEM_MHD_LIST_TYPES,
    SYSTEM_RFC3986,
)
from ihe_xds import association_documentation, extra_metadata
from ihe_xds.codes import (
    OID_TRE_A07,
    is_oid,
    system_for_scheme,
)
from ihe_xds.ebrim import (
    Coded,
    DocumentEntry,
    Slot,
    Submission,
    SubmissionSet,
)
from ihe_xds.errors import (
    XDS_REPOSITORY_METADATA_ERROR,
    XDS_UNKNOWN_PATIENT_ID,
    RegistryError,
    registry_error,
)
from ihe_xds.hl7v2 import (
    parse_cx,
    xds_time_to_fhir,
)
from ihe_xds.mapping.list_parties import authors_to_list, recipients_to_list
from ihe_xds.mapping.parties import author_to_resources, id_type_concept, xcn_to_practitioner
from ihe_xds.mapping.terms import (
    AVAILABILITY_SYSTEM,
    EXT_DESIGNATION_TYPE,
    EXT_SOURCE_ID,
    RELATES_TO,
)
from ihe_xds.vocabulary import (
    ASSOC_HAS_MEMBER,
    REPLACING_RELATIONSHIPS,
    STATUS_APPROVED,
    STATUS_ARCHIVED,
    STATUS_DELETED,
    STATUS_DEPRECATED,
)

MASKING_CODES = (MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX)

_STATUS_TO_FHIR = {
    STATUS_APPROVED: ("current", None),
    STATUS_DEPRECATED: ("superseded", None),
    STATUS_ARCHIVED: ("current", None),  # the PDSm_IsArchived extension (_document_reference)
    STATUS_DELETED: ("entered-in-error", "Deleted"),
}
_GENDER = {"M": "male", "F": "female", "U": "unknown", "A": "other", "O": "other"}

ResolvePatient = Callable[[str, str], "str | None"]
ResolveDocument = Callable[[str], "str | None"]


@dataclass(slots=True)
class FhirSubmission:
    """The FHIR side of one ITI-41 submission, ready for one atomic transaction."""

    list_resource: dict | None = None
    document_references: list[dict] = field(default_factory=list)
    binaries: list[dict] = field(default_factory=list)
    bundle: dict | None = None
    entry_uuids: dict[str, str] = field(default_factory=dict)  # submitted id -> entryUUID
    resource_ids: dict[str, str] = field(default_factory=dict)  # submitted id -> resource id
    replaced: list[str] = field(default_factory=list)  # entryUUIDs that become superseded
    patient_ids: set[str] = field(default_factory=set)  # resolved Patient ids
    errors: list[RegistryError] = field(default_factory=list)


def fhir_availability(status: str) -> tuple[str, dict | None]:
    """(DocumentReference.status, meta.tag coding or None) for an ebRIM availability status."""
    fhir_status, tag = _STATUS_TO_FHIR.get(status, ("current", None))
    return fhir_status, ({"system": AVAILABILITY_SYSTEM, "code": tag} if tag else None)


def _new_id() -> str:
    return str(uuid.uuid4())


# --------------------------------------------------------------------------- small pieces


def _coding(coded: Coded) -> dict:
    coding = {"code": coded.code}
    system = system_for_scheme(coded.scheme)
    if system:
        coding = {"system": system, **coding}
    if coded.display:
        coding["display"] = coded.display
    return coding


def concept(coded: Coded) -> dict:
    """A Coded value as a CodeableConcept of one coding (also used by ITI-57 updates)."""
    return {"coding": [_coding(coded)]}


def _uri_for_unique_id(unique_id: str) -> dict:
    if is_oid(unique_id):
        return {"system": SYSTEM_RFC3986, "value": f"urn:oid:{unique_id}"}
    return {"value": unique_id}


def _cx_identifier(text: str) -> dict:
    """A CX (ID^^^&OID&ISO[^type]) as an Identifier; text that is no CX stays the value."""
    cx, _ = parse_cx(text)
    if cx is None:
        return {"value": text}
    identifier: dict[str, object] = {"system": f"urn:oid:{cx.authority_oid}", "value": cx.value}
    if cx.type_code:
        identifier["type"] = id_type_concept(cx.type_code)
    return identifier


def _source_patient(entry: DocumentEntry) -> dict | None:
    if not entry.source_patient_id and not entry.source_patient_info:
        return None
    patient: dict = {"resourceType": "Patient", "id": "source-patient"}
    identifiers = []
    seen = set()
    for text in [entry.source_patient_id] + [
        line[len("PID-3|") :] for line in entry.source_patient_info if line.startswith("PID-3|")
    ]:
        if text and text not in seen:
            seen.add(text)
            identifiers.append(_cx_identifier(text))
    if identifiers:
        patient["identifier"] = identifiers
    for line in entry.source_patient_info:
        field_name, _, value = line.partition("|")
        if not value:
            continue
        if field_name == "PID-5":
            c = value.split("^") + [""] * 5
            name: dict = {}
            if c[0]:
                name["family"] = c[0]
            given = [g for g in (c[1], c[2]) if g]
            if given:
                name["given"] = given
            if c[3]:
                name["suffix"] = [c[3]]
            if c[4]:
                name["prefix"] = [c[4]]
            patient.setdefault("name", []).append(name)
        elif field_name == "PID-7" and re.match(r"^\d{8}", value):
            patient["birthDate"] = f"{value[0:4]}-{value[4:6]}-{value[6:8]}"
        elif field_name == "PID-8" and value in _GENDER:
            patient["gender"] = _GENDER[value]
        elif field_name == "PID-11":
            c = value.split("^") + [""] * 6
            address: dict = {}
            lines = [x for x in (c[0], c[1]) if x]
            if lines:
                address["line"] = lines
            for key, part in (
                ("city", c[2]),
                ("state", c[3]),
                ("postalCode", c[4]),
                ("country", c[5]),
            ):
                if part:
                    address[key] = part
            patient.setdefault("address", []).append(address)
    return patient


def _related(text: str) -> dict:
    """A referenceIdList CXi (`id^^^&OID&ISO^type`) as a logical reference."""
    if "^" not in text:
        return {"identifier": {"value": text}}
    c = text.split("^") + [""] * 5
    identifier: dict = {"value": c[0]}
    authority = c[3].split("&") + ["", "", ""]
    if is_oid(authority[1]):
        identifier = {"system": f"urn:oid:{authority[1]}", **identifier}
    if c[4]:
        identifier["type"] = (
            {"coding": [{"system": SYSTEM_RFC3986, "code": c[4]}]}
            if ":" in c[4]
            else id_type_concept(c[4])
        )
    return {"identifier": identifier}


def _fhir_time(value: str | None) -> str | None:
    return xds_time_to_fhir(value) if value else None


def _instant(value: str | None) -> str | None:
    if not value or len(value) < 12:
        return None
    return xds_time_to_fhir(value)


def submission_to_fhir(
    submission: Submission,
    documents: dict[str, bytes],
    *,
    repository_unique_id: str,
    resolve_patient: ResolvePatient,
    resolve_document: ResolveDocument | None = None,
    entry_status: str = STATUS_APPROVED,
) -> FhirSubmission:
    """Map a validated submission to FHIR; `errors` is non-empty (and `bundle` None) when
    the patient is unknown or an entry names another repository.

    `resolve_patient(system_oid, value)` returns the Patient id for a patient CX, or None
    (-> XDSUnknownPatientId; the caller's resolver also returns None for opposed/closed
    records, R03). `resolve_document(entry_uuid)` optionally returns the DocumentReference id
    of an already stored entryUUID, for literal relatesTo references.
    """
    result = FhirSubmission()
    submission_set = submission.submission_set
    patients: dict[str, str | None] = {}

    def patient_of(cx_text: str | None, location: str) -> str | None:
        if not cx_text:
            return None
        if cx_text not in patients:
            cx, _ = parse_cx(cx_text)
            patients[cx_text] = resolve_patient(cx.authority_oid, cx.value) if cx else None
            if patients[cx_text] is None:
                result.errors.append(
                    registry_error(
                        XDS_UNKNOWN_PATIENT_ID,
                        f"patient {cx_text} is not known to the registry",
                        location,
                    )
                )
        return patients[cx_text]

    for entry in submission.entries:
        entry_uuid = entry.id if entry.id.startswith("urn:uuid:") else f"urn:uuid:{uuid.uuid4()}"
        result.entry_uuids[entry.id] = entry_uuid
        result.resource_ids[entry.id] = _new_id()
        if entry.repository_unique_id and entry.repository_unique_id != repository_unique_id:
            result.errors.append(
                registry_error(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"repositoryUniqueId {entry.repository_unique_id} is not this repository ({repository_unique_id})",
                    f"DocumentEntry {entry.id} repositoryUniqueId",
                )
            )
    if submission_set is not None:
        set_uuid = (
            submission_set.id
            if submission_set.id.startswith("urn:uuid:")
            else f"urn:uuid:{uuid.uuid4()}"
        )
        result.entry_uuids[submission_set.id] = set_uuid
        result.resource_ids[submission_set.id] = _new_id()
        patient_of(submission_set.patient_id, f"SubmissionSet {submission_set.id} patientId")
    for entry in submission.entries:
        patient_of(entry.patient_id, f"DocumentEntry {entry.id} patientId")
    if result.errors:
        return result
    result.patient_ids = {p for p in patients.values() if p}

    entries_by_id = {e.id: e for e in submission.entries}
    for entry in submission.entries:
        content = documents.get(entry.id, b"")
        digest = (
            submission.sha1(entry.id)
            if documents is submission.documents
            else hashlib.sha1(content).digest()  # noqa: S324 - XDS fixes SHA-1
        )
        binary_id = _new_id()
        doc_id = result.resource_ids[entry.id]
        relates_to = []
        for association in submission.associations:
            if association.source != entry.id or association.type not in RELATES_TO:
                continue
            if association.target in entries_by_id:
                target: dict[str, object] = {
                    "reference": f"DocumentReference/{result.resource_ids[association.target]}"
                }
            else:
                target = {"identifier": {"system": SYSTEM_RFC3986, "value": association.target}}
                known = resolve_document(association.target) if resolve_document else None
                if known:
                    target = {"reference": f"DocumentReference/{known}", **target}
                if association.type in REPLACING_RELATIONSHIPS:
                    result.replaced.append(association.target)
            extras = [
                *association_documentation.extensions_of(association),
                *extra_metadata.extensions_of(extra_metadata.association_extras(association)),
            ]
            relates_to += [
                {**({"extension": extras} if extras else {}), "code": code, "target": dict(target)}
                for code in RELATES_TO[association.type]
            ]
        result.document_references.append(
            _document_reference(
                entry,
                doc_id=doc_id,
                entry_uuid=result.entry_uuids[entry.id],
                patient_id=patients[entry.patient_id] if entry.patient_id else None,
                binary_id=binary_id,
                content=content,
                sha1=digest,
                relates_to=relates_to,
                status=entry_status,
            )
        )
        result.binaries.append(
            {
                "resourceType": "Binary",
                "id": binary_id,
                "contentType": entry.mime_type or "application/octet-stream",
                "securityContext": {"reference": f"DocumentReference/{doc_id}"},
                "data": pybase64.b64encode(content).decode("ascii"),  # SIMD: 1 MB in ~0.1 ms
            }
        )
    if submission_set is not None:
        result.list_resource = _list_resource(
            submission_set,
            list_id=result.resource_ids[submission_set.id],
            entry_uuid=result.entry_uuids[submission_set.id],
            patient_id=patients.get(submission_set.patient_id or ""),
            members=[
                (result.resource_ids[a.target], extra_metadata.association_extras(a))
                for a in submission.associations
                if a.type == ASSOC_HAS_MEMBER
                and a.source == submission_set.id
                and a.target in entries_by_id
            ],
        )
    result.bundle = _transaction(
        result.binaries + result.document_references + [r for r in [result.list_resource] if r]
    )
    return result


def _transaction(resources: list[dict]) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in resources
        ],
    }


def _document_reference(
    entry: DocumentEntry,
    *,
    doc_id: str,
    entry_uuid: str,
    patient_id: str | None,
    binary_id: str,
    content: bytes,
    sha1: bytes,
    relates_to: list[dict],
    status: str,
) -> dict:
    contained: list[dict] = []
    authors: list[dict] = []
    for index, author in enumerate(entry.authors):
        resources, references = author_to_resources(author, index)
        contained += resources
        authors += references
    fhir_status, tag = fhir_availability(status)
    doc: dict = {"resourceType": "DocumentReference", "id": doc_id}
    extensions = extra_metadata.extensions_of(entry.extra_slots)
    meta: dict = {}
    security = [
        _coding(c)
        for c in entry.confidentiality_codes
        if c.scheme == OID_TRE_A07 and c.code in MASKING_CODES
    ]
    if security:
        meta["security"] = security
    if tag:
        meta["tag"] = [tag]
    if meta:
        doc["meta"] = meta
    doc["contained"] = contained
    if extensions:
        doc["extension"] = extensions
    if entry.unique_id:
        doc["masterIdentifier"] = _uri_for_unique_id(entry.unique_id)
    doc["identifier"] = [{"use": "official", "system": SYSTEM_RFC3986, "value": entry_uuid}]
    doc["status"] = fhir_status
    if status == STATUS_ARCHIVED:
        set_archived(doc, True)
    if entry.type_code:
        doc["type"] = concept(entry.type_code)
    if entry.class_code:
        doc["category"] = [concept(entry.class_code)]
    if patient_id:
        doc["subject"] = {"reference": f"Patient/{patient_id}"}
    date = _instant(entry.creation_time)
    if date:
        doc["date"] = date
    if authors:
        doc["author"] = authors
    if entry.legal_authenticator:
        contained.append(xcn_to_practitioner(entry.legal_authenticator, "authenticator"))
        doc["authenticator"] = {"reference": "#authenticator"}
    if relates_to:
        doc["relatesTo"] = relates_to
    if entry.comments:
        doc["description"] = entry.comments
    if entry.confidentiality_codes:
        doc["securityLabel"] = [concept(c) for c in entry.confidentiality_codes]
    attachment: dict = {"contentType": entry.mime_type or "application/octet-stream"}
    if entry.language_code:
        attachment["language"] = entry.language_code
    attachment["url"] = f"Binary/{binary_id}"
    attachment["size"] = len(content)
    attachment["hash"] = base64.b64encode(sha1).decode("ascii")
    if entry.title:
        attachment["title"] = entry.title
    if entry.creation_time:
        attachment["creation"] = _fhir_time(entry.creation_time)
    content_item: dict = {"attachment": attachment}
    if entry.format_code:
        content_item["format"] = _coding(entry.format_code)
    doc["content"] = [content_item]
    context: dict = {}
    if entry.event_codes:
        context["event"] = [concept(c) for c in entry.event_codes]
    if entry.service_start_time or entry.service_stop_time:
        period = {}
        if entry.service_start_time:
            period["start"] = _fhir_time(entry.service_start_time)
        if entry.service_stop_time:
            period["end"] = _fhir_time(entry.service_stop_time)
        context["period"] = period
    if entry.healthcare_facility_type_code:
        context["facilityType"] = concept(entry.healthcare_facility_type_code)
    if entry.practice_setting_code:
        context["practiceSetting"] = concept(entry.practice_setting_code)
    source_patient = _source_patient(entry)
    if source_patient:
        contained.append(source_patient)
        context["sourcePatientInfo"] = {"reference": "#source-patient"}
    if entry.reference_ids:
        context["related"] = [_related(r) for r in entry.reference_ids]
    if context:
        doc["context"] = context
    if not contained:
        del doc["contained"]
    return doc


def _list_resource(
    submission_set: SubmissionSet,
    *,
    list_id: str,
    entry_uuid: str,
    patient_id: str | None,
    members: list[tuple[str, list[Slot]]],
) -> dict:

    resource: dict = {"resourceType": "List", "id": list_id}
    contained, source, author_extensions = authors_to_list(submission_set.authors)
    recipients, recipient_extensions = recipients_to_list(submission_set.intended_recipients)
    contained += recipients
    if contained:
        resource["contained"] = contained
    extensions = []
    if submission_set.source_id:
        extensions.append(
            {"url": EXT_SOURCE_ID, "valueIdentifier": _uri_for_unique_id(submission_set.source_id)}
        )
    if submission_set.content_type_code:
        extensions.append(
            {
                "url": EXT_DESIGNATION_TYPE,
                "valueCodeableConcept": concept(submission_set.content_type_code),
            }
        )
    extensions += recipient_extensions + author_extensions
    extensions += extra_metadata.extensions_of(submission_set.extra_slots)
    if extensions:
        resource["extension"] = extensions
    identifiers = []
    if submission_set.unique_id:
        identifiers.append({"use": "usual", **_uri_for_unique_id(submission_set.unique_id)})
    identifiers.append({"use": "official", "system": SYSTEM_RFC3986, "value": entry_uuid})
    resource["identifier"] = identifiers
    resource["status"] = "current"
    resource["mode"] = "working"
    if submission_set.title:
        resource["title"] = submission_set.title
    resource["code"] = {"coding": [{"system": SYSTEM_MHD_LIST_TYPES, "code": "submissionset"}]}
    if patient_id:
        resource["subject"] = {"reference": f"Patient/{patient_id}"}
    if submission_set.submission_time:
        resource["date"] = _fhir_time(submission_set.submission_time)
    if source:
        resource["source"] = source
    if submission_set.comments:
        resource["note"] = [{"text": submission_set.comments}]
    if members:
        resource["entry"] = [_list_entry(member, extras) for member, extras in members]
    return resource


def _list_entry(member: str, extras: list[Slot]) -> dict:
    """A List.entry for a HasMember Association, with its extra metadata Slots."""
    entry: dict = {"item": {"reference": f"DocumentReference/{member}"}}
    if extras:
        entry = {"extension": extra_metadata.extensions_of(extras), **entry}
    return entry
