"""Second cost pass: small requests that still made the server work hard, or answer a 500,
now refused with a 4xx naming the limit (docs/performance.md, "Cost limits, second pass
(2026-12-07)"). The tests assert the refusal and its message, never a time; the cost before
is in each test's docstring (one request through the Flask test client, this 2-core host).

What the pass found, each checked here:
- a PATCH body was not held to MAX_DEPTH (input_limits.py) as every other FHIR body is:
  orjson reads 1,024 levels, and a JSON Patch `value` 1,000 deep reached `copy.deepcopy`
  (a RecursionError: a 500);
- the patched resource was not held to it either: each `add` may put its value at the end
  of what the ones before added, so twenty `add`s of a value 60 deep (32 KB) made a
  resource 1,200 deep (a 500 in the normal form's walk, or in orjson and `copy.deepcopy`
  at a later `copy`); the same with FHIRPath Patch `add`s;
- a FHIR XML body's namespaces and attributes: the model library's XML reader pays with the
  square of the namespaces in scope on an element (8,000 on the root of a 198 KB Patient:
  5.7 s) and of an element's attributes (10,000: 0.22 s). Now at most MAX_XML_NAMESPACES
  and MAX_XML_ATTRIBUTES;
- an Or of many values (`type:not=x0,...,x99` nine times): one correlated subquery per
  value, whose cost per row SQLite pays with the square of their count (5 s on a record of
  200 documents). Now one subquery per index table of each Or;
- an AuditEvent search is decided in Python on each event of the patient's trail, so its
  cost is the trail times its value tests: 900 tests, 0.58 s on 502 events. Now at most
  MAX_AUDIT_EVENT_TESTS value tests;
- `_sort` of 100 keys: each is read for every match before the page is cut (0.43-0.77 s
  on a record of 1,000 documents). Now at most MAX_SORT_KEYS;
- a batch or transaction of conditional writes (ifNoneExist, criteria in a PUT, PATCH or
  DELETE url): each a search of the store, not counted as one (900 conditional DELETEs,
  123 KB: 1.9 s). Now at most MAX_BUNDLE_CONDITIONALS;
- ITI-43 (ITI TF-2b 3.43) answers every DocumentRequest with the whole document, so one
  request naming the same document many times multiplied it: 1,000 DocumentRequests
  (199 KB) took 0.44 s and answered 623 KB for a 600-byte document (a 1 MB document:
  1 GB). Now at most MAX_DOCUMENT_REQUESTS, and a document named again is refused for
  that DocumentRequest (answered once).
"""

from __future__ import annotations

import base64
import copy as copying
import json

import pytest
from lxml import etree

from fhir_server.resources.input_limits import MAX_DEPTH, MAX_XML_ATTRIBUTES, MAX_XML_NAMESPACES
from fhir_server.search.parameters import MAX_AUDIT_EVENT_TESTS, MAX_SORT_KEYS
from fhir_server.service.bundles import MAX_BUNDLE_CONDITIONALS
from ihe_xds import vocabulary as v
from ihe_xds.responses import MAX_DOCUMENT_REQUESTS
from tests.http.conftest import FHIR_JSON, auth
from tests.http.metadata_world import build_world, fhirpath_patch


@pytest.fixture
def world(client, tokens):
    return build_world(client, tokens)


def too_deep(response, what: str) -> dict:
    """A 400 `too-costly` naming MAX_DEPTH and what passed it."""
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "too-costly", issue
    assert "MAX_DEPTH" in issue["diagnostics"], issue
    assert f"{MAX_DEPTH} levels" in issue["diagnostics"], issue
    assert what in issue["diagnostics"], issue
    return issue


def unchanged(world, document: dict) -> None:
    assert world.stored(document["id"])["meta"]["versionId"] == document["meta"]["versionId"]


def nested(depth: int) -> dict:
    """An object `depth` levels deep: {"x": {"x": ... {}}}."""
    value: dict = {}
    for _ in range(depth - 1):
        value = {"x": value}
    return value


def stacking_adds(count: int, depth: int) -> list[dict]:
    """`count` JSON Patch `add`s, each putting a value `depth` deep at the bottom of the
    one before: each operation is within the depth limit, the resource they make is not."""
    return [
        {"op": "add", "path": "/content/0/z" + "/x" * ((depth - 1) * k), "value": nested(depth)}
        for k in range(count)
    ]


