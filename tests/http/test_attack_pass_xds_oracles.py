"""Attack pass for oracles at the IHE doors: what a requester who may not see a document
learns of it by comparing answers (R14, R18).

Sent and answered as for an unknown document (no test kept here, the earlier passes hold
the shapes): every ITI-18 stored query naming a hidden document (MASQUE_PS, another
record's, INVISIBLE_PATIENT) by entryUUID, uniqueId or logicalID, alone or among visible
ones, LeafClass and ObjectRef, with and without a homeCommunityId; GetAssociations and
GetSubmissionSets by its entryUUID; GetSubmissionSetAndContents of its SubmissionSet; the
Folder queries; a visible document appending to or signing a hidden one; a SubmissionSet
holding a visible and a hidden document; ITI-43 of its uniqueId alone and among visible
ones; ITI-57 naming it; an ITI-41 HasMember, APND, RPLC or signs to it; `List` reads and
searches (`_include`, `_history`, `_elements`, `_summary`, `item`, `identifier`) of its
SubmissionSet; the patient's trail after each.

What got through:

- A document masked after its deposit (the patient's PATCH or transaction PUT adding
  MASQUE_PS, its author's ITI-57 metadata update) left its SubmissionSet unlabelled: a List takes the labels all
  its entries share only when the List is written. A professional who may not see the
  document still found, by `List?patient=` (ITI-66) and FindSubmissionSets (ITI-18), a
  SubmissionSet with no member: that something was deposited, when, by whom and of what
  content type, where the same deposit masked at deposit, or none, shows nothing. The
  Lists naming a document that gains a label now take the labels all their entries share.
"""

from __future__ import annotations

import pytest

from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, auth
from tests.http.metadata_world import label, mask_as_patient
from tests.http.test_attack_pass_xds import (  # noqa: F401 - fixtures
    AUTHORIZED,
    _find_submission_sets,
    _submission_sets,
    deposit,
    errors,
    record,
    stored,
    xds,
)
from tests.http.test_xds_endpoints import GP, registry_status
from tests.http.test_xds_metadata_versions import masked as masked_by_iti57
from tests.support.documents import put_bundle

# ruff: noqa: F811


def _mask_by_patient(api, patient_id: str, nir: str, request) -> None:
    """The patient masks the deposited document from professionals (R06, R14: PATCH)."""
    mask_as_patient(api.client, api.tokens.patient(patient_id), stored(api, request)["id"])


def _mask_by_patient_bundle(api, patient_id: str, nir: str, request) -> None:
    """The patient masks it by a transaction Bundle's PUT of the document, MASQUE_PS added."""
    document = stored(api, request)
    document["securityLabel"] = [*document.get("securityLabel", []), label("MASQUE_PS")]
    bundle = put_bundle(document)
    response = api.client.post(
        "/fhir",
        json=bundle,
        headers=auth(api.tokens.patient(patient_id), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)


def _mask_by_author(api, patient_id: str, nir: str, request) -> None:
    """Its author masks it by an ITI-57 metadata update (a new version, MASQUE_PS added)."""
    masked_by_iti57(api, nir, request.document_unique_ids["Document01"])


@pytest.mark.parametrize(
    "mask",
    [_mask_by_patient, _mask_by_patient_bundle, _mask_by_author],
    ids=["patient-patch", "patient-bundle-put", "author-iti57"],
)
def test_r18_submission_set_of_a_document_masked_later_is_not_found_by_another_professional(
    xds, record, mask
):
    """The authorized practitioner, who may not see a document masked after its deposit,
    finds its SubmissionSet no more than one that does not exist: the same Lists
    (`List?patient=`, ITI-66) and the same SubmissionSets (FindSubmissionSets, ITI-18) as
    before the deposit. The médecin traitant, who still sees the document, still finds it."""
    patient_id, nir = record["patient"], record["nir"]
    authorized = xds.tokens.practitioner(AUTHORIZED)
    lists_before = {s["id"] for s in _submission_sets(xds, authorized, patient_id)}
    found_before = set(_find_submission_sets(xds, nir, AUTHORIZED))
    request, response = deposit(xds, nir, documents=[b"<masked-later/>"])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)
    shown = {s["id"] for s in _submission_sets(xds, authorized, patient_id)}
    assert len(shown - lists_before) == 1, "the control: the deposit's SubmissionSet is shown"

    mask(xds, patient_id, nir, request)

    assert {s["id"] for s in _submission_sets(xds, authorized, patient_id)} == lists_before
    assert set(_find_submission_sets(xds, nir, AUTHORIZED)) == found_before
    (new,) = shown - lists_before
    for path in ("", "/_history/1"):  # its unlabelled first version is as hidden
        read = xds.client.get(f"/fhir/List/{new}{path}", headers=auth(authorized))
        missing = xds.client.get(f"/fhir/List/no-such-list{path}", headers=auth(authorized))
        assert read.status_code == missing.status_code == 404
    gp = xds.tokens.practitioner(GP)
    assert new in {s["id"] for s in _submission_sets(xds, gp, patient_id)}


def test_r14_a_list_naming_a_visible_document_too_stays_shown(xds, record):
    """The control: a SubmissionSet holding a visible document beside the one masked later
    takes no label (not every entry carries it) and is shown, with the visible entry only."""
    patient_id, nir = record["patient"], record["nir"]
    authorized = xds.tokens.practitioner(AUTHORIZED)
    request, response = deposit(xds, nir, documents=[b"<kept/>", b"<masked-later-2/>"])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)
    masked_by_iti57(xds, nir, request.document_unique_ids["Document02"])
    shown = [
        s
        for s in _submission_sets(xds, authorized, patient_id)
        if any(i["value"].endswith(request.submission_set_unique_id) for i in s["identifier"])
    ]
    assert len(shown) == 1
    assert len(shown[0]["entry"]) == 1
