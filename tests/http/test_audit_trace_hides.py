"""The patient's trace names nothing hidden from them (R16 within R07, R14, R18).

Issue #18, finding 2: a Binary read was audited with the Binary's id and no label, and a
refusal event carried the raw request path; the patient (or a parent of a minor), searching
the AuditEvents of their record, learned the ids of documents hidden from them. Here the
hidden document is read legitimately by a professional who may see it, probed by
professionals who may not, and pointed at by the patient or parent themselves (finding 1's
attack); then the raw text of the patient's and the parent's `GET /fhir/AuditEvent?patient=`
must name neither the hidden DocumentReference nor its Binary (nor, over XDS, its uniqueId).
"""

from __future__ import annotations

import base64
import json

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY, SYSTEM_IDNAT_PS
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_binary_ownership import deposit_bundle, locations, parent_token, pointer
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    BLOCKED,
    GP,
    PATIENT_A,
    PATIENT_M,
    STRANGER,
    World,
    _build_world,
    binary_id,
    doc_id,
    document,
    logged_events,
)
from tests.http.test_xds_endpoints import GP as XDS_GP
from tests.http.test_xds_endpoints import Xds


@pytest.fixture
def world(tmp_path):
    app, built = _build_world(tmp_path / "var")
    yield built
    app.extensions["fhir"].store.close()


def trace(world: World, token: str, patient_id: str) -> tuple[str, list[dict]]:
    """Every page of the AuditEvents `token` is shown for the record: (raw text, events)."""
    url = f"/fhir/AuditEvent?patient={patient_id}&_count=100"
    texts, events = [], []
    while url:
        response = world.client.get(url, headers=auth(token))
        assert response.status_code == 200, response.get_data(as_text=True)
        texts.append(response.get_data(as_text=True))
        bundle = response.get_json()
        events += [e["resource"] for e in bundle.get("entry", [])]
        texts += [_decoded(e["resource"]) for e in bundle.get("entry", [])]
        url = next((x["url"] for x in bundle.get("link", []) if x["relation"] == "next"), None)
        if url:
            url = url[url.index("/fhir/") :]
    return "\n".join(texts), events


def _decoded(event: dict) -> str:
    """What the base64 values of an event say (a raw request, a query), as text: a reader
    decodes them as easily as anything else."""
    values = [entity.get("query") for entity in event.get("entity", [])]
    values += [
        detail.get("valueBase64Binary")
        for entity in event.get("entity", [])
        for detail in entity.get("detail", [])
    ]
    return "\n".join(
        base64.b64decode(value).decode("utf-8", "replace") for value in values if value
    )


def is_refusal(event: dict) -> bool:
    return any(s.get("code") == "AuthZ-Consent" for s in event.get("subtype", []))


def probe(world: World, token: str, key: str) -> None:
    """Reads of a document and of its Binary: read, vread, history, raw and FHIR Binary."""
    for path in (
        f"/fhir/DocumentReference/{doc_id(key)}",
        f"/fhir/DocumentReference/{doc_id(key)}/_history/1",
        f"/fhir/Binary/{binary_id(key)}",
        f"/fhir/Binary/{binary_id(key)}?_format=json",
        f"/fhir/Binary/{binary_id(key)}/_history",
    ):
        world.get(token, path, Accept="application/pdf")


def point_at(world: World, token: str, patient_id: str, key: str, author: dict) -> None:
    """Finding 1's attack (refused since, see test_binary_ownership.py), then a read through
    it: whatever the answers, the trace must not name the document."""
    world.client.post(
        "/fhir/DocumentReference",
        data=json.dumps(pointer(patient_id, binary_id(key), author=author)),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )
    world.get(token, f"/fhir/Binary/{binary_id(key)}", Accept="application/pdf")


def assert_names_nothing_hidden(text: str, key: str) -> None:
    assert doc_id(key) not in text, "the trace names the hidden document"
    assert binary_id(key) not in text, "the trace names the hidden document's Binary"


