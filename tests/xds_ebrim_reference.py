"""The ebRIM reading of ihe_xds.ebrim as it was before its one-loop rewrite (issue 6, "Speed").

Kept verbatim as the reference the faster reading is checked against
(tests/unit/test_xds_performance_paths.py): same Submission, same problems in the same
order, same exceptions, whatever the shape of the metadata.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from lxml import etree

from ihe_xds.ebrim import (
    Association,
    AssociationClassification,
    Author,
    Coded,
    DocumentEntry,
    Folder,
    NotASubmission,
    Slot,
    Submission,
    SubmissionSet,
)
from ihe_xds.errors import (
    XDS_REGISTRY_METADATA_ERROR,
    XDS_REPOSITORY_METADATA_ERROR,
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
    FOLDER_NODE,
    FOLDER_PATIENT_ID,
    FOLDER_UNIQUE_ID,
    NS_LCM,
    NS_RIM,
    NS_XDSB,
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


@dataclass(slots=True)
class _Children:
    """The ebRIM children of one registry object, sorted by kind in document order."""

    slots: list[etree._Element] = field(default_factory=list)
    classifications: list[etree._Element] = field(default_factory=list)
    external_ids: list[etree._Element] = field(default_factory=list)
    name: etree._Element | None = None  # the first rim:Name
    description: etree._Element | None = None  # the first rim:Description
    version: etree._Element | None = None  # the first rim:VersionInfo


def _children(element: etree._Element) -> _Children:
    found = _Children()
    slots, classifications, external_ids = found.slots, found.classifications, found.external_ids
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
    return found


def _slot_children(element: etree._Element) -> list[etree._Element]:
    return [child for child in element[:] if child.tag == _SLOT]


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
    elements: Iterable[etree._Element],
    problems: list[RegistryError],
    where: str,
    repeated_where: str | None = None,
) -> list[Slot]:
    # Issue #19 point 3: a Slot name given twice on one object is a problem, the first kept.
    slots = []
    seen: set[str] = set()
    for slot in elements:
        name = slot.get("name")
        if not name:
            problems.append(
                registry_error(XDS_REGISTRY_METADATA_ERROR, "Slot without a name", where)
            )
            continue
        if name in seen:
            problems.append(_repeated(name, repeated_where or where))
            continue
        seen.add(name)
        slots.append(Slot(name, _slot_values(slot)))
    return slots


def _repeated(name: str, where: str) -> RegistryError:
    return registry_error(
        XDS_REGISTRY_METADATA_ERROR,
        f"slot {name} is given twice; a Slot name is unique within its RegistryObject",
        f"{where} {name}",
    )


def _scheme_key(value: str | None) -> str | None:
    """A UUID URN compared in lower case (RFC 4122, RFC 8141), anything else as written."""
    return value.lower() if value and value.lower().startswith("urn:uuid:") else value


def _not_interpreted(classification: etree._Element, where: str) -> RegistryError:
    scheme = classification.get("classificationScheme")
    node = classification.get("classificationNode")
    named = f"classificationScheme {scheme!r}" if scheme else f"classificationNode {node!r}"
    return registry_error(
        XDS_REGISTRY_METADATA_ERROR,
        f"Classification {classification.get('id') or ''} ({named}) is not one this registry "
        "interprets here; it is refused rather than dropped",
        where,
    )


def _slot_values(slot: etree._Element) -> list[str]:
    """The stripped texts of the rim:ValueList/rim:Value children of a slot."""
    return [
        (value.text or "").strip()
        for value_list in slot[:]
        if value_list.tag == _VALUE_LIST
        for value in value_list[:]
        if value.tag == _VALUE
    ]


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
                problems.append(
                    registry_error(XDS_REGISTRY_METADATA_ERROR, "Slot without a name", where)
                )
            elif slot_name in seen:
                problems.append(_repeated(slot_name, where))
            else:
                seen.add(slot_name)
                if slot_name == "codingScheme":
                    schemes = _slot_values(child)
                    if len(schemes) > 1:
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
        code=element.get("nodeRepresentation") or "",
        scheme=schemes[0] if schemes else None,
        display=_localized(name),
    )


def _author(element: etree._Element, problems: list[RegistryError], where: str) -> Author:
    author = Author()
    for slot in _slots(_slot_children(element), problems, where, f"{where} author"):
        values = [v for v in slot.values if v]
        if slot.name == "authorPerson":
            if len(values) > 1:
                problems.append(
                    registry_error(
                        XDS_REGISTRY_METADATA_ERROR,
                        "authorPerson must have a single value",
                        f"{where} authorPerson",
                    )
                )
            author.person = values[0] if values else None
        elif slot.name == "authorInstitution":
            author.institutions = values
        elif slot.name == "authorRole":
            author.roles = values
        elif slot.name == "authorSpecialty":
            author.specialties = values
        elif slot.name == "authorTelecommunication":
            author.telecoms = values
    return author


def _classifications_of(
    element: etree._Element, children: _Children, loose: dict[str, list[etree._Element]]
) -> list[etree._Element]:
    return children.classifications + loose.get(element.get("id") or "", [])


def _external_ids(children: _Children) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for ext in children.external_ids:
        scheme = ext.get("identificationScheme") or ""
        found.setdefault(scheme, []).append((ext.get("value") or "").strip())
    return found


def _single(
    values: dict[str, list[str]], scheme: str, problems: list[RegistryError], where: str, name: str
) -> str | None:
    found = values.get(scheme) or []
    if len(found) > 1:
        problems.append(
            registry_error(
                XDS_REGISTRY_METADATA_ERROR, f"{name} given {len(found)} times", f"{where} {name}"
            )
        )
    return found[0] if found and found[0] else None


def _parse_entry(
    element: etree._Element, loose: dict[str, list[etree._Element]], problems: list[RegistryError]
) -> DocumentEntry:
    entry = DocumentEntry(id=element.get("id") or "")
    where = f"DocumentEntry {entry.id}"
    entry.object_type = element.get("objectType") or OBJECT_TYPE_STABLE
    entry.mime_type = element.get("mimeType") or None
    entry.status = element.get("status") or None
    entry.home = element.get("home") or None
    entry.logical_id = element.get("lid") or None
    children = _children(element)
    version = children.version
    entry.version = version.get("versionName") if version is not None else None
    entry.title = _localized(children.name)
    entry.comments = _localized(children.description)
    for slot in _slots(children.slots, problems, where):
        if slot.name in _ENTRY_SLOTS:
            values = [v for v in slot.values if v]
            if len(values) > 1:
                problems.append(
                    registry_error(
                        XDS_REGISTRY_METADATA_ERROR,
                        f"slot {slot.name} must have a single value",
                        f"{where} {slot.name}",
                    )
                )
            setattr(entry, _ENTRY_SLOTS[slot.name], values[0] if values else None)
        elif slot.name in _ENTRY_LIST_SLOTS:
            setattr(entry, _ENTRY_LIST_SLOTS[slot.name], [v for v in slot.values if v])
        else:
            entry.extra_slots.append(slot)
    for classification in _classifications_of(element, children, loose):
        scheme = _scheme_key(classification.get("classificationScheme"))
        node = _scheme_key(classification.get("classificationNode"))
        if node == DE_LIMITED_METADATA:
            entry.limited_metadata = True
        elif scheme == DE_AUTHOR:
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
            problems.append(_not_interpreted(classification, where))
    ids = _external_ids(children)
    entry.patient_id = _single(ids, DE_PATIENT_ID, problems, where, "patientId")
    entry.unique_id = _single(ids, DE_UNIQUE_ID, problems, where, "uniqueId")
    return entry


def _parse_package(
    element: etree._Element, loose: dict[str, list[etree._Element]], problems: list[RegistryError]
) -> SubmissionSet | Folder | None:
    package_id = element.get("id") or ""
    children = _children(element)
    classifications = _classifications_of(element, children, loose)
    nodes = {_scheme_key(c.get("classificationNode")) for c in classifications}
    ids = _external_ids(children)
    if FOLDER_NODE in nodes:
        where = f"Folder {package_id}"
        return Folder(
            id=package_id,
            unique_id=_single(ids, FOLDER_UNIQUE_ID, problems, where, "uniqueId"),
            patient_id=_single(ids, FOLDER_PATIENT_ID, problems, where, "patientId"),
            title=_localized(children.name),
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
    submission_set.title = _localized(children.name)
    submission_set.comments = _localized(children.description)
    for slot in _slots(children.slots, problems, where):
        if slot.name == "submissionTime":
            values = [v for v in slot.values if v]
            submission_set.submission_time = values[0] if values else None
        elif slot.name == "intendedRecipient":
            submission_set.intended_recipients = [v for v in slot.values if v]
        else:
            submission_set.extra_slots.append(slot)
    for classification in classifications:
        scheme = _scheme_key(classification.get("classificationScheme"))
        node = _scheme_key(classification.get("classificationNode"))
        if node == SS_LIMITED_METADATA:
            submission_set.limited_metadata = True
        elif node == SS_NODE:
            pass
        elif scheme == SS_AUTHOR:
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
            problems.append(_not_interpreted(classification, where))
    submission_set.patient_id = _single(ids, SS_PATIENT_ID, problems, where, "patientId")
    submission_set.unique_id = _single(ids, SS_UNIQUE_ID, problems, where, "uniqueId")
    submission_set.source_id = _single(ids, SS_SOURCE_ID, problems, where, "sourceId")
    return submission_set


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
    if element.tag == _PROVIDE_AND_REGISTER:
        submission.provide_and_register = True
        request = next(element.iterchildren(_SUBMIT_OBJECTS), None)
        if request is None:
            raise NotASubmission(
                "ProvideAndRegisterDocumentSetRequest without SubmitObjectsRequest"
            )
    elif element.tag == _SUBMIT_OBJECTS:
        request = element
    else:
        raise NotASubmission(f"{etree.QName(element).localname} is not a submission request")
    problems = submission.problems
    object_list = next(request.iterchildren(_REGISTRY_OBJECT_LIST), None)
    objects = list(object_list) if object_list is not None else []
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
            where = f"Association {obj.get('id') or ''}"
            association = Association(
                id=obj.get("id") or "",
                type=obj.get("associationType") or "",
                source=obj.get("sourceObject") or "",
                target=obj.get("targetObject") or "",
                slots=_slots(_slot_children(obj), problems, where),
                status=obj.get("status") or None,
            )
            for classification in _classifications_of(obj, _children(obj), loose):
                association.classifications.append(
                    AssociationClassification(
                        classification.get("classificationScheme") or "",
                        _coded(classification, problems, where),
                    )
                )
            submission.associations.append(association)
        elif tag == _OBJECT_REF:
            submission.object_refs.append(obj.get("id") or "")
    ids_here = {obj.get("id") or "" for obj in objects if obj.tag != _CLASSIFICATION}
    for classified, orphans in loose.items():
        if classified not in ids_here:
            problems.extend(
                _not_interpreted(orphan, f"Classification of {classified!r}") for orphan in orphans
            )
    if submission.provide_and_register:
        for document in element.iterchildren(_DOCUMENT):
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
