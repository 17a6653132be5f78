"""Attack pass on the Bundle doors: transaction and batch POSTed to the base, the ITI-65
Provide Document Bundle, the ITI-41 mapping (FHIR R4 http.html#transaction, IHE MHD ITI-65,
access rules R04, R14, R16, R18).

What it found, and what these tests hold:

- An ITI-65's SubmissionSet List was only checked to name every DocumentReference of the
  Bundle; its other entries were stored as sent: a document of another patient's record, a
  document hidden from the depositor, an id naming nothing, a Binary. The deposit was
  accepted (200) and the List of patient A named patient B's document: a SubmissionSet of
  one record listing another record's document, which XDS refuses (ITI TF-3 4.2.2: a
  SubmissionSet and its members share their patientId) and which ITI-41 cannot express (its
  mapping keeps only the HasMember associations to the submission's own DocumentEntries,
  `ihe_xds.mapping.to_fhir`). A SubmissionSet lists what the submission holds (MHD ITI-65
  3.65.4.1.2.1, a HasMember to each DocumentReference of the Bundle); any other entry is
  refused now (422 XDSRepositoryMetadataError at the List's entry), the same whatever it
  names, so the refusal tells nothing of the record (R18), and nothing is written.
- A transaction's PUT carrying a resource of another type than its url names (`List/<id>`
  with a DocumentReference) was performed as an update of the resource it carried (403 R14,
  404 for a hidden document) and its fullUrl mapped to `List/<id>`; the same request alone
  and in a batch is a 400 (http.html#update). It is refused before anything reads the entry
  now, the same whatever the id names (`bundles._check_url_type`).
- An entry's request.method `FOLDED` (the server's own mark of an ITI-65 PATCH folded into
  a supersede) was taken from the client: the entry was skipped, the transaction's other
  entries committed, then the answer was a 500 (a List written, the client told nothing was).
  Only HTTP verbs are read now (400 at Bundle.entry[n].request.method).
- A Bundle of type document is no served type (POSTed to /Bundle: 404), but held in a List's
  `contained` it was stored, and so were a DocumentReference with inline data and a Binary:
  a document outside the registry (no DMP profile, no author check, no deposit notification,
  R17), served whole with its holder, its labels ignored (the patient read a contained
  INVISIBLE_PATIENT DocumentReference, R14). A contained resource of a type the rules judge
  only on its own (`service.validation.RECORD_TYPES`) is refused now (422 at every door).
- An ITI-65 DocumentReference entry with `ifNoneExist` matching a document the depositor
  reads was a 500 (nothing written); one matching a hidden document created it. An ITI-65
  entry carries no ifNoneExist now (422 at its request.ifNoneExist, before any search).
- Patient binding: a token bound to A depositing through ITI-65 for another INS was told
  403 when the INS is registered and XDSUnknownPatientId (422) when it is not. Both are the
  binding's 403 now, decided before the patient is said known or not (`Iti65._check_binding`).
  ITI-41 (mapped to a transaction) answered LocalPolicyRestrictionError against
  XDSUnknownPatientId alike; both LocalPolicyRestrictionError now (`_outside_binding`).

What held (tried, refused or answered as for a missing resource): a Bundle of type
collection, document, message, history or searchset POSTed to the base (400) or to /Bundle
(Bundle is not a served type, 404, also nested in a transaction entry); PUT and DELETE entry
urls with `_history/n`, another server's absolute url or `../` (400 naming the entry); a
query string on a PUT/DELETE by id (ignored, the id is judged); PUT and DELETE of a Binary in
a transaction (403, Binaries are replaced with their document); a transaction's refused
entry (403 R14, 412 on a hidden document) keeps its AuthZ-Consent event although the
transaction is rolled back; GET entries of a transaction run after its writes, as the same
read alone.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY
from ihe_xds import vocabulary as v
from ihe_xds.errors import XDS_ERROR_SYSTEM
from tests.http.conftest import FHIR_JSON, INS_SYSTEM, auth, valid_nir
from tests.http.test_mhd import SUBMISSION, fixture
from tests.http.test_patient_context_binding import (
    LOCAL_POLICY,
    World,
    cli,  # noqa: F401 (fixture)
    registry_status,
)
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    PATIENT_A,
    PATIENT_B,
    UNKNOWN_ID,
    binary_id,
    doc_id,
    doc_identifier,
    fresh_world,  # noqa: F401 (fixture)
)
from tests.http.test_xds_endpoints import Xds
from tests.support.documents import dmp_document, transaction
from tests.xds_builders import build_iti41

OUTSIDE_MEMBERS = {
    "another-records-document": f"DocumentReference/{doc_id('b-doc')}",
    "a-document-hidden-from-the-depositor": f"DocumentReference/{doc_id('a-masked')}",
    "an-unknown-document": f"DocumentReference/{UNKNOWN_ID}",
    "a-readable-document-of-the-record": f"DocumentReference/{doc_id('a-visible')}",
    "a-binary": f"Binary/{binary_id('a-masked')}",
}


def _provide(world, bundle: dict):
    return world.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(world.tokens.practitioner(AUTHORIZED), **{"Content-Type": FHIR_JSON}),
    )


def _submission(n: int) -> dict:
    """The PDSm4DMP submission for patient A (INS of a_patient(1)), its uniqueIds made new."""
    bundle = fixture(SUBMISSION, valid_nir(1))
    bundle["entry"][1]["resource"]["masterIdentifier"]["value"] += f".{n}"
    for identifier in bundle["entry"][0]["resource"].get("identifier", []):
        if "value" in identifier:
            identifier["value"] += f".{n}"
    return bundle


def _stored(world, resource_type: str) -> int:
    return len(world.service.search(INTERNAL, resource_type, [("_count", "1000")]).matches)


@pytest.mark.parametrize("member", list(OUTSIDE_MEMBERS))
def test_iti65_submission_set_lists_only_the_documents_of_its_bundle(fresh_world, member):  # noqa: F811
    """MHD ITI-65 / ITI TF-3 4.2.2: a SubmissionSet's entries are the Bundle's documents; an
    entry naming anything else (another record's document, a hidden one, an unknown id) is
    refused alike, at that entry, and nothing is written."""
    world = fresh_world
    lists, documents = _stored(world, "List"), _stored(world, "DocumentReference")
    bundle = _submission(1)
    bundle["entry"][0]["resource"]["entry"].append({"item": {"reference": OUTSIDE_MEMBERS[member]}})
    response = _provide(world, bundle)
    assert response.status_code == 422, response.get_data(as_text=True)
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    (issue,) = outcome["issue"]
    assert issue["expression"] == ["Bundle.entry[0].resource.entry[1].item"]
    assert issue["details"]["coding"] == [
        {"system": XDS_ERROR_SYSTEM, "code": "XDSRepositoryMetadataError"}
    ]
    assert doc_id("b-doc") not in issue["diagnostics"]
    assert doc_id("a-masked") not in issue["diagnostics"]
    assert (_stored(world, "List"), _stored(world, "DocumentReference")) == (lists, documents)


def test_iti65_refusal_of_an_outside_member_is_the_same_whatever_it_names(fresh_world):  # noqa: F811
    """R18: the refusal of a hidden document's id reads as that of an unknown id."""
    answers = []
    for n, member in enumerate(("a-document-hidden-from-the-depositor", "an-unknown-document")):
        bundle = _submission(10 + n)
        bundle["entry"][0]["resource"]["entry"].append(
            {"item": {"reference": OUTSIDE_MEMBERS[member]}}
        )
        response = _provide(fresh_world, bundle)
        text = response.get_data(as_text=True)
        answers.append((response.status_code, text.replace(doc_id("a-masked"), UNKNOWN_ID)))
    assert answers[0] == answers[1]


def test_iti65_submission_set_of_the_bundles_documents_is_accepted(fresh_world):  # noqa: F811
    response = _provide(fresh_world, _submission(20))
    assert response.status_code == 200, response.get_data(as_text=True)


def _transaction(world, token: str, *entries: dict):
    return world.client.post(
        "/fhir",
        data=json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )


def _put_each_document(world, url_of):
    """(key, answer) of a transaction PUT, by an authorized practitioner, of the changed
    visible document and of the masked one, each to `url_of(its id)`."""
    token = world.tokens.practitioner(AUTHORIZED)
    for key in ("a-visible", "a-masked"):
        document = world.service.store.read("DocumentReference", doc_id(key)).json()
        document["description"] = "changed"
        entry = {
            "fullUrl": "urn:uuid:5e1f0000-0000-4000-8000-000000000001",
            "request": {"method": "PUT", "url": url_of(doc_id(key))},
            "resource": document,
        }
        yield key, _transaction(world, token, entry)


@pytest.mark.parametrize("url_type", ["List", "Consent", "Patient"])
def test_transaction_put_whose_resource_is_not_of_its_urls_type_is_refused(fresh_world, url_type):  # noqa: F811
    """FHIR R4 http.html#update (and #transaction: an entry is processed as the request
    alone): a PUT to `List/<id>` carrying a DocumentReference is a 400, as the same request
    alone and in a batch answers; the transaction performed it as an update of the
    DocumentReference (403 R14, or 404 for a hidden one) and mapped its fullUrl to
    `List/<id>`. Refused before anything is judged, the same for a hidden document's id."""
    answers = []
    for key, response in _put_each_document(fresh_world, lambda id_: f"{url_type}/{id_}"):
        assert response.status_code == 400, response.get_data(as_text=True)
        (issue,) = response.get_json()["issue"]
        assert issue["expression"][0] == "Bundle.entry[0].resource.resourceType"
        answers.append(response.get_data(as_text=True).replace(doc_id(key), "ID"))
        assert fresh_world.service.store.read("DocumentReference", doc_id(key)).version == 1
    assert answers[0] == answers[1]


@pytest.mark.parametrize(
    "base", ["http://localhost/fhir/", "https://elsewhere.example/fhir/"], ids=["own", "other"]
)
def test_transaction_put_to_an_absolute_url_changes_nothing(fresh_world, base):  # noqa: F811
    """An absolute request.url names no type by its first segment (the POSTs of the NIST MHD
    fixtures carry one, and are not refused for it); a PUT to one is refused all the same,
    alike for a visible and a hidden document, and nothing is written."""
    answers = []
    for key, response in _put_each_document(fresh_world, lambda id_: f"{base}List/{id_}"):
        assert 400 <= response.status_code < 500, response.get_data(as_text=True)
        answers.append(response.get_data(as_text=True).replace(doc_id(key), "ID"))
        assert fresh_world.service.store.read("DocumentReference", doc_id(key)).version == 1
    assert answers[0] == answers[1]


@pytest.mark.parametrize("kind", ["transaction", "batch"])
@pytest.mark.parametrize("method", ["FOLDED", "folded"])
def test_entry_method_outside_http_verbs_is_refused_and_nothing_is_written(
    fresh_world,  # noqa: F811
    kind,
    method,
):
    """Bundle.entry.request.method is an HTTP verb (FHIR R4 bundle.html, http-verb: GET,
    HEAD, POST, PUT, DELETE, PATCH). `FOLDED`, the server's own mark of an ITI-65 PATCH folded
    into a supersede, was taken from the client: the entry was skipped, the transaction's
    other entries committed, then the answer was a 500. Now a 400 naming the entry (in a
    batch as for any other unknown method: the whole Bundle), and nothing is written."""
    world = fresh_world
    token = world.tokens.practitioner(AUTHORIZED)
    lists = _stored(world, "List")
    listing = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "subject": {"reference": f"Patient/{PATIENT_A}"},
    }
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"request": {"method": "POST", "url": "List"}, "resource": listing},
            {"request": {"method": method, "url": "List"}, "resource": listing},
        ],
    }
    response = world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    (issue,) = response.get_json()["issue"]
    assert issue["expression"] == ["Bundle.entry[1].request.method"]
    assert _stored(world, "List") == lists