def test_r14_patient_audit_trail_does_not_name_invisible_patient_document(world):
    """Finding 2: after a professional who may see it read the INVISIBLE_PATIENT document and
    its Binary, professionals who may not tried to, and the patient pointed at it, the
    patient's AuditEvents name neither the document nor its Binary."""
    hidden = "a-invisible"
    probe(world, world.tokens.practitioner(GP), hidden)  # served: R14 does not hide it from them
    probe(world, world.tokens.practitioner(BLOCKED), hidden)  # refused: R09
    probe(world, world.tokens.practitioner(STRANGER), hidden)  # refused: R10
    patient = world.tokens.patient(PATIENT_A)
    probe(world, patient, hidden)
    point_at(world, patient, PATIENT_A, hidden, {"reference": f"Patient/{PATIENT_A}"})
    text, _ = trace(world, patient, PATIENT_A)
    assert_names_nothing_hidden(text, hidden)
    # The control: the trace is there, with the refusals, and names what the patient may see.
    probe(world, world.tokens.practitioner(GP), "a-visible")
    text, events = trace(world, patient, PATIENT_A)
    assert any(is_refusal(e) for e in events) and binary_id("a-visible") in text
    assert_names_nothing_hidden(text, hidden)


def test_r07_representative_audit_trail_does_not_name_invisible_rl_document(world):
    """Finding 2, for a parent: the AuditEvents of accesses to an
    INVISIBLE_REPRESENTANTS_LEGAUX document (its Binary, refusals naming it) are not shown."""
    hidden = "m-invisible-rl"
    probe(world, world.tokens.practitioner(AUTHORIZED), hidden)  # served
    probe(world, world.tokens.practitioner(STRANGER), hidden)  # refused: R10
    parent = parent_token(world)
    probe(world, parent, hidden)
    point_at(world, parent, PATIENT_M, hidden, {"reference": "RelatedPerson/x"})
    text, events = trace(world, parent, PATIENT_M)
    assert_names_nothing_hidden(text, hidden)
    assert any(is_refusal(e) for e in events), "the parent's own refusals are missing"
    # The minor's own view still shows it (the label hides it from representatives only).
    minor, _ = trace(world, world.tokens.patient(PATIENT_M), PATIENT_M)
    assert binary_id(hidden) in minor


def test_r16_refusal_events_name_the_type_and_interaction_not_the_path(world):
    """A refusal is recorded with the resource type and the interaction refused; the request
    path (which names the resource) is not kept anywhere in the event."""
    probe(world, world.tokens.practitioner(STRANGER), "a-visible")
    text, events = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    refusals = [event for event in events if is_refusal(event)]
    assert refusals, "the refusals were not recorded"
    details = {
        (d["type"], d.get("valueString"))
        for event in refusals
        for entity in event["entity"]
        for d in entity.get("detail", [])
    }
    assert ("resource-type", "DocumentReference") in details
    assert ("resource-type", "Binary") in details
    assert not any(kind == "request" for kind, _ in details)
    assert doc_id("a-visible") not in text


@pytest.fixture
def xds(app, client, tokens, data_dir):
    return Xds(app, client, tokens, data_dir)


def test_r14_retrieve_of_invisible_patient_document_is_not_named_to_the_patient(xds):
    """ITI-41 deposit of an INVISIBLE_PATIENT document, ITI-43 retrieve and ITI-68 by the
    médecin traitant: the patient's AuditEvents name neither the document, nor its Binary,
    nor its uniqueId."""
    patient_id, nir = xds.patient(1)
    request, response = xds.deposit(nir, masking=("INVISIBLE_PATIENT",))
    assert response.status_code == 200, response.get_data(as_text=True)
    (unique_id,) = request.document_unique_ids.values()
    retrieved = xds.retrieve([unique_id], XDS_GP, nir)
    assert retrieved.status_code == 200 and b"ClinicalDocument" in retrieved.get_data()
    (document,) = [
        stored.json()
        for stored in xds.runtime.service.find(
            INTERNAL, "DocumentReference", [("patient", patient_id)]
        )
    ]
    binary = document["content"][0]["attachment"]["url"].split("/")[1]
    gp = xds.tokens.practitioner(XDS_GP)
    assert xds.client.get(f"/fhir/Binary/{binary}", headers=auth(gp)).status_code == 200
    patient = xds.tokens.patient(patient_id)
    shown = xds.client.get(f"/fhir/AuditEvent?patient={patient_id}", headers=auth(patient))
    assert shown.status_code == 200
    text = shown.get_data(as_text=True)
    assert shown.get_json().get("entry"), "the patient's trace is empty: the search is broken"
    for name in (document["id"], binary, unique_id):
        assert name not in text, name


