"""One normal form for what comes in (architecture invariant 7).

The access rules compare systems, codes, identifiers and references as strings. A fact the
rules act on can be spelled several ways (a TRE_A07 label under its `urn:oid:`, its bare OID
or its NOS URL; a Patient reference relative or absolute on this server's base), and a rule
that knows one spelling silently ignores the others. So every resource that enters, by any
door (REST create/update, transaction and batch entries, ITI-65, the ITI-41 mapping), is
brought to one spelling before validation, indexing and any access decision:

- a reference (or an attachment url) to this server's own base becomes relative; any other
  absolute reference stays as it is and never designates a local record
  (`access.constraints.reference_target` reads relative references only); a Reference whose
  `type` disagrees with the type its literal reference names is refused (422);
- each system of `profiles/terminology/system-aliases.json` (the one table of aliases, used by
  every face: resources, search criteria, tokens and VIHF assertions) is written with its
  canonical URI; a spelling that differs from a known one only by case, scheme, `urn:oid:`
  or a trailing slash is a near miss and refused with 422 naming the expected form, as is a
  code of a closed system (TRE_A07) that it does not have or that stands under another system;
- identifier values the rules compare (IdNat_PS, INS) are checked, never trimmed;
- the record-status extension is recognised by its exact URL and codes only (near miss: 422);
- a TRE_A07 label stands in `meta.security` (not a Binary's: a Binary is read as its
  document) or a `securityLabel` (anywhere in Parameters, a FHIRPath Patch whose result
  comes here in turn): elsewhere (`meta.tag`, an extension's value) the rules would not read
  it, and it is refused; so is a Patient carrying the
  record-status extension twice;
- a DocumentReference's TRE_A07 labels stand in `securityLabel`, whichever of
  `securityLabel` and `meta.security` they came in (the rules read both; the notification,
  audit and XDS faces read `securityLabel`).

Pure: no I/O besides loading the table once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fhir_server.errors import FhirError, Issue
from fhir_server.paths import profiles_dir
from fhir_server.resources.nos import merge_official_spellings, read_official
from fhir_server.resources.references import reference_target
from fhir_server.terminology import EXT_RECORD_STATUS

ALIASES_FILE = "terminology/system-aliases.json"

# IdNat_PS (ANS): "8" + the 11-digit RPPS; "0" + the 9-character ADELI (its department may be
# Corsica's 2A/2B); "3" FINESS, "4" SIREN, "5" SIRET, "6" RPPS of a practice, each followed by
# the structure's number, "/" and a local id. An 11-digit value is an RPPS without its 8.
# Both patterns end at `\Z`: `$` also matched before a final newline, so `<IdNat_PS>\n` passed
# as an IdNat_PS and a Consent blocking it blocked nobody (R09).
_IDNAT_PS = re.compile(r"^(?:8\d{11}|0\d[\dAB]\d{7}|[3-6]\d[\dAB]\d{6,11}/[A-Za-z0-9._-]{1,40})\Z")
_INS = re.compile(r"^[0-9A-Za-z]{1,40}\Z")


@dataclass(frozen=True, slots=True)
class SystemSpec:
    """A system the rules act on: its canonical URI, its accepted spellings, its codes."""

    name: str
    canonical: str
    spellings: frozenset[str]
    codes: frozenset[str] | None = None  # a closed system: only these codes
    identifier: str | None = None  # "idnat-ps" | "ins": how its identifier values are checked
    guarded: bool = False  # its codes are refused under any other system


@dataclass(frozen=True, slots=True)
class ExtensionSpec:
    url: str
    value_codes: frozenset[str]


def fold(uri: str) -> str:
    """What two spellings of one URI have in common, to recognise a near miss."""
    text = uri.strip().lower()
    for prefix in ("https://", "http://", "urn:oid:"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
            break
    return text.rstrip("/")


class AliasTable:
    """The table of `system-aliases.json`, indexed by every spelling and by its fold."""

    def __init__(
        self,
        systems: list[SystemSpec],
        extensions: list[ExtensionSpec],
        bases: dict[str, str] | None = None,
    ) -> None:
        self.systems = tuple(systems)
        # Older base of a family of canonical URLs -> its canonical base.
        self.bases = dict(bases or {})
        self._exact: dict[str, SystemSpec] = {}
        self._folded: dict[str, SystemSpec] = {}
        self._guarded: dict[str, SystemSpec] = {}
        for spec in systems:
            for spelling in spec.spellings:
                self._exact[spelling] = spec
                self._folded[fold(spelling)] = spec
            if spec.guarded and spec.codes:
                for code in spec.codes:
                    self._guarded[code.casefold()] = spec
        self.extensions = {ext.url: ext for ext in extensions}
        self._extension_folds = {fold(ext.url): ext for ext in extensions}

    @classmethod
    def load(cls, path: Path) -> AliasTable:
        data = json.loads(path.read_text(encoding="utf-8"))
        # The official NOS files next to the table declare their URL and OID (`resources.nos`).
        items = merge_official_spellings(data["systems"], read_official(path.parent))
        systems = []
        for item in items:
            canonical = item["canonical"]
            spellings = {canonical, *item.get("aliases", ())}
            for spelling in list(spellings):
                if spelling.startswith("urn:oid:"):
                    spellings.add(spelling[len("urn:oid:") :])
                elif "://" in spelling:
                    spellings.add(spelling + "/")
            codes = item.get("codes")
            systems.append(
                SystemSpec(
                    name=item["name"],
                    canonical=canonical,
                    spellings=frozenset(spellings),
                    codes=frozenset(codes) if codes else None,
                    identifier=item.get("identifier"),
                    guarded=item.get("codesElsewhere") == "refuse",
                )
            )
        extensions = [
            ExtensionSpec(item["url"], frozenset(item.get("valueCode", ())))
            for item in data.get("extensions", ())
        ]
        bases = {
            alias: item["canonical"]
            for item in data.get("canonicalBases", ())
            for alias in item.get("aliases", ())
        }
        return cls(systems, extensions, bases)

    def rebase(self, url: str) -> str:
        """`url` under the canonical base of its family (`canonicalBases`), or as it is."""
        for alias, canonical in self.bases.items():
            if url.startswith(alias):
                return canonical + url[len(alias) :]
        return url

    def spec(self, system: str) -> SystemSpec | None:
        """The system a spelling names, if it is an accepted spelling."""
        found = self._exact.get(system)
        if found is None and system[:8].lower() == "urn:oid:":
            found = self._exact.get(system[8:])
        return found

    def canonical(self, system: str) -> str:
        """The canonical spelling of `system`, or `system` itself when the table does not name
        it (a search criterion with a near miss then matches nothing, as any unknown system)."""
        found = self.spec(system)
        return found.canonical if found is not None else system

    def near_miss(self, system: str) -> SystemSpec | None:
        """The system that `system` almost spells, when it is not an accepted spelling."""
        if self.spec(system) is not None:
            return None
        return self._folded.get(fold(system))

    def guarding(self, code: str) -> SystemSpec | None:
        """The closed system whose code `code` is (in any case), if its codes are guarded."""
        return self._guarded.get(code.casefold())

    def spellings_of(self, canonical: str) -> tuple[str, ...]:
        """Every accepted spelling of a canonical system, the canonical first."""
        spec = self._exact.get(canonical)
        if spec is None:
            return (canonical,)
        return (spec.canonical, *sorted(spec.spellings - {spec.canonical}))

    def extension_near_miss(self, url: str) -> ExtensionSpec | None:
        if url in self.extensions:
            return None
        return self._extension_folds.get(fold(url))


@cache
def default_aliases() -> AliasTable:
    return AliasTable.load(profiles_dir() / ALIASES_FILE)


def idnat_ps_problem(value: object) -> str | None:
    """Why `value` is not an IdNat_PS, or None when it is one."""
    if not isinstance(value, str) or not _IDNAT_PS.match(value):
        if isinstance(value, str) and value.strip() != value:
            return f"the IdNat_PS {value!r} has surrounding white space"
        if isinstance(value, str) and re.fullmatch(r"\d{11}", value):
            return (
                f"the IdNat_PS {value!r} is an RPPS without its leading 8 "
                f"(IdNat_PS = 8 followed by the 11-digit RPPS: '8{value}')"
            )
        return (
            f"{value!r} is not an IdNat_PS (8 + RPPS, 0 + ADELI, or 3 + FINESS/identifier, "
            "with no white space)"
        )
    return None


def ins_problem(value: object) -> str | None:
    """What is wrong with an INS matricule as written, or None. Its letters are capitals
    (R03): the rules compare INS as written, so `...2a` beside `...2A` (a NIA, which carries
    no key check at the doors reading a token, a VIHF or an XDS patientId) would be a second
    spelling of one INS, binding to no record or, stored, to a second one."""
    if not isinstance(value, str) or not _INS.match(value):
        return f"the INS {value!r} must be letters and digits only, with no white space"
    if value != value.upper():
        return f"the INS {value!r} writes its letters in capitals: {value.upper()!r}"
    return None


_IDENTIFIER_CHECKS = {"idnat-ps": idnat_ps_problem, "ins": ins_problem}


class NormalForm:
    """Brings resources (and search criteria) to the one spelling the rules read.

    `base_url`: this server's FHIR base; absolute references under it (http or https, any
    case of scheme and host, default port or not) become relative.
    """

    def __init__(self, base_url: str | None, aliases: AliasTable | None = None) -> None:
        self.aliases = aliases or default_aliases()
        self._base: tuple[str, str] | None = None
        if base_url:
            parts = urlsplit(base_url.rstrip("/"))
            self._base = (_host_port(parts.scheme, parts.netloc), parts.path.rstrip("/"))

    # -- references ------------------------------------------------------------------------

    def local_reference(self, reference: str) -> str:
        """`reference` relative to this server when it is an absolute URL on its base."""
        if self._base is None or "://" not in reference[:8]:
            return reference
        parts = urlsplit(reference)
        if parts.scheme.lower() not in ("http", "https") or parts.query or parts.fragment:
            return reference
        host, path = self._base
        if _host_port(parts.scheme, parts.netloc) != host:
            return reference
        if not parts.path.startswith(path + "/"):
            return reference
        relative = parts.path[len(path) + 1 :]
        return relative or reference

    # -- resources -------------------------------------------------------------------------

    def apply(self, resource: Any) -> None:
        """Normalize `resource` in place; raise 422 listing every near miss or bad identifier."""
        if not isinstance(resource, dict):
            return
        resource_type = str(resource.get("resourceType") or "Resource")
        issues: list[tuple[str, str]] = []
        self._walk(resource, (resource_type,), None, issues)
        issues.extend(_record_status_twice(resource))
        if issues:
            raise FhirError(
                422, [Issue("error", "code-invalid", text, (where,)) for where, text in issues]
            )

    def _walk(
        self,
        node: dict,
        path: tuple,
        key: str | None,
        issues: list[tuple[str, str]],
        place: str | None = None,
    ) -> None:
        """Visit `node` and the objects below it; `path` is made a FHIRPath only for an issue
        (`_Where`): most resources have none, and a string per element costs. `place` says
        whether `node` stands where the rules read labels (`_label_place`)."""
        if not _INTERESTING.isdisjoint(node):
            found = list(self._one(node, _Where(path), key, place in _LABEL_PLACES))
            if found:
                issues.extend(found)
        for child_key, child in node.items():
            if isinstance(child, dict):
                below = _label_place(node, place, child_key)
                self._walk(child, (path, f".{child_key}"), child_key, issues, below)
            elif isinstance(child, list):
                below = _label_place(node, place, child_key)
                for index, item in enumerate(child):
                    if isinstance(item, dict):
                        where = (path, f".{child_key}[{index}]")
                        self._walk(item, where, child_key, issues, below)
        if node.get("resourceType") == "DocumentReference":
            # After its children: the labels' systems are canonical by then. Any
            # DocumentReference, a Bundle entry's included.
            _labels_in_security_label(node, _A07)
            _masking_labels_first(node, _A07)

    def _one(
        self, node: dict, where: _Where, key: str | None, label_place: bool = False
    ) -> Iterator[tuple[str, str]]:
        reference = node.get("reference")
        if isinstance(reference, str):
            node["reference"] = self.local_reference(reference)
            problem = reference_type_problem(node["reference"], node.get("type", _ABSENT))
            if problem:
                yield f"{where}.type", problem
        if key == "attachment" and isinstance(node.get("url"), str):
            node["url"] = self.local_reference(node["url"])
        if key in ("extension", "modifierExtension") and isinstance(node.get("url"), str):
            node["url"] = self.aliases.rebase(node["url"])
            yield from self._extension(node, where)
        if key == "meta" and isinstance(node.get("profile"), list):
            node["profile"] = [
                self.aliases.rebase(p) if isinstance(p, str) else p for p in node["profile"]
            ]
        system = node.get("system")
        if isinstance(system, str) and self.aliases.bases:
            system = node["system"] = self.aliases.rebase(system)
        spec = None
        if isinstance(system, str):
            spec = self.aliases.spec(system)
            if spec is None:
                missed = self.aliases.near_miss(system)
                if missed is not None:
                    yield (
                        f"{where}.system",
                        f"the system '{system}' is not one the server knows: {missed.name} "
                        f"is written '{missed.canonical}'",
                    )
                    return
            else:
                node["system"] = spec.canonical
                if spec.guarded and not label_place:
                    # A masking label the rules never read (meta.tag, an extension's
                    # valueCoding...) would be stored and ignored: refused (R14).
                    yield (
                        f"{where}",
                        f"a {spec.name} label stands in meta.security or securityLabel, "
                        "where the access rules read it, and only on what they label (a "
                        f"{', '.join(sorted(UNLABELLED_TYPES))} carries none)",
                    )
                    return
                yield from self._value_of(node, spec, where)
        code = node.get("code")
        if isinstance(code, str):
            guard = self.aliases.guarding(code)
            if guard is not None and guard is not spec:
                yield (
                    f"{where}.code",
                    f"the code '{code}' is a {guard.name} code: it is written under the "
                    f"system '{guard.canonical}'",
                )
        elif code is None:
            # A label the rules cannot read is refused, never ignored: a coding of a closed
            # system without its code, or a guarded code given only as display or text.
            if spec is not None and spec.codes is not None and "value" not in node:
                yield f"{where}.code", f"a coding of {spec.name} needs its code"
                return
            labelled = key in ("securityLabel", "security", "coding") and spec is None
            for field in ("display", "text") if labelled else ():
                value = node.get(field)
                guard = self.aliases.guarding(value.strip()) if isinstance(value, str) else None
                if guard is not None and not self._has_code_of(node, guard.canonical):
                    yield (
                        f"{where}.{field}",
                        f"'{value}' is a {guard.name} code: it is written as a coding with "
                        f"the system '{guard.canonical}' and the code",
                    )

    def _has_code_of(self, concept: dict, system: str) -> bool:
        """Whether a CodeableConcept also carries a coding of `system` (any spelling) with a code."""
        codings = concept.get("coding")
        return isinstance(codings, list) and any(
            isinstance(c, dict)
            and isinstance(c.get("system"), str)
            and self.aliases.canonical(c["system"]) == system
            and isinstance(c.get("code"), str)
            for c in codings
        )

    def _value_of(self, node: dict, spec: SystemSpec, where: _Where) -> Iterator[tuple[str, str]]:
        """The code of a coding of a closed system, or the value of an identifier."""
        code = node.get("code")
        if spec.codes is not None and isinstance(code, str) and code not in spec.codes:
            yield (
                f"{where}.code",
                f"'{code}' is not a code of {spec.name} (one of {', '.join(sorted(spec.codes))})",
            )
        check = _IDENTIFIER_CHECKS.get(spec.identifier or "")
        if check is not None and "value" in node:
            problem = check(node.get("value"))
            if problem:
                yield f"{where}.value", problem

    def _extension(self, node: dict, where: _Where) -> Iterator[tuple[str, str]]:
        url = node["url"]
        missed = self.aliases.extension_near_miss(url)
        if missed is not None:
            yield f"{where}.url", f"the extension '{url}' is written '{missed.url}'"
            return
        known = self.aliases.extensions.get(url)
        if known is not None and known.value_codes:
            value = node.get("valueCode")
            if value not in known.value_codes:
                yield (
                    f"{where}.valueCode",
                    f"{url} takes valueCode {' | '.join(sorted(known.value_codes))}, not {value!r}",
                )

    # -- search criteria -------------------------------------------------------------------

    def system(self, system: str) -> str:
        """A searched system in its canonical spelling (unknown ones as given)."""
        return self.aliases.canonical(system)


_A07 = "urn:oid:1.2.250.1.213.1.1.4.13"
# Types whose meta.security holds no masking label (R14): a Binary is read as its document;
# a Consent, a Patient and a RelatedPerson are the record's governance, read by the patient
# and the representatives they govern. A practitioner's own authorization (R10) labelled
# INVISIBLE_PATIENT was hidden from the patient, who could neither see nor revoke it (their
# DELETE answered 204 and deleted nothing); a label there hides nothing a rule means hidden.
# A Bundle (a transaction, a batch, an ITI-65 ProvideBundle) is never stored: MASQUE_PS in
# its meta.security labelled none of its entries, which were served unmasked.
UNLABELLED_TYPES = frozenset({"Binary", "Bundle", "Consent", "Patient", "RelatedPerson"})
# The keys `NormalForm._one` reads: an object with none of them is only walked through.
_INTERESTING = frozenset(
    {"reference", "url", "system", "code", "display", "text", "value", "profile"}
)


# Where labels stand: a resource's meta.security, a securityLabel (a DocumentReference's
# CodeableConcepts, an AuditEvent entity's Codings); anywhere in Parameters (a FHIRPath
# Patch's values, whose result is brought to the normal form when it is applied).
_META, _CONCEPT, _LABEL, _ANY = "meta", "concept", "label", "any"
_LABEL_PLACES = frozenset({_CONCEPT, _LABEL, _ANY})


_ABSENT = object()

# Reference.type given as the canonical URL of a base resource's definition, which "Patient"
# abbreviates (FHIR R4 Reference.type).
_CORE_DEFINITION = "http://hl7.org/fhir/StructureDefinition/"

# The type an absolute literal reference names: its path's `Type/id` (a version's too).
_ABSOLUTE_TARGET = re.compile(r"/([A-Z][A-Za-z]+)/[A-Za-z0-9\-.]{1,64}(?:/_history/[^/]+)?\Z")


def reference_type_problem(reference: str, declared: object) -> str | None:
    """Why a Reference's `type` disagrees with the type its literal `reference` names, or None.

    FHIR R4 (Reference): when both are given and the reference is a FHIR URL, "both SHALL be
    consistent". The rules, the index and the XDS mapping read the literal reference; a
    client or a face reading `type` would take `{"reference": "Patient/A", "type":
    "Practitioner"}` for a practitioner. One fact, one reading: refused (fail closed)."""
    if declared is _ABSENT:
        return None
    target = reference_target(reference)
    if target is None:
        found = _ABSOLUTE_TARGET.search(reference) if "://" in reference[:8] else None
        if found is None:
            return None  # a contained (#id), urn:uuid: or logical reference: no type to compare
        named = found.group(1)
    else:
        named = target[0]
    if declared in (named, f"{_CORE_DEFINITION}{named}"):
        return None
    return (
        f"Reference.type {declared!r} disagrees with the {named} its reference "
        f"'{reference}' names (FHIR R4 Reference: both SHALL be consistent)"
    )


def _label_place(parent: dict, place: str | None, key: str) -> str | None:
    """The place of `parent[key]` on the way to a label, or None when it is no such place."""
    if place == _ANY or parent.get("resourceType") == "Parameters":
        return _ANY
    if key == "meta" and "resourceType" in parent:
        # A Binary is read as the document that owns it (`policy.reads.decide_binary_read`):
        # its own labels are read by no rule, so one there is a label in the wrong place.
        # The record's governance (`UNLABELLED_TYPES`) is read by whom it governs: a label
        # there hid it from them (R14 labels documents).
        return None if parent["resourceType"] in UNLABELLED_TYPES else _META
    if key == "securityLabel":
        return _CONCEPT
    if (place, key) in ((_META, "security"), (_CONCEPT, "coding")):
        return _LABEL
    return None


def _record_status_twice(resource: dict) -> Iterator[tuple[str, str]]:
    """A Patient carrying the record-status extension more than once: which one the rules
    would read is a matter of order, so the record's status is not one fact (R03)."""
    if resource.get("resourceType") != "Patient" or not isinstance(resource.get("extension"), list):
        return
    urls = [e.get("url") for e in resource["extension"] if isinstance(e, dict)]
    if urls.count(EXT_RECORD_STATUS) > 1:
        yield "Patient.extension", f"the extension {EXT_RECORD_STATUS} is given more than once"


