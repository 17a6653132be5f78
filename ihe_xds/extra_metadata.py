"""Extra metadata (ITI TF-3 4.1.14): ebRIM Slots XDS does not define, kept and given back.

A Document Registry receiving Slots whose names XDS does not define on a DocumentEntry or a
SubmissionSet either stores them and returns them in its ITI-18 answers, or ignores them and
warns XDSExtraMetadataNotSaved. This registry stores them: each such Slot becomes one
extension `EXT_EXTRA_METADATA` on the DocumentReference / List holding it, with one `name`
sub-extension (valueUri, the Slot name) and one `value` sub-extension (valueString) per
Value, in order; the backward mapping writes the same Slot again. MHD clients (ITI-67)
read them there, and may send them the same way in an ITI-65.

Names: an extra metadata attribute is named by a URN, and the `urn:ihe:` namespace is
IHE's own: a Slot XDS does not define whose name is no URN, or is an `urn:ihe:` name XDS
does not define, is a misspelt or unsupported XDS attribute, not extra metadata, and is
refused (XDSRegistryMetadataError naming it) rather than stored under a name no consumer
will look for. An empty Value (or none) has no FHIR string to live in: refused too, so
nothing sent is dropped silently.

Associations: the extra Slots of a HasMember from the SubmissionSet to one of its
DocumentEntries go on that List.entry, those of a document relationship (RPLC, APND, XFRM,
XFRM_RPLC, signs) on its DocumentReference.relatesTo (on each of the two an XFRM_RPLC
becomes), the same way. Any other Association is not kept by the FHIR mapping: the warning
XDSExtraMetadataNotSaved names each of its extra Slots (the deposit still succeeds).
"""

from __future__ import annotations

from collections.abc import Iterable

from fhir_server.resources.profiles import PROFILE_BASE
from ihe_xds.ebrim import Association, Slot, Submission
from ihe_xds.errors import (
    XDS_EXTRA_METADATA_NOT_SAVED,
    XDS_REGISTRY_METADATA_ERROR,
    RegistryError,
    registry_error,
    registry_warning,
)
from ihe_xds.vocabulary import ASSOC_HAS_MEMBER, DOCUMENT_RELATIONSHIPS

EXT_EXTRA_METADATA = PROFILE_BASE + "xds-extra-metadata"
_NAME = "name"
_VALUE = "value"
RESERVED_PREFIX = "urn:ihe:"
# The Slots XDS defines on an Association (ITI TF-3 4.2.2, ITI-57); any other is extra.
ASSOCIATION_SLOTS = frozenset(
    {
        "SubmissionSetStatus",
        "PreviousVersion",
        "OriginalStatus",
        "NewStatus",
        "AssociationPropagation",
    }
)


def association_extras(association: Association) -> list[Slot]:
    """The Slots of an Association XDS does not define (its extra metadata)."""
    return [slot for slot in association.slots if slot.name not in ASSOCIATION_SLOTS]


def is_stored_association(association: Association, submission: Submission) -> bool:
    """Whether the FHIR mapping keeps this Association, and so its extra metadata: a
    HasMember from the SubmissionSet to one of its DocumentEntries (a List.entry), or a
    document relationship from one of its DocumentEntries (a DocumentReference.relatesTo)."""
    entries = {entry.id for entry in submission.entries}
    if association.type == ASSOC_HAS_MEMBER:
        submission_set = submission.submission_set
        return (
            submission_set is not None
            and association.source == submission_set.id
            and association.target in entries
        )
    return association.type in DOCUMENT_RELATIONSHIPS and association.source in entries


def submission_problems(submission: Submission) -> list[RegistryError]:
    """The extra metadata of a submission that cannot be stored (errors), and the warning
    XDSExtraMetadataNotSaved for the extra Slots of the Associations the registry does not
    keep (module docstring)."""
    problems = []
    for entry in submission.entries:
        problems += extra_slot_problems(entry.extra_slots, f"DocumentEntry {entry.id}")
    for submission_set in submission.submission_sets:
        problems += extra_slot_problems(
            submission_set.extra_slots, f"SubmissionSet {submission_set.id}"
        )
    for association in submission.associations:
        extras = association_extras(association)
        where = f"Association {association.id}"
        if is_stored_association(association, submission):
            problems += extra_slot_problems(extras, where)
            continue
        problems += [
            registry_warning(
                XDS_EXTRA_METADATA_NOT_SAVED,
                f"slot {slot.name} of this {association.type.rsplit(':', 1)[-1]} Association "
                "is not stored (ITI TF-3 4.1.14)",
                f"{where} {slot.name}",
            )
            for slot in extras
        ]
    return problems


def extra_slot_problems(slots: Iterable[Slot], where: str) -> list[RegistryError]:
    """Why each extra Slot of one object cannot be stored as extra metadata (empty: all can)."""
    problems = []
    for slot in slots:
        name = slot.name
        lowered = name.lower()
        if not lowered.startswith("urn:"):
            problems.append(
                registry_error(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"slot {name} is not an XDS attribute, and extra metadata is named by a URN "
                    "(ITI TF-3 4.1.14)",
                    f"{where} {name}",
                )
            )
        elif lowered.startswith(RESERVED_PREFIX):
            problems.append(
                registry_error(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"slot {name} is not an XDS attribute of this object, and the urn:ihe: "
                    "namespace is not open to extra metadata (ITI TF-3 4.1.14)",
                    f"{where} {name}",
                )
            )
        elif not slot.values or "" in slot.values:
            problems.append(
                registry_error(
                    XDS_REGISTRY_METADATA_ERROR,
                    f"slot {name} has an empty Value or none",
                    f"{where} {name}",
                )
            )
    return problems


def is_extra_name(name: object) -> bool:
    """Whether `name` may name extra metadata (a URN outside urn:ihe:)."""
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    return lowered.startswith("urn:") and not lowered.startswith(RESERVED_PREFIX)


def extensions_of(slots: Iterable[Slot]) -> list[dict]:
    """The FHIR extensions carrying `slots`, in order (module docstring)."""
    return [
        {
            "url": EXT_EXTRA_METADATA,
            "extension": [
                {"url": _NAME, "valueUri": slot.name},
                *({"url": _VALUE, "valueString": value} for value in slot.values),
            ],
        }
        for slot in slots
    ]


def slots_of(resource: dict) -> list[Slot]:
    """The extra metadata Slots a stored DocumentReference / List carries, in order.

    Only well-formed ones (one name that may name extra metadata, string values, a name not
    seen before): the profiles refuse the others on write, and an ITI-18 answer must never
    carry a Slot that collides with one XDS defines or with another.
    """
    slots: list[Slot] = []
    seen: set[str] = set()
    for extension in resource.get("extension") or []:
        if not isinstance(extension, dict) or extension.get("url") != EXT_EXTRA_METADATA:
            continue
        parts = [p for p in extension.get("extension") or [] if isinstance(p, dict)]
        names = [p.get("valueUri") for p in parts if p.get("url") == _NAME]
        values = [p.get("valueString") for p in parts if p.get("url") == _VALUE]
        name = names[0] if len(names) == 1 else None
        if not isinstance(name, str) or not is_extra_name(name) or name in seen:
            continue
        texts = [v for v in values if isinstance(v, str) and v]
        if len(texts) != len(values):
            continue
        seen.add(name)
        slots.append(Slot(name, texts))
    return slots


__all__ = [
    "ASSOCIATION_SLOTS",
    "EXT_EXTRA_METADATA",
    "association_extras",
    "extensions_of",
    "extra_slot_problems",
    "is_extra_name",
    "is_stored_association",
    "slots_of",
    "submission_problems",
]
