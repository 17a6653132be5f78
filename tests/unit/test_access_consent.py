"""Consent interpretation (docs/access-rules.md, "Consent shapes")."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fhir_server.access.consent import (
    NO_RULES,
    ConsentRules,
    combine_rules,
    consent_patient_id,
    interpret_consent,
)
from fhir_server.errors import FhirError
from fhir_server.terminology import (
    SYSTEM_ACT_REASON,
    SYSTEM_CONSENT_SCOPE,
    SYSTEM_IDNAT_PS,
    SYSTEM_PARTICIPATION_TYPE,
)

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)


def actor(idnat: str) -> dict:
    return {
        "role": {"coding": [{"system": SYSTEM_PARTICIPATION_TYPE, "code": "IRCP"}]},
        "reference": {"identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}},
    }


def by_actor(kind: str, *idnats: str, period: dict | None = None) -> dict:
    provision = {"type": kind, "actor": [actor(i) for i in idnats]}
    if period:
        provision["period"] = period
    return provision


def by_purpose(*codes: str) -> dict:
    return {"type": "deny", "purpose": [{"system": SYSTEM_ACT_REASON, "code": c} for c in codes]}


def consent(*nested: dict, status: str = "active", patient: str = "p1") -> dict:
    return {
        "resourceType": "Consent",
        "id": "c1",
        "status": status,
        "scope": {"coding": [{"system": SYSTEM_CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "provision": {"type": "permit", "provision": list(nested)},
    }


def refusal(resource: dict) -> FhirError:
    with pytest.raises(FhirError) as caught:
        interpret_consent(resource, NOW)
    return caught.value


def test_consent_block_authorize_and_oppositions_are_read():
    rules = interpret_consent(
        consent(
            by_actor("deny", "810000008001"),
            by_actor("permit", "810000008002", "810000008003"),
            by_purpose("BTG"),
            by_purpose("ETREAT"),
        ),
        NOW,
    )
    assert rules.blocked == {"810000008001"}
    assert rules.permitted == {"810000008002", "810000008003"}
    assert rules.oppose_bris_de_glace and rules.oppose_centre_15


def test_consent_root_permit_alone_gives_no_exception():
    assert interpret_consent(consent(), NOW) == NO_RULES


@pytest.mark.parametrize(
    "status", ["draft", "proposed", "rejected", "inactive", "entered-in-error"]
)
def test_consent_inactive_contributes_no_rules(status):
    assert (
        interpret_consent(consent(by_actor("deny", "810000008001"), status=status), NOW) == NO_RULES
    )


def test_consent_inactive_is_still_checked_so_a_bad_draft_is_refused():
    bad = consent({"type": "deny"}, status="draft")
    assert refusal(bad).issues[0].expression == ("Consent.provision.provision[0]",)


def test_consent_deny_wins_over_permit_across_consents():
    first = interpret_consent(consent(by_actor("permit", "810000008001")), NOW)
    second = interpret_consent(consent(by_actor("deny", "810000008001")), NOW)
    combined = combine_rules([first, second])
    assert not combined.is_authorized("810000008001")
    assert combined.is_blocked("810000008001")


def test_consent_deny_wins_over_permit_within_one_consent():
    rules = interpret_consent(
        consent(by_actor("permit", "810000008001"), by_actor("deny", "810000008001")), NOW
    )
    assert not rules.is_authorized("810000008001") and rules.is_blocked("810000008001")


@pytest.mark.parametrize(
    ("period", "in_force"),
    [
        ({"start": "2024-01-01", "end": "2024-12-31"}, True),
        ({"start": "2024-06-02"}, False),
        ({"end": "2024-05-31T23:59:59+00:00"}, False),
        ({"end": "2024-06"}, True),  # a month-precision end covers the whole month
        ({"start": "2024-06-01T14:00:00+02:00"}, True),  # 12:00 UTC
        ({"start": "2024-06-01T15:00:00+02:00"}, False),
    ],
)
def test_consent_provision_period_is_honoured(period, in_force):
    rules = interpret_consent(consent(by_actor("permit", "810000008001", period=period)), NOW)
    assert rules.is_authorized("810000008001") is in_force


def test_consent_root_period_outside_now_disables_every_exception():
    resource = consent(by_actor("deny", "810000008001"), by_purpose("BTG"))
    resource["provision"]["period"] = {"end": "2023-12-31"}
    assert interpret_consent(resource, NOW) == NO_RULES


def test_consent_patient_id_reads_relative_references_only():
    """Issue #18, deliverable 1: the normal form made references to this server relative, so
    an absolute one is another server's and designates no local Patient."""
    assert consent_patient_id(consent(patient="p9")) == "p9"
    resource = consent()
    resource["patient"] = {"reference": "Patient/p7/_history/2"}
    assert consent_patient_id(resource) == "p7"
    resource["patient"] = {"reference": "https://example.org/fhir/Patient/p7/_history/2"}
    assert consent_patient_id(resource) is None


def _with(mutate) -> dict:
    resource = consent(
        by_actor("deny", "810000008001"), by_actor("permit", "810000008002"), by_purpose("BTG")
    )
    mutate(resource)
    return resource


