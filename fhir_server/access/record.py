"""The facts about one patient's record that the access policy needs, gathered once.

The service reads the Patient, its Consents and its RelatedPersons from the store and calls
`build_record`; the policy then decides without any I/O. `today` and `now` are injected so
that age (R07) and Consent periods are testable and consistent within one request.
"""

from __future__ import annotations

from calendar import isleap
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from fhir_server.access.consent import (
    IDENTIFIER_USES_IN_FORCE,
    NO_RULES,
    PRACTITIONER_TYPES,
    ConsentRules,
    date_bound_window,
    interpret_consent,
    period_bounds,
    shifted,
)
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
# The easternmost time zone (Line Islands): its date is the latest anywhere (`latest_date`).
_LATEST_OFFSET = timedelta(hours=14)
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
    # The first instant after which these facts no longer hold though nothing was written: a
    # Consent's or a representative's period begins or ends (None: no such instant). A cache
    # of records must read the record again from then on (`service.gate.facts`).
    valid_until: datetime | None = None
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
    superset). Representatives count only while the patient is a minor (R07), whose age is
    taken on the latest date anywhere at `now` (`latest_date`); `today` is read only when
    `now` is not given.
    """
    patient_id = patient["id"]
    if now is None:
        now = datetime.now(UTC)
        latest = today
    else:
        latest = latest_date(now)
    birth = _birth_date(patient.get("birthDate"))
    # A birthDate still to come on the latest date anywhere says no age (refused at write,
    # `birth_date_problem`): read as a minor's, it gave an adult's record representatives.
    minor = birth is not None and birth <= latest and _age_on(birth, latest) < ADULT_AGE
    rules = NO_RULES
    problems: list[str] = []
    bounds: list[datetime] = []
    for consent in consents:
        if _patient_of(consent.get("patient")) != patient_id or consent.get("status") != "active":
            continue
        bounds += period_bounds(consent)
        try:
            rules = rules.combine(interpret_consent(consent, now))
        except FhirError:
            problems.append(str(consent.get("id", "")))
    representatives: frozenset[str] = frozenset()
    if minor:
        related = [rp for rp in related_persons if rp.get("id")]
        representatives = frozenset(
            rp["id"] for rp in related if _is_representative(rp, patient_id, now)
        )
        bounds += [bound for rp in related for bound in _period_bounds(rp.get("period"))]
    return PatientRecord(
        patient_id=patient_id,
        ins=_ins(patient),
        status=record_status(patient),
        general_practitioners=_general_practitioners(patient),
        birth_date=birth,
        minor=minor,
        representatives=representatives,
        rules=rules,
        uninterpretable_consents=tuple(problems),
        valid_until=min((bound for bound in bounds if bound > now), default=None),
        patient=patient,
    )


def latest_date(now: datetime) -> date:
    """The latest calendar date it is anywhere at `now` (UTC+14).

    A birthDate has no time zone: a patient is 18 on their birthday wherever they are, and
    in the French territories east of Greenwich (New Caledonia, UTC+11; Wallis and Futuna,
    UTC+12) that day begins up to half a day before it does in UTC. The age is taken on the
    latest date (R07), so that a time zone never makes an adult look like a minor, as a
    partial birthDate never does (`_birth_date`)."""
    return (now.astimezone(UTC) + _LATEST_OFFSET).date()


def record_status(patient: dict) -> str:
    """The record's status; an unknown code, or several codes (the normal form refuses a
    second record-status at write, a record written before may hold one), read as closed."""
    codes = {
        extension.get("valueCode")
        for extension in patient.get("extension") or []
        if extension.get("url") == EXT_RECORD_STATUS
    }
    if not codes:
        return RECORD_OPEN
    code = codes.pop() if len(codes) == 1 else None
    return code if code in (RECORD_OPEN, RECORD_OPPOSED, RECORD_CLOSED) else RECORD_CLOSED


def _ins(patient: dict) -> tuple[tuple[str, str], ...]:
    return tuple(
        (identifier["system"], identifier["value"])
        for identifier in patient.get("identifier") or []
        if identifier.get("system") in INS_SYSTEMS and identifier.get("value")
    )


def _general_practitioners(patient: dict) -> frozenset[str]:
    """IdNat_PS of Patient.generalPractitioner, by logical identifier or contained resource."""
    return frozenset(
        idnat for named in general_practitioners_by_reference(patient) for idnat in named
    )


def general_practitioners_by_reference(patient: dict) -> list[frozenset[str]]:
    """The IdNat_PS each `Patient.generalPractitioner` reference names, in order: by its
    logical identifier, a `Practitioner/<IdNat_PS>` literal, or the contained Practitioner or
    PractitionerRole it points to. More than one for a reference is one reference naming two
    practitioners (the identity write refuses it, `policy.writes.identity_refusal`)."""
    contained = {
        f"#{resource.get('id')}": resource
        for resource in patient.get("contained") or []
        if resource.get("id")
    }
    found: list[frozenset[str]] = []
    for index, reference in enumerate(patient.get("generalPractitioner") or []):
        ids: set[str] = set()
        if general_practitioner_problem(patient, index) is not None:
            # Read as naming nobody (fail closed): a naming no longer in force, stored
            # before the identity write refused it (`policy.writes.identity_refusal`).
            found.append(frozenset())
            continue
        ids.update(_idnat(reference.get("identifier")))
        literal = reference_target(reference.get("reference"))
        if literal is not None and literal[0] == "Practitioner":
            # `Practitioner/<IdNat_PS>`: the convention the rules read for authors and
            # message parties too (`policy.references.is_practitioner_ref`).
            ids.update(_idnat({"system": SYSTEM_IDNAT_PS, "value": literal[1]}))
        target = contained.get(reference.get("reference", ""))
        if target is not None and target.get("resourceType") == "Practitioner":
            for identifier in target.get("identifier") or []:
                ids.update(_idnat(identifier))
        elif target is not None and target.get("resourceType") == "PractitionerRole":
            ids.update(_idnat((target.get("practitioner") or {}).get("identifier")))
        found.append(frozenset(ids))
    return found


# A Reference.type naming the médecin traitant: a Practitioner, or the PractitionerRole they
# act in (relative to the FHIR StructureDefinition base, as a Consent actor's).
GENERAL_PRACTITIONER_TYPES = PRACTITIONER_TYPES | frozenset(
    {"PractitionerRole", "http://hl7.org/fhir/StructureDefinition/PractitionerRole"}
)


def general_practitioner_problem(patient: dict, index: int) -> tuple[str, str] | None:
    """Why `Patient.generalPractitioner[index]` does not name a médecin traitant now, as
    (message, FHIRPath of the element), or None.

    R08 opens the whole record, masked documents included, blocks and the initial consent
    aside: the reference must name a practitioner in force. An IdNat_PS identifier of `use`
    old or temp or with a `period` (a former médecin traitant, as an identity feed keeps
    them), a reference typed otherwise than Practitioner or PractitionerRole, a contained
    Practitioner or PractitionerRole that is not active or a PractitionerRole with a period
    were each read as the médecin traitant for good (**decided here**: refused on write, read
    as naming nobody, as a Consent actor so named is refused, `consent._check_actor_naming`)."""
    references = patient.get("generalPractitioner") or []
    reference = references[index] if index < len(references) else None
    if not isinstance(reference, dict):
        return None
    contained = {
        f"#{resource.get('id')}": (position, resource)
        for position, resource in enumerate(patient.get("contained") or [])
        if isinstance(resource, dict) and resource.get("id")
    }
    return _reference_problem(
        reference, contained, f"Patient.generalPractitioner[{index}]", _GP_KINDS
    )


# What a médecin traitant's reference may name, and a PractitionerRole's `practitioner`.
_GP_KINDS = ("Practitioner", "PractitionerRole")
_ROLE_KINDS = ("Practitioner",)


def _reference_problem(
    reference: dict, contained: dict[str, tuple[int, dict]], path: str, kinds: tuple[str, ...]
) -> tuple[str, str] | None:
    """(message, path) when `reference` does not name a practitioner in force: its type,
    its identifier, its literal, and the contained resource it names, down to the
    Practitioner a contained PractitionerRole names (read through its `practitioner` as the
    médecin traitant was read through theirs: typed Organization, or a contained inactive
    Practitioner beside its identifier, it named the practitioner in force)."""
    types = GENERAL_PRACTITIONER_TYPES if "PractitionerRole" in kinds else PRACTITIONER_TYPES
    kind = reference.get("type")
    if kind is not None and kind not in types:
        return (
            f"{path} is typed {kind!r}: the médecin traitant is a {' or a '.join(kinds)}",
            f"{path}.type",
        )
    problem = _identifier_not_in_force(reference.get("identifier"), f"{path}.identifier")
    if problem is not None:
        return problem
    problem = _literal_not_a_practitioner(reference.get("reference"), contained, path, kinds)
    if problem is not None:
        return problem
    position, target = contained.get(reference.get("reference") or "", (None, None))
    if target is None:
        return None
    here = f"Patient.contained[{position}]"
    if target.get("active", True) is not True:
        return (
            f"{here}, the médecin traitant {path} names, is not active",
            f"{here}.active",
        )
    if target.get("resourceType") == "PractitionerRole":
        if "period" in target:
            return (
                f"{here}, the médecin traitant {path} names, carries a period the access "
                "rules do not evaluate",
                f"{here}.period",
            )
        practitioner = target.get("practitioner")
        if not isinstance(practitioner, dict):
            return None
        return _reference_problem(practitioner, contained, f"{here}.practitioner", _ROLE_KINDS)
    for number, identifier in enumerate(target.get("identifier") or []):
        problem = _identifier_not_in_force(identifier, f"{here}.identifier[{number}]")
        if problem is not None:
            return problem
    return None


def _literal_not_a_practitioner(
    literal: object,
    contained: dict[str, tuple[int, dict]],
    path: str,
    kinds: tuple[str, ...] = _GP_KINDS,
) -> tuple[str, str] | None:
    """(message, path) when the literal reference of a médecin traitant names something
    other than a Practitioner or a PractitionerRole, or a contained resource that is not
    there.

    Its `identifier` was read as the médecin traitant whatever the literal beside it said: a
    reference to a contained or stored Organization or RelatedPerson is the reference typed
    Organization or RelatedPerson that is refused, and a local reference spelled so that it
    resolves to nothing (`#`, ` #gp`, `#GP` for `gp`) left unread the inactive contained
    Practitioner it meant (**decided here**: refused on write, read as naming nobody)."""
    if not isinstance(literal, str):
        return None
    where = f"{path}.reference"
    if literal != literal.strip():
        return (f"{where} has surrounding spaces: {literal!r}", where)
    if literal.startswith("#"):
        _, target = contained.get(literal, (None, None))
        if target is None:
            return (f"{where} {literal!r} names no contained resource of the Patient", where)
        kind = target.get("resourceType")
    else:
        relative = reference_target(literal)
        kind = relative[0] if relative is not None else None
    if kind is not None and kind not in kinds:
        return (f"{where} names a {kind}: the médecin traitant is a {' or a '.join(kinds)}", where)
    return None


def _identifier_not_in_force(identifier: object, path: str) -> tuple[str, str] | None:
    """(message, path) when an IdNat_PS identifier no longer names its practitioner now."""
    if not _idnat(identifier):
        return None
    assert isinstance(identifier, dict)
    use = identifier.get("use")
    if use is not None and use not in IDENTIFIER_USES_IN_FORCE:
        return (
            f"{path} has use {use!r}: the médecin traitant is named by an IdNat_PS in force "
            "(use usual, official or secondary)",
            f"{path}.use",
        )
    if "period" in identifier:
        return (
            f"{path} carries a period the access rules do not evaluate",
            f"{path}.period",
        )
    return None


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


def birth_date_problem(value: object, now: datetime) -> str | None:
    """Why a Patient's `birthDate` says no age at `now` (R07), or None.

    One whose earliest day is still to come on the latest date anywhere (`latest_date`) was
    read as a minor's, of negative age: an identity feed's typo (`2099` for `1999`) gave the
    adult's record to every RelatedPerson once their parent (**decided here**: refused at
    write, read as no minor's)."""
    birth = _birth_date(value)
    if birth is not None and birth > latest_date(now):
        return f"Patient.birthDate {value!r} is in the future: it says no age"
    return None


