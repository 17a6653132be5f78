"""A List whose every entry a DMP label hides is hidden by that label too (R14, R18).

A List is served without the entries its reader may not see (`hidden_references`), but the
List itself still says what it is: an MHD SubmissionSet carries its submission time, its
author and its content type. A deposit of one INVISIBLE_PATIENT document therefore told the
patient, through its empty SubmissionSet, that something had been deposited, when and by
whom, before the medical announcement (issue #18 attack pass). So when a List is written,
the TRE_A07 labels that every one of its entries carries are added to its `meta.security`,
where the access constraints on Lists read them.

A document that gains a label later (the patient masking it, its author's metadata update)
makes the Lists naming it take the labels all their entries then share
(`FhirService._label_lists_naming`, on the document's update): labelled only at the List's
own write, the SubmissionSet of a document masked after its deposit stayed shown, empty, to
whom the document is hidden from, and told them that something was deposited, when and by
whom, where a SubmissionSet that does not exist shows nothing (R18).

Labels are only ever added here, never removed: a document unmasked later leaves its
SubmissionSet hidden from whom it was hidden at deposit (fail closed); the document itself is
then visible, and its List entry with it in the Lists the reader does see.

Pure: the caller says how to find an entry's document.
"""

from __future__ import annotations

from collections.abc import Callable

from fhir_server.access.constraints import reference_target
from fhir_server.terminology import (
    INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX,
    SYSTEM_DMP_CONFIDENTIALITY,
)

DocumentOf = Callable[[str, str], dict | None]


def dmp_labels(document: dict) -> set[str]:
    """The TRE_A07 codes a resource carries (`meta.security`, a document's `securityLabel`)."""
    codes = {
        coding.get("code")
        for coding in (document.get("meta") or {}).get("security") or []
        if isinstance(coding, dict) and coding.get("system") == SYSTEM_DMP_CONFIDENTIALITY
    }
    for concept in document.get("securityLabel") or []:
        for coding in (concept or {}).get("coding") or []:
            if isinstance(coding, dict) and coding.get("system") == SYSTEM_DMP_CONFIDENTIALITY:
                codes.add(coding.get("code"))
    return {code for code in codes if isinstance(code, str)}


# A label hides a document from whom another hides it too: INVISIBLE_PATIENT hides it from
# the patient and the minor's representatives, INVISIBLE_REPRESENTANTS_LEGAUX from the
# representatives (`policy.reads`). A List's entries hidden from the representatives by one
# or the other share the second (`shared_labels`).
_IMPLIED: dict[str, frozenset[str]] = {
    INVISIBLE_PATIENT: frozenset({INVISIBLE_REPRESENTANTS_LEGAUX}),
}


def _hiding_labels(document: dict) -> set[str]:
    """The TRE_A07 codes `document` carries, and those each implies (`_IMPLIED`)."""
    codes = dmp_labels(document)
    for code in list(codes):
        codes |= _IMPLIED.get(code, frozenset())
    return codes


def gained_labels(before: dict | None, after: dict) -> set[str]:
    """The TRE_A07 codes `after` (a document's new version) carries that `before` did not:
    only a document that gained one can make a List naming it take a label."""
    return dmp_labels(after) - (dmp_labels(before) if before is not None else set())


def shared_labels(listing: dict, document_of: DocumentOf) -> set[str]:
    """The TRE_A07 codes every entry of `listing` carries, a code counted as carried where
    one that hides from more requesters is (`_IMPLIED`): a minor's SubmissionSet holding an
    INVISIBLE_PATIENT document and an INVISIBLE_REPRESENTANTS_LEGAUX one shared no code and
    was shown, empty, to the representatives, who see neither (R07, R18). None for a List
    without entries, or with an entry that is not a local resource that can be found."""
    shared: set[str] | None = None
    for entry in listing.get("entry") or []:
        item = entry.get("item") if isinstance(entry, dict) else None
        target = reference_target((item or {}).get("reference"))
        found = document_of(*target) if target is not None else None
        labels = _hiding_labels(found) if found is not None else set()
        shared = labels if shared is None else shared & labels
        if not shared:
            return set()
    return shared or set()


def add_shared_labels(listing: dict, document_of: DocumentOf) -> bool:
    """Add to `listing.meta.security` the labels all its entries share; True if it changed."""
    codes = shared_labels(listing, document_of) - dmp_labels(listing)
    if not codes:
        return False
    meta = listing.setdefault("meta", {})
    security = meta.setdefault("security", [])
    security.extend({"system": SYSTEM_DMP_CONFIDENTIALITY, "code": code} for code in sorted(codes))
    return True
