"""The compiled checks a profile is made of, and the issues each reports.

Each check has a fast `ok` (values only) and a `run` that builds the OperationOutcome issues
with the FHIRPath of the failing value, the element id and the profile's name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import Issue
from fhir_server.resources.profiles.element_path import Step, select, select_fast, step_values
from fhir_server.resources.profiles.value_sets import ValueSetExpansion

_TYPED_REFERENCE = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)(?:/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?|\?.*)$"
)


@dataclass(frozen=True, slots=True)
class Context:
    """What a check needs besides the element: the resource root and the profile's name."""

    root: dict
    profile: str


class Check:
    """A compiled constraint.

    `ok` is the fast path, run on every write: it walks the values only. `run` builds the
    FHIRPath of each instance, which costs more, and is only called when `ok` is False.
    """

    element_id: str

    def ok(self, root: dict) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, ctx: Context, out: list[Issue]) -> None:  # pragma: no cover - interface
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Cardinality(Check):
    element_id: str
    parent: tuple[Step, ...]
    last: Step
    min: int
    max: int | None  # None = *
    # A slice of an array that has its own min >= 1: an absent array is reported once, there.
    quiet_when_absent: bool = False

    def ok(self, root: dict) -> bool:
        return all(self.ok_in(node) for node in select_fast(root, self.parent))

    def ok_in(self, node: Any) -> bool:
        """Whether the cardinality holds in one instance of the parent."""
        last = self.last
        if not isinstance(node, dict):
            return True
        if last.member is None and not last.choice:
            value = node.get(last.name)
            count = 0 if value is None else len(value) if isinstance(value, list) else 1
        else:
            if self.quiet_when_absent and not node.get(last.name):
                return True
            count = len(step_values(last, node))
        return count >= self.min and (self.max is None or count <= self.max)

    def run(self, ctx: Context, out: list[Issue]) -> None:
        root_expr = ctx.root.get("resourceType", "Resource")
        for node, expr in select(ctx.root, self.parent, root_expr):
            if self.quiet_when_absent and isinstance(node, dict) and not node.get(self.last.name):
                continue
            count = sum(1 for _ in self.last.children(node, expr))
            where = f"{expr}.{self.last.name}"
            if count < self.min:
                what = f"slice {self.last.slice_name} of " if self.last.slice_name else ""
                out.append(
                    Issue(
                        "error",
                        "required",
                        f"{where}: {what}minimum cardinality {self.min} not met (found {count}) "
                        f"[{self.element_id}, profile {ctx.profile}]",
                        (where,),
                    )
                )
            elif self.max is not None and count > self.max:
                out.append(
                    Issue(
                        "error",
                        "structure",
                        f"{where}: maximum cardinality {self.max} exceeded (found {count}) "
                        f"[{self.element_id}, profile {ctx.profile}]",
                        (where,),
                    )
                )


@dataclass(frozen=True, slots=True)
class CardinalityGroup(Check):
    """The cardinalities of the children of one element, checked in one walk to it."""

    element_id: str
    parent: tuple[Step, ...]
    members: tuple[Cardinality, ...]

    def ok(self, root: dict) -> bool:
        members = self.members
        for node in select_fast(root, self.parent):
            for member in members:
                if not member.ok_in(node):
                    return False
        return True

    def run(self, ctx: Context, out: list[Issue]) -> None:
        for member in self.members:
            if not member.ok(ctx.root):
                member.run(ctx, out)


