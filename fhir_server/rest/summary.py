"""`_summary` and `_elements` (search.html#summary, search.html#elements).

Top-level elements only, as the specification requires of `_elements`; the summary flags come
from the fhir.resources models (isSummary in the R4 definitions). The result is tagged
SUBSETTED so that nobody mistakes it for the whole resource.

Every subset keeps the resource's mandatory top-level elements (`mandatory_elements`): the
specification asks it of `_elements` and `_summary=text`, and the XML form is rendered
through the models, which refuse a resource without them (an AuditEvent trace asked with
`_format=xml&_summary=true` or `_elements=` answered 500).
"""

from __future__ import annotations

from functools import cache

from fhir_server.errors import bad_request
from fhir_server.resources.model import model_class

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
_ALWAYS = ("resourceType", "id", "meta")


@cache
def mandatory_elements(resource_type: str) -> frozenset[str]:
    """The top-level elements of minimum cardinality 1 (a primitive's flag, or a required
    field of the model): search.html#elements, servers SHOULD always return them."""
    names = set()
    for field in model_class(resource_type).model_fields.values():
        extra = field.json_schema_extra or {}
        if extra.get("element_required") or field.is_required():
            names.add(field.alias)
    return frozenset(names)


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    names = set(mandatory_elements(resource_type))
    for field in model_class(resource_type).model_fields.values():
        extra = field.json_schema_extra or {}
        if extra.get("summary_element_property"):
            names.add(field.alias)
    return frozenset(names)


def summarize(resource: dict, summary: str | None, elements: str | None) -> dict:
    if summary not in (None, "", "true", "text", "data", "false", "count"):
        raise bad_request(
            f"_summary '{summary}' is not true, text, data, count or false", "_summary"
        )
    resource_type = resource["resourceType"]
    if summary == "true":
        keep = summary_elements(resource_type)
    elif summary == "text":
        keep = frozenset({"text"}) | mandatory_elements(resource_type)
    elif summary == "data":
        keep = frozenset(name for name in resource if name != "text")
    elif elements:
        asked = frozenset(part.strip() for part in elements.split(",") if part.strip())
        keep = asked | mandatory_elements(resource_type)
    else:
        return resource
    subset = {name: value for name, value in resource.items() if name in keep or name in _ALWAYS}
    meta = dict(subset.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    subset["meta"] = meta
    return subset