def _get_documents(xds, nir: str, *unique_ids: str):
    """ITI-18 GetDocuments by uniqueId, 50 to a rim:Value (the registry takes 100), as the
    médecin traitant."""
    from lxml import etree

    from ihe_xds import vocabulary as v
    from ihe_xds.stored_query import GET_DOCUMENTS

    body = etree.Element(
        f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM}
    )
    etree.SubElement(body, f"{{{v.NS_QUERY}}}ResponseOption", returnType="ObjectRef")
    query = etree.SubElement(body, f"{{{v.NS_RIM}}}AdhocQuery", id=GET_DOCUMENTS)
    slot = etree.SubElement(query, f"{{{v.NS_RIM}}}Slot", name="$XDSDocumentEntryUniqueId")
    values = etree.SubElement(slot, f"{{{v.NS_RIM}}}ValueList")
    for start in range(0, len(unique_ids), 50):
        listed = ", ".join(f"'{unique_id}'" for unique_id in unique_ids[start : start + 50])
        etree.SubElement(values, f"{{{v.NS_RIM}}}Value").text = f"({listed})"
    return xds.soap("/xds/registry", v.ACTION_ITI18, body, xds.security(XDS_GP, nir))


def test_r14_stored_query_naming_hidden_document_is_not_shown_to_the_patient(xds):
    """ITI-18 GetDocuments by the uniqueId of an INVISIBLE_PATIENT document, by the médecin
    traitant who may see it: the ITI-18 event keeps the request as asked (its base64
    `query`), so it must carry the document's labels, and the patient's trace hide it. The
    control: the same query by a visible document's uniqueId stays in the trace."""
    patient_id, nir = xds.patient(1)
    hidden = xds.deposited_unique_id(nir, masking=("INVISIBLE_PATIENT",))
    visible = xds.deposited_unique_id(nir)
    assert _get_documents(xds, nir, hidden).status_code == 200
    assert _get_documents(xds, nir, visible).status_code == 200
    patient = xds.tokens.patient(patient_id)
    shown = xds.client.get(
        f"/fhir/AuditEvent?patient={patient_id}&_count=100", headers=auth(patient)
    )
    assert shown.status_code == 200
    events = [entry["resource"] for entry in shown.get_json().get("entry", [])]
    text = shown.get_data(as_text=True) + "\n".join(_decoded(event) for event in events)
    assert hidden not in text, "the trace names the hidden document's uniqueId"
    assert visible in text, "the control query is not in the trace: the check proves nothing"


