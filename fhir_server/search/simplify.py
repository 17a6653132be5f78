"""Dropping access clauses a query already implies, so the store probes each candidate less.

The gate adds `InCompartment(P)` to every search a practitioner makes in a record; most
searches already name that patient (`DocumentReference?patient=P`), and a resource whose
`patient` reference is `Patient/P` is in P's compartment by the CompartmentDefinition
(its `subject` is a compartment parameter). The clause then costs a probe per candidate
and removes nothing.
"""

from __future__ import annotations

from fhir_server.search.query import And, InCompartment, Node, ReferenceTest
from fhir_server.search.registry import SearchRegistry


def places_in_compartment(
    test: ReferenceTest, resource_type: str, registry: SearchRegistry
) -> str | None:
    """The patient whose compartment every match of `test` is in, if the test guarantees it.

    It does when the parameter can only reference a Patient (or the test names the type)
    and its path is, or narrows, the path of a compartment parameter of the type.
    """
    if test.target_id is None or test.target_type not in (None, "Patient"):
        return None
    definitions = registry.for_type(resource_type)
    definition = definitions.get(test.param)
    if definition is None or definition.type != "reference":
        return None
    if test.target_type is None and definition.targets != ("Patient",):
        return None
    for code in registry.compartment_params(resource_type):
        compartment = definitions.get(code)
        if compartment is None or not compartment.expression:
            continue
        path = compartment.expression
        expression = definition.expression
        if expression == path or (expression.startswith(path + ".") and "|" not in expression):
            return test.target_id
    return None


def without_implied_compartment(where: Node, resource_type: str, registry: SearchRegistry) -> Node:
    """`where` without the top-level `InCompartment` clauses another top-level clause implies."""
    if not isinstance(where, And):
        return where
    implied = {
        patient
        for part in where.parts
        if isinstance(part, ReferenceTest)
        and (patient := places_in_compartment(part, resource_type, registry)) is not None
    }
    if not implied:
        return where
    kept = tuple(
        part
        for part in where.parts
        if not (isinstance(part, InCompartment) and part.patient_id in implied)
    )
    return kept[0] if len(kept) == 1 else And(kept)