class _Where:
    """An element's FHIRPath, made from its path links only when an issue names it."""

    __slots__ = ("path",)

    def __init__(self, path: tuple) -> None:
        self.path = path  # ("DocumentReference",) extended by (parent, ".securityLabel[0]")

    def __format__(self, spec: str) -> str:
        parts, path = [], self.path
        while len(path) == 2:
            path, segment = path
            parts.append(segment)
        parts.append(path[0])
        return "".join(reversed(parts))

    def __str__(self) -> str:
        return self.__format__("")


def _labels_in_security_label(document: dict, system: str) -> None:
    """Copy the TRE_A07 labels of `meta.security` into `securityLabel` where missing."""
    security = (document.get("meta") or {}).get("security")
    if not isinstance(security, list):
        return
    labels = document.get("securityLabel")
    if labels is not None and not isinstance(labels, list):
        return
    present = {
        coding.get("code")
        for concept in labels or []
        if isinstance(concept, dict)
        for coding in concept.get("coding") or []
        if isinstance(coding, dict) and coding.get("system") == system
    }
    added = [
        {"coding": [{"system": system, "code": coding["code"]}]}
        for coding in security
        if isinstance(coding, dict)
        and coding.get("system") == system
        and isinstance(coding.get("code"), str)
        and coding["code"] not in present
    ]
    if added:
        document["securityLabel"] = [*(labels or []), *added]


