"""Bounded work per request and fail-closed parsing (issue #18, finding 14; deliverables 2
and 7): whatever a client sends, the answer is an OperationOutcome naming the limit or the
problem and where, never a 500, and a worker's memory does not grow with what it was sent.
"""

from __future__ import annotations

import gc
import json
import tracemalloc

import pytest

from fhir_server.resources.input_limits import MAX_DEPTH
from fhir_server.resources.model import ELEMENT_MEMO
from fhir_server.search.parameters import MAX_CHAIN, MAX_PARAMETERS, MAX_VALUES
from tests.http.conftest import FHIR_JSON, a_patient, auth, dmp_consent

FHIR_XML = "application/fhir+xml"
FORM = "application/x-www-form-urlencoded"


def post_json(client, token: str, path: str, body: bytes | str | dict):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data=data, headers=auth(token, **{"Content-Type": FHIR_JSON}))


def post_xml(client, token: str, path: str, body: bytes):
    return client.post(path, data=body, headers=auth(token, **{"Content-Type": FHIR_XML}))


def issue(response) -> dict:
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return outcome["issue"][0]


def extension_chain(levels: int, leaf: str = "v") -> dict:
    """An extension holding an extension ... `levels` times: two JSON levels each."""
    element: dict = {"url": "http://example.org/e", "valueString": leaf}
    for _ in range(levels):
        element = {"url": "http://example.org/e", "extension": [element]}
    return element


def count_patients(client, token: str) -> int:
    response = client.get("/fhir/Patient?_summary=count", headers=auth(token))
    return response.get_json()["total"]


@pytest.fixture
def system(tokens) -> str:
    return tokens.system()


# -- memory: the validation memo is bounded in bytes ------------------------------------------


def test_bounded_work_validate_memo_keeps_worker_memory_bounded_over_large_requests(client, tokens):
    """Finding 14: `$validate` of a large Consent with a deep Extension chain grew a worker
    by tens of MB per request (every level's serialized subtree kept as a memo key, in a
    buffer several times its size), with any token. Twenty such requests now leave the
    memo within its byte bound and the process's traced memory about where it was."""
    reader = tokens.system("reader", scope="system/*.rs")
    ELEMENT_MEMO.clear()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(20):
            consent = dmp_consent("p1")
            consent["extension"] = [extension_chain(25, f"{n}-" + "x" * 150_000)]
            response = post_json(client, reader, "/fhir/Consent/$validate", consent)
            assert response.status_code == 200, response.get_data(as_text=True)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert growth < 16 * 1024 * 1024, f"the worker kept {growth / 1e6:.1f} MB"
    assert ELEMENT_MEMO.accounted_bytes <= ELEMENT_MEMO.max_bytes


def test_bounded_work_validate_memo_does_not_keep_inline_attachments(client, tokens):
    """Finding 14: each inline attachment validated was kept whole by the memo (about 7.7 MB
    for 2 MB of data). An element larger than the memo's entry limit is not remembered."""
    reader = tokens.system("reader", scope="system/*.rs")

    def validate(n: int) -> None:
        data = ("QUJD" * 40_000)[:-8] + f"{n:08d}"
        document = {
            "resourceType": "DocumentReference",
            "status": "current",
            "content": [{"attachment": {"contentType": "text/plain", "data": data}}],
        }
        response = post_json(client, reader, "/fhir/DocumentReference/$validate", document)
        assert response.status_code == 200

    validate(-1)  # what the first request loads once
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(10):
            validate(n)
        gc.collect()
        growth = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert growth < 1024 * 1024, f"the worker kept {growth / 1e6:.1f} MB"


# -- nesting depth ------------------------------------------------------------------------------


