"""XDS ebRIM <-> FHIR R4 (IHE MHD): the one mapping the XDS face and the MHD face share.

Forward (ITI-41 deposit): `submission_to_fhir` turns a validated Submission and its
documents into plain FHIR JSON dicts: one List (MHD SubmissionSet), one DocumentReference
per DocumentEntry, one Binary per document, and the transaction Bundle holding them.
Backward (ITI-18 answers): `document_reference_to_ebrim`, `list_to_ebrim` and
`associations_from_fhir` rebuild the ebRIM objects from what is stored, so that a document
deposited by ITI-41 comes back with equivalent metadata.

Decisions (beyond the reference tables):
- Resource ids are generated (uuid4, canonical form); each bundle entry has fullUrl
  `urn:uuid:<id>` and request `PUT <Type>/<id>`, and references inside the resources are
  already the final relative ones (`Binary/<id>`, `DocumentReference/<id>`, `Patient/<id>`):
  the store must keep the given ids (PUT = create with a client id), nothing to rewrite.
- Availability: Approved -> status current; Deprecated -> superseded; DMP Deleted ->
  entered-in-error plus meta.tag (AVAILABILITY_SYSTEM|Deleted); DMP Archived -> status
  current plus the PDSm_IsArchived extension (PDSm st_maj.md's table,
  `resources.document_state`), since an archived document is still valid, only hidden from
  default searches. `fhir_availability` gives the pair. A document stored with the older
  meta.tag AVAILABILITY_SYSTEM|Archived, and no isArchived extension, still reads Archived.
- Authors: contained Practitioner / PractitionerRole / Organization with ids
  `a<n>-practitioner`, `a<n>-role`, `a<n>-org<k>`; the `a<n>-` prefix groups them back
  into the same XDS author. authorRole / authorSpecialty of the form `code^display^OID` become
  codings, anything else stays as CodeableConcept.text (lossless either way).
- XFRM_RPLC becomes two relatesTo (transforms + replaces) to the same target; the
  backward mapping folds them back. A relationship target outside the submission is
  written as a logical reference (identifier = its entryUUID), plus a literal reference
  when `resolve_document` knows it.
- SubmissionSet authors and intendedRecipients: List.source, MHD's authorOrg and
  intendedRecipient extensions and one extension of ours for the authors List.source cannot
  hold (`list_parties`). Extra metadata Slots (ITI TF-3 4.1.14) of a DocumentEntry, a
  SubmissionSet or an Association: one extension each on the DocumentReference / List /
  List.entry / relatesTo (`extra_metadata`). The Association Documentation Classification of
  a document relationship (ITI TF-3 4.2.2.2): one valueCoding extension on its relatesTo
  (`association_documentation`).
- `repository_unique_id` is not stored in FHIR (it is this server's own id); a DocumentEntry
  naming another repository is refused (XDSRepositoryMetadataError).
"""

from __future__ import annotations

import base64
import hashlib
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pybase64

from fhir_server.documents import model as document_model
from fhir_server.resources.document_state import (
    IS_ARCHIVED_URL,
    is_archived,
    is_deleted,
    set_archived,
)
from fhir_server.terminology import (
    CANONICAL_BASE,
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    SYSTEM_MHD_LIST_TYPES,
    SYSTEM_RFC3986,
)
from ihe_xds import association_documentation, extra_metadata
from ihe_xds.codes import (
    OID_TO_URL,
    OID_TRE_A07,
    URL_TO_OID,
    is_oid,
    scheme_for_system,
    system_for_scheme,
)
from ihe_xds.ebrim import (
    Association,
    AssociationClassification,
    Author,
    Coded,
    DocumentEntry,
    Slot,
    Submission,
    SubmissionSet,
    association_id,
)
from ihe_xds.errors import (
    XDS_REPOSITORY_METADATA_ERROR,
    XDS_UNKNOWN_PATIENT_ID,
    RegistryError,
    registry_error,
)
from ihe_xds.hl7v2 import (
    XON,
    fhir_to_xds_time,
    parse_cx,
    parse_xcn,
    parse_xon,
    xcn_to_hl7,
    xds_time_to_fhir,
)
from ihe_xds.vocabulary import (
    ASSOC_APND,
    ASSOC_HAS_MEMBER,
    ASSOC_RPLC,
    ASSOC_SIGNS,
    ASSOC_XFRM,
    ASSOC_XFRM_RPLC,
    OBJECT_TYPE_STABLE,
    REPLACING_RELATIONSHIPS,
    STATUS_APPROVED,
    STATUS_ARCHIVED,
    STATUS_DELETED,
    STATUS_DEPRECATED,
)

