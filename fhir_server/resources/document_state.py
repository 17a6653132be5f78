"""A DocumentReference's availability as PDSm and PDSm4DMP spell it (issue #20, deliverable 3).

PDSm 3.1.1 (`st_maj.md`, the table of availabilityStatus) and PDSm4DMP (TD3.3c, TD3.3d):

| XDS availabilityStatus                       | FHIR                                             |
|----------------------------------------------|--------------------------------------------------|
| Approved                                     | status `current`                                 |
| Deprecated                                   | status `superseded`                              |
| `urn:asip:ci-sis:2010:StatusType:Archived`   | extension PDSm_IsArchived = true (status kept)   |
| `urn:asip:ci-sis:2010:StatusType:Deleted`    | status `entered-in-error` (PDSm4DMP TD3.3c)      |

The extension's canonical URL is the one of PDSm 3.1.1 (`input/fsh/extensions/
PDSm_IsArchived.fsh`, Id `pdsm-ext-is-archived` under the IG canonical
`https://interop.esante.gouv.fr/ig/fhir/pdsm`), which the `isArchived` SearchParameter of
the same guide reads. Pure: no I/O.
"""

from __future__ import annotations

IS_ARCHIVED_URL = (
    "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/pdsm-ext-is-archived"
)

# PDSm4DMP TD3.3c: a DMP document is deleted (logically: it stays stored) by its author, by
# setting its status to entered-in-error.
DELETED_STATUS = "entered-in-error"


def is_archived(document: dict) -> bool:
    """Whether the document carries PDSm_IsArchived = true."""
    for extension in document.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == IS_ARCHIVED_URL:
            return extension.get("valueBoolean") is True
    return False


def set_archived(document: dict, archived: bool) -> None:
    """Write PDSm_IsArchived (in place): true when archived; removed when not, so that an
    unarchived document reads exactly as one never archived."""
    others = [
        e
        for e in document.get("extension") or []
        if not (isinstance(e, dict) and e.get("url") == IS_ARCHIVED_URL)
    ]
    if archived:
        others.append({"url": IS_ARCHIVED_URL, "valueBoolean": True})
    if others:
        document["extension"] = others
    else:
        document.pop("extension", None)


def is_deleted(document: dict) -> bool:
    return document.get("status") == DELETED_STATUS


__all__ = ["DELETED_STATUS", "IS_ARCHIVED_URL", "is_archived", "is_deleted", "set_archived"]