def test_r14_search_naming_hidden_document_is_not_shown_to_the_patient(world):
    """Deliverable 5: a search event keeps its query as asked (BALP), so a professional who
    may see the INVISIBLE_PATIENT document and searches by its id (`List?item=`,
    `relatesto=`), getting unlabelled resources back, made the patient's trace name it. The
    event now carries the labels of what its criteria name, and the patient's view hides it."""
    hidden, gp = "a-invisible", world.tokens.practitioner(GP)
    searches = (
        f"/fhir/List?patient={PATIENT_A}&item=DocumentReference/{doc_id(hidden)}",
        # Plain ids: read as every labelled type, whatever the parameter's targets, since the
        # event keeps the query as asked (`subject` never names a document, but its value
        # would be shown all the same).
        f"/fhir/List?patient={PATIENT_A}&item={doc_id(hidden)}",
        f"/fhir/DocumentReference?patient={PATIENT_A}&subject={doc_id(hidden)}",
        f"/fhir/DocumentReference?patient={PATIENT_A}&relatesto={doc_id(hidden)}",
        f"/fhir/DocumentReference?patient={PATIENT_A}&_has:List:item:_id=x&relatesto=DocumentReference/{doc_id(hidden)}",
    )
    for path in searches:
        found = world.client.get(path, headers=auth(gp))
        assert found.status_code == 200, found.get_data(as_text=True)
    assert world.client.get(searches[0], headers=auth(gp)).get_json()["entry"], "no List found"
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    assert_names_nothing_hidden(text, hidden)
    # The control: the professional's search by a visible document is in the patient's trace.
    world.client.get(
        f"/fhir/List?patient={PATIENT_A}&item=DocumentReference/{doc_id('a-visible')}",
        headers=auth(gp),
    )
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    assert doc_id("a-visible") in text
    assert_names_nothing_hidden(text, hidden)


def test_r14_search_naming_hidden_document_by_its_unique_id_is_not_shown_to_the_patient(world):
    """The same fact spelled by identifier: a professional who may see the INVISIBLE_PATIENT
    document searches by its identifier (an XDS uniqueId) with a criterion it fails, so it is
    not among the matches that would label the event. The event keeps the query as asked;
    it now carries the labels of what its `identifier` criterion names, at a level searching
    DocumentReference or List, and the patient's view hides it."""
    hidden, gp = "a-invisible", world.tokens.practitioner(GP)
    read = world.client.get(f"/fhir/DocumentReference/{doc_id(hidden)}", headers=auth(gp))
    assert read.status_code == 200, read.get_data(as_text=True)
    master = read.get_json()["identifier"][0]
    unique_id = master["value"]
    for criterion in (
        f"identifier={master['system']}|{unique_id}",
        f"identifier={unique_id}",
        f"relatesto.identifier={unique_id}",
    ):
        path = f"/fhir/DocumentReference?patient={PATIENT_A}&status=entered-in-error&{criterion}"
        found = world.client.get(path, headers=auth(gp))
        assert found.status_code == 200, found.get_data(as_text=True)
        assert not found.get_json().get("entry"), "the criterion was meant to match nothing"
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    assert unique_id not in text, "the trace names the hidden document's uniqueId"
    # The control: the same search by a visible document's uniqueId is in the trace.
    shown = world.client.get(f"/fhir/DocumentReference/{doc_id('a-visible')}", headers=auth(gp))
    visible = shown.get_json()["identifier"][0]["value"]
    world.client.get(
        f"/fhir/DocumentReference?patient={PATIENT_A}&status=entered-in-error&identifier={visible}",
        headers=auth(gp),
    )
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    assert visible in text
    assert unique_id not in text


@pytest.mark.parametrize(
    "criterion",
    [
        "DocumentReference?patient={patient}&identifier=|{unique_id}",
        "DocumentReference?patient={patient}&identifier=urn:oid:1.2.3|{unique_id}",
        "DocumentReference?patient={patient}&identifier:of-type="
        "http://terminology.hl7.org/CodeSystem/v2-0203|MR|{unique_id}",
        "DocumentReference?patient={patient}&identifier={upper}",
        "DocumentReference?patient={patient}&_has:List:item:identifier={unique_id}",
        "List?patient={patient}&identifier={unique_id}",
        "DocumentReference?patient={patient}&identifier=%20{unique_id}%20",
    ],
    ids=[
        "no-system",
        "other-system",
        "of-type",
        "uuid-in-capitals",
        "has-list",
        "list-level",
        "spaces-around",
    ],
)
def test_r14_a_hidden_documents_unique_id_spelled_otherwise_is_not_shown_to_the_patient(
    world, criterion
):
    """The uniqueId of an INVISIBLE_PATIENT document in an `identifier` criterion that does
    not match it: under another system or none, as an `:of-type` value, a UUID URN in
    capitals (case-blind, RFC 4122), at a List level. The event keeps the query as asked,
    which names the document whatever the criterion's form; so it carries the document's
    labels and the patient's view hides it."""
    hidden, gp = "a-invisible", world.tokens.practitioner(GP)
    read = world.client.get(f"/fhir/DocumentReference/{doc_id(hidden)}", headers=auth(gp))
    assert read.status_code == 200, read.get_data(as_text=True)
    unique_id = read.get_json()["identifier"][0]["value"]
    assert unique_id.startswith("urn:uuid:") and unique_id != unique_id.upper()
    path = criterion.format(patient=PATIENT_A, unique_id=unique_id, upper=unique_id.upper())
    found = world.client.get(f"/fhir/{path}", headers=auth(gp))
    assert found.status_code == 200, found.get_data(as_text=True)
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    for spelling in (unique_id, unique_id.upper()):
        assert spelling not in text, "the trace names the hidden document's uniqueId"


