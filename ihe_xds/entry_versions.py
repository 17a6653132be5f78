"""The metadata versions a GetDocuments answers (ITI TF-2a 3.18.4.1.2.3.7.5, with the XDS
Metadata Update: each version of a DocumentEntry is a registry object of its own).

A document's metadata versions are versions of its DocumentReference
(`fhir_server.documents.metadata_versions`); the search of a stored query finds the
DocumentReference by any of its entryUUIDs, current or earlier. From it, GetDocuments and
GetDocumentsAndAssociations answer:

- by `$XDSDocumentEntryEntryUUID`: the version each entryUUID names, the latest as it is
  now, an earlier one as it was last written under that entryUUID, Deprecated;
- by `$XDSDocumentEntryLogicalID`: every version of the document whose logicalID it is (one
  found by an earlier version's entryUUID that is not its logicalID is no match);
- by `$XDSDocumentEntryUniqueId`: every version at `$MetadataLevel` 2 (they share the
  uniqueId); the latest only at level 1, whose consumers know of no versions.

Earlier versions are read through the instance history as the requester: a version is
served only if it and the current one may be read (the vread rule: masking the document hides
every earlier version), and the read is audited as one.
"""

from __future__ import annotations

from fhir_server.access.requester import Requester
from fhir_server.documents import model
from fhir_server.errors import FhirError
from ihe_xds.stored_query import StoredQuery

RESOURCE = "DocumentReference"
# More versions than this are not read back (a document is updated a handful of times).
HISTORY_LIMIT = 1000


def versions_answered(
    service, requester: Requester, query: StoredQuery, docs: dict[str, dict]
) -> tuple[dict[str, dict], set[str]]:
    """(the DocumentReference versions to answer, keyed as `docs` plus `/_history/n` for an
    earlier one; the entryUUIDs answered as Deprecated earlier versions)."""
    named = set(query.values("$XDSDocumentEntryEntryUUID"))
    logical = set(query.values("$XDSDocumentEntryLogicalID"))
    every_version = bool(logical) or str(query.one("$MetadataLevel")) == "2"
    answer: dict[str, dict] = {}
    deprecated: set[str] = set()
    for key, document in docs.items():
        current = model.entry_uuid(document)
        uuids = {current, *model.earlier_entry_uuids(document)}
        if logical and model.logical_id(document) not in logical:
            continue
        wanted = (uuids & named) if named else (uuids if every_version else {current})
        if current in wanted:
            answer[key] = document
        wanted.discard(current)
        if not wanted:
            continue
        for version, snapshot in _earlier_versions(service, requester, document["id"], current):
            if model.entry_uuid(snapshot) in wanted:
                answer[f"{key}/_history/{version}"] = snapshot
                deprecated.add(model.entry_uuid(snapshot))
    return answer, deprecated


def _earlier_versions(
    service, requester: Requester, document_id: str, current: str | None
) -> list[tuple[int, dict]]:
    """(FHIR version, content) of the last version written under each earlier entryUUID,
    newest first, among the versions the requester may read."""
    try:
        page = service.history(requester, RESOURCE, document_id, count=HISTORY_LIMIT)
    except FhirError:
        return []
    seen = {current}
    found = []
    for entry in page.entries:
        stored = entry.resource
        if stored.deleted:
            continue
        snapshot = stored.json()
        entry_uuid = model.entry_uuid(snapshot)
        if entry_uuid not in seen:
            seen.add(entry_uuid)
            found.append((stored.version, snapshot))
    return found


__all__ = ["versions_answered"]
