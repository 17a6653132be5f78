"""The server's profiles (profiles/StructureDefinition-*.json) enforced as compiled checks.

Why a small differential checker rather than a general validator: the write path must stay
cheap (a DocumentReference is checked in tens of microseconds, see
benchmarks/bench_profiles.py), the structural part is already done by the fhir.resources models
(`resources/model.py`), and our profiles only add a handful of constraint kinds. Each
StructureDefinition is compiled once, at load, into a flat list of checks:

- cardinality (`min`/`max`) of an element, counted in every instance of its parent, so a
  nested element (`content.attachment.hash`) is only required where its parent exists;
- `fixed[x]` (equality) and `pattern[x]` (the instance contains the pattern) values;
- required bindings, to the local ValueSets expanded from the local CodeSystems and the
  concepts listed in `compose` (a CodeSystem's `identifier` values, e.g. its `urn:oid:`, are
  accepted as aliases of its url, because XDS carries code systems as OIDs);
- slices, matched by the value/pattern of their discriminator (`system`, `url`, `$this`);
- reference targets (`type.targetProfile`) when the reference names its type;
- named invariants (`constraint.key`): the ones on the write path are implemented in Python
  (`INVARIANTS`, e.g. the INS key); any other key is evaluated from its FHIRPath
  `expression` with fhirpathpy.

Which profiles apply on write (`ProfileRegistry.profiles_for`):

- always, by resource type (`default_profiles`): Patient -> dmp-patient-ins, Consent ->
  dmp-consent;
- the profiles of ours the resource claims in `meta.profile`, and ours that stand for a
  claimed ANS PDSm profile (`CLAIM_ALIASES`: pdsm-comprehensive-document-reference ->
  dmp-document-reference, pdsm-submissionset-comprehensive -> dmp-submission-set);
- dmp-document-reference for a DocumentReference a client writes, whatever the door
  (`deposit=True`, asked by the document rules of `fhir_server.documents`, which also assign
  the entryUUID (identifier) of a new document before, as PDSm4DMP says);
- dmp-submission-set for a List whose code is the MHD `submissionset`.

dmp-audit-event applies only when claimed: the server writes AuditEvents itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from fhir_server.errors import Issue
from fhir_server.paths import profiles_dir
from fhir_server.resources.ins import is_ins_system, nir_key_error
from fhir_server.resources.normal_form import ALIASES_FILE, AliasTable, default_aliases
from fhir_server.resources.nos import read_official
from fhir_server.terminology import (
    CANONICAL_BASE,
    PDSM_PROFILE_BASE,
    SYSTEM_MHD_LIST_TYPES,
    SYSTEM_V3_CONFIDENTIALITY,
)

PROFILE_BASE = f"{CANONICAL_BASE}/StructureDefinition/"
DMP_DOCUMENT_REFERENCE = PROFILE_BASE + "dmp-document-reference"
DMP_SUBMISSION_SET = PROFILE_BASE + "dmp-submission-set"
DMP_PATIENT_INS = PROFILE_BASE + "dmp-patient-ins"
DMP_CONSENT = PROFILE_BASE + "dmp-consent"
DMP_AUDIT_EVENT = PROFILE_BASE + "dmp-audit-event"

DEFAULT_PROFILES: dict[str, tuple[str, ...]] = {
    "Patient": (DMP_PATIENT_INS,),
    "Consent": (DMP_CONSENT,),
}

CLAIM_ALIASES: dict[str, str] = {
    PDSM_PROFILE_BASE + "pdsm-comprehensive-document-reference": DMP_DOCUMENT_REFERENCE,
    PDSM_PROFILE_BASE + "pdsm-submissionset-comprehensive": DMP_SUBMISSION_SET,
}

PROFILES_DIR = profiles_dir()

_CORE_SD = "http://hl7.org/fhir/StructureDefinition/"
_UUID_URN = re.compile(
    r"^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
)
_TYPED_REFERENCE = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)(?:/[A-Za-z0-9\-.]{1,64}(?:/_history/[A-Za-z0-9\-.]{1,64})?|\?.*)$"
)


# --------------------------------------------------------------------------- terminology


@dataclass(frozen=True, slots=True)
class ValueSetExpansion:
    """The (system, code) pairs of a local ValueSet, systems in their canonical form."""

    url: str
    pairs: frozenset[tuple[str, str]]
    codes: frozenset[str]

    def contains(self, system: str | None, code: str | None) -> bool:
        return (system, code) in self.pairs


# --------------------------------------------------------------------------- element paths


@dataclass(frozen=True, slots=True)
class Step:
    """One step of an element path: `identifier:INS-NIR` -> name identifier, slice INS-NIR."""

    name: str  # without [x]
    choice: bool
    slice_name: str | None = None
    member: Callable[[Any], bool] | None = None  # slice membership, compiled

    def children(self, node: Any, expr: str) -> Iterator[tuple[Any, str]]:
        if not isinstance(node, dict):
            return
        if self.choice:
            values = [
                v
                for k, v in node.items()
                if k.startswith(self.name) and k[len(self.name) : len(self.name) + 1].isupper()
            ]
        else:
            value = node.get(self.name)
            values = [] if value is None else [value]
        base = f"{expr}.{self.name}"
        member = self.member
        for value in values:
            if isinstance(value, list):
                for i, item in enumerate(value):
                    if member is None or member(item):
                        yield item, f"{base}[{i}]"
            elif member is None or member(value):
                yield value, base


def _values(step: Step, node: Any) -> list | tuple:
    """The instances of `step` in `node`, without their FHIRPath (the fast path)."""
    if not isinstance(node, dict):
        return ()
    if step.choice:
        return [item for item, _ in step.children(node, "")]
    value = node.get(step.name)
    if value is None:
        return ()
    member = step.member
    if isinstance(value, list):
        return value if member is None else [item for item in value if member(item)]
    return (value,) if member is None or member(value) else ()


def _select_fast(root: dict, steps: tuple[Step, ...]) -> list | tuple:
    nodes: list | tuple = (root,)
    for step in steps:
        if len(nodes) == 1:
            nodes = _values(step, nodes[0])
        else:
            nodes = [child for node in nodes for child in _values(step, node)]
        if not nodes:
            break
    return nodes


def _select(root: dict, steps: tuple[Step, ...], root_expr: str) -> list[tuple[Any, str]]:
    nodes: list[tuple[Any, str]] = [(root, root_expr)]
    for step in steps:
        nodes = [child for node, expr in nodes for child in step.children(node, expr)]
        if not nodes:
            break
    return nodes


# --------------------------------------------------------------------------- checks


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
        return all(self.ok_in(node) for node in _select_fast(root, self.parent))

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
            count = len(_values(last, node))
        return count >= self.min and (self.max is None or count <= self.max)

    def run(self, ctx: Context, out: list[Issue]) -> None:
        root_expr = ctx.root.get("resourceType", "Resource")
        for node, expr in _select(ctx.root, self.parent, root_expr):
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
        for node in _select_fast(root, self.parent):
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
            return all(node == self.value for node in _select_fast(root, self.steps))
        return all(matches_pattern(node, self.value) for node in _select_fast(root, self.steps))

    def run(self, ctx: Context, out: list[Issue]) -> None:
        root_expr = ctx.root.get("resourceType", "Resource")
        for node, expr in _select(ctx.root, self.steps, root_expr):
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
        return all(self._valid(node) for node in _select_fast(root, self.steps))

    def run(self, ctx: Context, out: list[Issue]) -> None:
        root_expr = ctx.root.get("resourceType", "Resource")
        vs = self.value_set
        for node, expr in _select(ctx.root, self.steps, root_expr):
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
        for node in _select_fast(root, self.steps):
            if isinstance(node, dict):
                kind = _reference_type(node, root)
                if kind is not None and kind not in self.types:
                    return False
        return True

    def run(self, ctx: Context, out: list[Issue]) -> None:
        root_expr = ctx.root.get("resourceType", "Resource")
        for node, expr in _select(ctx.root, self.steps, root_expr):
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


# Invariant implementations: (value, FHIRPath of the value, root) -> (expression, message)*
InvariantFn = Callable[[Any, str, dict], Iterator[tuple[str, str]]]


def _inv_ins_required(patient: Any, expr: str, root: dict) -> Iterator[tuple[str, str]]:
    identifiers = patient.get("identifier") if isinstance(patient, dict) else None
    if not any(isinstance(i, dict) and is_ins_system(i.get("system")) for i in identifiers or ()):
        yield f"{expr}.identifier", "the patient has no INS identifier (INS-NIR or INS-NIA OID)"


def _inv_ins_key(identifier: Any, expr: str, root: dict) -> Iterator[tuple[str, str]]:
    if isinstance(identifier, dict) and is_ins_system(identifier.get("system")):
        value = identifier.get("value")
        if value is not None:
            problem = nir_key_error(value)
            if problem:
                yield f"{expr}.value", problem


def _inv_entry_uuid(identifier: Any, expr: str, root: dict) -> Iterator[tuple[str, str]]:
    value = identifier.get("value") if isinstance(identifier, dict) else None
    if value is not None and not (isinstance(value, str) and _UUID_URN.match(value)):
        yield f"{expr}.value", f"the entryUUID {value!r} is not a urn:uuid: URI"


# The system and its aliases (CodeSystem v3-Confidentiality in profiles/terminology).
_V3_CONFIDENTIALITY_SYSTEMS = frozenset(
    {
        SYSTEM_V3_CONFIDENTIALITY,
        "urn:oid:2.16.840.1.113883.5.25",
        "https://mos.esante.gouv.fr/NOS/TRE_A08-HL7Confidentiality/FHIR/TRE-A08-HL7Confidentiality",
    }
)


def _inv_confidentiality(labels: Any, expr: str, root: dict) -> Iterator[tuple[str, str]]:
    # Run on the securityLabel array as a whole (WHOLE_ARRAY_INVARIANTS), not per label.
    count = sum(
        1
        for label in labels
        if isinstance(label, dict)
        and any(
            isinstance(c, dict) and c.get("system") in _V3_CONFIDENTIALITY_SYSTEMS
            for c in label.get("coding") or ()
        )
    )
    if count != 1:
        yield (
            expr,
            f"exactly one securityLabel must carry the HL7 confidentiality N, R or V (found {count})",
        )


def _inv_hash(value: Any, expr: str, root: dict) -> Iterator[tuple[str, str]]:
    if not isinstance(value, str):
        return
    try:
        digest = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        yield expr, "the hash is not base64"
        return
    if len(digest) != 20:
        yield expr, f"the hash is {len(digest)} bytes long, a SHA-1 digest is 20"


# Nested `provision` is understood here to be reported once, by its 0..0 cardinality.
_CONSENT_UNDERSTOOD = frozenset(
    {"id", "extension", "modifierExtension", "type", "actor", "purpose", "provision"}
)


def _inv_consent_exception(provision: Any, expr: str, root: dict) -> Iterator[tuple[str, str]]:
    if not isinstance(provision, dict):
        return
    has_actor = bool(provision.get("actor"))
    has_purpose = bool(provision.get("purpose"))
    if has_actor == has_purpose:
        yield (
            expr,
            "an exception names either practitioners (actor) or access modes (purpose), "
            + ("not both" if has_actor else "and has neither"),
        )
    unknown = sorted(set(provision) - _CONSENT_UNDERSTOOD)
    if unknown:
        yield f"{expr}.{unknown[0]}", f"the access rules do not interpret {', '.join(unknown)}"


def _inv_consent_purpose_deny(provision: Any, expr: str, root: dict) -> Iterator[tuple[str, str]]:
    if isinstance(provision, dict) and provision.get("purpose") and provision.get("type") != "deny":
        yield f"{expr}.type", "opposing an access mode (purpose) must be a deny"


INVARIANTS: dict[str, InvariantFn] = {
    "dmp-ins-required": _inv_ins_required,
    "dmp-ins-key": _inv_ins_key,
    "dmp-docref-entryuuid": _inv_entry_uuid,
    "dmp-docref-confidentiality": _inv_confidentiality,
    "dmp-docref-hash": _inv_hash,
    "dmp-consent-exception": _inv_consent_exception,
    "dmp-consent-purpose-deny": _inv_consent_purpose_deny,
}
# Invariants that look at the whole repeating element rather than at each of its items.
WHOLE_ARRAY_INVARIANTS = frozenset({"dmp-docref-confidentiality"})


def _fhirpath_invariant(expression: str) -> InvariantFn:
    import fhirpathpy  # only for keys without a Python implementation

    compiled = fhirpathpy.compile(expression)

    def run(value: Any, expr: str, root: dict) -> Iterator[tuple[str, str]]:
        if compiled(value, {}) == [False]:
            yield expr, f"{expression} is not true"

    return run


@dataclass(frozen=True, slots=True)
class Invariant(Check):
    element_id: str
    steps: tuple[Step, ...]
    key: str
    human: str
    severity: str
    fn: InvariantFn = field(hash=False, compare=False)
    whole_array: bool = False

    def ok(self, root: dict) -> bool:
        fn = self.fn
        if self.whole_array:
            last = self.steps[-1]
            for node in _select_fast(root, self.steps[:-1]):
                items = list(_values(last, node))
                if items and any(True for _ in fn(items, "", root)):
                    return False
            return True
        return not any(
            any(True for _ in fn(node, "", root)) for node in _select_fast(root, self.steps)
        )

    def run(self, ctx: Context, out: list[Issue]) -> None:
        root_expr = ctx.root.get("resourceType", "Resource")
        if self.whole_array:
            parent, last = self.steps[:-1], self.steps[-1]
            selections = []
            for node, expr in _select(ctx.root, parent, root_expr):
                items = [item for item, _ in last.children(node, expr)]
                if items:
                    selections.append((items, f"{expr}.{last.name}"))
        else:
            selections = _select(ctx.root, self.steps, root_expr)
        for node, expr in selections:
            for where, message in self.fn(node, expr, ctx.root):
                out.append(
                    Issue(
                        self.severity,
                        "invariant",
                        f"{where}: {message} [{self.key}: {self.human}; profile {ctx.profile}]",
                        (where,),
                    )
                )


# --------------------------------------------------------------------------- compilation


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
                    fn = _fhirpath_invariant(constraint["expression"])
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


# --------------------------------------------------------------------------- registry


class ProfileRegistry:
    """Every profile and terminology resource of the server, compiled once."""

    def __init__(
        self,
        structure_definitions: list[dict],
        code_systems: list[dict],
        value_sets: list[dict],
        concept_maps: list[dict] | None = None,
        alias_table: AliasTable | None = None,
    ) -> None:
        self._structure_definitions = structure_definitions
        self._code_systems = code_systems
        self._value_sets = value_sets
        self.concept_maps = {cm["url"]: cm for cm in concept_maps or ()}
        # Every spelling of a system -> one key: the canonical of the alias table (the
        # spelling the normal form stores) when the table names the system, else the
        # CodeSystem's url. So a ValueSet written with a NOS URL (J58, J66) matches a coding
        # stored under the `urn:oid:` or the HL7/LOINC URL, and two CodeSystems of one system
        # (v3-Confidentiality and its NOS copy TRE_A08) pool their codes.
        table = alias_table or default_aliases()
        self.aliases: dict[str, str] = {}
        for spec in table.systems:
            for spelling in spec.spellings:
                self.aliases[spelling] = spec.canonical
        codes_by_system: dict[str, list[str]] = {}
        for cs in code_systems:
            url = cs["url"]
            names = [url] + [i.get("value") for i in _identifiers(cs) if i.get("value")]
            keys = {table.canonical(name) for name in names if table.spec(name) is not None}
            if len(keys) > 1:
                raise ValueError(f"CodeSystem {url} names several systems of the alias table")
            key = keys.pop() if keys else url
            for name in names:
                if self.aliases.get(name, key) != key:
                    raise ValueError(f"alias {name} names two code systems")
                self.aliases[name] = key
            codes_by_system.setdefault(key, []).extend(
                c["code"] for c in _flatten(cs.get("concept", []))
            )
        self.expansions: dict[str, ValueSetExpansion] = {}
        raw = {vs["url"]: vs for vs in value_sets}
        for url in raw:
            self._expand(url, raw, codes_by_system, ())
        self.profiles: dict[str, Profile] = {}
        for sd in structure_definitions:
            if sd.get("kind") != "resource" or sd.get("derivation") != "constraint":
                raise ValueError(f"{sd.get('url')}: only resource constraints are supported")
            checks = _Compiler(sd, self.expansions, self.aliases).compile()
            self.profiles[sd["url"]] = Profile(sd["url"], sd["name"], sd["type"], tuple(checks), sd)

    def _expand(
        self,
        url: str,
        raw: dict[str, dict],
        codes_by_system: dict[str, list[str]],
        seen: tuple[str, ...],
    ) -> ValueSetExpansion:
        if url in self.expansions:
            return self.expansions[url]
        if url in seen or url not in raw:
            raise ValueError(f"ValueSet {url} is unknown or includes itself")
        pairs: set[tuple[str, str]] = set()
        compose = raw[url].get("compose", {})
        for include in compose.get("include", []):
            pairs |= self._include(include, url, raw, codes_by_system, seen + (url,))
        for exclude in compose.get("exclude", []):
            pairs -= self._include(exclude, url, raw, codes_by_system, seen + (url,))
        expansion = ValueSetExpansion(url, frozenset(pairs), frozenset(c for _, c in pairs))
        self.expansions[url] = expansion
        return expansion

    def _include(self, include, url, raw, codes_by_system, seen) -> set[tuple[str, str]]:
        system = include.get("system")
        selected: set[tuple[str, str]] | None = None
        if system:
            system = self.key(system)
            if include.get("concept"):
                selected = {(system, c["code"]) for c in include["concept"]}
            elif system in codes_by_system:
                selected = {(system, code) for code in codes_by_system[system]}
            else:
                raise ValueError(f"ValueSet {url} includes all of {system}, not held locally")
        for nested in include.get("valueSet", []):
            pairs = set(self._expand(nested, raw, codes_by_system, seen).pairs)
            selected = pairs if selected is None else selected & pairs
        return selected or set()

    def key(self, system: str) -> str:
        """The one spelling under which this registry holds `system` (see __init__)."""
        return self.aliases.get(system, system)

    # -- loading -------------------------------------------------------------------------

    @classmethod
    def load(cls, profiles_dir: str | Path = PROFILES_DIR) -> ProfileRegistry:
        """Read profiles/StructureDefinition-*.json, profiles/terminology/*.json (ours) and
        profiles/terminology/nos/*.json (the official NOS files, `resources.nos`)."""
        root = Path(profiles_dir)
        sds = [_read(p) for p in sorted(root.glob("StructureDefinition-*.json"))]
        terminology = root / "terminology"
        resources = [_read(p) for p in sorted(terminology.glob("*.json"))]
        resources += read_official(terminology)
        by_type: dict[str, list[dict]] = {"CodeSystem": [], "ValueSet": [], "ConceptMap": []}
        for resource in resources:
            by_type.get(resource.get("resourceType", ""), []).append(resource)
        return cls(
            sds,
            by_type["CodeSystem"],
            by_type["ValueSet"],
            by_type["ConceptMap"],
            AliasTable.load(root / ALIASES_FILE),
        )

    # -- which profiles ------------------------------------------------------------------

    def default_profiles(self, resource_type: str) -> list[str]:
        """The profiles always enforced on a write of this type."""
        return [url for url in DEFAULT_PROFILES.get(resource_type, ()) if url in self.profiles]

    def claimed_profiles(self, resource: dict) -> list[str]:
        """Ours among meta.profile (versions ignored), PDSm claims mapped to ours."""
        meta = resource.get("meta")
        claimed = meta.get("profile") if isinstance(meta, dict) else None
        out = []
        for url in claimed if isinstance(claimed, list) else ():
            if not isinstance(url, str):
                continue
            url = url.split("|")[0]
            url = CLAIM_ALIASES.get(url, url)
            if url in self.profiles and url not in out:
                out.append(url)
        return out

    def profiles_for(self, resource: dict, *, deposit: bool = False) -> list[str]:
        """Every profile a write of `resource` must satisfy (see the module docstring)."""
        resource_type = resource.get("resourceType", "")
        urls = self.default_profiles(resource_type) + self.claimed_profiles(resource)
        if resource_type == "DocumentReference" and deposit:
            urls.append(DMP_DOCUMENT_REFERENCE)
        if resource_type == "List" and _is_submission_set(resource):
            urls.append(DMP_SUBMISSION_SET)
        unique = []
        for url in urls:
            if url in self.profiles and url not in unique:
                unique.append(url)
        return unique

    # -- validation ----------------------------------------------------------------------

    def knows(self, profile_url: str) -> bool:
        return profile_url.split("|")[0] in self.profiles

    def validate(
        self, resource: dict, profile_url: str | None = None, *, deposit: bool = False
    ) -> list[Issue]:
        """Issues of `resource` against one profile, or against all that apply on write.

        Raises KeyError for a profile_url that is not ours, ValueError when the profile is for
        another resource type.
        """
        if not isinstance(resource, dict):
            return [Issue("error", "structure", "the resource must be a JSON object")]
        if profile_url is not None:
            urls = [profile_url.split("|")[0]]
            if urls[0] not in self.profiles:
                raise KeyError(profile_url)
        else:
            urls = self.profiles_for(resource, deposit=deposit)
        issues: list[Issue] = []
        for url in urls:
            profile = self.profiles[url]
            if profile.type != resource.get("resourceType"):
                raise ValueError(f"profile {url} constrains {profile.type}")
            issues.extend(profile.validate(resource))
        return issues

    # -- conformance resources -----------------------------------------------------------

    def structure_definitions(self) -> list[dict]:
        """The StructureDefinitions, to serve at /fhir/StructureDefinition (copies)."""
        return [json.loads(json.dumps(sd)) for sd in self._structure_definitions]

    def terminology(self) -> list[dict]:
        """The CodeSystems and ValueSets the required bindings use (copies)."""
        return [json.loads(json.dumps(r)) for r in self._code_systems + self._value_sets]

    def supported_profiles(self, resource_type: str) -> list[str]:
        """For CapabilityStatement.rest.resource.supportedProfile."""
        return sorted(url for url, p in self.profiles.items() if p.type == resource_type)


def _is_submission_set(resource: dict) -> bool:
    code = resource.get("code")
    codings = code.get("coding") if isinstance(code, dict) else None
    return any(
        isinstance(c, dict)
        and c.get("system") == SYSTEM_MHD_LIST_TYPES
        and c.get("code") == "submissionset"
        for c in codings or ()
    )


def _identifiers(resource: dict) -> list[dict]:
    """`identifier` as a list (a CodeSystem has 0..*; some publishers write one object)."""
    identifiers = resource.get("identifier") or []
    identifiers = [identifiers] if isinstance(identifiers, dict) else identifiers
    return [i for i in identifiers if isinstance(i, dict)]


def _flatten(concepts: list[dict]) -> Iterator[dict]:
    for concept in concepts:
        yield concept
        yield from _flatten(concept.get("concept", []))


def _read(path: Path) -> dict:
    with path.open(encoding="utf-8") as handle:
        return json.load(handle)


@cache
def default_registry() -> ProfileRegistry:
    """The registry of the installed profiles/ directory (fhir_server.paths), loaded once."""
    return ProfileRegistry.load(PROFILES_DIR)


__all__ = [
    "CLAIM_ALIASES",
    "DEFAULT_PROFILES",
    "DMP_AUDIT_EVENT",
    "DMP_CONSENT",
    "DMP_DOCUMENT_REFERENCE",
    "DMP_PATIENT_INS",
    "DMP_SUBMISSION_SET",
    "INVARIANTS",
    "Profile",
    "ProfileRegistry",
    "default_registry",
    "matches_pattern",
]
