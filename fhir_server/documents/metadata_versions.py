"""The metadata versions of a DMP document (XDS Metadata Update, IHE ITI TF-2b 3.57.4.1.3.3.1;
ITI TF-3 4.1.4, DocumentEntry.logicalID and DocumentEntry.version).

In XDS each metadata version of a DocumentEntry is a registry object of its own: its own
entryUUID, one logicalID shared by all versions (the first version's entryUUID), a version
number counted from 1, the latest Approved (or Archived, Deleted) and the earlier ones
Deprecated. Here a document is one DocumentReference and its metadata versions are versions
of it, so that the access rules judge every version as they judge a vread (a version is served
only if the current one may be read too: masking hides every earlier version):

- a new metadata version is a new version of the DocumentReference whose entryUUID
  (`identifier` of system urn:ietf:rfc:3986) is the new one, the one it replaces kept, after
  the earlier ones, as an identifier of `use` old and system `model.EARLIER_ENTRY_UUID_SYSTEM`
  (searchable: ITI-18 finds a document by an earlier version's entryUUID);
- a change of availability status alone (archive, unarchive, logical deletion, the supersede
  of a replacement) is the same XDS object: it keeps its entryUUID.

Both doors of a metadata update make the step through `service.patch.MetadataUpdates`:
ITI-57 with the entryUUID its submission gives the new DocumentEntry, a PATCH with one the
server makes (`step`). The update rule (`rules.update_issues`) admits exactly this step and
the registry check that the new entryUUID is held by nothing else. Pure: no I/O.
"""

from __future__ import annotations

import copy
import uuid

from fhir_server.documents import model


def new_entry_uuid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _is_uuid_identifier(identifier: object) -> bool:
    """An entryUUID of the document, its version's or an earlier one's."""
    return isinstance(identifier, dict) and (
        identifier.get("system") == model.EARLIER_ENTRY_UUID_SYSTEM
        or (
            identifier.get("system") == model.SYSTEM_RFC3986
            and str(identifier.get("value", ""))[:9].lower() == "urn:uuid:"
        )
    )


def identifier_systems() -> tuple[str, str]:
    """The identifier systems an entryUUID, current or earlier, is searched under."""
    return (model.SYSTEM_RFC3986, model.EARLIER_ENTRY_UUID_SYSTEM)


def without_entry_uuids(resource: dict) -> dict:
    """A copy without its entryUUIDs, current and earlier: what a version step leaves as it
    was (the access rules judge the rest of a change)."""
    result = dict(resource)
    others = [i for i in resource.get("identifier") or [] if not _is_uuid_identifier(i)]
    if others:
        result["identifier"] = others
    else:
        result.pop("identifier", None)
    return result


def step(old: dict, new: dict, entry_uuid: str) -> dict:
    """`new` (a copy) as the metadata version after `old`: entryUUID `entry_uuid`, every
    entryUUID `old` had kept as an earlier one, oldest first, the rest of its identifiers as
    they are."""
    result = copy.deepcopy(new)
    current = model.entry_uuid(old)
    earlier = [*model.earlier_entry_uuids(old), *([current] if current else [])]
    others = [i for i in result.get("identifier") or [] if not _is_uuid_identifier(i)]
    result["identifier"] = [
        {"use": "official", "system": model.SYSTEM_RFC3986, "value": entry_uuid},
        *others,
        *(
            {
                "use": model.EARLIER_VERSION_USE,
                "system": model.EARLIER_ENTRY_UUID_SYSTEM,
                "value": value,
            }
            for value in earlier
        ),
    ]
    return result


def is_step(old: dict, new: dict) -> bool:
    """Whether `new` is the metadata version after `old` (see `step`)."""
    current = model.entry_uuid(old)
    return (
        current is not None
        and model.entry_uuid(new) not in (None, current, *model.earlier_entry_uuids(old))
        and model.earlier_entry_uuids(new) == [*model.earlier_entry_uuids(old), current]
    )


def same_version(old: dict, new: dict) -> bool:
    """Whether `new` keeps `old`'s entryUUID and earlier versions."""
    return model.entry_uuid(new) == model.entry_uuid(old) and model.earlier_entry_uuids(
        new
    ) == model.earlier_entry_uuids(old)


__all__ = [
    "identifier_systems",
    "is_step",
    "new_entry_uuid",
    "same_version",
    "step",
    "without_entry_uuids",
]
