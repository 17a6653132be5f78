"""The ebRIM 3.0 objects of XDS as dataclasses: parsed from submissions, written for queries.

Parsing is lenient about shape and strict about meaning: anything odd it meets (a second
classCode, a Slot without a name, a Document that does not decode) is recorded as a
RegistryError in `Submission.problems` instead of raising, so that validation can report
every problem of a message at once. Only a request whose root is not a submission raises.

Folders: in a submission, parsed enough to be recognised (id, uniqueId, patientId) and
refused by validation (XDSRegistryMetadataError "Folders are not supported"): no deposit
door (ITI-41, ITI-65) creates one. A folder List written through REST (MHD Vol 3 4.5.1) is
answered by the Folder queries as an XDSFolder (`folder_to_element`).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

from ihe_xds.errors import (
    XDS_REGISTRY_METADATA_ERROR,
    XDS_REPOSITORY_METADATA_ERROR,
    MalformedMessage,
    RegistryError,
    registry_error,
)
from ihe_xds.mtom import Attachment, MtomError, document_content
from ihe_xds.vocabulary import (
    DE_AUTHOR,
    DE_CLASS_CODE,
    DE_CONFIDENTIALITY_CODE,
    DE_EVENT_CODE,
    DE_FACILITY_TYPE_CODE,
    DE_FORMAT_CODE,
    DE_LIMITED_METADATA,
    DE_PATIENT_ID,
    DE_PRACTICE_SETTING_CODE,
    DE_TYPE_CODE,
    DE_UNIQUE_ID,
    EXTERNAL_IDENTIFIER_NAMES,
    FOLDER_CODE_LIST,
    FOLDER_NODE,
    FOLDER_PATIENT_ID,
    FOLDER_UNIQUE_ID,
    NS_LCM,
    NS_RIM,
    NS_XDSB,
    OBJECT_TYPE_ASSOCIATION,
    OBJECT_TYPE_CLASSIFICATION,
    OBJECT_TYPE_EXTERNAL_IDENTIFIER,
    OBJECT_TYPE_REGISTRY_PACKAGE,
    OBJECT_TYPE_STABLE,
    SS_AUTHOR,
    SS_CONTENT_TYPE_CODE,
    SS_LIMITED_METADATA,
    SS_NODE,
    SS_PATIENT_ID,
    SS_SOURCE_ID,
    SS_UNIQUE_ID,
    q,
)

# Slots of a DocumentEntry mapped to dataclass fields (single-valued unless listed below).
_ENTRY_SLOTS = {
    "creationTime": "creation_time",
    "languageCode": "language_code",
    "serviceStartTime": "service_start_time",
    "serviceStopTime": "service_stop_time",
    "sourcePatientId": "source_patient_id",
    "hash": "hash",
    "size": "size",
    "repositoryUniqueId": "repository_unique_id",
    "legalAuthenticator": "legal_authenticator",
    "URI": "uri",
    "documentAvailability": "document_availability",
    "homeCommunityId": "home",
}
_ENTRY_LIST_SLOTS = {
    "sourcePatientInfo": "source_patient_info",
    "urn:ihe:iti:xds:2013:referenceIdList": "reference_ids",
}
# Single-valued coded classifications of a DocumentEntry: scheme -> field.
_ENTRY_CODES = {
    DE_CLASS_CODE: "class_code",
    DE_TYPE_CODE: "type_code",
    DE_FORMAT_CODE: "format_code",
    DE_FACILITY_TYPE_CODE: "healthcare_facility_type_code",
    DE_PRACTICE_SETTING_CODE: "practice_setting_code",
}
_ENTRY_CODE_LISTS = {
    DE_CONFIDENTIALITY_CODE: "confidentiality_codes",
    DE_EVENT_CODE: "event_codes",
}
ENTRY_ATTRIBUTE_SCHEMES = {**_ENTRY_CODES, **_ENTRY_CODE_LISTS}


def _uuid_urn(value: str | None) -> str | None:
    """A classificationScheme or classificationNode as the registry compares it: a UUID URN
    in lower case, as the vocabulary writes them (RFC 4122 3: the hex digits are
    case-insensitive on input; RFC 8141: so is the `urn:uuid:` prefix), anything else as
    written. A confidentialityCode whose scheme was in capitals was not recognized, and its
    MASQUE_PS dropped."""
    if value and value[:9].lower() == "urn:uuid:":
        return value.lower()
    return value


def _uninterpreted(classification: etree._Element, where: str) -> RegistryError:
    """Fail closed: a Classification the registry does not read is refused, never dropped
    (a confidentialityCode spelled otherwise lost its MASQUE_PS, the document stored
    readable by every authorized professional)."""
    scheme = classification.get("classificationScheme")
    node = classification.get("classificationNode")
    named = f"classificationScheme {scheme!r}" if scheme else f"classificationNode {node!r}"
    return registry_error(
        XDS_REGISTRY_METADATA_ERROR,
        f"Classification {classification.get('id') or ''} ({named}) is not one this registry "
        "interprets here; it is refused rather than dropped",
        where,
    )


@dataclass(slots=True)
class Slot:
    name: str
    values: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Coded:
    """A coded classification: nodeRepresentation, codingScheme slot, display name."""

    code: str
    scheme: str | None = None
    display: str | None = None


@dataclass(slots=True)
class Author:
    """An author classification; values are the HL7 v2 strings (XCN, XON, CE, XTN)."""

    person: str | None = None
    institutions: list[str] = field(default_factory=list)
    roles: list[str] = field(default_factory=list)
    specialties: list[str] = field(default_factory=list)
    telecoms: list[str] = field(default_factory=list)


@dataclass(slots=True)
class DocumentEntry:
    """XDSDocumentEntry (rim:ExtrinsicObject)."""

    id: str
    object_type: str = OBJECT_TYPE_STABLE
    mime_type: str | None = None
    status: str | None = None
    home: str | None = None
    logical_id: str | None = None
    version: str | None = None
    patient_id: str | None = None
    unique_id: str | None = None
    title: str | None = None
    comments: str | None = None
    creation_time: str | None = None
    language_code: str | None = None
    service_start_time: str | None = None
    service_stop_time: str | None = None
    source_patient_id: str | None = None
    source_patient_info: list[str] = field(default_factory=list)
    hash: str | None = None
    size: str | None = None
    repository_unique_id: str | None = None
    legal_authenticator: str | None = None
    uri: str | None = None
    document_availability: str | None = None
    reference_ids: list[str] = field(default_factory=list)
    class_code: Coded | None = None
    type_code: Coded | None = None
    format_code: Coded | None = None
    healthcare_facility_type_code: Coded | None = None
    practice_setting_code: Coded | None = None
    confidentiality_codes: list[Coded] = field(default_factory=list)
    event_codes: list[Coded] = field(default_factory=list)
    authors: list[Author] = field(default_factory=list)
    extra_slots: list[Slot] = field(default_factory=list)
    limited_metadata: bool = False


@dataclass(slots=True)
class SubmissionSet:
    """XDSSubmissionSet (rim:RegistryPackage classified as SubmissionSet)."""

    id: str
    unique_id: str | None = None
    source_id: str | None = None
    patient_id: str | None = None
    submission_time: str | None = None
    title: str | None = None
    comments: str | None = None
    content_type_code: Coded | None = None
    authors: list[Author] = field(default_factory=list)
    intended_recipients: list[str] = field(default_factory=list)
    status: str | None = None
    home: str | None = None
    extra_slots: list[Slot] = field(default_factory=list)
    limited_metadata: bool = False


@dataclass(slots=True)
class Folder:
    """XDSFolder (ITI TF-3 4.2.3.3): read from an ITI-41 only far enough to be named in the
    refusal; written in ITI-18 answers from a folder List (MHD Vol 3 4.5.1, `list_to_folder`)."""

    id: str
    unique_id: str | None = None
    patient_id: str | None = None
    title: str | None = None
    comments: str | None = None
    last_update_time: str | None = None
    codes: list[Coded] = field(default_factory=list)
    status: str | None = None


@dataclass(slots=True)
class AssociationClassification:
    """A Classification of an Association: its classificationScheme and the code it gives.

    ITI TF-3 4.2.2.2 defines one, the Association Documentation (scheme
    ASSOCIATION_DOCUMENTATION, e.g. the reason for a replacement), on document
    relationships only; validation refuses it elsewhere and refuses any other scheme, so
    none is read and then dropped (issue #19, "No silent loss").
    """

    scheme: str
    coded: Coded


@dataclass(slots=True)
class Association:
    id: str
    type: str
    source: str
    target: str
    slots: list[Slot] = field(default_factory=list)
    status: str | None = None
    classifications: list[AssociationClassification] = field(default_factory=list)

    @property
    def submission_set_status(self) -> str | None:
        for slot in self.slots:
            if slot.name == "SubmissionSetStatus" and slot.values:
                return slot.values[0]
        return None


@dataclass(slots=True)
class Submission:
    """A parsed SubmitObjectsRequest (ITI-42) or ProvideAndRegisterDocumentSetRequest (ITI-41)."""

    submission_sets: list[SubmissionSet] = field(default_factory=list)
    entries: list[DocumentEntry] = field(default_factory=list)
    folders: list[Folder] = field(default_factory=list)
    associations: list[Association] = field(default_factory=list)
    documents: dict[str, bytes] = field(default_factory=dict)
    object_refs: list[str] = field(default_factory=list)
    problems: list[RegistryError] = field(default_factory=list)
    provide_and_register: bool = False
    _sha1: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def submission_set(self) -> SubmissionSet | None:
        return self.submission_sets[0] if self.submission_sets else None

    def sha1(self, entry_id: str) -> bytes:
        """The SHA-1 digest of the document of `entry_id` (empty bytes when it has none).

        Validation checks the declared hash with it, the mapping writes it into the
        attachment and the uniqueId check compares it with stored ones: computed once, since
        each pass over a 1 MB document costs about a millisecond.
        """
        digest = self._sha1.get(entry_id)
        if digest is None:
            content = self.documents.get(entry_id, b"")
            digest = self._sha1[entry_id] = hashlib.sha1(content).digest()  # noqa: S324 - XDS fixes SHA-1
        return digest


class NotASubmission(MalformedMessage):
    """The element is neither a SubmitObjectsRequest nor a ProvideAndRegister request."""


# --------------------------------------------------------------------------- parsing
#
# Every registry object is read in one pass over its children, with the qualified tag
# names computed once: ITI-41 parsing cost is dominated by these small per-object walks,
# and repeated find()/findall()/iterchildren(tag) calls each cost an ElementPath or
# iterator set-up. `element[:]` lists the children in one C call. Each lxml accessor
# (.tag on a fresh element, .get, .text) builds a Python string, so every one is read
# once, and the slots of known names go straight to their field (no Slot in between).
# The order in which problems are recorded is that of the former find-based reading:
# nameless slots, then the slots' own problems, then classifications, then external
# identifiers; problems found earlier in the walk than their turn wait in a list.

_SLOT = q(NS_RIM, "Slot")
_VALUE_LIST = q(NS_RIM, "ValueList")
_VALUE = q(NS_RIM, "Value")
_NAME = q(NS_RIM, "Name")
_DESCRIPTION = q(NS_RIM, "Description")
_LOCALIZED_STRING = q(NS_RIM, "LocalizedString")
_CLASSIFICATION = q(NS_RIM, "Classification")
_EXTERNAL_IDENTIFIER = q(NS_RIM, "ExternalIdentifier")
_VERSION_INFO = q(NS_RIM, "VersionInfo")
_REGISTRY_OBJECT_LIST = q(NS_RIM, "RegistryObjectList")
_EXTRINSIC_OBJECT = q(NS_RIM, "ExtrinsicObject")
_REGISTRY_PACKAGE = q(NS_RIM, "RegistryPackage")
_ASSOCIATION = q(NS_RIM, "Association")
_OBJECT_REF = q(NS_RIM, "ObjectRef")
_PROVIDE_AND_REGISTER = q(NS_XDSB, "ProvideAndRegisterDocumentSetRequest")
_SUBMIT_OBJECTS = q(NS_LCM, "SubmitObjectsRequest")
_DOCUMENT = q(NS_XDSB, "Document")

# Multi-valued author slots: slot name -> Author field.
_AUTHOR_LISTS = {
    "authorInstitution": "institutions",
    "authorRole": "roles",
    "authorSpecialty": "specialties",
    "authorTelecommunication": "telecoms",
}


def _rim(local: str) -> str:
    return q(NS_RIM, local)


def _nameless(where: str) -> RegistryError:
    return registry_error(XDS_REGISTRY_METADATA_ERROR, "Slot without a name", where)


def _repeated(name: str, seen: set[str], problems: list[RegistryError], where: str) -> bool:
    """Record a Slot name given twice on one RegistryObject (ebRIM 3.0: Slot names are unique
    within their RegistryObject); True when `name` was seen before, so the caller keeps the
    first. Reading on and keeping the last value silently was issue #19 point 3."""
    if name in seen:
        problems.append(
            registry_error(
                XDS_REGISTRY_METADATA_ERROR,
                f"slot {name} is given twice; a Slot name is unique within its RegistryObject",
                f"{where} {name}",
            )
        )
        return True
    seen.add(name)
    return False


def _localized(holder: etree._Element | None) -> str | None:
    """The value of the first LocalizedString of a rim:Name or rim:Description."""
    if holder is None:
        return None
    for string in holder[:]:
        if string.tag == _LOCALIZED_STRING:
            value = string.get("value")
            return value if value else None
    return None


def _slots(
    elements: Iterable[etree._Element], problems: list[RegistryError], where: str
) -> list[Slot]:
    slots = []
    seen: set[str] = set()
    for slot in elements:
        name = slot.get("name")
        if not name:
            problems.append(_nameless(where))
            continue
        if _repeated(name, seen, problems, where):
            continue
        slots.append(Slot(name, _slot_values(slot)))
    return slots


def _slot_children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element[:] if child.tag == _SLOT]