# -- PATCH bodies and the resources they make (FHIR R4 http.html#patch, json.html) -------------


def test_json_patch_value_nested_deeper_than_the_limit_is_refused_not_a_500(world):
    """A value of 1,000 nested arrays (2 KB body): a 500 (RecursionError in copy.deepcopy,
    0.026 s) before; orjson reads up to 1,024 levels, the other bodies stop at MAX_DEPTH."""
    document = world.deposit()
    body = b'[{"op":"add","path":"/extension","value":' + b"[" * 1000 + b"]" * 1000 + b"}]"
    response = world.client.patch(
        f"/fhir/DocumentReference/{document['id']}",
        data=body,
        headers=auth(world.token("author"), **{"Content-Type": "application/json-patch+json"}),
    )
    issue = too_deep(response, "the body")
    assert issue["expression"][0].startswith("$[0].value"), issue
    unchanged(world, document)


def test_json_patch_adds_stacking_past_the_depth_limit_are_refused_not_a_500(world):
    """Twenty `add`s of a value 60 deep, each at the bottom of the one before (32 KB): a
    resource 1,200 deep, a 500 in the normal form's walk (0.06 s) before. Refused at the
    first operation that would pass the limit."""
    document = world.deposit()
    response = world.patch("author", document["id"], stacking_adds(20, 60))
    issue = too_deep(response, "the patched resource")
    assert issue["expression"] == ["JSON Patch operation 1.path"], issue
    unchanged(world, document)


def test_json_patch_copy_of_a_subtree_past_the_depth_limit_is_refused_not_a_500(world):
    """Six stacking `add`s then a `copy` of what they made (5 KB): orjson (255 levels) and
    copy.deepcopy raised on the copy, a 500 before."""
    document = world.deposit()
    operations = stacking_adds(6, 60) + [
        {"op": "copy", "from": "/content/0/z", "path": "/content/0/w"}
    ]
    response = world.patch("author", document["id"], operations)
    too_deep(response, "the patched resource")
    unchanged(world, document)


def test_json_patch_copy_within_the_depth_limit_is_judged_as_before(world):
    """A copy that keeps the resource within the limit reaches the metadata rules (which
    refuse a change of content: a 405), not the depth limit."""
    document = world.deposit()
    operations = [
        {"op": "add", "path": "/content/0/z", "value": nested(MAX_DEPTH - 4)},
        {"op": "copy", "from": "/content/0/z", "path": "/content/0/w"},
    ]
    response = world.patch("author", document["id"], operations)
    assert response.status_code == 405, response.get_data(as_text=True)
    assert "DocumentReference.content cannot be changed" in response.get_data(as_text=True)


def test_json_patch_value_placed_one_level_past_the_limit_is_refused(world):
    document = world.deposit()
    operations = [{"op": "add", "path": "/content/0/z", "value": nested(MAX_DEPTH - 2)}]
    response = world.patch("author", document["id"], operations)
    too_deep(response, "the patched resource")


def test_fhirpath_patch_adds_stacking_past_the_depth_limit_are_refused_not_a_500(world):
    """Twenty FHIRPath Patch `add`s of a valueCodeableConcept 56 deep, each at the bottom
    of the one before (33 KB): a 500 (0.066 s) before."""
    document = world.deposit()
    deep = {"valueCodeableConcept": nested(56)}
    operations = [("add", "DocumentReference.content[0]", "z", deep)] + [
        ("add", "DocumentReference.content[0].z" + ".x" * (56 * k - 1), "x", deep)
        for k in range(1, 20)
    ]
    response = world.patch("author", document["id"], fhirpath_patch(*operations))
    too_deep(response, "the patched resource")
    unchanged(world, document)


def test_json_patch_in_a_transaction_bundle_is_held_to_the_depth_limit(world):
    """The Binary of a PATCH entry is read by the same function as a PATCH body."""
    document = world.deposit()
    operations = b'[{"op":"add","path":"/extension","value":' + b"[" * 500 + b"]" * 500 + b"}]"
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": base64.b64encode(operations).decode(),
                },
                "request": {"method": "PATCH", "url": f"DocumentReference/{document['id']}"},
            }
        ],
    }
    response = world.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(world.token("author"), **{"Content-Type": FHIR_JSON}),
    )
    too_deep(response, "the body")
    unchanged(world, document)