__all__ = [
    "AVAILABILITY_SYSTEM",
    "EXT_DESIGNATION_TYPE",
    "EXT_SOURCE_ID",
    "FhirSubmission",
    "OID_TO_URL",
    "URL_TO_OID",
    "associations_from_fhir",
    "availability_of",
    "document_reference_to_ebrim",
    "entry_uuid_of",
    "fhir_availability",
    "list_to_ebrim",
    "scheme_for_system",
    "submission_to_fhir",
    "system_for_scheme",
]

EXT_SOURCE_ID = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
EXT_DESIGNATION_TYPE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
AVAILABILITY_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/xds-availability-status"
SYSTEM_V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
SYSTEM_FR_V2_0203 = "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203"
_FRENCH_ID_TYPES = {
    "IDNPS",
    "IDNST",
    "INS-NIR",
    "INS-NIA",
    "INS-C",
    "RPPS",
    "ADELI",
    "FINEG",
    "FINEJ",
    "SIRET",
}
MASKING_CODES = (MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX)
_SYSTEM_A07 = system_for_scheme(OID_TRE_A07)

_RELATES_TO = {
    ASSOC_RPLC: ("replaces",),
    ASSOC_APND: ("appends",),
    ASSOC_XFRM: ("transforms",),
    ASSOC_XFRM_RPLC: ("transforms", "replaces"),
    ASSOC_SIGNS: ("signs",),
}
_STATUS_TO_FHIR = {
    STATUS_APPROVED: ("current", None),
    STATUS_DEPRECATED: ("superseded", None),
    STATUS_ARCHIVED: ("current", None),  # the PDSm_IsArchived extension (_document_reference)
    STATUS_DELETED: ("entered-in-error", "Deleted"),
}
_GENDER = {"M": "male", "F": "female", "U": "unknown", "A": "other", "O": "other"}
_GENDER_BACK = {"male": "M", "female": "F", "unknown": "U", "other": "O"}

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


def availability_of(resource: dict) -> str:
    """The ebRIM availability status of a stored DocumentReference or List."""
    tags = {
        t.get("code")
        for t in (resource.get("meta") or {}).get("tag", [])
        if t.get("system") == AVAILABILITY_SYSTEM
    }
    if "Deleted" in tags or is_deleted(resource):
        return STATUS_DELETED
    marked = any(e.get("url") == IS_ARCHIVED_URL for e in resource.get("extension") or [])
    if is_archived(resource) or (not marked and "Archived" in tags):
        return STATUS_ARCHIVED
    if resource.get("status") == "superseded":
        return STATUS_DEPRECATED
    return STATUS_APPROVED


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


def _concept(coded: Coded) -> dict:
    return {"coding": [_coding(coded)]}


def _coded_from(concept_or_coding: dict | None) -> Coded | None:
    if not concept_or_coding:
        return None
    coding = concept_or_coding
    if "coding" in concept_or_coding:
        codings = concept_or_coding.get("coding") or []
        if not codings:
            return None
        coding = codings[0]
    return Coded(
        code=coding.get("code", ""),
        scheme=scheme_for_system(coding.get("system")),
        display=coding.get("display"),
    )


def _uri_for_unique_id(unique_id: str) -> dict:
    if is_oid(unique_id):
        return {"system": SYSTEM_RFC3986, "value": f"urn:oid:{unique_id}"}
    return {"value": unique_id}


def unique_id_from(identifier: dict | None) -> str | None:
    """The XDS uniqueId a FHIR identifier carries (`urn:oid:` taken off)."""
    if not identifier or not identifier.get("value"):
        return None
    value = identifier["value"]
    return value[len("urn:oid:") :] if value.startswith("urn:oid:") else value


