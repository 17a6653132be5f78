"""The document rules that need no store: each returns OperationOutcome issues carrying the
XDS error code of the problem (`ihe_xds.errors`), their expressions relative to the resource
(`DocumentReference.…`); the caller puts them at a Bundle entry when there is one.

Which rules run never depends on `meta.profile` nor on the canonical a Bundle claims: a
DocumentReference written by a client is a DMP document (`metadata_issues`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from fhir_server.documents import metadata_versions, model
from fhir_server.errors import Issue
from fhir_server.mhd.errors import xds_issue
from fhir_server.resources.references import NAMES_A_RECORD_ITEM, RECORD_ITEM_TYPES
from ihe_xds.errors import (
    XDS_ERROR_SYSTEM,
    XDS_MISSING_DOCUMENT,
    XDS_REPOSITORY_DUPLICATE_UNIQUE_ID_IN_MESSAGE,
    XDS_REPOSITORY_METADATA_ERROR,
)

DOC = "DocumentReference"

# What an update may not change: what names the document (entryUUID, uniqueId), whose record
# it is in, its bytes (the Binary, its size, hash and content type) and its associations,
# which are made at deposit (a relation added by an update would skip the supersede of what
# it replaces, and one removed would hide a replacement). The rest of the metadata may change
# (status, securityLabel, extensions, codes, dates), still within the DMP profile.
# The entryUUID changes only by the step to a new metadata version (`metadata_versions`).
LOCKED_ON_UPDATE: tuple[tuple[str, Callable[[dict], Any]], ...] = (
    ("DocumentReference.masterIdentifier", lambda d: d.get("masterIdentifier")),
    ("DocumentReference.subject", lambda d: d.get("subject")),
    ("DocumentReference.relatesTo", lambda d: d.get("relatesTo") or []),
    ("DocumentReference.content", lambda d: len(model.attachments(d))),
)
LOCKED_ATTACHMENT = ("url", "size", "hash", "contentType")


def metadata_issues(document: dict, profiles: Any) -> list[Issue]:
    """The DMP DocumentReference profile (as deposited), entryUUID and uniqueId well-formed,
    no inline bytes, every local reference resolved (ref-1), relatesTo codes known."""
    issues = [
        _with_code(issue)
        for issue in profiles.validate(document, deposit=True)
        if issue.severity in ("error", "fatal")
    ]
    issues += identity_issues(document)
    issues += inline_data_issues(document)
    issues += contained_reference_issues(document)
    issues += relation_code_issues(document)
    issues += related_reference_issues(document)
    return _unique(issues)


def _with_code(issue: Issue) -> Issue:
    if issue.details_code:
        return issue
    return replace(
        issue, details_code=XDS_REPOSITORY_METADATA_ERROR, details_system=XDS_ERROR_SYSTEM
    )


def _unique(issues: list[Issue]) -> list[Issue]:
    seen: set[tuple] = set()
    out = []
    for issue in issues:
        key = (issue.expression, issue.diagnostics)
        if key not in seen:
            seen.add(key)
            out.append(issue)
    return out


def identity_issues(document: dict) -> list[Issue]:
    """One entryUUID (`urn:uuid:` + an RFC 4122 UUID) and a well-formed uniqueId."""
    issues = []
    claimed = model.entry_uuid_identifiers(document)
    if len(claimed) > 1:
        issues.append(
            xds_issue(
                XDS_REPOSITORY_METADATA_ERROR,
                "a document has one entryUUID; identifier holds "
                f"{len(claimed)} of system urn:ietf:rfc:3986 with a urn:uuid: value",
                f"{DOC}.identifier[{claimed[1][0]}]",
            )
        )
    for position, identifier in claimed:
        if not model.is_uuid_urn(identifier.get("value")):
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"the entryUUID {identifier.get('value')!r} is not urn:uuid: followed by "
                    "a UUID (8-4-4-4-12 hexadecimal digits, RFC 4122)",
                    f"{DOC}.identifier[{position}].value",
                )
            )
    master = document.get("masterIdentifier")
    if (
        isinstance(master, dict)
        and master.get("value") is not None
        and not model.is_well_formed_unique_id(master)
    ):
        issues.append(
            xds_issue(
                XDS_REPOSITORY_METADATA_ERROR,
                f"the uniqueId {master.get('value')!r} is not an OID (or OID^extension), "
                "written urn:oid:<OID> under urn:ietf:rfc:3986, nor a urn:uuid:",
                f"{DOC}.masterIdentifier.value",
            )
        )
    return issues


def inline_data_issues(document: dict) -> list[Issue]:
    """A stored document's bytes are its Binary: `attachment.data` is only accepted by a
    Simplified Publish (ITI-105: POST DocumentReference), which makes the Binary of it."""
    return [
        xds_issue(
            XDS_REPOSITORY_METADATA_ERROR,
            f"content[{position}].attachment.data: a document's bytes are a Binary "
            "(attachment.url); inline data is only accepted by POST DocumentReference "
            "(ITI-105 Simplified Publish)",
            f"{DOC}.content[{position}].attachment.data",
        )
        for position, attachment in model.attachments(document)
        if "data" in attachment
    ]


def contained_reference_issues(resource: dict) -> list[Issue]:
    """FHIR invariant ref-1: a local reference (`#id`) names a contained resource."""
    contained = {
        r.get("id") for r in resource.get("contained") or [] if isinstance(r, dict) and r.get("id")
    }
    issues = []
    for path, reference in _references(resource, resource.get("resourceType", "Resource")):
        if reference.startswith("#") and reference != "#" and reference[1:] not in contained:
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{path} {reference} names no contained resource (ref-1)",
                    path,
                )
            )
    return issues


def _strings_at(
    value: Any, path: str, keys: tuple[str, ...], *, contained: bool
) -> Iterable[tuple[str, str]]:
    """(path, text) of each string member named one of `keys` in `value`, at any depth;
    `contained`: the contained resources' too."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key == "contained" and not contained:
                continue
            if key in keys and isinstance(item, str):
                yield f"{path}.{key}", item
            else:
                yield from _strings_at(item, f"{path}.{key}", keys, contained=contained)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings_at(item, f"{path}[{index}]", keys, contained=contained)


