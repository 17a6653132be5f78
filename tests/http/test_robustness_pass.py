"""Robustness pass: bad input gets a 4xx OperationOutcome naming the field and the problem,
never a 500, and nothing is half-written (preamble: "Bad input: OperationOutcome with the
right status, never a 500, nothing half-written"; fail closed).

What the pass found, each checked here (all were a 500 or a wrong answer before):
- JSON Patch of a DocumentReference's metadata (PDSm st_maj.md) whose status or label is of
  another JSON type than FHIR's (`replace /status` by an object, a coding whose code is a
  list): a 500 in the metadata update's rules;
- conditional interactions whose criteria hold no search parameter (only result parameters,
  `_count`, `_elements`, `_sort`, or empty values): read as "every resource the requester
  may read", the one they saw was patched, updated or referenced (FHIR R4 http.html#cond-update,
  #cpatch, #ccreate, #trules: the server finds the target "by performing a search");
- a transaction Bundle whose `meta`, `meta.profile`, `entry`, `entry.request` or
  `entry.fullUrl` is of another JSON type (FHIR R4 json.html, bundle.html): a 500, and a
  `entry: {}` answered as an empty transaction;
- ITI-65 Provide Document Bundles (IHE MHD) whose resources hold elements of another JSON
  type (`List.status: {}`, `DocumentReference.subject: "x"`, `List.identifier: 5`...): a
  500 in the ITI-65 checks and the normal form, where the structure validator names them;
- JSON null values (FHIR R4 json.html: "null values are not allowed"): `Patient.contained:
  null` was stored as sent, `securityLabel: [{"coding": null}]` was a 500.
"""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.http.conftest import FHIR_JSON, a_patient, auth
from tests.http.metadata_world import build_world, label
from tests.http.test_mhd import SUBMISSION, Mhd, fixture

FAST = settings(
    derandomize=True,
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# JSON values of every type, as a client may put any of them where FHIR expects another.
ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=6,
)


def outcome_issue(response) -> dict:
    """The first issue of the OperationOutcome answered, after checking it is one and that
    no stack trace is in it."""
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and 'File "' not in text, text
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome", outcome
    return outcome["issue"][0]


def post_json(client, token: str, path: str, body, **headers):
    return client.post(
        path, data=json.dumps(body), headers=auth(token, **{"Content-Type": FHIR_JSON, **headers})
    )