# -- ITI-43 DocumentRequests (ITI TF-2b 3.43.4.1) ---------------------------------------------


@pytest.fixture
def target(tmp_path):
    from tests.http.test_xds_fuzz import Target

    target = Target(tmp_path / "xds")
    yield target
    target.close()


def retrieve(target, requests: int, *, distinct: bool = False):
    """ITI-43 of `requests` DocumentRequests: the deposited document, then itself again or
    (`distinct`) unknown uniqueIds."""
    from tests.http.test_xds_fuzz import serialize

    envelope = target.iti43()
    request = envelope.find(f".//{{{v.NS_XDSB}}}RetrieveDocumentSetRequest")
    for index in range(requests - 1):
        item = copying.deepcopy(request[0])
        if distinct:
            item.find(f"{{{v.NS_XDSB}}}DocumentUniqueId").text = f"1.2.250.1.999.77.{index}"
        request.append(item)
    response = target.client.post(
        "/xds/repository",
        data=serialize(envelope),
        headers={"Content-Type": "application/soap+xml; charset=UTF-8"},
    )
    assert response.status_code == 200, response.get_data()[:400]
    return response


def documents_in(response) -> int:
    from ihe_xds.mtom import parse_http_body

    package = parse_http_body(response.headers["Content-Type"], response.get_data())
    root = etree.fromstring(package.envelope)
    return len(root.findall(f".//{{{v.NS_XDSB}}}DocumentResponse"))


def test_iti43_of_more_document_requests_than_the_limit_is_refused_whole(target):
    """1,000 DocumentRequests naming the same document (199 KB): 0.44 s and a 623 KB
    answer, each request answered with the whole document. Refused before any is read."""
    response = retrieve(target, MAX_DOCUMENT_REQUESTS + 1)
    answer = response.get_data(as_text=True)
    assert "ResponseStatusType:Failure" in answer, answer[-800:]
    assert "XDSRepositoryMetadataError" in answer, answer[-800:]
    assert "MAX_DOCUMENT_REQUESTS" in answer and str(MAX_DOCUMENT_REQUESTS) in answer
    assert documents_in(response) == 0


def test_iti43_at_the_document_request_limit_is_still_answered(target):
    """100 DocumentRequests, the document once and 99 unknown ones: a PartialSuccess."""
    response = retrieve(target, MAX_DOCUMENT_REQUESTS, distinct=True)
    answer = response.get_data(as_text=True)
    assert "ResponseStatusType:PartialSuccess" in answer, answer[-800:]
    assert answer.count("XDSDocumentUniqueIdError") == MAX_DOCUMENT_REQUESTS - 1
    assert documents_in(response) == 1


def test_iti43_document_requested_twice_is_answered_once(target):
    """The same document named 100 times (24 KB) was answered 100 times (0.047 s, 63 KB for
    a 600-byte document; a 1 MB document: 100 MB). The repeats are refused each, the
    first answered."""
    response = retrieve(target, 3)
    answer = response.get_data(as_text=True)
    assert "ResponseStatusType:PartialSuccess" in answer, answer[-800:]
    assert answer.count("repeats an earlier DocumentRequest") == 2, answer[-800:]
    assert documents_in(response) == 1


# -- one subquery per Or of the same index (FHIR R4 search.html#escaping: `a=x,y`) -------------


def test_an_or_of_many_values_is_one_subquery_per_index_table():
    """`type:not=x0,...,x99` nine times: 900 correlated subqueries in one statement, whose
    cost per row SQLite pays with the square of their count (5.0-5.7 s on a record of 200
    documents for a 3.6 KB query). Compiled now as one subquery per index table of each Or
    (0.15 s). The MongoDB translation is unchanged (mongomock: 8-11 s, a test double's
    cost, not MongoDB's)."""
    from fhir_server.search.query import Not, Or, ReferenceTest, TokenTest
    from fhir_server.store.sqlite_search import _Sql, compile_where

    values = Or(tuple(TokenTest("type", None, f"x{i}", any_system=True) for i in range(100)))
    for correlated in (False, True):
        where = compile_where(_Sql(), Not(values), "r", "DocumentReference", correlated=correlated)
        assert where.count("FROM ix_token") == 1, where[:400]
    mixed = Or((*values.parts, ReferenceTest("related", "DocumentReference", "d1")))
    where = compile_where(_Sql(), mixed, "r", "DocumentReference", correlated=True)
    assert where.count("FROM ix_token") == 1 and where.count("FROM ix_reference") == 1


