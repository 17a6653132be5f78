"""DMP labels and masking (R13, R14): the query clauses that hide labelled or unreadable
documents, and the comparison of two versions that differ only by labels."""

from __future__ import annotations

import copy

from fhir_server.access.habilitation import ALL, Readable
from fhir_server.access.policy.tables import NOTHING, SYSTEM_CLASS
from fhir_server.documents import metadata_versions
from fhir_server.search.query import And, Everything, Node, Not, Or, TokenTest
from fhir_server.terminology import (
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_NAMED_DOCUMENT_TYPE,
)


def labelled(code: str, document: bool) -> Node:
    meta = TokenTest("_security", SYSTEM_DMP_CONFIDENTIALITY, code)
    if not document:
        return meta
    return Or((TokenTest("security-label", SYSTEM_DMP_CONFIDENTIALITY, code), meta))


def authored_by(idnat: str) -> Node:
    return TokenTest("author-identifier", SYSTEM_IDNAT_PS, idnat)


def readable_node(
    readable: Readable, type_systems: tuple[str, ...], types: frozenset[tuple[str, str]]
) -> Node:
    """R13 as a clause: the document's J66 type is one the roles read; a document with no
    type in a J66 system (written before types were required) is judged by its class.

    `types`: every J66 type. A document whose `type` carries two J66 codings, one the roles
    read and one they do not, is excluded (fail closed): the rules cannot tell which is its
    type, and a readable coding beside an excluded one served the document."""
    if readable.every_type and readable.untyped_classes is ALL:
        return Everything()
    parts: list[Node] = [TokenTest("type", system, code) for system, code in sorted(readable.types)]
    untyped = Not(Or(tuple(TokenTest("type", system) for system in type_systems)))
    if readable.untyped_classes is ALL:
        parts.append(untyped)
    elif readable.untyped_classes:
        classes = sorted(readable.untyped_classes)  # type: ignore[arg-type]
        tests = tuple(TokenTest("category", SYSTEM_CLASS, code) for code in classes)
        parts.append(And((untyped, tests[0] if len(tests) == 1 else Or(tests))))
    if not parts:
        return NOTHING  # only reached by single reads: searches are refused earlier (R13)
    node = parts[0] if len(parts) == 1 else Or(tuple(parts))
    excluded = sorted(types - readable.types)
    if not excluded:
        return node
    denied = tuple(TokenTest("type", system, code) for system, code in excluded)
    return And((node, Not(denied[0] if len(denied) == 1 else Or(denied))))


def names_excluded_type(readable: Readable, types: frozenset[tuple[str, str]]) -> Node | None:
    """R13 on messages: a Communication names a document of a J66 type the roles do not read
    (its `meta.tag` under SYSTEM_NAMED_DOCUMENT_TYPE, `service.messaging`), or None when
    the roles read every type."""
    excluded = sorted(types - readable.types)
    if not excluded:
        return None
    tests = tuple(
        TokenTest("_tag", SYSTEM_NAMED_DOCUMENT_TYPE, f"{system}|{code}")
        for system, code in excluded
    )
    return tests[0] if len(tests) == 1 else Or(tests)


def dmp_labels(resource: dict) -> set[str]:
    codes = {
        c.get("code")
        for c in (resource.get("meta") or {}).get("security") or []
        if c.get("system") == SYSTEM_DMP_CONFIDENTIALITY
    }
    for concept in resource.get("securityLabel") or []:
        codes.update(
            c.get("code")
            for c in concept.get("coding") or []
            if c.get("system") == SYSTEM_DMP_CONFIDENTIALITY
        )
    return {c for c in codes if c}


def only_labels_changed(old: dict, new: dict, codes: set[str]) -> bool:
    """Whether old and new differ at most by DMP labels in `codes` (and version metadata).
    The new entryUUID of a new metadata version is the registry's doing, not a change of
    the requester's (`documents.metadata_versions`)."""
    if metadata_versions.is_step(old, new):
        old, new = (
            metadata_versions.without_entry_uuids(old),
            metadata_versions.without_entry_uuids(new),
        )
    return strip_labels(old, codes) == strip_labels(new, codes)


def strip_labels(resource: dict, codes: set[str]) -> dict:
    def keep(coding: dict) -> bool:
        return not (
            coding.get("system") == SYSTEM_DMP_CONFIDENTIALITY and coding.get("code") in codes
        )

    result = without(resource, ())
    meta = result.get("meta") or {}
    if "security" in meta:
        meta["security"] = [c for c in meta["security"] if keep(c)]
        if not meta["security"]:
            del meta["security"]
    if not meta:
        result.pop("meta", None)
    labels = []
    for concept in result.get("securityLabel") or []:
        codings = [c for c in concept.get("coding") or [] if keep(c)]
        if codings or concept.get("text"):
            labels.append({**concept, "coding": codings} if codings else {"text": concept["text"]})
    if labels:
        result["securityLabel"] = labels
    else:
        result.pop("securityLabel", None)
    return result


def without(resource: dict, fields: tuple[str, ...]) -> dict:
    """A copy without `fields` and without the version metadata the server sets."""
    result = copy.deepcopy(resource)
    for name in fields:
        result.pop(name, None)
    meta = result.get("meta")
    if isinstance(meta, dict):
        meta.pop("versionId", None)
        meta.pop("lastUpdated", None)
        if not meta:
            del result["meta"]
    result.pop("text", None)
    return result


def without_dmp_labels(resource: dict) -> dict:
    """A copy without the TRE_A07 (DMP confidentiality) codings of `meta.security` and of
    `securityLabel`: what a system client, which reads no document (R15), was never shown of
    a document it deposited once the patient or its author labelled it."""
    result = copy.deepcopy(resource)
    meta = result.get("meta")
    if isinstance(meta, dict) and isinstance(meta.get("security"), list):
        meta["security"] = [c for c in meta["security"] if not _is_dmp(c)]
        if not meta["security"]:
            del meta["security"]
        if not meta:
            del result["meta"]
    concepts = result.get("securityLabel")
    if isinstance(concepts, list):
        kept = []
        for concept in concepts:
            codings = concept.get("coding") if isinstance(concept, dict) else None
            if isinstance(codings, list):
                concept = {**concept, "coding": [c for c in codings if not _is_dmp(c)]}
                if not concept["coding"]:
                    del concept["coding"]
            if concept:
                kept.append(concept)
        if kept:
            result["securityLabel"] = kept
        else:
            del result["securityLabel"]
    return result


def with_dmp_labels_of(new: dict, old: dict) -> dict:
    """`new` with the TRE_A07 codings `old` carries instead of its own (R14, R15)."""
    result = without_dmp_labels(new)
    for coding in (old.get("meta") or {}).get("security") or []:
        if _is_dmp(coding):
            result.setdefault("meta", {}).setdefault("security", []).append(copy.deepcopy(coding))
    for concept in old.get("securityLabel") or []:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        dmp = [copy.deepcopy(c) for c in codings or [] if _is_dmp(c)]
        if dmp:
            result.setdefault("securityLabel", []).append({"coding": dmp})
    return result


def _is_dmp(coding: object) -> bool:
    return isinstance(coding, dict) and coding.get("system") == SYSTEM_DMP_CONFIDENTIALITY