def _slot_values(slot: etree._Element) -> list[str]:
    """The stripped texts of the rim:ValueList/rim:Value children of a slot."""
    values = []
    for value_list in slot[:]:
        if value_list.tag == _VALUE_LIST:
            for value in value_list[:]:
                if value.tag == _VALUE:
                    text = value.text
                    values.append(text.strip() if text else "")
    return values


def _present_values(slot: etree._Element) -> list[str]:
    """The non-empty values of a slot."""
    return [value for value in _slot_values(slot) if value]


def _coded(element: etree._Element, problems: list[RegistryError], where: str) -> Coded:
    # One pass: the last codingScheme slot and the first Name count; a nameless slot is
    # a problem, as _slots records it.
    schemes: list[str] = []
    name = None
    seen: set[str] = set()
    for child in element[:]:
        tag = child.tag
        if tag == _SLOT:
            slot_name = child.get("name")
            if not slot_name:
                problems.append(_nameless(where))
            elif _repeated(slot_name, seen, problems, where):
                continue
            elif slot_name == "codingScheme":
                schemes = _slot_values(child)
                if len(schemes) > 1:  # read as its first, the order chose the code's system
                    problems.append(
                        registry_error(
                            XDS_REGISTRY_METADATA_ERROR,
                            f"code {element.get('nodeRepresentation') or ''} has "
                            f"{len(schemes)} codingSchemes; a code has one",
                            where,
                        )
                    )
        elif tag == _NAME and name is None:
            name = child
    return Coded(
        element.get("nodeRepresentation") or "",
        schemes[0] if schemes else None,
        _localized(name),
    )