def _id_type(code: str | None) -> dict | None:
    if not code:
        return None
    system = SYSTEM_FR_V2_0203 if code in _FRENCH_ID_TYPES else SYSTEM_V2_0203
    return {"coding": [{"system": system, "code": code}]}


def _type_code(identifier: dict) -> str | None:
    codings = (identifier.get("type") or {}).get("coding") or []
    return codings[0].get("code") if codings else None


def _cx_identifier(text: str) -> dict:
    """A CX (ID^^^&OID&ISO[^type]) as an Identifier; text that is no CX stays the value."""
    cx, _ = parse_cx(text)
    if cx is None:
        return {"value": text}
    identifier: dict[str, object] = {"system": f"urn:oid:{cx.authority_oid}", "value": cx.value}
    if cx.type_code:
        identifier["type"] = _id_type(cx.type_code)
    return identifier


def _identifier_cx(identifier: dict) -> str:
    system = identifier.get("system") or ""
    value = identifier.get("value") or ""
    if not system.startswith("urn:oid:"):
        return value
    text = f"{value}^^^&{system[len('urn:oid:') :]}&ISO"
    type_code = _type_code(identifier)
    return f"{text}^{type_code}" if type_code else text


def _ce_concept(text: str) -> dict:
    """authorRole / authorSpecialty: `code^display^OID` -> coding, anything else -> text."""
    parts = text.split("^")
    if len(parts) == 3 and parts[0] and is_oid(parts[2]):
        coding = {"system": system_for_scheme(parts[2]), "code": parts[0]}
        if parts[1]:
            coding["display"] = parts[1]
        return {"coding": [coding]}
    return {"text": text}


def _concept_ce(concept: dict) -> str:
    codings = concept.get("coding") or []
    if codings:
        coding = codings[0]
        return f"{coding.get('code', '')}^{coding.get('display', '')}^{scheme_for_system(coding.get('system')) or ''}"
    return concept.get("text", "")


def _telecom(text: str) -> dict:
    parts = text.split("^")
    if len(parts) >= 4 and parts[2] == "Internet" and parts[3]:
        return {"system": "email", "value": parts[3]}
    return {"system": "other", "value": text}


def _telecom_back(contact: dict) -> str:
    if contact.get("system") == "email":
        return f"^^Internet^{contact.get('value', '')}"
    return contact.get("value", "")


_NAME_USE = {"L": "official", "D": "usual"}
_NAME_USE_BACK = {v: k for k, v in _NAME_USE.items()}


def _practitioner(person: str, resource_id: str) -> dict:
    practitioner: dict = {"resourceType": "Practitioner", "id": resource_id}
    if "^" not in person:
        practitioner["name"] = [{"text": person}]
        return practitioner
    xcn = parse_xcn(person)
    if xcn.id:
        identifier: dict = {"value": xcn.id}
        if xcn.authority_oid:
            identifier = {"system": f"urn:oid:{xcn.authority_oid}", **identifier}
        if xcn.id_type:
            identifier["type"] = _id_type(xcn.id_type)
        if xcn.authority_namespace:
            identifier["assigner"] = {"display": xcn.authority_namespace}
        practitioner["identifier"] = [identifier]
    name: dict = {}
    if xcn.name_type in _NAME_USE:
        name["use"] = _NAME_USE[xcn.name_type]
    if xcn.family:
        name["family"] = xcn.family
    if xcn.given:
        name["given"] = list(xcn.given)
    if xcn.prefix:
        name["prefix"] = [xcn.prefix]
    if xcn.suffix:
        name["suffix"] = [xcn.suffix]
    if name:
        practitioner["name"] = [name]
    return practitioner


def _practitioner_xcn(practitioner: dict) -> str:
    names = practitioner.get("name") or [{}]
    name = names[0]
    identifiers = practitioner.get("identifier") or []
    if not identifiers and set(name) <= {"text"} and name.get("text"):
        return name["text"]
    identifier = identifiers[0] if identifiers else {}
    system = identifier.get("system") or ""
    return xcn_to_hl7(
        id=identifier.get("value"),
        family=name.get("family"),
        given=tuple(name.get("given") or ()),
        suffix=(name.get("suffix") or [None])[0],
        prefix=(name.get("prefix") or [None])[0],
        authority_namespace=(identifier.get("assigner") or {}).get("display"),
        authority_oid=system[len("urn:oid:") :] if system.startswith("urn:oid:") else None,
        name_type=_NAME_USE_BACK.get(name.get("use")),
        id_type=_type_code(identifier) if identifier else None,
    )