def _inlined(kind: str) -> dict:
    """A document held inside a List: a labelled DocumentReference with inline data, a
    document Bundle, a Binary."""
    if kind == "DocumentReference":
        return {
            "resourceType": "DocumentReference",
            "id": "held",
            "status": "current",
            "meta": {
                "security": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}]
            },
            "content": [{"attachment": {"contentType": "application/pdf", "data": "JVBERi0xLjQ="}}],
        }
    if kind == "Bundle":
        return {
            "resourceType": "Bundle",
            "id": "held",
            "type": "document",
            "entry": [
                {
                    "fullUrl": "urn:uuid:5e1f0000-0000-4000-8000-000000000002",
                    "resource": {"resourceType": "Binary", "contentType": "application/pdf"},
                }
            ],
        }
    return {
        "resourceType": kind,
        "id": "held",
        "contentType": "application/pdf",
        "data": "JVBERi0xLjQ=",
    }


@pytest.mark.parametrize("door", ["transaction", "rest"])
@pytest.mark.parametrize("kind", ["DocumentReference", "Bundle", "Binary"])
def test_a_document_held_in_a_lists_contained_is_refused(fresh_world, door, kind):  # noqa: F811
    """R14, R17: a document is written as a DocumentReference of its own (the registry, its
    labels, the patient told of its deposit). Held in a List's `contained` (a Bundle of type
    document too: Bundle is no served type, but a contained one was stored), it was stored
    (201) outside all of that, no notification, and the patient read the List whole,
    INVISIBLE_PATIENT document included. Refused now (422 naming the contained resource, at
    Bundle.entry[n] in a transaction); nothing written."""
    world = fresh_world
    token = world.tokens.practitioner(AUTHORIZED)
    lists, told = _stored(world, "List"), _stored(world, "Communication")
    listing = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "subject": {"reference": f"Patient/{PATIENT_A}"},
        "contained": [_inlined(kind)],
        "extension": [
            {"url": "https://example.org/held", "valueReference": {"reference": "#held"}}
        ],
    }
    if door == "rest":
        response = world.client.post(
            "/fhir/List",
            data=json.dumps(listing),
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        )
        where = "List.contained[0]"
    else:
        response = _transaction(
            world, token, {"request": {"method": "POST", "url": "List"}, "resource": listing}
        )
        where = "Bundle.entry[0]"
    assert response.status_code == 422, response.get_data(as_text=True)
    expressions = [e for i in response.get_json()["issue"] for e in i.get("expression", [])]
    assert where in expressions
    assert (_stored(world, "List"), _stored(world, "Communication")) == (lists, told)


