"""MSSanté citoyenne conversations, the pure rules: who opens, who closes, the patient's
pharmacies, the default category (issue #20, deliverable 7)."""

from __future__ import annotations

from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.conversations import (
    CLOSURE_CATEGORY,
    EXT_PREFERRED_PHARMACY,
    RULE_INITIATIVE,
    declared_root,
    pharmacies_of,
)
from fhir_server.audit.messaging import (
    MESSAGE_CATEGORY,
    acting_keys,
    fill_default_category,
    may_read_message,
    validate_message,
    validate_reply,
)
from fhir_server.terminology import SYSTEM_IDNAT_PS, SYSTEM_IDNAT_STRUCT

PATIENT = Requester(kind=ActorKind.PATIENT, subject_id="p1")
DOCTOR = Requester(kind=ActorKind.PRACTITIONER, subject_id="810000000001")
PHARMACIST = Requester(
    kind=ActorKind.PRACTITIONER, subject_id="810000000021", profession="21", organization_id="77"
)
PHARMACY = {"type": "Organization", "identifier": {"system": SYSTEM_IDNAT_STRUCT, "value": "77"}}


def pharmacy_extension(reference: object) -> dict:
    return {
        "url": EXT_PREFERRED_PHARMACY,
        "extension": [{"url": "pharmacy", "valueReference": reference}],
    }


def patient_message(**kw) -> dict:
    return {
        "resourceType": "Communication",
        "status": "completed",
        "category": [MESSAGE_CATEGORY],
        "subject": {"reference": "Patient/p1"},
        "sender": {"reference": "Patient/p1"},
        "recipient": [PHARMACY],
        "payload": [{"contentString": "Voici mon ordonnance"}],
    } | kw


def test_mssc_pharmacies_are_read_from_the_patient_and_fail_closed():
    patient = {
        "resourceType": "Patient",
        "extension": [
            pharmacy_extension({"identifier": PHARMACY["identifier"]}),  # type implied
            pharmacy_extension({"reference": "Organization/77"}),  # names nothing checkable
            pharmacy_extension({"identifier": {"system": SYSTEM_IDNAT_PS, "value": "8"}}),
            pharmacy_extension("not a reference"),
        ],
    }
    assert pharmacies_of(patient) == {"Organization/77"}
    assert pharmacies_of(None) == frozenset()


def test_mssc_the_patient_opens_a_conversation_only_with_their_pharmacy():
    assert (
        validate_message(PATIENT, patient_message(), pharmacies_of_patient={"Organization/77"})
        == []
    )
    refused = validate_message(PATIENT, patient_message())
    assert [(i.code, i.details_code) for i in refused] == [("forbidden", RULE_INITIATIVE)]


def test_mssc_only_a_professional_closes_and_only_by_answering():
    closing = patient_message(
        category=[MESSAGE_CATEGORY, CLOSURE_CATEGORY],
        inResponseTo=[{"reference": "Communication/m1"}],
    )
    by_patient = validate_message(PATIENT, closing, pharmacies_of_patient={"Organization/77"})
    assert [(i.code, i.expression) for i in by_patient] == [
        ("forbidden", ("Communication.category",))
    ]
    pharmacy_closes = closing | {
        "sender": PHARMACY,
        "recipient": [{"reference": "Patient/p1"}],
    }
    assert validate_message(PHARMACIST, pharmacy_closes) == []
    unanchored = pharmacy_closes | {"inResponseTo": []}
    assert [i.expression for i in validate_message(PHARMACIST, unanchored)] == [
        ("Communication.inResponseTo",)
    ]


def test_mssc_a_pharmacist_acts_for_the_officine_their_token_names():
    assert acting_keys(PHARMACIST) == {"Practitioner/810000000021", "Organization/77"}
    assert acting_keys(PATIENT) == {"Patient/p1"}
    to_pharmacy = patient_message()
    assert may_read_message(PHARMACIST, to_pharmacy, set(), patient_is_minor=False)
    assert not may_read_message(DOCTOR, to_pharmacy, set(), patient_is_minor=False)
    reply = patient_message(sender={"reference": "Practitioner/810000000021"})
    reply["recipient"] = [{"reference": "Patient/p1"}]
    assert validate_reply(reply, to_pharmacy, acting_keys(PHARMACIST)) == []
    assert validate_reply(reply, to_pharmacy) != []


def test_messaging_a_message_without_category_of_ours_becomes_a_message():
    bare = patient_message()
    del bare["category"]
    fill_default_category(bare)
    assert bare["category"] == [MESSAGE_CATEGORY]
    already = patient_message()
    fill_default_category(already)
    assert already["category"] == [MESSAGE_CATEGORY]


def test_mssc_declared_root_is_the_communication_part_of_names():
    assert declared_root({"partOf": [{"reference": "Communication/m1"}]}) == "Communication/m1"
    assert declared_root({"partOf": [{"reference": "Encounter/e1"}]}) is None
    assert declared_root({}) is None