def count(client, token: str, resource_type: str = "Patient") -> int:
    response = client.get(f"/fhir/{resource_type}?_summary=count", headers=auth(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["total"]


@pytest.fixture
def world(client, tokens):
    return build_world(client, tokens)


# -- JSON Patch of the metadata: JSON types (PDSm st_maj.md, FHIR R4 http.html#patch) ---------


@pytest.mark.parametrize(
    ("operation", "where"),
    [
        ({"op": "replace", "path": "/status", "value": {"a": 1}}, "DocumentReference.status"),
        ({"op": "replace", "path": "/status", "value": ["current"]}, "DocumentReference.status"),
        (
            {"op": "add", "path": "/securityLabel/-", "value": {"coding": [{"code": []}]}},
            "DocumentReference.securityLabel[1].coding[0].code",
        ),
        (
            {"op": "add", "path": "/securityLabel/-", "value": {"coding": [{"system": {}}]}},
            "DocumentReference.securityLabel[1].coding[0].system",
        ),
        (
            {"op": "add", "path": "/securityLabel/-", "value": {"coding": "MASQUE_PS"}},
            "DocumentReference.securityLabel[1].coding",
        ),
    ],
    ids=["status-object", "status-list", "code-list", "system-object", "coding-string"],
)
def test_http_patch_json_patch_of_a_wrong_json_type_is_400_naming_it_document_unchanged(
    world, operation, where
):
    document = world.deposit("N")
    response = world.patch("author", document["id"], [operation])
    assert response.status_code == 400, response.get_data(as_text=True)
    assert outcome_issue(response)["expression"] == [where]
    assert world.stored(document["id"])["meta"]["versionId"] == document["meta"]["versionId"]


def test_http_patch_json_patch_value_with_a_control_character_is_400_document_unchanged(world):
    """FHIR R4 datatypes.html#string: no character below U+0020 but tab, CR and LF. A JSON
    body holding one escaped is refused (`input_limits.check_json_characters`); a JSON
    Patch body was read apart and its value stored, after which every XML answer holding
    the document was a 500."""
    document = world.deposit("N")
    operation = {"op": "add", "path": "/description", "value": "bon\u0001jour"}
    response = world.patch("author", document["id"], [operation])
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "control character" in outcome_issue(response)["diagnostics"]
    assert world.stored(document["id"])["meta"]["versionId"] == document["meta"]["versionId"]


@FAST
@given(value=ANY_JSON)
def test_http_patch_any_json_value_in_status_or_a_label_is_never_a_500(world_once, value):
    world, document = world_once
    for operation in (
        {"op": "replace", "path": "/status", "value": value},
        {"op": "add", "path": "/securityLabel/-", "value": {"coding": [{"code": value}]}},
    ):
        response = world.patch("author", document["id"], [operation])
        assert response.status_code < 500, response.get_data(as_text=True)


@pytest.fixture
def world_once(client, tokens):
    world = build_world(client, tokens)
    return world, world.deposit("N")


# -- conditional criteria that select nothing (FHIR R4 http.html#cond-update, #cpatch) --------


UNSELECTIVE = ["_count=1", "_elements=id", "_sort=_lastUpdated", "_summary=true", "identifier="]


@pytest.mark.parametrize("criteria", UNSELECTIVE)
def test_conditional_patch_without_a_search_parameter_is_400_document_unchanged(world, criteria):
    document = world.deposit("N")
    response = world.patch(
        "author", f"?{criteria}", [{"op": "add", "path": "/securityLabel/-", "value": label("R")}]
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "hold no search parameter" in outcome_issue(response)["diagnostics"]
    assert world.stored(document["id"])["meta"]["versionId"] == "1"


@pytest.mark.parametrize("criteria", UNSELECTIVE)
def test_conditional_update_without_a_search_parameter_is_400_patient_unchanged(
    client, tokens, criteria
):
    system = tokens.system()
    created = post_json(client, system, "/fhir/Patient", a_patient(1))
    assert created.status_code == 201
    response = client.put(
        f"/fhir/Patient?{criteria}",
        data=json.dumps(a_patient(1, gender="male")),
        headers=auth(system, **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert "hold no search parameter" in outcome_issue(response)["diagnostics"]
    stored = client.get(f"/fhir/Patient/{created.get_json()['id']}", headers=auth(system))
    assert stored.get_json()["gender"] == "female"
    assert stored.get_json()["meta"]["versionId"] == "1"


@pytest.mark.parametrize("criteria", UNSELECTIVE)
def test_conditional_create_if_none_exist_without_a_search_parameter_is_400_nothing_created(
    client, tokens, criteria
):
    system = tokens.system()
    assert post_json(client, system, "/fhir/Patient", a_patient(1)).status_code == 201
    response = post_json(
        client, system, "/fhir/Patient", a_patient(2), **{"If-None-Exist": criteria}
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert count(client, system) == 1


@pytest.mark.parametrize("criteria", ["_count=1", "_sort=_id", "identifier="])
def test_transaction_conditional_reference_without_a_search_parameter_is_400(
    client, tokens, criteria
):
    system = tokens.system()
    assert post_json(client, system, "/fhir/Patient", a_patient(1)).status_code == 201
    linked = a_patient(2, link=[{"other": {"reference": f"Patient?{criteria}"}, "type": "seealso"}])
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": linked, "request": {"method": "POST", "url": "Patient"}}],
    }
    response = post_json(client, system, "/fhir", bundle)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert count(client, system) == 1


@pytest.mark.parametrize(
    ("criteria", "status"),
    [("_count=1", 400), ("identifier=urn:oid:1.2.250.1.213.1.4.8|000000000000000", 412)],
)
def test_transaction_conditional_reference_refused_names_the_entry_holding_it(
    client, tokens, criteria, status
):
    """FHIR R4 transaction (3.1.0.11.2): a conditional reference that selects nothing, or
    finds no resource, fails the transaction; the OperationOutcome says which entry holds
    it (the second here), as every other refusal of an entry does."""
    system = tokens.system()
    linked = a_patient(2, link=[{"other": {"reference": f"Patient?{criteria}"}, "type": "seealso"}])
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": a_patient(1), "request": {"method": "POST", "url": "Patient"}},
            {"resource": linked, "request": {"method": "POST", "url": "Patient"}},
        ],
    }
    response = post_json(client, system, "/fhir", bundle)
    assert response.status_code == status, response.get_data(as_text=True)
    issue = outcome_issue(response)
    assert issue["diagnostics"].startswith("Bundle.entry[1]"), issue
    assert issue["expression"][0] == "Bundle.entry[1]", issue
    assert count(client, system) == 0


def test_resource_failing_on_thousands_of_elements_lists_the_first_hundred_and_counts_the_rest(
    client, tokens
):
    """An OperationOutcome lists at most 100 issues, then one saying how many more there
    are: a Patient of 2,000 names each of a wrong type (90 KB) failed on every one and
    listed them all (a 127 KB DocumentReference of 2,000 bad `context.related` answered
    0.8 MB). The first issues are still the elements, each by its path; nothing stored."""
    system = tokens.system()
    patient = a_patient(1, name=[{"family": 5}] * 2_000)
    response = post_json(client, system, "/fhir/Patient", patient)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    issues = response.get_json()["issue"]
    assert len(issues) == 101, len(issues)
    assert issues[0]["expression"][0].startswith("Patient.name[0]"), issues[0]
    assert issues[-1]["severity"] == "information"
    hidden = int(issues[-1]["diagnostics"].split()[0])
    assert hidden >= 1_900, issues[-1]
    assert count(client, system) == 0


# -- a transaction's own structure (FHIR R4 bundle.html, json.html) ---------------------------


def a_transaction(**changes) -> dict:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": a_patient(5), "request": {"method": "POST", "url": "Patient"}}],
    }
    bundle.update(changes)
    return bundle


def with_entry(**changes) -> dict:
    bundle = a_transaction()
    bundle["entry"][0].update(changes)
    return bundle


@pytest.mark.parametrize(
    ("bundle", "where"),
    [
        (a_transaction(meta=5), "Bundle.meta"),
        (a_transaction(meta=["x"]), "Bundle.meta"),
        (a_transaction(meta={"profile": 5}), "Bundle.meta.profile"),
        (a_transaction(meta={"profile": [{}]}), "Bundle.meta.profile"),
        (a_transaction(entry=5), "Bundle.entry"),
        (a_transaction(entry={}), "Bundle.entry"),
        (a_transaction(entry=True), "Bundle.entry"),
        (with_entry(request="POST"), "Bundle.entry[0].request"),
        (with_entry(request=["POST"]), "Bundle.entry[0].request"),
        (with_entry(fullUrl=["urn:uuid:x"]), "Bundle.entry[0].fullUrl"),
        (with_entry(fullUrl={"a": 1}), "Bundle.entry[0].fullUrl"),
    ],
    ids=[
        "meta-number",
        "meta-list",
        "profile-number",
        "profile-object",
        "entry-number",
        "entry-object",
        "entry-boolean",
        "request-string",
        "request-list",
        "fullUrl-list",
        "fullUrl-object",
    ],
)
def test_transaction_of_a_wrong_json_type_is_400_naming_it_nothing_stored(
    client, tokens, bundle, where
):
    system = tokens.system()
    response = post_json(client, system, "/fhir", bundle)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert outcome_issue(response)["expression"] == [where]
    assert count(client, system) == 0


@FAST
@given(field=st.sampled_from(["meta", "entry", "request", "fullUrl", "resource"]), value=ANY_JSON)
def test_transaction_any_json_value_in_its_structure_is_never_a_500(client, tokens, field, value):
    bundle = (
        a_transaction(**{field: value})
        if field in ("meta", "entry")
        else with_entry(**{field: value})
    )
    response = post_json(client, tokens.system(), "/fhir", bundle)
    assert response.status_code < 500, response.get_data(as_text=True)


# -- ITI-65 Provide Document Bundle: resources of other JSON types (IHE MHD, json.html) -------


ITI65_MUTATIONS = [
    ((0, "status"), {}),
    ((0, "status"), []),
    ((0, "mode"), {}),
    ((0, "meta"), 5),
    ((0, "code"), 5),
    ((0, "identifier"), 5),
    ((0, "entry"), True),
    ((1, "subject"), "x"),
    ((1, "status"), {}),
    ((1, "securityLabel"), 5),
    ((1, "content"), True),
]


@pytest.mark.parametrize(
    ("where", "value"), ITI65_MUTATIONS, ids=[f"entry{i}-{k}" for (i, k), _ in ITI65_MUTATIONS]
)
def test_iti65_resource_element_of_a_wrong_json_type_is_4xx_naming_the_entry_nothing_stored(
    client, tokens, where, value
):
    mhd = Mhd(client, tokens)
    patient_id, nir = mhd.patient(1)
    bundle = fixture(SUBMISSION, nir)
    index, element = where
    bundle["entry"][index]["resource"][element] = value
    response = mhd.provide(bundle)
    assert response.status_code in (400, 422), response.get_data(as_text=True)
    issue = outcome_issue(response)
    assert issue["expression"][0].startswith(f"Bundle.entry[{index}]"), issue
    stored = mhd.search("DocumentReference", {"patient": patient_id, "_summary": "count"})
    assert stored["total"] == 0


# -- JSON null (FHIR R4 json.html: "null values are not allowed") -----------------------------


@pytest.mark.parametrize(
    ("element", "value", "where"),
    [
        ("contained", None, "Patient.contained"),
        ("name", None, "Patient.name"),
        ("identifier", [{"system": None, "value": "x"}], "Patient.identifier[0].system"),
        ("address", [None], "Patient.address[0]"),
    ],
)
def test_json_null_in_a_resource_is_400_naming_it_nothing_stored(
    client, tokens, element, value, where
):
    system = tokens.system()
    response = post_json(client, system, "/fhir/Patient", {**a_patient(1), element: value})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert outcome_issue(response)["expression"] == [where]
    assert count(client, system) == 0


def test_json_null_in_a_document_label_is_400_not_500(world):
    document = world.document("N")
    document["securityLabel"] = [{"coding": None}]
    response = world.post(world.token("author"), document)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert outcome_issue(response)["expression"] == ["DocumentReference.securityLabel[0].coding"]


def test_json_null_in_a_primitive_array_beside_its_extensions_is_accepted(client, tokens):
    """json.html: in a primitive array, null stands for a value that only has extensions."""
    patient = copy.deepcopy(a_patient(1))
    patient["name"][0]["given"] = ["Marie", None]
    patient["name"][0]["_given"] = [
        None,
        {"extension": [{"url": "http://example.org/e", "valueString": "x"}]},
    ]
    response = post_json(client, tokens.system(), "/fhir/Patient", patient)
    assert response.status_code == 201, response.get_data(as_text=True)


def test_required_code_of_a_wrong_json_type_in_validate_is_400_not_500(client, tokens):
    """A code given as an object where the served type lists its allowed codes (List.status):
    the model names it, and the allowed-codes check no longer fails on it."""
    body = {
        "resourceType": "List",
        "status": {"a": 1},
        "mode": "working",
        "subject": {"reference": "Patient/x"},
    }
    response = post_json(client, tokens.system(), "/fhir/List/$validate", body)
    assert response.status_code < 500, response.get_data(as_text=True)
    assert "List.status" in json.dumps(response.get_json())


# -- the public documents of /fhir are read only (FHIR R4 http.html#capabilities, SMART) ------


PUBLIC_DOCUMENTS = ["/fhir/metadata", "/fhir/.well-known/smart-configuration"]


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
@pytest.mark.parametrize(
    "path", [*PUBLIC_DOCUMENTS, "/fhir/metadata?mode=terminology", "/fhir/metadata/x"]
)
def test_write_at_a_public_document_without_a_token_is_401_not_500(client, method, path):
    response = client.open(path, method=method, data=b"{}", headers={"Content-Type": FHIR_JSON})
    assert response.status_code == 401, response.get_data(as_text=True)
    assert outcome_issue(response)["code"] == "login"


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE"])
@pytest.mark.parametrize("path", PUBLIC_DOCUMENTS)
def test_write_at_a_public_document_with_a_token_is_4xx_not_500(client, tokens, method, path):
    response = client.open(
        path,
        method=method,
        data=b"{}",
        headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON}),
    )
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    outcome_issue(response)


