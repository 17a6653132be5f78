"""The access constraints, evaluated in Python against one resource.

A single read (read, vread, history, a Binary through its DocumentReference) must be judged
by exactly the constraints a search would push into the store, or reads and searches would
disagree about what is hidden. This module evaluates the few query-AST nodes the policy
emits, on the same search parameters the store indexes:

- `security-label` = DocumentReference.securityLabel, `_security` = Resource.meta.security,
  `_tag` = Resource.meta.tag,
  `category` = DocumentReference.category, `type` = DocumentReference.type, `author-identifier` = the Identifier of each
  DocumentReference.author reference (or of the contained Practitioner/PractitionerRole it
  points to), `sender` / `recipient` = Communication.sender / .recipient;
- `InCompartment` from the compartment the store indexes (`resources.served`);
- `Chain` (a List's `item` naming a DocumentReference that matches a clause) through
  `follow`, the caller's reading of the current version of what a reference names: the
  store's chain reads the current, undeleted target too.

Any other node is a programming error here and raises, rather than guessing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fhir_server.resources.references import reference_target, values_at
from fhir_server.resources.served import compartment_of as served_compartment
from fhir_server.search.query import (
    And,
    Chain,
    Everything,
    IdTest,
    InCompartment,
    Node,
    Not,
    Or,
    ReferenceTest,
    TokenMatch,
    TokenTest,
)


def compartment_of(resource: dict) -> frozenset[str]:
    """Ids of the Patients in whose compartment the resource is: the compartment the store
    indexes (`resources.served.compartment_of`), so a single read is judged as a search."""
    return frozenset(served_compartment(resource))


Follow = Callable[[str, str], dict | None]
"""The current version of the resource (type, id) names, None when absent or deleted."""


def matches(node: Node, resource: dict, follow: Follow | None = None) -> bool:
    """Whether `resource` satisfies the constraint `node` (the store's semantics).

    `follow`: how to read what a reference names, for a `Chain`; a Chain met without it is a
    programming error (it raises rather than guess either way)."""
    match node:
        case Everything():
            return True
        case And(parts=parts):
            return all(matches(part, resource, follow) for part in parts)
        case Or(parts=parts):
            return any(matches(part, resource, follow) for part in parts)
        case Not(part=part):
            return not matches(part, resource, follow)
        case Chain(param=param, target_type=target_type, where=where):
            if follow is None:
                raise ValueError(f"a chained constraint needs the targets' reader: {node!r}")
            for reference in _references(param, resource):
                target = reference_target(reference.get("reference"))
                if target is None or target[0] != target_type:
                    continue
                found = follow(*target)
                if found is not None and matches(where, found, follow):
                    return True
            return False
        case InCompartment(patient_id=patient_id):
            return patient_id in compartment_of(resource)
        case IdTest(ids=ids):
            return resource.get("id") in ids
        case TokenTest(match=TokenMatch.EQ):
            return any(
                _token_matches(node, system, code) for system, code in _tokens(node.param, resource)
            )
        case ReferenceTest():
            return any(_reference_matches(node, ref) for ref in _references(node.param, resource))
    raise ValueError(f"access constraint node not supported in Python evaluation: {node!r}")


def _token_matches(test: TokenTest, system: str | None, code: str | None) -> bool:
    if test.code is not None and test.code != code:
        return False
    if test.any_system:
        return True
    return test.system == system


def _tokens(param: str, resource: dict) -> Iterator[tuple[str | None, str | None]]:
    if param in ("_security", "_tag"):
        codings = (resource.get("meta") or {}).get(param[1:]) or []
        yield from ((c.get("system"), c.get("code")) for c in codings if isinstance(c, dict))
    elif param in ("security-label", "category"):
        field = "securityLabel" if param == "security-label" else "category"
        for concept in resource.get(field) or []:
            for coding in concept.get("coding") or []:
                yield coding.get("system"), coding.get("code")
    elif param == "type":  # DocumentReference.type, the JDV_J66 type (R13)
        concept = resource.get("type")
        codings = concept.get("coding") if isinstance(concept, dict) else None
        for coding in codings or []:
            yield coding.get("system"), coding.get("code")
    elif param == "status":  # a code: no system (`access.deletion`)
        yield None, resource.get("status")
    elif param == "author-identifier":
        contained = {f"#{r.get('id')}": r for r in resource.get("contained") or [] if r.get("id")}
        for author in resource.get("author") or []:
            identifiers = [author.get("identifier")]
            target = contained.get(author.get("reference", ""))
            if target is not None:
                identifiers.extend(target.get("identifier") or [])
                practitioner = target.get("practitioner") or {}
                identifiers.append(practitioner.get("identifier"))
                # A contained PractitionerRole naming a contained Practitioner (the XDS/MHD
                # author shape), as the author-identifier SearchParameter follows it.
                named = contained.get(practitioner.get("reference", ""))
                if named is not None:
                    identifiers.extend(named.get("identifier") or [])
            for identifier in identifiers:
                if isinstance(identifier, dict):
                    yield identifier.get("system"), identifier.get("value")
    else:
        raise ValueError(f"token parameter not supported in Python evaluation: {param}")


def _references(param: str, resource: dict) -> list[dict]:
    known = ("sender", "recipient", "subject", "patient", "author", "entity", "agent", "item")
    if param not in known:
        raise ValueError(f"reference parameter not supported in Python evaluation: {param}")
    path = {
        "patient": "subject",
        "entity": "entity.what",
        "agent": "agent.who",
        "item": "entry.item",  # List.entry.item, the List `item` SearchParameter
    }.get(param, param)
    return [ref for ref in values_at(resource, path.split(".")) if isinstance(ref, dict)]


def _reference_matches(test: ReferenceTest, reference: dict) -> bool:
    if test.identifier_value is not None:
        identifier = reference.get("identifier") or {}
        return identifier.get("value") == test.identifier_value and (
            test.identifier_system is None or identifier.get("system") == test.identifier_system
        )
    if test.url is not None:
        return reference.get("reference") == test.url
    target = reference_target(reference.get("reference"))
    if target is None:
        return False
    return target[1] == test.target_id and test.target_type in (None, target[0])
