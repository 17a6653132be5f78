"""Every version, every door (issue #18, deliverable 4; findings 6, 7, 8 and 13).

A version is served only if the requester may read the current version and that version;
conditional create, update and delete search as a gated, audited read of their requester;
concurrent conditional creates with the same criteria create one resource; a write on a
hidden id answers as a write on a missing one.

The record is the R18 matrix's (`tests/http/test_r18_matrix.py`), seeded by the server
itself; every check goes through HTTP with the tokens `fhir-server token` makes.
"""

from __future__ import annotations

import json
import threading
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY, SYSTEM_IDNAT_PS
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    Tokens,
    a_patient,
    auth,
    dmp_consent,
    permit,
    valid_nir,
)
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    BLOCKED,
    GP,
    PATIENT_A,
    PATIENT_B,
    UNKNOWN_ID,
    _build_world,
    _id,
    binary_id,
    doc_id,
    issue_codes,
    outcome_shape,
)
from tests.http.test_serve import _call, _free_port, _start, _stop
from tests.support.documents import dmp_document

MASQUE_PS = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE_PS"}
INVISIBLE_PATIENT = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}


@pytest.fixture
def world(tmp_path):
    app, built = _build_world(tmp_path / "var")
    yield built
    app.extensions["fhir"].store.close()


def _labelled(resource: dict, coding: dict) -> dict:
    labelled = {k: v for k, v in resource.items() if k != "meta"}
    labelled["securityLabel"] = [{"coding": [coding]}]
    return labelled


def _bundle(kind: str, *requests: dict) -> str:
    return json.dumps(
        {"resourceType": "Bundle", "type": kind, "entry": [{"request": r} for r in requests]}
    )


def _post_bundle(world, token: str, body: str):
    return world.client.post("/fhir", data=body, headers=auth(token, **{"Content-Type": FHIR_JSON}))


# -- finding 6: vread of an earlier version --------------------------------------------------


def _assert_every_version_hidden(world, token: str, document_id: str, versions: int) -> None:
    """Read, history and every version's vread (REST and Bundle GET) answer as for an id
    that does not exist, with the same wording."""
    paths = ["{id}", "{id}/_history", *(f"{{id}}/_history/{n}" for n in range(1, versions + 1))]
    for path in paths:
        hidden = world.get(token, "/fhir/DocumentReference/" + path.format(id=document_id))
        missing = world.get(token, "/fhir/DocumentReference/" + path.format(id=UNKNOWN_ID))
        assert hidden.status_code == missing.status_code == 404, (path, hidden.status_code)
        assert outcome_shape(hidden, document_id) == outcome_shape(missing, UNKNOWN_ID), path
    response = _post_bundle(
        world,
        token,
        _bundle(
            "batch",
            {"method": "GET", "url": f"DocumentReference/{document_id}/_history/1"},
            {"method": "GET", "url": f"DocumentReference/{UNKNOWN_ID}/_history/1"},
        ),
    )
    hidden, missing = (e["response"] for e in response.get_json()["entry"])
    assert hidden["status"].startswith("404") and missing["status"].startswith("404")
    assert json.dumps(hidden["outcome"]).replace(document_id, "<id>") == json.dumps(
        missing["outcome"]
    ).replace(UNKNOWN_ID, "<id>")


def copy_of_visible(world, resource_id: str) -> dict:
    """A's visible document, as a client would send it under `resource_id`."""
    document = world.service.read(INTERNAL, "DocumentReference", doc_id("a-visible")).json()
    document = {k: v for k, v in document.items() if k not in ("meta", "relatesTo")}
    return {**document, "id": resource_id}


def test_r14_vread_of_a_version_before_masking_is_not_served_to_a_practitioner(world):
    """Finding 6: a document read by an authorized practitioner, then masked (MASQUE_PS) by
    the patient, is no longer served to them in any version; the patient still reads it."""
    document_id = doc_id("b-other")
    practitioner = world.tokens.practitioner(AUTHORIZED)
    assert world.get(practitioner, f"/fhir/DocumentReference/{document_id}").status_code == 200
    patient = world.tokens.patient(PATIENT_B)
    current = world.get(patient, f"/fhir/DocumentReference/{document_id}").get_json()
    masked = world.client.put(
        f"/fhir/DocumentReference/{document_id}",
        data=json.dumps(_labelled(current, MASQUE_PS)),
        headers=auth(patient, **{"Content-Type": FHIR_JSON}),
    )
    assert masked.status_code == 200, masked.get_data(as_text=True)
    _assert_every_version_hidden(world, practitioner, document_id, versions=2)
    assert world.get(patient, f"/fhir/DocumentReference/{document_id}/_history/1").status_code == (
        200
    )