def test_bounded_work_deep_json_resource_is_refused_with_the_limit_and_where(client, system):
    """Finding 14: elements nested 100-150 deep answered 500 (RecursionError, or orjson's
    writer giving up at 255 levels). Deeper than the limit is a 400 naming it and where."""
    patient = a_patient(1, extension=[extension_chain(150)])
    response = post_json(client, system, "/fhir/Patient", patient)
    assert response.status_code == 400
    found = issue(response)
    assert found["code"] == "too-costly"
    assert f"{MAX_DEPTH} levels" in found["diagnostics"]
    assert found["expression"][0].startswith("Patient.extension[0].extension[0].extension[0]")
    assert count_patients(client, system) == 0


@pytest.mark.parametrize("levels", [60, 150, 400])
def test_bounded_work_deep_json_in_validate_is_refused_not_500(client, tokens, levels):
    """Finding 14: `$validate` of a deeply nested resource answered 500."""
    reader = tokens.system("reader", scope="system/*.rs")
    patient = a_patient(1, extension=[extension_chain(levels)])
    response = post_json(client, reader, "/fhir/Patient/$validate", patient)
    assert response.status_code == 400
    assert f"{MAX_DEPTH} levels" in issue(response)["diagnostics"]


def test_bounded_work_deep_entry_of_a_transaction_is_refused_naming_the_entry(client, system):
    """Finding 14: a transaction whose entry is nested 150 deep answered 500."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": a_patient(2, extension=[extension_chain(150)]),
                "request": {"method": "POST", "url": "Patient"},
            }
        ],
    }
    response = post_json(client, system, "/fhir/", bundle)
    assert response.status_code == 400
    assert issue(response)["expression"][0].startswith("Bundle.entry[0].resource.extension[0]")
    assert count_patients(client, system) == 0


def test_bounded_work_deep_xml_resource_is_refused_not_500(client, system):
    """Finding 14: FHIR XML nested 150 elements deep answered 500 (the model's serializer
    hit the recursion limit)."""
    body = (
        b'<Patient xmlns="http://hl7.org/fhir">'
        + b'<extension url="http://example.org/e">' * 150
        + b'<valueString value="v"/>'
        + b"</extension>" * 150
        + b"</Patient>"
    )
    for path in ("/fhir/Patient", "/fhir/Patient/$validate"):
        response = post_xml(client, system, path, body)
        assert response.status_code == 400, path
        assert f"{MAX_DEPTH} levels" in issue(response)["diagnostics"]
        assert issue(response)["expression"][0].startswith("Patient.extension.extension")


def test_bounded_work_resource_within_the_depth_limit_is_accepted(client, system):
    """The limit leaves room for real resources: 25 nested extensions (52 levels) pass."""
    patient = a_patient(3, extension=[extension_chain(25)])
    response = post_json(client, system, "/fhir/Patient", patient)
    assert response.status_code == 201, response.get_data(as_text=True)
    assert count_patients(client, system) == 1


# -- search parameters ----------------------------------------------------------------------------


def test_bounded_work_post_search_with_a_thousand_parameters_is_400(client, system):
    """Finding 14: a POST `_search` with 1,000 parameters answered 500 (SQLite: expression
    tree too large). More than the limit is a 400 naming it."""
    form = "&".join(f"name=a{i}" for i in range(1000))
    response = client.post(
        "/fhir/Patient/_search", data=form, headers=auth(system, **{"Content-Type": FORM})
    )
    assert response.status_code == 400
    found = issue(response)
    assert found["code"] == "too-costly"
    assert f"limit is {MAX_PARAMETERS} parameters" in found["diagnostics"]


def test_bounded_work_get_search_with_too_many_parameters_is_400(client, system):
    """The GET path had the same 500."""
    query = "&".join(f"name=a{i}" for i in range(MAX_PARAMETERS + 1))
    response = client.get(f"/fhir/Patient?{query}", headers=auth(system))
    assert response.status_code == 400
    assert f"limit is {MAX_PARAMETERS} parameters" in issue(response)["diagnostics"]


def test_bounded_work_search_at_the_parameter_limit_is_answered(client, system):
    query = "&".join(f"name=a{i}" for i in range(MAX_PARAMETERS))
    response = client.get(f"/fhir/Patient?{query}", headers=auth(system))
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.mark.parametrize("name", ["name", "_id", "identifier", "birthdate"])
def test_bounded_work_too_many_values_in_one_parameter_is_400(client, system, name):
    """Thousands of `,`-separated values in one parameter answered 500 (SQLite expression
    depth): more than the limit is a 400 naming the parameter."""
    values = ",".join(f"{2000 + i % 20}-01-0{1 + i % 9}" for i in range(3000))
    response = client.get(f"/fhir/Patient?{name}={values}", headers=auth(system))
    assert response.status_code == 400
    found = issue(response)
    assert f"limit is {MAX_VALUES} values" in found["diagnostics"]
    assert found["expression"] == [name]


def test_bounded_work_long_chain_is_400_not_500(client, system):
    """A chain four references long answered 500 (SQLite: parser stack overflow)."""
    for key in ("link.link.link.link.name", "_has:Patient:link:" * 4 + "name"):
        response = client.get(f"/fhir/Patient?{key}=x", headers=auth(system))
        assert response.status_code == 400, key
        assert f"the limit is {MAX_CHAIN}" in issue(response)["diagnostics"]


@pytest.mark.parametrize(
    "query",
    [
        "&".join("link.link.link.name=" + ",".join(f"v{j}" for j in range(15)) for _ in range(8)),
        "&".join(
            "_has:Patient:link:_has:Patient:link:link.identifier="
            + ",".join(f"s|v{j}" for j in range(MAX_VALUES))
            for _ in range(10)
        ),
        "&".join(
            "birthdate=" + ",".join(f"ge19{j:02d}-01-01" for j in range(MAX_VALUES))
            for _ in range(10)
        ),
    ],
)
def test_bounded_work_largest_allowed_searches_are_answered(client, system, query):
    """What the limits let through is answered (200), or refused as too costly (400):
    never the engine's 500."""
    response = client.get(f"/fhir/Patient?{query}", headers=auth(system))
    assert response.status_code in (200, 400), response.get_data(as_text=True)
    if response.status_code == 400:
        assert issue(response)["code"] == "too-costly"


