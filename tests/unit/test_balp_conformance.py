"""R16: the AuditEvents the server builds, validated against IHE BALP's own published
StructureDefinitions (tests/fixtures/external/balp, see its README), not against our reading
of them (that is tests/unit/test_audit_balp.py).

Each event is built with the real builders (`fhir_server.audit.balp`) for every kind of
interaction that claims a BALP profile in ``meta.profile``, for each kind of requester the DMP
has (a practitioner in normal access, in bris de glace, from a centre 15, a patient, a legal
representative, a system), and checked by `tests.support.sd_conformance` against the profile
it claims; the base R4 AuditEvent rules are checked by the fhir.resources model. The checker
is first run on BALP's own examples, which must pass, and on broken copies of them, which
must not.

One deviation is kept on purpose and stated below (`SEARCH_RESULTS_DEVIATION`).
"""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from fhir_server.access.requester import AccessMode, ActorKind, Requester
from fhir_server.audit.balp import (
    _PROFILE_BY_SHAPE,
    BALP_PROFILE_BASE,
    DataEntity,
)
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY
from tests.support.sd_conformance import ProfileSet
from tests.unit.test_audit_balp import DOC, DOCTOR, refusal, rest

FIXTURES = Path(__file__).parents[1] / "fixtures" / "external" / "balp"
PROFILES = ProfileSet(FIXTURES, FIXTURES / "terminology")
EXAMPLES = sorted((FIXTURES / "examples").glob("AuditEvent-*.json"))

AUTHZ_CONSENT = BALP_PROFILE_BASE + "IHE.BasicAudit.AuthZconsent"

REQUESTERS = {
    "practitioner": DOCTOR,
    "bris-de-glace": replace(
        DOCTOR,
        access_mode=AccessMode.BRIS_DE_GLACE,
        access_reason="Patient inconscient aux urgences",
    ),
    "centre-15": replace(DOCTOR, access_mode=AccessMode.CENTRE_15),
    "patient": Requester(
        kind=ActorKind.PATIENT, subject_id="p1", display_name="Jean Martin", client_id="app"
    ),
    "representative": Requester(
        kind=ActorKind.REPRESENTATIVE, subject_id="rp1", client_id="app", token_id="tok-2"
    ),
    "system": Requester(kind=ActorKind.SYSTEM, subject_id="lab-system", client_id="lab-system"),
}
PRACTITIONERS = ("practitioner", "bris-de-glace", "centre-15")

ORGANIZATION = {"resourceType": "Organization", "id": "o1", "meta": {"versionId": "1"}}

# The one nonconformance kept, with its reason. BALP Query/PatientQuery slice the entities on
# their type alone, so every entity of type 2 (System Object) is the `query` entity, which is
# 1..1 with role 24 and no `what`; and the profile's text says "The number of results and the
# content of the results are not recorded". The DMP records them: a search's event names every
# match and included resource, with version and labels (docs/architecture.md, "A search's
# event from facts kept with each version"; R16 and R18 in docs/access-rules.md: the patient
# sees what was disclosed, and the event is hidden from whom those labels hide the resources),
# and the labelled resources its criteria name (role 24, with `what`). These issues, and only
# these, are what such an event would fail; it therefore claims no profile (balp.py).
SEARCH_RESULTS_DEVIATION = frozenset(
    {
        "AuditEvent.entity:query",  # max 1: one per result besides the query itself
        "AuditEvent.entity:query.what",  # max 0: a result names its resource
        "AuditEvent.entity:query.role",  # pattern 24: a result is a Domain Resource (4)
        "AuditEvent.entity:query.query",  # min 1: a result carries no query
    }
)


def claimed(event: dict) -> list[str]:
    return event.get("meta", {}).get("profile", [])


def issues(event: dict, profile: str) -> list[str]:
    return [str(i) for i in PROFILES.validate(event, profile)]


def assert_conforms(event: dict, profile: str) -> None:
    AuditEvent.model_validate(event)  # the base R4 AuditEvent rules
    assert claimed(event) == [profile]
    assert issues(event, profile) == []


