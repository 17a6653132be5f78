"""The SearchParameters the server supports, per served resource type.

Loaded once at start-up from profiles/search-parameters/*.json (the official R4 definitions
plus ours), for the types `resources.served` lists, whose compartments it also gives (the
patient CompartmentDefinition's parameters). Everything else that deals with
search parameters (query parsing, extraction, the CapabilityStatement, the engines' index
creation) asks this registry, so a parameter exists everywhere or nowhere.

A parameter without a FHIRPath expression (`_text`, `_content`, `_query`) is not supported:
it is left out of the registry and of `resources()`, so what we advertise is what we do.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fhir_server.config import read_conformance_json
from fhir_server.resources import served
from fhir_server.resources.served import SERVED_TYPES
from fhir_server.search.fhirpath import Extractor, build_extractor

RESOURCE_LEVEL = ("Resource", "DomainResource")
PARAM_TYPES = frozenset(
    {"token", "string", "date", "reference", "uri", "number", "quantity", "composite", "special"}
)


@dataclass(frozen=True)
class SearchParamDef:
    """One search parameter as it applies to one resource type."""

    code: str
    type: str  # token | string | date | reference | uri | number | quantity | composite | special
    base: tuple[str, ...]
    expression: str  # the part of the definition's expression for this type
    targets: tuple[str, ...] = ()
    url: str = ""
    extractor: Extractor | None = field(default=None, compare=False, repr=False)
    # composite only: one extractor per component, evaluated on each element of `expression`
    component_extractors: tuple[Callable[[Any], list], ...] = field(
        default=(), compare=False, repr=False
    )


def split_union(expression: str) -> list[str]:
    """Top-level `|` alternatives of a FHIRPath expression (outside parentheses and quotes)."""
    parts, depth, quoted, start = [], 0, False, 0
    for index, char in enumerate(expression):
        if char == "'" and (index == 0 or expression[index - 1] != "\\"):
            quoted = not quoted
        elif not quoted and char == "(":
            depth += 1
        elif not quoted and char == ")":
            depth -= 1
        elif not quoted and depth == 0 and char == "|":
            parts.append(expression[start:index].strip())
            start = index + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


_LEADING_TYPE = re.compile(r"^\(*\s*([A-Za-z]+)")


def expression_for(expression: str, resource_type: str) -> str:
    """The alternatives of `expression` that start at `resource_type` (or at Resource)."""
    mine = []
    for part in split_union(expression):
        match = _LEADING_TYPE.match(part)
        if match and match.group(1) in (resource_type, *RESOURCE_LEVEL):
            mine.append(part)
    return " | ".join(mine)


def _component_extractor(expression: str) -> Callable[[Any], list]:
    extractor = build_extractor(expression)
    return lambda element: extractor(element) if isinstance(element, dict) else []


class SearchRegistry:
    def __init__(
        self,
        definitions: dict[str, dict[str, SearchParamDef]],
        resources: list[dict],
    ) -> None:
        self._by_type = definitions
        self._resources = resources

    @classmethod
    def load(cls, profiles_dir: Path) -> SearchRegistry:
        """Read every Bundle/SearchParameter in profiles_dir/search-parameters/.

        Later files override earlier ones for the same (type, code), files being read in name
        order (`dmp-mhd.json` before `fhir-r4.json` — so R4 wins; our file only adds).
        """
        resources: dict[str, dict] = {}
        for path in sorted((Path(profiles_dir) / "search-parameters").glob("*.json")):
            data = read_conformance_json(path)
            for resource in _search_parameters(data):
                url = resource.get("url") or f"{path.name}#{resource.get('id')}"
                resources[url] = resource
        by_type: dict[str, dict[str, SearchParamDef]] = {t: {} for t in (*SERVED_TYPES, "Resource")}
        kept: list[dict] = []
        for resource in resources.values():
            if _add_definition(by_type, resource):
                kept.append(resource)
        return cls(by_type, kept)

    def get(self, resource_type: str | None, code: str) -> SearchParamDef | None:
        """The parameter `code` for `resource_type` (None: the Resource-level parameters)."""
        return self.for_type(resource_type).get(code)

    def for_type(self, resource_type: str | None) -> dict[str, SearchParamDef]:
        """All parameters applying to `resource_type`, the Resource-level ones included."""
        if resource_type is None or resource_type not in self._by_type:
            return dict(self._by_type["Resource"])
        return {**self._by_type["Resource"], **self._by_type[resource_type]}

    def resource_types(self) -> tuple[str, ...]:
        return SERVED_TYPES

    def resources(self) -> list[dict]:
        """The supported SearchParameter resources as loaded (for GET /SearchParameter)."""
        return list(self._resources)

    def compartment_params(self, resource_type: str) -> tuple[str, ...]:
        """Parameters placing a `resource_type` resource in a Patient compartment."""
        return served.compartment_params(resource_type)


def _search_parameters(data: dict) -> list[dict]:
    if data.get("resourceType") == "SearchParameter":
        return [data]
    if data.get("resourceType") == "Bundle":
        return [
            e["resource"]
            for e in data.get("entry", [])
            if isinstance(e.get("resource"), dict)
            and e["resource"].get("resourceType") == "SearchParameter"
        ]
    return []


def _add_definition(by_type: dict[str, dict[str, SearchParamDef]], resource: dict) -> bool:
    code, kind = resource.get("code"), resource.get("type")
    expression = resource.get("expression") or ""
    if not code or kind not in PARAM_TYPES or not expression or kind == "special":
        return False
    added = False
    for base in resource.get("base", []):
        target_type = "Resource" if base in RESOURCE_LEVEL else base
        if target_type not in by_type:
            continue
        part = expression_for(expression, base)
        if not part:
            continue
        components: tuple[Callable[[Any], list], ...] = ()
        if kind == "composite":
            components = tuple(
                _component_extractor(c["expression"]) for c in resource.get("component", [])
            )
        by_type[target_type][code] = SearchParamDef(
            code=code,
            type=kind,
            base=tuple(resource.get("base", [])),
            expression=part,
            targets=tuple(resource.get("target", [])),
            url=resource.get("url", ""),
            extractor=build_extractor(part),
            component_extractors=components,
        )
        added = True
    return added
