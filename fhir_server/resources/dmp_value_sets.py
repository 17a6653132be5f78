"""The DMP value sets a document's codes must be in, judged the same on every door.

The official NOS artifacts (`profiles/terminology/nos/`, see SOURCE.md) say which codes the
DMP accepts on a document (PDSm4DMP bindings of PDSm_ComprehensiveDocumentReference):

- a confidentiality / visibility label (XDS confidentialityCode, FHIR securityLabel) from
  TRE_A07 or HL7 confidentiality is in JDV_J58: TRE_A07 has five codes, the DMP takes three
  (MASQUE_PSOCIAL and MASQUE_PT are refused);
- the type (typeCode, DocumentReference.type) is in JDV_J66;
- the class (classCode, DocumentReference.category from TRE_A03 / TRE_A10) is in JDV_J57;
- type and class agree: the class is one ASS_X16 maps the type to.

Why one module: a deposit by REST, ITI-65 and ITI-41 must be refused for the same reason in
the same words (FHIR 422 OperationOutcome, XDS XDSRegistryMetadataError). Every function here
takes codings as (system, code) in any accepted spelling and answers a sentence naming the
code and the value set, or None. The value sets come from the registry (`ProfileRegistry`),
which expands them from the files and keys every system spelling the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache

from fhir_server.errors import Issue
from fhir_server.resources.profiles import ProfileRegistry, ValueSetExpansion, default_registry
from fhir_server.terminology import NOS_BASE, SYSTEM_DMP_CONFIDENTIALITY

J58_URL = f"{NOS_BASE}JDV_J58-ConfidentialityCode-DMP/FHIR/JDV-J58-ConfidentialityCode-DMP"
J57_URL = f"{NOS_BASE}JDV_J57-ClassCode-DMP/FHIR/JDV-J57-ClassCode-DMP"
J66_URL = f"{NOS_BASE}JDV_J66-TypeCode-DMP/FHIR/JDV-J66-TypeCode-DMP"
X16_URL = (
    f"{NOS_BASE}ASS_X16-CorrespondanceType-Classe-DMP/FHIR/ASS-X16-CorrespondanceType-Classe-DMP"
)
J58, J57, J66, X16 = (
    "JDV_J58-ConfidentialityCode-DMP",
    "JDV_J57-ClassCode-DMP",
    "JDV_J66-TypeCode-DMP",
    "ASS_X16-CorrespondanceType-Classe-DMP",
)

Coded = tuple[str, str]  # (system as written, code)


@dataclass(frozen=True, slots=True)
class DmpValueSets:
    """J58, J57, J66 and ASS_X16, expanded, with the registry's spelling of every system."""

    registry: ProfileRegistry
    labels: ValueSetExpansion
    classes: ValueSetExpansion
    types: ValueSetExpansion
    classes_of_type: dict[tuple[str, str], frozenset[tuple[str, str]]]
    label_systems: frozenset[str]  # the systems J58 draws from (TRE_A07, HL7 confidentiality)
    class_systems: frozenset[str]  # the systems J57 draws from (TRE_A03, TRE_A10)
    type_systems: frozenset[str]  # the systems J66 draws from (LOINC, TRE_A05, TRE_A12)

    @classmethod
    def from_registry(cls, registry: ProfileRegistry) -> DmpValueSets:
        """Raises KeyError when a file is missing: the server does not start without them."""
        mapping: dict[tuple[str, str], set[tuple[str, str]]] = {}
        for group in registry.concept_maps[X16_URL].get("group", []):
            source, target = registry.key(group["source"]), registry.key(group["target"])
            for element in group.get("element", []):
                for to in element.get("target", []):
                    if to.get("equivalence", "equivalent") in ("equivalent", "equal", "wider"):
                        mapping.setdefault((source, element["code"]), set()).add(
                            (target, to["code"])
                        )
        labels, classes = registry.expansions[J58_URL], registry.expansions[J57_URL]
        types = registry.expansions[J66_URL]
        return cls(
            registry,
            labels,
            classes,
            types,
            {k: frozenset(v) for k, v in mapping.items()},
            frozenset(system for system, _ in labels.pairs),
            frozenset(system for system, _ in classes.pairs),
            frozenset(system for system, _ in types.pairs),
        )

    def _key(self, coded: Coded) -> tuple[str, str]:
        return self.registry.key(coded[0]), coded[1]

    # -- one rule each ---------------------------------------------------------------------

    def label_problem(self, coded: Coded) -> str | None:
        """A TRE_A07 or HL7 confidentiality label outside J58 (other systems: not the DMP's)."""
        key = self._key(coded)
        if key[0] not in self.label_systems or key in self.labels.pairs:
            return None
        return (
            f"the label {coded[1]} ({coded[0]}) is not in the value set {J58} ({J58_URL}), "
            "which the DMP accepts as confidentialityCode"
        )

    def in_labels(self, coded: Coded) -> bool:
        return self._key(coded) in self.labels.pairs

    def in_types(self, coded: Coded) -> bool:
        return self._key(coded) in self.types.pairs

    def in_classes(self, coded: Coded) -> bool:
        return self._key(coded) in self.classes.pairs

    def is_class_coding(self, coded: Coded) -> bool:
        """Whether a category coding is a classCode (of a system J57 draws from)."""
        return self.registry.key(coded[0]) in self.class_systems

    def type_problem(self, codings: list[Coded]) -> str | None:
        """A type without a J66 coding, or with a coding of a system J66 draws from (LOINC,
        TRE_A05, TRE_A12) that J66 does not have: R13 reads no such type (fail closed), and
        beside a readable J66 coding it was stored and ignored, the document served to a
        profession the matrix may exclude from it (tests/http/test_attack_pass_r13.py)."""
        if any(self.in_types(c) for c in codings):
            outside = [
                c for c in codings if self._key(c)[0] in self.type_systems and not self.in_types(c)
            ]
            if not outside:
                return None
            system, code = outside[0]
            return (
                f"the type {code} ({system}) is of a system {J66} draws from but not in "
                f"{J66} ({J66_URL}): the access rules cannot judge a document by it"
            )
        found = ", ".join(f"{code} ({system})" for system, code in codings) or "no coding"
        return f"the type {found} is not in the value set {J66} ({J66_URL})"

    def class_problem(self, codings: list[Coded]) -> str | None:
        if any(self.in_classes(c) for c in codings):
            return None
        found = ", ".join(f"{code} ({system})" for system, code in codings) or "no coding"
        return f"the class {found} is not in the value set {J57} ({J57_URL})"

    def pair_problem(self, types: list[Coded], classes: list[Coded]) -> str | None:
        """Type and class disagree per ASS_X16 (only judged when both are in their sets)."""
        kept_types = [c for c in types if self.in_types(c)]
        kept_classes = [c for c in classes if self.in_classes(c)]
        if not kept_types or not kept_classes:
            return None
        expected: set[tuple[str, str]] = set()
        for coded in kept_types:
            expected |= self.classes_of_type.get(self._key(coded), frozenset())
        if any(self._key(c) in expected for c in kept_classes):
            return None
        kind = kept_types[0][1]
        klass = kept_classes[0][1]
        wanted = ", ".join(sorted(code for _, code in expected)) or "no class"
        return (
            f"the type {kind} and the class {klass} disagree: {X16} ({X16_URL}) maps the "
            f"type {kind} to the class {wanted}"
        )

    # -- any resource's meta.security ------------------------------------------------------

    def meta_label_issues(self, resource: dict) -> list[Issue]:
        """A TRE_A07 label outside J58 in the `meta.security` of a resource other than a
        DocumentReference (whose labels are judged in `securityLabel`, where the normal form
        copies them).

        Why: TRE_A07 has five codes and the rules read three. MASQUE_PSOCIAL and MASQUE_PT
        (masked from the social domain, from third parties) on a document are refused (J58);
        on a Communication or a List they were stored and read by no rule, the message
        served to the patient and to every party (R14). Fail closed at every door: refused
        (422 naming the element). The HL7 confidentiality codes are left as they were."""
        if not isinstance(resource, dict) or resource.get("resourceType") == "DocumentReference":
            return []
        meta = resource.get("meta")
        security = meta.get("security") if isinstance(meta, dict) else None
        issues = []
        a07 = self.registry.key(SYSTEM_DMP_CONFIDENTIALITY)
        for i, coded in enumerate(_list(security)):
            for system, code in _codings(coded):
                if self.registry.key(system) != a07:
                    continue
                problem = self.label_problem((system, code))
                if problem:
                    where = f"{resource.get('resourceType', 'Resource')}.meta.security[{i}]"
                    issues.append(_issue(where, problem))
        return issues

    # -- a FHIR DocumentReference ----------------------------------------------------------

    def document_issues(self, document: dict) -> list[Issue]:
        """Every value-set problem of a DocumentReference, each naming its element.

        Every DocumentReference of this server is a DMP document: a `type` given must carry
        a J66 coding (a type with text only is refused, the rules cannot read it); only the
        category codings of the systems J57 draws from are classes (MHD allows others)."""
        if not isinstance(document, dict) or document.get("resourceType") != "DocumentReference":
            return []
        issues = []
        a07 = self.registry.key(SYSTEM_DMP_CONFIDENTIALITY)
        for i, label in enumerate(_list(document.get("securityLabel"))):
            codings = list(_codings(label))
            for coded in codings:
                problem = self.label_problem(coded)
                if problem:
                    issues.append(_issue(f"DocumentReference.securityLabel[{i}]", problem))
            if len(codings) > 1 and any(self.registry.key(s) == a07 for s, _ in codings):
                issues.append(_issue(f"DocumentReference.securityLabel[{i}]", _ONE_LABEL))
        types = list(_codings(document["type"])) if isinstance(document.get("type"), dict) else []
        if "type" in document:
            problem = self.type_problem(types)
            if problem:
                issues.append(_issue("DocumentReference.type", problem))
        classes: list[Coded] = []
        for i, category in enumerate(_list(document.get("category"))):
            codings = [c for c in _codings(category) if self.is_class_coding(c)]
            if codings:
                problem = self.class_problem(codings)
                if problem:
                    issues.append(_issue(f"DocumentReference.category[{i}]", problem))
                classes += codings
        problem = self.pair_problem(types, classes)
        if problem:
            issues.append(_issue("DocumentReference.type", problem))
        return issues


# A TRE_A07 label beside another coding in one securityLabel: the rules read every coding
# (masked), the XDS face (ITI-18, ITI-57: `ihe_xds.mapping.from_fhir`) one confidentialityCode
# per securityLabel, its first J58 coding: `[N, MASQUE_PS]` was shown as N alone (R14, one
# fact read two ways). Refused: each label stands in a securityLabel of its own.
_ONE_LABEL = (
    "a TRE_A07 label stands alone in its securityLabel (one coding): beside another coding, "
    "the XDS confidentialityCode reads only the first of them"
)


def _list(value: object) -> list:
    return value if isinstance(value, list) else []


def _codings(concept: object) -> Iterator[Coded]:
    """The (system, code) of a CodeableConcept's codings, or of a Coding itself."""
    if not isinstance(concept, dict):
        return
    codings: Iterable = _list(concept["coding"]) if "coding" in concept else [concept]
    for coding in codings:
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str):
                yield system, code


def _issue(expression: str, text: str) -> Issue:
    return Issue("error", "code-invalid", f"{expression}: {text}", (expression,))


@cache
def default_value_sets() -> DmpValueSets:
    """The value sets of the installed profiles/ directory, loaded once."""
    return DmpValueSets.from_registry(default_registry())