def test_a_search_of_many_or_values_answers_as_each_value_alone(world):
    """The merged Or matches what its values match: the document's own type among 99
    others finds it, `:not` of them leaves it out, nine times over."""
    document = world.deposit()
    coding = document["type"]["coding"][0]
    others = [f"x{i}" for i in range(99)]
    own = ",".join([*others, f"{coding['system']}|{coding['code']}"])

    def total(query: str) -> int:
        response = world.client.get(
            f"/fhir/DocumentReference?patient={world.paul}&{query}",
            headers=auth(world.token("author")),
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()["total"]

    assert total("&".join([f"type={own}"] * 9)) == 1
    assert total("&".join([f"type:not={own}"] * 9)) == 0
    assert total("&".join([f"type:not={','.join(others)}"] * 9)) == 1
    assert total("&".join([f"type={','.join(others)}"] * 9)) == 0


# -- FHIR XML bodies (FHIR R4 xml.html) -------------------------------------------------------


def post_xml(world, body: str):
    return world.client.post(
        "/fhir/Patient",
        data=body.encode(),
        headers=auth(world.tokens.system(), **{"Content-Type": "application/fhir+xml"}),
    )


PATIENT_XML = (
    '<Patient xmlns="http://hl7.org/fhir"{}><name><family value="Durand"/></name></Patient>'
)


def too_broad(response, limit_name: str, limit: int) -> dict:
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "too-costly", issue
    assert limit_name in issue["diagnostics"] and str(limit) in issue["diagnostics"], issue
    assert issue["expression"] == ["Patient"], issue
    return issue


def test_xml_element_of_more_namespaces_than_the_limit_is_refused_before_the_model_reads_it(
    world,
):
    """8,000 namespace declarations on the root of a 198 KB Patient: 5.7 s in the model
    library's XML reader (4,000: 1.2 s; the square of the count). Refused after lxml's
    parse (3 ms)."""
    declarations = "".join(f' xmlns:n{i}="urn:example:{i}"' for i in range(MAX_XML_NAMESPACES))
    too_broad(post_xml(world, PATIENT_XML.format(declarations)), "MAX_XML_NAMESPACES", 32)


def test_xml_element_of_more_attributes_than_the_limit_is_refused(world):
    """10,000 attributes on the root (99 KB): 0.22 s (3,000: 0.02 s)."""
    attributes = "".join(f' a{i}="1"' for i in range(MAX_XML_ATTRIBUTES + 1))
    too_broad(post_xml(world, PATIENT_XML.format(attributes)), "MAX_XML_ATTRIBUTES", 64)


def test_xml_body_of_many_elements_and_repeated_declarations_is_still_read(world):
    """What the limits leave alone: the same namespace declared on 500 elements, and 500
    elements of one attribute each (the walk looks at each element's own scope)."""
    names = '<name xmlns="http://hl7.org/fhir"><family value="Durand"/></name>' * 500
    response = post_xml(world, f'<Patient xmlns="http://hl7.org/fhir">{names}</Patient>')
    assert response.status_code == 422, response.get_data(as_text=True)  # no INS: read, judged
    assert "dmp-ins-required" in response.get_data(as_text=True)


# -- AuditEvent searches, decided in Python on each event (R16) --------------------------------


def audit_search(world, query: str):
    return world.client.get(
        f"/fhir/AuditEvent?patient={world.paul}&{query}", headers=auth(world.token("patient"))
    )


def test_audit_event_search_of_more_value_tests_than_the_limit_is_refused(world):
    """Nine `action` of 95 unknown codes and the five real ones (3.5 KB): each event of the
    trail decided on 900 tests, 0.58 s on a trail of 502 events (1.3 ms an event, against
    0.03 ms for one test), growing with the trail."""
    world.deposit()
    codes = ",".join([f"x{i}" for i in range(95)] + ["C", "R", "U", "D", "E"])
    response = audit_search(world, "&".join([f"action={codes}"] * 9))
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "too-costly", issue
    assert "MAX_AUDIT_EVENT_TESTS" in issue["diagnostics"], issue
    assert str(MAX_AUDIT_EVENT_TESTS) in issue["diagnostics"], issue


def test_audit_event_search_of_one_parameter_of_the_most_values_is_still_answered(world):
    world.deposit()
    codes = ",".join([f"x{i}" for i in range(95)] + ["C", "R", "U", "D", "E"])
    response = audit_search(world, f"action={codes}")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["entry"], response.get_json()


def test_the_audit_event_limit_leaves_other_searches_at_the_general_one(world):
    world.deposit()
    others = ",".join(f"x{i}" for i in range(100))
    response = world.client.get(
        f"/fhir/DocumentReference?patient={world.paul}&" + "&".join([f"type={others}"] * 3),
        headers=auth(world.token("author")),
    )
    assert response.status_code == 200, response.get_data(as_text=True)


# -- _sort keys (FHIR R4 search.html#sort) ----------------------------------------------------


def test_sort_of_more_keys_than_the_limit_is_refused(world):
    """`_sort=date,date,...` (100 keys, 584 bytes): 0.43 s on a record of 1,000 documents
    (five keys twenty times: 0.77 s; ten distinct keys: 0.03 s); each key is read for every
    match before the page is cut."""
    world.deposit()
    response = world.client.get(
        f"/fhir/DocumentReference?patient={world.paul}&_sort=" + ",".join(["date"] * 100),
        headers=auth(world.token("author")),
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "too-costly", issue
    assert "MAX_SORT_KEYS" in issue["diagnostics"] and str(MAX_SORT_KEYS) in issue["diagnostics"]


def test_sort_at_the_key_limit_is_still_answered(world):
    document = world.deposit()
    keys = ["date", "-creation", "description", "-_lastUpdated", "type", "category", "status"]
    keys += ["period", "-identifier", "_id"]
    assert len(keys) == MAX_SORT_KEYS
    response = world.client.get(
        f"/fhir/DocumentReference?patient={world.paul}&_sort=" + ",".join(keys),
        headers=auth(world.token("author")),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [e["resource"]["id"] for e in response.get_json()["entry"]] == [document["id"]]


# -- conditional entries of a Bundle (FHIR R4 http.html#transaction, #cond-update) -------------


def conditional_deletes(world, count: int) -> dict:
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "request": {
                    "method": "DELETE",
                    "url": f"DocumentReference?patient={world.paul}"
                    f"&identifier=urn:oid:1.2.250.1.999.88|{index}",
                }
            }
            for index in range(count)
        ],
    }


