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

import pytest

from tests.http.conftest import auth
from tests.http.test_attack_pass_spellings import record  # noqa: F401 - the fixture
from tests.http.test_normal_form import AUTHORIZED, PATIENT_A, document, post

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
