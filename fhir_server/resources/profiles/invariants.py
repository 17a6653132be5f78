"""Named invariants (`constraint.key`): the ones on the write path in Python, any other key
evaluated from its FHIRPath `expression` with fhirpathpy; and the check that runs them."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from fhir_server.errors import Issue
from fhir_server.resources.ins import is_ins_system, nir_key_error
from fhir_server.resources.profiles.checks import Check, Context
from fhir_server.resources.profiles.element_path import Step, select, select_fast, step_values
from fhir_server.terminology import SYSTEM_V3_CONFIDENTIALITY

_UUID_URN = re.compile(  # to the value's last character: `$` matched before a newline
    r"^urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\Z"
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


# The xds-extra-metadata extensions (XDS extra metadata Slots, ITI TF-3 4.1.14;
# `ihe_xds.extra_metadata`) one DocumentReference or List may hold. Checked by fhirpathpy,
# dmp-xds-extra-1 cost about 1 ms per extension: an ITI-41 DocumentEntry of 1,000 extra Slots
# (107 KB) was 0.93 s; in Python it is linear and cheap, and the count is bounded besides.
MAX_EXTRA_METADATA = 100
_EXT_EXTRA_METADATA = "https://dmp-server.fr/fhir/StructureDefinition/xds-extra-metadata"


def _inv_xds_extra(resource: Any, expr: str, root: dict) -> Iterator[tuple[str, str]]:
    """dmp-xds-extra-1, as its FHIRPath says: each xds-extra-metadata extension has exactly
    one `name` (a valueUri URN outside urn:ihe:), at least one `value`, nothing else, and no
    name twice; and at most MAX_EXTRA_METADATA of them. One issue on the resource, as the
    FHIRPath invariant gave, naming the first extension at fault. What FHIRPath would leave
    empty (a sub-extension without url, a name that is no string) is refused (fail closed)."""
    problem = _extra_metadata_problem(resource, expr)
    if problem is not None:
        yield expr, problem


def _extra_metadata_problem(resource: Any, expr: str) -> str | None:
    extensions = resource.get("extension") if isinstance(resource, dict) else None
    if not isinstance(extensions, list):
        return None
    extras = [
        (index, extension)
        for index, extension in enumerate(extensions)
        if isinstance(extension, dict) and extension.get("url") == _EXT_EXTRA_METADATA
    ]
    if len(extras) > MAX_EXTRA_METADATA:
        return (
            f"{len(extras)} xds-extra-metadata extensions (extra metadata Slots); the limit is"
            f" {MAX_EXTRA_METADATA} (MAX_EXTRA_METADATA)"
        )
    names: set[str] = set()
    for index, extension in extras:
        where = f"{expr}.extension[{index}]"
        parts = extension.get("extension")
        parts = parts if isinstance(parts, list) else []
        urls = [part.get("url") if isinstance(part, dict) else None for part in parts]
        named = [part for part, url in zip(parts, urls, strict=True) if url == "name"]
        name = named[0].get("valueUri") if len(named) == 1 else None
        if not isinstance(name, str):
            return f"{where} has not exactly one name (a valueUri)"
        folded = name.lower()
        if not folded.startswith("urn:") or folded.startswith("urn:ihe:"):
            return f"{where}: the name {name!r} is not a URN outside urn:ihe:"
        if "value" not in urls:
            return f"{where}: {name!r} has no value"
        if any(url not in ("name", "value") for url in urls):
            return f"{where}: {name!r} has a part other than name and value"
        if name in names:
            return f"{where}: the name {name!r} is given twice"
        names.add(name)
    return None


INVARIANTS: dict[str, InvariantFn] = {
    "dmp-xds-extra-1": _inv_xds_extra,
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


def fhirpath_invariant(expression: str) -> InvariantFn:
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
            for node in select_fast(root, self.steps[:-1]):
                items = list(step_values(last, node))
                if items and any(True for _ in fn(items, "", root)):
                    return False
            return True
        return not any(
            any(True for _ in fn(node, "", root)) for node in select_fast(root, self.steps)
        )

    def run(self, ctx: Context, out: list[Issue]) -> None:
        root_expr = ctx.root.get("resourceType", "Resource")
        if self.whole_array:
            parent, last = self.steps[:-1], self.steps[-1]
            selections = []
            for node, expr in select(ctx.root, parent, root_expr):
                items = [item for item, _ in last.children(node, expr)]
                if items:
                    selections.append((items, f"{expr}.{last.name}"))
        else:
            selections = select(ctx.root, self.steps, root_expr)
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