def _author(element: etree._Element, problems: list[RegistryError], where: str) -> Author:
    author = Author()
    later = None  # authorPerson problems come after every nameless slot's
    seen: set[str] = set()
    for slot in element[:]:
        if slot.tag != _SLOT:
            continue
        name = slot.get("name")
        if not name:
            problems.append(_nameless(where))
        elif _repeated(name, seen, problems, f"{where} author"):
            continue
        elif name == "authorPerson":
            values = _present_values(slot)
            if len(values) > 1:
                later = later or []
                later.append(
                    registry_error(
                        XDS_REGISTRY_METADATA_ERROR,
                        "authorPerson must have a single value",
                        f"{where} authorPerson",
                    )
                )
            author.person = values[0] if values else None
        elif name in _AUTHOR_LISTS:
            setattr(author, _AUTHOR_LISTS[name], _present_values(slot))
    if later:
        problems += later
    return author


def _external_ids(elements: list[etree._Element]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for ext in elements:
        scheme = ext.get("identificationScheme") or ""
        value = ext.get("value")
        value = value.strip() if value else ""
        if scheme in found:
            found[scheme].append(value)
        else:
            found[scheme] = [value]
    return found


def _single(
    values: dict[str, list[str]], scheme: str, problems: list[RegistryError], where: str, name: str
) -> str | None:
    found = values.get(scheme)
    if not found:
        return None
    if len(found) > 1:
        problems.append(
            registry_error(
                XDS_REGISTRY_METADATA_ERROR, f"{name} given {len(found)} times", f"{where} {name}"
            )
        )
    return found[0] or None


@dataclass(slots=True)
class _Object:
    """What one pass over a registry object's children found besides its slots."""

    classifications: list[etree._Element] = field(default_factory=list)
    external_ids: list[etree._Element] = field(default_factory=list)
    name: etree._Element | None = None  # the first rim:Name
    description: etree._Element | None = None  # the first rim:Description
    version: etree._Element | None = None  # the first rim:VersionInfo


def _walk(element: etree._Element, found: _Object, slots: list[etree._Element]) -> None:
    """Sort the children of a registry object by kind, in document order."""
    classifications, external_ids = found.classifications, found.external_ids
    for child in element[:]:
        tag = child.tag
        if tag == _SLOT:
            slots.append(child)
        elif tag == _CLASSIFICATION:
            classifications.append(child)
        elif tag == _EXTERNAL_IDENTIFIER:
            external_ids.append(child)
        elif tag == _NAME:
            if found.name is None:
                found.name = child
        elif tag == _DESCRIPTION:
            if found.description is None:
                found.description = child
        elif tag == _VERSION_INFO and found.version is None:
            found.version = child


def _parse_entry(
    element: etree._Element, loose: dict[str, list[etree._Element]], problems: list[RegistryError]
) -> DocumentEntry:
    get = element.get
    entry_id = get("id") or ""
    entry = DocumentEntry(
        entry_id,
        get("objectType") or OBJECT_TYPE_STABLE,
        get("mimeType") or None,
        get("status") or None,
        get("home") or None,
        get("lid") or None,
    )
    where = f"DocumentEntry {entry_id}"
    name_holder = description = version = None  # the first of each
    classifications: list[etree._Element] = []
    external_ids: list[etree._Element] = []
    later = None  # single-value problems come after every nameless slot's
    seen: set[str] = set()
    for child in element[:]:
        tag = child.tag
        if tag == _SLOT:
            name = child.get("name")
            if not name:
                problems.append(_nameless(where))
                continue
            if _repeated(name, seen, problems, where):
                continue
            attr = _ENTRY_SLOTS.get(name)
            if attr is not None:
                values = _present_values(child)
                if len(values) > 1:
                    later = later or []
                    later.append(
                        registry_error(
                            XDS_REGISTRY_METADATA_ERROR,
                            f"slot {name} must have a single value",
                            f"{where} {name}",
                        )
                    )
                setattr(entry, attr, values[0] if values else None)
            elif name in _ENTRY_LIST_SLOTS:
                setattr(entry, _ENTRY_LIST_SLOTS[name], _present_values(child))
            else:
                entry.extra_slots.append(Slot(name, _slot_values(child)))
        elif tag == _CLASSIFICATION:
            classifications.append(child)
        elif tag == _EXTERNAL_IDENTIFIER:
            external_ids.append(child)
        elif tag == _NAME:
            if name_holder is None:
                name_holder = child
        elif tag == _DESCRIPTION:
            if description is None:
                description = child
        elif tag == _VERSION_INFO and version is None:
            version = child
    if later:
        problems += later
    entry.version = version.get("versionName") if version is not None else None
    entry.title = _localized(name_holder)
    entry.comments = _localized(description)
    if entry_id in loose:
        classifications += loose[entry_id]
    for classification in classifications:
        node = _uuid_urn(classification.get("classificationNode"))
        if node == DE_LIMITED_METADATA:
            entry.limited_metadata = True
            continue
        scheme = _uuid_urn(classification.get("classificationScheme"))
        if scheme == DE_AUTHOR:
            entry.authors.append(_author(classification, problems, where))
        elif scheme in _ENTRY_CODES:
            name = _ENTRY_CODES[scheme]
            if getattr(entry, name) is not None:
                problems.append(
                    registry_error(
                        XDS_REGISTRY_METADATA_ERROR,
                        f"{_camel(name)} given more than once",
                        f"{where} {_camel(name)}",
                    )
                )
            setattr(entry, name, _coded(classification, problems, where))
        elif scheme in _ENTRY_CODE_LISTS:
            getattr(entry, _ENTRY_CODE_LISTS[scheme]).append(
                _coded(classification, problems, where)
            )
        else:
            problems.append(_uninterpreted(classification, where))
    if external_ids:
        ids = _external_ids(external_ids)
        entry.patient_id = _single(ids, DE_PATIENT_ID, problems, where, "patientId")
        entry.unique_id = _single(ids, DE_UNIQUE_ID, problems, where, "uniqueId")
    return entry


def _parse_package(
    element: etree._Element, loose: dict[str, list[etree._Element]], problems: list[RegistryError]
) -> SubmissionSet | Folder | None:
    package_id = element.get("id") or ""
    found = _Object()
    slots: list[etree._Element] = []
    _walk(element, found, slots)
    classifications = found.classifications
    if package_id in loose:
        classifications = classifications + loose[package_id]
    nodes = [_uuid_urn(c.get("classificationNode")) for c in classifications]
    ids = _external_ids(found.external_ids)
    if FOLDER_NODE in nodes:
        where = f"Folder {package_id}"
        return Folder(
            id=package_id,
            unique_id=_single(ids, FOLDER_UNIQUE_ID, problems, where, "uniqueId"),
            patient_id=_single(ids, FOLDER_PATIENT_ID, problems, where, "patientId"),
            title=_localized(found.name),
        )
    if SS_NODE not in nodes:
        problems.append(
            registry_error(
                XDS_REGISTRY_METADATA_ERROR,
                "RegistryPackage classified neither as SubmissionSet nor as Folder",
                f"RegistryPackage {package_id}",
            )
        )
        return None
    where = f"SubmissionSet {package_id}"
    submission_set = SubmissionSet(id=package_id)
    submission_set.status = element.get("status") or None
    submission_set.home = element.get("home") or None
    submission_set.title = _localized(found.name)
    submission_set.comments = _localized(found.description)
    seen: set[str] = set()
    for slot in slots:
        name = slot.get("name")
        if not name:
            problems.append(_nameless(where))
        elif _repeated(name, seen, problems, where):
            continue
        elif name == "submissionTime":
            values = _present_values(slot)
            submission_set.submission_time = values[0] if values else None
        elif name == "intendedRecipient":
            submission_set.intended_recipients = _present_values(slot)
        else:
            submission_set.extra_slots.append(Slot(name, _slot_values(slot)))
    for classification, node in zip(classifications, nodes, strict=True):
        if node == SS_LIMITED_METADATA:
            submission_set.limited_metadata = True
            continue
        if node == SS_NODE:
            continue
        scheme = _uuid_urn(classification.get("classificationScheme"))
        if scheme == SS_AUTHOR:
            submission_set.authors.append(_author(classification, problems, where))
        elif scheme == SS_CONTENT_TYPE_CODE:
            if submission_set.content_type_code is not None:
                problems.append(
                    registry_error(
                        XDS_REGISTRY_METADATA_ERROR, "contentTypeCode given more than once", where
                    )
                )
            submission_set.content_type_code = _coded(classification, problems, where)
        else:
            problems.append(_uninterpreted(classification, where))
    submission_set.patient_id = _single(ids, SS_PATIENT_ID, problems, where, "patientId")
    submission_set.unique_id = _single(ids, SS_UNIQUE_ID, problems, where, "uniqueId")
    submission_set.source_id = _single(ids, SS_SOURCE_ID, problems, where, "sourceId")
    return submission_set


def _parse_association(
    element: etree._Element, loose: dict[str, list[etree._Element]], problems: list[RegistryError]
) -> Association:
    """An Association with its Slots and its Classifications, nested or loose (classifiedObject
    naming it), in that order; the Slots' problems are recorded before the Classifications'."""
    association_id = element.get("id") or ""
    where = f"Association {association_id}"
    slots: list[etree._Element] = []
    nested: list[etree._Element] = []
    for child in element[:]:
        tag = child.tag
        if tag == _SLOT:
            slots.append(child)
        elif tag == _CLASSIFICATION:
            nested.append(child)
    association = Association(
        id=association_id,
        type=element.get("associationType") or "",
        source=element.get("sourceObject") or "",
        target=element.get("targetObject") or "",
        slots=_slots(slots, problems, where),
        status=element.get("status") or None,
    )
    for classification in nested + loose.get(association_id, []):
        association.classifications.append(
            AssociationClassification(
                classification.get("classificationScheme") or "",
                _coded(classification, problems, where),
            )
        )
    return association


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.capitalize() for part in rest)


