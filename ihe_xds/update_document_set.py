"""ITI-57 Update Document Set (IHE ITI TF-2b 3.57, XDS Metadata Update): the XDS door of the
DMP's TD3.3 (issue #20, deliverable 1).

A SubmitObjectsRequest on the registry endpoint (action urn:ihe:iti:2010:UpdateDocumentSet)
carrying a SubmissionSet and, for each document to update, either:

- a **metadata update**: a new version of the DocumentEntry (its `lid` the logicalId of the
  stored entry, a HasMember association from the SubmissionSet with the slot
  `PreviousVersion`), whose confidentialityCode list is the document's new labels (TD3.3a/b:
  MASQUE_PS, INVISIBLE_PATIENT...). Every other attribute it carries must be the stored
  one's: a metadata update here changes the confidentiality codes only
  (XDSMetadataUpdateOperationError otherwise);
- a **status update**: an association `urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus`
  from the SubmissionSet to the entry's entryUUID, with the slots `OriginalStatus` (checked
  against the stored status, XDSMetadataUpdateError) and `NewStatus`: Archived
  (urn:asip:ci-sis:2010:StatusType:Archived, TD3.3d), Approved (unarchive) or Deleted
  (urn:asip:ci-sis:2010:StatusType:Deleted, the logical deletion of TD3.3c).

Each is turned into a change of the current DocumentReference and written by
`service.patch.MetadataUpdates`, the very implementation of PATCH: the same rules on what
may change and on labels, the same access gate, version, notifications and AuditEvent. All
the updates of one request are made in one transaction, or none.

Metadata versions (ITI TF-2b 3.57.4.1.3.3.1, ITI TF-3 4.1.4; `documents.metadata_versions`):
- a metadata update makes a new registry object: the new DocumentEntry keeps the logicalID,
  gets its own entryUUID (the submitted id when it is a UUID, else one the registry makes,
  as for a symbolic id) and the version after the replaced one's; the replaced version is
  Deprecated. Here the new version is the DocumentReference's next version, its identifier
  the new entryUUID, the replaced entryUUIDs kept as identifiers of use `old`; ITI-18
  answers each version (GetDocuments by entryUUID, by logicalID, or by uniqueId at
  $MetadataLevel 2) with its own entryUUID, version and status;
- `lid` must be the document's logicalID and `PreviousVersion` its latest version
  (VersionInfo versionName as ITI-18 answers it), else XDSMetadataVersionError: an update of
  a version that is no longer the latest is refused, as a stale If-Match is 412 on the FHIR
  face;
- a status update names the entryUUID of the latest version: a Deprecated version's is
  XDSMetadataVersionError (its status is that of a replaced version, not to be changed);
- a change of status is no new version: the entry keeps its entryUUID and version.

Decisions:
- The entry is named by its logicalID / entryUUID (DocumentReference identifiers
  `urn:ietf:rfc:3986|urn:uuid:...`); one the requester may not read answers as an unknown
  one (UnresolvedReferenceException), as on the FHIR face (R18).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from lxml import etree

from fhir_server.access.requester import Requester
from fhir_server.audit.balp import security_labels_of
from fhir_server.documents import metadata_versions
from fhir_server.documents import model as document_model
from fhir_server.errors import FhirError
from fhir_server.resources.document_state import DELETED_STATUS, set_archived
from fhir_server.service.patch import Change, MetadataUpdates
from ihe_xds.ebrim import Coded, DocumentEntry, Submission, parse_submission
from ihe_xds.errors import (
    XDS_METADATA_UPDATE_ERROR,
    XDS_METADATA_UPDATE_OPERATION_ERROR,
    XDS_METADATA_VERSION_ERROR,
    XDS_REGISTRY_METADATA_ERROR,
    MalformedMessage,
    RegistryError,
    registry_error,
    update_error,
)
from ihe_xds.mapping import availability_of, concept, document_reference_to_ebrim
from ihe_xds.vocabulary import (
    ACTION_ITI57,
    ASSOC_HAS_MEMBER,
    STATUS_APPROVED,
    STATUS_ARCHIVED,
    STATUS_DELETED,
)

ASSOC_UPDATE_AVAILABILITY = "urn:ihe:iti:2010:AssociationType:UpdateAvailabilityStatus"
RESOURCE = "DocumentReference"

# The attributes a metadata update must leave as they are (compared when given).
_SAME = (
    "unique_id",
    "title",
    "comments",
    "mime_type",
    "creation_time",
    "language_code",
    "hash",
    "size",
    "service_start_time",
    "service_stop_time",
)
_SAME_CODES = (
    "class_code",
    "type_code",
    "format_code",
    "healthcare_facility_type_code",
    "practice_setting_code",
)


class Refused(Exception):  # noqa: N818 - carries the RegistryError to answer with
    def __init__(self, error: RegistryError) -> None:
        super().__init__(error.code_context)
        self.error = error


@dataclass(frozen=True)
class _Update:
    """One requested update: the stored entry (its logicalID or entryUUID), the change and,
    for a metadata update, the entryUUID of the new version."""

    entry_uuid: str
    change: Change
    where: str
    new_entry_uuid: str | None = None


@dataclass
class UpdateOutcome:
    errors: list[RegistryError] = field(default_factory=list)
    patient_ids: list[str] = field(default_factory=list)
    document_unique_ids: list[str] = field(default_factory=list)
    document_labels: dict[str, tuple] = field(default_factory=dict)


def iti57(runtime, requester: Requester, body: etree._Element) -> UpdateOutcome:
    """Serve one Update Document Set request (the SOAP face is ihe_xds.http)."""
    outcome = UpdateOutcome()
    submission = parse_submission(body)
    if submission.provide_and_register:
        raise MalformedMessage("ITI-57 carries a SubmitObjectsRequest")
    try:
        updates = _updates(submission, runtime.settings.xds_repository_id)
        written = _write(MetadataUpdates(runtime.service), requester, updates)
    except Refused as refused:
        outcome.errors.append(refused.error)
        return outcome
    for stored in written:
        document = stored.json()
        reference = (document.get("subject") or {}).get("reference") or ""
        patient = reference.removeprefix("Patient/") if reference.startswith("Patient/") else None
        if patient and patient not in outcome.patient_ids:
            outcome.patient_ids.append(patient)
        unique_id = document_reference_to_ebrim(
            document, patient_cx="", repository_unique_id=""
        ).unique_id
        if unique_id:
            outcome.document_unique_ids.append(unique_id)
            outcome.document_labels[unique_id] = tuple(security_labels_of(document))
    return outcome


def _write(updates: MetadataUpdates, requester: Requester, requested: list[_Update]) -> list:
    """Every update in one transaction (ITI-57 is atomic), each through `MetadataUpdates`."""
    targets = []
    for update in requested:
        try:
            targets.append(
                updates.conditional_target(
                    requester,
                    RESOURCE,
                    [
                        (
                            "identifier",
                            ",".join(
                                f"{system}|{update.entry_uuid}"
                                for system in metadata_versions.identifier_systems()
                            ),
                        )
                    ],
                )
            )
        except FhirError as exc:
            raise Refused(_error(exc, update, named=update.entry_uuid)) from None
    written = []
    current = requested[0]
    try:
        with updates.service._transaction() as tx:
            for update, target in zip(requested, targets, strict=True):
                current = update
                written.append(
                    updates.change_in(
                        tx, requester, target, update.change, new_version=update.new_entry_uuid
                    ).stored
                )
    except FhirError as exc:
        raise Refused(_error(exc, current, named=current.entry_uuid)) from None
    return written


def _error(exc: FhirError, update: _Update, *, named: str) -> RegistryError:
    """The RegistryError of an update the service refused (`ihe_xds.errors.update_error`)."""
    return update_error(exc, where=update.where, named=named)


# -- reading the request -----------------------------------------------------------------------


def _updates(submission: Submission, repository_id: str | None) -> list[_Update]:
    if submission.problems:
        raise Refused(submission.problems[0])
    if len(submission.submission_sets) != 1:
        raise Refused(
            registry_error(
                XDS_REGISTRY_METADATA_ERROR,
                "an Update Document Set carries one SubmissionSet",
                "SubmissionSet",
            )
        )
    submission_set = submission.submission_sets[0].id
    updates: list[_Update] = []
    members = {
        a.target: a
        for a in submission.associations
        if a.type == ASSOC_HAS_MEMBER and a.source == submission_set
    }
    for entry in submission.entries:
        updates.append(_metadata_update(entry, members.get(entry.id), repository_id))
    for association in submission.associations:
        if association.type == ASSOC_UPDATE_AVAILABILITY:
            if association.source != submission_set:
                raise Refused(
                    registry_error(
                        XDS_METADATA_UPDATE_ERROR,
                        "an UpdateAvailabilityStatus association comes from the SubmissionSet",
                        f"Association {association.id}",
                    )
                )
            updates.append(_status_update(association))
        elif association.type != ASSOC_HAS_MEMBER:
            raise Refused(
                registry_error(
                    XDS_METADATA_UPDATE_OPERATION_ERROR,
                    f"association type {association.type} is not an update this registry makes "
                    "(DocumentEntry metadata and availability status only)",
                    f"Association {association.id}",
                )
            )
    if not updates:
        raise Refused(
            registry_error(
                XDS_METADATA_UPDATE_ERROR, "the request updates nothing", "SubmissionSet"
            )
        )
    return updates


def _slot(association, name: str) -> str | None:
    for slot in association.slots:
        if slot.name == name and len(slot.values) == 1:
            return slot.values[0]
    return None


def _metadata_update(entry: DocumentEntry, member, repository_id: str | None) -> _Update:
    where = f"DocumentEntry {entry.id}"
    if not entry.logical_id or entry.logical_id == entry.id:
        raise Refused(
            registry_error(
                XDS_METADATA_UPDATE_ERROR,
                "a new version of a DocumentEntry names the stored one by its lid (logicalId) "
                "and has an id of its own",
                where,
            )
        )
    previous = _slot(member, "PreviousVersion") if member is not None else None
    if previous is None or not previous.isdigit():
        raise Refused(
            registry_error(
                XDS_METADATA_UPDATE_ERROR,
                "the HasMember association of an updated DocumentEntry carries its "
                "PreviousVersion (one whole number)",
                where,
            )
        )
    codes = list(entry.confidentiality_codes)
    logical_id = entry.logical_id

    def change(old: dict) -> dict:
        if document_model.logical_id(old) != logical_id:
            raise Refused(
                registry_error(
                    XDS_METADATA_VERSION_ERROR,
                    f"lid {logical_id} is the entryUUID of a Deprecated version, not the "
                    f"logicalID ({document_model.logical_id(old)}) of the DocumentEntry",
                    where,
                )
            )
        latest = document_model.metadata_version(old)
        if int(previous) != latest:
            raise Refused(
                registry_error(
                    XDS_METADATA_VERSION_ERROR,
                    f"PreviousVersion {previous} is not the latest version ({latest}) of "
                    f"logicalID {logical_id}",
                    where,
                )
            )
        stored = document_reference_to_ebrim(
            old, patient_cx="", repository_unique_id=repository_id or ""
        )
        _check_same(entry, stored, where)
        candidate = copy.deepcopy(old)
        candidate["securityLabel"] = [concept(code) for code in codes]
        return candidate

    new_entry_uuid = (
        entry.id if document_model.is_uuid_urn(entry.id) else metadata_versions.new_entry_uuid()
    )
    return _Update(logical_id, change, where, new_entry_uuid)


def _check_same(entry: DocumentEntry, stored: DocumentEntry, where: str) -> None:
    changed = [
        name
        for name in _SAME
        if getattr(entry, name) is not None and getattr(entry, name) != getattr(stored, name)
    ]
    changed += [
        name
        for name in _SAME_CODES
        if getattr(entry, name) is not None
        and _key(getattr(entry, name)) != _key(getattr(stored, name))
    ]
    if changed:
        raise Refused(
            registry_error(
                XDS_METADATA_UPDATE_OPERATION_ERROR,
                f"{', '.join(changed)} cannot change: a metadata update changes the "
                "confidentialityCode and the availability status only (PDSm st_maj.md)",
                where,
            )
        )


def _key(coded: Coded | None) -> tuple | None:
    return (coded.scheme, coded.code) if coded is not None else None


_NEW_STATUSES = (STATUS_APPROVED, STATUS_ARCHIVED, STATUS_DELETED)


def _status_update(association) -> _Update:
    where = f"Association {association.id}"
    original, new = _slot(association, "OriginalStatus"), _slot(association, "NewStatus")
    if original is None or new is None:
        raise Refused(
            registry_error(
                XDS_METADATA_UPDATE_ERROR,
                "an UpdateAvailabilityStatus association carries OriginalStatus and NewStatus",
                where,
            )
        )
    if new not in _NEW_STATUSES:
        raise Refused(
            registry_error(
                XDS_METADATA_UPDATE_OPERATION_ERROR,
                f"NewStatus {new} is not one this registry sets (Approved, Archived, Deleted)",
                where,
            )
        )

    target = association.target

    def change(old: dict) -> dict:
        if document_model.entry_uuid(old) != target:
            raise Refused(
                registry_error(
                    XDS_METADATA_VERSION_ERROR,
                    f"{target} is version {_version_named(old, target)} of logicalID "
                    f"{document_model.logical_id(old)}, Deprecated: a status update names the "
                    f"latest version ({document_model.entry_uuid(old)})",
                    where,
                )
            )
        if availability_of(old) != original:
            raise Refused(
                registry_error(
                    XDS_METADATA_UPDATE_ERROR,
                    f"OriginalStatus {original} is not the entry's status ({availability_of(old)})",
                    where,
                )
            )
        candidate = copy.deepcopy(old)
        if new == STATUS_DELETED:
            candidate["status"] = DELETED_STATUS
        else:
            set_archived(candidate, new == STATUS_ARCHIVED)
        return candidate

    return _Update(target, change, where)


def _version_named(document: dict, entry_uuid: str) -> int:
    """The version number of a document's earlier entryUUID."""
    earlier = document_model.earlier_entry_uuids(document)
    return earlier.index(entry_uuid) + 1 if entry_uuid in earlier else 0


__all__ = ["ACTION_ITI57", "UpdateOutcome", "iti57"]
