"""R13 and R18 on SubmissionSets (MHD List): a SubmissionSet whose every document is of a
type the reader's profession may not read is hidden from them as a missing one.

What a user checks: the annex transcription says a pharmacien (profession 21) may not read
the type the deposits below are of (11490-0, class 10). A document of that type deposited by
the médecin traitant (ITI-41) is not shown to the pharmacist; before the fix its SubmissionSet
was, empty but with its date, author and identifier: `List?patient=` counted one List more
than before the deposit, `List/{id}` answered 200 where a missing one answers 404, ITI-18
FindSubmissionSets found one more SubmissionSet. Each door is compared between the hidden
SubmissionSet and one that does not exist (or the record before the deposit): same status,
same totals. A médecin (profession 10) still sees it; a change of the document's type (its
author's update, alone or in a transaction) hides or shows it; a SubmissionSet whose documents are hidden for
different reasons (one by its type, one masked by MASQUE_PS) is hidden too.
"""

from __future__ import annotations

import uuid

import pytest
from lxml import etree

from fhir_server.auth.vihf import WSSE, mint_vihf
from fhir_server.config import load_settings
from ihe_xds import vocabulary as v
from ihe_xds.stored_query import (
    FIND_SUBMISSION_SETS,
    GET_ALL,
    GET_SUBMISSION_SET_AND_CONTENTS,
    GET_SUBMISSION_SETS,
)
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    Tokens,
    auth,
    create_test_app,
    dmp_consent,
    permit,
)
from tests.http.metadata_world import mask_as_patient
from tests.http.test_xds_endpoints import GP, Xds, envelope_of, registry_status
from tests.http.test_xds_stored_queries import APPROVED, adhoc
from tests.http.test_xds_update_document_set import entry_of
from tests.support.documents import put_bundle
from tests.support.habilitation import profiles_denying
from tests.xds_builders import build_iti41, patient_cx

RIM = f"{{{v.NS_RIM}}}"
LOINC = "http://loinc.org"
LOINC_OID = "2.16.840.1.113883.6.1"
HIDDEN_TYPE = "11490-0"  # the type of every ITI-41 deposit of tests.xds_builders (class 10)
SEEN_TYPE = "11488-4"  # another type of class 10, which pharmacists read
PHARMACIST = "810000000021"
DOCTOR = "810000000010"  # a médecin the patient authorized, not their médecin traitant
NO_TYPE = "810000000031"  # an assistant dentaire (31): a role that reads no type (R13)
MISSING = "no-such-list"


@pytest.fixture
def xds(tmp_path, data_dir):
    """A server whose annex transcription says: pharmacien (21) may not read 11490-0."""
    profiles = profiles_denying(tmp_path / "profiles", "21", f"urn:oid:{LOINC_OID}", HIDDEN_TYPE)
    settings = load_settings(
        {"data_dir": data_dir, "profiles_dir": profiles, "max_body_bytes": 200_000}, environ={}
    )
    app = create_test_app(settings)
    yield Xds(app, app.test_client(), Tokens(data_dir), data_dir)
    app.extensions["fhir"].store.close()