def _organization(institution: str, resource_id: str) -> dict:
    xon = parse_xon(institution)
    organization: dict = {"resourceType": "Organization", "id": resource_id}
    if xon.id:
        identifier: dict = {"value": xon.id}
        if xon.authority_oid:
            identifier = {"system": f"urn:oid:{xon.authority_oid}", **identifier}
        if xon.id_type:
            identifier["type"] = _id_type(xon.id_type)
        organization["identifier"] = [identifier]
    if xon.name:
        organization["name"] = xon.name
    return organization


def _organization_xon(organization: dict) -> str:
    identifiers = organization.get("identifier") or []
    identifier = identifiers[0] if identifiers else {}
    system = identifier.get("system") or ""
    return XON(
        name=organization.get("name"),
        authority_oid=system[len("urn:oid:") :] if system.startswith("urn:oid:") else None,
        id_type=_type_code(identifier) if identifier else None,
        id=identifier.get("value"),
    ).to_hl7()


def _author_resources(author: Author, index: int) -> tuple[list[dict], list[dict]]:
    """(contained resources, author references) for one XDS author."""
    prefix = f"a{index}-"
    contained: list[dict] = []
    practitioner_id = None
    if author.person:
        practitioner_id = prefix + "practitioner"
        contained.append(_practitioner(author.person, practitioner_id))
    org_ids = []
    for k, institution in enumerate(author.institutions):
        org_id = f"{prefix}org{k}"
        org_ids.append(org_id)
        contained.append(_organization(institution, org_id))
    needs_role = bool(author.roles or author.specialties or author.telecoms) or (
        practitioner_id is not None and org_ids
    )
    references: list[dict] = []
    remaining_orgs = org_ids
    if needs_role:
        role: dict = {"resourceType": "PractitionerRole", "id": prefix + "role"}
        if practitioner_id:
            role["practitioner"] = {"reference": f"#{practitioner_id}"}
        if org_ids:
            role["organization"] = {"reference": f"#{org_ids[0]}"}
            remaining_orgs = org_ids[1:]
        if author.roles:
            role["code"] = [_ce_concept(r) for r in author.roles]
        if author.specialties:
            role["specialty"] = [_ce_concept(s) for s in author.specialties]
        if author.telecoms:
            role["telecom"] = [_telecom(t) for t in author.telecoms]
        contained.append(role)
        references.append({"reference": f"#{prefix}role"})
    elif practitioner_id:
        references.append({"reference": f"#{practitioner_id}"})
    references += [{"reference": f"#{org_id}"} for org_id in remaining_orgs]
    return contained, references


# The "a<index>-" prefix of the contained resources one XDS author was written as.
_AUTHOR_GROUP = re.compile(r"^(a\d+-)")


def _authors_back(
    references: list[dict], contained: dict[str, dict], keys: list[str | None] | None = None
) -> list[Author]:
    """XDS authors from author references: contained resources sharing an `a<n>-` id prefix
    are one author; any other reference is one author of its own, unless `keys` (one per
    reference) gives references the same key (List.source and its authorOrg)."""
    groups: dict[str, Author] = {}
    order: list[Author] = []
    for position, reference in enumerate(references):
        local = (reference.get("reference") or "").removeprefix("#")
        resource = contained.get(local)
        if resource is None:
            continue
        match = _AUTHOR_GROUP.match(local)
        forced = keys[position] if keys else None
        key = match.group(1) if match else (forced or f"ref{position}")
        author = groups.get(key)
        if author is None:
            author = groups[key] = Author()
            order.append(author)
        kind = resource.get("resourceType")
        if kind == "PractitionerRole":
            practitioner = contained.get(
                (resource.get("practitioner") or {}).get("reference", "").removeprefix("#")
            )
            if practitioner:
                author.person = _practitioner_xcn(practitioner)
            organization = contained.get(
                (resource.get("organization") or {}).get("reference", "").removeprefix("#")
            )
            if organization:
                author.institutions.insert(0, _organization_xon(organization))
            author.roles = [_concept_ce(c) for c in resource.get("code") or []]
            author.specialties = [_concept_ce(c) for c in resource.get("specialty") or []]
            author.telecoms = [_telecom_back(t) for t in resource.get("telecom") or []]
        elif kind == "Practitioner":
            author.person = _practitioner_xcn(resource)
        elif kind == "Organization":
            author.institutions.append(_organization_xon(resource))
    return order


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


