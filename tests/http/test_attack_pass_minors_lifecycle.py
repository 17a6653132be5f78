"""Attack pass on R07 (representatives of a minor), R03 (opposed and closed records), R04 (one
identified patient, the INS) and R05 (payers and employers) through the IHE doors (ITI-41,
ITI-18, ITI-43, ITI-65, ITI-57, MHD ITI-66/67/68) and the less used REST doors.

What got through:

- A patient or a representative wrote a document labelled `INVISIBLE_PATIENT` (a create, an
  ITI-65 entry, an update). That label is a professional's, lifted after the medical
  announcement (R14): a parent planted on a minor's record a document the minor never sees,
  which hides it from the parent too, so that no one of the family can change or delete it.
  Now refused (403, R14), nothing written.

What held (most kept below as controls, compared with the answer for a missing id; the R04
spellings were probed and are already held by tests/http/test_attack_pass_xds_spellings.py):

- A parent (RelatedPerson PRN, active, no period) sees neither `INVISIBLE_REPRESENTANTS_LEGAUX`
  nor `INVISIBLE_PATIENT` documents deposited by ITI-41: not by ITI-67 search or read,
  `_history`, ITI-68 Binary, ITI-66 `List` (their SubmissionSets, `_include=List:item`),
  `_revinclude`, `_has`, the AuditEvents of their deposit or the notifications about them; a
  label added later by ITI-57 hides the earlier version, the Binary and the SubmissionSet too.
  Their PATCH or DELETE (conditional too) of a hidden document answers as for a missing id
  and changes nothing.
- The parent's access ends on the write that ends it, through the record cache: the
  RelatedPerson made inactive, its relationship changed to one that is not PRN or GUARD, its
  period ended, or the child's birthDate corrected to 18 years ago (a full date, a year-month,
  a year). Another child's record (the token's patient claim) and a minor of whom they are a
  RelatedPerson of another relationship (FRND) are refused.
- The minor reads the `INVISIBLE_REPRESENTANTS_LEGAUX` documents (R06); neither the minor nor
  the parent adds `INVISIBLE_REPRESENTANTS_LEGAUX` to a professional's document.
- A closed record: ITI-41, ITI-18 and ITI-65 answer XDSUnknownPatientId naming the closure,
  ITI-43 and the single reads (`_history`, vread, Binary, PATCH) as for a missing id, the
  searches 403 `record-closed`, a transaction's entry 422; nothing written.
- R04 at the IHE doors: a patientId with its assigning authority in lower case (`&iso`), as a
  `urn:oid:`, with a namespace id, or a local identifier is refused (XDSRegistryMetadataError);
  an INS under the NIA OID holding a NIR's matricule reaches no record
  (XDSUnknownPatientId unbound, LocalPolicyRestrictionError bound).
- R05: an employer, insurer or mutual insurer is refused (403 R05) at every read door,
  for an existing id and a missing one alike; the health insurer's `Patient?_has:
  DocumentReference:...` finds nothing whatever the record holds.
"""

from __future__ import annotations

import pytest

from fhir_server.service import lifecycle
from fhir_server.terminology import SYSTEM_V3_ROLE_CODE
from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, auth
from tests.http.metadata_world import label
from tests.http.test_attack_pass_xds import deposit, errors, stored, xds  # noqa: F401
from tests.http.test_mhd import SUBMISSION, fixture, xds_codes
from tests.http.test_xds_endpoints import registry_status
from tests.support.documents import dmp_document

# ruff: noqa: F811

IRL = "INVISIBLE_REPRESENTANTS_LEGAUX"


def representative(api, related_person: str, patient: str | None) -> str:
    """A parent's token as `fhir-server token --representative RP --patient P` makes it."""
    return api.tokens.issuer.issue(
        subject=related_person,
        scopes="patient/*.cruds",
        fhir_user=f"RelatedPerson/{related_person}",
        patient=patient,
    )


def related(patient_id: str, code: str = "PRN") -> dict:
    return {
        "resourceType": "RelatedPerson",
        "patient": {"reference": f"Patient/{patient_id}"},
        "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": code}]}],
        "name": [{"family": "Parent"}],
    }


def created(api, token: str, resource: dict) -> str:
    response = api.client.post(
        f"/fhir/{resource['resourceType']}",
        json=resource,
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


def deposited(api, nir: str, *masking: str) -> tuple[object, dict]:
    request, response = deposit(api, nir, masking=masking, documents=[repr(masking).encode()])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)
    return request, stored(api, request)