# --- the checker, on BALP's own examples -----------------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_balp_published_examples_conform_to_their_profiles(path: Path):
    example = json.loads(path.read_text(encoding="utf-8"))
    (profile,) = claimed(example)
    assert issues(example, profile) == []


def _example(name: str) -> dict:
    return json.loads((FIXTURES / "examples" / f"AuditEvent-{name}.json").read_text())


def _without_client_network(e: dict) -> None:
    del e["agent"][0]["network"]


def _with_create_action(e: dict) -> None:
    e["action"] = "C"


def _without_patient(e: dict) -> None:
    e["entity"] = [x for x in e["entity"] if x["type"]["code"] != "1"]


def _with_foreign_entity(e: dict) -> None:
    e["entity"].append(
        {"what": {"reference": "List/l1"}, "type": e["entity"][0]["type"] | {"code": "2"}}
    )


def _with_authorizer_not_the_source(e: dict) -> None:
    e["agent"][3]["who"] = {"reference": "Device/elsewhere"}


def _with_user_network(e: dict) -> None:
    e["agent"][2]["network"] = {"address": "192.0.2.1", "type": "2"}


def _with_query_result_entity(e: dict) -> None:
    e["entity"].append(copy.deepcopy(_example("ex-auditBasicReadServer")["entity"][0]))