def _source_patient_back(patient: dict) -> tuple[str | None, list[str]]:
    identifiers = [_identifier_cx(i) for i in patient.get("identifier") or []]
    info = [f"PID-3|{cx}" for cx in identifiers]
    for name in patient.get("name") or []:
        given = name.get("given") or []
        parts = [
            name.get("family", ""),
            given[0] if given else "",
            " ".join(given[1:]),
            (name.get("suffix") or [""])[0],
            (name.get("prefix") or [""])[0],
        ]
        info.append("PID-5|" + "^".join(parts).rstrip("^"))
    if patient.get("birthDate"):
        info.append("PID-7|" + patient["birthDate"].replace("-", ""))
    if patient.get("gender") in _GENDER_BACK:
        info.append("PID-8|" + _GENDER_BACK[patient["gender"]])
    for address in patient.get("address") or []:
        lines = (address.get("line") or []) + ["", ""]
        parts = [
            lines[0],
            lines[1],
            address.get("city", ""),
            address.get("state", ""),
            address.get("postalCode", ""),
            address.get("country", ""),
        ]
        info.append("PID-11|" + "^".join(parts).rstrip("^"))
    return (identifiers[0] if identifiers else None), info


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
            else _id_type(c[4])
        )
    return {"identifier": identifier}


def _related_back(reference: dict) -> str | None:
    identifier = reference.get("identifier")
    if not identifier:
        return None
    system = identifier.get("system") or ""
    value = identifier.get("value") or ""
    authority = f"&{system[len('urn:oid:') :]}&ISO" if system.startswith("urn:oid:") else ""
    text = "^".join([value, "", "", authority, _type_code(identifier) or ""]).rstrip("^")
    return text


def _fhir_time(value: str | None) -> str | None:
    return xds_time_to_fhir(value) if value else None


def _instant(value: str | None) -> str | None:
    if not value or len(value) < 12:
        return None
    return xds_time_to_fhir(value)


# --------------------------------------------------------------------------- forward


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
            if association.source != entry.id or association.type not in _RELATES_TO:
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
                for code in _RELATES_TO[association.type]
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
        resources, references = _author_resources(author, index)
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
        doc["type"] = _concept(entry.type_code)
    if entry.class_code:
        doc["category"] = [_concept(entry.class_code)]
    if patient_id:
        doc["subject"] = {"reference": f"Patient/{patient_id}"}
    date = _instant(entry.creation_time)
    if date:
        doc["date"] = date
    if authors:
        doc["author"] = authors
    if entry.legal_authenticator:
        contained.append(_practitioner(entry.legal_authenticator, "authenticator"))
        doc["authenticator"] = {"reference": "#authenticator"}
    if relates_to:
        doc["relatesTo"] = relates_to
    if entry.comments:
        doc["description"] = entry.comments
    if entry.confidentiality_codes:
        doc["securityLabel"] = [_concept(c) for c in entry.confidentiality_codes]
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
        context["event"] = [_concept(c) for c in entry.event_codes]
    if entry.service_start_time or entry.service_stop_time:
        period = {}
        if entry.service_start_time:
            period["start"] = _fhir_time(entry.service_start_time)
        if entry.service_stop_time:
            period["end"] = _fhir_time(entry.service_stop_time)
        context["period"] = period
    if entry.healthcare_facility_type_code:
        context["facilityType"] = _concept(entry.healthcare_facility_type_code)
    if entry.practice_setting_code:
        context["practiceSetting"] = _concept(entry.practice_setting_code)
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
    # Imported here: list_parties builds on this module's author helpers (an import cycle).
    from ihe_xds.list_parties import authors_to_list, recipients_to_list

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
                "valueCodeableConcept": _concept(submission_set.content_type_code),
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


# --------------------------------------------------------------------------- backward