@pytest.mark.parametrize(
    "criterion",
    [
        "_id={upper}",
        "relatesto=DocumentReference/{upper}",
        "relatesto=https://dmp.example/fhir/DocumentReference/{document}",
        "relatesto=urn:uuid:{document}",
        "_has:List:item:_id={document}",
        "related={unique_id}",
        "relatesto:identifier={unique_id}",
    ],
    ids=[
        "id-in-capitals",
        "reference-in-capitals",
        "absolute-reference-other-base",
        "uuid-urn-reference",
        "has-list-id",
        "reference-to-unique-id",
        "reference-identifier-modifier",
    ],
)
def test_r14_a_hidden_documents_id_spelled_otherwise_is_not_shown_to_the_patient(world, criterion):
    """The id or uniqueId of an INVISIBLE_PATIENT document in a criterion that does not
    match it: its UUID in capitals (case-blind, RFC 4122), an absolute reference under the
    public host name a client behind a proxy uses, a UUID URN, `_id` under `_has:List`
    (read as every labelled type, as a plain id is at the top), a reference to its uniqueId
    or by `:identifier`. The event keeps the query as asked; it must carry the document's
    labels so the patient's view hides it."""
    hidden, gp = "a-invisible", world.tokens.practitioner(GP)
    document = doc_id(hidden)
    read = world.client.get(f"/fhir/DocumentReference/{document}", headers=auth(gp))
    assert read.status_code == 200, read.get_data(as_text=True)
    unique_id = read.get_json()["identifier"][0]["value"]
    path = criterion.format(document=document, upper=document.upper(), unique_id=unique_id)
    found = world.client.get(
        f"/fhir/DocumentReference?patient={PATIENT_A}&status=entered-in-error&{path}",
        headers=auth(gp),
    )
    assert found.status_code == 200, found.get_data(as_text=True)
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    for spelling in (document, document.upper(), unique_id):
        assert spelling not in text, "the trace names the hidden document"


@pytest.mark.parametrize("by", ["_id", "identifier"])
def test_r14_a_hidden_document_named_after_decoys_is_not_shown_to_the_patient(world, by):
    """A professional who may see the INVISIBLE_PATIENT document names it after 25 decoys,
    in a criterion that matches nothing: every value a query names is looked up, however
    many (a cap on the lookups let the last one through unlabelled, shown in the
    patient's trace)."""
    hidden, gp = "a-invisible", world.tokens.practitioner(GP)
    read = world.client.get(f"/fhir/DocumentReference/{doc_id(hidden)}", headers=auth(gp))
    assert read.status_code == 200, read.get_data(as_text=True)
    name = doc_id(hidden) if by == "_id" else read.get_json()["identifier"][0]["value"]
    decoys = [f"decoy-{n:02d}" for n in range(25)]
    path = (
        f"/fhir/DocumentReference?patient={PATIENT_A}&status=entered-in-error"
        f"&{by}={','.join([*decoys, name])}"
    )
    found = world.client.get(path, headers=auth(gp))
    assert found.status_code == 200, found.get_data(as_text=True)
    assert not found.get_json().get("entry"), "the criterion was meant to match nothing"
    world.client.get(f"/fhir/DocumentReference/{doc_id('a-visible')}", headers=auth(gp))
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    assert doc_id("a-visible") in text, "the patient's trace is broken"
    assert name not in text, "the trace names the hidden document"
    assert "decoy-24" not in text  # the search's event is hidden whole