def _age_on(birth: date, today: date) -> int:
    """Whole years from `birth` to `today`. Born on 29 February, one is a year older on 28
    February of a year without one (**decided here**: the earliest day the birthday can mean,
    as for a partial birthDate, so that no reading makes an adult look like a minor; it was
    1 March)."""
    years = today.year - birth.year
    birthday = (birth.month, birth.day)
    if birthday == (2, 29) and not isleap(today.year):
        birthday = (2, 28)
    if (today.month, today.day) < birthday:
        years -= 1
    return years


def _patient_of(reference: object) -> str | None:
    if not isinstance(reference, dict):
        return None
    target = reference_target(reference.get("reference"))
    return target[1] if target and target[0] == "Patient" else None


def _guardianship_window(period: dict) -> tuple[datetime | None, datetime | None]:
    """The first and last instants a RelatedPerson's period covers, as a Consent's are read
    (`consent.date_bound_window`): bounds with a time are instants, their zone applied; a
    bound written as a date (a month, a year) is that day in France, where read as a whole
    UTC day a guardianship ending on 7 December held an hour after it had ended in Paris.
    Raises ValueError or TypeError for a bound that is no dateTime."""
    return date_bound_window(period.get("start"), period.get("end"))


def _period_bounds(period: object) -> list[datetime]:
    """The instants a RelatedPerson's period begins and ends at (`_guardianship_window`), for
    a cache of the record to read it again then (`consent.period_bounds`)."""
    if not isinstance(period, dict):
        return []
    try:
        first, last = _guardianship_window(period)
    except (ValueError, TypeError):
        return []
    return [
        *([first] if first is not None else []),
        *([shifted(last, timedelta(microseconds=1))] if last is not None else []),
    ]


def _is_representative(related_person: dict, patient_id: str, now: datetime) -> bool:
    """An active RelatedPerson of the patient, PRN or GUARD, whose period covers `now`.

    The period's bounds are instants where they carry a time (and its zone): compared by
    their first ten characters, a guardianship ended at 01:00 counted until midnight, one
    ended at 00:30 (+14:00) until the next midnight. A date is that day in France
    (`_guardianship_window`). A bound that is no dateTime covers nothing."""
    if related_person.get("active") is False:
        return False
    if _patient_of(related_person.get("patient")) != patient_id:
        return False
    period = related_person.get("period") or {}
    if not isinstance(period, dict):
        return False
    try:
        first, last = _guardianship_window(period)
    except (ValueError, TypeError):
        return False
    if (first is not None and first > now) or (last is not None and last < now):
        return False
    return any(
        coding.get("system") == SYSTEM_V3_ROLE_CODE and coding.get("code") in REPRESENTATIVE_ROLES
        for concept in related_person.get("relationship") or []
        for coding in concept.get("coding") or []
    )
