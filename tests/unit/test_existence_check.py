"""TD0.2, the existence check (`service/existence_check.py`): which searches are one, and
which refusals it answers instead of, as pure decisions."""

from __future__ import annotations

from fhir_server.access.requester import ActorKind, Requester
from fhir_server.search.parameters import ParsedSearch
from fhir_server.search.query import And, Include, SearchQuery, TokenTest
from fhir_server.service import existence_check
from fhir_server.terminology import SYSTEM_INS_NIR
from tests.unit.test_access_initial_consent import (
    BLOCKED,
    CARE,
    CHOICES,
    GP,
    POLICY,
    STRANGER,
    consent,
    practitioner,
    record,
)

INS = TokenTest("identifier", SYSTEM_INS_NIR, "180029912345678")
PRACTITIONER = practitioner(STRANGER)


def parsed(query: SearchQuery, ignored: tuple[str, ...] = ()) -> ParsedSearch:
    return ParsedSearch(query, list(ignored))


def test_td02_only_a_professionals_exact_ins_search_of_patient_is_an_existence_check():
    exact = SearchQuery("Patient", where=INS)
    assert existence_check.recognise(PRACTITIONER, parsed(exact), None) is not None
    patient = Requester(kind=ActorKind.PATIENT, subject_id="p1")
    not_checks = [
        (patient, parsed(exact), None),
        (PRACTITIONER, parsed(exact), "cursor"),
        (PRACTITIONER, parsed(exact, ("foo",)), None),
        (PRACTITIONER, parsed(SearchQuery("DocumentReference", where=INS)), None),
        (PRACTITIONER, parsed(SearchQuery("Patient", where=And((INS, INS)))), None),
        (PRACTITIONER, parsed(SearchQuery("Patient", where=INS, count=1)), None),
        (
            PRACTITIONER,
            parsed(
                SearchQuery(
                    "Patient", where=INS, includes=(Include("Patient", "general-practitioner"),)
                )
            ),
            None,
        ),
        (
            PRACTITIONER,
            parsed(SearchQuery("Patient", where=TokenTest("identifier", None, "1"))),
            None,
        ),
        (
            PRACTITIONER,
            parsed(SearchQuery("Patient", where=TokenTest("identifier", "urn:oid:1.2.3", "1"))),
            None,
        ),
        (
            PRACTITIONER,
            parsed(SearchQuery("Patient", where=TokenTest("identifier", SYSTEM_INS_NIR, None))),
            None,
        ),
    ]
    for requester, search_, cursor in not_checks:
        assert existence_check.recognise(requester, search_, cursor) is None, search_


def test_td02_answers_instead_of_a_refusal_to_read_or_of_a_closed_record_only():
    rec = record(consent(*CHOICES))
    refusals = [
        POLICY.decide_search(practitioner(STRANGER), "Patient", rec, patient_given=True),
        POLICY.decide_search(practitioner(BLOCKED), "Patient", rec, patient_given=True),
        POLICY.decide_search(practitioner(CARE), "Patient", rec, patient_given=True),
    ]
    assert all(existence_check.answers_instead(d) for d in refusals)
    allowed = POLICY.decide_search(practitioner(GP), "Patient", rec, patient_given=True)
    assert not existence_check.answers_instead(allowed)