@pytest.mark.parametrize(
    "criterion",
    [
        "identifier:text={unique_id}",
        "identifier:text={upper}",
        "identifier={unique_id}|",
        "identifier={unique_id}|decoy",
        "identifier:of-type={unique_id}|MR|decoy",
        "relatesto:identifier={unique_id}|decoy",
        "_has:List:item:identifier:text={unique_id}",
    ],
    ids=[
        "text",
        "text-in-capitals",
        "as-a-system",
        "as-a-system-before-a-value",
        "as-an-of-type-system",
        "as-a-reference-identifier-system",
        "has-list-text",
    ],
)
def test_r14_a_hidden_documents_unique_id_in_any_part_of_a_token_is_not_shown_to_the_patient(
    world, criterion
):
    """The uniqueId of an INVISIBLE_PATIENT document in an `identifier` criterion, not as
    its value but as its `:text`, its system (`uid|`, `uid|decoy`), an `:of-type` or a
    reference `:identifier` system: the event keeps the query as asked, which shows the
    uniqueId whatever part of the token it sits in; so it carries the document's labels and
    the patient's view hides it (R14, R18)."""
    hidden, gp = "a-invisible", world.tokens.practitioner(GP)
    read = world.client.get(f"/fhir/DocumentReference/{doc_id(hidden)}", headers=auth(gp))
    assert read.status_code == 200, read.get_data(as_text=True)
    unique_id = read.get_json()["identifier"][0]["value"]
    path = criterion.format(unique_id=unique_id, upper=unique_id.upper())
    found = world.client.get(
        f"/fhir/DocumentReference?patient={PATIENT_A}&status=entered-in-error&{path}",
        headers=auth(gp),
    )
    assert found.status_code == 200, found.get_data(as_text=True)
    world.client.get(f"/fhir/DocumentReference/{doc_id('a-visible')}", headers=auth(gp))
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    assert doc_id("a-visible") in text, "the patient's trace is broken"
    for spelling in (unique_id, unique_id.upper()):
        assert spelling not in text, "the trace names the hidden document's uniqueId"


def test_r18_a_stored_query_naming_more_values_than_a_search_may_hold_is_not_looked_up(
    xds, monkeypatch
):
    """An ITI-18 request is read raw for the values it names (a slot the parser refuses
    counts too), and each one was looked up: 5,000 decoys in a GetDocuments the registry
    refuses (at most 100 values a parameter) cost 5,000 lookups, a 32 MB body over a
    million, for one request. Past what a search may hold (`MAX_TESTS`), nothing is looked
    up and the event keeps its query id without the request, so a hidden document's
    uniqueId among the decoys reaches no trace unlabelled either (R14, R18: fail closed)."""
    patient_id, nir = xds.patient(1)
    request, response = xds.deposit(nir, masking=("INVISIBLE_PATIENT",))
    assert response.status_code == 200, response.get_data(as_text=True)
    (hidden,) = request.document_unique_ids.values()
    facts = xds.runtime.service.gate.facts
    looked_up: list[object] = []
    search = facts.internal_search
    monkeypatch.setattr(
        facts, "internal_search", lambda *a, **k: looked_up.append(a) or search(*a, **k)
    )
    decoys = [f"1.2.250.1.999.{n}" for n in range(5000)]
    answer = _get_documents(xds, nir, *decoys, hidden)
    assert answer.status_code == 200, answer.get_data(as_text=True)
    assert b"RegistryError" in answer.get_data(), "the registry was meant to refuse it"
    assert looked_up == [], f"{len(looked_up)} lookups for one refused request"
    recorded = xds.runtime.store.history("AuditEvent", None, since=None, count=1000, cursor=None)
    events = [entry.resource.json() for entry in recorded.entries]
    queries = [e for e in events if "ITI-18" in json.dumps(e.get("subtype", []))]
    assert queries, "the request's event is missing"
    assert all(hidden not in _decoded(event) for event in queries)