def test_r14_vread_of_a_version_before_invisible_patient_is_not_served_to_the_patient(world):
    """Finding 6: a document the patient read, then labelled INVISIBLE_PATIENT, is no longer
    served to the patient in any version."""
    document_id = doc_id("a-visible")
    patient = world.tokens.patient(PATIENT_A)
    assert world.get(patient, f"/fhir/DocumentReference/{document_id}/_history/1").status_code == (
        200
    )
    current = world.service.read(INTERNAL, "DocumentReference", document_id).json()
    world.service.update(
        INTERNAL, "DocumentReference", document_id, _labelled(current, INVISIBLE_PATIENT)
    )
    _assert_every_version_hidden(world, patient, document_id, versions=2)


def test_r14_unmasking_serves_the_earlier_versions_again(world):
    """The control: the rule is "the current version and that version", not "never again"."""
    document_id = doc_id("a-masked")
    practitioner = world.tokens.practitioner(AUTHORIZED)
    assert world.get(practitioner, f"/fhir/DocumentReference/{document_id}").status_code == 404
    current = world.service.read(INTERNAL, "DocumentReference", document_id).json()
    unmasked = {k: v for k, v in current.items() if k not in ("securityLabel", "meta")}
    world.service.update(INTERNAL, "DocumentReference", document_id, unmasked)
    assert world.get(practitioner, f"/fhir/DocumentReference/{document_id}").status_code == 200
    # Version 1 is itself masked: still hidden; version 2 is served.
    assert (
        world.get(practitioner, f"/fhir/DocumentReference/{document_id}/_history/1").status_code
        == 404
    )
    assert (
        world.get(practitioner, f"/fhir/DocumentReference/{document_id}/_history/2").status_code
        == 200
    )
    history = world.get(practitioner, f"/fhir/DocumentReference/{document_id}/_history")
    assert [e["response"]["etag"] for e in history.get_json()["entry"]] == ['W/"2"']


# -- finding 8: the search of a conditional create is a gated, audited read -------------------


def _search_events_naming(world, reference: str) -> int:
    """How many of the patient's search AuditEvents name `reference` (R16, what the patient
    sees of their record's trail)."""
    bundle = world.get(
        world.tokens.patient(PATIENT_A),
        f"/fhir/AuditEvent?patient={PATIENT_A}&subtype=search-type&_count=200",
    ).get_json()
    return sum(
        1
        for entry in bundle.get("entry", [])
        for entity in entry["resource"].get("entity", [])
        if ((entity.get("what") or {}).get("reference") or "").split("/_history/")[0] == reference
    )