def binary_id(document: dict) -> str:
    return document["content"][0]["attachment"]["url"].rpartition("/")[2]


def ids(response) -> set[str]:
    assert response.status_code == 200, response.get_data(as_text=True)
    return {e["resource"]["id"] for e in response.get_json().get("entry", [])}


def count(api, resource_type: str, patient_id: str) -> int:
    from fhir_server.access.requester import INTERNAL

    return len(api.runtime.service.find(INTERNAL, resource_type, [("patient", patient_id)]))


@pytest.fixture
def minor(xds):
    """Léa, a minor whose médecin traitant is GP, her parent (PRN), and three ITI-41 deposits
    of GP: plain, hidden from the representatives, hidden from the patient."""
    lea, nir = xds.patient(51, birthDate="2015-03-03")
    parent = created(xds, xds.tokens.system(), related(lea))
    documents = {
        name: deposited(xds, nir, *masking)
        for name, masking in (("plain", ()), ("irl", (IRL,)), ("ip", ("INVISIBLE_PATIENT",)))
    }
    return {
        "lea": lea,
        "nir": nir,
        "parent": parent,
        "token": representative(xds, parent, lea),
        "docs": {name: document for name, (_, document) in documents.items()},
        "requests": {name: request for name, (request, _) in documents.items()},
    }


# -- the hole: INVISIBLE_PATIENT written by the family ------------------------------------------


def _labelled(patient_id: str, code: str) -> dict:
    document = dmp_document(patient_id)
    document["securityLabel"] = [label("N"), label(code)]
    return document


