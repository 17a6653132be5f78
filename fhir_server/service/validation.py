"""Write-time profile checks (the server's profiles in profiles/), as a service validator."""

from __future__ import annotations

from collections.abc import Callable

from fhir_server.access import hidden_references
from fhir_server.errors import FhirError, Issue
from fhir_server.resources import record_closure
from fhir_server.resources.dmp_value_sets import DmpValueSets
from fhir_server.resources.profiles import ProfileRegistry
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY


def profile_validator(profiles: ProfileRegistry) -> Callable[[dict], None]:
    """A validator raising 422 (FHIR: a resource that fails its profiles) with every issue."""

    def check(resource: dict) -> None:
        issues = [
            issue for issue in profiles.validate(resource) if issue.severity in ("error", "fatal")
        ]
        if issues:
            raise FhirError(422, issues)

    return check


def dmp_value_set_validator(value_sets: DmpValueSets) -> Callable[[dict], None]:
    """A validator raising 422 when a DocumentReference's codes leave the DMP value sets
    (J58, J66, J57, ASS_X16: `resources.dmp_value_sets`), or another resource's TRE_A07
    labels leave J58, on every door that writes one."""

    def check(resource: dict) -> None:
        issues = value_sets.document_issues(resource) + value_sets.meta_label_issues(resource)
        if issues:
            raise FhirError(422, issues)

    return check


def record_closure_validator() -> Callable[[dict], None]:
    """A validator raising 422 when a Patient's dmp-fermeture (the closure of its record,
    `resources.record_closure`) is malformed, names an unknown motive or an open record."""

    def check(resource: dict) -> None:
        if resource.get("resourceType") != "Patient":
            return
        issues = record_closure.issues(resource)
        if issues:
            raise FhirError(422, issues)

    return check


def naming_element_validator() -> Callable[[dict], None]:
    """A validator raising 422 when an item of a naming element (a List's `entry.item`, a
    DocumentReference's `relatesTo.target`: `access.hidden_references`) names something by
    a reference the rules cannot read as a stored resource's (`target_of`).

    The reads hide an item naming what the reader may not read, and serve an item they
    cannot read as stored: a folder List of the médecin traitant whose entry named the
    masked document as `documentreference/<id>`, `DocumentReference/<id>/`, with a leading
    space, a `#fragment`, a `?query` or another server's base was served with that id to
    every authorized professional (R14, R18). Fail closed: a List entry names a resource
    by a relative literal reference (after the normal form made this server's absolute URLs
    relative); a relation names its document so, or by identifier only (XDS, a document
    not held here)."""

    def check(resource: dict) -> None:
        resource_type = str(resource.get("resourceType") or "")
        naming = hidden_references.NAMING_ELEMENTS.get(resource_type)
        items = resource.get(naming[0]) if naming is not None else None
        if naming is None or not isinstance(items, list):
            return
        issues = []
        for position, item in enumerate(items):
            holder = item.get(naming[1]) if isinstance(item, dict) else None
            reference = holder.get("reference") if isinstance(holder, dict) else None
            if resource_type == "DocumentReference" and reference is None:
                continue  # by identifier, or no target (`documents.rules` refuses it)
            if hidden_references.target_of(resource_type, item):
                continue
            where = f"{resource_type}.{naming[0]}[{position}].{naming[1]}"
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    f"{where}: names a resource by a relative literal reference (Type/id) only",
                    (where,),
                )
            )
        if issues:
            raise FhirError(422, issues)

    return check


# Types whose resources the rules judge only as resources of their own (a document through the
# registry, with its labels, its author's rights, the deposit's notification; a Consent, a
# message, an event of the trail): contained in another resource, none of that applies.
RECORD_TYPES = frozenset(
    {
        "AuditEvent",
        "Binary",
        "Bundle",
        "Communication",
        "Composition",
        "Consent",
        "DocumentManifest",
        "DocumentReference",
        "List",
        "Media",
    }
)


def _contained_labels(item: object, where: str) -> list[Issue]:
    """The TRE_A07 labels in a contained resource's `meta.security`, each an issue.

    A contained resource is read as part of the resource that holds it, whose labels the
    rules read; its own were stored and read by no rule (FHIR R4 dom-5: a contained resource
    SHALL NOT have a security label). MASQUE_PS on a Practitioner contained in a document
    was accepted (201) and the document served to every authorized practitioner (R14)."""
    meta = item.get("meta") if isinstance(item, dict) else None
    security = meta.get("security") if isinstance(meta, dict) else None
    issues = []
    for index, coding in enumerate(security if isinstance(security, list) else []):
        if isinstance(coding, dict) and coding.get("system") == SYSTEM_DMP_CONFIDENTIALITY:
            at = f"{where}.meta.security[{index}]"
            issues.append(
                Issue(
                    "error",
                    "invalid",
                    f"{at}: a TRE_A07 label labels the resource that holds it, never a "
                    "contained one, which the access rules read as part of its holder",
                    (at,),
                )
            )
    return issues


def contained_record_validator() -> Callable[[dict], None]:
    """A validator raising 422 for a contained resource of a type the rules judge only as a
    resource of its own (`RECORD_TYPES`).

    A List (or any resource) holding a DocumentReference with inline data, a Binary or a
    document Bundle in `contained` stored a document outside the registry: no DMP profile,
    no author check, no deposit notification to the patient (R17), and its labels ignored,
    the whole served to whoever reads the holder (R14: a contained DocumentReference labelled
    MASQUE_PS or INVISIBLE_PATIENT was read by the patient). A message refuses every
    contained resource on its own (400, `Communication` rules)."""

    def check(resource: dict) -> None:
        resource_type = resource.get("resourceType")
        contained = resource.get("contained")
        if resource_type == "Communication" or not isinstance(contained, list):
            return
        issues = []
        for position, item in enumerate(contained):
            kind = item.get("resourceType") if isinstance(item, dict) else None
            if kind not in RECORD_TYPES:
                issues += _contained_labels(item, f"{resource_type}.contained[{position}]")
            else:
                where = f"{resource_type}.contained[{position}]"
                issues.append(
                    Issue(
                        "error",
                        "invalid",
                        f"{where}: a {kind} is not held inside another resource; it is written "
                        "as a resource of its own",
                        (where,),
                    )
                )
        if issues:
            raise FhirError(422, issues)

    return check