def test_r14_conditional_create_answers_the_existing_list_as_a_read_would(world):
    """Finding 8: `If-None-Exist` matching the record's List answers it without the entry
    naming the masked document (as a read of it does), and the search is audited."""
    list_id = _id(f"list-{PATIENT_A}")
    practitioner = world.tokens.practitioner(AUTHORIZED)
    before = _search_events_naming(world, f"List/{list_id}")
    response = world.client.post(
        "/fhir/List",
        data=json.dumps(
            {
                "resourceType": "List",
                "status": "current",
                "mode": "working",
                "subject": {"reference": f"Patient/{PATIENT_A}"},
            }
        ),
        headers=auth(
            practitioner,
            **{"Content-Type": FHIR_JSON, "If-None-Exist": f"patient={PATIENT_A}&_id={list_id}"},
        ),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["id"] == list_id
    assert doc_id("a-masked") not in response.get_data(as_text=True)
    read = world.get(practitioner, f"/fhir/List/{list_id}").get_json()
    assert body == read, "the conditional create serves the List otherwise than a read"
    assert _search_events_naming(world, f"List/{list_id}") == before + 1


def test_r06_conditional_create_by_the_patient_hides_the_invisible_document(world):
    list_id = _id(f"list-{PATIENT_A}")
    patient = world.tokens.patient(PATIENT_A)
    response = world.client.post(
        "/fhir/List",
        data=json.dumps({"resourceType": "List", "status": "current", "mode": "working"}),
        headers=auth(patient, **{"Content-Type": FHIR_JSON, "If-None-Exist": f"_id={list_id}"}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert doc_id("a-invisible") not in response.get_data(as_text=True)
    assert doc_id("a-visible") in response.get_data(as_text=True)


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_r16_conditional_create_in_a_bundle_is_audited_and_creates_nothing(world, kind):
    """Finding 8 through Bundle entries with `ifNoneExist`."""
    list_id = _id(f"list-{PATIENT_A}")
    practitioner = world.tokens.practitioner(AUTHORIZED)
    before = _search_events_naming(world, f"List/{list_id}")
    response = _post_bundle(
        world,
        practitioner,
        _bundle(
            kind,
            {"method": "POST", "url": "List", "ifNoneExist": f"patient={PATIENT_A}&_id={list_id}"},
        ).replace(
            '"request"',
            '"resource":{"resourceType":"List","status":"current","mode":"working",'
            f'"subject":{{"reference":"Patient/{PATIENT_A}"}}}},"request"',
        ),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    answer = response.get_json()["entry"][0]["response"]
    assert answer["status"].startswith("200"), answer
    assert doc_id("a-masked") not in response.get_data(as_text=True)
    assert _search_events_naming(world, f"List/{list_id}") == before + 1
    lists = world.service.search(INTERNAL, "List", [("patient", PATIENT_A)])
    assert [row[1] for row in lists.matches] == [list_id]


# -- finding 13: writes on a hidden id answer as writes on a missing one -----------------------


def test_r14_conditional_update_carrying_a_hidden_id_answers_as_a_missing_id(world):
    """Finding 13: a conditional update that matches nothing, whose body carries the id of
    a document masked from the requester, answers as one carrying an unknown id (a create
    with a server id), and the masked document is untouched."""
    practitioner = world.tokens.practitioner(AUTHORIZED)
    answers = []
    for carried in (doc_id("a-masked"), UNKNOWN_ID):
        # A DMP document (a conditional update that matches nothing creates one) naming the
        # visible document's Binary, which the requester may read, under the carried id.
        document = dmp_document(
            PATIENT_A,
            f"Binary/{binary_id('a-visible')}",
            content=b"%PDF-1.4",
            content_type="application/pdf",
            author=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHORIZED}}],
            id=carried,
            entry_uuid=f"urn:uuid:{carried}",
        )
        criteria = quote(f"urn:ietf:rfc:3986|urn:uuid:{carried}")
        answers.append(
            world.client.put(
                f"/fhir/DocumentReference?patient={PATIENT_A}&identifier={criteria}",
                data=json.dumps(document),
                headers=auth(practitioner, **{"Content-Type": FHIR_JSON}),
            )
        )
    hidden, missing = answers
    assert hidden.status_code == missing.status_code == 201, hidden.get_data(as_text=True)
    assert hidden.get_json()["id"] not in (doc_id("a-masked"), UNKNOWN_ID)
    assert missing.get_json()["id"] != UNKNOWN_ID
    stored = world.service.read(INTERNAL, "DocumentReference", doc_id("a-masked"))
    assert stored.version == 1 and "MASQUE_PS" in stored.body.decode()


def test_r09_delete_by_a_blocked_practitioner_does_not_disclose_the_block(world):
    """Finding 13: DELETE of an existing document by a practitioner the patient blocked was
    a 403 naming the block, where an unknown id answers 204."""
    blocked = world.tokens.practitioner(BLOCKED)
    hidden = world.client.delete(
        f"/fhir/DocumentReference/{doc_id('a-visible')}", headers=auth(blocked)
    )
    missing = world.client.delete(f"/fhir/DocumentReference/{UNKNOWN_ID}", headers=auth(blocked))
    assert (hidden.status_code, hidden.data) == (missing.status_code, missing.data) == (204, b"")
    assert world.service.read(INTERNAL, "DocumentReference", doc_id("a-visible")).version == 1


def test_r16_delete_of_a_hidden_id_is_traced_as_a_refusal(world):
    """The silent answer is not a silent trace: the refused delete is audited (R16)."""
    practitioner = world.tokens.practitioner(AUTHORIZED)
    gp = world.tokens.practitioner(GP)

    def refusals() -> int:
        # The médecin traitant cannot read AuditEvents; the patient can (R06).
        url = f"/fhir/AuditEvent?patient={PATIENT_A}&outcome=8&_summary=count"
        return world.get(world.tokens.patient(PATIENT_A), url).get_json()["total"]

    before = refusals()
    response = world.client.delete(
        f"/fhir/DocumentReference/{doc_id('a-masked')}", headers=auth(practitioner)
    )
    assert response.status_code == 204
    assert refusals() == before + 1
    assert world.get(gp, f"/fhir/DocumentReference/{doc_id('a-masked')}").status_code == 200


@pytest.mark.parametrize("subject", ["a", "no-such-patient"], ids=["own-record", "no-record"])
def test_r14_update_of_a_hidden_id_answers_as_one_of_a_missing_id(world, subject):
    """Finding 13, PUT: whatever the body (one the requester could create, or one for a
    record that does not exist), a PUT of a hidden id answers exactly as a PUT of an unknown
    id: clients create no ids (updateCreate false), so both are the read's "not known" 404,
    where an unknown id used to be created (201) and a hidden one refused."""
    practitioner = world.tokens.practitioner(AUTHORIZED)
    answers = []
    for target in (doc_id("a-masked"), UNKNOWN_ID):
        document = copy_of_visible(world, target)
        if subject != "a":
            document["subject"] = {"reference": f"Patient/{subject}"}
        answers.append(
            world.client.put(
                f"/fhir/DocumentReference/{target}",
                data=json.dumps(document),
                headers=auth(practitioner, **{"Content-Type": FHIR_JSON}),
            )
        )
    hidden, missing = answers
    assert hidden.status_code == missing.status_code == 404, hidden.get_data(as_text=True)
    assert outcome_shape(hidden, doc_id("a-masked")) == outcome_shape(missing, UNKNOWN_ID)
    assert world.service.store.read("DocumentReference", UNKNOWN_ID) is None


def test_r14_update_of_a_hidden_id_with_an_if_match_answers_as_a_missing_id(world):
    practitioner = world.tokens.practitioner(AUTHORIZED)
    answers = []
    for target in (doc_id("a-masked"), UNKNOWN_ID):
        document = copy_of_visible(world, target)
        answers.append(
            world.client.put(
                f"/fhir/DocumentReference/{target}",
                data=json.dumps(document),
                headers=auth(practitioner, **{"Content-Type": FHIR_JSON, "If-Match": 'W/"1"'}),
            )
        )
    hidden, missing = answers
    assert hidden.status_code == missing.status_code == 412
    assert outcome_shape(hidden, doc_id("a-masked")) == outcome_shape(missing, UNKNOWN_ID)


# -- finding 7: concurrent conditional creates over HTTP ---------------------------------------

WRITERS = 20


def _all_at_once(call, count: int = WRITERS) -> list:
    start = threading.Barrier(count)

    def run(_):
        start.wait()
        return call()

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(run, range(count)))