@pytest.mark.parametrize("path", [*PUBLIC_DOCUMENTS, "/fhir/metadata?mode=terminology"])
def test_public_documents_are_still_read_without_a_token(client, path):
    assert client.get(path).status_code == 200


# -- ITI-41 MTOM: a MIME part's headers given twice (RFC 2045, IHE ITI TF-2x V.3.6) ----------


@pytest.mark.parametrize(
    ("header", "twice"),
    [
        ("Content-ID", b"Content-ID: <other@example.org>\r\nContent-ID:"),
        (
            "Content-Transfer-Encoding",
            b"Content-Transfer-Encoding: base64\r\nContent-Transfer-Encoding:",
        ),
    ],
)
def test_iti41_mime_part_with_a_header_given_twice_is_a_sender_fault_nothing_stored(
    client, tokens, data_dir, app, header, twice
):
    from tests.http.test_xds_endpoints import Xds, fault_of
    from tests.xds_builders import build_iti41

    xds = Xds(app, client, tokens, data_dir)
    _, nir = xds.patient(1)
    request = build_iti41(nir=nir, security=xds.security(nir=nir), mtom=True)
    body = request.body.replace(f"{header}:".encode(), twice)
    assert body != request.body
    response = client.post(
        "/xds/repository", data=body, headers={"Content-Type": request.content_type}
    )
    assert response.status_code == 400, response.get_data()[:2000]
    code, reason = fault_of(response)
    assert code == "soap:Sender" or code.endswith(":Sender"), code
    assert header.lower() in reason.lower(), reason
    found = xds.find_documents(nir)
    assert b"ExtrinsicObject" not in found.get_data(), "nothing is registered"


