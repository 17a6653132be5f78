"""A StructureDefinition's differential compiled, once at load, into a flat list of checks.

Slices are matched by the value/pattern of their discriminator (`system`, `url`, `$this`);
the cardinalities of the children of one element are grouped into one walk to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import Issue
from fhir_server.resources.profiles.checks import (
    Cardinality,
    CardinalityGroup,
    Check,
    Context,
    FixedOrPattern,
    ReferenceTarget,
    RequiredBinding,
    matches_pattern,
)
from fhir_server.resources.profiles.element_path import Step
from fhir_server.resources.profiles.invariants import (
    INVARIANTS,
    WHOLE_ARRAY_INVARIANTS,
    Invariant,
    fhirpath_invariant,
)
from fhir_server.resources.profiles.value_sets import ValueSetExpansion

_CORE_SD = "http://hl7.org/fhir/StructureDefinition/"


@dataclass(frozen=True)
class Profile:
    """A StructureDefinition compiled into its checks."""

    url: str
    name: str
    type: str
    checks: tuple[Check, ...]
    definition: dict = field(repr=False, compare=False)

    def validate(self, resource: dict) -> list[Issue]:
        out: list[Issue] = []
        for check in self.checks:
            if not check.ok(resource):
                check.run(Context(resource, self.name), out)
        return out


def _value_of(element: dict, prefix: str) -> tuple[bool, Any]:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
            return True, value
    return False, None


def _split_id(element_id: str) -> list[tuple[str, str | None]]:
    """`Patient.identifier:INS-NIR.value` -> [(identifier, INS-NIR), (value, None)]."""
    parts = []
    for part in element_id.split(".")[1:]:
        name, _, slice_name = part.partition(":")
        parts.append((name, slice_name or None))
    return parts


def _matching(expected: Any) -> Callable[[Any], bool]:
    """A slice test on the item itself (discriminator path `$this`)."""
    return lambda item: matches_pattern(item, expected)


def _child_matching(path: str, expected: Any) -> Callable[[Any], bool]:
    """A slice test on the item's child `path`."""
    return lambda item: isinstance(item, dict) and matches_pattern(item.get(path), expected)


