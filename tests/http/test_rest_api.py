"""The FHIR RESTful API over HTTP (http.html): interactions, headers, formats and errors."""

from __future__ import annotations

import base64
import json

import pytest

from tests.http.conftest import FHIR_JSON, a_patient, auth, current_engine
from tests.support.documents import dmp_document


def _create(client, token, resource, **headers):
    return client.post(
        f"/fhir/{resource['resourceType']}",
        data=json.dumps(resource),
        headers=auth(token, **{"Content-Type": FHIR_JSON, **headers}),
    )


def test_metadata_needs_no_token_and_declares_r4(client):
    response = client.get("/fhir/metadata")
    statement = response.get_json()
    assert response.status_code == 200
    assert statement["fhirVersion"] == "4.0.1"
    served = {r["type"] for r in statement["rest"][0]["resource"]}
    assert served == {
        "Patient",
        "RelatedPerson",
        "DocumentReference",
        "Binary",
        "List",
        "Consent",
        "AuditEvent",
        "Communication",
    }
    document = next(r for r in statement["rest"][0]["resource"] if r["type"] == "DocumentReference")
    assert {"patient", "status", "creation", "author-identifier"} <= {
        p["name"] for p in document["searchParam"]
    }


def test_r01_missing_token_is_401_with_challenge(client):
    response = client.get("/fhir/Patient/x")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert response.get_json()["resourceType"] == "OperationOutcome"


def test_r01_forged_token_is_401(client, tokens):
    token = tokens.system()
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert client.get("/fhir/Patient/x", headers=auth(forged)).status_code == 401


def test_create_answers_201_with_location_etag_and_last_modified(client, tokens):
    response = _create(client, tokens.system(), a_patient())
    assert response.status_code == 201
    assert response.headers["ETag"] == 'W/"1"'
    assert "/fhir/Patient/" in response.headers["Location"] and response.headers[
        "Location"
    ].endswith("/_history/1")
    assert response.headers["Last-Modified"].endswith("GMT")
    assert response.get_json()["meta"]["versionId"] == "1"


def test_prefer_return_minimal_and_operation_outcome(client, tokens):
    minimal = _create(client, tokens.system(), a_patient(1), Prefer="return=minimal")
    assert minimal.status_code == 201 and minimal.data == b"" and minimal.headers["Location"]
    outcome = _create(client, tokens.system(), a_patient(2), Prefer="return=OperationOutcome")
    assert outcome.get_json()["resourceType"] == "OperationOutcome"


def test_patient_reads_own_record_with_etag_and_vread(client, tokens):
    created = _create(client, tokens.system(), a_patient()).get_json()
    token = tokens.patient(created["id"])
    read = client.get(f"/fhir/Patient/{created['id']}", headers=auth(token))
    assert read.status_code == 200 and read.headers["ETag"] == 'W/"1"'
    assert read.get_json() == created
    vread = client.get(f"/fhir/Patient/{created['id']}/_history/1", headers=auth(token))
    assert vread.status_code == 200 and vread.get_json()["id"] == created["id"]


def test_update_if_match_stale_is_412_and_current_is_200(client, tokens):
    admin = tokens.system()
    created = _create(client, admin, a_patient()).get_json()
    body = json.dumps({**a_patient(), "id": created["id"], "gender": "other"})
    headers = auth(admin, **{"Content-Type": FHIR_JSON})
    ok = client.put(
        f"/fhir/Patient/{created['id']}", data=body, headers={**headers, "If-Match": 'W/"1"'}
    )
    assert ok.status_code == 200 and ok.headers["ETag"] == 'W/"2"'
    stale = client.put(
        f"/fhir/Patient/{created['id']}", data=body, headers={**headers, "If-Match": 'W/"1"'}
    )
    assert stale.status_code == 412 and stale.get_json()["resourceType"] == "OperationOutcome"