# -- ITI-105 (a single POST DocumentReference): content of another JSON type (FHIR json.html) --


@pytest.mark.parametrize(
    ("element", "value"), [("content", 5), ("content", True), ("content", "x")]
)
def test_iti105_document_whose_content_is_not_a_list_is_400_naming_it(world, element, value):
    document = world.document("N")
    document[element] = value
    response = world.post(world.token("author"), document)
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = outcome_issue(response)
    assert f"DocumentReference.{element}" in json.dumps(issue), issue
    found = world.client.get(
        f"/fhir/DocumentReference?patient={world.paul}&_summary=count",
        headers=auth(world.token("author")),
    )
    assert found.get_json()["total"] == 0


# -- date, dateTime, instant, time are JSON strings (FHIR R4 json.html, datatypes.html) -------


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"date": 5}, "DocumentReference.date"),
        ({"date": 1.5}, "DocumentReference.date"),
        ({"context": {"period": {"start": 5}}}, "DocumentReference.context.period.start"),
        ({"context": {"period": {"end": -1}}}, "DocumentReference.context.period.end"),
    ],
    ids=["date-int", "date-float", "period-start", "period-end"],
)
def test_document_date_given_as_a_number_is_400_naming_it_nothing_stored(world, change, where):
    document = world.document("N")
    document.update(change)
    response = world.post(world.token("author"), document)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert outcome_issue(response)["expression"] == [where]
    found = world.client.get(
        f"/fhir/DocumentReference?patient={world.paul}&_summary=count",
        headers=auth(world.token("author")),
    )
    assert found.get_json()["total"] == 0


def test_patient_datetime_given_as_a_number_is_400_naming_it(client, tokens):
    system = tokens.system()
    response = post_json(client, system, "/fhir/Patient", {**a_patient(1), "deceasedDateTime": 5})
    assert response.status_code == 400, response.get_data(as_text=True)
    assert outcome_issue(response)["expression"] == ["Patient.deceasedDateTime"]
    assert count(client, system) == 0
