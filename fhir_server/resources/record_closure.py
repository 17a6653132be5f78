"""Why a record was closed (R03), as TD0.2 tells it (PDSm4DMP `transaction_td02.md`).

The guide answers the closure in one complex extension on Patient, `dmp-fermeture`, with
`dateFermeture`, `motifFermeture` (a CodeableConcept of the system
`https://interop.esante.gouv.fr/ig/fhir/dmp/CodeSystem/dmp-motif-fermeture`) and
`raisonFermeture` (free text), and the requester's "médecin traitant DMP" status in the
extension `dmp-medecin-traitant`. The guide publishes no CodeSystem for the motive: the codes
accepted are those of `profiles/terminology/CodeSystem-dmp-motif-fermeture.json` (the
guide's example code `patient-demande` and two of ours, documented there).

Stored: the closed Patient carries `dmp-fermeture` with `motifFermeture` and, optionally,
`raisonFermeture`, written by `fhir-server record close --reason CODE [--reason-text TEXT]`
(`service.lifecycle`) or by the Patient update that closes the record (the FHIR door:
record-status `closed`). `dateFermeture` is not stored: the server derives it from the
Patient's history (`lifecycle.closed_since`), so a client may not send it. A record that is
not closed carries no `dmp-fermeture` (reopening removes it). Pure: no I/O but the one read
of the code list.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from functools import cache

from fhir_server.errors import Issue
from fhir_server.paths import profiles_dir
from fhir_server.terminology import EXT_RECORD_STATUS, RECORD_CLOSED

EXT_DMP_FERMETURE = "https://interop.esante.gouv.fr/ig/fhir/dmp/StructureDefinition/dmp-fermeture"
EXT_DMP_MEDECIN_TRAITANT = (
    "https://interop.esante.gouv.fr/ig/fhir/dmp/StructureDefinition/dmp-medecin-traitant"
)
SYSTEM_MOTIF_FERMETURE = "https://interop.esante.gouv.fr/ig/fhir/dmp/CodeSystem/dmp-motif-fermeture"
MOTIFS_FILE = "terminology/CodeSystem-dmp-motif-fermeture.json"
# The free text is a short reason, not a document (a bound keeps the Patient small).
REASON_MAX = 500
_PARTS = ("motifFermeture", "raisonFermeture")


@dataclass(frozen=True, slots=True)
class Closure:
    """The motive (a code of `motifs()`) and the optional free-text reason of a closure."""

    motif: str
    raison: str | None = None


@cache
def motifs() -> dict[str, str]:
    """code -> display of the closure motives the server accepts."""
    with open(profiles_dir() / MOTIFS_FILE, encoding="utf-8") as handle:
        code_system = json.load(handle)
    return {concept["code"]: concept["display"] for concept in code_system["concept"]}


def check(closure: Closure) -> list[str]:
    """What is wrong with a closure given on the command line ([] when it is acceptable)."""
    problems = []
    if closure.motif not in motifs():
        problems.append(
            f"the closure motive {closure.motif!r} is not one of {', '.join(sorted(motifs()))} "
            f"({SYSTEM_MOTIF_FERMETURE})"
        )
    if closure.raison is not None and not (0 < len(closure.raison) <= REASON_MAX):
        problems.append(f"the closure reason is 1 to {REASON_MAX} characters")
    return problems


def closure_of(patient: dict) -> Closure | None:
    """The stored closure of a Patient (None: none recorded)."""
    for extension in _fermetures(patient):
        parts = {p.get("url"): p for p in extension.get("extension") or [] if isinstance(p, dict)}
        codings = ((parts.get("motifFermeture") or {}).get("valueCodeableConcept") or {}).get(
            "coding"
        ) or []
        motif = next(
            (c.get("code") for c in codings if c.get("system") == SYSTEM_MOTIF_FERMETURE), None
        )
        if motif:
            return Closure(motif, (parts.get("raisonFermeture") or {}).get("valueString"))
    return None


def with_closure(patient: dict, closure: Closure | None) -> dict:
    """A copy of the Patient with `closure` as its dmp-fermeture (None: without one)."""
    extensions = [e for e in patient.get("extension") or [] if _url(e) != EXT_DMP_FERMETURE]
    if closure is not None:
        extensions.append(fermeture(closure, None))
    result = {**patient, "extension": extensions}
    if not extensions:
        result.pop("extension")
    return result


def fermeture(closure: Closure | None, closed_on: date | None) -> dict:
    """The dmp-fermeture extension: its date (when known), motive and reason."""
    parts: list[dict] = []
    if closed_on is not None:
        parts.append({"url": "dateFermeture", "valueDate": closed_on.isoformat()})
    if closure is not None:
        coding = {
            "system": SYSTEM_MOTIF_FERMETURE,
            "code": closure.motif,
            "display": motifs().get(closure.motif, closure.motif),
        }
        parts.append({"url": "motifFermeture", "valueCodeableConcept": {"coding": [coding]}})
        if closure.raison:
            parts.append({"url": "raisonFermeture", "valueString": closure.raison})
    return {"url": EXT_DMP_FERMETURE, "extension": parts}


def medecin_traitant(is_general_practitioner: bool) -> dict:
    """The requester's "médecin traitant DMP" status (EF_DMP01_07)."""
    return {"url": EXT_DMP_MEDECIN_TRAITANT, "valueBoolean": is_general_practitioner}