@pytest.mark.parametrize(
    ("name", "break_it", "element"),
    [
        ("ex-auditBasicReadServer", _without_client_network, "AuditEvent.agent:client.network"),
        ("ex-auditBasicReadServer", _with_create_action, "AuditEvent.action"),
        ("ex-auditBasicReadServer", _without_patient, "AuditEvent.entity:patient"),
        ("ex-auditBasicReadServer", _with_user_network, "AuditEvent.agent:user.network"),
        ("ex-auditAuthZconsent", _with_foreign_entity, "AuditEvent.entity"),
        ("ex-auditAuthZconsent", _with_authorizer_not_the_source, "AuditEvent.agent:authorizer"),
        ("ex-auditBasicQueryGetServer", _with_query_result_entity, "AuditEvent.entity:query"),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else None,
)
def test_checker_finds_what_a_broken_example_lacks(name, break_it, element):
    """The checker is not vacuous: each constraint kind it reads (cardinality, pattern,
    closed slicing, invariant, slice max) fails on a copy of an example broken for it."""
    example = _example(name)
    (profile,) = claimed(example)
    break_it(example)
    assert element in {i.element_id for i in PROFILES.validate(example, profile)}


def test_every_profile_the_builder_can_claim_has_its_published_definition():
    urls = {
        BALP_PROFILE_BASE + name
        for patient_profile, plain_profile, _ in _PROFILE_BY_SHAPE.values()
        for name in (patient_profile, plain_profile)
    } | {AUTHZ_CONSENT}
    assert urls <= set(PROFILES.definitions)
    assert len(urls) == 11


# --- read, vread, create, update, patch, delete ----------------------------------------------

REST_PROFILES = {
    "read": "Read",
    "vread": "Read",
    "create": "Create",
    "update": "Update",
    "patch": "Update",
    "delete": "Delete",
}


@pytest.mark.parametrize("who", REQUESTERS)
@pytest.mark.parametrize("interaction", REST_PROFILES)
def test_r16_patient_event_conforms_to_balp_patient_profile(interaction, who):
    """An interaction on a patient's resource claims Patient<Kind> and conforms to it, with
    the DMP's user agent (profession, specialty, purposeOfUse with the TRE_R248 access mode,
    the bris de glace reason as text, the token id as policy) and organization agent."""
    (event,) = rest(interaction, REQUESTERS[who])
    assert_conforms(
        event, BALP_PROFILE_BASE + "IHE.BasicAudit.Patient" + REST_PROFILES[interaction]
    )


@pytest.mark.parametrize("who", ["practitioner", "system"])
@pytest.mark.parametrize("interaction", REST_PROFILES)
def test_r16_event_without_patient_conforms_to_balp_plain_profile(interaction, who):
    (event,) = rest(
        interaction,
        REQUESTERS[who],
        patients=[],
        entities=[DataEntity.from_resource(ORGANIZATION)],
    )
    assert_conforms(event, BALP_PROFILE_BASE + "IHE.BasicAudit." + REST_PROFILES[interaction])


# --- searches ----------------------------------------------------------------------------------


@pytest.mark.parametrize("who", REQUESTERS)
@pytest.mark.parametrize("interaction", ["search", "search-type", "search-system"])
def test_r16_search_event_without_results_conforms_to_patient_query(interaction, who):
    (event,) = rest(
        interaction,
        REQUESTERS[who],
        entities=[],
        raw_query=b"GET /fhir/DocumentReference?patient=p1",
        query_description="DocumentReference?patient=p1",
    )
    assert_conforms(event, BALP_PROFILE_BASE + "IHE.BasicAudit.PatientQuery")


def test_r16_search_event_without_patient_conforms_to_query():
    (event,) = rest(
        "search-type",
        REQUESTERS["practitioner"],
        patients=[],
        entities=[],
        raw_query=b"GET /fhir/Organization?name=CH",
    )
    assert_conforms(event, BALP_PROFILE_BASE + "IHE.BasicAudit.Query")


@pytest.mark.parametrize("who", ["practitioner", "patient"])
def test_r16_search_event_listing_results_deviates_from_balp_only_by_them(who):
    """SEARCH_RESULTS_DEVIATION: kept on purpose (DMP), stated here. What PatientQuery would
    refuse is the result entities and nothing else, so the event does not claim it (it
    claimed it, and failed it)."""
    named = DataEntity(
        reference="DocumentReference/d2",
        security_labels=({"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE_PS"},),
        role="24",
    )
    *_, event = rest(  # the event of the results DOC's label hides (`balp._rest_event_entities`)
        "search-type",
        REQUESTERS[who],
        entities=[DataEntity.from_resource(DOC, patient_id="p1"), named],
        raw_query=b"GET /fhir/DocumentReference?patient=p1&_id=d2",
    )
    AuditEvent.model_validate(event)
    profile = BALP_PROFILE_BASE + "IHE.BasicAudit.PatientQuery"
    assert claimed(event) == []
    found = PROFILES.validate(event, profile)
    assert found, "the deviation is gone: drop it from SEARCH_RESULTS_DEVIATION"
    assert {i.element_id for i in found} <= SEARCH_RESULTS_DEVIATION, [str(i) for i in found]
    without_results = copy.deepcopy(event)
    without_results["entity"] = [
        e for e in event["entity"] if "what" not in e or e["type"]["code"] != "2"
    ]
    assert issues(without_results, profile) == []


# --- refusals (AuthZ-Consent) -----------------------------------------------------------------


@pytest.mark.parametrize("consents", [(), ("Consent/c1",), ("Consent/c1", "Consent/c2")])
@pytest.mark.parametrize("who", PRACTITIONERS)
def test_r16_practitioner_refusal_conforms_to_authz_consent(who, consents):
    """A practitioner's refusal has the four agents AuthZconsent requires (client, user,
    organization, authorizer = the audit source) and only patient, consent and token
    entities (its closed slicing); the X-Request-Id travels as an extension."""
    (event,) = refusal(requester=REQUESTERS[who], consent_references=consents)
    assert_conforms(event, AUTHZ_CONSENT)


@pytest.mark.parametrize("who", ["patient", "representative", "system", "no-organization"])
def test_r16_refusal_without_organization_does_not_claim_authz_consent(who):
    """AuthZconsent requires agent[user] 1..1 and agent[userorg] 1..1; a patient, a
    representative or a system has no organization agent (nor a system a user), so their
    refusal keeps the shape but claims no profile it cannot meet (balp.py: a profile is
    claimed only when the event conforms)."""
    requester = (
        replace(DOCTOR, organization_id=None, organization_name=None)
        if who == "no-organization"
        else REQUESTERS[who]
    )
    (event,) = refusal(requester=requester)
    AuditEvent.model_validate(event)
    assert claimed(event) == []
    assert "AuditEvent.agent:userorg" in {
        i.element_id for i in PROFILES.validate(event, AUTHZ_CONSENT)
    }