class _Compiler:
    """One differential, its element ids walked into steps (slices resolved) and checks."""

    def __init__(self, sd: dict, value_sets: dict[str, ValueSetExpansion], aliases: dict[str, str]):
        self.sd = sd
        self.value_sets = value_sets
        self.aliases = aliases
        self.elements: dict[str, dict] = {}
        for element in sd.get("differential", {}).get("element", []):
            if "id" not in element or "path" not in element:
                raise ValueError(f"{sd.get('url')}: every differential element needs id and path")
            self.elements[element["id"]] = element
        self._steps: dict[str, tuple[Step, ...]] = {}

    def _member(self, sliced_id: str, slice_name: str) -> Callable[[Any], bool]:
        """Slice membership from the slicing discriminators of `sliced_id`."""
        slicing = self.elements.get(sliced_id, {}).get("slicing")
        if not slicing:
            raise ValueError(f"{self.sd['url']}: {sliced_id} has slices but no slicing")
        slice_id = f"{sliced_id}:{slice_name}"
        slice_element = self.elements[slice_id]
        tests: list[Callable[[Any], bool]] = []
        for discriminator in slicing.get("discriminator", []):
            path = discriminator.get("path")
            if discriminator.get("type") not in ("value", "pattern"):
                raise ValueError(f"{self.sd['url']}: discriminator type not supported")
            if path == "$this":
                has, expected = _value_of(slice_element, "fixed")
                if not has:
                    has, expected = _value_of(slice_element, "pattern")
                if not has:
                    raise ValueError(f"{self.sd['url']}: {slice_id} has no value to match")
                tests.append(_matching(expected))
                continue
            child = self.elements.get(f"{slice_id}.{path}")
            has, expected = _value_of(child or {}, "fixed")
            if not has:
                has, expected = _value_of(child or {}, "pattern")
            if not has:
                has, pattern = _value_of(slice_element, "pattern")
                if has and isinstance(pattern, dict) and path in pattern:
                    expected = pattern[path]
            if not has and path == "url":
                profiles = [p for t in slice_element.get("type", []) for p in t.get("profile", [])]
                has, expected = bool(profiles), (profiles[0] if profiles else None)
            if not has:
                raise ValueError(f"{self.sd['url']}: {slice_id} gives no value for {path}")
            tests.append(_child_matching(path, expected))
        return lambda item: all(test(item) for test in tests)

    def steps(self, element_id: str) -> tuple[Step, ...]:
        if element_id in self._steps:
            return self._steps[element_id]
        steps: list[Step] = []
        prefix = element_id.split(".")[0]
        for name, slice_name in _split_id(element_id):
            member = None
            if slice_name:
                member = self._member(f"{prefix}.{name}", slice_name)
            choice = name.endswith("[x]")
            steps.append(Step(name.removesuffix("[x]"), choice, slice_name, member))
            prefix = f"{prefix}.{name}" + (f":{slice_name}" if slice_name else "")
        self._steps[element_id] = tuple(steps)
        return self._steps[element_id]

    def compile(self) -> list[Check]:
        checks: list[Check] = []
        for element_id, element in self.elements.items():
            steps = self.steps(element_id)
            is_slice_root = bool(steps) and steps[-1].slice_name is not None
            if steps and ("min" in element or "max" in element):
                maximum = element.get("max", "*")
                unsliced = self.elements.get(element_id.rpartition(":")[0], {})
                checks.append(
                    Cardinality(
                        element_id,
                        steps[:-1],
                        steps[-1],
                        int(element.get("min", 0)),
                        None if maximum == "*" else int(maximum),
                        is_slice_root and int(unsliced.get("min", 0)) >= 1,
                    )
                )
            if steps and not is_slice_root:
                for kind in ("fixed", "pattern"):
                    has, value = _value_of(element, kind)
                    if has:
                        checks.append(FixedOrPattern(element_id, steps, kind, value))
            binding = element.get("binding")
            if binding and binding.get("strength") == "required" and steps:
                url = binding.get("valueSet", "").split("|")[0]
                if url not in self.value_sets:
                    raise ValueError(f"{self.sd['url']}: {element_id} binds to unknown {url}")
                checks.append(
                    RequiredBinding(element_id, steps, self.value_sets[url], self.aliases)
                )
            targets = {
                p.removeprefix(_CORE_SD)
                for t in element.get("type", [])
                if t.get("code") == "Reference"
                for p in t.get("targetProfile", [])
            }
            if targets and steps:
                checks.append(ReferenceTarget(element_id, steps, frozenset(targets)))
            for constraint in element.get("constraint", []):
                key = constraint["key"]
                fn = INVARIANTS.get(key)
                if fn is None:
                    if not constraint.get("expression"):
                        raise ValueError(f"{self.sd['url']}: invariant {key} has no expression")
                    fn = fhirpath_invariant(constraint["expression"])
                checks.append(
                    Invariant(
                        element_id,
                        steps,
                        key,
                        constraint.get("human", key),
                        constraint.get("severity", "error"),
                        fn,
                        key in WHOLE_ARRAY_INVARIANTS and bool(steps),
                    )
                )
        return _group_cardinalities(checks)


def _group_cardinalities(checks: list[Check]) -> list[Check]:
    """One CardinalityGroup per parent element, placed where its first member was."""
    groups: dict[tuple[Step, ...], list[Cardinality]] = {}
    for check in checks:
        if isinstance(check, Cardinality):
            groups.setdefault(check.parent, []).append(check)
    out: list[Check] = []
    for check in checks:
        if not isinstance(check, Cardinality):
            out.append(check)
        elif groups.get(check.parent):
            members = groups.pop(check.parent)
            parent_id = members[0].element_id.rpartition(".")[0]
            out.append(CardinalityGroup(parent_id, check.parent, tuple(members)))
    return out


def compile_profile(
    sd: dict, value_sets: dict[str, ValueSetExpansion], aliases: dict[str, str]
) -> Profile:
    """The Profile of one StructureDefinition; ValueError for what the checker cannot hold."""
    if sd.get("kind") != "resource" or sd.get("derivation") != "constraint":
        raise ValueError(f"{sd.get('url')}: only resource constraints are supported")
    checks = _Compiler(sd, value_sets, aliases).compile()
    return Profile(sd["url"], sd["name"], sd["type"], tuple(checks), sd)