def entry_uuid_of(resource: dict) -> str:
    """The entryUUID of a stored DocumentReference / List (identifier urn:uuid:, else from id)."""
    for _, identifier in document_model.entry_uuid_identifiers(resource):
        value = identifier.get("value") or ""
        if value.startswith("urn:uuid:"):
            return value
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, resource.get('resourceType', '') + '/' + resource.get('id', ''))}"


def document_reference_to_ebrim(
    doc_ref: dict, *, patient_cx: str, repository_unique_id: str
) -> DocumentEntry:
    """The XDSDocumentEntry for a stored DocumentReference (ITI-18 LeafClass answers)."""
    contained = {r.get("id"): r for r in doc_ref.get("contained") or []}
    entry_uuid = entry_uuid_of(doc_ref)
    content = (doc_ref.get("content") or [{}])[0]
    attachment = content.get("attachment") or {}
    context = doc_ref.get("context") or {}
    entry = DocumentEntry(id=entry_uuid, object_type=OBJECT_TYPE_STABLE)
    entry.mime_type = attachment.get("contentType")
    entry.status = availability_of(doc_ref)
    # Metadata versions (ITI TF-3 4.1.4): the logicalID is the first version's entryUUID, the
    # version counts the metadata updates (documents.metadata_versions); ITI-57 names it
    # PreviousVersion. A change of status alone is no new version.
    entry.logical_id = document_model.logical_id(doc_ref) or entry_uuid
    entry.version = str(document_model.metadata_version(doc_ref))
    entry.patient_id = patient_cx
    entry.unique_id = unique_id_from(doc_ref.get("masterIdentifier"))
    entry.title = attachment.get("title")
    entry.comments = doc_ref.get("description")
    if attachment.get("creation"):
        entry.creation_time = fhir_to_xds_time(attachment["creation"])
    entry.language_code = attachment.get("language")
    period = context.get("period") or {}
    if period.get("start"):
        entry.service_start_time = fhir_to_xds_time(period["start"])
    if period.get("end"):
        entry.service_stop_time = fhir_to_xds_time(period["end"])
    source_ref = (context.get("sourcePatientInfo") or {}).get("reference", "").removeprefix("#")
    if source_ref in contained:
        entry.source_patient_id, entry.source_patient_info = _source_patient_back(
            contained[source_ref]
        )
    if attachment.get("hash"):
        entry.hash = base64.b64decode(attachment["hash"]).hex()
    if attachment.get("size") is not None:
        entry.size = str(attachment["size"])
    entry.repository_unique_id = repository_unique_id
    authenticator = (doc_ref.get("authenticator") or {}).get("reference", "").removeprefix("#")
    if (
        authenticator in contained
        and contained[authenticator].get("resourceType") == "Practitioner"
    ):
        entry.legal_authenticator = _practitioner_xcn(contained[authenticator])
    entry.reference_ids = [r for r in (_related_back(x) for x in context.get("related") or []) if r]
    entry.class_code = _coded_from((doc_ref.get("category") or [None])[0])
    entry.type_code = _coded_from(doc_ref.get("type"))
    entry.format_code = _coded_from(content.get("format"))
    entry.healthcare_facility_type_code = _coded_from(context.get("facilityType"))
    entry.practice_setting_code = _coded_from(context.get("practiceSetting"))
    entry.confidentiality_codes = [
        c for c in (_coded_from(x) for x in doc_ref.get("securityLabel") or []) if c
    ]
    entry.event_codes = [c for c in (_coded_from(x) for x in context.get("event") or []) if c]
    entry.authors = _authors_back(doc_ref.get("author") or [], contained)
    entry.extra_slots = extra_metadata.slots_of(doc_ref)
    return entry


