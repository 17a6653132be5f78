"""The facts about one patient's record that the access policy needs, gathered once.

The service reads the Patient, its Consents and its RelatedPersons from the store and calls
`build_record`; the policy then decides without any I/O. `today` and `now` are injected so
that age (R07) and Consent periods are testable and consistent within one request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

from fhir_server.access.consent import NO_RULES, ConsentRules, interpret_consent
from fhir_server.access.constraints import reference_target
from fhir_server.errors import FhirError
from fhir_server.resources.normal_form import idnat_ps_problem
from fhir_server.terminology import (
    EXT_RECORD_STATUS,
    INS_OIDS,
    RECORD_CLOSED,
    RECORD_OPEN,
    RECORD_OPPOSED,
    SYSTEM_IDNAT_PS,
    SYSTEM_V3_ROLE_CODE,
)

ADULT_AGE = 18
REPRESENTATIVE_ROLES = frozenset({"PRN", "GUARD"})
INS_SYSTEMS = frozenset(f"urn:oid:{oid}" for oid in INS_OIDS)


@dataclass(frozen=True, slots=True)
class PatientRecord:
    patient_id: str
    # INS identifiers as (system, value).
    ins: tuple[tuple[str, str], ...] = ()
    # open | opposed | closed (R03). An unknown code is read as closed: fail closed.
    status: str = RECORD_OPEN
    # IdNat_PS of the médecins traitants (R08).
    general_practitioners: frozenset[str] = frozenset()
    birth_date: date | None = None
    minor: bool = False
    # RelatedPerson ids of the legal representatives (R07); empty unless the patient is a minor.
    representatives: frozenset[str] = frozenset()
    rules: ConsentRules = field(default_factory=ConsentRules)
    # Ids of active Consents that could not be interpreted. The policy then fails closed for
    # practitioners other than the médecin traitant rather than ignore a possible block.
    uninterpretable_consents: tuple[str, ...] = ()
    # The Patient resource the facts were read from, as stored (read-only): the gate checks a
    # designated patient's visibility on it without reading the Patient again.
    patient: dict | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def is_open(self) -> bool:
        return self.status == RECORD_OPEN

    def is_general_practitioner(self, idnat_ps: str) -> bool:
        return idnat_ps in self.general_practitioners


def build_record(
    patient: dict,
    consents: Iterable[dict],
    related_persons: Iterable[dict],
    today: date,
    now: datetime | None = None,
) -> PatientRecord:
    """Gather the record's facts from the Patient, its Consents and its RelatedPersons.

    Consents and RelatedPersons about another patient are ignored (the service may pass a
    superset). Representatives count only while the patient is a minor (R07).
    """
    patient_id = patient["id"]
    now = now or datetime.now(UTC)
    birth = _birth_date(patient.get("birthDate"))
    minor = birth is not None and _age_on(birth, today) < ADULT_AGE
    rules = NO_RULES
    problems: list[str] = []
    for consent in consents:
        if _patient_of(consent.get("patient")) != patient_id or consent.get("status") != "active":
            continue
        try:
            rules = rules.combine(interpret_consent(consent, now))
        except FhirError:
            problems.append(str(consent.get("id", "")))
    representatives = (
        frozenset(
            rp["id"]
            for rp in related_persons
            if rp.get("id") and _is_representative(rp, patient_id, today)
        )
        if minor
        else frozenset()
    )
    return PatientRecord(
        patient_id=patient_id,
        ins=_ins(patient),
        status=_record_status(patient),
        general_practitioners=_general_practitioners(patient),
        birth_date=birth,
        minor=minor,
        representatives=representatives,
        rules=rules,
        uninterpretable_consents=tuple(problems),
        patient=patient,
    )


def _record_status(patient: dict) -> str:
    for extension in patient.get("extension") or []:
        if extension.get("url") == EXT_RECORD_STATUS:
            code = extension.get("valueCode")
            return code if code in (RECORD_OPEN, RECORD_OPPOSED, RECORD_CLOSED) else RECORD_CLOSED
    return RECORD_OPEN


def _ins(patient: dict) -> tuple[tuple[str, str], ...]:
    return tuple(
        (identifier["system"], identifier["value"])
        for identifier in patient.get("identifier") or []
        if identifier.get("system") in INS_SYSTEMS and identifier.get("value")
    )


def _general_practitioners(patient: dict) -> frozenset[str]:
    """IdNat_PS of Patient.generalPractitioner, by logical identifier or contained resource."""
    contained = {
        f"#{resource.get('id')}": resource
        for resource in patient.get("contained") or []
        if resource.get("id")
    }
    ids: set[str] = set()
    for reference in patient.get("generalPractitioner") or []:
        ids.update(_idnat(reference.get("identifier")))
        literal = reference_target(reference.get("reference"))
        if literal is not None and literal[0] == "Practitioner":
            # `Practitioner/<IdNat_PS>`: the convention the rules read for authors and
            # message parties too (`policy.references.is_practitioner_ref`).
            ids.update(_idnat({"system": SYSTEM_IDNAT_PS, "value": literal[1]}))
        target = contained.get(reference.get("reference", ""))
        if target is None:
            continue
        if target.get("resourceType") == "Practitioner":
            for identifier in target.get("identifier") or []:
                ids.update(_idnat(identifier))
        elif target.get("resourceType") == "PractitionerRole":
            ids.update(_idnat((target.get("practitioner") or {}).get("identifier")))
    return frozenset(ids)


def _idnat(identifier: object) -> set[str]:
    """The IdNat_PS an identifier carries, exactly as written: the normal form refused any
    other spelling at write (`resources.normal_form.idnat_ps_problem`)."""
    if isinstance(identifier, dict) and identifier.get("system") == SYSTEM_IDNAT_PS:
        value = identifier.get("value")
        if isinstance(value, str) and idnat_ps_problem(value) is None:
            return {value}
    return set()


def _birth_date(value: object) -> date | None:
    """The earliest date the birthDate can mean, so that a partial date never makes an adult
    look like a minor (which would open their record to representatives)."""
    if not isinstance(value, str):
        return None
    parts = value.split("-")
    try:
        year = int(parts[0])
        month = int(parts[1]) if len(parts) > 1 else 1
        day = int(parts[2]) if len(parts) > 2 else 1
        return date(year, month, day)
    except (ValueError, IndexError):
        return None


def _age_on(birth: date, today: date) -> int:
    years = today.year - birth.year
    if (today.month, today.day) < (birth.month, birth.day):
        years -= 1
    return years


def _patient_of(reference: object) -> str | None:
    if not isinstance(reference, dict):
        return None
    target = reference_target(reference.get("reference"))
    return target[1] if target and target[0] == "Patient" else None


def _is_representative(related_person: dict, patient_id: str, today: date) -> bool:
    if related_person.get("active") is False:
        return False
    if _patient_of(related_person.get("patient")) != patient_id:
        return False
    period = related_person.get("period") or {}
    start, end = period.get("start"), period.get("end")
    if isinstance(start, str) and start[:10] > today.isoformat()[: len(start[:10])]:
        return False
    if isinstance(end, str) and end[:10] < today.isoformat()[: len(end[:10])]:
        return False
    return any(
        coding.get("system") == SYSTEM_V3_ROLE_CODE and coding.get("code") in REPRESENTATIVE_ROLES
        for concept in related_person.get("relationship") or []
        for coding in concept.get("coding") or []
    )