def test_r15_parallel_conditional_patient_creates_keep_the_record_reachable_by_ins(
    client, tokens, app
):
    """Finding 7: 20 parallel `POST Patient` with the same `If-None-Exist` INS created 3 to
    8 Patients, after which the record was unreachable by INS. Now one is created, every
    answer names it, and the INS designates the record."""
    admin = tokens.system()
    ins = f"{INS_SYSTEM}|{valid_nir(7)}"

    def create():
        return app.test_client().post(
            "/fhir/Patient",
            data=json.dumps(a_patient(7)),
            headers=auth(
                admin, **{"Content-Type": FHIR_JSON, "If-None-Exist": f"identifier={ins}"}
            ),
        )

    answers = _all_at_once(create)
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * (WRITERS - 1) + [201], statuses
    assert len({a.get_json()["id"] for a in answers}) == 1
    found = client.get(f"/fhir/Patient?identifier={quote(ins)}", headers=auth(admin)).get_json()
    assert [e["resource"]["id"] for e in found["entry"]] == [answers[0].get_json()["id"]]
    patient_id = answers[0].get_json()["id"]
    consent = client.post(
        "/fhir/Consent",
        data=json.dumps(dmp_consent(patient_id, permit(AUTHORIZED))),
        headers=auth(tokens.patient(patient_id), **{"Content-Type": FHIR_JSON}),
    )
    assert consent.status_code == 201, consent.get_data(as_text=True)
    by_ins = client.get(
        f"/fhir/DocumentReference?patient.identifier={quote(ins)}",
        headers=auth(tokens.practitioner(AUTHORIZED)),
    )
    assert by_ins.status_code == 200, by_ins.get_data(as_text=True)


