"""Attack pass on the completeness of the trace, door by door (R16: every read, search, write
and refusal concerning a patient's data leaves BALP AuditEvents, one per patient concerned;
R17: the patient is told of a practitioner's first access of the day, of every bris de glace
and centre 15 access, of every deposit and of an authorization a practitioner records).

Tried, as an authorized médecin, a blocked one, one in bris de glace and centre 15, and a
system client: HEAD, If-None-Match and If-Modified-Since reads (answered 200: the server has
no conditional read), vread, instance, type and system `_history`, `_summary=count`,
`_summary=true`, `_elements`, `_total=accurate`, `_count=0`, `_include`, `_revinclude` and
`:iterate` (a List's items, a document's subject, relations to another record's document),
chains and `_has`, Bundle GET entries, POST `_search`, Binary read (with `_format`, a Range
header), transaction conditional references, XDS ITI-18 (FindDocuments,
FindSubmissionSets, GetAll, GetDocuments, GetDocumentsAndAssociations, GetAssociations,
GetSubmissionSets, GetSubmissionSetAndContents, GetRelatedDocuments, the Folder queries;
LeafClass and ObjectRef), ITI-43.

What got through:

- A transaction's conditional reference (FHIR R4 3.1.0.11.2: `"reference":
  "DocumentReference?patient=<id>&category=<code>"` in an entry's resource) is searched as
  its sender (`FhirService.find`), within what they may read, and the transaction fails
  (412) when it finds none or several, naming the reference and which. That search was
  traced nowhere and, in bris de glace or centre 15, told to no one: with a second
  reference that always finds nothing, so that nothing is ever written, an authorized or
  emergency practitioner learnt whether the record held none, one or several documents of
  any criteria (a category, a type, a date) and left no trace the patient could see. Now
  traced as that sender's search, and told as one.
- A patient's or a representative's search naming no patient (R04 lets them: it searches
  the record they act for) named its patient only through its results: a count
  (`_summary=count`, `_count=0`) or a search finding nothing left an event naming no
  patient, in no trail. A parent could count the minor's documents of any criteria, unseen
  by the minor and the other parent. Such a search now names the record it searched.
- A conditional PATCH (PDSm: the criteria may name a document by identifier alone, so the
  server searches them and judges each match) was traced only through a match hidden from
  its sender. Its answer tells a practitioner who may read the record whether none (404),
  several (412 multiple-matches) or one of its documents match (with an If-Match at another
  version, a 412 that writes nothing): a free probe of any criteria, untraced and, in bris
  de glace, untold. Now traced as the sender's search of the record (when they may search
  it), and told as one.
- An ITI-18's ATNA event named the patients of the objects it answered: a query finding
  nothing (FindDocuments of an empty record) or answering associations only
  (GetAssociations, GetRelatedDocuments) named none, and was in no patient's trail, though
  its searches' BALP events were (IHE ITI TF-2a 3.18.5.1.2 names the Patient when known).
  It now names the patient its searches designated.
- One request in bris de glace or centre 15 told the patient once per Binary read, search
  or write it made: an ITI-43 of two documents, a GetAssociations (two searches), a
  conditional update or PATCH (its search, then its write: the PATCH's since its search is
  traced, above), a transaction's two conditional references, were each two notifications,
  where R17 says one access is one notification. An emergency access is now told once per
  request (`RequestInfo.told`), and one XDS transaction's notifications are one per patient,
  the one hiding from fewest.
- A document deleted by REST DELETE stays readable by its author through its history (every
  version before the deletion, `Facts.content`), and its read answers 410. The gate audited a
  read only when the version judged was no deletion: the author's `_history` of their deleted
  document served its whole content with no event, and the 410 read left none. Both are now
  audited as reads of the record.

Found, not fixed: a write told first and a read after it in one request (a batch's write
entry, then a read entry) are still told twice (a write's notification counts only once it
commits, which the read does not know). A batch's entries, separate interactions
(http.html#transaction), are now told once per request (decided here: one request, one
access). A system's count of Patients by name (`Patient?name=X&_summary=count`, R15 lets
systems read identities) names no patient (its rows are not read), so the patients it
counted do not see it; naming them would cost an event per patient counted.

Held (a few kept below as controls): every other door above leaves one event per patient
concerned, with the right outcome and purpose, and each emergency access a notification;
refusals (a blocked or unauthorized médecin, a system or payer reading the record, an
ex-parent, an ITI-43 of another patient's document under a VIHF for mine) are AuthZ-Consent
failures in the record concerned; type and system history and a history in a batch are
refused before anything is read; ITI-65 and self-authorizations (POST, transaction, batch)
are traced and told.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_IDNAT_PS
from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, auth, internal_put
from tests.http.test_attack_pass_trace import MODES, _purposes, _told
from tests.http.test_audit_trace_hides import _decoded, trace
from tests.http.test_audit_trace_refusals import new_events
from tests.http.test_binary_ownership import parent_token
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    GP,
    PATIENT_A,
    PATIENT_M,
    STRANGER,
    UNKNOWN_ID,
    World,
    _id,
    binary_id,
    doc_id,
    doc_identifier,
    document,
    fresh_world,  # noqa: F401 - a record of the test's own
    world,  # noqa: F401 - the module's seeded record
)
from tests.http.test_xds_endpoints import GP as XDS_GP
from tests.http.test_xds_endpoints import registry_status
from tests.http.test_xds_update_document_set import xds  # noqa: F401 - fixture

# ruff: noqa: F811

DELETED_DOC = _id("doc-deleted-by-its-author")


def _token(world: World, mode: str) -> str:
    code, reason, _ = MODES[mode]
    idnat = AUTHORIZED if code == "normal" else STRANGER
    return world.tokens.practitioner(idnat, mode=code, reason=reason)


def _post(world: World, token: str, bundle: dict):
    return world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )


def _names_patient(event: dict, patient_id: str) -> bool:
    return any(
        (entity.get("what") or {}).get("reference") == f"Patient/{patient_id}"
        for entity in event.get("entity", [])
    )


# -- R16, R17: a transaction's conditional reference is its sender's search ---------------------


def _probing_transaction(probe: str) -> dict:
    """A transaction depositing a document whose relations are two conditional references:
    `probe`, then one that finds nothing, so that the transaction never writes; its answer
    says which of the two failed, and how (none, several)."""
    binary_url = "urn:uuid:5a5a5a5a-0000-4000-8000-000000000001"
    doc = document("a-visible")
    for element in ("meta", "securityLabel"):
        doc.pop(element, None)
    doc["identifier"] = [
        {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:5a5a5a5a-0000-4000-8000-000000000002"}
    ]
    doc["content"][0]["attachment"]["url"] = binary_url
    doc["relatesTo"] = [
        {"code": "appends", "target": {"reference": probe}},
        {
            "code": "appends",
            "target": {"reference": f"DocumentReference?patient={PATIENT_A}&_id={UNKNOWN_ID}"},
        },
    ]
    binary = {"resourceType": "Binary", "contentType": "application/pdf", "data": "JVBERi0xLjQ="}
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": binary_url,
                "resource": binary,
                "request": {"method": "POST", "url": "Binary"},
            },
            {"resource": doc, "request": {"method": "POST", "url": "DocumentReference"}},
        ],
    }


@pytest.mark.parametrize("mode", list(MODES))
def test_r16_r17_a_transactions_conditional_reference_is_traced_as_its_senders_search(world, mode):
    """R16, R17: a practitioner who may read A's record sends a transaction whose
    conditional reference asks whether A's record holds a document of category 10; the
    answer (412 on the second reference, which finds nothing) tells them it holds one.
    That search is in A's trail, with the practitioner's purpose, and in bris de glace and
    centre 15 A is told of it. It was traced nowhere, and told to no one."""
    patient = world.tokens.patient(PATIENT_A)
    _, before = trace(world, patient, PATIENT_A)
    told = _told(world, patient)
    probe = f"DocumentReference?patient={PATIENT_A}&category=10"
    response, events = new_events(
        world, lambda: _post(world, _token(world, mode), _probing_transaction(probe))
    )
    assert response.status_code == 412, response.get_data(as_text=True)
    assert UNKNOWN_ID in response.get_json()["issue"][0]["diagnostics"]  # the probe found one
    assert any(_names_patient(e, PATIENT_A) for e in events), "the search was traced nowhere"
    _, after = trace(world, patient, PATIENT_A)
    known = {event["id"] for event in before}
    searches = [
        e
        for e in after
        if e["id"] not in known
        and MODES[mode][2] in _purposes(e)
        and any(s.get("code") == "search-type" for s in e.get("subtype", []))
    ]
    assert searches, "the search is not in the patient's trail"
    if mode != "normal":
        # Once: the transaction's two references are two searches of one request (R17).
        assert _told(world, patient) == told + 1


# -- R16, R07: a person's search of the record they act for is in that record's trail ----------


PERSON_SEARCHES = [
    "DocumentReference?_summary=count",
    "DocumentReference?_count=0",
    "DocumentReference?category=99",  # finds nothing
    "List?_summary=count",
]


@pytest.mark.parametrize("query", PERSON_SEARCHES)
@pytest.mark.parametrize("who", ["parent", "patient"])
def test_r16_r07_a_persons_search_of_their_record_naming_no_patient_is_in_its_trail(
    world, who, query
):
    """R16, R07: a parent (or the patient) searching the record they act for without
    naming its patient (R04 lets them), for a count or finding nothing, accessed that
    record: the minor's (the patient's) trail shows the search, with its purpose (FAMRQT,
    PATRQT). Its event named no patient, as no result named one, so it was in no trail:
    a parent could count the minor's documents of any criteria, unseen by the minor and
    the other parent."""
    patient_id, token, purpose = {
        "parent": (PATIENT_M, parent_token(world), "FAMRQT"),
        "patient": (PATIENT_A, world.tokens.patient(PATIENT_A), "PATRQT"),
    }[who]
    holder = world.tokens.patient(patient_id)
    _, before = trace(world, holder, patient_id)
    response = world.client.get(f"/fhir/{query}", headers=auth(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    _, after = trace(world, holder, patient_id)
    known = {event["id"] for event in before}
    searches = [
        e
        for e in after
        if e["id"] not in known
        and purpose in _purposes(e)
        and f"GET /fhir/{query}" in _decoded(e)  # the query as asked (BALP)
    ]
    assert len(searches) == 1, "the search is not in the record's trail"


# -- R16, R17: a conditional PATCH's criteria are its sender's search -------------------------


STATUS_PATCH = json.dumps([{"op": "replace", "path": "/status", "value": "current"}])


@pytest.mark.parametrize(
    "criteria, status, if_match",
    [
        ("category=99", 404, None),  # none
        ("category=10", 412, 'W/"99"'),  # one, at another version: nothing is written
        ("status=current", 412, None),  # several
    ],
)
@pytest.mark.parametrize("mode", list(MODES))
def test_r16_r17_a_conditional_patchs_criteria_are_traced_as_its_senders_search(
    world, mode, criteria, status, if_match
):
    """R16, R17 (PDSm conditional PATCH): a practitioner who may read A's record PATCHes
    `DocumentReference?patient=A&<criteria>`; the answer says whether none (404), one (here
    412: its If-Match names another version) or several (412 multiple-matches) of the
    documents they may read match, and nothing is written. The criteria are searched by the
    server (they may name a document by identifier alone, R04), and only a match hidden
    from the sender was traced: the search is now in A's trail as theirs, and told in bris
    de glace and centre 15. It left no trace, and a practitioner probed the record freely."""
    patient = world.tokens.patient(PATIENT_A)
    _, before = trace(world, patient, PATIENT_A)
    told = _told(world, patient)
    headers = {"Content-Type": "application/json-patch+json"}
    if if_match:
        headers["If-Match"] = if_match
    response, events = new_events(
        world,
        lambda: world.client.patch(
            f"/fhir/DocumentReference?patient={PATIENT_A}&{criteria}",
            data=STATUS_PATCH,
            headers=auth(_token(world, mode), **headers),
        ),
    )
    assert response.status_code == status, response.get_data(as_text=True)
    assert not [e for e in events if e.get("action") == "U"]  # nothing was written
    _, after = trace(world, patient, PATIENT_A)
    known = {event["id"] for event in before}
    searches = [
        e
        for e in after
        if e["id"] not in known
        and MODES[mode][2] in _purposes(e)
        and any(s.get("code") == "search-type" for s in e.get("subtype", []))
    ]
    assert len(searches) == 1, "the conditional PATCH's search is not in the patient's trail"
    if mode != "normal":
        assert _told(world, patient) == told + 1


# -- R16 (XDS): an ITI-18's event names the patient its query searched -------------------------


def _adhoc_query(query_id: str, slots: list[tuple[str, str]]):
    from lxml import etree

    request = etree.Element(
        f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM}
    )
    etree.SubElement(request, f"{{{v.NS_QUERY}}}ResponseOption", returnType="ObjectRef")
    query = etree.SubElement(request, f"{{{v.NS_RIM}}}AdhocQuery", id=query_id)
    for name, value in slots:
        slot = etree.SubElement(query, f"{{{v.NS_RIM}}}Slot", name=name)
        values = etree.SubElement(slot, f"{{{v.NS_RIM}}}ValueList")
        etree.SubElement(values, f"{{{v.NS_RIM}}}Value").text = value
    return request


@pytest.mark.parametrize("kind", ["FindDocuments-nothing-found", "GetAssociations"])
def test_r16_an_iti18_event_names_the_patient_its_query_searched(xds, kind):
    """R16 (ITI-18; IHE ITI TF-2a 3.18.5.1.2: the Patient participant when known): the
    médecin traitant's query of a record finding no document, or answering associations
    only, accessed that record; its ITI-18 event names the patient, as its search's event
    does, and is in their trail. Its patients were those of the objects answered: none, so
    the ITI-18 event was in no trail."""
    from ihe_xds.stored_query import FIND_DOCUMENTS, GET_ASSOCIATIONS
    from tests.xds_builders import patient_cx

    patient_id, nir = xds.patient(9)
    if kind == "GetAssociations":
        xds.deposited_unique_id(nir)
        (document,) = xds.runtime.service.search(
            INTERNAL, "DocumentReference", [("patient", patient_id)]
        ).resources()[0]
        (entry_uuid,) = [
            i["value"] for i in document["identifier"] if i["value"].startswith("urn:uuid:")
        ]
        body = _adhoc_query(GET_ASSOCIATIONS, [("$uuid", f"('{entry_uuid}')")])
    else:
        body = _adhoc_query(
            FIND_DOCUMENTS,
            [
                ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
                ("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
            ],
        )
    response = xds.soap("/xds/registry", v.ACTION_ITI18, body, xds.security(XDS_GP, nir))
    assert registry_status(response)[0].endswith("Success")
    world = World(xds.client, xds.tokens, xds.runtime.service)
    _, events = trace(world, xds.tokens.patient(patient_id), patient_id)
    queries = [e for e in events if any(s.get("code") == "ITI-18" for s in e.get("subtype", []))]
    assert len(queries) == 1, "the ITI-18 event is not in the patient's trail"
    assert _names_patient(queries[0], patient_id)


# -- R17 (XDS): one transaction, one access, one notification -----------------------------------


def _retrieve_body(xds, unique_ids: list[str]):
    from lxml import etree

    request = etree.Element(f"{{{v.NS_XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": v.NS_XDSB})
    for unique_id in unique_ids:
        item = etree.SubElement(request, f"{{{v.NS_XDSB}}}DocumentRequest")
        etree.SubElement(item, f"{{{v.NS_XDSB}}}RepositoryUniqueId").text = xds.repository_id
        etree.SubElement(item, f"{{{v.NS_XDSB}}}DocumentUniqueId").text = unique_id
    return request


@pytest.mark.parametrize("transaction", ["ITI-43", "ITI-18"])
@pytest.mark.parametrize("mode", ["bris_de_glace", "centre_15"])
def test_r17_one_emergency_xds_transaction_is_told_once(xds, mode, transaction):
    """R17 ("one access is one notification"): a professional in bris de glace or centre
    15 retrieves two documents in one ITI-43, or runs one GetAssociations (two searches of
    the record): the patient is told once, with the reason. Each Binary read and each
    search told them again: two notifications for one access."""
    from ihe_xds.stored_query import GET_ASSOCIATIONS

    patient_id, nir = xds.patient(11)
    first, second = xds.deposited_unique_id(nir), xds.deposited_unique_id(nir)
    world = World(xds.client, xds.tokens, xds.runtime.service)
    patient = xds.tokens.patient(patient_id)
    told = _told(world, patient)
    security = xds.security("810000000777", nir, mode=mode, reason="Patient inconscient")
    if transaction == "ITI-43":
        response = xds.soap(
            "/xds/repository", v.ACTION_ITI43, _retrieve_body(xds, [first, second]), security
        )
        assert response.status_code == 200
        assert first.encode() in response.get_data() and second.encode() in response.get_data()
    else:
        documents = xds.runtime.service.search(
            INTERNAL, "DocumentReference", [("patient", patient_id)]
        ).resources()[0]
        entry_uuid = next(
            i["value"] for i in documents[0]["identifier"] if i["value"].startswith("urn:uuid:")
        )
        body = _adhoc_query(GET_ASSOCIATIONS, [("$uuid", f"('{entry_uuid}')")])
        response = xds.soap("/xds/registry", v.ACTION_ITI18, body, security)
        assert registry_status(response)[0].endswith("Success")
    assert _told(world, patient) == told + 1


# -- R16: a deleted document's history is a read of it ----------------------------------------


@pytest.mark.parametrize("door", ["_history", "read"])
def test_r16_the_authors_read_of_a_deleted_documents_history_is_traced(fresh_world, door):
    """R16: the médecin traitant deletes (REST DELETE) a document they wrote, then reads its
    history (every version's content, theirs only: `Facts.content`), or the document (410
    Gone). Each is a read of A's record, in A's trail. The gate audited a read only when the
    current version was no deletion: the whole history of a deleted document was served
    with no event."""
    world = fresh_world
    gp = world.tokens.practitioner(GP)
    written = document("a-visible")
    for element in ("meta", "securityLabel", "relatesTo"):
        written.pop(element, None)
    written["author"] = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}]
    internal_put(world.service)(written, DELETED_DOC)
    deleted = world.client.delete(f"/fhir/DocumentReference/{DELETED_DOC}", headers=auth(gp))
    assert deleted.status_code == 204, deleted.get_data(as_text=True)
    path = f"DocumentReference/{DELETED_DOC}" + ("/_history" if door == "_history" else "")
    response, events = new_events(
        world, lambda: world.client.get(f"/fhir/{path}", headers=auth(gp))
    )
    assert response.status_code == (200 if door == "_history" else 410)
    if door == "_history":
        assert len(response.get_json()["entry"]) == 2  # the deletion and the version before
    assert any(_names_patient(e, PATIENT_A) for e in events), "the read was traced nowhere"
    patient = world.tokens.patient(PATIENT_A)
    _, trail = trace(world, patient, PATIENT_A)
    assert any(
        e["action"] == "R"
        and "TREAT" in _purposes(e)
        and f"DocumentReference/{DELETED_DOC}" in json.dumps(e)
        for e in trail
    ), "the read is not in the patient's trail"


# -- held: controls ---------------------------------------------------------------------------


def _held_doors() -> dict[str, tuple[str, str, dict]]:
    document_path = f"DocumentReference/{doc_id('a-visible')}"
    return {
        "HEAD": ("HEAD", document_path, {}),
        "If-None-Match": ("GET", document_path, {"If-None-Match": 'W/"1"'}),
        "If-Modified-Since": (
            "GET",
            document_path,
            {"If-Modified-Since": "Mon, 01 Jan 2035 00:00:00 GMT"},
        ),
        "vread": ("GET", f"{document_path}/_history/1", {}),
        "_history": ("GET", f"{document_path}/_history", {}),
        "Binary-Range": ("GET", f"Binary/{binary_id('a-visible')}", {"Range": "bytes=0-3"}),
        "_summary=true": ("GET", f"DocumentReference?patient={PATIENT_A}&_summary=true", {}),
        "_elements": ("GET", f"DocumentReference?patient={PATIENT_A}&_elements=id", {}),
        "_total=accurate": (
            "GET",
            f"DocumentReference?patient={PATIENT_A}&_total=accurate&_count=1",
            {},
        ),
        "_include=*": ("GET", f"DocumentReference?patient={PATIENT_A}&_include=*", {}),
        "_revinclude=*": ("GET", f"Patient?_id={PATIENT_A}&_revinclude=*", {}),
        "_has": (
            "GET",
            f"Patient?_id={PATIENT_A}&_has:DocumentReference:patient:category=10",
            {},
        ),
    }


@pytest.mark.parametrize("door", list(_held_doors()))
@pytest.mark.parametrize("mode", ["normal", "bris_de_glace"])
def test_r16_held_doors_leave_an_event_in_the_patients_trail(world, mode, door):
    """R16, R17 (held): each of these doors answers with A's data and leaves, in A's trail,
    an event with the requester's purpose; in bris de glace A is told."""
    method, path, headers = _held_doors()[door]
    patient = world.tokens.patient(PATIENT_A)
    told = _told(world, patient)
    response, events = new_events(
        world,
        lambda: world.client.open(
            f"/fhir/{path}", method=method, headers=auth(_token(world, mode), **headers)
        ),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert any(
        _names_patient(e, PATIENT_A) and MODES[mode][2] in _purposes(e) and e["outcome"] == "0"
        for e in events
    )
    if mode != "normal":
        assert _told(world, patient) == told + 1


@pytest.mark.parametrize("door", ["conditional PATCH", "conditional PUT"])
def test_r17_one_emergency_request_searching_then_writing_is_told_once(fresh_world, door):
    """R17 ("one access is one notification"): a professional in bris de glace lifts
    INVISIBLE_PATIENT from one of A's documents by a conditional PATCH (PDSm, by identifier)
    or a conditional update: the request searches the record, then writes; A is told once.
    The search and the write each told it."""
    world = fresh_world
    patient = world.tokens.patient(PATIENT_A)
    told = _told(world, patient)
    token = _token(world, "bris_de_glace")
    criteria = f"identifier={doc_identifier('a-invisible')}"
    if door == "conditional PATCH":
        response = world.client.patch(
            f"/fhir/DocumentReference?{criteria}",
            data=json.dumps([{"op": "remove", "path": "/securityLabel"}]),
            headers=auth(token, **{"Content-Type": "application/json-patch+json"}),
        )
    else:
        lifted = world.service.read(INTERNAL, "DocumentReference", doc_id("a-invisible")).json()
        for element in ("id", "meta", "securityLabel"):
            lifted.pop(element, None)
        response = world.client.put(
            f"/fhir/DocumentReference?{criteria}&patient={PATIENT_A}",
            data=json.dumps(lifted),
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "INVISIBLE_PATIENT" not in response.get_data(as_text=True)
    assert _told(world, patient) == told + 1
