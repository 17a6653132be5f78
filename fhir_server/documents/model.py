"""What a DocumentReference is made of, in the terms of the XDS registry (pure accessors).

A DMP document is one DocumentReference (the XDS DocumentEntry) and one Binary (its bytes):
- entryUUID: the `identifier` of system `urn:ietf:rfc:3986` whose value is `urn:uuid:<RFC 4122
  UUID>` (MHD Comprehensive, PDSm4DMP), unique in the registry;
- metadata versions (XDS Metadata Update, ITI TF-3 4.1.4, ITI-57): each version of the
  DocumentEntry has its own entryUUID; the earlier versions' entryUUIDs are kept, oldest
  first, as identifiers of `use` old and system `EARLIER_ENTRY_UUID_SYSTEM` (the DMP profile
  holds one identifier of system urn:ietf:rfc:3986: the entryUUID of the version). The
  logicalID is the first version's entryUUID, the version their count plus one
  (`documents.metadata_versions`, docs/xds-stored-queries.md);
- uniqueId: `masterIdentifier` (an OID, `OID^extension`, or a `urn:oid:` / `urn:uuid:` URI
  under `urn:ietf:rfc:3986`), naming one content;
- content: `content[i].attachment`, whose `url` names the Binary and whose `size` and `hash`
  (base64 SHA-1) are the Binary's bytes';
- associations: `relatesTo` (replaces = RPLC, appends = APND, transforms = XFRM, signs).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from typing import Any

from fhir_server.terminology import CANONICAL_BASE, SYSTEM_MHD_LIST_TYPES, SYSTEM_RFC3986

# Read to the value's last character (`\Z`): `$` also matched before a final newline, and
# `urn:uuid:<an existing entryUUID>\n` passed as an entryUUID, stored beside the first.
UUID_URN = re.compile(
    r"^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
)
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")
_BINARY = re.compile(r"^Binary/([A-Za-z0-9\-.]{1,64})\Z")

# relatesTo codes and the XDS association each stands for; every one names a document that
# must exist, be of the same patient and be current (Approved): ITI TF-3 4.2.2 requires it of
# RPLC, APND, XFRM and XFRM_RPLC, and the registry holds signs to the same (ITI-41 does).
RELATION_CODES = {
    "replaces": "RPLC",
    "appends": "APND",
    "transforms": "XFRM",
    "signs": "signs",
}


# The tags of the DMP availability statuses FHIR has no status for (ihe_xds.mapping writes
# them): an Archived document is `current` and tagged, a Deleted one `entered-in-error`.
AVAILABILITY_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/xds-availability-status"


def is_approved(document: dict) -> bool:
    """XDS availabilityStatus Approved: current, neither Archived nor Deleted."""
    meta = document.get("meta")
    tags = meta.get("tag") if isinstance(meta, dict) else None
    return document.get("status") == "current" and not any(
        isinstance(tag, dict) and tag.get("system") == AVAILABILITY_SYSTEM for tag in tags or ()
    )


def is_uuid_urn(value: Any) -> bool:
    return isinstance(value, str) and bool(UUID_URN.match(value))


def is_oid(value: Any) -> bool:
    return isinstance(value, str) and len(value) <= 64 and bool(_OID.fullmatch(value))


def is_xds_unique_id(value: Any) -> bool:
    """An XDS uniqueId: an OID, or OID^extension (extension 1 to 16 characters), 128 at most."""
    if not isinstance(value, str) or not value or len(value) > 128:
        return False
    root, sep, extension = value.partition("^")
    if sep:
        return is_oid(root) and 0 < len(extension) <= 16 and "^" not in extension
    return is_oid(root)


def entry_uuid_identifiers(resource: dict) -> list[tuple[int, dict]]:
    """(position, identifier) of each identifier that claims to be the entryUUID: system
    `urn:ietf:rfc:3986` and a value starting with `urn:uuid:` (any case), well-formed or not."""
    out = []
    for position, identifier in enumerate(resource.get("identifier") or []):
        if (
            isinstance(identifier, dict)
            and identifier.get("system") == SYSTEM_RFC3986
            and str(identifier.get("value", ""))[:9].lower() == "urn:uuid:"
        ):
            out.append((position, identifier))
    return out


# The identifiers holding the entryUUIDs of a document's earlier metadata versions.
EARLIER_ENTRY_UUID_SYSTEM = f"{CANONICAL_BASE}/NamingSystem/xds-earlier-entry-uuid"
EARLIER_VERSION_USE = "old"


def earlier_entry_uuids(resource: dict) -> list[str]:
    """The entryUUIDs of the document's earlier metadata versions, oldest first."""
    return [
        str(identifier.get("value"))
        for identifier in resource.get("identifier") or []
        if isinstance(identifier, dict) and identifier.get("system") == EARLIER_ENTRY_UUID_SYSTEM
    ]