def test_r10_parallel_conditional_consents_make_one_consent(client, tokens, app):
    """Finding 7, Consents: the patient's 20 parallel conditional Consents make one."""
    admin = tokens.system()
    patient_id = client.post(
        "/fhir/Patient",
        data=json.dumps(a_patient(8)),
        headers=auth(admin, **{"Content-Type": FHIR_JSON}),
    ).get_json()["id"]
    patient = tokens.patient(patient_id)

    def create():
        return app.test_client().post(
            "/fhir/Consent",
            data=json.dumps(dmp_consent(patient_id)),
            headers=auth(
                patient,
                **{"Content-Type": FHIR_JSON, "If-None-Exist": "scope=patient-privacy"},
            ),
        )

    statuses = sorted(a.status_code for a in _all_at_once(create))
    assert statuses == [200] * (WRITERS - 1) + [201], statuses
    consents = client.get(f"/fhir/Consent?patient={patient_id}", headers=auth(patient)).get_json()
    assert len(consents.get("entry", [])) == 1


def test_r18_a_failed_conditional_create_names_nothing(world):
    """The criteria are the requester's search: R04 applies (a practitioner designates the
    patient), and the refusal says what a search's would."""
    practitioner = world.tokens.practitioner(AUTHORIZED)
    response = world.client.post(
        "/fhir/List",
        data=json.dumps({"resourceType": "List", "status": "current", "mode": "working"}),
        headers=auth(
            practitioner,
            **{"Content-Type": FHIR_JSON, "If-None-Exist": f"_id={_id(f'list-{PATIENT_A}')}"},
        ),
    )
    search = world.get(practitioner, f"/fhir/List?_id={_id(f'list-{PATIENT_A}')}")
    assert response.status_code == search.status_code == 400
    assert issue_codes(response) == issue_codes(search)


@pytest.mark.slow
def test_r15_parallel_conditional_creates_across_worker_processes_make_one_patient(tmp_path):
    """Finding 7 as it was found: `fhir-server serve` with two worker processes, 20 parallel
    `POST Patient` with the same `If-None-Exist` INS. The SQLite write lock is shared by the
    processes, and each conditional create searches again under it."""
    data_dir = tmp_path / "var"
    port = _free_port()
    process = _start(data_dir, port, workers=2, threads=4)
    try:
        admin = Tokens(data_dir).system()
        ins = f"{INS_SYSTEM}|{valid_nir(9)}"

        def create():
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/fhir/Patient",
                method="POST",
                data=json.dumps(a_patient(9)).encode(),
                headers={
                    "Authorization": f"Bearer {admin}",
                    "Content-Type": FHIR_JSON,
                    "If-None-Exist": f"identifier={ins}",
                },
            )
            try:
                with urllib.request.urlopen(request, timeout=60) as response:
                    return response.status, json.loads(response.read())["id"]
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        answers = _all_at_once(create)
        assert sorted(status for status, _ in answers) == [200] * (WRITERS - 1) + [201], answers
        assert len({patient_id for _, patient_id in answers}) == 1
        status, found, _ = _call(port, "GET", f"/fhir/Patient?identifier={quote(ins)}", admin)
        assert status == 200 and len(found["entry"]) == 1
    finally:
        _stop(process)
