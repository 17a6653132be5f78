"""Attack pass on the FHIR REST search face: oracles (R14, R07, R09, R06, R18).

An oracle is a pair of requests whose answers differ only by whether a document hidden from
the requester exists: a masked document (MASQUE_PS) for an authorized professional, one
invisible to the patient or to a minor's representatives, any document for a professional
the patient blocked, another patient's document for the patient. Each shape the earlier
passes did not send was asked for the hidden document and for a missing id, and the answers
compared (status, body, `Bundle.total`, paging links, OperationOutcome text, ETag,
Last-Modified, Content-Type): `_summary=count|true|text|data`, `_total`, `_count=0`,
`_elements`, `_id` given several times or with several values, `:missing`, `:not`,
`:exact`, `:contains`, `:text`, `:of-type`, `:identifier`, `:above`, `:below`, `:in`,
`_lastUpdated`, `_tag`, `_security`, `_profile`, `_content`, `_text`, `_list`, `_filter`,
`_query`, `_include`, `_revinclude` and `:iterate`, `POST _search` (criteria in the body,
repeated, in the query and the body), batch GET entries, `Prefer: handling=strict|lenient`,
HEAD, `_format`, `_pretty`, Accept; and the AuditEvent trail the patient and a parent are
shown after a professional's search naming a document hidden from them, by those shapes.
They answered alike, or refused alike (400 for what the server does not support).

What got through, and what these tests hold (each fails before its fix):

- `_sort` by a parameter over a naming element (DocumentReference `relatesto`, `relation`,
  List `item`): the store orders by the stored relations, hidden ones included, where the
  served copy leaves them out. A minor's parent, shown a document whose only relation names
  one invisible to representatives, got it served without `relatesTo` and sorted as having
  one (before the documents without, whichever way), and the `next` link of a one-entry
  page carried its sort key in the cursor: the hidden document's id, in base64. Such a sort
  is now refused (400 `not-supported`) for every requester, before the record is read.
- `relation:missing` and `relationship:missing` (DocumentReference): `relatesto:missing` was
  judged on what is served, the same question asked of the relation's code was not. The
  parent's `relation:missing=false` found the document whose only relation is hidden from
  them (served without `relatesTo`), `relation:missing=true` left it out; a granular scope
  `DocumentReference.rs?relation:missing=false` was applied unconfined. Now judged as
  `relatesto:missing` is, and refused in a scope as the other naming parameters are (403 R02).
- The `next` link of a search by reference (`relatesto=`, `item=`, `relationship=`) naming
  a hidden id among others: the gate rewrote a reference to a hidden document into a clause
  matching nothing and kept one to an unknown id, and the cursor, bound to the query it
  continues, carries that query's fingerprint in clear. `relatesto=<id>,<a visible
  document>&_count=1` gave one fingerprint for every id hidden from the requester (in their
  record or another patient's) and another for each unknown id: an existence test of any
  document id. A reference naming no readable stored resource now matches nothing, hidden
  or missing alike, so that both searches are the same query, their links the same links.
- A document naming another by a literal reference outside `relatesTo`: its author (who
  reads the masked document) deposited a document whose `context.related` (or an
  extension's `valueReference`) named `DocumentReference/<masked id>`; every authorized
  professional was served that id with the document, and `related=DocumentReference/<id>`
  found 1 for the masked id, 0 for a missing one. Such a reference is now refused at every
  write door (422 XDSRepositoryMetadataError; `context.related` names by identifier, as
  XDS referenceIdList does), whatever it names.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from fhir_server.access.requester import INTERNAL
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    CASES,
    GP,
    PATIENT_A,
    PATIENT_M,
    UNKNOWN_ID,
    _id,
    doc_id,
    document,
    entries,
    own_world,
)
from tests.support.documents import assert_refused_at_deposit_doors, dmp_document

world = pytest.fixture(own_world, name="world")

PARENT_CASE = CASES["R07-invisible-representants-legaux-vs-parent"]
# A second document of the minor, without relations, whose id sorts before `m-visible`'s
# (the tie-break of a sort is the id): `m-visible`'s only relation names `m-invisible-rl`.
UNRELATED = "00000000-0000-4000-8000-000000000001"


def _seed_unrelated(world) -> None:
    resource = document("m-visible")
    resource["identifier"][0]["value"] = f"urn:uuid:{_id('identifier-unrelated')}"
    world.service.update(INTERNAL, "DocumentReference", UNRELATED, {**resource, "id": UNRELATED})


def _cursor_texts(bundle: dict) -> str:
    """The paging links' cursors as a client reads them: each dot-separated part of the
    token decoded from base64url where it decodes."""
    decoded = []
    for link in bundle.get("link", []):
        for cursor in parse_qs(urlsplit(link["url"]).query).get("_cursor", []):
            for part in cursor.split("."):
                try:
                    decoded.append(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
                except ValueError:
                    continue
    return b" ".join(decoded).decode("latin-1")


@pytest.mark.parametrize("sort", ["relatesto", "-relatesto", "relation", "-relation"])
def test_r18_a_sort_by_relations_does_not_order_by_a_hidden_one(world, sort):
    """A parent sorts the minor's documents by their relations: `m-visible`, whose only
    relation is hidden from them (served without `relatesTo`), was ordered before a document
    without relations and its cursor named the hidden document. Now refused, as a sort the
    served copies cannot answer."""
    _seed_unrelated(world)
    token = PARENT_CASE.requester(world.tokens)
    hidden = doc_id(PARENT_CASE.hidden)
    served = world.get(token, f"/fhir/DocumentReference?patient={PATIENT_M}&_sort=_id")
    assert [r["id"] for r in entries(served.get_json())] == [UNRELATED, doc_id("m-visible")]
    assert "relatesTo" not in json.dumps(entries(served.get_json()))

    response = world.get(
        token, f"/fhir/DocumentReference?patient={PATIENT_M}&_sort={sort}&_count=1"
    )
    body = response.get_data(as_text=True)
    assert hidden not in body
    assert hidden not in _cursor_texts(response.get_json() or {}), "the cursor names it"
    assert response.status_code == 400, body
    assert response.get_json()["resourceType"] == "OperationOutcome"
    assert response.get_json()["issue"][0]["code"] == "not-supported"


def test_r18_a_sort_by_relations_is_refused_at_every_search_door(world):
    """The same sort in a `POST _search` body and in a batch GET entry."""
    _seed_unrelated(world)
    token = PARENT_CASE.requester(world.tokens)
    posted = world.client.post(
        "/fhir/DocumentReference/_search",
        data=f"patient={PATIENT_M}&_sort=relatesto&_count=1",
        content_type="application/x-www-form-urlencoded",
        headers=auth(token),
    )
    assert posted.status_code == 400, posted.get_data(as_text=True)
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {
                "request": {
                    "method": "GET",
                    "url": f"DocumentReference?patient={PATIENT_M}&_sort=relatesto&_count=1",
                }
            }
        ],
    }
    answered = world.client.post(
        "/fhir", data=json.dumps(batch), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert answered.status_code == 200, answered.get_data(as_text=True)
    entry = answered.get_json()["entry"][0]
    assert entry["response"]["status"].startswith("400"), entry
    assert doc_id(PARENT_CASE.hidden) not in answered.get_data(as_text=True)


@pytest.mark.parametrize("case_id", list(CASES))
def test_r18_a_sort_by_list_items_is_refused_alike_for_everyone(world, case_id):
    """`List?_sort=item` ordered the patient's Lists by their stored items, hidden ones
    included: refused, for every requester, with the same answer."""
    case = CASES[case_id]
    response = world.get(
        case.requester(world.tokens), f"/fhir/List?patient={case.context}&_sort=item"
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert doc_id(case.hidden) not in response.get_data(as_text=True)


def test_r18_a_sort_by_the_documents_own_elements_is_still_served(world):
    """Control: a sort by what the served copy shows (`_id`, `date`, `type`) is served."""
    _seed_unrelated(world)
    token = PARENT_CASE.requester(world.tokens)
    for sort in ("_id", "-_lastUpdated", "type", "date"):
        response = world.get(token, f"/fhir/DocumentReference?patient={PATIENT_M}&_sort={sort}")
        assert response.status_code == 200, (sort, response.get_data(as_text=True))
        assert {r["id"] for r in entries(response.get_json())} == {
            UNRELATED,
            doc_id("m-visible"),
        }


# -- :missing on the relation's code ------------------------------------------------------------


@pytest.mark.parametrize("param", ["relation", "relationship", "relatesto"])
def test_r18_missing_relations_are_judged_on_what_is_served(world, param):
    """The parent's `relation:missing=false` found `m-visible`, whose only relation is
    invisible to representatives, and `:missing=true` left it out: it has relations they
    may not see. Each finds what the served copies show (`relatesto` held already)."""
    _seed_unrelated(world)
    token = PARENT_CASE.requester(world.tokens)

    def found(missing: str) -> set[str]:
        response = world.get(
            token, f"/fhir/DocumentReference?patient={PATIENT_M}&{param}:missing={missing}"
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return {r["id"] for r in entries(response.get_json(), "match")}

    served = world.get(token, f"/fhir/DocumentReference?patient={PATIENT_M}").get_json()
    with_relations = {r["id"] for r in entries(served) if r.get("relatesTo")}
    assert with_relations == set()
    assert found("false") == with_relations
    assert found("true") == {UNRELATED, doc_id("m-visible")}


def test_r18_missing_relations_are_still_found_when_shown(world):
    """Control: a relation the requester sees is found by `relation:missing=false` (the
    authorized professional sees `m-invisible-rl`, so `m-visible`'s relation is served)."""
    _seed_unrelated(world)
    token = PARENT_CASE.seer(world.tokens)
    for param in ("relation", "relationship"):
        response = world.get(
            token, f"/fhir/DocumentReference?patient={PATIENT_M}&{param}:missing=false"
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        assert {r["id"] for r in entries(response.get_json(), "match")} == {doc_id("m-visible")}


@pytest.mark.parametrize("param", ["relation", "relationship"])
def test_r02_r18_a_granular_scope_on_missing_relations_is_refused(world, param):
    """`patient/DocumentReference.rs?relation:missing=false` was added to the parent's
    searches unconfined, as the question a search asks is no longer: refused (403 R02), as
    a scope naming `relatesto` is."""
    token = world.tokens.issuer.issue(
        subject=PATIENT_M,
        scopes=f"patient/DocumentReference.rs?{param}:missing=false",
        fhir_user=f"Patient/{PATIENT_M}",
        patient=PATIENT_M,
    )
    response = world.get(token, f"/fhir/DocumentReference?patient={PATIENT_M}")
    assert response.status_code == 403, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "forbidden" and "granular scope" in issue["diagnostics"]


# -- the paging cursor of a search by reference -------------------------------------------------


def _seed_appended_twice(world) -> None:
    """Two documents of the minor appending `m-visible`, so that `relatesto=<m-visible>`
    finds two and a page of one has a `next` link."""
    for n in (1, 2):
        resource = document("m-visible")
        resource["identifier"][0]["value"] = f"urn:uuid:{_id(f'identifier-appends-{n}')}"
        resource["relatesTo"] = [
            {"code": "appends", "target": {"reference": f"DocumentReference/{doc_id('m-visible')}"}}
        ]
        resource_id = f"00000000-0000-4000-8000-00000000001{n}"
        world.service.update(
            INTERNAL, "DocumentReference", resource_id, {**resource, "id": resource_id}
        )


def _links(world, token: str, url: str, named: str) -> tuple[int, dict[str, str], str | None]:
    """The answer's status and links, the id named replaced by `<id>` and the cursor by its
    length (sealed with a random nonce, no two cursors are alike: `test_opaque_cursors`),
    and the `next` cursor itself."""
    response = world.get(token, url)
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = response.get_json()
    assert bundle.get("total") == 2, "the control documents are not found: the query is broken"
    links = {}
    cursor = None
    for link in bundle.get("link", []):
        found = parse_qs(urlsplit(link["url"]).query).get("_cursor", [])
        masked = link["url"]
        for value in found:
            masked = masked.replace(value, f"<cursor of {len(value)}>")
            if link["relation"] == "next":
                cursor = value
        links[link["relation"]] = masked.replace(named, "<id>")
    return response.status_code, links, cursor


@pytest.mark.parametrize(
    "hidden",
    ["m-invisible-rl", "b-doc", "a-masked"],
    ids=["invisible-to-representatives", "another-patients", "another-patients-masked"],
)
@pytest.mark.parametrize(
    "template",
    [
        "relatesto=DocumentReference/{id},DocumentReference/{visible}",
        "relatesto={id},{visible}",
        "relationship=appends$DocumentReference/{id},appends$DocumentReference/{visible}",
    ],
)
def test_r18_a_search_naming_a_hidden_id_pages_as_one_naming_a_missing_id(world, hidden, template):
    """The parent's search by relation naming a hidden document and a visible one: its
    `next` link (the cursor carries the query's fingerprint) was the same for every hidden
    id and another for each unknown id. Now the links are the same, id for id (the cursors,
    sealed, of one length), and each search's cursor continues the others: they are bound
    to one query."""
    _seed_appended_twice(world)
    token = PARENT_CASE.requester(world.tokens)
    base = f"/fhir/DocumentReference?patient={PATIENT_M}&_count=1&"
    urls = [
        base + template.format(id=named, visible=doc_id("m-visible"))
        for named in (doc_id(hidden), UNKNOWN_ID, _id("another-unknown"))
    ]
    named = (doc_id(hidden), UNKNOWN_ID, _id("another-unknown"))
    answers = [_links(world, token, url, name) for url, name in zip(urls, named, strict=True)]
    assert "next" in answers[0][1]
    assert answers[0][:2] == answers[1][:2] == answers[2][:2]
    pages = set()
    for url in urls:
        for _, _, cursor in answers:
            following = world.get(token, f"{url}&_cursor={quote(cursor, safe='')}")
            assert following.status_code == 200, following.get_data(as_text=True)
            pages.add(tuple(e["resource"]["id"] for e in following.get_json().get("entry", [])))
    assert len(pages) == 1, pages


# -- a document naming another outside its relations --------------------------------------------

MASKED = doc_id("a-masked")
NAMING = {
    "context-related": {"context.related": [{"reference": f"DocumentReference/{MASKED}"}]},
    "context-related-absolute": {
        "context.related": [{"reference": f"http://127.0.0.1:8080/fhir/DocumentReference/{MASKED}"}]
    },
    "extension-value-reference": {
        "extension": [
            {
                "url": "https://example.org/fhir/see-also",
                "valueReference": {"reference": f"DocumentReference/{MASKED}/_history/1"},
            }
        ]
    },
}


def _naming(shape: str) -> dict:
    """A document of A by the médecin traitant (who reads `a-masked`) naming it by `shape`."""
    document = dmp_document(PATIENT_A, author=GP)
    for key, value in NAMING[shape].items():
        if key == "context.related":
            document["context"]["related"] = value
        else:
            document[key] = value
    return document


@pytest.mark.parametrize("shape", list(NAMING))
def test_r14_r18_a_document_names_another_only_by_its_relations(world, shape):
    """Deposited by a reader of the masked document, it named the masked id to every
    authorized professional: refused (422) by REST create, transaction and ITI-65 alike."""
    token = world.tokens.practitioner(GP)
    headers = auth(token, **{"Content-Type": FHIR_JSON})
    assert_refused_at_deposit_doors(world.client, headers, PATIENT_A, _naming(shape))
    reader = world.tokens.practitioner(AUTHORIZED)
    for named in (MASKED, UNKNOWN_ID):
        found = world.get(
            reader, f"/fhir/DocumentReference?patient={PATIENT_A}&related=DocumentReference/{named}"
        )
        assert found.status_code == 200 and found.get_json()["total"] == 0


def test_r14_r18_an_update_does_not_add_a_reference_to_another_document(world):
    """The author's PUT of their own document adding `context.related` to the masked one."""
    token = world.tokens.practitioner(GP)
    headers = auth(token, **{"Content-Type": FHIR_JSON, "Prefer": "return=representation"})
    document = dmp_document(PATIENT_A, author=GP)
    created = world.client.post(
        "/fhir/DocumentReference", data=json.dumps(document), headers=headers
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    stored = created.get_json()
    stored["context"]["related"] = [{"reference": f"DocumentReference/{MASKED}"}]
    updated = world.client.put(
        f"/fhir/DocumentReference/{stored['id']}", data=json.dumps(stored), headers=headers
    )
    assert updated.status_code == 422, updated.get_data(as_text=True)
    served = world.get(
        world.tokens.practitioner(AUTHORIZED), f"/fhir/DocumentReference/{stored['id']}"
    )
    assert served.status_code == 200 and MASKED not in served.get_data(as_text=True)
