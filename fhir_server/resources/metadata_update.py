"""What a metadata update of a DocumentReference may change, and how (issue #20, deliverable 1).

One set of rules for both doors of the DMP's TD3.3 (PATCH of PDSm `st_maj.md`, XDS ITI-57
Update Document Set): `settle(old, candidate)` takes the document as stored and as the
request would leave it (both in the normal form), and returns what is written, or refuses.

- **Elements** (PDSm `st_maj.md`, Flux 04): only `status`, `securityLabel` and the
  PDSm_IsArchived extension may change; any other difference is refused with **405** (the
  status PDSm prescribes: "Si la mise à jour ... porte sur des éléments autres que status,
  securityLabel et PDSm_isArchived, une erreur 405 « Method Not Allowed » doit être
  retournée"), the OperationOutcome naming the first element that differs.
- **Status** (PDSm4DMP TD3.3c; PDSm: no change of state from a deleted entry): the one
  status change is `current` -> `entered-in-error`, the logical deletion; a document
  becomes `superseded` only by its replacement (ITI-65/ITI-41 RPLC). Anything else: 422
  naming `DocumentReference.status`.
- **isArchived**: a boolean (`valueBoolean`), else 422 naming the extension.
- **Labels are merged, never dropped by position.** The label sets (system, code) before
  (`securityLabel` and `meta.security`) and after (`securityLabel`) are compared:
  - a TRE_A07 label (MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX...) that
    is gone is an explicit removal; it is removed from `meta.security` too (the normal form
    would otherwise copy it back), and the access gate judges whether the requester may
    remove it (R06: the patient and MASQUE_PS; R14: a professional and INVISIBLE_*; the
    author: anything);
  - a label of any other system (the v3 confidentiality level N/R/V...) that is gone is
    replaced when another code of its system appears (a change the gate judges), and is
    otherwise put back, after the others: PDSm4DMP masks with `replace /securityLabel/0`,
    whatever label stands first, and masking must not take the document's confidentiality
    level away. PDSm4DMP unmasks with the same `replace /securityLabel/0` by `N`: it
    removes the TRE_A07 label that masking put first;
  - a label written twice is kept once, and a label kept is written as it was stored (a
    request that names it with another display does not rewrite it).
Pure: no I/O.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

from fhir_server.errors import error
from fhir_server.resources.document_state import DELETED_STATUS, IS_ARCHIVED_URL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY

# The elements a metadata update may change (PDSm st_maj.md); `meta` changes only as the
# server's own version stamp and as the consequence of a label removal.
MUTABLE = ("status", "securityLabel")
STATUS_CHANGES = frozenset({("current", DELETED_STATUS)})
RESOURCE = "DocumentReference"

Label = tuple[str | None, str | None]


def settle(old: dict, candidate: dict) -> dict:
    """The document to write for this metadata update (a new object), or an error."""
    _check_elements(old, candidate)
    _check_status(old, candidate)
    _check_archived(candidate)
    _check_label_shape(candidate)
    return merge_labels(old, candidate)


def _check_label_shape(candidate: dict) -> None:
    """securityLabel is a list of CodeableConcept (objects). PDSm st_maj.md's own example
    replaces it with the string "restricted"; read as a list, its characters became ten
    labels, refused with a parser message about each ("Invalid JSON")."""
    labels = candidate.get("securityLabel")
    if labels is None:
        return
    where = f"{RESOURCE}.securityLabel"
    if not isinstance(labels, list):
        raise error(
            400,
            "structure",
            f"{where} is a list of CodeableConcept, not {type(labels).__name__} {labels!r}",
            where,
        )
    for index, concept in enumerate(labels):
        if not isinstance(concept, dict):
            raise error(
                400,
                "structure",
                f"{where}[{index}] is a CodeableConcept (an object)",
                f"{where}[{index}]",
            )
        _check_codings(concept.get("coding"), f"{where}[{index}].coding")


def _check_codings(codings: object, where: str) -> None:
    """A CodeableConcept's codings are objects whose system and code are strings: a label's
    (system, code) is the key it is merged by, and a list or an object there was a 500."""
    if codings is None:
        return
    if not isinstance(codings, list):
        raise error(400, "structure", f"{where} is a list of Coding", where)
    for index, coding in enumerate(codings):
        at = f"{where}[{index}]"
        if not isinstance(coding, dict):
            raise error(400, "structure", f"{at} is a Coding (an object)", at)
        for key in ("system", "code"):
            if key in coding and not isinstance(coding[key], str):
                raise error(
                    400,
                    "structure",
                    f"{at}.{key} is a string, not {type(coding[key]).__name__}",
                    f"{at}.{key}",
                )


def _check_elements(old: dict, candidate: dict) -> None:
    before, after = _fixed(old), _fixed(candidate)
    if before == after:
        return
    for key in sorted(set(before) | set(after)):
        if before.get(key) != after.get(key):
            where = f"{RESOURCE}.{key}"
            if key == "extension":
                where = f"{RESOURCE}.extension (other than {IS_ARCHIVED_URL})"
            raise error(
                405,
                "not-supported",
                f"{where} cannot be changed: a metadata update changes only "
                f"{RESOURCE}.status, {RESOURCE}.securityLabel and the PDSm_IsArchived "
                "extension (PDSm st_maj.md)",
                f"{RESOURCE}.{key}",
            )


def _fixed(resource: dict) -> dict:
    """The resource without what may change: the mutable elements, the isArchived extension
    and the version stamp."""
    result = {k: v for k, v in resource.items() if k not in MUTABLE}
    extensions = [e for e in result.get("extension") or [] if _url(e) != IS_ARCHIVED_URL]
    if extensions:
        result["extension"] = extensions
    else:
        result.pop("extension", None)
    meta = {
        k: v for k, v in (result.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")
    }
    if meta:
        result["meta"] = meta
    else:
        result.pop("meta", None)
    return result


def _url(extension: object) -> object:
    return extension.get("url") if isinstance(extension, dict) else None


def _check_status(old: dict, candidate: dict) -> None:
    before, after = old.get("status"), candidate.get("status")
    if before == after:
        return
    if not isinstance(after, str):
        # A code is a string: an object or a list (`replace /status` by {"a": 1}) was a 500
        # where it was looked up among the allowed changes.
        raise error(
            400,
            "structure",
            f"{RESOURCE}.status is a code (a string), not {type(after).__name__}",
            f"{RESOURCE}.status",
        )
    if (before, after) not in STATUS_CHANGES:
        raise error(
            422,
            "business-rule",
            f"{RESOURCE}.status cannot go from '{before}' to '{after}': the one status change "
            f"is current -> {DELETED_STATUS} (the logical deletion, PDSm4DMP TD3.3c); a "
            "document becomes superseded only by its replacement",
            f"{RESOURCE}.status",
        )


def _check_archived(candidate: dict) -> None:
    found = [e for e in candidate.get("extension") or [] if _url(e) == IS_ARCHIVED_URL]
    where = f"{RESOURCE}.extension('{IS_ARCHIVED_URL}')"
    if len(found) > 1:
        raise error(422, "business-rule", f"{where} is given more than once", where)
    if found and (
        set(found[0]) != {"url", "valueBoolean"} or not isinstance(found[0]["valueBoolean"], bool)
    ):
        raise error(
            422, "business-rule", f"{where} holds one valueBoolean (PDSm_IsArchived)", where
        )


# -- labels ------------------------------------------------------------------------------------


def labels_of(resource: dict, *, meta: bool = True) -> dict[Label, dict]:
    """(system, code) -> its coding, for every coded label of the resource."""
    found: dict[Label, dict] = {}
    for concept in resource.get("securityLabel") or []:
        for coding in (concept or {}).get("coding") or [] if isinstance(concept, dict) else []:
            if isinstance(coding, dict):
                found.setdefault((coding.get("system"), coding.get("code")), coding)
    if meta:
        for coding in (resource.get("meta") or {}).get("security") or []:
            if isinstance(coding, dict):
                found.setdefault((coding.get("system"), coding.get("code")), coding)
    return found


def changes_labels(old: dict, new: dict) -> bool:
    """Whether the label sets of `old` and `new` differ (a new metadata version)."""
    return set(labels_of(old)) != set(labels_of(new))


def merge_labels(old: dict, candidate: dict) -> dict:
    """`candidate` with its labels merged with `old`'s (see the module's rules)."""
    result = copy.deepcopy(candidate)
    before = labels_of(old)
    after = labels_of(result, meta=False)
    gone = [label for label in before if label not in after]
    removed = {label for label in gone if label[0] == SYSTEM_DMP_CONFIDENTIALITY}
    systems_after = {system for system, _ in after}
    restored = [
        before[label] for label in gone if label not in removed and label[0] not in systems_after
    ]
    concepts = _unique_concepts(_as_stored(result.get("securityLabel") or [], before))
    concepts += [{"coding": [copy.deepcopy(coding)]} for coding in restored]
    if concepts:
        result["securityLabel"] = concepts
    else:
        result.pop("securityLabel", None)
    _drop_meta_labels(result, removed)
    return result


def _as_stored(concepts: list, before: dict[Label, dict]) -> list:
    """Each label that was there already, written as it was (its display, say): a request
    that names a label it keeps does not rewrite it."""
    kept = []
    for concept in concepts:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if isinstance(codings, list):
            concept = {
                **concept,
                "coding": [
                    copy.deepcopy(before.get((c.get("system"), c.get("code")), c))
                    if isinstance(c, dict)
                    else c
                    for c in codings
                ],
            }
        kept.append(concept)
    return kept


def _unique_concepts(concepts: Iterable) -> list:
    seen: set[Label] = set()
    kept = []
    for concept in concepts:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not codings:
            kept.append(concept)
            continue
        keys = {(c.get("system"), c.get("code")) for c in codings if isinstance(c, dict)}
        if keys and keys <= seen:
            continue
        seen |= keys
        kept.append(concept)
    return kept


def _drop_meta_labels(resource: dict, removed: set[Label]) -> None:
    meta = resource.get("meta")
    if not removed or not isinstance(meta, dict) or not meta.get("security"):
        return
    security = [c for c in meta["security"] if (c.get("system"), c.get("code")) not in removed]
    if security:
        meta["security"] = security
    else:
        del meta["security"]


__all__ = ["MUTABLE", "changes_labels", "labels_of", "merge_labels", "settle"]