def parse_submission(
    element: etree._Element, attachments: dict[str, Attachment] | None = None
) -> Submission:
    """Read the body of an ITI-41 or ITI-42 request.

    Raises NotASubmission when `element` is neither request, and MtomError when an
    xop:Include names a MIME part that is not there. Metadata problems go to `problems`.
    """
    submission = Submission()
    documents: list[etree._Element] = []
    tag = element.tag
    if tag == _PROVIDE_AND_REGISTER:
        submission.provide_and_register = True
        request = None
        for child in element[:]:  # the first SubmitObjectsRequest, and every Document
            child_tag = child.tag
            if child_tag == _DOCUMENT:
                documents.append(child)
            elif child_tag == _SUBMIT_OBJECTS and request is None:
                request = child
        if request is None:
            raise NotASubmission(
                "ProvideAndRegisterDocumentSetRequest without SubmitObjectsRequest"
            )
    elif tag == _SUBMIT_OBJECTS:
        request = element
    else:
        raise NotASubmission(f"{etree.QName(element).localname} is not a submission request")
    problems = submission.problems
    objects: list[etree._Element] = []
    for child in request[:]:  # the first RegistryObjectList
        if child.tag == _REGISTRY_OBJECT_LIST:
            objects = child[:]
            break
    loose: dict[str, list[etree._Element]] = {}
    for obj in objects:
        if obj.tag == _CLASSIFICATION:
            loose.setdefault(obj.get("classifiedObject") or "", []).append(obj)
    for obj in objects:
        tag = obj.tag
        if tag == _EXTRINSIC_OBJECT:
            submission.entries.append(_parse_entry(obj, loose, problems))
        elif tag == _REGISTRY_PACKAGE:
            package = _parse_package(obj, loose, problems)
            if isinstance(package, SubmissionSet):
                submission.submission_sets.append(package)
            elif isinstance(package, Folder):
                submission.folders.append(package)
        elif tag == _ASSOCIATION:
            submission.associations.append(_parse_association(obj, loose, problems))
        elif tag == _OBJECT_REF:
            submission.object_refs.append(obj.get("id") or "")
    named = {o.get("id") or "" for o in objects if o.tag != _CLASSIFICATION}
    for classified, orphans in loose.items():
        if classified not in named:  # it classifies nothing here: refused, not dropped
            problems += [_uninterpreted(c, f"Classification of {classified!r}") for c in orphans]
    if submission.provide_and_register:
        for document in documents:
            document_id = document.get("id") or ""
            where = f"Document {document_id}"
            if document_id in submission.documents:
                problems.append(
                    registry_error(
                        XDS_REPOSITORY_METADATA_ERROR, "two Documents carry the same id", where
                    )
                )
                continue
            try:
                submission.documents[document_id] = document_content(document, attachments or {})
            except MtomError:
                raise  # a broken package, not a metadata problem: SOAP Fault
            except ValueError as exc:
                problems.append(registry_error(XDS_REPOSITORY_METADATA_ERROR, str(exc), where))
    return submission


