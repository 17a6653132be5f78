"""Attack pass on R16 (every access is traced, in the trail of the patient it concerns) and
R17 (the patient is told of every bris de glace and centre 15 access), door by door.

Tried, by an authorized professional, a stranger, and in bris de glace and centre 15 (by
token; by VIHF over XDS): read, vread, HEAD, instance and type history, search (GET, POST
`_search`, `_summary=count`, `_count=0`, `_elements`, `_include`/`_revinclude`), Binary,
If-None-Match and If-Modified-Since reads, conditional create matching an existing document,
conditional PATCH, PUT and DELETE by criteria, PATCH, transaction and batch GET entries,
Communication searches, paging, ITI-18 FindDocuments (LeafClass, ObjectRef), ITI-43 of one
and of two documents, ITI-57, the patient's own AuditEvent read and search; then the
patient's (and a parent's) trail and notifications after each.

What got through:

- A professional's search finding a document hidden from the patient (INVISIBLE_PATIENT)
  beside visible ones left one event carrying every result's labels, INVISIBLE_PATIENT
  included: the whole search was hidden from the patient's trail (and one finding an
  INVISIBLE_REPRESENTANTS_LEGAUX document from the parents'). The access was traced, in no
  trail the patient could read, and in bris de glace the patient was told of an emergency
  access their trail did not show. Same for POST `_search`, `_revinclude` and a Bundle's
  search entry. A search's event is now split by the labels that hide its results: the
  event naming what is hidden from nobody is always there (found or not, as for a record
  without the hidden document), the hidden results have their own event, hidden as they
  are.
- A conditional PATCH (PDSm: by identifier, no patient; REST or in a Bundle) and an ITI-57
  naming a document hidden from the sender (another record's, a masked one) answered 404,
  as for an unknown document (R18, rightly), and traced nothing, where the PATCH of its id
  leaves its refusal in the record (`Gate.refuse_hidden`). Now traced as that PATCH.
- An ITI-43 retrieving a visible and an INVISIBLE_PATIENT document was one event carrying
  INVISIBLE_PATIENT: the patient saw the visible document's Binary read but not the ITI-43,
  where its retrieve alone shows both, and so learnt that something hidden was retrieved.
  Its documents are now split by those labels too.
- Likewise an ITI-41 depositing a visible and an INVISIBLE_PATIENT document: its one event
  carried INVISIBLE_PATIENT, and the patient, told of the visible document's deposit, found
  no trace of it in their trail.

Held (a few kept as controls): every other door above leaves one event naming the patient,
with the right outcome and purpose (BTG, ETREAT), and each emergency access a notification
the patient sees; refusals (403/404) leave an AuthZ-Consent event in the record; an unknown
id leaves none; a conditional create matching a document is traced as the writer's search.
"""

from __future__ import annotations

import base64
import json

import pytest

from fhir_server.access.requester import INTERNAL
from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_audit_trace_hides import trace
from tests.http.test_audit_trace_refusals import new_events, refusals_of
from tests.http.test_binary_ownership import parent_token
from tests.http.test_notifications import NOTIFICATIONS
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    PATIENT_A,
    PATIENT_M,
    STRANGER,
    UNKNOWN_ID,
    World,
    binary_id,
    doc_id,
    doc_identifier,
    document,
    world,  # noqa: F401 - the module's seeded record
)
from tests.http.test_xds_endpoints import GP as XDS_GP
from tests.http.test_xds_endpoints import OTHER_PS, registry_status
from tests.http.test_xds_update_document_set import (  # noqa: F401 - fixtures
    deposit,
    entry_of,
    metadata_update,
    record,
    xds,
)

# ruff: noqa: F811

PATCH = [{"op": "replace", "path": "/status", "value": "current"}]
MODES = {
    "normal": ("normal", None, "TREAT"),
    "bris_de_glace": ("bris_de_glace", "Patient inconscient", "BTG"),
    "centre_15": ("centre_15", "Appel au 15", "ETREAT"),
}