def test_bundle_of_more_conditional_entries_than_the_limit_is_refused_whole(world):
    """900 conditional DELETEs (123 KB): 1.9 s, a search of the record each (a transaction
    of them 2.1 s); they were not counted with the searches (MAX_BUNDLE_SEARCHES), each
    answering one resource."""
    document = world.deposit()
    response = world.client.post(
        "/fhir",
        data=json.dumps(conditional_deletes(world, MAX_BUNDLE_CONDITIONALS + 1)),
        headers=auth(world.token("author"), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "too-costly", issue
    assert "MAX_BUNDLE_CONDITIONALS" in issue["diagnostics"], issue
    assert str(MAX_BUNDLE_CONDITIONALS) in issue["diagnostics"], issue
    assert issue["expression"] == [f"Bundle.entry[{MAX_BUNDLE_CONDITIONALS}].request"], issue
    unchanged(world, document)


def test_bundle_at_the_conditional_entry_limit_is_still_performed(world):
    response = world.client.post(
        "/fhir",
        data=json.dumps(conditional_deletes(world, MAX_BUNDLE_CONDITIONALS)),
        headers=auth(world.token("author"), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    statuses = {e["response"]["status"][:3] for e in response.get_json()["entry"]}
    assert statuses == {"204"}, statuses