@pytest.mark.parametrize("key", ["a-visible", "a-masked", "b-doc"])
def test_iti65_entry_with_if_none_exist_is_refused_before_its_search(fresh_world, key):  # noqa: F811
    """MHD ITI-65 creates its resources; a conditional create is no part of it (ITI-105's
    conditional publication is its own door). A DocumentReference entry whose ifNoneExist
    found a document the depositor reads was a 500 (the SubmissionSet's document gone from
    the checks); one finding a hidden document created it (as for an unknown identifier).
    Refused alike now, before any search (422 XDSRepositoryMetadataError at the entry's
    request.ifNoneExist), nothing written, no search in the trail."""
    world = fresh_world
    counts = [_stored(world, t) for t in ("List", "DocumentReference", "Binary", "AuditEvent")]
    bundle = _submission(30)
    patient = PATIENT_B if key == "b-doc" else PATIENT_A
    identifier = doc_identifier(key)
    bundle["entry"][1]["request"]["ifNoneExist"] = f"identifier={identifier}&patient={patient}"
    response = _provide(world, bundle)
    assert response.status_code == 422, response.get_data(as_text=True)
    expressions = [e for i in response.get_json()["issue"] for e in i.get("expression", [])]
    assert "Bundle.entry[1].request.ifNoneExist" in expressions
    after = [_stored(world, t) for t in ("List", "DocumentReference", "Binary", "AuditEvent")]
    assert after == counts