def matches_pattern(value: Any, pattern: Any) -> bool:
    """FHIR pattern[x] semantics: every element of the pattern is present with that value."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            matches_pattern(value.get(k), v) for k, v in pattern.items()
        )
    if isinstance(pattern, list):
        return isinstance(value, list) and all(
            any(matches_pattern(item, p) for item in value) for p in pattern
        )
    return value == pattern


@dataclass(frozen=True, slots=True)
class FixedOrPattern(Check):
    element_id: str
    steps: tuple[Step, ...]
    kind: str  # fixed | pattern
    value: Any

    def ok(self, root: dict) -> bool:
        if self.kind == "fixed":
            return all(node == self.value for node in select_fast(root, self.steps))
        return all(matches_pattern(node, self.value) for node in select_fast(root, self.steps))

    def run(self, ctx: Context, out: list[Issue]) -> None:
        root_expr = ctx.root.get("resourceType", "Resource")
        for node, expr in select(ctx.root, self.steps, root_expr):
            ok = node == self.value if self.kind == "fixed" else matches_pattern(node, self.value)
            if not ok:
                out.append(
                    Issue(
                        "error",
                        "value",
                        f"{expr}: the value must {'be' if self.kind == 'fixed' else 'match'} "
                        f"{json.dumps(self.value, ensure_ascii=False)} "
                        f"[{self.element_id}, profile {ctx.profile}]",
                        (expr,),
                    )
                )


@dataclass(frozen=True, slots=True)
class RequiredBinding(Check):
    element_id: str
    steps: tuple[Step, ...]
    value_set: ValueSetExpansion
    aliases: dict[str, str] = field(hash=False, compare=False)

    def _codings(self, node: Any) -> list[dict] | None:
        if isinstance(node, dict):
            if "coding" in node or "text" in node:
                coding = node.get("coding")
                return (
                    [c for c in coding if isinstance(c, dict)] if isinstance(coding, list) else []
                )
            return [node]
        return None

    def _valid(self, node: Any) -> bool:
        if isinstance(node, str):  # code
            return node in self.value_set.codes
        codings = self._codings(node)
        if codings is None:
            return True  # a wrong shape is the model's business
        aliases, pairs = self.aliases, self.value_set.pairs
        for coding in codings:
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and (aliases.get(system, system), code) in pairs:
                return True
        return False

    def ok(self, root: dict) -> bool:
        return all(self._valid(node) for node in select_fast(root, self.steps))

    def run(self, ctx: Context, out: list[Issue]) -> None:
        root_expr = ctx.root.get("resourceType", "Resource")
        vs = self.value_set
        for node, expr in select(ctx.root, self.steps, root_expr):
            if self._valid(node):
                continue
            if isinstance(node, str):
                found = repr(node)
            else:
                codings = self._codings(node) or []
                found = (
                    ", ".join(f"{c.get('system')}|{c.get('code')}" for c in codings) or "no coding"
                )
            out.append(
                Issue(
                    "error",
                    "code-invalid",
                    f"{expr}: {found} is not in the required value set {vs.url} "
                    f"[{self.element_id}, profile {ctx.profile}]",
                    (expr,),
                )
            )


def _reference_type(reference: dict, root: dict) -> str | None:
    """The resource type a Reference names, when it can be told without resolving it."""
    literal = reference.get("reference")
    if isinstance(literal, str):
        if literal.startswith("#"):
            for contained in root.get("contained") or ():
                if isinstance(contained, dict) and contained.get("id") == literal[1:]:
                    return contained.get("resourceType")
            return None
        if literal.startswith("urn:"):
            return None  # a Bundle entry's fullUrl: its type is checked with the entry
        match = _TYPED_REFERENCE.search(literal)
        return match.group(1) if match else None
    kind = reference.get("type")
    return kind if isinstance(kind, str) else None


@dataclass(frozen=True, slots=True)
class ReferenceTarget(Check):
    element_id: str
    steps: tuple[Step, ...]
    types: frozenset[str]

    def ok(self, root: dict) -> bool:
        for node in select_fast(root, self.steps):
            if isinstance(node, dict):
                kind = _reference_type(node, root)
                if kind is not None and kind not in self.types:
                    return False
        return True

    def run(self, ctx: Context, out: list[Issue]) -> None:
        root_expr = ctx.root.get("resourceType", "Resource")
        for node, expr in select(ctx.root, self.steps, root_expr):
            if not isinstance(node, dict):
                continue
            kind = _reference_type(node, ctx.root)
            if kind is not None and kind not in self.types:
                out.append(
                    Issue(
                        "error",
                        "value",
                        f"{expr}: a reference to {kind} where {' | '.join(sorted(self.types))} "
                        f"is expected [{self.element_id}, profile {ctx.profile}]",
                        (expr,),
                    )
                )