def _masking_labels_first(document: dict, system: str) -> None:
    """Put the TRE_A07 labels first in `securityLabel`, each group in its order.

    PDSm4DMP's metadata updates (TD3.3a unmasking, TD3.3b lifting INVISIBLE_PATIENT) are
    JSON Patches that `replace /securityLabel/0` with the confidentiality level N: they
    address the masking label by its index, so the server keeps it at index 0 whatever
    order a deposit gave (`[N, MASQUE_PS]` from XDS or a client); a label set has no order
    of its own."""
    labels = document.get("securityLabel")
    if not isinstance(labels, list):
        return

    def masking(concept: Any) -> bool:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        return any(
            isinstance(coding, dict) and coding.get("system") == system for coding in codings or ()
        )

    ordered = [c for c in labels if masking(c)] + [c for c in labels if not masking(c)]
    if ordered != labels:
        document["securityLabel"] = ordered


def _host_port(scheme: str, netloc: str) -> str:
    """`host:port` in lower case, with the scheme's default port made explicit."""
    netloc = netloc.lower().rsplit("@", 1)[-1]
    if ":" not in netloc.rsplit("]", 1)[-1]:
        netloc += ":443" if scheme.lower() == "https" else ":80"
    host, _, port = netloc.rpartition(":")
    return f"{host}:{port}"