# --------------------------------------------------------------------------- writing
#
# An ITI-18 LeafClass answer builds about a hundred elements per DocumentEntry, for up to
# hundreds of entries: the builders below use prebuilt qualified names and attribute dicts
# (no per-call Clark-notation formatting, no keyword-argument dicts) and derive the stable
# ids with one SHA-1 instead of a uuid.UUID round trip. The elements, attribute order and
# ids are those of the straightforward construction, byte for byte.

_SubElement = etree.SubElement
_URL_NAMESPACE = uuid.NAMESPACE_URL.bytes


def stable_id(*parts: str) -> str:
    """A urn:uuid derived from its parts, so that the same object gets the same id each time.

    The name-based UUID version 5 of RFC 4122 (uuid.uuid5 in the URL namespace) of the parts
    joined by "|", computed on the hex digest: version nibble 5, variant bits 10.
    """
    return _uuid5_text(hashlib.sha1(_URL_NAMESPACE + "|".join(parts).encode("utf-8")).hexdigest())


# The variant nibble of a version 5 UUID for each hex digit of the digest (bits 10xx).
_VARIANT = {f"{i:x}": "89ab"[i & 3] for i in range(16)}


def _uuid5_text(h: str) -> str:
    return f"urn:uuid:{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


@dataclass(frozen=True, slots=True)
class StableIds:
    """`stable_id(owner, *parts)` for the many ids of one owner (a DocumentEntry has about
    ten): the hash of the shared "namespace + owner|" prefix is computed once and copied."""

    prefix: Any  # a hashlib SHA-1 object fed with the namespace and "owner|"

    @classmethod
    def of(cls, owner: str) -> StableIds:
        return cls(hashlib.sha1(_URL_NAMESPACE + owner.encode("utf-8") + b"|"))

    def __call__(self, *parts: str) -> str:
        h = self.prefix.copy()
        h.update("|".join(parts).encode("utf-8"))
        return _uuid5_text(h.hexdigest())