def test_r14_the_deletion_of_an_invisible_patient_document_is_not_shown_to_the_patient(world):
    """A delete's AuditEvent took its labels from the tombstone the delete stores, which has
    none: when the author deleted an INVISIBLE_PATIENT document, the patient's trace showed
    an unlabelled delete event naming it, and the patient learned the id of a document
    hidden from them. The event carries the labels of the version deleted, so it is hidden
    from whom that document was hidden from."""
    deleted = "0b0b0b0b-0000-4000-8000-000000000777"
    resource = document("a-invisible")
    resource["author"] = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}]
    resource.pop("relatesTo", None)
    world.service.update(INTERNAL, "DocumentReference", deleted, {**resource, "id": deleted})
    gp, patient = world.tokens.practitioner(GP), world.tokens.patient(PATIENT_A)
    answer = world.client.delete(f"/fhir/DocumentReference/{deleted}", headers=auth(gp))
    assert answer.status_code == 204, answer.get_data(as_text=True)
    assert world.get(gp, f"/fhir/DocumentReference/{deleted}").status_code == 410
    # The control: the deletion is traced, with the document's label.
    (event,) = [
        e
        for e in logged_events(world)
        if e["action"] == "D" and deleted in json.dumps(e.get("entity"))
    ]
    assert {c["code"] for c in event["meta"].get("security", [])} == {"INVISIBLE_PATIENT"}
    world.get(gp, f"/fhir/DocumentReference/{doc_id('a-visible')}")
    text, _ = trace(world, patient, PATIENT_A)
    assert doc_id("a-visible") in text, "the trace does not show what it should"
    assert deleted not in text, "the patient's trace names the deleted hidden document"


