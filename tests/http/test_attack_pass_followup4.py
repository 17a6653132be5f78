"""Attack pass (follow-up 4) on the afternoon's access fixes: SubmissionSets judged through
their documents (R13, R14), Consent interpretation (R09-R12), a document's lifecycle (R15,
R18, TD3.3c). Each test sends a shape the fixes' own tests never sent.

What got through, each reproduced over HTTP before its fix:

- R13/R14: a SubmissionSet whose documents are one of a type the pharmacist may not read and
  one its author deleted logically (entered-in-error, read by its author only) was served to
  the pharmacist, empty but with its date, author and identifier, and counted by
  `List?patient=` and ITI-18 FindSubmissionSets: the List's judgement took the deleted
  document for a readable one. A logically deleted document is now no readable entry.
"""

from __future__ import annotations

import pytest

from fhir_server.config import load_settings
from tests.http.conftest import FHIR_JSON, Tokens, auth, create_test_app, dmp_consent, permit
from tests.http.test_r13_submission_sets import (
    DOCTOR,
    GP,
    HIDDEN_TYPE,
    LOINC_OID,
    NO_TYPE,
    PHARMACIST,
    SEEN_TYPE,
    assert_read_as_missing,
    deposit,
    document,
    find_submission_sets,
    lists,
    set_type,
    token,
)
from tests.http.test_xds_endpoints import Xds
from tests.support.habilitation import profiles_denying

DELETE = [{"op": "replace", "path": "/status", "value": "entered-in-error"}]


@pytest.fixture
def xds(tmp_path, data_dir):
    """The SubmissionSet world of test_r13_submission_sets: pharmacien (21) may not read
    HIDDEN_TYPE, the type of every ITI-41 deposit of tests.xds_builders."""
    profiles = profiles_denying(tmp_path / "profiles", "21", f"urn:oid:{LOINC_OID}", HIDDEN_TYPE)
    settings = load_settings(
        {"data_dir": data_dir, "profiles_dir": profiles, "max_body_bytes": 200_000}, environ={}
    )
    app = create_test_app(settings)
    yield Xds(app, app.test_client(), Tokens(data_dir), data_dir)
    app.extensions["fhir"].store.close()


@pytest.fixture
def record(xds):
    """(Patient id, NIR): médecin traitant GP; PHARMACIST, DOCTOR, NO_TYPE authorized."""
    patient_id, nir = xds.patient(61)
    response = xds.client.post(
        "/fhir/Consent",
        json=dmp_consent(patient_id, permit(PHARMACIST), permit(DOCTOR), permit(NO_TYPE)),
        headers=auth(xds.tokens.patient(patient_id), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return patient_id, nir


def _delete_as_author(xds, document_id: str) -> None:
    """GP, the document's author, deletes it logically (PDSm4DMP TD3.3c) by a JSON Patch."""
    response = xds.client.patch(
        f"/fhir/DocumentReference/{document_id}",
        json=DELETE,
        headers=auth(
            xds.tokens.practitioner(GP), **{"Content-Type": "application/json-patch+json"}
        ),
    )
    assert response.status_code == 200, response.get_data(as_text=True)


# -- R13/R14: a SubmissionSet's documents, a deleted one among them --------------------------


def test_r13_r14_submission_set_of_an_unreadable_and_a_deleted_document_is_hidden(xds, record):
    """One document of the type pharmacists may not read, the other of a type they read but
    deleted by its author: the pharmacist reads neither (each answers 404), and the
    SubmissionSet is hidden from them as a missing one, by read, search and ITI-18. Before,
    `List/{id}` was 200 (its entries left out) and both searches counted it."""
    patient_id, nir = record
    found_before = find_submission_sets(xds, PHARMACIST, nir)
    request, list_id = deposit(xds, patient_id, nir, documents=[b"<typed/>", b"<deleted/>"])
    deleted_uid = request.document_unique_ids["Document02"]
    set_type(xds, deleted_uid, SEEN_TYPE)
    assert list_id in lists(xds, PHARMACIST, f"patient={patient_id}")[1], "the control"
    deleted_id = document(xds, deleted_uid)["id"]
    _delete_as_author(xds, deleted_id)
    read = xds.client.get(
        f"/fhir/DocumentReference/{deleted_id}", headers=auth(token(xds, PHARMACIST))
    )
    assert read.status_code == 404
    assert list_id not in lists(xds, PHARMACIST, f"patient={patient_id}")[1]
    assert find_submission_sets(xds, PHARMACIST, nir) == found_before
    assert_read_as_missing(xds, PHARMACIST, list_id)


def test_r14_submission_set_of_documents_all_deleted_by_their_author_is_hidden(xds, record):
    """A médecin who reads every type finds a SubmissionSet whose only document its author
    deleted as a missing one (the document reads 404 to them); its author still reads
    both."""
    patient_id, nir = record
    request, list_id = deposit(xds, patient_id, nir)
    document_id = document(xds, request.document_unique_ids["Document01"])["id"]
    assert list_id in lists(xds, DOCTOR, f"patient={patient_id}")[1], "the control"
    _delete_as_author(xds, document_id)
    assert list_id not in lists(xds, DOCTOR, f"patient={patient_id}")[1]
    assert_read_as_missing(xds, DOCTOR, list_id)
    gp = auth(xds.tokens.practitioner(GP))
    assert xds.client.get(f"/fhir/List/{list_id}", headers=gp).status_code == 200
    assert xds.client.get(f"/fhir/DocumentReference/{document_id}", headers=gp).status_code == 200