def _token(world: World, mode: str) -> str:
    code, reason, _ = MODES[mode]
    idnat = AUTHORIZED if code == "normal" else STRANGER
    return world.tokens.practitioner(idnat, mode=code, reason=reason)


def _send(world: World, token: str, method: str, path: str, body=None, raw=None, **headers):
    content_type = headers.pop("content_type", FHIR_JSON)
    data = json.dumps(body) if body is not None else raw
    sent = auth(token, **({"Content-Type": content_type} if data is not None else {}), **headers)
    return world.client.open(f"/fhir/{path}", method=method, data=data, headers=sent)


def _search_doors(patient_id: str) -> dict:
    """The doors of one search of the record's documents (method, path, body, headers)."""
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"DocumentReference?patient={patient_id}"}}],
    }
    form = {"content_type": "application/x-www-form-urlencoded"}
    return {
        "GET": ("GET", f"DocumentReference?patient={patient_id}", None, None, {}),
        "POST-_search": ("POST", "DocumentReference/_search", None, f"patient={patient_id}", form),
        "_revinclude": (
            "GET",
            f"Patient?_id={patient_id}&_revinclude=DocumentReference:subject",
            None,
            None,
            {},
        ),
        "batch-GET": ("POST", "", bundle, None, {}),
    }


def _trail_of(world: World, token: str, patient_id: str) -> tuple[str, list[dict]]:
    return trace(world, token, patient_id)


def _purposes(event: dict) -> set[str]:
    return {
        coding.get("code")
        for agent in event.get("agent", [])
        for purpose in agent.get("purposeOfUse", [])
        for coding in purpose.get("coding", [])
    }


def _names(event: dict, reference_prefix: str) -> bool:
    return any(
        (e.get("what") or {}).get("reference", "").startswith(reference_prefix)
        for e in event.get("entity", [])
    )


def _told(world: World, token: str) -> int:
    response = world.client.get(
        f"/fhir/Communication?{NOTIFICATIONS}&_count=100", headers=auth(token)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return len(response.get_json().get("entry", []))


# -- R16: a search finding a hidden document is in the trail of whom it is hidden from ----------


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("door", list(_search_doors(PATIENT_A)))
def test_r16_a_search_finding_a_document_hidden_from_the_patient_is_in_their_trail(
    world, door, mode
):
    """R16, R17, R18: a professional's search of A's documents finds a visible one and an
    INVISIBLE_PATIENT one. The patient's trail shows the search (with its purpose, and the
    visible document), never the hidden document; in bris de glace and centre 15 they are
    also told. The one event naming both carried INVISIBLE_PATIENT, and the patient's trail
    showed no trace of the search."""
    patient = world.tokens.patient(PATIENT_A)
    method, path, body, raw, headers = _search_doors(PATIENT_A)[door]
    _, before = _trail_of(world, patient, PATIENT_A)
    told = _told(world, patient)
    response = _send(world, _token(world, mode), method, path, body, raw, **headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert doc_id("a-invisible") in response.get_data(as_text=True)  # the search found it
    text, after = _trail_of(world, patient, PATIENT_A)
    known = {event["id"] for event in before}
    searches = [
        e
        for e in after
        if e["id"] not in known and MODES[mode][2] in _purposes(e) and _names(e, "Patient/")
    ]
    assert len(searches) == 1, "the search is not in the patient's trail"
    assert _names(searches[0], f"DocumentReference/{doc_id('a-visible')}")
    assert doc_id("a-invisible") not in text
    assert binary_id("a-invisible") not in text
    if mode != "normal":
        assert _told(world, patient) == told + 1


def test_r07_a_search_finding_a_document_hidden_from_the_parents_is_in_their_trail(world):
    """R07, R16: the same for a minor's record and a parent: a search finding a visible
    document and an INVISIBLE_REPRESENTANTS_LEGAUX one is in the parent's trail, naming the
    first only; the minor's trail shows the hidden one's event too."""
    parent = parent_token(world)
    _, before = _trail_of(world, parent, PATIENT_M)
    response = _send(
        world, _token(world, "normal"), "GET", f"DocumentReference?patient={PATIENT_M}"
    )
    assert response.status_code == 200 and doc_id("m-invisible-rl") in response.get_data(
        as_text=True
    )
    text, after = _trail_of(world, parent, PATIENT_M)
    known = {event["id"] for event in before}
    new = [e for e in after if e["id"] not in known and "TREAT" in _purposes(e)]
    assert len(new) == 1 and _names(new[0], f"DocumentReference/{doc_id('m-visible')}")
    assert doc_id("m-invisible-rl") not in text
    minor_text, _ = _trail_of(world, world.tokens.patient(PATIENT_M), PATIENT_M)
    assert doc_id("m-invisible-rl") in minor_text


def test_r18_a_hidden_result_its_search_names_otherwise_keeps_the_search_hidden(world):
    """R18 (a control of the split): a search naming the hidden document's Binary by a
    criterion the server does not read as naming a document (`location`) finds it; the
    request is kept as asked, so each of its events is hidden from the patient, whose
    trail names neither the Binary nor the document."""
    location = f"Binary/{binary_id('a-invisible')}"
    response = _send(
        world,
        _token(world, "normal"),
        "GET",
        f"DocumentReference?patient={PATIENT_A}&location={location}",
    )
    assert response.status_code == 200 and doc_id("a-invisible") in response.get_data(as_text=True)
    text, _ = _trail_of(world, world.tokens.patient(PATIENT_A), PATIENT_A)
    assert binary_id("a-invisible") not in text and doc_id("a-invisible") not in text


# -- R16: a conditional PATCH naming a hidden document is traced as its PATCH ---------------------


def _patch_entry(criteria: str) -> dict:
    data = base64.b64encode(json.dumps(PATCH).encode()).decode()
    resource = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": data,
    }
    return {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "PATCH", "url": criteria}, "resource": resource}],
    }