def test_update_id_mismatch_is_400(client, tokens):
    response = client.put(
        "/fhir/Patient/abc",
        data=json.dumps({**a_patient(), "id": "xyz"}),
        headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 400
    assert response.get_json()["issue"][0]["expression"] == ["Patient.id"]


def test_non_ascii_digits_in_version_and_count_are_400(client, tokens):
    """A malformed value is a 400 naming it, never a server error: '²' and '٣' are digits to
    str.isdigit but not numbers to int()."""
    created = _create(client, tokens.system(), a_patient()).get_json()
    token = tokens.patient(created["id"])
    vread = client.get(f"/fhir/Patient/{created['id']}/_history/²", headers=auth(token))
    history = client.get(f"/fhir/Patient/{created['id']}/_history?_count=٣", headers=auth(token))
    assert (vread.status_code, history.status_code) == (400, 400)
    assert (
        vread.get_json()["resourceType"] == history.get_json()["resourceType"] == "OperationOutcome"
    )


def test_delete_then_read_is_410(client, tokens):
    """http.html#delete: a logical delete; the patient deletes a document of their own (R06)."""
    created = _create(client, tokens.system(), a_patient()).get_json()
    patient_token = tokens.patient(created["id"])
    document = dmp_document(
        created["id"],
        content=b"note",
        content_type="text/plain",
        title="note",
        author=[{"reference": f"Patient/{created['id']}"}],
    )
    document_id = _create(client, patient_token, document).get_json()["id"]
    assert (
        client.delete(
            f"/fhir/DocumentReference/{document_id}", headers=auth(patient_token)
        ).status_code
        == 204
    )
    assert (
        client.get(
            f"/fhir/DocumentReference/{document_id}", headers=auth(patient_token)
        ).status_code
        == 410
    )


def test_r15_patient_records_are_not_deleted_by_clients(client, tokens):
    admin = tokens.system()
    created = _create(client, admin, a_patient()).get_json()
    response = client.delete(f"/fhir/Patient/{created['id']}", headers=auth(admin))
    assert response.status_code == 403 and response.get_json()["resourceType"] == "OperationOutcome"


def test_malformed_json_is_400_naming_the_position(client, tokens):
    response = client.post(
        "/fhir/Patient",
        data=b'{"resourceType": "Patient",',
        headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 400
    assert "malformed JSON" in response.get_json()["issue"][0]["diagnostics"]


def test_malformed_xml_is_400(client, tokens):
    response = client.post(
        "/fhir/Patient",
        data=b"<Patient xmlns='http://hl7.org/fhir'><id",
        headers=auth(tokens.system(), **{"Content-Type": "application/fhir+xml"}),
    )
    assert (
        response.status_code == 400
        and "malformed XML" in response.get_json()["issue"][0]["diagnostics"]
    )


def test_xml_entities_are_not_expanded(client, tokens):
    """Parsers are hardened: an XXE payload is refused, never resolved."""
    payload = b'<?xml version="1.0"?><!DOCTYPE p [<!ENTITY x SYSTEM "file:///etc/passwd">]><Patient xmlns="http://hl7.org/fhir"><id value="&x;"/></Patient>'
    response = client.post(
        "/fhir/Patient",
        data=payload,
        headers=auth(tokens.system(), **{"Content-Type": "application/fhir+xml"}),
    )
    assert response.status_code == 400
    assert b"root:" not in response.data


def test_unknown_type_is_404(client, tokens):
    response = client.get("/fhir/Observation/1", headers=auth(tokens.system()))
    assert response.status_code == 404 and response.get_json()["resourceType"] == "OperationOutcome"


def test_invalid_resource_is_400_listing_every_issue(client, tokens):
    bad = {
        "resourceType": "Patient",
        "birthDate": "1985-02-30",
        "gender": "robot",
        "colour": "blue",
    }
    response = _create(client, tokens.system(), bad)
    expressions = {e for issue in response.get_json()["issue"] for e in issue.get("expression", [])}
    assert response.status_code == 400
    assert {"Patient.birthDate", "Patient.gender", "Patient.colour"} <= expressions


def test_profile_violation_is_422_with_the_element(client, tokens):
    """A Patient whose INS key is wrong fails the server's Patient profile."""
    patient = a_patient()
    patient["identifier"][0]["value"] = patient["identifier"][0]["value"][:-2] + "00"
    response = _create(client, tokens.system(), patient)
    assert response.status_code == 422
    assert any(
        e.startswith("Patient.identifier")
        for i in response.get_json()["issue"]
        for e in i.get("expression", [])
    )


def test_unsupported_media_type_is_415(client, tokens):
    response = client.post(
        "/fhir/Patient",
        data=b"name=x",
        headers=auth(tokens.system(), **{"Content-Type": "text/plain"}),
    )
    assert response.status_code == 415 and response.get_json()["issue"][0]["expression"] == [
        "Content-Type"
    ]


def test_body_over_the_limit_is_413(client, tokens):
    response = client.post(
        "/fhir/Patient",
        data=b"x" * 300_000,
        headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 413 and response.get_json()["resourceType"] == "OperationOutcome"


def test_patch_is_405(client, tokens):
    response = client.patch(
        "/fhir/Patient/1",
        data=b"[]",
        headers=auth(tokens.system(), **{"Content-Type": "application/json-patch+json"}),
    )
    assert response.status_code == 405 and response.get_json()["resourceType"] == "OperationOutcome"


def test_request_id_is_echoed_and_generated(client):
    assert (
        client.get("/fhir/metadata", headers={"X-Request-Id": "abc-123"}).headers["X-Request-Id"]
        == "abc-123"
    )
    generated = client.get("/fhir/metadata").headers["X-Request-Id"]
    assert len(generated) == 36


def test_unexpected_error_is_500_without_stack_trace(app, client, tokens, monkeypatch):
    runtime = app.extensions["fhir"]

    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(runtime.service, "read", explode)
    response = client.get(
        "/fhir/Patient/x", headers=auth(tokens.system(), **{"X-Request-Id": "req-42"})
    )
    assert response.status_code == 500
    assert b"secret internal detail" not in response.data and b"Traceback" not in response.data
    assert "req-42" in response.get_json()["issue"][0]["diagnostics"]


def test_xml_by_accept_and_format_and_pretty(client, tokens):
    created = _create(client, tokens.system(), a_patient()).get_json()
    token = tokens.patient(created["id"])
    by_accept = client.get(
        f"/fhir/Patient/{created['id']}", headers=auth(token, Accept="application/fhir+xml")
    )
    assert (
        by_accept.content_type.startswith("application/fhir+xml") and b"<Patient" in by_accept.data
    )
    by_format = client.get(
        f"/fhir/Patient/{created['id']}?_format=xml&_pretty=true", headers=auth(token)
    )
    assert b"<Patient" in by_format.data and b"\n  <id" in by_format.data
    pretty_json = client.get(f"/fhir/Patient/{created['id']}?_pretty=true", headers=auth(token))
    assert b'\n  "resourceType"' in pretty_json.data


@pytest.mark.parametrize(
    ("accept", "served"),
    [
        ("application/fhir+xml;q=0, application/fhir+json", "application/fhir+json"),
        ("application/fhir+json;q=0.1, application/fhir+xml;q=0.9", "application/fhir+xml"),
        ("application/json;q=0, */*", "application/fhir+xml"),
        ("application/fhir+xml;q=oops", "application/fhir+json"),
        (  # HAPI's client: XML and JSON equally, XML first
            "application/fhir+xml;q=1.0, application/fhir+json;q=1.0, "
            "application/xml+fhir;q=0.9, application/json+fhir;q=0.9",
            "application/fhir+xml",
        ),
    ],
)
def test_accept_is_read_with_its_qualities(client, tokens, accept, served):
    """http.html#mime-type, RFC 9110 section 12.5.1: the Accept header's qualities say which
    format the client prefers, and `q=0` one it refuses; the server answered in the first
    FHIR format listed whatever its quality (XML to a client refusing XML)."""
    created = _create(client, tokens.system(), a_patient()).get_json()
    token = tokens.patient(created["id"])
    for url in (f"/fhir/Patient/{created['id']}", "/fhir/metadata"):
        response = client.get(url, headers=auth(token, Accept=accept))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.content_type.split(";")[0] == served


def test_a_post_search_reads_format_and_pretty_from_its_form(client, tokens):
    """search.html#search-post: the form's parameters are those of the query. A form's
    `_format` and `_pretty` were dropped unread: JSON to a client asking for XML, and a
    `_pretty` the query refuses (400) accepted."""
    created = _create(client, tokens.system(), a_patient()).get_json()
    token = tokens.patient(created["id"])
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    for body, status, served in (
        (f"_id={created['id']}&_format=xml", 200, "application/fhir+xml"),
        (f"_id={created['id']}&_format=text/csv", 406, "application/fhir+json"),
        (f"_id={created['id']}&_pretty=yes", 400, "application/fhir+json"),
    ):
        response = client.post("/fhir/Patient/_search", data=body, headers=auth(token, **form))
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.content_type.split(";")[0] == served


def test_a_binary_refusing_the_fhir_formats_is_served_raw(client, tokens):
    """http.html#binary: a client whose Accept gives the FHIR formats `q=0` asks for the
    raw content, not for a Binary resource."""
    admin = tokens.system()
    created = _create(client, admin, a_patient()).get_json()
    pdf = b"%PDF-1.4 refused formats"
    posted = client.post(
        "/fhir/Binary", data=pdf, headers=auth(admin, **{"Content-Type": "application/pdf"})
    )
    binary_id = posted.get_json()["id"]
    document = dmp_document(
        created["id"], f"Binary/{binary_id}", content=pdf, content_type="application/pdf"
    )
    assert _create(client, tokens.patient(created["id"]), document).status_code == 201
    accept = "application/fhir+json;q=0, application/fhir+xml;q=0, application/pdf"
    raw = client.get(
        f"/fhir/Binary/{binary_id}", headers=auth(tokens.patient(created["id"]), Accept=accept)
    )
    assert raw.status_code == 200 and raw.data == pdf and raw.content_type == "application/pdf"


def test_xml_create_is_accepted(client, tokens):
    patient = a_patient()
    ins = patient["identifier"][0]["value"]
    xml = (
        '<Patient xmlns="http://hl7.org/fhir"><identifier><system value="urn:oid:1.2.250.1.213.1.4.8"/>'
        f'<value value="{ins}"/></identifier><name><family value="Xml"/><given value="Ana"/></name>'
        '<gender value="female"/><birthDate value="1990-01-01"/></Patient>'
    )
    response = client.post(
        "/fhir/Patient",
        data=xml,
        headers=auth(tokens.system(), **{"Content-Type": "application/fhir+xml"}),
    )
    assert response.status_code == 201 and response.get_json()["name"][0]["family"] == "Xml"


def test_binary_raw_content_both_directions(client, tokens):
    """http.html#binary: raw bytes in; raw bytes out with the document's own content type."""
    admin = tokens.system()
    created = _create(client, admin, a_patient()).get_json()
    pdf = b"%PDF-1.4 fake document bytes \x00\x01"
    posted = client.post(
        "/fhir/Binary", data=pdf, headers=auth(admin, **{"Content-Type": "application/pdf"})
    )
    assert posted.status_code == 201
    binary_id = posted.get_json()["id"]
    document = dmp_document(
        created["id"], f"Binary/{binary_id}", content=pdf, content_type="application/pdf"
    )
    assert _create(client, tokens.patient(created["id"]), document).status_code == 201
    patient_token = tokens.patient(created["id"])
    raw = client.get(
        f"/fhir/Binary/{binary_id}", headers=auth(patient_token, Accept="application/pdf")
    )
    assert raw.status_code == 200 and raw.data == pdf and raw.content_type == "application/pdf"
    as_fhir = client.get(
        f"/fhir/Binary/{binary_id}", headers=auth(patient_token, Accept=FHIR_JSON)
    ).get_json()
    assert base64.b64decode(as_fhir["data"]) == pdf


def test_search_bundle_with_next_link_and_total(client, tokens):
    admin = tokens.system()
    created = _create(client, admin, a_patient()).get_json()
    patient_token = tokens.patient(created["id"])
    for n in range(5):
        document = dmp_document(created["id"], content_type="text/plain", title=f"doc {n}")
        assert _create(client, patient_token, document).status_code == 201
    first = client.get(
        f"/fhir/DocumentReference?patient={created['id']}&_count=2&_total=accurate",
        headers=auth(patient_token),
    ).get_json()
    assert first["type"] == "searchset" and first["total"] == 5 and len(first["entry"]) == 2
    seen = [e["resource"]["id"] for e in first["entry"]]
    url = next(link["url"] for link in first["link"] if link["relation"] == "next")
    while url:
        page = client.get(
            url.replace("http://127.0.0.1:8080", ""), headers=auth(patient_token)
        ).get_json()
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) == 5 and len(set(seen)) == 5


def test_unknown_search_parameter_is_400_unless_lenient(client, tokens):
    created = _create(client, tokens.system(), a_patient()).get_json()
    token = tokens.patient(created["id"])
    strict = client.get(
        f"/fhir/DocumentReference?patient={created['id']}&colour=blue", headers=auth(token)
    )
    assert strict.status_code == 400 and "colour" in strict.get_json()["issue"][0]["diagnostics"]
    lenient = client.get(
        f"/fhir/DocumentReference?patient={created['id']}&colour=blue",
        headers=auth(token, Prefer="handling=lenient"),
    )
    assert lenient.status_code == 200
    outcome = [e for e in lenient.get_json().get("entry", []) if e["search"]["mode"] == "outcome"]
    assert outcome and "colour" in outcome[0]["resource"]["issue"][0]["diagnostics"]


def test_transaction_over_http_is_atomic(client, tokens):
    admin = tokens.system()
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:aaaaaaaa-0000-0000-0000-000000000001",
                "resource": a_patient(7),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "resource": {"resourceType": "Patient", "gender": "robot"},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    response = client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(admin, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 400
    assert "Bundle.entry[1]" in response.get_json()["issue"][0]["diagnostics"]
    bundle["entry"].pop()
    ok = client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(admin, **{"Content-Type": FHIR_JSON})
    )
    assert ok.status_code == 200 and ok.get_json()["type"] == "transaction-response"
    assert ok.get_json()["entry"][0]["response"]["status"] == "201 Created"


def test_instance_history_over_http(client, tokens):
    admin = tokens.system()
    created = _create(client, admin, a_patient()).get_json()
    client.put(
        f"/fhir/Patient/{created['id']}",
        data=json.dumps({**a_patient(), "id": created["id"], "gender": "other"}),
        headers=auth(admin, **{"Content-Type": FHIR_JSON}),
    )
    history = client.get(
        f"/fhir/Patient/{created['id']}/_history", headers=auth(tokens.patient(created["id"]))
    ).get_json()
    assert history["type"] == "history"
    assert [e["response"]["etag"] for e in history["entry"]] == ['W/"2"', 'W/"1"']


def test_search_parameter_and_structure_definition_are_served(client, tokens):
    token = tokens.system()
    parameters = client.get("/fhir/SearchParameter?code=creation", headers=auth(token)).get_json()
    assert parameters["total"] >= 1
    profiles = client.get("/fhir/StructureDefinition", headers=auth(token)).get_json()
    assert any(e["resource"]["type"] == "DocumentReference" for e in profiles["entry"])


def test_healthz_reports_the_store(client):
    store = "sqlite" if current_engine() == "sqlite" else "mongodb"
    assert client.get("/healthz").get_json() == {"status": "ok", "store": store}


def test_r10_a_search_inside_a_batch_is_refused_like_a_search(client, tokens):
    """A GET search entry goes through the gate: an unauthorized practitioner gets 403, no data."""
    created = _create(client, tokens.system(), a_patient()).get_json()
    stranger = tokens.practitioner("810000000077")
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"DocumentReference?patient={created['id']}"}}
        ],
    }
    response = client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(stranger, **{"Content-Type": FHIR_JSON})
    )
    entry = response.get_json()["entry"][0]
    assert entry["response"]["status"] == "403"
    assert "resource" not in entry