def _add_slot(parent: etree._Element, name: str, values: Iterable[str | None]) -> None:
    values = [v for v in values if v]
    if not values:
        return
    value_list = _SubElement(_SubElement(parent, _SLOT, {"name": name}), _VALUE_LIST)
    for value in values:
        _SubElement(value_list, _VALUE).text = value


def _add_slot_value(parent: etree._Element, name: str, value: str | None) -> None:
    """_add_slot for a single value, without building a list."""
    if value:
        value_list = _SubElement(_SubElement(parent, _SLOT, {"name": name}), _VALUE_LIST)
        _SubElement(value_list, _VALUE).text = value


def _add_localized(parent: etree._Element, local: str, value: str | None) -> None:
    if value:
        holder = _SubElement(parent, _LOCALIZED_HOLDERS.get(local) or _rim(local))
        _SubElement(holder, _LOCALIZED_STRING, {"value": value})


_LOCALIZED_HOLDERS = {"Name": _NAME, "Description": _DESCRIPTION}


def _add_coded(parent: etree._Element, owner: str, scheme: str, coded: Coded, index: int) -> None:
    element = _SubElement(
        parent,
        _CLASSIFICATION,
        {
            "id": stable_id(owner, scheme, str(index)),
            "objectType": OBJECT_TYPE_CLASSIFICATION,
            "classificationScheme": scheme,
            "classifiedObject": owner,
            "nodeRepresentation": coded.code,
        },
    )
    _add_slot_value(element, "codingScheme", coded.scheme)
    if coded.display:
        _SubElement(_SubElement(element, _NAME), _LOCALIZED_STRING, {"value": coded.display})