def test_iti65_bound_to_one_record_gets_the_same_refusal_for_a_known_and_an_unknown_ins(
    fresh_world,  # noqa: F811
):
    """Patient binding (docs/access-rules.md): a deposit naming another patient than the
    credentials' is refused 403, the same whether that patient exists or not. Through ITI-65
    a token bound to A was told 403 for B's INS and XDSUnknownPatientId (422) for an INS
    without record: which INS are registered, probed by a deposit. Now both are the binding's
    403 (LocalPolicyRestrictionError), nothing written; A's own deposit is accepted."""
    world = fresh_world
    token = world.tokens.practitioner_naming_ins(AUTHORIZED, f"{INS_SYSTEM}|{valid_nir(1)}")
    counts = [_stored(world, t) for t in ("List", "DocumentReference", "Binary")]
    answers = []
    for n, nir in ((40, valid_nir(3)), (41, valid_nir(77))):
        bundle = fixture(SUBMISSION, nir)
        bundle["entry"][1]["resource"]["masterIdentifier"]["value"] += f".{n}"
        response = world.client.post(
            "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
        )
        assert response.status_code == 403, response.get_data(as_text=True)
        answers.append(response.get_data(as_text=True).replace(nir, "NIR"))
    assert answers[0] == answers[1]
    assert [_stored(world, t) for t in ("List", "DocumentReference", "Binary")] == counts
    own = fixture(SUBMISSION, valid_nir(1))
    own["entry"][1]["resource"]["masterIdentifier"]["value"] += ".42"
    response = world.client.post(
        "/fhir", data=json.dumps(own), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.fixture
def binding_world(app, client, tokens, data_dir, cli):  # noqa: F811
    """Two patients Y and Z of one GP (`test_patient_context_binding`)."""
    return World(Xds(app, client, tokens, data_dir), cli)


def test_iti41_bound_to_one_record_gets_the_same_refusal_for_a_known_and_an_unknown_ins(
    binding_world,
):
    """The same through ITI-41 (whose submission is mapped to a transaction Bundle): a VIHF
    naming Z depositing for Y was answered LocalPolicyRestrictionError, for an INS without
    record XDSUnknownPatientId. Both are LocalPolicyRestrictionError now, nothing stored."""
    world = binding_world
    before = len(world.documents_of(world.y))
    answers = []
    for nir in (world.nir_y, valid_nir(77)):
        request = build_iti41(nir=nir, security=world.vihf(world.nir_z))
        response = world.client.post(
            "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
        )
        answers.append(registry_status(response))
    assert answers == [(v.RESPONSE_FAILURE, [LOCAL_POLICY])] * 2
    assert len(world.documents_of(world.y)) == before


# -- http.html#transaction: resource identities that overlap fail the transaction ----------


def _a_list(world, token: str) -> str:
    listing = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "title": "first",
        "subject": {"reference": f"Patient/{PATIENT_A}"},
        "source": {"reference": f"Practitioner/{AUTHORIZED}"},
    }
    response = world.client.post(
        "/fhir/List", data=json.dumps(listing), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


def _put_list(list_id: str, title: str, url: str | None = None) -> dict:
    resource = {
        "resourceType": "List",
        "id": list_id,
        "status": "current",
        "mode": "working",
        "title": title,
        "subject": {"reference": f"Patient/{PATIENT_A}"},
        "source": {"reference": f"Practitioner/{AUTHORIZED}"},
    }
    if url is not None:
        resource.pop("id")
    return {"request": {"method": "PUT", "url": url or f"List/{list_id}"}, "resource": resource}


OVERLAPS = {
    "two-puts": lambda i: [_put_list(i, "second"), _put_list(i, "third")],
    "put-and-delete": lambda i: [
        _put_list(i, "second"),
        {"request": {"method": "DELETE", "url": f"List/{i}"}},
    ],
    "put-and-conditional-put": lambda i: [
        _put_list(i, "second"),
        _put_list(i, "third", url=f"List?patient={PATIENT_A}&_id={i}"),
    ],
    "delete-and-conditional-delete": lambda i: [
        {"request": {"method": "DELETE", "url": f"List/{i}"}},
        {"request": {"method": "DELETE", "url": f"List?patient={PATIENT_A}&_id={i}"}},
    ],
}


@pytest.mark.parametrize("overlap", list(OVERLAPS))
def test_transaction_entries_writing_one_resource_fail_naming_both(fresh_world, overlap):  # noqa: F811
    """FHIR R4 http.html#transaction: "If any resource identities (including resolved
    identities from conditional update/delete) overlap in steps 1-3, then the transaction
    SHALL fail." Two PUTs of one List in one transaction gave two versions (documents were
    only caught by their entryUUID appearing twice); a PUT and a DELETE, or a conditional
    entry resolving to the resource another names, were both performed. A 400 naming both
    entries now, and nothing is written."""
    world = fresh_world
    token = world.tokens.practitioner(AUTHORIZED)
    list_id = _a_list(world, token)
    lists = _stored(world, "List")
    filler = {
        "request": {"method": "POST", "url": "List"},
        "resource": _put_list("x", "created")["resource"] | {"id": None},
    }
    filler["resource"].pop("id")
    first, second = OVERLAPS[overlap](list_id)
    response = _transaction(world, token, first, filler, second)
    assert response.status_code == 400, response.get_data(as_text=True)
    (issue,) = response.get_json()["issue"]
    assert "Bundle.entry[0]" in issue["diagnostics"] and "Bundle.entry[2]" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[0].request.url", "Bundle.entry[2].request.url"]
    stored = world.service.store.read("List", list_id)
    assert stored.version == 1 and not stored.deleted
    assert _stored(world, "List") == lists


def test_batch_entries_writing_one_resource_are_each_performed(fresh_world):  # noqa: F811
    """A batch's entries are independent (http.html#transaction): two PUTs of one List are
    two updates, as the same requests sent one after the other."""
    world = fresh_world
    token = world.tokens.practitioner(AUTHORIZED)
    list_id = _a_list(world, token)
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [_put_list(list_id, "second"), _put_list(list_id, "third")],
    }
    response = world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    statuses = [e["response"]["status"] for e in response.get_json()["entry"]]
    assert [s.split()[0] for s in statuses] == ["200", "200"]
    assert world.service.store.read("List", list_id).version == 3


