"""The CapabilityStatement: the template in capability/ completed from the live registries."""

from __future__ import annotations

import copy
from pathlib import Path

import orjson

from fhir_server import __version__
from fhir_server.resources.model import SERVED_TYPES
from fhir_server.search.registry import SearchRegistry

TYPE_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)
READ_ONLY_TYPES = {
    "AuditEvent": ("read", "vread", "history-instance", "history-type", "search-type", "create")
}


def build_capability_statement(
    template_path: Path,
    registry: SearchRegistry,
    *,
    base_url: str,
    profiles_by_type: dict[str, list[str]] | None = None,
    operations: dict[str, list[dict]] | None = None,
    date: str,
) -> bytes:
    statement = copy.deepcopy(orjson.loads(template_path.read_bytes()))
    statement["date"] = date
    statement["software"]["version"] = __version__
    statement["implementation"]["url"] = base_url
    rest = statement["rest"][0]
    resources = []
    for resource_type in SERVED_TYPES:
        interactions = READ_ONLY_TYPES.get(resource_type, TYPE_INTERACTIONS)
        if resource_type == "DocumentReference":
            interactions = (*interactions, "patch")  # metadata updates (service.patch)
        entry: dict = {
            "type": resource_type,
            "profile": f"http://hl7.org/fhir/StructureDefinition/{resource_type}",
            "interaction": [{"code": code} for code in interactions],
            "versioning": "versioned-update",
            "readHistory": True,
            # Clients never choose ids: a PUT of an unknown id answers as one of a hidden
            # resource does (`FhirService.update_in`, R18).
            "updateCreate": False,
            "conditionalCreate": True,
            "conditionalRead": "not-supported",
            "conditionalUpdate": resource_type != "AuditEvent",
            "conditionalDelete": "not-supported" if resource_type == "AuditEvent" else "single",
            "searchInclude": ["*"],
            "searchRevInclude": ["*"],
            "searchParam": [
                {"name": code, "definition": definition.url, "type": definition.type}
                for code, definition in sorted(registry.for_type(resource_type).items())
            ],
        }
        supported = (profiles_by_type or {}).get(resource_type)
        if supported:
            entry["supportedProfile"] = supported
        if operations and operations.get(resource_type):
            entry["operation"] = operations[resource_type]
        resources.append(entry)
    rest["resource"] = resources
    return orjson.dumps(statement)