def _add_author(
    parent: etree._Element, owner: str, scheme: str, author: Author, index: int
) -> None:
    element = _SubElement(
        parent,
        _CLASSIFICATION,
        {
            "id": stable_id(owner, scheme, str(index)),
            "objectType": OBJECT_TYPE_CLASSIFICATION,
            "classificationScheme": scheme,
            "classifiedObject": owner,
            "nodeRepresentation": "",
        },
    )
    _add_slot_value(element, "authorPerson", author.person)
    _add_slot(element, "authorInstitution", author.institutions)
    _add_slot(element, "authorRole", author.roles)
    _add_slot(element, "authorSpecialty", author.specialties)
    _add_slot(element, "authorTelecommunication", author.telecoms)


def _add_external_id(parent: etree._Element, owner: str, scheme: str, value: str | None) -> None:
    if not value:
        return
    element = _SubElement(
        parent,
        _EXTERNAL_IDENTIFIER,
        {
            "id": stable_id(owner, scheme),
            "objectType": OBJECT_TYPE_EXTERNAL_IDENTIFIER,
            "registryObject": owner,
            "identificationScheme": scheme,
            "value": value,
        },
    )
    _add_localized(element, "Name", EXTERNAL_IDENTIFIER_NAMES.get(scheme))


# (slot name or classification scheme, DocumentEntry field), in the order entry_to_element
# writes them (ebrim_text writes the same).
ENTRY_SLOT_FIELDS = tuple((n, f) for n, f in _ENTRY_SLOTS.items() if n != "homeCommunityId")
ENTRY_LIST_SLOT_FIELDS = tuple(_ENTRY_LIST_SLOTS.items())
ENTRY_CODE_FIELDS = tuple(_ENTRY_CODES.items())
ENTRY_CODE_LIST_FIELDS = tuple(_ENTRY_CODE_LISTS.items())
_RIM_NSMAP = {"rim": NS_RIM}


def entry_to_element(entry: DocumentEntry) -> etree._Element:
    """rim:ExtrinsicObject for an ITI-18 LeafClass answer (element order of the ebRIM schema)."""
    attributes = {"id": entry.id, "objectType": entry.object_type}
    if entry.mime_type:
        attributes["mimeType"] = entry.mime_type
    if entry.status:
        attributes["status"] = entry.status
    if entry.home:
        attributes["home"] = entry.home
    if entry.logical_id:
        attributes["lid"] = entry.logical_id
    element = etree.Element(_EXTRINSIC_OBJECT, attributes, nsmap=_RIM_NSMAP)
    for slot_name, attr in ENTRY_SLOT_FIELDS:
        _add_slot_value(element, slot_name, getattr(entry, attr))
    for slot_name, attr in ENTRY_LIST_SLOT_FIELDS:
        _add_slot(element, slot_name, getattr(entry, attr))
    for slot in entry.extra_slots:
        _add_slot(element, slot.name, slot.values)
    _add_localized(element, "Name", entry.title)
    _add_localized(element, "Description", entry.comments)
    if entry.version:
        _SubElement(element, _VERSION_INFO, {"versionName": entry.version})
    for index, author in enumerate(entry.authors):
        _add_author(element, entry.id, DE_AUTHOR, author, index)
    for scheme, attr in ENTRY_CODE_FIELDS:
        coded = getattr(entry, attr)
        if coded is not None:
            _add_coded(element, entry.id, scheme, coded, 0)
    for scheme, attr in ENTRY_CODE_LIST_FIELDS:
        for index, coded in enumerate(getattr(entry, attr)):
            _add_coded(element, entry.id, scheme, coded, index)
    if entry.limited_metadata:
        _SubElement(
            element,
            _CLASSIFICATION,
            {
                "id": stable_id(entry.id, DE_LIMITED_METADATA),
                "classifiedObject": entry.id,
                "classificationNode": DE_LIMITED_METADATA,
            },
        )
    _add_external_id(element, entry.id, DE_PATIENT_ID, entry.patient_id)
    _add_external_id(element, entry.id, DE_UNIQUE_ID, entry.unique_id)
    return element