def test_transaction_writing_a_document_it_supersedes_is_refused(fresh_world):  # noqa: F811
    """A transaction creating a document that replaces another adds the supersede PUT of the
    replaced one (`documents.registry.supersedes`); a client entry writing that document too
    overlaps it (http.html#transaction) and is refused, naming the client's entry: the two
    were performed in turn, the client's write then the server's supersede of what it wrote."""
    world = fresh_world
    token = world.tokens.practitioner(AUTHORIZED)
    deposit = transaction(PATIENT_A, dmp_document(PATIENT_A, "x", author=AUTHORIZED))
    response = world.client.post(
        "/fhir", data=json.dumps(deposit), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    old_id = response.get_json()["entry"][0]["response"]["location"].split("/")[1]
    bundle = transaction(PATIENT_A, dmp_document(PATIENT_A, "x", author=AUTHORIZED, title="new"))
    bundle["entry"][0]["resource"]["relatesTo"] = [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{old_id}"}}
    ]
    old = world.service.store.read("DocumentReference", old_id).json()
    old["description"] = "changed by the client"
    bundle["entry"].append(
        {"request": {"method": "PUT", "url": f"DocumentReference/{old_id}"}, "resource": old}
    )
    documents = _stored(world, "DocumentReference")
    response = world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    (issue,) = response.get_json()["issue"]
    assert issue["expression"] == ["Bundle.entry[2].request.url"]
    assert world.service.store.read("DocumentReference", old_id).version == 1
    assert _stored(world, "DocumentReference") == documents
    # Without the client's PUT, the same replacement is made (the supersede is the server's).
    bundle["entry"].pop()
    response = world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    stored = world.service.store.read("DocumentReference", old_id)
    assert stored.version == 2 and stored.json()["status"] == "superseded"