@pytest.mark.parametrize("writer", ["parent", "minor"])
def test_r14_r07_invisible_patient_is_never_written_by_the_patient_or_a_representative(
    xds, minor, writer
):
    """A document the family labels INVISIBLE_PATIENT is hidden from the minor and from its
    writer, and only a practitioner lifts the label: the parent planted on the minor's record
    a document neither could read, change or delete. Refused (403 R14), nothing written; the
    same document labelled otherwise is written (the control)."""
    token = minor["token"] if writer == "parent" else xds.tokens.patient(minor["lea"])
    before = count(xds, "DocumentReference", minor["lea"])
    response = xds.client.post(
        "/fhir/DocumentReference",
        json=_labelled(minor["lea"], "INVISIBLE_PATIENT"),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["details"]["coding"][0]["code"] == "R14"
    assert count(xds, "DocumentReference", minor["lea"]) == before
    created(xds, token, _labelled(minor["lea"], "MASQUE_PS"))


def test_r14_r07_invisible_patient_added_by_the_parent_to_their_own_deposit_is_refused(xds, minor):
    """A document the parent deposited (theirs to change) does not become INVISIBLE_PATIENT
    by their update either: the minor keeps reading it."""
    token = minor["token"]
    document = _labelled(minor["lea"], "MASQUE_PS")
    document["author"] = [{"reference": f"RelatedPerson/{minor['parent']}"}]
    document_id = created(xds, token, document)
    patch = [{"op": "add", "path": "/securityLabel/-", "value": label("INVISIBLE_PATIENT")}]
    response = xds.client.patch(
        f"/fhir/DocumentReference/{document_id}",
        json=patch,
        headers=auth(token, **{"Content-Type": "application/json-patch+json"}),
    )
    assert response.status_code == 403, response.get_data(as_text=True)
    read = xds.client.get(
        f"/fhir/DocumentReference/{document_id}", headers=auth(xds.tokens.patient(minor["lea"]))
    )
    assert read.status_code == 200


# -- controls: R07 through the IHE doors ---------------------------------------------------------


def test_r07_parent_finds_no_hidden_document_nor_its_submission_set(xds, minor):
    """ITI-67 searches, ITI-66 Lists and their includes show the plain deposit only; reads of
    the hidden documents, their history and Binaries answer as for a missing id."""
    token, lea, docs = minor["token"], minor["lea"], minor["docs"]
    headers = auth(token)
    plain = docs["plain"]["id"]
    assert ids(xds.client.get(f"/fhir/DocumentReference?patient={lea}", headers=headers)) == {plain}
    lists = ids(xds.client.get(f"/fhir/List?patient={lea}", headers=headers))
    assert len(lists) == 1
    included = ids(xds.client.get(f"/fhir/List?patient={lea}&_include=List:item", headers=headers))
    assert included == lists | {plain}
    reverse = ids(
        xds.client.get(
            f"/fhir/Patient?_id={lea}&_revinclude=DocumentReference:patient", headers=headers
        )
    )
    assert reverse == {lea, plain}
    for name in ("irl", "ip"):
        hidden = docs[name]
        for path in (
            f"DocumentReference/{hidden['id']}",
            f"DocumentReference/{hidden['id']}/_history",
            f"DocumentReference/{hidden['id']}/_history/1",
            f"Binary/{binary_id(hidden)}",
        ):
            answer = xds.client.get(f"/fhir/{path}", headers=headers)
            missing = xds.client.get(
                f"/fhir/{path.replace(hidden['id'], 'no-such')}", headers=headers
            )
            if path.startswith("Binary"):
                missing = xds.client.get("/fhir/Binary/no-such", headers=headers)
            assert answer.status_code == missing.status_code == 404
            assert (
                answer.get_json()["issue"][0]["diagnostics"].replace(path.split("/")[1], "no-such")
                == missing.get_json()["issue"][0]["diagnostics"]
            )


def test_r07_parent_trail_and_notifications_name_no_hidden_document(xds, minor):
    """The AuditEvents and notifications the parent is shown name neither hidden document,
    its Binary nor its SubmissionSet."""
    hidden: set[str] = set()
    for name in ("irl", "ip"):
        hidden |= {minor["docs"][name]["id"], binary_id(minor["docs"][name])}
        hidden.add(minor["requests"][name].submission_set_unique_id)
    for path in ("AuditEvent", f"AuditEvent?patient={minor['lea']}", "Communication"):
        response = xds.client.get(f"/fhir/{path}", headers=auth(minor["token"]))
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert not [value for value in hidden if value in text], path


def test_r07_parent_change_of_a_hidden_document_changes_nothing(xds, minor):
    """A DELETE (conditional too) or PATCH of the INVISIBLE_REPRESENTANTS_LEGAUX document
    answers as for a missing id, and the minor still reads it."""
    token, hidden = minor["token"], minor["docs"]["irl"]
    unique_id = minor["requests"]["irl"].document_unique_ids["Document01"]
    patch_headers = auth(token, **{"Content-Type": "application/json-patch+json"})
    patch = [{"op": "remove", "path": "/securityLabel/0"}]
    assert (
        xds.client.patch(
            f"/fhir/DocumentReference/{hidden['id']}", json=patch, headers=patch_headers
        ).status_code
        == xds.client.patch(
            "/fhir/DocumentReference/no-such", json=patch, headers=patch_headers
        ).status_code
        == 404
    )
    assert (
        xds.client.delete(
            f"/fhir/DocumentReference/{hidden['id']}", headers=auth(token)
        ).status_code
        == xds.client.delete("/fhir/DocumentReference/no-such", headers=auth(token)).status_code
        == 204
    )
    conditional = xds.client.delete(
        f"/fhir/DocumentReference?identifier=urn:ietf:rfc:3986|urn:oid:{unique_id}",
        headers=auth(token),
    )
    assert conditional.status_code == 204
    read = xds.client.get(
        f"/fhir/DocumentReference/{hidden['id']}", headers=auth(xds.tokens.patient(minor["lea"]))
    )
    assert read.status_code == 200
    assert IRL in {s["code"] for s in read.get_json()["meta"]["security"]}


def _current(api, resource_type: str, resource_id: str) -> dict:
    body = api.client.get(
        f"/fhir/{resource_type}/{resource_id}", headers=auth(api.tokens.system())
    ).get_json()
    body.pop("meta", None)
    return body


@pytest.mark.parametrize(
    "change",
    ["inactive", "relationship", "period-ended", "adult", "adult-year-month", "adult-year"],
)
def test_r07_parent_access_ends_on_the_write_that_ends_it(xds, minor, change):
    """Read once (the record's facts cached), then the identity feed ends the guardianship or
    corrects the birthDate to 18 years ago: the next request is refused."""
    lea, parent, token = minor["lea"], minor["parent"], minor["token"]
    plain = minor["docs"]["plain"]["id"]
    assert (
        xds.client.get(f"/fhir/DocumentReference/{plain}", headers=auth(token)).status_code == 200
    )
    if change.startswith("adult"):
        resource_type, resource_id = "Patient", lea
        body = _current(xds, "Patient", lea)
        body["birthDate"] = {"adult": "2008-01-01", "adult-year-month": "2008-01"}.get(
            change, "2008"
        )
    else:
        resource_type, resource_id = "RelatedPerson", parent
        body = _current(xds, "RelatedPerson", parent)
        if change == "inactive":
            body["active"] = False
        elif change == "relationship":
            body["relationship"] = [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": "FRND"}]}]
        else:
            body["period"] = {"end": "2020-01-01"}
    written = xds.client.put(
        f"/fhir/{resource_type}/{resource_id}",
        json=body,
        headers=auth(xds.tokens.system(), **{"Content-Type": FHIR_JSON}),
    )
    assert written.status_code == 200, written.get_data(as_text=True)
    assert (
        xds.client.get(f"/fhir/DocumentReference/{plain}", headers=auth(token)).status_code == 404
    )
    search = xds.client.get(f"/fhir/DocumentReference?patient={lea}", headers=auth(token))
    assert search.status_code == 403


def test_r07_parent_reaches_no_other_child_nor_a_minor_of_another_relationship(xds, minor):
    """The parent's token naming another minor, and a friend's (FRND) RelatedPerson of that
    minor, read nothing of it."""
    other, nir = xds.patient(52, birthDate="2016-03-03")
    friend = created(xds, xds.tokens.system(), related(other, code="FRND"))
    _, document = deposited(xds, nir)
    for token in (
        representative(xds, minor["parent"], other),
        representative(xds, friend, other),
    ):
        read = xds.client.get(f"/fhir/DocumentReference/{document['id']}", headers=auth(token))
        assert read.status_code == 404
        search = xds.client.get(f"/fhir/DocumentReference?patient={other}", headers=auth(token))
        assert search.status_code == 403


# -- controls: R03 through the IHE doors ---------------------------------------------------------


def test_r03_closed_record_refuses_every_ihe_door_and_writes_nothing(xds):
    patient_id, nir = xds.patient(61)
    request, document = deposited(xds, nir)
    lifecycle.close_record(xds.runtime.service, patient_id)
    before = count(xds, "DocumentReference", patient_id)
    _, refused = deposit(xds, nir)
    assert registry_status(refused) == (v.RESPONSE_FAILURE, ["XDSUnknownPatientId"])
    assert registry_status(xds.find_documents(nir)) == (v.RESPONSE_FAILURE, ["XDSUnknownPatientId"])
    provided = xds.client.post(
        "/fhir",
        json=fixture(SUBMISSION, nir),
        headers=auth(xds.tokens.practitioner("810001234567"), **{"Content-Type": FHIR_JSON}),
    )
    assert "XDSUnknownPatientId" in xds_codes(provided)
    retrieved = xds.retrieve([request.document_unique_ids["Document01"]], nir=nir)
    missing = xds.retrieve(["1.2.3.4.5"], nir=nir)
    assert registry_status(retrieved) == registry_status(missing)
    assert count(xds, "DocumentReference", patient_id) == before
    gp = auth(xds.tokens.practitioner("810001234567"))
    for path in (
        f"DocumentReference/{document['id']}/_history/1",
        f"Binary/{binary_id(document)}",
    ):
        assert xds.client.get(f"/fhir/{path}", headers=gp).status_code == 404


# -- controls: R04 and R05 -----------------------------------------------------------------------


def test_r05_employer_is_refused_alike_for_an_existing_and_a_missing_id(xds):
    patient_id, nir = xds.patient(62)
    _, document = deposited(xds, nir)
    for organization_type in ("employer", "insurer", "mutual_insurer"):
        token = auth(xds.tokens.system("payer", organization_type=organization_type))
        for path, missing in (
            (f"DocumentReference/{document['id']}", "DocumentReference/no-such"),
            (f"Binary/{binary_id(document)}", "Binary/no-such"),
            (f"List?patient={patient_id}", "List?patient=no-such"),
            (f"Patient/{patient_id}", "Patient/no-such"),
        ):
            answer = xds.client.get(f"/fhir/{path}", headers=token)
            other = xds.client.get(f"/fhir/{missing}", headers=token)
            assert answer.status_code == other.status_code == 403
            assert answer.get_json() == other.get_json()


def test_r05_health_insurer_has_search_tells_nothing_of_the_documents(xds):
    patient_id, nir = xds.patient(63)
    _, document = deposited(xds, nir)
    token = auth(xds.tokens.system("cnam", organization_type="health_insurer"))
    code = document["type"]["coding"][0]["code"]
    found = ids(
        xds.client.get(
            f"/fhir/Patient?_id={patient_id}&_has:DocumentReference:patient:type={code}",
            headers=token,
        )
    )
    assert found == set()