def _patients_with_ins(client, token, ins: str) -> int:
    found = client.get(
        f"/fhir/Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|{ins}", headers=auth(token)
    )
    assert found.status_code == 200, found.get_data(as_text=True)
    return len(found.get_json().get("entry", []))


def test_a_create_asked_in_a_format_the_server_cannot_give_stores_nothing(client, tokens):
    """http.html#mime-type: a `_format` the server cannot answer in is a 406, and a `_pretty`
    other than true or false a 400; both are settled before the interaction, so the client
    told its create failed finds nothing stored (it was stored, then answered 406)."""
    token = tokens.system()
    for query, status in (("_format=text/csv", 406), ("_pretty=yes", 400)):
        patient = a_patient()
        response = client.post(
            f"/fhir/Patient?{query}",
            data=json.dumps(patient),
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code == status, response.get_data(as_text=True)
        assert response.get_json()["resourceType"] == "OperationOutcome"
        assert _patients_with_ins(client, token, patient["identifier"][0]["value"]) == 0


def test_history_refuses_a_parameter_it_does_not_understand(client, tokens):
    """http.html#history: a history understands `_count`, `_since` (and the server's paging
    cursor); `_at` and `_list` are not supported. Like a search's, an unknown parameter is a
    400 naming it, not silently ignored (an `_at` answered with the whole history), unless
    the client asks for lenient handling."""
    created = _create(client, tokens.system(), a_patient()).get_json()
    token = tokens.patient(created["id"])
    url = f"/fhir/Patient/{created['id']}/_history"
    assert client.get(f"{url}?_count=5", headers=auth(token)).status_code == 200
    for name in ("_at", "_list", "unknown"):
        refused = client.get(f"{url}?{name}=2020", headers=auth(token))
        assert refused.status_code == 400, refused.get_data(as_text=True)
        assert refused.get_json()["issue"][0]["expression"] == [name]
    lenient = client.get(f"{url}?unknown=2020", headers=auth(token, Prefer="handling=lenient"))
    assert lenient.status_code == 200
    assert len(lenient.get_json()["entry"]) == 1


def test_a_history_cursor_pages_its_own_history_for_its_own_requester(client, tokens):
    """http.html#history paging, as search.html#paging's cursors: the `next` link's cursor is
    signed and bound to the history it pages and to the requester given it. It was the
    store's own, unsigned: a client could write anything into it (on MongoDB, a type and an
    id), and the history's event, which keeps the request as asked, carried that into a
    patient's trace (R18)."""
    admin = tokens.system()
    ids = [_create(client, admin, a_patient(n)).get_json()["id"] for n in range(2)]
    for version in range(2):
        client.put(
            f"/fhir/Patient/{ids[0]}",
            data=json.dumps({**a_patient(), "id": ids[0], "gender": ["other", "female"][version]}),
            headers=auth(admin, **{"Content-Type": FHIR_JSON}),
        )
    patient = tokens.patient(ids[0])
    first = client.get(f"/fhir/Patient/{ids[0]}/_history?_count=1", headers=auth(patient))
    assert first.status_code == 200, first.get_data(as_text=True)
    next_url = next(x["url"] for x in first.get_json()["link"] if x["relation"] == "next")
    cursor = next_url.split("_cursor=")[1].split("&")[0]
    second = client.get(next_url[next_url.index("/fhir/") :], headers=auth(patient))
    assert [e["response"]["etag"] for e in second.get_json()["entry"]] == ['W/"2"']
    replayed = {
        "another requester": (f"/fhir/Patient/{ids[0]}/_history?_count=1&_cursor={cursor}", admin),
        "another history": (f"/fhir/Patient/{ids[1]}/_history?_count=1&_cursor={cursor}", admin),
        "tampered": (
            f"/fhir/Patient/{ids[0]}/_history?_count=1&_cursor={cursor[:-2]}AA",
            patient,
        ),
    }
    for what, (url, token) in replayed.items():
        refused = client.get(url, headers=auth(token))
        assert refused.status_code == 400, (what, refused.get_data(as_text=True))
        assert refused.get_json()["issue"][0]["expression"] == ["_cursor"], what
