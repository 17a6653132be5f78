"""Metadata validation of an ITI-41 / ITI-42 submission, returning RegistryErrors.

Two profiles: `XDS_PROFILE` applies IHE XDS.b (ITI TF-3 Table 4.3.1-3, Document Source
column); `DMP_PROFILE` adds the PDSm4DMP requirements of the reference (legalAuthenticator,
serviceStartTime, sourcePatientInfo, title, 1..4 confidentialityCodes, at least one author,
patientId an INS, French code systems). Attributes the repository/registry fills in itself
on ITI-41 (entryUUID, logicalId, availabilityStatus, hash, size, repositoryUniqueId) are not
required from the source there, but checked against the document when given; on ITI-42
(register only) hash, size and repositoryUniqueId are required.

What this module cannot know (the patient record exists and is open, a uniqueId is already
stored, a replaced document is current and of the same patient) is left to the caller, who
has the store: `external_targets` lists the entryUUIDs a submission points at.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fhir_server.documents import model
from fhir_server.resources.dmp_value_sets import default_value_sets
from fhir_server.resources.ins import nir_key_error
from fhir_server.terminology import (
    INS_OIDS,
    OID_INS_NIA,
)
from ihe_xds import association_documentation, extra_metadata
from ihe_xds.codes import (
    DMP_SCHEMES,
    is_oid,
    system_for_scheme,
)
from ihe_xds.ebrim import Coded, DocumentEntry, Submission, SubmissionSet
from ihe_xds.errors import (
    XDS_MISSING_DOCUMENT,
    XDS_MISSING_DOCUMENT_METADATA,
    XDS_PATIENT_ID_DOES_NOT_MATCH,
    XDS_REGISTRY_DUPLICATE_UNIQUE_ID_IN_MESSAGE,
    XDS_REGISTRY_METADATA_ERROR,
    XDS_REPOSITORY_METADATA_ERROR,
    RegistryError,
    registry_error,
)
from ihe_xds.hl7v2 import parse_cx, xds_time_error
from ihe_xds.vocabulary import (
    ASSOC_HAS_MEMBER,
    DOCUMENT_RELATIONSHIPS,
    OBJECT_TYPE_ON_DEMAND,
    OBJECT_TYPE_STABLE,
)

_MIME = re.compile(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$")
_LANGUAGE = re.compile(r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$")
_HASH = re.compile(r"^[0-9a-fA-F]{40}$")


@dataclass(frozen=True, slots=True)
class ValidationProfile:
    """Which rules apply: plain IHE XDS.b, or XDS.b plus the DMP (PDSm4DMP) requirements."""

    name: str
    dmp: bool


XDS_PROFILE = ValidationProfile("xds", dmp=False)
DMP_PROFILE = ValidationProfile("dmp", dmp=True)


# The forms of an entryUUID and a uniqueId are the document model's, at every door.
is_uuid_urn = model.is_uuid_urn
is_unique_id = model.is_xds_unique_id


def patient_id_error(value: str | None, *, require_ins: bool) -> str | None:
    """What is wrong with a patientId CX (INS key checked for INS-NIR OIDs), or None."""
    cx, problem = parse_cx(value)
    if cx is None:
        return problem
    if cx.authority_oid in INS_OIDS:
        if cx.authority_oid != OID_INS_NIA:
            key_problem = nir_key_error(cx.value)
            if key_problem:
                return key_problem
    elif require_ins:
        return f"the patient must be identified by an INS (OID {cx.authority_oid} is not an INS)"
    return None


def validate_submission(
    submission: Submission, profile: ValidationProfile = XDS_PROFILE
) -> list[RegistryError]:
    """Every metadata problem of the submission (empty list = acceptable metadata)."""
    errors = list(submission.problems)
    errors += _check_structure(submission)
    submission_set = submission.submission_set
    if submission_set is not None:
        errors += _check_submission_set(submission_set)
    for entry in submission.entries:
        errors += _check_entry(entry, submission, profile)
    errors += _check_unique_ids(submission)
    errors += _check_patient_ids(submission)
    if submission.provide_and_register:
        errors += _check_pairing(submission)
    errors += _check_associations(submission)
    errors += extra_metadata.submission_problems(submission)
    return errors


def external_targets(submission: Submission) -> dict[str, list[str]]:
    """entryUUIDs the submission refers to outside itself, by association type.

    The caller checks them in the store: RPLC / XFRM_RPLC targets must be current
    (XDSReplaceFailed) and of the same patient (XDSPatientIdDoesNotMatch); HasMember
    "Reference" targets must exist.
    """
    local = {e.id for e in submission.entries} | {s.id for s in submission.submission_sets}
    found: dict[str, list[str]] = {}
    for association in submission.associations:
        if association.target not in local and is_uuid_urn(association.target):
            found.setdefault(association.type, []).append(association.target)
    return found


# --------------------------------------------------------------------------- checks


def _err(code: str, context: str, location: str) -> RegistryError:
    return registry_error(code, context, location)


def _entry_name(entry: DocumentEntry) -> str:
    return f"DocumentEntry {entry.id}" + (f" ({entry.unique_id})" if entry.unique_id else "")


def _check_structure(submission: Submission) -> list[RegistryError]:
    errors = []
    if not submission.submission_sets:
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR, "the submission has no SubmissionSet", "SubmissionSet"
            )
        )
    elif len(submission.submission_sets) > 1:
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                "the submission has more than one SubmissionSet",
                "SubmissionSet",
            )
        )
    for folder in submission.folders:
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                "Folders are not supported by this registry",
                f"Folder {folder.id}",
            )
        )
    if not submission.entries and not submission.folders:
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                "the submission has no DocumentEntry",
                "RegistryObjectList",
            )
        )
    ids: set[str] = set()
    objects = [("DocumentEntry", e.id) for e in submission.entries]
    objects += [("SubmissionSet", s.id) for s in submission.submission_sets]
    objects += [("Association", a.id) for a in submission.associations]
    for kind, object_id in objects:
        if not object_id:
            errors.append(_err(XDS_REGISTRY_METADATA_ERROR, f"{kind} without an id", kind))
        elif object_id[:9].lower() == "urn:uuid:" and not is_uuid_urn(object_id):
            # An id given as a UUID becomes the object's entryUUID (ITI TF-3 4.2.3.1.4): it
            # must be one, never stored as sent (issue #19, point 1).
            errors.append(
                _err(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"id {object_id} is not a UUID (urn:uuid: and 8-4-4-4-12 hexadecimal digits)",
                    f"{kind} {object_id}",
                )
            )
        elif object_id in ids:
            errors.append(
                _err(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"id {object_id} used by two objects",
                    f"{kind} {object_id}",
                )
            )
        ids.add(object_id)
    return errors


def _check_submission_set(submission_set: SubmissionSet) -> list[RegistryError]:
    where = f"SubmissionSet {submission_set.id}"
    errors = []
    if not is_unique_id(submission_set.unique_id):
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                _bad("uniqueId", submission_set.unique_id),
                f"{where} uniqueId",
            )
        )
    if not is_oid(submission_set.source_id):
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                _bad("sourceId", submission_set.source_id),
                f"{where} sourceId",
            )
        )
    problem = patient_id_error(submission_set.patient_id, require_ins=False)
    if problem:
        errors.append(
            _err(XDS_REGISTRY_METADATA_ERROR, f"patientId: {problem}", f"{where} patientId")
        )
    errors += _check_time(submission_set.submission_time, f"{where} submissionTime", required=True)
    if submission_set.content_type_code is None:
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                "contentTypeCode is required",
                f"{where} contentTypeCode",
            )
        )
    else:
        errors += _check_code(submission_set.content_type_code, f"{where} contentTypeCode", None)
    return errors


def _bad(name: str, value: str | None) -> str:
    return f"{name} is required" if not value else f"{name} {value!r} is not valid"


def _check_time(value: str | None, location: str, *, required: bool) -> list[RegistryError]:
    if value is None:
        if required:
            return [
                _err(XDS_REGISTRY_METADATA_ERROR, f"{location.split()[-1]} is required", location)
            ]
        return []
    problem = xds_time_error(value)
    return [_err(XDS_REGISTRY_METADATA_ERROR, problem, location)] if problem else []


def _check_code(
    coded: Coded, location: str, allowed: tuple[str, ...] | None
) -> list[RegistryError]:
    if not coded.code:
        return [_err(XDS_REGISTRY_METADATA_ERROR, "code without nodeRepresentation", location)]
    if not coded.scheme:
        return [
            _err(XDS_REGISTRY_METADATA_ERROR, f"code {coded.code} without codingScheme", location)
        ]
    if allowed is not None and coded.scheme not in allowed:
        return [
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                f"code {coded.code} from {coded.scheme}; the DMP expects {' or '.join(allowed)}",
                location,
            )
        ]
    return []


def _check_entry(
    entry: DocumentEntry, submission: Submission, profile: ValidationProfile
) -> list[RegistryError]:
    where = _entry_name(entry)
    errors: list[RegistryError] = []

    def need(name: str, present: object) -> None:
        if not present:
            errors.append(
                _err(XDS_REGISTRY_METADATA_ERROR, f"{name} is required", f"{where} {name}")
            )

    if entry.object_type == OBJECT_TYPE_ON_DEMAND:
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                "on-demand DocumentEntries cannot be submitted",
                f"{where} objectType",
            )
        )
    elif entry.object_type != OBJECT_TYPE_STABLE:
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                _bad("objectType", entry.object_type),
                f"{where} objectType",
            )
        )
    if entry.mime_type is None:
        need("mimeType", None)
    elif not _MIME.fullmatch(entry.mime_type):
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR, _bad("mimeType", entry.mime_type), f"{where} mimeType"
            )
        )
    if not is_unique_id(entry.unique_id):
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR, _bad("uniqueId", entry.unique_id), f"{where} uniqueId"
            )
        )
    problem = patient_id_error(entry.patient_id, require_ins=profile.dmp)
    if problem:
        errors.append(
            _err(XDS_REGISTRY_METADATA_ERROR, f"patientId: {problem}", f"{where} patientId")
        )
    if entry.source_patient_id is None:
        need("sourcePatientId", None)
    else:
        _, problem = parse_cx(entry.source_patient_id)
        if problem:
            errors.append(
                _err(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"sourcePatientId: {problem}",
                    f"{where} sourcePatientId",
                )
            )
    errors += _check_time(entry.creation_time, f"{where} creationTime", required=True)
    errors += _check_time(
        entry.service_start_time, f"{where} serviceStartTime", required=profile.dmp
    )
    errors += _check_time(entry.service_stop_time, f"{where} serviceStopTime", required=False)
    if entry.language_code is None:
        need("languageCode", None)
    elif not _LANGUAGE.fullmatch(entry.language_code):
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                _bad("languageCode", entry.language_code),
                f"{where} languageCode",
            )
        )
    before = len(errors)
    for name in (
        "classCode",
        "typeCode",
        "formatCode",
        "healthcareFacilityTypeCode",
        "practiceSettingCode",
    ):
        coded = getattr(entry, _snake(name))
        if coded is None:
            need(name, None)
        else:
            errors += _check_code(
                coded, f"{where} {name}", DMP_SCHEMES[name] if profile.dmp else None
            )
    if profile.dmp and len(errors) == before:  # each code well formed, from its scheme
        errors += _check_dmp_type_and_class(entry, where)
    errors += _check_confidentiality(entry, where, profile)
    for coded in entry.event_codes:
        errors += _check_code(coded, f"{where} eventCodeList", None)
    errors += _check_hash_and_size(entry, submission, where)
    if profile.dmp:
        need("legalAuthenticator", entry.legal_authenticator)
        need("sourcePatientInfo", entry.source_patient_info)
        need("title", entry.title)
        need("author", entry.authors)
    for index, author in enumerate(entry.authors):
        if not (author.person or author.institutions):
            errors.append(
                _err(
                    XDS_REGISTRY_METADATA_ERROR,
                    "an author needs an authorPerson or an authorInstitution",
                    f"{where} author[{index}]",
                )
            )
    return errors


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


def _check_confidentiality(
    entry: DocumentEntry, where: str, profile: ValidationProfile
) -> list[RegistryError]:
    location = f"{where} confidentialityCode"
    codes = entry.confidentiality_codes
    if not codes:
        return [_err(XDS_REGISTRY_METADATA_ERROR, "confidentialityCode is required", location)]
    errors = []
    if profile.dmp and len(codes) > 4:
        errors.append(
            _err(
                XDS_REGISTRY_METADATA_ERROR, "the DMP accepts 1 to 4 confidentialityCodes", location
            )
        )
    for coded in codes:
        found = _check_code(
            coded, location, DMP_SCHEMES["confidentialityCode"] if profile.dmp else None
        )
        errors += found
        if found or not profile.dmp:
            continue
        # JDV_J58, the same judgement as the FHIR faces' (`resources.dmp_value_sets`).
        problem = default_value_sets().label_problem(_coded(coded))
        if problem:
            errors.append(_err(XDS_REGISTRY_METADATA_ERROR, problem, location))
    return errors


def _coded(coded: Coded) -> tuple[str, str]:
    """An XDS code as the (FHIR system, code) the value sets are judged on."""
    return system_for_scheme(coded.scheme) or "", coded.code or ""


def _check_dmp_type_and_class(entry: DocumentEntry, where: str) -> list[RegistryError]:
    """typeCode in JDV_J66, classCode in JDV_J57, the two agreeing per ASS_X16."""
    value_sets = default_value_sets()
    types = [_coded(entry.type_code)] if entry.type_code is not None else []
    classes = [_coded(entry.class_code)] if entry.class_code is not None else []
    errors = []
    for name, codes, judge in (
        ("typeCode", types, value_sets.type_problem),
        ("classCode", classes, value_sets.class_problem),
    ):
        problem = judge(codes) if codes else None
        if problem:
            errors.append(_err(XDS_REGISTRY_METADATA_ERROR, problem, f"{where} {name}"))
    problem = value_sets.pair_problem(types, classes)
    if problem:
        errors.append(_err(XDS_REGISTRY_METADATA_ERROR, problem, f"{where} typeCode"))
    return errors


def _check_hash_and_size(
    entry: DocumentEntry, submission: Submission, where: str
) -> list[RegistryError]:
    errors = []
    code = (
        XDS_REPOSITORY_METADATA_ERROR
        if submission.provide_and_register
        else XDS_REGISTRY_METADATA_ERROR
    )
    if not submission.provide_and_register:
        for name, value in (
            ("hash", entry.hash),
            ("size", entry.size),
            ("repositoryUniqueId", entry.repository_unique_id),
        ):
            if not value:
                errors.append(
                    _err(XDS_REGISTRY_METADATA_ERROR, f"{name} is required", f"{where} {name}")
                )
    if entry.hash is not None and not _HASH.fullmatch(entry.hash):
        errors.append(_err(code, f"hash {entry.hash!r} is not a hex SHA-1", f"{where} hash"))
    if entry.size is not None and not entry.size.isdigit():
        errors.append(_err(code, f"size {entry.size!r} is not a number", f"{where} size"))
    if entry.repository_unique_id is not None and not is_oid(entry.repository_unique_id):
        errors.append(
            _err(
                code,
                _bad("repositoryUniqueId", entry.repository_unique_id),
                f"{where} repositoryUniqueId",
            )
        )
    document = submission.documents.get(entry.id)
    if document is not None:
        if entry.hash and _HASH.fullmatch(entry.hash):
            actual = submission.sha1(entry.id).hex()
            if entry.hash.lower() != actual:
                errors.append(
                    _err(
                        XDS_REPOSITORY_METADATA_ERROR,
                        f"hash {entry.hash} does not match the document (SHA-1 {actual})",
                        f"{where} hash",
                    )
                )
        if entry.size and entry.size.isdigit() and int(entry.size) != len(document):
            errors.append(
                _err(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"size {entry.size} does not match the document ({len(document)} bytes)",
                    f"{where} size",
                )
            )
    return errors


def _check_unique_ids(submission: Submission) -> list[RegistryError]:
    seen: dict[str, str] = {}
    errors = []
    named = [(_entry_name(e), e.unique_id) for e in submission.entries]
    named += [(f"SubmissionSet {s.id}", s.unique_id) for s in submission.submission_sets]
    for name, unique_id in named:
        if not unique_id:
            continue
        if unique_id in seen:
            errors.append(
                _err(
                    XDS_REGISTRY_DUPLICATE_UNIQUE_ID_IN_MESSAGE,
                    f"uniqueId {unique_id} is used by {seen[unique_id]} and {name}",
                    f"{name} uniqueId",
                )
            )
        else:
            seen[unique_id] = name
    return errors


def _check_patient_ids(submission: Submission) -> list[RegistryError]:
    submission_set = submission.submission_set
    if submission_set is None or not submission_set.patient_id:
        return []
    return [
        _err(
            XDS_PATIENT_ID_DOES_NOT_MATCH,
            f"patientId {entry.patient_id} differs from the SubmissionSet's {submission_set.patient_id}",
            f"{_entry_name(entry)} patientId",
        )
        for entry in submission.entries
        if entry.patient_id and entry.patient_id != submission_set.patient_id
    ]


def _check_pairing(submission: Submission) -> list[RegistryError]:
    entry_ids = {e.id for e in submission.entries}
    errors = [
        _err(
            XDS_MISSING_DOCUMENT,
            "no Document carries this DocumentEntry's content",
            _entry_name(entry),
        )
        for entry in submission.entries
        if entry.id not in submission.documents
    ]
    errors += [
        _err(
            XDS_MISSING_DOCUMENT_METADATA,
            "no DocumentEntry describes this Document",
            f"Document {doc_id}",
        )
        for doc_id in submission.documents
        if doc_id not in entry_ids
    ]
    return errors


def _check_associations(submission: Submission) -> list[RegistryError]:
    entries = {e.id for e in submission.entries}
    sets = {s.id for s in submission.submission_sets}
    folders = {f.id for f in submission.folders}
    errors = []
    members: set[str] = set()
    for association in submission.associations:
        where = f"Association {association.id}"
        errors += association_documentation.association_problems(association)
        if association.type == ASSOC_HAS_MEMBER:
            if association.source in folders:
                continue  # the Folder itself is already refused
            if association.source not in sets:
                errors.append(
                    _err(
                        XDS_REGISTRY_METADATA_ERROR,
                        f"HasMember source {association.source!r} is not the SubmissionSet",
                        f"{where} sourceObject",
                    )
                )
                continue
            status = association.submission_set_status
            if association.target in entries:
                if status != "Original":
                    errors.append(
                        _err(
                            XDS_REGISTRY_METADATA_ERROR,
                            "SubmissionSetStatus must be Original for a member submitted here",
                            f"{where} SubmissionSetStatus",
                        )
                    )
                members.add(association.target)
            elif (
                association.target in folders
                or is_uuid_urn(association.target)
                and status == "Reference"
            ):
                continue
            else:
                errors.append(
                    _err(
                        XDS_REGISTRY_METADATA_ERROR,
                        f"HasMember target {association.target!r} is neither in the submission "
                        "nor a urn:uuid: referenced with SubmissionSetStatus Reference",
                        f"{where} targetObject",
                    )
                )
        elif association.type in DOCUMENT_RELATIONSHIPS:
            if association.source not in entries:
                errors.append(
                    _err(
                        XDS_REGISTRY_METADATA_ERROR,
                        f"source {association.source!r} is not a DocumentEntry of the submission",
                        f"{where} sourceObject",
                    )
                )
            if association.target not in entries and not is_uuid_urn(association.target):
                errors.append(
                    _err(
                        XDS_REGISTRY_METADATA_ERROR,
                        f"target {association.target!r} is neither in the submission nor a urn:uuid: entryUUID",
                        f"{where} targetObject",
                    )
                )
        else:
            errors.append(
                _err(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"unsupported associationType {association.type!r}",
                    f"{where} associationType",
                )
            )
    if submission.submission_sets:
        errors += [
            _err(
                XDS_REGISTRY_METADATA_ERROR,
                "the DocumentEntry is not a member of the SubmissionSet (HasMember missing)",
                _entry_name(entry),
            )
            for entry in submission.entries
            if entry.id not in members
        ]
    return errors