# -- duplicate JSON keys ----------------------------------------------------------------------------


def test_fail_closed_duplicate_json_key_is_refused_naming_key_and_path(client, system):
    """Finding 14: duplicate JSON keys were accepted, the last one winning: a reader of the
    raw body and the server saw two different resources. Refused with a 400."""
    body = json.dumps(a_patient(4))[:-1] + ', "gender" : "male"}'
    response = post_json(client, system, "/fhir/Patient", body)
    assert response.status_code == 400
    found = issue(response)
    assert "'gender'" in found["diagnostics"] and found["expression"] == ["Patient.gender"]
    assert count_patients(client, system) == 0


def test_fail_closed_duplicate_key_deep_in_a_transaction_entry_is_refused(client, system):
    patient = json.dumps(a_patient(5))
    nested = patient.replace('"family"', '"family": "X",\n  "family"', 1)
    body = (
        '{"resourceType":"Bundle","type":"transaction","entry":[{"resource":'
        + nested
        + ',"request":{"method":"POST","url":"Patient"}}]}'
    )
    response = post_json(client, system, "/fhir/", body)
    assert response.status_code == 400
    assert issue(response)["expression"] == ["Bundle.entry[0].resource.name[0].family"]
    assert count_patients(client, system) == 0


def test_fail_closed_duplicate_key_in_validate_is_refused(client, tokens):
    reader = tokens.system("reader", scope="system/*.rs")
    body = '{"resourceType":"Patient","gender":"female","gender":"robot"}'
    response = post_json(client, reader, "/fhir/Patient/$validate", body)
    assert response.status_code == 400
    assert issue(response)["expression"] == ["Patient.gender"]