def submission_set_to_element(submission_set: SubmissionSet) -> etree._Element:
    """rim:RegistryPackage with its SubmissionSet classification inside."""
    attributes = {"id": submission_set.id, "objectType": OBJECT_TYPE_REGISTRY_PACKAGE}
    if submission_set.status:
        attributes["status"] = submission_set.status
    if submission_set.home:
        attributes["home"] = submission_set.home
    element = etree.Element(_rim("RegistryPackage"), attributes, nsmap={"rim": NS_RIM})
    _add_slot(element, "submissionTime", [submission_set.submission_time])
    _add_slot(element, "intendedRecipient", submission_set.intended_recipients)
    for slot in submission_set.extra_slots:
        _add_slot(element, slot.name, slot.values)
    _add_localized(element, "Name", submission_set.title)
    _add_localized(element, "Description", submission_set.comments)
    for index, author in enumerate(submission_set.authors):
        _add_author(element, submission_set.id, SS_AUTHOR, author, index)
    if submission_set.content_type_code is not None:
        _add_coded(
            element, submission_set.id, SS_CONTENT_TYPE_CODE, submission_set.content_type_code, 0
        )
    etree.SubElement(
        element,
        _rim("Classification"),
        id=stable_id(submission_set.id, SS_NODE),
        objectType=OBJECT_TYPE_CLASSIFICATION,
        classifiedObject=submission_set.id,
        classificationNode=SS_NODE,
    )
    _add_external_id(element, submission_set.id, SS_UNIQUE_ID, submission_set.unique_id)
    _add_external_id(element, submission_set.id, SS_SOURCE_ID, submission_set.source_id)
    _add_external_id(element, submission_set.id, SS_PATIENT_ID, submission_set.patient_id)
    return element


def folder_to_element(folder: Folder) -> etree._Element:
    """rim:RegistryPackage with its Folder classification inside (ITI TF-3 4.2.3.3)."""
    attributes = {"id": folder.id, "objectType": OBJECT_TYPE_REGISTRY_PACKAGE}
    if folder.status:
        attributes["status"] = folder.status
    element = etree.Element(_rim("RegistryPackage"), attributes, nsmap={"rim": NS_RIM})
    _add_slot(element, "lastUpdateTime", [folder.last_update_time])
    _add_localized(element, "Name", folder.title)
    _add_localized(element, "Description", folder.comments)
    for index, coded in enumerate(folder.codes):
        _add_coded(element, folder.id, FOLDER_CODE_LIST, coded, index)
    etree.SubElement(
        element,
        _rim("Classification"),
        id=stable_id(folder.id, FOLDER_NODE),
        objectType=OBJECT_TYPE_CLASSIFICATION,
        classifiedObject=folder.id,
        classificationNode=FOLDER_NODE,
    )
    _add_external_id(element, folder.id, FOLDER_UNIQUE_ID, folder.unique_id)
    _add_external_id(element, folder.id, FOLDER_PATIENT_ID, folder.patient_id)
    return element


def association_to_element(association: Association) -> etree._Element:
    attributes = {
        "id": association.id,
        "objectType": OBJECT_TYPE_ASSOCIATION,
        "associationType": association.type,
        "sourceObject": association.source,
        "targetObject": association.target,
    }
    if association.status:
        attributes["status"] = association.status
    element = etree.Element(_rim("Association"), attributes, nsmap={"rim": NS_RIM})
    for slot in association.slots:
        _add_slot(element, slot.name, slot.values)
    for index, classification in enumerate(association.classifications):
        _add_coded(element, association.id, classification.scheme, classification.coded, index)
    return element


def object_ref_element(object_id: str, home: str | None = None) -> etree._Element:
    element = etree.Element(_rim("ObjectRef"), {"id": object_id}, nsmap={"rim": NS_RIM})
    if home:
        element.set("home", home)
    return element


def association_id(source: str, target: str, kind: str) -> str:
    """The stable urn:uuid of an association rebuilt from FHIR (same triple, same id)."""
    return stable_id("association", source, target, kind)