def _deposited(world: World, patient_id: str, *, binary_first: bool, label: str | None = None):
    """Type -> id of a document and its Binary the GP deposits in one transaction."""
    labelled = (
        {"meta": {"security": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": label}]}}
        if label
        else {}
    )
    response = world.client.post(
        "/fhir",
        data=json.dumps(deposit_bundle(patient_id, binary_first=binary_first, **labelled)),
        headers=auth(world.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return locations(response)


def _create_event_of(world: World, reference: str) -> dict:
    (event,) = [
        e
        for e in logged_events(world)
        if e["action"] == "C"
        and any(
            (x.get("what") or {}).get("reference", "").startswith(reference) for x in e["entity"]
        )
    ]
    return event


@pytest.mark.parametrize("binary_first", [False, True], ids=["document-first", "binary-first"])
def test_r16_a_deposited_binarys_create_is_in_its_documents_patients_trail(world, binary_first):
    """A Binary deposited with its document (a transaction, an ITI-65) is that document's
    content: its create is an access to the patient's record, in the patient's trail, as
    its reads are. Its event named no patient, so the record's trail missed it, whichever
    order the Bundle listed the two in (R16: one event per patient concerned)."""
    created = _deposited(world, PATIENT_A, binary_first=binary_first)
    event = _create_event_of(world, f"Binary/{created['Binary']}")
    patients = [
        (x.get("what") or {}).get("reference")
        for x in event["entity"]
        if (x.get("role") or {}).get("code") == "1"
    ]
    assert patients == [f"Patient/{PATIENT_A}"]
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    assert created["Binary"] in text, "the patient's trail misses the Binary's deposit"


@pytest.mark.parametrize("binary_first", [False, True], ids=["document-first", "binary-first"])
def test_r14_the_binary_of_an_invisible_patient_deposit_is_not_shown_to_the_patient(
    world, binary_first
):
    """The Binary's create event, now in the patient's record, carries its document's
    INVISIBLE_PATIENT label, as the Binary's reads do: the patient's trail names neither
    the document nor its content."""
    created = _deposited(world, PATIENT_A, binary_first=binary_first, label="INVISIBLE_PATIENT")
    event = _create_event_of(world, f"Binary/{created['Binary']}")
    assert {c["code"] for c in event["meta"].get("security", [])} >= {"INVISIBLE_PATIENT"}
    world.get(world.tokens.practitioner(GP), f"/fhir/DocumentReference/{doc_id('a-visible')}")
    text, _ = trace(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    assert doc_id("a-visible") in text, "the trace does not show what it should"
    assert created["Binary"] not in text
    assert created["DocumentReference"] not in text


@pytest.mark.parametrize(
    "request_url",
    [
        "/fhir/DocumentReference/{visible}/_history?x={hidden}",
        "/fhir/DocumentReference?patient={patient}&_pretty={hidden}",
        "/fhir/DocumentReference?patient={patient}&_format={hidden}",
        "/fhir/DocumentReference/{visible}/_history?_since=2000-01-01&_since={hidden}",
        "/fhir/DocumentReference/{visible}/_history?_count=1&_count={hidden}",
        "/fhir/DocumentReference/{visible}/_history?_format=json&_format={hidden}",
        "/fhir/DocumentReference/{visible}/_history?_since=&_since={hidden}",
        "/fhir/DocumentReference/{visible}/_history?_cursor={hidden}",
    ],
    ids=[
        "history-unknown-parameter",
        "_pretty",
        "_format",
        "history-_since-twice",
        "history-_count-twice",
        "history-_format-twice",
        "history-empty-_since-then-a-value",
        "history-unreadable-_cursor",
    ],
)
def test_r14_a_hidden_documents_id_in_a_value_that_is_no_criterion_is_not_shown_to_the_patient(
    world, request_url
):
    """A search or history event keeps its request as asked. A value the interaction did not
    read (an instance history's unknown parameter, ignored; a `_pretty` or `_format` checked
    only once the answer was made; a history parameter's second value, only the first being
    read; a history cursor refused by the store after the access was audited) went into the
    patient's trace as the professional wrote it, so a hidden document's id the GP put there
    reached the patient. Such a request is now refused before the interaction, like a
    search's unknown parameter."""
    hidden = doc_id("a-invisible")
    gp, patient = world.tokens.practitioner(GP), world.tokens.patient(PATIENT_A)
    url = request_url.format(visible=doc_id("a-visible"), patient=PATIENT_A, hidden=hidden)
    assert world.get(gp, url).status_code in (400, 406)
    world.get(gp, f"/fhir/DocumentReference/{doc_id('a-visible')}")
    text, _ = trace(world, patient, PATIENT_A)
    assert doc_id("a-visible") in text, "the trace does not show what it should"
    assert hidden not in text


def test_r14_a_hidden_documents_id_carried_in_a_history_cursor_is_not_shown_to_the_patient(
    world,
):
    """A history cursor is the client's to send back, and the history's event keeps the
    request as asked. A cursor holding a position the store reads and, beside it, a value
    it never reads (a hidden document's id) was served, and the patient, decoding the
    event's query and then the cursor, read the id: a cursor holding more than the
    server's own position is refused before the interaction."""
    hidden = doc_id("a-invisible")
    gp, patient = world.tokens.practitioner(GP), world.tokens.patient(PATIENT_A)
    forged = base64.urlsafe_b64encode(json.dumps({"after": 2**62, "x": hidden}).encode())
    cursor = forged.decode().rstrip("=")
    visible = doc_id("a-visible")
    asked = world.get(gp, f"/fhir/DocumentReference/{visible}/_history?_cursor={cursor}")
    assert asked.status_code == 400, asked.get_data(as_text=True)
    world.get(gp, f"/fhir/DocumentReference/{visible}")
    text, _ = trace(world, patient, PATIENT_A)
    assert visible in text, "the trace does not show what it should"
    assert cursor not in text