@pytest.fixture
def record(xds):
    """(Patient id, NIR): médecin traitant GP; PHARMACIST, DOCTOR, NO_TYPE authorized (R10)."""
    patient_id, nir = xds.patient(61)
    response = xds.client.post(
        "/fhir/Consent",
        json=dmp_consent(patient_id, permit(PHARMACIST), permit(DOCTOR), permit(NO_TYPE)),
        headers=auth(xds.tokens.patient(patient_id), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return patient_id, nir


def deposit(xds: Xds, patient_id: str, nir: str, documents: list[bytes] | None = None):
    """GP's ITI-41 of documents of HIDDEN_TYPE: (the request, the SubmissionSet's List id)."""
    request = build_iti41(
        nir=nir, mtom=False, security=xds.security(GP, nir), documents=documents or [b"<d/>"]
    )
    response = xds.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    found = xds.client.get(
        f"/fhir/List?patient={patient_id}", headers=auth(xds.tokens.practitioner(GP))
    )
    assert found.status_code == 200, found.get_data(as_text=True)
    (list_id,) = {
        e["resource"]["id"]
        for e in found.get_json()["entry"]
        for i in e["resource"].get("identifier", [])
        if i.get("value", "").endswith(request.submission_set_unique_id)
    }
    return request, list_id


def document(xds: Xds, unique_id: str) -> dict:
    (found,) = xds.runtime.service.documents_with_unique_id(
        "urn:ietf:rfc:3986", f"urn:oid:{unique_id}"
    )
    return found


PROFESSIONS = {PHARMACIST: "21", NO_TYPE: "31"}


def token(xds: Xds, idnat: str) -> str:
    return xds.tokens.practitioner(idnat, profession=PROFESSIONS.get(idnat, "10"))


def vihf(xds: Xds, idnat: str, nir: str) -> etree._Element:
    """The VIHF of `idnat` with their profession (Xds.security says 10 for everyone)."""
    header = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    header.append(
        mint_vihf(
            xds.credential,
            practitioner_id=idnat,
            profession=PROFESSIONS.get(idnat, "10"),
            audience=xds.audience,
            patient_ins=f"{INS_SYSTEM}|{nir}",
        )
    )
    return header


def iti18(xds: Xds, idnat: str, nir: str, query_id: str, slots) -> etree._Element:
    response = xds.soap(
        "/xds/registry", v.ACTION_ITI18, adhoc(query_id, slots), vihf(xds, idnat, nir)
    )
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    root, _ = envelope_of(response)
    return root


def packages(root: etree._Element) -> set[str]:
    """The SubmissionSets (RegistryPackage entryUUIDs) an ITI-18 answer holds."""
    return {p.get("id") for p in root.iter(f"{RIM}RegistryPackage")}


def find_submission_sets(xds: Xds, idnat: str, nir: str) -> set[str]:
    slots = [
        ("$XDSSubmissionSetPatientId", f"'{patient_cx(nir)}'"),
        ("$XDSSubmissionSetStatus", APPROVED),
    ]
    return packages(iti18(xds, idnat, nir, FIND_SUBMISSION_SETS, slots))


def get_all(xds: Xds, idnat: str, nir: str) -> set[str]:
    slots = [
        ("$patientId", f"'{patient_cx(nir)}'"),
        ("$XDSDocumentEntryStatus", APPROVED),
        ("$XDSSubmissionSetStatus", APPROVED),
        ("$XDSFolderStatus", APPROVED),
    ]
    return packages(iti18(xds, idnat, nir, GET_ALL, slots))


def lists(xds: Xds, idnat: str, query: str) -> tuple[int, set[str]]:
    """(total, ids) of a List search (`_total=accurate`), after checking it succeeded."""
    response = xds.client.get(
        f"/fhir/List?{query}&_total=accurate", headers=auth(token(xds, idnat))
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = response.get_json()
    return bundle.get("total"), {e["resource"]["id"] for e in bundle.get("entry", [])}


def assert_read_as_missing(xds: Xds, idnat: str, list_id: str) -> None:
    """`List/{id}` and its `_history` answer exactly as for an id naming nothing (R18)."""
    for path in ("", "/_history", "/_history/1"):
        read = xds.client.get(f"/fhir/List/{list_id}{path}", headers=auth(token(xds, idnat)))
        missing = xds.client.get(f"/fhir/List/{MISSING}{path}", headers=auth(token(xds, idnat)))
        assert (path, read.status_code) == (path, missing.status_code) == (path, 404)
        said = read.get_data(as_text=True).replace(list_id, "ID")
        assert said == missing.get_data(as_text=True).replace(MISSING, "ID")


def set_type(xds: Xds, unique_id: str, type_code: str) -> None:
    """Its author (GP) gives the document another type of its class (a REST update)."""
    current = document(xds, unique_id)
    current["type"] = {"coding": [{"system": LOINC, "code": type_code}]}
    response = xds.client.put(
        f"/fhir/DocumentReference/{current['id']}",
        json=current,
        headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)


# -- every door: the hidden SubmissionSet answers as a missing one ---------------------------


def test_r13_submission_set_of_unreadable_type_is_not_found_by_list_searches(xds, record):
    """`List?patient=` (ITI-66), `List?_id=`, `List?identifier=`, `List?item=`, and a
    Patient search's `_revinclude` of its Lists, answer the pharmacist as before the deposit
    (totals included); the médecin's answers count the deposit's SubmissionSet."""
    patient_id, nir = record
    searches = {
        "patient": f"patient={patient_id}",
        "ITI-66": f"patient={patient_id}&code=submissionset&status=current",
    }
    before = {name: lists(xds, PHARMACIST, q) for name, q in searches.items()}
    request, list_id = deposit(xds, patient_id, nir)
    doc_id = document(xds, request.document_unique_ids["Document01"])["id"]
    for name, query in searches.items():
        assert lists(xds, PHARMACIST, query) == before[name], name
        total, ids = lists(xds, DOCTOR, query)
        assert list_id in ids and total == before[name][0] + 1, name
    identifier = f"urn:ietf:rfc:3986|urn:oid:{request.submission_set_unique_id}"
    of_record = f"patient={patient_id}"
    for query, missing in (
        (f"{of_record}&_id={list_id}", f"{of_record}&_id={MISSING}"),
        (
            f"{of_record}&identifier={identifier}",
            f"{of_record}&identifier=urn:ietf:rfc:3986|urn:oid:1.2.3.4.5.6",
        ),
        (
            f"patient={patient_id}&item=DocumentReference/{doc_id}",
            f"patient={patient_id}&item=DocumentReference/x{doc_id}",
        ),
    ):
        assert lists(xds, PHARMACIST, query) == lists(xds, PHARMACIST, missing) == (0, set())
        assert lists(xds, DOCTOR, query) == (1, {list_id})
    # A List search chained to its documents, and a document search through its Lists
    # (`_has`): the List clause inside a join is compiled by both engines.
    chained = f"patient={patient_id}&item:DocumentReference.status=current"
    assert lists(xds, PHARMACIST, chained) == before["patient"]
    assert list_id in lists(xds, DOCTOR, chained)[1]
    for idnat, expected in ((PHARMACIST, set()), (DOCTOR, {doc_id})):
        found = xds.client.get(
            f"/fhir/DocumentReference?patient={patient_id}&_has:List:item:code=submissionset",
            headers=auth(token(xds, idnat)),
        )
        assert found.status_code == 200, found.get_data(as_text=True)
        assert {e["resource"]["id"] for e in found.get_json().get("entry", [])} == expected
    revinclude = f"/fhir/Patient?_id={patient_id}&_revinclude=List:patient"
    for idnat, shown in ((PHARMACIST, False), (DOCTOR, True)):
        found = xds.client.get(revinclude, headers=auth(token(xds, idnat)))
        assert found.status_code == 200, found.get_data(as_text=True)
        ids = {e["resource"]["id"] for e in found.get_json().get("entry", [])}
        assert (list_id in ids) is shown, idnat


def test_r13_submission_set_of_unreadable_type_reads_as_missing(xds, record):
    """`List/{id}`, its `_history` and a version: 404 worded as for a missing List."""
    patient_id, nir = record
    _, list_id = deposit(xds, patient_id, nir)
    assert_read_as_missing(xds, PHARMACIST, list_id)
    read = xds.client.get(f"/fhir/List/{list_id}", headers=auth(token(xds, DOCTOR)))
    assert read.status_code == 200, read.get_data(as_text=True)


def test_r13_submission_set_of_unreadable_type_is_not_found_by_iti18(xds, record):
    """FindSubmissionSets and GetAll answer the pharmacist as before the deposit;
    GetSubmissionSetAndContents of it and GetSubmissionSets of its document as for unknown
    ones; the médecin finds it by each."""
    patient_id, nir = record
    found_before = find_submission_sets(xds, PHARMACIST, nir)
    all_before = get_all(xds, PHARMACIST, nir)
    request, _ = deposit(xds, patient_id, nir)
    (new,) = find_submission_sets(xds, GP, nir) - found_before
    assert find_submission_sets(xds, PHARMACIST, nir) == found_before
    assert get_all(xds, PHARMACIST, nir) == all_before
    assert new in find_submission_sets(xds, DOCTOR, nir)
    assert new in get_all(xds, DOCTOR, nir)
    entry = entry_of(xds, nir, request.document_unique_ids["Document01"])
    unknown = f"urn:uuid:{uuid.uuid4()}"
    for query_id, name, value, missing in (
        (GET_SUBMISSION_SET_AND_CONTENTS, "$XDSSubmissionSetEntryUUID", f"'{new}'", f"'{unknown}'"),
        (
            GET_SUBMISSION_SET_AND_CONTENTS,
            "$XDSSubmissionSetUniqueId",
            f"'{request.submission_set_unique_id}'",
            "'1.2.3.4.5.6'",
        ),
        (GET_SUBMISSION_SETS, "$uuid", f"('{entry.get('id')}')", f"('{unknown}')"),
    ):
        hidden = iti18(xds, PHARMACIST, nir, query_id, [(name, value)])
        absent = iti18(xds, PHARMACIST, nir, query_id, [(name, missing)])
        assert packages(hidden) == packages(absent) == set(), name
        assert len(hidden.find(f".//{RIM}RegistryObjectList")) == 0, name
        assert new in packages(iti18(xds, DOCTOR, nir, query_id, [(name, value)])), name


def test_r13_submission_set_is_hidden_from_a_role_that_reads_no_type(xds, record):
    """A role that reads no document type (its document search is 403, R13) finds and
    reads the SubmissionSet as a missing one; its List search still answers (200)."""
    patient_id, nir = record
    before = lists(xds, NO_TYPE, f"patient={patient_id}")
    _, list_id = deposit(xds, patient_id, nir)
    assert lists(xds, NO_TYPE, f"patient={patient_id}") == before
    assert_read_as_missing(xds, NO_TYPE, list_id)


# -- the entries as they are now: a type change hides or shows it ----------------------------


def test_r13_submission_set_follows_its_document_type_changed_by_update(xds, record):
    """The document given a type pharmacists read shows its SubmissionSet to them, given
    back the unreadable type hides it again (its author's REST update)."""
    patient_id, nir = record
    found_before = find_submission_sets(xds, PHARMACIST, nir)
    request, list_id = deposit(xds, patient_id, nir)
    (new,) = find_submission_sets(xds, GP, nir) - found_before
    unique_id = request.document_unique_ids["Document01"]
    query = f"patient={patient_id}"
    assert list_id not in lists(xds, PHARMACIST, query)[1]
    set_type(xds, unique_id, SEEN_TYPE)
    assert list_id in lists(xds, PHARMACIST, query)[1]
    read = xds.client.get(f"/fhir/List/{list_id}", headers=auth(token(xds, PHARMACIST)))
    assert read.status_code == 200, read.get_data(as_text=True)
    assert new in find_submission_sets(xds, PHARMACIST, nir)
    set_type(xds, unique_id, HIDDEN_TYPE)
    assert list_id not in lists(xds, PHARMACIST, query)[1]
    assert find_submission_sets(xds, PHARMACIST, nir) == found_before
    assert_read_as_missing(xds, PHARMACIST, list_id)


def test_r13_submission_set_follows_its_document_type_changed_by_transaction(xds, record):
    """The author's transaction Bundle PUT of the document with another type shows its
    SubmissionSet to the pharmacist, one giving the type back hides it. (Neither a PATCH nor
    ITI-57 changes a type: a metadata update changes the status and labels only, PDSm
    st_maj.md; the List is judged through its documents as they are now, whatever door
    changed them.)"""
    patient_id, nir = record
    found_before = find_submission_sets(xds, PHARMACIST, nir)
    request, list_id = deposit(xds, patient_id, nir)
    unique_id = request.document_unique_ids["Document01"]
    (new,) = find_submission_sets(xds, GP, nir) - found_before
    for type_code, shown in ((SEEN_TYPE, True), (HIDDEN_TYPE, False)):
        current = document(xds, unique_id)
        current["type"] = {"coding": [{"system": LOINC, "code": type_code}]}
        bundle = put_bundle(current)
        response = xds.client.post(
            "/fhir",
            json=bundle,
            headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        assert (list_id in lists(xds, PHARMACIST, f"patient={patient_id}")[1]) is shown
        assert (new in find_submission_sets(xds, PHARMACIST, nir)) is shown
        read = xds.client.get(f"/fhir/List/{list_id}", headers=auth(token(xds, PHARMACIST)))
        assert read.status_code == (200 if shown else 404)


# -- entries hidden for different reasons ----------------------------------------------------


def test_r13_r14_submission_set_of_documents_hidden_for_different_reasons_is_hidden(xds, record):
    """One document of the unreadable type, the other of a readable type but masked by the
    patient (MASQUE_PS): no label is shared, yet the pharmacist (not the médecin traitant)
    may read neither, and the SubmissionSet is hidden from them as a missing one. The
    médecin, who reads the first, sees it."""
    patient_id, nir = record
    found_before = find_submission_sets(xds, PHARMACIST, nir)
    request, list_id = deposit(xds, patient_id, nir, documents=[b"<typed/>", b"<masked/>"])
    masked_uid = request.document_unique_ids["Document02"]
    set_type(xds, masked_uid, SEEN_TYPE)
    assert list_id in lists(xds, PHARMACIST, f"patient={patient_id}")[1], "the control"
    mask_as_patient(xds.client, xds.tokens.patient(patient_id), document(xds, masked_uid)["id"])
    assert list_id not in lists(xds, PHARMACIST, f"patient={patient_id}")[1]
    assert find_submission_sets(xds, PHARMACIST, nir) == found_before
    assert_read_as_missing(xds, PHARMACIST, list_id)
    assert list_id in lists(xds, DOCTOR, f"patient={patient_id}")[1]
