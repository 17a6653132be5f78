"""Who a resource names: message parties, document authors and list sources, the
DocumentReference that points to a Binary."""

from __future__ import annotations

from collections.abc import Iterable

from fhir_server.access.constraints import reference_target
from fhir_server.search.query import Node, Or, ReferenceTest
from fhir_server.terminology import SYSTEM_IDNAT_PS, SYSTEM_IDNAT_STRUCT


def party_of_message(targets: Iterable[tuple[str, str]]) -> Node:
    """The message was sent by or to one of `targets` (type, id); a practitioner also by
    IdNat_PS identifier, since messages name professionals by identifier; an organization
    only by IdNat_Struct identifier (its organisational mailbox)."""
    tests: list[Node] = []
    for param in ("sender", "recipient"):
        for target_type, target_id in targets:
            if target_type == "Organization":
                tests.append(
                    ReferenceTest(
                        param, identifier_system=SYSTEM_IDNAT_STRUCT, identifier_value=target_id
                    )
                )
                continue
            tests.append(ReferenceTest(param, target_type, target_id))
            if target_type == "Practitioner":
                tests.append(
                    ReferenceTest(
                        param, identifier_system=SYSTEM_IDNAT_PS, identifier_value=target_id
                    )
                )
    return Or(tuple(tests))


def points_to(document: dict, binary_id: str) -> bool:
    for content in document.get("content") or []:
        target = reference_target((content.get("attachment") or {}).get("url"))
        if target == ("Binary", binary_id):
            return True
    return False


def is_practitioner_ref(reference: dict, idnat: str) -> bool:
    identifier = reference.get("identifier") or {}
    if identifier.get("system") == SYSTEM_IDNAT_PS and identifier.get("value") == idnat:
        return True
    return reference_target(reference.get("reference")) == ("Practitioner", idnat)


def is_structure_ref(reference: dict, structure: str | None) -> bool:
    """`reference` names, by IdNat_Struct identifier, the organization `structure`."""
    identifier = reference.get("identifier") or {}
    return (
        structure is not None
        and reference.get("type") == "Organization"
        and identifier.get("system") == SYSTEM_IDNAT_STRUCT
        and identifier.get("value") == structure
    )


def authored_by_any(resource: dict, element: str, refs: set[tuple[str, str]]) -> bool:
    value = resource.get(element)
    values = value if isinstance(value, list) else [value] if value else []
    return any(reference_target((v or {}).get("reference")) in refs for v in values)