REFUSALS = [
    (
        "unknown scope",
        lambda c: c["scope"]["coding"][0].update(code="research"),
        "Consent.scope.coding[0]",
        "processing",
    ),
    ("missing scope", lambda c: c.pop("scope"), "Consent.scope", "invalid"),
    ("unknown status", lambda c: c.update(status="on"), "Consent.status", "invalid"),
    ("missing patient", lambda c: c.pop("patient"), "Consent.patient", "invalid"),
    ("missing provision", lambda c: c.pop("provision"), "Consent.provision", "invalid"),
    (
        "root deny",
        lambda c: c["provision"].update(type="deny"),
        "Consent.provision.type",
        "processing",
    ),
    (
        "root actor",
        lambda c: c["provision"].update(actor=[actor("810000008009")]),
        "Consent.provision.actor",
        "processing",
    ),
    (
        "neither actor nor purpose",
        lambda c: c["provision"]["provision"][1].pop("actor"),
        "Consent.provision.provision[1]",
        "invalid",
    ),
    (
        "both actor and purpose",
        lambda c: c["provision"]["provision"][0].update(
            purpose=[{"system": SYSTEM_ACT_REASON, "code": "BTG"}]
        ),
        "Consent.provision.provision[0]",
        "processing",
    ),
    (
        "actor role not IRCP",
        lambda c: c["provision"]["provision"][1]["actor"][0]["role"]["coding"][0].update(
            code="PRCP"
        ),
        "Consent.provision.provision[1].actor[0].role",
        "processing",
    ),
    (
        "actor without IdNat_PS",
        lambda c: c["provision"]["provision"][0]["actor"][0]["reference"].update(
            identifier={"system": "urn:oid:1.2.3", "value": "x"}
        ),
        "Consent.provision.provision[0].actor[0].reference.identifier",
        "invalid",
    ),
    (
        "actor by literal reference only",
        lambda c: c["provision"]["provision"][0]["actor"][0].update(
            reference={"reference": "Practitioner/1"}
        ),
        "Consent.provision.provision[0].actor[0].reference.identifier",
        "invalid",
    ),
    (
        "unknown purpose",
        lambda c: c["provision"]["provision"][2]["purpose"][0].update(code="HRESCH"),
        "Consent.provision.provision[2].purpose[0]",
        "processing",
    ),
    (
        "permit by purpose",
        lambda c: c["provision"]["provision"][2].update(type="permit"),
        "Consent.provision.provision[2].type",
        "processing",
    ),
    (
        "missing nested type",
        lambda c: c["provision"]["provision"][0].pop("type"),
        "Consent.provision.provision[0].type",
        "invalid",
    ),
    (
        "deeper nesting",
        lambda c: c["provision"]["provision"][0].update(
            provision=[by_actor("permit", "810000008003")]
        ),
        "Consent.provision.provision[0].provision",
        "processing",
    ),
    (
        "security label restriction",
        lambda c: c["provision"]["provision"][1].update(securityLabel=[{"code": "R"}]),
        "Consent.provision.provision[1].securityLabel",
        "processing",
    ),
    (
        "bad period date",
        lambda c: c["provision"]["provision"][0].update(period={"start": "yesterday"}),
        "Consent.provision.provision[0].period.start",
        "invalid",
    ),
]


@pytest.mark.parametrize(
    ("mutate", "expression", "code"),
    [case[1:] for case in REFUSALS],
    ids=[case[0] for case in REFUSALS],
)
def test_consent_that_cannot_be_interpreted_is_refused_with_its_expression(
    mutate, expression, code
):
    error = refusal(_with(mutate))
    assert error.status == 422
    assert len(error.issues) == 1
    assert error.issues[0].code == code
    assert error.issues[0].expression == (expression,)
    outcome = error.operation_outcome()
    assert outcome["issue"][0]["expression"] == [expression]


def test_consent_interpretation_does_not_modify_the_resource():
    resource = consent(by_actor("deny", "810000008001"), by_purpose("ETREAT"))
    before = copy.deepcopy(resource)
    interpret_consent(resource, NOW)
    assert resource == before


IDS = st.sampled_from([f"81000000000{i}" for i in range(6)])


@given(
    consents=st.lists(
        st.tuples(st.lists(IDS, max_size=3), st.lists(IDS, max_size=3)), min_size=1, max_size=4
    )
)
def test_consent_combination_deny_always_wins_property(consents):
    resources = [
        consent(
            *([by_actor("permit", *permits)] if permits else []),
            *([by_actor("deny", *denies)] if denies else []),
        )
        for permits, denies in consents
    ]
    rules = [interpret_consent(r, NOW) for r in resources]
    combined = combine_rules(rules)
    all_permits = {i for permits, _ in consents for i in permits}
    all_denies = {i for _, denies in consents for i in denies}
    for idnat in [f"81000000000{i}" for i in range(6)]:
        assert combined.is_authorized(idnat) == (idnat in all_permits and idnat not in all_denies)
        assert combined.is_blocked(idnat) == (idnat in all_denies)
    # The order in which Consents are combined does not matter.
    assert combine_rules(reversed(rules)) == combined


def test_consent_rules_combine_with_the_empty_rules_is_identity():
    rules = ConsentRules(permitted=frozenset({"1"}), oppose_centre_15=True)
    assert rules.combine(NO_RULES) == rules == NO_RULES.combine(rules)
