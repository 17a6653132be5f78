"""Attack pass on the authentication doors (R01, R02, R11, R13, R18): credentials that say
more, or something else, than the server read from them.

Each test is a way a client presented itself with more rights, or in another mode, than its
credentials say: a SMART v2 granular scope (`?param=value`) honoured by searches only, so
that a read, vread, history or `_revinclude` served what the constraint excludes; a token
whose JSON names a claim twice; a `patient` claim that disagrees with the `fhirUser` it
travels with; a specialty or an organisation named twice (the first one read); a VIHF
attribute whose Name is another spelling of one the server reads (dropped, so that a
declared bris de glace was served as normal and a resource-id left the request unbound).
Fail closed: what the server cannot read as one fact is refused, 401/403 with an
OperationOutcome or a SOAP Fault, never a 500.
"""

from __future__ import annotations

import base64
import json
import time

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from fhir_server.auth.keys import load_or_create_signing_key
from fhir_server.auth.tokens import AuthSettings
from tests.http.conftest import auth
from tests.http.test_attack_pass_spellings import record  # noqa: F401 - the fixture
from tests.http.test_normal_form import AUTHORIZED, PATIENT_A, PATIENT_B, document, post

A03 = "urn:oid:1.2.250.1.213.1.1.4.1"  # the class codes `document` files under


def outcome_code(response) -> str | None:
    body = response.get_json()
    assert body["resourceType"] == "OperationOutcome"
    return body["issue"][0].get("details", {}).get("coding", [{}])[0].get("code")


# -- R02: a granular scope is enforced or refused, never ignored -------------------------------


@pytest.fixture
def deposited(client, tokens, record):  # noqa: F811 - the fixture imported above
    """A document of class 10 in patient A's record."""
    response = post(client, tokens.practitioner(AUTHORIZED), document(PATIENT_A))
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


OTHER_CLASS = f"patient/DocumentReference.rs?category={A03}|99 patient/Patient.rs"


@pytest.mark.parametrize(
    "path",
    [
        "DocumentReference/{id}",
        "DocumentReference/{id}/_history/1",
        "DocumentReference/{id}/_history",
    ],
)
def test_r02_granular_scope_is_not_ignored_by_a_read(client, tokens, deposited, path):
    """`patient/DocumentReference.rs?category=…|99` grants the documents of class 99 only.
    The search applied it; a read, a vread and an instance history by id served the class 10
    document all the same (200). Not applied by them, the constraint refuses them (403 R02)."""
    token = tokens.patient(PATIENT_A, scope=OTHER_CLASS)
    response = client.get(f"/fhir/{path.format(id=deposited)}", headers=auth(token))
    assert response.status_code == 403
    assert outcome_code(response) == "R02"


def test_r02_granular_scope_confines_a_revinclude(client, tokens, deposited):
    """`Patient?_revinclude=DocumentReference:patient` added the class 10 document that a
    search of DocumentReference under the same scope does not return."""
    token = tokens.patient(PATIENT_A, scope=OTHER_CLASS)
    searched = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert searched.status_code == 200 and searched.get_json().get("entry", []) == []
    response = client.get(
        f"/fhir/Patient?_id={PATIENT_A}&_revinclude=DocumentReference:patient", headers=auth(token)
    )
    assert response.status_code == 200
    types = [e["resource"]["resourceType"] for e in response.get_json().get("entry", [])]
    assert types == ["Patient"]


def test_r02_granular_scope_naming_the_class_still_finds_it(client, tokens, deposited):
    """The constraint is applied, not a blanket refusal: the class it names is found, by a
    search and by an include."""
    scope = f"patient/DocumentReference.rs?category={A03}|10 patient/Patient.rs"
    token = tokens.patient(PATIENT_A, scope=scope)
    searched = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert [e["resource"]["id"] for e in searched.get_json()["entry"]] == [deposited]
    response = client.get(
        f"/fhir/Patient?_id={PATIENT_A}&_revinclude=DocumentReference:patient", headers=auth(token)
    )
    assert deposited in [e["resource"]["id"] for e in response.get_json()["entry"]]


# -- R01: a token's JSON names each member once ---------------------------------------------


