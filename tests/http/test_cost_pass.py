"""Cost pass: a small request must not make the server do a large amount of work; what
would is refused with a 4xx naming the limit (docs/performance.md, "Cost limits
(2026-12-07)"). The tests assert the refusal, never a time.

What the pass found, each checked here:
- a JSON Patch of many operations (FHIR R4 http.html#patch, RFC 6902): each one was applied
  to a fresh copy of the resource the earlier ones had grown, so 1,000 `add`s of a
  securityLabel in a 190 KB body took 2.2 s (quadratic in the count). Now at most
  MAX_PATCH_OPERATIONS operations, applied on one copy;
- a JSON Patch whose `copy` operations copy an array into itself: each doubles it, so
  fourteen operations in a 1 KB body made 16,384 copies of the document's content (0.47 s),
  twenty a million (memory). Now the copies may copy MAX_PATCH_COPIED_BYTES together;
- a FHIRPath Patch (fhirpatch.html) of many operations: the same operation limit;
- a batch Bundle of many searches (FHIR R4 http.html#transaction): 500 searches of a
  200-document record in a 50 KB body were 3.8 s and a 192 MB answer; now at most
  MAX_BUNDLE_SEARCHES entries that are not a plain read;
- the search extraction's `resolve()` of `#id` references (every write indexes the
  resource): each reference scanned the contained resources, so a DocumentReference of
  1,000 contained authors cost a million comparisons (0.61 s for a 100 KB body, 4x for 2x
  the authors); now the contained resources are indexed by id once per resolve;
- a POST `_search` form (FHIR R4 http.html#search): a GET's query is bounded by gunicorn's
  request line (8,190 bytes), the form only by the body limit (32 MB by default): 1.1
  million fields took 1.1 s to parse before MAX_PARAMETERS refused them, an 8 MB value was
  searched and echoed in an 8 MB answer; now at most MAX_SEARCH_FORM_BYTES;
- XDS extra metadata (ITI TF-3 4.1.14): each extra Slot of an ITI-41 DocumentEntry becomes
  an xds-extra-metadata extension, whose invariant dmp-xds-extra-1 fhirpathpy evaluated at
  about 1 ms each (1,000 Slots in 107 KB: 0.93 s); now a Python invariant, and at most
  MAX_EXTRA_METADATA of them on one DocumentReference or List (ITI-41, ITI-65 and REST);
  fhirpathpy also raised (a 500) on an extension of two `name`s, now refused;
- a batch or transaction Bundle of many entries: 1,000 reads were 1.5 s, and the default
  body limit (32 MB) holds hundreds of thousands; now at most MAX_BUNDLE_ENTRIES entries.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.resources.patch import MAX_PATCH_COPIED_BYTES, MAX_PATCH_OPERATIONS
from fhir_server.resources.profiles.invariants import MAX_EXTRA_METADATA
from fhir_server.rest.fhir_api import MAX_SEARCH_FORM_BYTES
from fhir_server.search.fhirpath import compile_expression
from fhir_server.service.bundles import MAX_BUNDLE_ENTRIES, MAX_BUNDLE_SEARCHES
from tests.http.conftest import FHIR_JSON, auth
from tests.http.metadata_world import build_world, fhirpath_patch, label


@pytest.fixture
def world(client, tokens):
    return build_world(client, tokens)


def too_costly(response, limit_name: str, limit: int) -> dict:
    """The OperationOutcome of a refusal for cost: a 400 `too-costly` naming the limit."""
    assert response.status_code == 400, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "too-costly", issue
    assert limit_name in issue["diagnostics"] and str(limit) in issue["diagnostics"], issue
    return issue


def unchanged(world, document: dict) -> None:
    """Nothing was written: the document is still at the version it was deposited as."""
    assert world.stored(document["id"])["meta"]["versionId"] == document["meta"]["versionId"]


# -- PATCH: operation count (FHIR R4 http.html#patch) -------------------------------------------


def test_json_patch_of_more_operations_than_the_limit_is_refused_before_any_is_applied(world):
    document = world.deposit()
    operations = [{"op": "add", "path": "/securityLabel/-", "value": label("N")}] * (
        MAX_PATCH_OPERATIONS + 1
    )
    response = world.patch("author", document["id"], operations)
    too_costly(response, "MAX_PATCH_OPERATIONS", MAX_PATCH_OPERATIONS)
    unchanged(world, document)


def test_json_patch_at_the_operation_limit_is_still_applied(world):
    document = world.deposit()
    operations = [{"op": "test", "path": "/id", "value": document["id"]}] * (
        MAX_PATCH_OPERATIONS - 1
    ) + [{"op": "add", "path": "/securityLabel/-", "value": label("N")}]
    response = world.patch("author", document["id"], operations)
    assert response.status_code == 200, response.get_data(as_text=True)


def test_fhirpath_patch_of_more_operations_than_the_limit_is_refused(world):
    document = world.deposit()
    body = fhirpath_patch(
        *[("add", "DocumentReference", "securityLabel", {"valueCodeableConcept": label("N")})]
        * (MAX_PATCH_OPERATIONS + 1)
    )
    response = world.patch("author", document["id"], body)
    issue = too_costly(response, "MAX_PATCH_OPERATIONS", MAX_PATCH_OPERATIONS)
    assert issue["expression"] == ["Parameters.parameter"], issue
    unchanged(world, document)


def test_json_patch_in_a_transaction_bundle_has_the_same_operation_limit(world):
    import base64

    document = world.deposit()
    operations = [{"op": "test", "path": "/id", "value": document["id"]}] * (
        MAX_PATCH_OPERATIONS + 1
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {
                    "resourceType": "Binary",
                    "contentType": "application/json-patch+json",
                    "data": base64.b64encode(json.dumps(operations).encode()).decode(),
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
    too_costly(response, "MAX_PATCH_OPERATIONS", MAX_PATCH_OPERATIONS)
    unchanged(world, document)


# -- PATCH: copies that double (RFC 6902 section 4.5) -------------------------------------------


def test_json_patch_copies_doubling_an_array_are_refused_at_the_copied_bytes_limit(world):
    """Fourteen `copy`s of /content into itself: 16,384 copies of the content from a 1 KB
    body. Refused once what was copied passes MAX_PATCH_COPIED_BYTES, and not written."""
    document = world.deposit()
    operations = [{"op": "copy", "from": "/content", "path": "/content/-"}] * 14
    response = world.patch("author", document["id"], operations)
    issue = too_costly(response, "MAX_PATCH_COPIED_BYTES", MAX_PATCH_COPIED_BYTES)
    assert issue["expression"][0].startswith("JSON Patch operation "), issue
    unchanged(world, document)


def test_json_patch_copy_of_a_label_is_still_applied(world):
    document = world.deposit("N")
    operations = [{"op": "copy", "from": "/securityLabel/0", "path": "/securityLabel/-"}]
    response = world.patch("author", document["id"], operations)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["securityLabel"] == [label("N")]  # a repeated label is one


# -- batch and transaction Bundles (FHIR R4 http.html#transaction) -----------------------------


def post_bundle(world, bundle_type: str, requests: list[dict], actor: str = "author"):
    bundle = {
        "resourceType": "Bundle",
        "type": bundle_type,
        "entry": [{"request": request} for request in requests],
    }
    return world.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(world.token(actor), **{"Content-Type": FHIR_JSON}),
    )


def record_search(world) -> dict:
    return {"method": "GET", "url": f"DocumentReference?patient={world.paul}&_count=1000"}


@pytest.mark.parametrize("bundle_type", ["batch", "transaction"])
def test_bundle_of_more_searches_than_the_limit_is_refused_whole(world, bundle_type):
    world.deposit()
    response = post_bundle(world, bundle_type, [record_search(world)] * (MAX_BUNDLE_SEARCHES + 1))
    issue = too_costly(response, "MAX_BUNDLE_SEARCHES", MAX_BUNDLE_SEARCHES)
    assert issue["expression"] == [f"Bundle.entry[{MAX_BUNDLE_SEARCHES}].request.url"], issue


def test_histories_and_operations_in_a_batch_count_as_searches(world):
    """What is not a plain read of Type/id counts (fail closed): a history answers pages too."""
    document = world.deposit()
    history = {"method": "GET", "url": f"DocumentReference/{document['id']}/_history"}
    response = post_bundle(world, "batch", [history] * (MAX_BUNDLE_SEARCHES + 1))
    too_costly(response, "MAX_BUNDLE_SEARCHES", MAX_BUNDLE_SEARCHES)


def test_batch_at_the_search_limit_with_reads_beside_is_still_answered(world):
    document = world.deposit()
    read = {"method": "GET", "url": f"DocumentReference/{document['id']}"}
    response = post_bundle(
        world, "batch", [record_search(world)] * MAX_BUNDLE_SEARCHES + [read] * 20
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    entries = response.get_json()["entry"]
    assert [e["response"]["status"][:3] for e in entries] == ["200"] * (MAX_BUNDLE_SEARCHES + 20)
    assert entries[0]["resource"]["total"] == 1


@pytest.mark.parametrize("bundle_type", ["batch", "transaction"])
def test_bundle_of_more_entries_than_the_limit_is_refused_before_any_is_performed(
    world, bundle_type
):
    document = world.deposit()
    read = {"method": "GET", "url": f"DocumentReference/{document['id']}"}
    response = post_bundle(world, bundle_type, [read] * (MAX_BUNDLE_ENTRIES + 1))
    issue = too_costly(response, "MAX_BUNDLE_ENTRIES", MAX_BUNDLE_ENTRIES)
    assert issue["expression"] == ["Bundle.entry"], issue


# -- the search extraction's resolve() of contained resources (FHIR R4 references.html#contained)


class CountingList(list):
    """A list that counts the items read by iterating it."""

    read = 0

    def __iter__(self):
        for item in super().__iter__():
            CountingList.read += 1
            yield item


def test_resolving_contained_references_reads_each_contained_resource_once_per_resolve():
    """`DocumentReference.author.where(resolve() is Practitioner)` (the author search
    parameter) on 1,000 `#id` authors: the contained resources are read once, not once per
    reference (a million reads before)."""
    authors = 1000
    resource = {
        "resourceType": "DocumentReference",
        "contained": CountingList(
            {"resourceType": "Practitioner", "id": f"p{i}"} for i in range(authors)
        ),
        "author": [{"reference": f"#p{i}"} for i in range(authors)],
    }
    CountingList.read = 0
    found = compile_expression("DocumentReference.author.where(resolve() is Practitioner)")(
        resource
    )
    assert len(found) == authors
    assert CountingList.read <= 2 * authors, CountingList.read


# -- POST _search form (FHIR R4 http.html#search) -------------------------------------------


def search_form(world, body: str):
    return world.client.post(
        "/fhir/Patient/_search",
        data=body,
        headers=auth(
            world.tokens.system(), **{"Content-Type": "application/x-www-form-urlencoded"}
        ),
    )


def test_post_search_form_over_the_limit_is_refused_before_it_is_parsed(world):
    body = "&".join(["name=x"] * (MAX_SEARCH_FORM_BYTES // 7 + 1))
    assert len(body) > MAX_SEARCH_FORM_BYTES
    response = search_form(world, body)
    assert response.status_code == 413, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "too-costly", issue
    assert "MAX_SEARCH_FORM_BYTES" in issue["diagnostics"], issue
    assert str(MAX_SEARCH_FORM_BYTES) in issue["diagnostics"], issue


def test_post_search_form_of_a_long_value_under_the_limit_is_still_searched(world):
    body = "identifier=urn:oid:1.2.3|" + "9" * (MAX_SEARCH_FORM_BYTES - 100)
    response = search_form(world, body)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.get_json()["total"] == 0


# -- XDS extra metadata (ITI TF-3 4.1.14) ---------------------------------------------------


def test_iti41_entry_of_more_extra_metadata_slots_than_the_limit_is_refused(tmp_path):
    import copy as copying

    from lxml import etree

    from ihe_xds import vocabulary as v
    from tests.http.test_xds_fuzz import NIR, Target, serialize
    from tests.xds_builders import build_iti41

    target = Target(tmp_path)
    try:
        request = build_iti41(nir=NIR, mtom=False, security=copying.deepcopy(target.security))
        envelope = etree.fromstring(request.envelope)
        entry = envelope.find(f".//{{{v.NS_RIM}}}ExtrinsicObject")
        for index in range(MAX_EXTRA_METADATA + 1):
            slot = etree.Element(f"{{{v.NS_RIM}}}Slot", name=f"urn:example:extra:{index}")
            values = etree.SubElement(slot, f"{{{v.NS_RIM}}}ValueList")
            etree.SubElement(values, f"{{{v.NS_RIM}}}Value").text = "x"
            entry.insert(0, slot)
        response = target.client.post(
            "/xds/repository",
            data=serialize(envelope),
            headers={"Content-Type": "application/soap+xml; charset=UTF-8"},
        )
        answer = response.get_data(as_text=True)
        assert "ResponseStatusType:Failure" in answer, answer[-600:]
        assert "MAX_EXTRA_METADATA" in answer and str(MAX_EXTRA_METADATA) in answer, answer[-600:]
    finally:
        target.close()


def test_document_reference_of_more_extra_metadata_extensions_than_the_limit_is_refused(world):
    from ihe_xds.extra_metadata import EXT_EXTRA_METADATA

    document = world.document()
    document["extension"] = document.get("extension", []) + [
        {
            "url": EXT_EXTRA_METADATA,
            "extension": [
                {"url": "name", "valueUri": f"urn:example:extra:{index}"},
                {"url": "value", "valueString": "x"},
            ],
        }
        for index in range(MAX_EXTRA_METADATA + 1)
    ]
    response = world.post(world.token("author"), document)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    diagnostics = " ".join(i["diagnostics"] for i in response.get_json()["issue"])
    assert "MAX_EXTRA_METADATA" in diagnostics and str(MAX_EXTRA_METADATA) in diagnostics


def test_extra_metadata_extension_of_two_names_is_refused_not_a_500(world):
    from ihe_xds.extra_metadata import EXT_EXTRA_METADATA

    document = world.document()
    document["extension"] = document.get("extension", []) + [
        {
            "url": EXT_EXTRA_METADATA,
            "extension": [
                {"url": "name", "valueUri": "urn:example:a"},
                {"url": "name", "valueUri": "urn:example:b"},
                {"url": "value", "valueString": "x"},
            ],
        }
    ]
    response = world.post(world.token("author"), document)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    diagnostics = " ".join(i["diagnostics"] for i in response.get_json()["issue"])
    assert "dmp-xds-extra-1" in diagnostics and "exactly one name" in diagnostics, diagnostics
