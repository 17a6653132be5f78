"""Actors of docs/access-rules.md, built from token claims (interfaces.md §Tokens)."""

from __future__ import annotations

import pytest

from fhir_server.access.requester import AccessMode, ActorKind
from fhir_server.auth.requester import requester_from_claims
from fhir_server.auth.tokens import AuthenticationError

PROFESSION = "urn:oid:1.2.250.1.71.1.2.7"
MODE = "urn:oid:1.2.250.1.213.1.1.4.248"


def practitioner_claims(**dmp):
    return {
        "sub": "810000000001",
        "scope": "user/*.cruds",
        "client_id": "lps",
        "jti": "t1",
        "extensions": {
            "ihe_iua": {
                "subject_name": "Dr Marie Durand",
                "national_provider_identifier": "810000000001",
                "subject_role": [{"system": PROFESSION, "code": "10"}],
                "subject_organization": "CH Exemple",
                "subject_organization_id": "urn:oid:1.2.250.1.71.4.2.2|1000000001",
                "purpose_of_use": [{"system": MODE, "code": "normal"}],
                "person_id": "p-1",
            },
            "dmp": {"specialty": "SM54", **dmp},
        },
    }


def test_actors_patient_token_names_the_patient_and_binds_patient_scopes():
    requester = requester_from_claims(
        {"fhirUser": "Patient/123", "scope": "patient/*.rs", "jti": "j"}
    )
    assert requester.kind is ActorKind.PATIENT
    assert requester.subject_id == "123"
    assert requester.patient_id == "123"
    assert requester.scopes == ("patient/*.rs",)
    assert requester.token_id == "j"


def test_actors_absolute_fhir_user_reference_is_understood():
    requester = requester_from_claims(
        {"fhirUser": "https://dmp.example/fhir/Patient/9", "scope": ""},
        base_url="https://dmp.example/fhir",
    )
    assert (requester.kind, requester.subject_id) == (ActorKind.PATIENT, "9")


def test_r07_related_person_token_is_a_representative():
    requester = requester_from_claims(
        {"fhirUser": "RelatedPerson/rp1", "patient": "child", "scope": "patient/*.rs"}
    )
    assert requester.kind is ActorKind.REPRESENTATIVE
    assert requester.subject_id == "rp1"
    assert requester.patient_id == "child"
    assert requester.reference == "RelatedPerson/rp1"


def test_actors_practitioner_context_comes_from_ihe_iua():
    requester = requester_from_claims(practitioner_claims())
    assert requester.kind is ActorKind.PRACTITIONER
    assert requester.subject_id == "810000000001"
    assert requester.display_name == "Dr Marie Durand"
    assert requester.profession == "10"
    assert requester.specialty == "SM54"
    assert requester.organization_id == "1000000001"
    assert requester.organization_name == "CH Exemple"
    assert requester.access_mode is AccessMode.NORMAL
    assert requester.client_id == "lps"
    assert requester.extra["person_id"] == "p-1"


def test_r11_bris_de_glace_mode_and_reason_are_carried():
    claims = practitioner_claims(access_reason="patient inconscient")
    claims["extensions"]["ihe_iua"]["purpose_of_use"] = [{"system": MODE, "code": "bris_de_glace"}]
    requester = requester_from_claims(claims)
    assert requester.access_mode is AccessMode.BRIS_DE_GLACE
    assert requester.access_reason == "patient inconscient"


def test_r12_centre_15_mode_from_the_dmp_extension_when_no_purpose_of_use():
    claims = practitioner_claims(access_mode="centre_15")
    del claims["extensions"]["ihe_iua"]["purpose_of_use"]
    assert requester_from_claims(claims).access_mode is AccessMode.CENTRE_15


def test_actors_unknown_access_mode_is_refused():
    claims = practitioner_claims()
    claims["extensions"]["ihe_iua"]["purpose_of_use"] = [{"system": MODE, "code": "urgence"}]
    with pytest.raises(AuthenticationError, match="access mode"):
        requester_from_claims(claims)


def test_actors_practitioner_without_profession_is_refused():
    claims = practitioner_claims()
    claims["extensions"]["ihe_iua"]["subject_role"] = []
    with pytest.raises(AuthenticationError, match="profession"):
        requester_from_claims(claims)


def test_actors_interfaces_example_is_a_practitioner_with_patient_in_context():
    claims = practitioner_claims()
    claims["fhirUser"] = "Patient/123"
    requester = requester_from_claims(claims)
    assert requester.kind is ActorKind.PRACTITIONER
    assert requester.patient_id == "123"


def test_r15_client_credentials_token_is_a_system_with_its_organization_type():
    requester = requester_from_claims(
        {
            "sub": "lab-1",
            "client_id": "lab-1",
            "scope": "system/DocumentReference.c system/Binary.c",
            "extensions": {"dmp": {"organization_type": "laboratory"}},
        }
    )
    assert requester.kind is ActorKind.SYSTEM
    assert requester.subject_id == "lab-1"
    assert requester.organization_type == "laboratory"
    assert requester.reference == "Device/lab-1"


def test_r05_insurer_organization_type_reaches_the_requester():
    claims = practitioner_claims(organization_type="insurer")
    assert requester_from_claims(claims).organization_type == "insurer"


def test_r01_claims_naming_no_actor_are_refused():
    for claims in (
        {"sub": "x", "scope": "user/*.rs"},
        {"fhirUser": "Practitioner/1", "scope": "user/*.rs"},
        {"fhirUser": "Patient", "scope": ""},
        {"fhirUser": "Patient/1", "extensions": "not an object"},
    ):
        with pytest.raises(AuthenticationError):
            requester_from_claims(claims)


@pytest.mark.parametrize(
    ("purposes", "declared"),
    [
        (["bris_de_glace", "normal"], None),
        (["normal", "centre_15"], None),
        (["normal"], "bris_de_glace"),
    ],
    ids=["two-purposes", "normal-then-centre-15", "purpose-against-dmp-access-mode"],
)
def test_r11_r12_a_token_naming_two_access_modes_is_refused(purposes, declared):
    """Read as the first, the order of the claims chose the mode (R11, R12): refused."""
    claims = practitioner_claims(**({"access_mode": declared} if declared else {}))
    claims["extensions"]["ihe_iua"]["purpose_of_use"] = [
        {"system": MODE, "code": code} for code in purposes
    ]
    with pytest.raises(AuthenticationError, match="access mode"):
        requester_from_claims(claims)


def test_r13_a_token_naming_two_professions_is_refused():
    """The habilitation matrix (R13) reads one TRE_G15 profession: two were read as the first."""
    claims = practitioner_claims()
    claims["extensions"]["ihe_iua"]["subject_role"] = [
        {"system": PROFESSION, "code": "21"},
        {"system": PROFESSION, "code": "10"},
    ]
    with pytest.raises(AuthenticationError, match="profession"):
        requester_from_claims(claims)


def test_actors_the_same_mode_and_profession_given_twice_are_one():
    """The same value given twice names one fact: accepted."""
    claims = practitioner_claims(access_mode="normal")
    iua = claims["extensions"]["ihe_iua"]
    iua["purpose_of_use"] = [{"system": MODE, "code": "normal"}] * 2
    iua["subject_role"] = [{"system": PROFESSION, "code": "10"}] * 2
    requester = requester_from_claims(claims)
    assert requester.access_mode is AccessMode.NORMAL
    assert requester.profession == "10"