def _conditional_patch(world: World, token: str, identifier: str, door: str):
    criteria = f"DocumentReference?identifier={identifier}"
    if door == "batch":
        return _send(world, token, "POST", "", _patch_entry(criteria))
    raw = json.dumps(PATCH)
    return _send(
        world, token, "PATCH", criteria, raw=raw, content_type="application/json-patch+json"
    )


@pytest.mark.parametrize("door", ["REST", "batch"])
@pytest.mark.parametrize(
    "who, key",
    [
        ("stranger", "a-visible"),  # no authorization on A's record (R10)
        ("authorized", "a-masked"),  # MASQUE_PS, authored by someone else (R14)
        ("other-patient", "a-visible"),  # patient M on A's record (R06)
    ],
)
def test_r16_a_conditional_patch_of_a_hidden_document_is_traced(world, who, key, door):
    """R16, R18: a conditional PATCH naming by identifier a document hidden from its sender
    answers as for an unknown identifier (404, in a batch its entry's) and leaves the
    refusal event its PATCH by id leaves, in A's record; it left none. An unknown
    identifier leaves none."""
    token = {
        "stranger": world.tokens.practitioner(STRANGER),
        "authorized": world.tokens.practitioner(AUTHORIZED),
        "other-patient": world.tokens.patient(PATIENT_M),
    }[who]
    version = world.service.read(INTERNAL, "DocumentReference", doc_id(key)).version
    by_id, by_id_events = new_events(
        world,
        lambda: _send(
            world,
            token,
            "PATCH",
            f"DocumentReference/{doc_id(key)}",
            raw=json.dumps(PATCH),
            content_type="application/json-patch+json",
        ),
    )
    assert by_id.status_code == 404 and len(refusals_of(by_id_events, PATIENT_A)) == 1
    hidden, events = new_events(
        world, lambda: _conditional_patch(world, token, doc_identifier(key), door)
    )
    unknown, unknown_events = new_events(
        world, lambda: _conditional_patch(world, token, f"urn:uuid:{UNKNOWN_ID}", door)
    )
    assert hidden.status_code == unknown.status_code, hidden.get_data(as_text=True)
    if door == "batch":
        statuses = [
            [e["response"]["status"] for e in r.get_json()["entry"]] for r in (hidden, unknown)
        ]
        assert statuses[0] == statuses[1] and statuses[0][0].startswith("404")
    else:
        assert hidden.status_code == 404
    assert unknown_events == []
    assert len(refusals_of(events, PATIENT_A)) == 1, events
    assert world.service.read(INTERNAL, "DocumentReference", doc_id(key)).version == version