def test_fail_closed_escaped_quotes_and_colons_in_values_are_not_duplicates(client, system):
    """The cheap duplicate count must not refuse what only looks like keys in a string."""
    patient = a_patient(6)
    patient["name"][0]["text"] = 'Marie "gender": "male", \\": \\ " :'
    response = post_json(client, system, "/fhir/Patient", json.dumps(patient, indent=2))
    assert response.status_code == 201, response.get_data(as_text=True)


# -- DTDs in FHIR XML ---------------------------------------------------------------------------------

ENTITY_PATIENT = (
    b'<?xml version="1.0"?><!DOCTYPE Patient [<!ENTITY g "female">]>'
    b'<Patient xmlns="http://hl7.org/fhir"><gender value="&g;"/></Patient>'
)


@pytest.mark.parametrize("path", ["/fhir/Patient", "/fhir/Patient/$validate"])
def test_fail_closed_fhir_xml_with_a_dtd_is_refused(client, system, path):
    """Finding 14: FHIR XML accepted a DTD and expanded its internal entities (the gender
    above was read as "female"). Any DOCTYPE is refused with a 400."""
    response = post_xml(client, system, path, ENTITY_PATIENT)
    assert response.status_code == 400
    found = issue(response)
    assert found["code"] == "security" and "DTD" in found["diagnostics"]
    assert count_patients(client, system) == 0


def test_fail_closed_fhir_xml_with_a_dtd_in_utf16_is_refused(client, system):
    """The byte check cannot see a UTF-16 DOCTYPE; the parsed tree's docinfo does."""
    body = ENTITY_PATIENT.decode().replace('1.0"?>', '1.0" encoding="UTF-16"?>').encode("utf-16")
    response = post_xml(client, system, "/fhir/Patient", body)
    assert response.status_code == 400
    assert count_patients(client, system) == 0


def test_fail_closed_xds_refuses_a_dtd_with_a_soap_fault(client):
    """The XDS face already refused DTDs (ihe_xds/xml.py); this holds it over HTTP."""
    envelope = (
        b'<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x "y">]>'
        b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope">'
        b"<s:Header/><s:Body>&x;</s:Body></s:Envelope>"
    )
    response = client.post(
        "/xds/registry", data=envelope, headers={"Content-Type": "application/soap+xml"}
    )
    assert response.status_code in (400, 500)
    assert b"Fault" in response.data and b"DTD" in response.data


# -- other 500s from malformed input --------------------------------------------------------------


def test_bounded_work_vread_of_a_version_beyond_64_bits_is_404_not_500(client, system, tokens):
    """A version number SQLite cannot bind answered 500 (OverflowError): no such version."""
    created = post_json(client, system, "/fhir/Patient", a_patient(7))
    patient_id = created.get_json()["id"]
    token = tokens.patient(patient_id)
    for version in ("99999999999999999999999999", str(2**63)):
        response = client.get(f"/fhir/Patient/{patient_id}/_history/{version}", headers=auth(token))
        assert response.status_code == 404, version


@pytest.mark.parametrize("version", ["abc", "²", "99999999999999999999999999"])
def test_bounded_work_batch_vread_of_a_malformed_version_answers_the_entry(
    client, system, tokens, version
):
    """A batch GET `Type/id/_history/abc` answered 500 for the whole batch (int() of the
    segment): the entry answers 400 (404 for a number no version has)."""
    created = post_json(client, system, "/fhir/Patient", a_patient(8))
    patient_id = created.get_json()["id"]
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{patient_id}/_history/{version}"}}
        ],
    }
    response = post_json(client, tokens.patient(patient_id), "/fhir/", bundle)
    assert response.status_code == 200
    status = response.get_json()["entry"][0]["response"]["status"]
    assert status == ("404" if version.isdigit() and version.isascii() else "400")