def issues(patient: dict) -> list[Issue]:
    """What a written Patient's dmp-fermeture may not be (see the module docstring), and
    a `dmp-medecin-traitant` it may not carry at all (`medecin_traitant_issues`)."""
    return medecin_traitant_issues(patient) + _fermeture_issues(patient)


def medecin_traitant_issues(patient: dict) -> list[Issue]:
    """`dmp-medecin-traitant` says whether the *requester* of a TD0.2 check is the patient's
    médecin traitant; the server computes it for each answer (`medecin_traitant`) from
    `Patient.generalPractitioner` (R08). Stored on the Patient, it told every professional
    reading it that they were (decided here: refused, 422, like the server's dateFermeture).
    It is looked for in every extension of the Patient, nested ones included (a complex
    extension's sub-extension, an element's extension): stored anywhere, it is stored."""
    for where, extension in _extensions(patient, "Patient"):
        if _url(extension) == EXT_DMP_MEDECIN_TRAITANT:
            return [
                _issue(
                    f"{EXT_DMP_MEDECIN_TRAITANT} is the server's answer to a requester (TD0.2), "
                    "never stored: the médecin traitant is Patient.generalPractitioner (R08)",
                    where,
                )
            ]
    return []


def _extensions(node: object, where: str) -> Iterator[tuple[str, object]]:
    """Every extension and modifierExtension under `node`, with its path, at any depth."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("extension", "modifierExtension") and isinstance(value, list):
                for index, extension in enumerate(value):
                    yield f"{where}.{key}[{index}]", extension
            yield from _extensions(value, f"{where}.{key}")
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _extensions(item, f"{where}[{index}]")


def _fermeture_issues(patient: dict) -> list[Issue]:
    found = _fermetures(patient)
    if not found:
        return []
    where = f"Patient.extension('{EXT_DMP_FERMETURE}')"
    if len(found) > 1:
        return [_issue(f"{where} is given more than once", where)]
    if _status(patient) != RECORD_CLOSED:
        return [
            _issue(
                f"{where} belongs to a closed record: the record-status extension "
                f"({EXT_RECORD_STATUS}) is not 'closed'",
                where,
            )
        ]
    parts = [p for p in found[0].get("extension") or [] if isinstance(p, dict)]
    problems = []
    names = [p.get("url") for p in parts]
    for name in names:
        if name == "dateFermeture":
            problems.append(
                _issue(
                    f"{where}.dateFermeture is the server's: the day the record was closed, "
                    "from the Patient's history",
                    f"{where}.extension('dateFermeture')",
                )
            )
        elif name not in _PARTS:
            problems.append(
                _issue(
                    f"{where} holds motifFermeture and raisonFermeture, not {name!r}",
                    f"{where}.extension",
                )
            )
    if any(names.count(name) > 1 for name in _PARTS):
        problems.append(_issue(f"{where} holds one motifFermeture and one raisonFermeture", where))
    problems += _motif_issues(parts, where)
    for part in parts:
        if part.get("url") == "raisonFermeture":
            text = part.get("valueString")
            if set(part) != {"url", "valueString"} or not isinstance(text, str):
                problems.append(
                    _issue(f"{where}.raisonFermeture is a valueString", f"{where}.raisonFermeture")
                )
            elif len(text) > REASON_MAX:
                problems.append(
                    _issue(
                        f"{where}.raisonFermeture is {REASON_MAX} characters at most",
                        f"{where}.raisonFermeture",
                    )
                )
    return problems


def _motif_issues(parts: list[dict], where: str) -> list[Issue]:
    motif = next((p for p in parts if p.get("url") == "motifFermeture"), None)
    here = f"{where}.extension('motifFermeture')"
    if motif is None:
        return [_issue(f"{where} names its motive (motifFermeture)", where)]
    codings = (motif.get("valueCodeableConcept") or {}).get("coding")
    ours = [
        c
        for c in codings or []
        if isinstance(c, dict) and c.get("system") == SYSTEM_MOTIF_FERMETURE
    ]
    if len(ours) != 1:
        return [
            _issue(
                f"{here} is a valueCodeableConcept with one coding of {SYSTEM_MOTIF_FERMETURE}",
                here,
            )
        ]
    if ours[0].get("code") not in motifs():
        return [
            _issue(
                f"{here}: {ours[0].get('code')!r} is not a closure motive "
                f"({', '.join(sorted(motifs()))})",
                here,
            )
        ]
    return []


def _issue(message: str, expression: str) -> Issue:
    return Issue("error", "business-rule", message, expression=(expression,))


def _fermetures(patient: dict) -> list[dict]:
    return [
        e
        for e in patient.get("extension") or []
        if isinstance(e, dict) and _url(e) == EXT_DMP_FERMETURE
    ]


def _status(patient: dict) -> str | None:
    for extension in patient.get("extension") or []:
        if isinstance(extension, dict) and extension.get("url") == EXT_RECORD_STATUS:
            return extension.get("valueCode")
    return None


def _url(extension: object) -> object:
    return extension.get("url") if isinstance(extension, dict) else None


__all__ = [
    "Closure",
    "EXT_DMP_FERMETURE",
    "EXT_DMP_MEDECIN_TRAITANT",
    "SYSTEM_MOTIF_FERMETURE",
    "check",
    "closure_of",
    "fermeture",
    "issues",
    "medecin_traitant",
    "motifs",
    "with_closure",
]