def test_r16_an_iti57_of_a_document_masked_from_its_sender_is_traced(xds, record):
    """R16, R18 (ITI-57): an authorized professional, not the author, sends a metadata
    update of a document the médecin traitant deposited masked (MASQUE_PS): answered as
    for an unknown document, and now traced in the patient's record as the refused change
    of it; it left no trace."""
    patient_id, nir = record
    unique_id = deposit(xds, nir, masking=("MASQUE_PS",))
    stored = entry_of(xds, nir, unique_id)
    body = metadata_update(nir, stored, [("N", "2.16.840.1.113883.5.25")])
    log = xds.runtime.service

    def events() -> list[dict]:
        found = log.search(INTERNAL, "AuditEvent", [("_count", "1000")])
        return [json.loads(row[2]) for row in found.matches]

    before = len(events())
    response = xds.soap(
        "/xds/registry",
        v.ACTION_ITI57,
        body,
        xds.security(OTHER_PS, nir),
    )
    status, errors = registry_status(response)
    assert status.endswith("Failure"), (status, errors)
    assert len(refusals_of(events()[before:], patient_id)) == 1


def test_r18_an_iti43_retrieving_a_hidden_document_beside_a_visible_one_shows_its_part(xds):
    """R16, R18 (ITI-43): the médecin traitant retrieves, in one request, a visible document
    and an INVISIBLE_PATIENT one. The patient's trail shows the ITI-43 event of the visible
    one, as when it is retrieved alone, and never the hidden one's uniqueId. One event named
    both and carried INVISIBLE_PATIENT: the patient saw the visible document's Binary read
    without the ITI-43 that read it, which told them that it had retrieved something hidden
    from them."""
    patient_id, nir = xds.patient(7)
    hidden = xds.deposited_unique_id(nir, masking=("INVISIBLE_PATIENT",))
    visible = xds.deposited_unique_id(nir)
    world = World(xds.client, xds.tokens, xds.runtime.service)
    patient = xds.tokens.patient(patient_id)
    _, before = _trail_of(world, patient, patient_id)
    assert xds.retrieve([visible, hidden], XDS_GP, nir).status_code == 200
    text, after = _trail_of(world, patient, patient_id)
    known = {event["id"] for event in before}
    retrieves = [
        e
        for e in after
        if e["id"] not in known and any(s.get("code") == "ITI-43" for s in e.get("subtype", []))
    ]
    assert len(retrieves) == 1, "the ITI-43 is not in the patient's trail"
    assert visible in json.dumps(retrieves[0])
    assert hidden not in text


def _iti41_visible_and_hidden(xds, nir: str) -> tuple[bytes, str, str, str]:
    """An ITI-41 (inline, no MTOM) of two documents, the second labelled INVISIBLE_PATIENT:
    (body, content type, the first's uniqueId, the second's)."""
    from lxml import etree

    from tests.xds_builders import CDA, build_iti41

    other = CDA.replace(b"ClinicalDocument", b"ClinicalDocument ", 1)
    request = build_iti41(
        nir=nir,
        security=xds.security(XDS_GP, nir),
        mtom=False,
        documents=[CDA, other],
        masking=("INVISIBLE_PATIENT",),
    )
    first, second = request.document_unique_ids
    root = etree.fromstring(request.body)
    for classification in list(root.iter(f"{{{v.NS_RIM}}}Classification")):
        if (
            classification.get("nodeRepresentation") == "INVISIBLE_PATIENT"
            and classification.get("classifiedObject") == first
        ):
            classification.getparent().remove(classification)
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    ids = request.document_unique_ids
    return body, request.content_type, ids[first], ids[second]