def _segment(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def signed_as_written(data_dir, header: str, claims: str) -> str:
    """A token signed by the server's own key over `header` and `claims` exactly as written
    (what an issuer whose JSON writer repeats a member would sign)."""
    key = load_or_create_signing_key(data_dir)
    signing_input = f"{_segment(header)}.{_segment(claims)}"
    signature = key.key.private_key.sign(
        signing_input.encode(), padding.PKCS1v15(), hashes.SHA256()
    )
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


def patient_claims(data_dir, patient: str, **extra) -> dict:
    settings = AuthSettings(data_dir=data_dir)
    now = int(time.time())
    return {
        "iss": settings.local_issuer,
        "sub": patient,
        "aud": settings.effective_audience,
        "exp": now + 600,
        "iat": now,
        "scope": "patient/*.rs",
        "fhirUser": f"Patient/{patient}",
        **extra,
    }


def header_of(data_dir, **extra) -> dict:
    key = load_or_create_signing_key(data_dir)
    return {"alg": "RS256", "kid": key.kid, "typ": "at+jwt", **extra}


def test_r01_token_whose_claims_name_fhir_user_twice_is_refused(client, data_dir, record):  # noqa: F811
    """`"fhirUser": "Patient/A", …, "fhirUser": "Patient/B"`: the server's JSON parser read
    the last (patient B, whose record was served), another reader (a proxy, the issuer's
    own log) the first. RFC 7519 §4 lets a parser refuse duplicate claim names: refused."""
    claims = json.dumps(patient_claims(data_dir, PATIENT_A))
    claims = claims[:-1] + f', "fhirUser": "Patient/{PATIENT_B}"}}'
    token = signed_as_written(data_dir, json.dumps(header_of(data_dir)), claims)
    response = client.get(f"/fhir/Patient/{PATIENT_B}", headers=auth(token))
    assert response.status_code == 401
    assert outcome_code(response) == "R01"


def test_r01_token_whose_header_names_typ_twice_is_refused(client, data_dir, record):  # noqa: F811
    """A header `"typ": "JWT", …, "typ": "at+jwt"` is an ID token to a reader of the first
    and an access token to this server, which read the last: refused."""
    header = json.dumps(header_of(data_dir, typ="JWT"))[:-1] + ', "typ": "at+jwt"}'
    token = signed_as_written(data_dir, header, json.dumps(patient_claims(data_dir, PATIENT_A)))
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401


def test_r01_token_naming_nested_extension_members_twice_is_refused(client, data_dir, record):  # noqa: F811
    """Duplicates are refused at any depth: `extensions.dmp.access_mode` given twice."""
    claims = json.dumps(patient_claims(data_dir, PATIENT_A))[:-1] + (
        ', "extensions": {"dmp": {"access_mode": "bris_de_glace", "access_mode": "normal"}}}'
    )
    token = signed_as_written(data_dir, json.dumps(header_of(data_dir)), claims)
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401


def test_r01_the_same_token_written_once_is_accepted(client, data_dir, record):  # noqa: F811
    token = signed_as_written(
        data_dir, json.dumps(header_of(data_dir)), json.dumps(patient_claims(data_dir, PATIENT_A))
    )
    assert client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token)).status_code == 200


# -- R02, R06: the patient in context is the patient the token names --------------------------


def test_r02_patient_token_whose_patient_claim_names_another_patient_is_refused(
    client,
    tokens,
    record,  # noqa: F811
):
    """`fhirUser` Patient/A with `patient` B: a patient's token was read as A (its fhirUser)
    and a practitioner's with the same two claims as B (its `patient`). Two patients in one
    token: refused (401)."""
    token = tokens.issuer.issue(
        subject=PATIENT_A,
        scopes="patient/*.rs",
        fhir_user=f"Patient/{PATIENT_A}",
        patient=PATIENT_B,
    )
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401
    assert "two different patients" in response.get_json()["issue"][0]["diagnostics"]


def practitioner_extensions(idnat: str, **dmp) -> dict:
    return {
        "ihe_iua": {
            "subject_name": "Dr Marie Durand",
            "national_provider_identifier": idnat,
            "subject_role": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": "10"}],
            "subject_organization_id": "urn:oid:1.2.250.1.71.4.2.2|1000000001",
        },
        "dmp": dmp,
    }


def test_r02_practitioner_token_whose_patient_and_fhir_user_disagree_is_refused(
    client,
    tokens,
    record,  # noqa: F811
):
    token = tokens.issuer.issue(
        subject=AUTHORIZED,
        scopes="user/*.cruds",
        fhir_user=f"Patient/{PATIENT_B}",
        patient=PATIENT_A,
        extensions=practitioner_extensions(AUTHORIZED),
    )
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401


def test_r01_practitioner_token_with_a_related_person_fhir_user_is_refused(
    client,
    tokens,
    record,  # noqa: F811
):
    """An IdNat_PS and a `fhirUser` RelatedPerson name two users; the RelatedPerson was
    silently dropped and the token served as the practitioner's."""
    token = tokens.issuer.issue(
        subject=AUTHORIZED,
        scopes="user/*.cruds",
        fhir_user="RelatedPerson/parent-1",
        extensions=practitioner_extensions(AUTHORIZED),
    )
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401


# -- R13: one specialty ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "roles, declared",
    [
        ([{"system": "urn:oid:1.2.250.1.71.4.2.5", "code": "SM26"}], "SM54"),
        (
            [
                {"system": "urn:oid:1.2.250.1.71.4.2.5", "code": "SM26"},
                {"system": "urn:oid:1.2.250.1.71.4.2.5", "code": "SM54"},
            ],
            None,
        ),
    ],
    ids=["role-and-extension", "two-roles"],
)
def test_r13_practitioner_token_naming_two_specialties_is_refused(
    client,
    tokens,
    record,  # noqa: F811
    roles,
    declared,
):
    """R13 reads the specialty's J65 roles: `extensions.dmp.specialty` was read before the
    subject_role specialties, and of those the first, so that the order of the claims chose
    the document types served."""
    extensions = practitioner_extensions(
        AUTHORIZED, **({"specialty": declared} if declared else {})
    )
    extensions["ihe_iua"]["subject_role"] += roles
    token = tokens.issuer.issue(subject=AUTHORIZED, scopes="user/*.cruds", extensions=extensions)
    response = client.get(f"/fhir/Patient/{PATIENT_A}", headers=auth(token))
    assert response.status_code == 401
    assert "specialty" in response.get_json()["issue"][0]["diagnostics"]