def list_to_ebrim(list_resource: dict, *, patient_cx: str | None = None) -> SubmissionSet:
    """The XDSSubmissionSet for a stored MHD SubmissionSet List."""
    contained = {r.get("id"): r for r in list_resource.get("contained") or []}
    submission_set = SubmissionSet(id=entry_uuid_of(list_resource))
    for identifier in list_resource.get("identifier") or []:
        if identifier.get("use") == "usual" or (identifier.get("value") or "").startswith(
            "urn:oid:"
        ):
            submission_set.unique_id = unique_id_from(identifier)
            break
    for extension in list_resource.get("extension") or []:
        if extension.get("url") == EXT_SOURCE_ID:
            submission_set.source_id = unique_id_from(extension.get("valueIdentifier"))
        elif extension.get("url") == EXT_DESIGNATION_TYPE:
            submission_set.content_type_code = _coded_from(extension.get("valueCodeableConcept"))
    submission_set.patient_id = patient_cx
    if list_resource.get("date"):
        submission_set.submission_time = fhir_to_xds_time(list_resource["date"])
    submission_set.title = list_resource.get("title")
    notes = list_resource.get("note") or []
    submission_set.comments = notes[0].get("text") if notes else None
    from ihe_xds.list_parties import authors_from_list, recipients_from_list  # (cycle)

    submission_set.authors = authors_from_list(list_resource, contained)
    submission_set.intended_recipients = recipients_from_list(list_resource, contained)
    submission_set.extra_slots = extra_metadata.slots_of(list_resource)
    submission_set.status = STATUS_APPROVED
    return submission_set


_CODE_TO_ASSOCIATION = {
    "replaces": ASSOC_RPLC,
    "appends": ASSOC_APND,
    "transforms": ASSOC_XFRM,
    "signs": ASSOC_SIGNS,
}


def associations_from_fhir(
    list_resources: list[dict], document_references: list[dict]
) -> list[Association]:
    """HasMember associations (List.entry) and document relationships (relatesTo).

    Association ids are derived from (source, target, type) so that repeated queries give
    the same ids. A relatesTo target is named by its identifier (entryUUID) or, failing
    that, by a reference to one of `document_references`.
    """
    by_id = {d.get("id"): d for d in document_references}
    associations: list[Association] = []
    for resource in list_resources:
        source = entry_uuid_of(resource)
        for item in resource.get("entry") or []:
            reference = (item.get("item") or {}).get("reference", "")
            target_doc = by_id.get(reference.removeprefix("DocumentReference/"))
            if target_doc is None:
                continue
            target = entry_uuid_of(target_doc)
            associations.append(
                Association(
                    id=association_id(source, target, ASSOC_HAS_MEMBER),
                    type=ASSOC_HAS_MEMBER,
                    source=source,
                    target=target,
                    slots=[
                        Slot("SubmissionSetStatus", ["Original"]),
                        *extra_metadata.slots_of(item),
                    ],
                    status=STATUS_APPROVED,
                )
            )
    for doc in document_references:
        source = entry_uuid_of(doc)
        codes_by_target: dict[str, list[str]] = {}
        extras: dict[tuple[str, str], list[Slot]] = {}  # (target, code) -> extra Slots
        labels: dict[tuple[str, str], list[AssociationClassification]] = {}  # documentation
        for relation in doc.get("relatesTo") or []:
            target_ref = relation.get("target") or {}
            related = (target_ref.get("identifier") or {}).get("value")
            if not related:
                target_doc = by_id.get(
                    (target_ref.get("reference") or "").removeprefix("DocumentReference/")
                )
                if target_doc is None:
                    continue
                related = entry_uuid_of(target_doc)
            codes_by_target.setdefault(related, []).append(relation.get("code", ""))
            extras.setdefault(
                (related, relation.get("code", "")), extra_metadata.slots_of(relation)
            )
            labels.setdefault(
                (related, relation.get("code", "")),
                association_documentation.classifications_of(relation),
            )
        for target, codes in codes_by_target.items():
            kinds = []
            if "transforms" in codes and "replaces" in codes:
                kinds.append(ASSOC_XFRM_RPLC)
                codes = [c for c in codes if c not in ("transforms", "replaces")]
            kinds += [_CODE_TO_ASSOCIATION[c] for c in codes if c in _CODE_TO_ASSOCIATION]
            for kind in kinds:
                associations.append(
                    Association(
                        id=association_id(source, target, kind),
                        type=kind,
                        source=source,
                        target=target,
                        slots=list(extras.get((target, _RELATES_TO[kind][-1]), ())),
                        status=STATUS_APPROVED,
                        classifications=list(labels.get((target, _RELATES_TO[kind][-1]), ())),
                    )
                )
    return associations