def test_r16_an_iti41_depositing_a_hidden_document_beside_a_visible_one_is_in_the_trail(xds):
    """R16, R17, R18 (ITI-41): one submission deposits a visible document and an
    INVISIBLE_PATIENT one. The patient is told of the visible one's deposit, and their
    trail shows its ITI-41 event, never the hidden one's uniqueId. The one ITI-41 event
    named both and carried INVISIBLE_PATIENT: told of a deposit, the patient found no trace
    of it."""
    patient_id, nir = xds.patient(8)
    body, content_type, visible, hidden = _iti41_visible_and_hidden(xds, nir)
    world = World(xds.client, xds.tokens, xds.runtime.service)
    patient = xds.tokens.patient(patient_id)
    _, before = _trail_of(world, patient, patient_id)
    response = xds.client.post("/xds/repository", data=body, headers={"Content-Type": content_type})
    assert registry_status(response)[0].endswith("Success"), response.get_data()[:2000]
    assert _told(world, patient) == 1
    text, after = _trail_of(world, patient, patient_id)
    known = {event["id"] for event in before}
    deposits = [
        e
        for e in after
        if e["id"] not in known and any(s.get("code") == "ITI-41" for s in e.get("subtype", []))
    ]
    assert len(deposits) == 1, "the ITI-41 is not in the patient's trail"
    assert visible in json.dumps(deposits[0])
    assert hidden not in text


# -- held: controls ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["bris_de_glace", "centre_15"])
def test_r17_an_emergency_conditional_create_matching_a_document_is_traced_and_told(world, mode):
    """R16, R17 (held): a conditional create whose If-None-Exist matches an existing
    document tells its writer that it exists: traced as the writer's search, in bris de
    glace or centre 15 with its purpose, and the patient is told."""
    patient = world.tokens.patient(PATIENT_A)
    told = _told(world, patient)
    criteria = f"identifier={doc_identifier('a-visible')}&patient={PATIENT_A}"
    response, events = new_events(
        world,
        lambda: _send(
            world,
            _token(world, mode),
            "POST",
            "DocumentReference",
            document("a-visible"),
            **{"If-None-Exist": criteria},
        ),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    (event,) = [e for e in events if _names(e, f"Patient/{PATIENT_A}")]
    assert MODES[mode][2] in _purposes(event) and event["outcome"] == "0"
    assert _told(world, patient) == told + 1


def test_r16_the_patients_own_trail_search_is_traced(world):
    """R16 (held): the patient searching their AuditEvents is an access to their record
    and is itself traced in it (purpose PATRQT), seen in their next search."""
    patient = world.tokens.patient(PATIENT_A)
    _, first = _trail_of(world, patient, PATIENT_A)
    _, second = _trail_of(world, patient, PATIENT_A)
    known = {event["id"] for event in first}
    assert any("PATRQT" in _purposes(e) for e in second if e["id"] not in known)


@pytest.mark.parametrize("path", ["_summary=count", "_count=0"])
def test_r17_a_counting_search_in_bris_de_glace_is_traced_and_told(world, path):
    """R16, R17 (held): a search that returns only a count is an access all the same."""
    patient = world.tokens.patient(PATIENT_A)
    told = _told(world, patient)
    response, events = new_events(
        world,
        lambda: _send(
            world,
            _token(world, "bris_de_glace"),
            "GET",
            f"DocumentReference?patient={PATIENT_A}&{path}",
        ),
    )
    assert response.status_code == 200
    assert any("BTG" in _purposes(e) and _names(e, f"Patient/{PATIENT_A}") for e in events)
    assert _told(world, patient) == told + 1
