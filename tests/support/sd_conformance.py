"""A small StructureDefinition conformance checker for tests: the constraints a profile's
differential states, checked on an instance the way a FHIR validator reads them.

Why not the production engine (:mod:`fhir_server.resources.profiles`): it compiles one
differential on its own, with our local terminology, for the write path. The published BALP
profiles need what it does not do, and should not do there:

- a profile's constraints are spread over its ``baseDefinition`` chain (PatientRead adds the
  ``patient`` entity slice to the slicing Read defines), so the differentials are merged here,
  base first;
- slices recognised by a *binding* rather than a pattern (the ``user`` agent of
  Create/Update/Delete is any agent whose type is in the DataSources ValueSet), and required
  bindings to BALP's own ValueSets;
- ``closed`` slicing (AuthZconsent's entities), where a member no slice matches is an error;
- an invariant that refers to ``%resource`` (AuthZconsent's ``val-audit-source``).

The base resource's own rules (R4 AuditEvent: cardinalities, types) are not restated here:
the test checks them with the ``fhir.resources`` models.

What is checked, for every element of the merged differential:

- ``min``/``max`` in each instance of its parent (a slice counts its members only);
- ``fixed[x]`` (equal) and ``pattern[x]`` (the value contains the pattern) on every value;
- ``required`` bindings: the Coding, or one coding of the CodeableConcept, is in the ValueSet;
- slice membership by the slicing's discriminators (``value``/``pattern`` on a path or
  ``$this``): the discriminating element's fixed/pattern value, else its required binding;
- ``rules: closed``: every member matches one slice;
- ``type.targetProfile`` of a Reference: a literal reference names one of the target types;
- ``constraint`` FHIRPath expressions (with ``%resource``), through fhirpathpy.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fhirpathpy

_CORE = "http://hl7.org/fhir/StructureDefinition/"


@dataclass(frozen=True)
class Issue:
    """One unmet constraint: the element id of the differential and what is wrong."""

    element_id: str
    message: str

    def __str__(self) -> str:
        return f"{self.element_id}: {self.message}"


@dataclass(frozen=True)
class _Step:
    name: str
    slice_name: str | None


def _steps(element_id: str) -> list[_Step]:
    """``AuditEvent.agent:client.type`` -> [agent:client, type] (the root dropped)."""
    out = []
    for part in element_id.split(".")[1:]:
        name, _, slice_name = part.partition(":")
        out.append(_Step(name, slice_name or None))
    return out


def _values(node: Any, name: str) -> list[Any]:
    if not isinstance(node, dict):
        return []
    if name.endswith("[x]"):
        stem = name.removesuffix("[x]")
        return [v for k, v in node.items() if k.startswith(stem) and k[len(stem) :][:1].isupper()]
    value = node.get(name)
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _value_of(element: dict, prefix: str) -> tuple[bool, Any]:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix) :][:1].isupper():
            return True, value
    return False, None


def contains_pattern(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x] semantics: every property of the pattern is in the value; a list in
    the pattern is matched item by item by some item of the value's list."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            contains_pattern(value.get(k), v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        items = value if isinstance(value, list) else [value]
        return all(any(contains_pattern(i, p) for i in items) for p in pattern)
    return value == pattern


class ProfileSet:
    """StructureDefinitions and ValueSets read from folders, indexed by canonical url."""

    def __init__(self, *folders: Path):
        self.definitions: dict[str, dict] = {}
        self.value_sets: dict[str, set[tuple[str, str]]] = {}
        for folder in folders:
            for path in sorted(folder.glob("*.json")):
                resource = json.loads(path.read_text(encoding="utf-8"))
                if resource.get("resourceType") == "StructureDefinition":
                    self.definitions[resource["url"]] = resource
                elif resource.get("resourceType") == "ValueSet":
                    self.value_sets[resource["url"]] = {
                        (include["system"], concept["code"])
                        for include in resource["compose"]["include"]
                        for concept in include.get("concept", [])
                    }

    def elements(self, url: str) -> dict[str, dict]:
        """The merged differential of `url` and its bases (base first, same id: merged)."""
        chain: list[dict] = []
        while url and not url.startswith(_CORE):
            sd = self.definitions[url]
            chain.append(sd)
            url = sd.get("baseDefinition", "")
        merged: dict[str, dict] = {}
        for sd in reversed(chain):
            for element in sd["differential"]["element"]:
                merged[element["id"]] = merged.get(element["id"], {}) | element
        return merged

    def validate(self, resource: dict, url: str) -> list[Issue]:
        """The constraints of profile `url` that `resource` does not meet (none: conformant)."""
        return _Checker(self, self.elements(url), resource).run()


class _Checker:
    def __init__(self, profiles: ProfileSet, elements: dict[str, dict], resource: dict):
        self.profiles = profiles
        self.elements = elements
        self.resource = resource
        self.issues: list[Issue] = []

    # --- slices ---------------------------------------------------------------------------

    def _in_value_set(self, value: Any, binding: dict) -> bool:
        url = binding["valueSet"].split("|")[0]
        codes = self.profiles.value_sets[url]  # KeyError: a ValueSet the fixture lacks
        codings = (
            value.get("coding", []) if isinstance(value, dict) and "coding" in value else [value]
        )
        return any(
            isinstance(c, dict) and (c.get("system"), c.get("code")) in codes for c in codings
        )

    def _discriminates(self, element: dict) -> Callable[[Any], bool] | None:
        """The test a discriminating element states: its fixed/pattern value, else its binding."""
        for prefix in ("fixed", "pattern"):
            has, expected = _value_of(element, prefix)
            if has:
                if prefix == "fixed":
                    return lambda v, e=expected: v == e
                return lambda v, e=expected: contains_pattern(v, e)
        binding = element.get("binding")
        if binding and binding.get("strength") == "required":
            return lambda v, b=binding: self._in_value_set(v, b)
        return None

    def _member_test(self, sliced_id: str, slice_name: str) -> Callable[[Any], bool]:
        slicing = self.elements[sliced_id].get("slicing")
        if not slicing:
            raise ValueError(f"{sliced_id} has slice {slice_name} but no slicing")
        slice_id = f"{sliced_id}:{slice_name}"
        tests: list[tuple[str, Callable[[Any], bool]]] = []
        for discriminator in slicing["discriminator"]:
            if discriminator["type"] not in ("value", "pattern"):
                raise ValueError(f"{sliced_id}: discriminator {discriminator['type']} unsupported")
            path = discriminator["path"]
            source = (
                self.elements[slice_id]
                if path == "$this"
                else self.elements.get(f"{slice_id}.{path}", {})
            )
            test = self._discriminates(source)
            if test is None:
                raise ValueError(f"{slice_id} states no value for discriminator {path}")
            tests.append((path, test))

        def member(item: Any) -> bool:
            for path, test in tests:
                values = [item] if path == "$this" else _values(item, path)
                if not any(test(v) for v in values):
                    return False
            return True

        return member

    def _slice_names(self, sliced_id: str) -> list[str]:
        prefix = f"{sliced_id}:"
        return [
            i[len(prefix) :]
            for i in self.elements
            if i.startswith(prefix) and "." not in i[len(prefix) :]
        ]

    # --- walking ----------------------------------------------------------------------------

    def _select(self, nodes: Iterable[Any], steps: list[_Step], path: str) -> list[Any]:
        """The values reached from `nodes` (at element id `path`) through `steps`."""
        current = list(nodes)
        for step in steps:
            sliced_id = f"{path}.{step.name}"
            current = [v for node in current for v in _values(node, step.name)]
            if step.slice_name:
                member = self._member_test(sliced_id, step.slice_name)
                current = [v for v in current if member(v)]
                path = f"{sliced_id}:{step.slice_name}"
            else:
                path = sliced_id
        return current

    # --- checks -----------------------------------------------------------------------------

    def run(self) -> list[Issue]:
        for element_id, element in self.elements.items():
            steps = _steps(element_id)
            if not steps:
                continue
            root = element_id.split(".")[0]
            parent_id = element_id.rpartition(".")[0]
            parents = self._select([self.resource], steps[:-1], root)
            last = steps[-1]
            for parent in parents:
                values = self._select([parent], [last], parent_id)
                self._cardinality(element_id, element, values)
                if last.slice_name is None:
                    self._values(element_id, element, values)
                self._constraints(element_id, element, values)
                if element.get("slicing", {}).get("rules") == "closed":
                    self._closed(element_id, values)
        return self.issues

    def _cardinality(self, element_id: str, element: dict, values: list[Any]) -> None:
        low = int(element.get("min", 0))
        high = element.get("max", "*")
        if len(values) < low:
            self.issues.append(Issue(element_id, f"{len(values)} found, at least {low} required"))
        if high != "*" and len(values) > int(high):
            self.issues.append(Issue(element_id, f"{len(values)} found, at most {high} allowed"))

    def _values(self, element_id: str, element: dict, values: list[Any]) -> None:
        has, fixed = _value_of(element, "fixed")
        has_pattern, pattern = _value_of(element, "pattern")
        binding = element.get("binding")
        targets = {
            p.removeprefix(_CORE)
            for t in element.get("type", [])
            if t.get("code") == "Reference"
            for p in t.get("targetProfile", [])
        }
        for value in values:
            if has and value != fixed:
                self.issues.append(Issue(element_id, f"{value!r} is not the fixed {fixed!r}"))
            if has_pattern and not contains_pattern(value, pattern):
                self.issues.append(Issue(element_id, f"{value!r} lacks the pattern {pattern!r}"))
            required = binding and binding.get("strength") == "required"
            if required and not self._in_value_set(value, binding):
                self.issues.append(Issue(element_id, f"{value!r} is not in {binding['valueSet']}"))
            reference = value.get("reference") if isinstance(value, dict) else None
            if targets and reference and "/" in reference:
                kind = reference.split("/_history/")[0].split("/")[-2]
                if kind not in targets:
                    self.issues.append(
                        Issue(element_id, f"{reference} is not a {' or '.join(sorted(targets))}")
                    )

    def _constraints(self, element_id: str, element: dict, values: list[Any]) -> None:
        for constraint in element.get("constraint", []):
            if constraint.get("severity", "error") != "error":
                continue
            for value in values:
                result = fhirpathpy.evaluate(
                    value, constraint["expression"], {"resource": self.resource}
                )
                if result != [True]:
                    self.issues.append(
                        Issue(element_id, f"{constraint['key']}: {constraint.get('human')}")
                    )

    def _closed(self, element_id: str, values: list[Any]) -> None:
        tests = {
            name: self._member_test(element_id, name) for name in self._slice_names(element_id)
        }
        for value in values:
            if not any(test(value) for test in tests.values()):
                self.issues.append(Issue(element_id, f"closed slicing: {value!r} matches no slice"))