def _references(value: Any, path: str) -> Iterable[tuple[str, str]]:
    """Each `reference` string outside the contained resources (ref-1 is the resource's)."""
    return _strings_at(value, path, ("reference",), contained=False)


# A Reference's `type` (a type name or a StructureDefinition URL) naming one of them.
_TYPES_A_RECORD_ITEM = re.compile(
    rf"(?:^|/)\s*(?:{'|'.join(RECORD_ITEM_TYPES)})\s*$", re.IGNORECASE
)


def _naming_elements(value: Any, path: str) -> Iterable[tuple[str, str]]:
    """(path, text) of each `reference` string and each Reference `type` string in `value`,
    contained resources included: a contained resource is served with the document, so what
    it names is named by the document (`_references` skips them, for ref-1)."""
    return _strings_at(value, path, ("reference", "type"), contained=True)


def related_reference_issues(document: dict) -> list[Issue]:
    """What a document names besides its relations (`relatesTo`, which the reads hide and the
    searches judge, `access.hidden_references`) names no document by a literal reference:
    served as stored to every reader, such a reference (`context.related`, an extension's
    `valueReference`) told them the id of a document the patient masked from them, or
    another they may not read, and `related=` found the document by that id. Fail closed,
    whatever it names and whoever reads it: `context.related` names by identifier (XDS
    referenceIdList) or a contained resource; elsewhere (contained resources included) a
    DocumentReference, List, Binary or Communication is not named, by a reference however
    spelled (case, spaces, a trailing `/`) nor by a Reference's `type` (a logical reference,
    `identifier` with the named document's id): each was served as stored."""
    issues = []
    context = document.get("context")
    related = context.get("related") if isinstance(context, dict) else None
    for position, item in enumerate(related if isinstance(related, list) else []):
        reference = item.get("reference") if isinstance(item, dict) else None
        if reference is None or (isinstance(reference, str) and reference.startswith("#")):
            continue
        where = f"{DOC}.context.related[{position}].reference"
        issues.append(
            xds_issue(
                XDS_REPOSITORY_METADATA_ERROR,
                f"{where}: a related resource is named by identifier (referenceIdList) or "
                "contained, not by a literal reference",
                where,
            )
        )
    for path, text in _naming_elements(document, DOC):
        if path.startswith((f"{DOC}.relatesTo[", f"{DOC}.context.related[")):
            continue
        pattern = NAMES_A_RECORD_ITEM if path.endswith(".reference") else _TYPES_A_RECORD_ITEM
        if pattern.search(text.split("?", 1)[0]):
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{path}: a document names another document only by relatesTo",
                    path,
                )
            )
    return issues


def relation_code_issues(document: dict) -> list[Issue]:
    """relatesTo.code is one of the XDS associations, its target names a document."""
    issues = []
    for position, relation in enumerate(document.get("relatesTo") or []):
        where = f"{DOC}.relatesTo[{position}]"
        if not isinstance(relation, dict) or relation.get("code") not in model.RELATION_CODES:
            code = relation.get("code") if isinstance(relation, dict) else None
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{where}.code {code!r} is not replaces, appends, transforms or signs",
                    f"{where}.code",
                )
            )
            continue
        target = relation.get("target")
        if not isinstance(target, dict) or not (
            target.get("reference") or (target.get("identifier") or {}).get("value")
        ):
            issues.append(
                xds_issue(
                    XDS_REPOSITORY_METADATA_ERROR,
                    f"{where}.target names no document (reference or identifier)",
                    f"{where}.target",
                )
            )
    return issues


