"""TD0.2, the existence check: does this INS have a record, and is it open?

PDSm4DMP (`transaction_td02.md`) maps the DMP's TD0.2 to `GET [base]/Patient?identifier=
<INS system>|<INS value>`: a searchset of 0 entries when no record exists, of 1 Patient whose
`active` says whether the record is open (`true`) or closed (`false`, with the closure in the
`dmp-fermeture` extension). The software of a professional runs it before anything else, so
it must be answered to a professional who may not read the record (not yet authorized, or
blocked: R09 is not disclosed, the blocked one gets the answer of an unauthorized one).

Such a professional is answered the Patient reduced to what TD0.2 tells, and nothing of its
content (RG_0320: the software must not show identity traits from the DMP): `id`, the INS
searched, `active`, whether the requester is the patient's médecin traitant (extension
`dmp-medecin-traitant`, valueBoolean: EF_DMP01_07, "statut médecin traitant DMP"), and for a
closed record the record-status extension (`closed`: our representation of the closure,
`service.lifecycle`) and `dmp-fermeture` with `dateFermeture` (the day the record was
closed), `motifFermeture` and `raisonFermeture` when the closure recorded them
(`resources.record_closure`). `meta.tag` SUBSETTED says that it is not the whole resource.
The check is audited: a search event naming the Patient, so the patient sees who checked.
The rest is as before:

- only this exact search is an existence check: `Patient`, one `identifier` parameter with
  an INS system and a value, nothing else (no other criteria, `_include`, `_revinclude`,
  chain, `_sort`, `_count`, `_summary`, `_elements`, `_total`, paging cursor or ignored
  parameter); anything else is judged as any search (R04, R10...);
- only for practitioners, and only instead of a refusal of their reading the record (R09,
  R10, the initial consent of CE 15/10/2025, a Consent that cannot be evaluated) or of a
  closed record (R03); a practitioner who may read the record gets the whole Patient as
  before, an opposition to creation (R03 `record-opposed`), to bris de glace or to centre 15
  (R11, R12) and a bris de glace without reason are answered as before;
- scopes (R02) and a patient binding (`access.binding`) are checked first, as for a search,
  and a Patient the scopes for Patient leave out (a `patient/` scope without it in context,
  a granular constraint it does not satisfy) is answered as an INS without record;
- an INS no Patient has answers 0 entries (not the 404 of other searches designating an
  unknown patient), as TD0.2 says "aucun DMP n'existe".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fhir_server.access.decision import RECORD_CLOSED_CODE, Decision, Deny
from fhir_server.access.record import INS_SYSTEMS, PatientRecord
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.resources import record_closure
from fhir_server.resources.record_closure import Closure
from fhir_server.search.parameters import ParsedSearch
from fhir_server.search.query import SearchQuery, TokenMatch, TokenTest
from fhir_server.terminology import EXT_RECORD_STATUS, RECORD_CLOSED

SYSTEM_OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
SUBSETTED = "SUBSETTED"
# The refusals an existence check answers instead of: the requester may not read the record.
REFUSALS_ANSWERED = frozenset({"R09", "R10"})


@dataclass(frozen=True, slots=True)
class ExistenceCheck:
    """A recognised TD0.2 search: the INS it names."""

    where: TokenTest

    @property
    def system(self) -> str:
        return self.where.system or ""

    @property
    def value(self) -> str:
        return self.where.code or ""


def recognise(
    requester: Requester, parsed: ParsedSearch, cursor: str | None
) -> ExistenceCheck | None:
    """The existence check `parsed` is, or None for any other search (judged as usual)."""
    query = parsed.query
    where = query.where
    if (
        requester.kind is not ActorKind.PRACTITIONER
        or cursor is not None
        or parsed.ignored
        or query.resource_type != "Patient"
        or not isinstance(where, TokenTest)
    ):
        return None
    exact = TokenTest("identifier", where.system, where.code)
    if where != exact or where.system not in INS_SYSTEMS or not where.code:
        return None
    if query != SearchQuery("Patient", where=exact):
        return None  # any other parameter: _count, _sort, _include, _summary, _total...
    assert exact.match is TokenMatch.EQ
    return ExistenceCheck(exact)


def answers_instead(decision: Decision) -> bool:
    """Whether the existence check answers instead of this decision of a search of the
    record's Patient (the requester may not read it, or it is closed)."""
    if not isinstance(decision, Deny):
        return False
    return decision.rule in REFUSALS_ANSWERED or decision.details_code == RECORD_CLOSED_CODE


@dataclass(frozen=True, slots=True)
class Closed:
    """What TD0.2 tells of a closed record: when (from the Patient's history) and why."""

    at: datetime | None
    closure: Closure | None


def reduced_patient(
    check: ExistenceCheck,
    record: PatientRecord,
    closed: Closed | None,
    is_general_practitioner: bool,
) -> dict:
    """The Patient as TD0.2 tells it: nothing of the record's content."""
    patient: dict = {
        "resourceType": "Patient",
        "id": record.patient_id,
        "meta": {"tag": [{"system": SYSTEM_OBSERVATION_VALUE, "code": SUBSETTED}]},
    }
    extensions: list[dict] = []
    if record.status == RECORD_CLOSED:
        extensions.append({"url": EXT_RECORD_STATUS, "valueCode": RECORD_CLOSED})
        closed = closed or Closed(None, None)
        at = closed.at.date() if closed.at is not None else None
        if at is not None or closed.closure is not None:
            extensions.append(record_closure.fermeture(closed.closure, at))
    extensions.append(record_closure.medecin_traitant(is_general_practitioner))
    patient["extension"] = extensions
    patient["identifier"] = [{"system": check.system, "value": check.value}]
    patient["active"] = record.is_open
    return patient
