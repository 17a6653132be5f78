"""The resource types the server serves, and what it must know of each: one entry a type.

Adding a served type is adding its entry here (and its access rules in `access.policy`):
the model validates it (`resources.model`), the search registry indexes it
(`search.registry`), the store computes its compartment (`search.extract`) and the access
rules read the same compartment (`access.constraints`), all from this table.

- `compartment`: the parameters of the patient CompartmentDefinition
  (profiles/compartmentdefinition-patient.json, FHIR R4) for the type, each with the paths
  of the references its SearchParameter reads. A resource is in the compartment of every
  Patient such a reference points to (a relative literal reference, version-specific or
  not: `resources.references`); a Patient is in its own. tests/unit/test_served_types.py
  checks the table against the CompartmentDefinition and the SearchParameters.
- `required_codes`: the required bindings (FHIR R4) of the codes the server acts on, which
  the models do not check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from fhir_server.resources.references import all_references, reference_target, values_at

ADMINISTRATIVE_GENDER = frozenset({"male", "female", "other", "unknown"})


@dataclass(frozen=True)
class ServedType:
    """One served resource type: its patient compartment and its required codes."""

    name: str
    # CompartmentDefinition parameter -> dotted paths of the references it reads
    compartment: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # element -> allowed codes (required bindings the models leave unchecked)
    required_codes: Mapping[str, frozenset[str]] = field(default_factory=dict)


SERVED: tuple[ServedType, ...] = (
    ServedType(
        "Patient",
        compartment={"link": ("link.other",)},
        required_codes={"gender": ADMINISTRATIVE_GENDER},
    ),
    ServedType(
        "RelatedPerson",
        compartment={"patient": ("patient",)},
        required_codes={"gender": ADMINISTRATIVE_GENDER},
    ),
    ServedType(
        "DocumentReference",
        compartment={"subject": ("subject",), "author": ("author",)},
        required_codes={
            "status": frozenset({"current", "superseded", "entered-in-error"}),
            "docStatus": frozenset({"preliminary", "final", "amended", "entered-in-error"}),
        },
    ),
    # Not in any patient's compartment: a Binary is judged as the document owning it.
    ServedType("Binary"),
    ServedType(
        "List",
        compartment={"subject": ("subject",), "source": ("source",)},
        required_codes={
            "status": frozenset({"current", "retired", "entered-in-error"}),
            "mode": frozenset({"working", "snapshot", "changes"}),
        },
    ),
    ServedType(
        "Consent",
        compartment={"patient": ("patient",)},
        required_codes={
            "status": frozenset(
                {"draft", "proposed", "active", "rejected", "inactive", "entered-in-error"}
            ),
        },
    ),
    ServedType(
        "AuditEvent",
        compartment={"patient": ("agent.who", "entity.what")},
        required_codes={"action": frozenset({"C", "R", "U", "D", "E"})},
    ),
    ServedType(
        "Communication",
        compartment={
            "subject": ("subject",),
            "sender": ("sender",),
            "recipient": ("recipient",),
        },
        required_codes={
            "status": frozenset(
                {
                    "preparation",
                    "in-progress",
                    "not-done",
                    "on-hold",
                    "stopped",
                    "completed",
                    "entered-in-error",
                    "unknown",
                }
            ),
        },
    ),
)

BY_NAME: Mapping[str, ServedType] = {served.name: served for served in SERVED}
SERVED_TYPES: tuple[str, ...] = tuple(BY_NAME)
REQUIRED_CODES: Mapping[str, Mapping[str, frozenset[str]]] = {
    served.name: served.required_codes for served in SERVED if served.required_codes
}


# Per type, the paths of its compartment parameters, the parameters by name: the order of
# `compartment_of`.
_COMPARTMENT_PATHS: Mapping[str, tuple[tuple[str, ...], ...]] = {
    served.name: tuple(
        tuple(path.split("."))
        for param in sorted(served.compartment)
        for path in served.compartment[param]
    )
    for served in SERVED
}


def compartment_params(resource_type: str) -> tuple[str, ...]:
    """The CompartmentDefinition parameters placing a `resource_type` in a compartment."""
    served = BY_NAME.get(resource_type)
    return tuple(served.compartment) if served is not None else ()


def compartment_of(resource: dict) -> list[str]:
    """Ids of the Patients in whose compartment the resource is, each once.

    The order is the index's: a Patient's own id first, then the parameters by name, then
    the references in the order they stand (the first id is the resource's shard key).
    A resource of a type not served belongs to every Patient it references outside its
    contained resources: what the server does not know, it does not narrow (fail closed).
    """
    resource_type = resource.get("resourceType")
    served = BY_NAME.get(resource_type) if isinstance(resource_type, str) else None
    ids: list[str] = []
    own_id = resource.get("id")
    if resource_type == "Patient" and isinstance(own_id, str) and own_id:
        ids.append(own_id)
    if served is None:
        references: list[object] = list(all_references(resource))
    else:
        references = [
            value for path in _COMPARTMENT_PATHS[served.name] for value in values_at(resource, path)
        ]
    for reference in references:
        if isinstance(reference, dict):
            target = reference_target(reference.get("reference"))
            if target is not None and target[0] == "Patient":
                ids.append(target[1])
    return list(dict.fromkeys(ids))