def size_and_hash_issues(attachment: dict, content: bytes, where: str) -> list[Issue]:
    """attachment.size and attachment.hash, when given, are those of `content`."""
    issues = []
    size = attachment.get("size")
    if size is not None and size != len(content):
        issues.append(
            xds_issue(
                XDS_REPOSITORY_METADATA_ERROR,
                f"{where}.size {size} does not match the document ({len(content)} bytes)",
                f"{where}.size",
            )
        )
    given = attachment.get("hash")
    if given is not None and not model.sha1_matches(given, content):
        issues.append(
            xds_issue(
                XDS_REPOSITORY_METADATA_ERROR,
                f"{where}.hash {given} is not the SHA-1 of the document "
                f"({model.sha1_base64(content)})",
                f"{where}.hash",
            )
        )
    return issues


def content_issues(document: dict, content_of: Callable[[str], bytes | None]) -> list[Issue]:
    """Each attachment names a local Binary (`Binary/<id>`), whose bytes `content_of` gives,
    with their size and hash."""
    issues = []
    for position, attachment in model.attachments(document):
        where = f"{DOC}.content[{position}].attachment"
        if "data" in attachment:
            continue  # inline_data_issues
        binary_id = model.binary_id(attachment.get("url"))
        content = content_of(binary_id) if binary_id else None
        if content is None:
            issues.append(
                xds_issue(
                    XDS_MISSING_DOCUMENT,
                    f"{where}.url {attachment.get('url')!r} names no Binary of this server "
                    "holding the document's bytes",
                    f"{where}.url",
                )
            )
            continue
        issues += size_and_hash_issues(attachment, content, where)
    return issues


def first_version_issues(document: dict) -> list[Issue]:
    """A deposit is the first metadata version: it names no earlier one (ITI TF-2b
    3.57.4.1.3.1: versions after the first are made by a metadata update only)."""
    earlier = model.earlier_entry_uuids(document)
    if not earlier:
        return []
    return [
        xds_issue(
            XDS_REPOSITORY_METADATA_ERROR,
            f"a deposited document is version 1 of its DocumentEntry: an identifier with use "
            f"'{model.EARLIER_VERSION_USE}' (an earlier version's entryUUID, {earlier[0]}) is "
            "made by the registry on a metadata update, not deposited",
            f"{DOC}.identifier",
        )
    ]


def update_issues(new: dict, old: dict) -> list[Issue]:
    """What an update of a stored document may not change (`LOCKED_ON_UPDATE`)."""
    paths = [path for path, read in LOCKED_ON_UPDATE if read(new) != read(old)]
    if not (metadata_versions.same_version(old, new) or metadata_versions.is_step(old, new)):
        paths.insert(0, "DocumentReference.identifier")
    if "DocumentReference.content" not in paths:
        for (position, attachment), (_, before) in zip(
            model.attachments(new), model.attachments(old), strict=True
        ):
            paths += [
                f"DocumentReference.content[{position}].attachment.{key}"
                for key in LOCKED_ATTACHMENT
                if attachment.get(key) != before.get(key)
            ]
    return [
        xds_issue(
            XDS_REPOSITORY_METADATA_ERROR,
            f"{path} cannot change once the document is deposited (deposit a new "
            "DocumentReference that replaces it instead: relatesTo replaces)",
            path,
        )
        for path in paths
    ]


def xds_list_update_issues(new: dict, old: dict) -> list[Issue]:
    """An update of a SubmissionSet or Folder List (MHD Vol 3 4.5.1) keeps its entryUUID:
    the registry assigns it once (ITI TF-3 4.2.3.3) and ITI-18 names the object by it. A
    REST PUT without it, or with another, changed the id every Get query and association
    named the Folder by."""
    before = sorted(str(i.get("value")) for _, i in model.entry_uuid_identifiers(old))
    after = sorted(str(i.get("value")) for _, i in model.entry_uuid_identifiers(new))
    if before == after:
        return []
    return [
        xds_issue(
            XDS_REPOSITORY_METADATA_ERROR,
            f"List.identifier: the entryUUID of a SubmissionSet or Folder ({', '.join(before)}) "
            "cannot change once it is registered; send it unchanged",
            "List.identifier",
        )
    ]


def message_issues(documents: list[tuple[str, dict]]) -> list[Issue]:
    """In one message (a transaction): no two documents with one entryUUID or one uniqueId.
    `documents`: (where, resource), `where` the Bundle entry."""
    issues = []
    entry_uuids: dict[str, str] = {}
    unique_ids: dict[str, str] = {}
    for where, document in documents:
        value = model.entry_uuid(document)
        if value is not None:
            if value.lower() in entry_uuids:
                issues.append(
                    xds_issue(
                        XDS_REPOSITORY_METADATA_ERROR,
                        f"{where}: entryUUID {value} is also the one of "
                        f"{entry_uuids[value.lower()]}",
                        f"{where}.resource.identifier",
                    )
                )
            entry_uuids.setdefault(value.lower(), where)
        unique = model.unique_id(document)
        if unique is not None:
            if unique in unique_ids:
                issues.append(
                    xds_issue(
                        XDS_REPOSITORY_DUPLICATE_UNIQUE_ID_IN_MESSAGE,
                        f"{where}: masterIdentifier {unique} is also the one of "
                        f"{unique_ids[unique]}",
                        f"{where}.resource.masterIdentifier",
                    )
                )
            unique_ids.setdefault(unique, where)
    return issues