def logical_id(resource: dict) -> str | None:
    """DocumentEntry.logicalID: the entryUUID of the document's first version."""
    earlier = earlier_entry_uuids(resource)
    return earlier[0] if earlier else entry_uuid(resource)


def metadata_version(resource: dict) -> int:
    """DocumentEntry.version: 1 for a deposit, one more for each metadata update."""
    return 1 + len(earlier_entry_uuids(resource))


def entry_uuid(resource: dict) -> str | None:
    """The entryUUID of a DocumentReference or List, if it has exactly one well-formed one."""
    found = [i.get("value") for _, i in entry_uuid_identifiers(resource)]
    return found[0] if len(found) == 1 and is_uuid_urn(found[0]) else None


def assign_entry_uuid(resource: dict) -> None:
    """Give the resource an entryUUID when it claims none (PDSm4DMP: the registry assigns it)."""
    if not entry_uuid_identifiers(resource):
        identifiers = list(resource.get("identifier") or [])
        identifiers.append(
            {"use": "official", "system": SYSTEM_RFC3986, "value": f"urn:uuid:{uuid.uuid4()}"}
        )
        resource["identifier"] = identifiers


def mhd_list_types(resource: Any) -> frozenset[str]:
    """The MHDlistTypes codes (`submissionset`, `folder`) a List carries in `code`; none for
    another resource, or an element of another JSON type than FHIR's (`code: 5`), which the
    structure validator refuses."""
    if not isinstance(resource, dict) or resource.get("resourceType") != "List":
        return frozenset()
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    if not isinstance(codings, list):
        return frozenset()
    return frozenset(
        c["code"]
        for c in codings
        if isinstance(c, dict)
        and c.get("system") == SYSTEM_MHD_LIST_TYPES
        and isinstance(c.get("code"), str)
    )


def is_xds_list(resource: Any) -> bool:
    """A List that is an XDS object (MHD Vol 3 4.5.1: a SubmissionSet or a Folder), whose
    entryUUID the registry assigns as a DocumentReference's."""
    return bool(mhd_list_types(resource) & {"submissionset", "folder"})


def unique_id(document: dict) -> str | None:
    """masterIdentifier.value, when there is one."""
    master = document.get("masterIdentifier")
    value = master.get("value") if isinstance(master, dict) else None
    return value if isinstance(value, str) and value else None


def is_well_formed_unique_id(master: dict) -> bool:
    """A masterIdentifier that XDS can carry as a uniqueId: under `urn:ietf:rfc:3986` a
    `urn:oid:` OID (with its optional `^extension`) or a `urn:uuid:` UUID; otherwise an XDS
    uniqueId (OID or OID^extension)."""
    value = master.get("value")
    if not isinstance(value, str):
        return False
    if master.get("system") == SYSTEM_RFC3986:
        if value.startswith("urn:oid:"):
            return is_xds_unique_id(value.removeprefix("urn:oid:"))
        return is_uuid_urn(value)
    return is_xds_unique_id(value)


def attachments(document: dict) -> list[tuple[int, dict]]:
    """(position, attachment) of each `content[i].attachment`; none when `content` is not a
    list (`content: 5` was a 500 before the validator could name it)."""
    contents = document.get("content")
    if not isinstance(contents, list):
        return []
    out = []
    for position, content in enumerate(contents):
        if isinstance(content, dict) and isinstance(content.get("attachment"), dict):
            out.append((position, content["attachment"]))
    return out


def binary_id(url: Any) -> str | None:
    """The id of the local Binary an attachment.url names (`Binary/<id>`), or None."""
    match = _BINARY.match(url) if isinstance(url, str) else None
    return match.group(1) if match else None


def relations(document: dict) -> list[tuple[int, str, dict]]:
    """(position, code, target Reference) of each relatesTo."""
    out = []
    for position, relation in enumerate(document.get("relatesTo") or []):
        if isinstance(relation, dict) and isinstance(relation.get("target"), dict):
            out.append((position, str(relation.get("code")), relation["target"]))
    return out


def replaced_targets(document: dict) -> list[tuple[int, dict]]:
    """(position, target Reference) of each relatesTo.replaces of a DocumentReference."""
    return [(p, target) for p, code, target in relations(document) if code == "replaces"]


def decode(data: Any) -> bytes | None:
    """The bytes of a base64Binary, or None when it is no base64."""
    if not isinstance(data, str):
        return None
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        return None


def sha1_base64(content: bytes) -> str:
    """FHIR Attachment.hash: the base64 of the SHA-1 digest (XDS carries the same digest in hex)."""
    return base64.b64encode(hashlib.sha1(content).digest()).decode("ascii")  # noqa: S324


def sha1_matches(given: Any, content: bytes) -> bool:
    return decode(given) == hashlib.sha1(content).digest()  # noqa: S324


def subject_reference(resource: dict) -> str | None:
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    return reference if isinstance(reference, str) else None
