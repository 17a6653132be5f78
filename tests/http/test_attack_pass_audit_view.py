"""Attack pass on the AuditEvent view (R16: the patient and a minor's representatives read the
trail of their record; R18: it names nothing hidden from the reader), on both audit log
engines.

Two records are built alike; in one, a professional read the document hidden from the
reader (`INVISIBLE_PATIENT` from the patient, `INVISIBLE_REPRESENTANTS_LEGAUX` from a
parent). The reader asks both the same questions in the same order; the answers (status,
Bundle.total, entries by type, paging links, OperationOutcome text) must be the same.

Tried, as the patient and as a parent: AuditEvent search with `_include` (`entity`, `agent`,
`patient`, `:iterate`), `_revinclude`, `_elements`, `_summary=count`, `_count=0`,
`_total=accurate`/`estimate`, `_sort` by date and agent-name, `entity` (a reference, bare
id, absolute URL, typed, `:identifier`, `:not`, `:above`, an Or with the Patient), `agent`,
`entity-type`, `entity-role`, `agent-name`, `source`, `address`, `policy`, `outcome`, `date`
at and after the hidden access's instant, chains (`entity:DocumentReference.type`, `._id`,
`.identifier`, `.security-label`, `.status`, `entity:Binary._id`), `_has`, `_security`,
`_id` of the hidden event, its read, vread and `_history`, `AuditEvent/_history`, the
Patient's and DocumentReference's `_revinclude=AuditEvent:*` and `_revinclude=*`, the
compartment form, POST `_search` and a batch GET; the trail size after each of the reader's
own probes naming the hidden document against the same probe naming an unknown id; a
document labelled after a read of it (the old event stays, as R16 says) chained to or
included from that event; the patient's events in another record (their refused attempt,
which names them as an agent); a parent's trail after the RelatedPerson's period ends, it
is made inactive, or the minor's birthDate is corrected to 18 years ago (record facts cached
by an earlier read).

What got through: nothing on the AuditEvent view itself. Held (kept below as controls): every
answer above was the same for both records, on SQLite and MongoDB; a chain from an event to a
document labelled since answers as for a document that is not there, and `_include` does not
bring it; the patient's refused attempt on another record is not in any trail they read; the
parent's search, read, POST `_search` and batch GET of the minor's events are refused (403,
or 404 as for a missing id) once the guardianship ends.

Found, not an AuditEvent answer, left as decided (`service/notify.py`): a professional whose
first access of the day reads only an `INVISIBLE_PATIENT` document notifies the patient
(R17, the label is dropped from the notification), so `Patient?_revinclude=*` and the
patient's Communications differ between the two records while their trails do not.
"""

from __future__ import annotations

import json
from collections import Counter
from urllib.parse import quote

import pytest

from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_audit_trace_label_added import _label_later
from tests.http.test_binary_ownership import parent_token
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    GP,
    IDENTIFIER_SYSTEM,
    PARENT,
    PATIENT_A,
    PATIENT_B,
    PATIENT_M,
    UNKNOWN_ID,
    World,
    _build_world,
    binary_id,
    doc_id,
    doc_identifier,
    own_world,
)

# reader: (record, the document hidden from them, a professional who reads it)
READERS = {
    "R14-patient": (PATIENT_A, "a-invisible", GP),
    "R07-parent": (PATIENT_M, "m-invisible-rl", AUTHORIZED),
}


def _token(world: World, reader: str) -> str:
    return world.tokens.patient(PATIENT_A) if reader == "R14-patient" else parent_token(world)


def _pair(tmp_path_factory, http_engine):
    """(the record without the hidden access, the record with it): a professional read each
    reader's hidden document in the second only. The tests ask both the same questions in
    the same order, so that their trails stay alike but for the hidden access."""
    built = []
    for name in ("plain", "hidden"):
        app, world = _build_world(tmp_path_factory.mktemp(f"audit-view-{name}") / "var")
        if name == "hidden":
            for _, key, professional in READERS.values():
                read = world.get(
                    world.tokens.practitioner(professional),
                    f"/fhir/DocumentReference/{doc_id(key)}",
                )
                assert read.status_code == 200, read.get_data(as_text=True)
        built.append((app, world))
    yield [world for _, world in built]
    for app, _ in built:
        app.extensions["fhir"].store.close()


pair = pytest.fixture(_pair, scope="module", name="pair")
fresh_pair = pytest.fixture(_pair, name="fresh_pair")  # for tests that ask one record alone


def _shape(response) -> tuple:
    """What a reader compares: status, total, entries by type, paging links, or the text of
    an OperationOutcome."""
    body = response.get_json(silent=True) or {}
    if body.get("resourceType") != "Bundle":
        return response.status_code, response.get_data(as_text=True)
    kinds = Counter((e.get("resource") or {}).get("resourceType") for e in body.get("entry", []))
    links = sorted(link["relation"] for link in body.get("link", []))
    statuses = [
        (e["response"]["status"], json.dumps(e["response"].get("outcome")))
        for e in body.get("entry", [])
        if "response" in e
    ]
    totals = [(e.get("resource") or {}).get("total") for e in body.get("entry", [])]
    return response.status_code, body.get("total"), dict(kinds), links, statuses, totals


def _hidden_event_id(world: World, key: str) -> str:
    from tests.http.test_r18_matrix import logged_events

    found = [e["id"] for e in logged_events(world) if doc_id(key) in json.dumps(e)]
    assert found, "the professional's read of the hidden document was not traced"
    return found[0]


SEARCHES = [
    "patient={p}",
    "patient={p}&_include=AuditEvent:entity",
    "patient={p}&_include=AuditEvent:agent",
    "patient={p}&_include=AuditEvent:patient",
    "patient={p}&_include=AuditEvent:entity&_include:iterate=AuditEvent:entity",
    "patient={p}&_revinclude=AuditEvent:entity&_include:iterate=AuditEvent:entity",
    "patient={p}&_summary=count",
    "patient={p}&_count=0&_total=accurate",
    "patient={p}&_total=accurate&_count=1",
    "patient={p}&_sort=-date&_count=1&_total=estimate",
    "patient={p}&_sort=agent-name&_total=accurate",
    "patient={p}&_elements=entity&_total=accurate",
    "patient={p}&entity=DocumentReference/{id}&_total=accurate",
    "entity=DocumentReference/{id}&_total=accurate",
    "patient={p}&entity:identifier={identifier}&_total=accurate",
    "patient={p}&entity-type=2&_total=accurate",
    "patient={p}&entity-role=4&_total=accurate",
    "patient={p}&outcome=0&_total=accurate",
    "patient={p}&source={id}&_total=accurate",
    "patient={p}&policy={id}&_total=accurate",
    "patient={p}&entity:DocumentReference.type=http://loinc.org|11488-4&_total=accurate",
    "patient={p}&entity:DocumentReference._id={id}&_total=accurate",
    "patient={p}&entity:DocumentReference.security-label={label}&_total=accurate",
    "patient={p}&entity:Binary._id={binary}&_total=accurate",
    "patient={p}&_security={label}&_total=accurate",
    "patient={p}&_has:Provenance:target:_id={id}",
    "_id={event}&_total=accurate",
    "patient={p}&_id={event}&_total=accurate",
]
LABELS = {"R14-patient": "INVISIBLE_PATIENT", "R07-parent": "INVISIBLE_REPRESENTANTS_LEGAUX"}


def _query(template: str, reader: str, event: str) -> str:
    patient, key, _ = READERS[reader]
    return template.format(
        p=patient,
        id=doc_id(key),
        identifier=quote(f"{IDENTIFIER_SYSTEM}|{doc_identifier(key)}"),
        binary=binary_id(key),
        label=LABELS[reader],
        event=event,
    )


def _three_doors(world: World, token: str, query: str) -> list[tuple]:
    """The search by GET, POST `_search` and a batch GET entry."""
    get = world.get(token, f"/fhir/AuditEvent?{query}")
    post = world.client.post(
        "/fhir/AuditEvent/_search",
        data=query,
        headers=auth(token, **{"Content-Type": "application/x-www-form-urlencoded"}),
    )
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"AuditEvent?{query}"}}],
    }
    batch = world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    return [_shape(get), _shape(post), _shape(batch)]


@pytest.mark.parametrize("template", SEARCHES)
@pytest.mark.parametrize("reader", list(READERS))
def test_r18_an_audit_search_answers_alike_with_and_without_a_hidden_access(pair, reader, template):
    """R16 within R07/R14: the reader's AuditEvent search, at each door, answers the record
    whose hidden document a professional read as the record where nobody did."""
    event = _hidden_event_id(pair[1], READERS[reader][1])
    answers = [_three_doors(w, _token(w, reader), _query(template, reader, event)) for w in pair]
    assert answers[0] == answers[1]
    for world in pair:  # a control, asked of both to keep their trails alike
        own = world.get(_token(world, reader), f"/fhir/Patient/{READERS[reader][0]}")
        assert own.status_code == 200


@pytest.mark.parametrize("path", ["{event}", "{event}/_history", "{event}/_history/1"])
@pytest.mark.parametrize("reader", list(READERS))
def test_r18_a_hidden_event_reads_as_a_missing_one(pair, reader, path):
    hidden = pair[1]
    event = _hidden_event_id(hidden, READERS[reader][1])
    token = _token(hidden, reader)
    found = hidden.get(token, "/fhir/AuditEvent/" + path.format(event=event))
    missing = hidden.get(token, "/fhir/AuditEvent/" + path.format(event=UNKNOWN_ID))
    assert found.status_code == missing.status_code == 404
    assert found.get_data(as_text=True).replace(event, UNKNOWN_ID) == missing.get_data(as_text=True)


@pytest.mark.parametrize(
    "template",
    [
        "Patient?_id={p}&_revinclude=AuditEvent:patient",
        "Patient?_id={p}&_revinclude=AuditEvent:entity",
        "DocumentReference?patient={p}&_revinclude=AuditEvent:entity",
    ],
)
@pytest.mark.parametrize("reader", list(READERS))
def test_r18_revincluded_events_answer_alike_with_and_without_a_hidden_access(
    pair, reader, template
):
    query = template.format(p=READERS[reader][0])
    answers = [_shape(w.get(_token(w, reader), f"/fhir/{query}")) for w in pair]
    assert answers[0] == answers[1]


def _trail_size(world: World, token: str, patient_id: str) -> int:
    response = world.get(token, f"/fhir/AuditEvent?patient={patient_id}&_summary=count")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["total"]


OWN_PROBES = [
    "AuditEvent?patient={p}&entity={id}",
    "AuditEvent?patient={p}&entity=http://127.0.0.1:8080/fhir/DocumentReference/{id}",
    "AuditEvent?patient={p}&entity:DocumentReference={id}",
    "AuditEvent?patient={p}&entity:identifier={identifier}",
    "AuditEvent?patient={p}&entity:DocumentReference.identifier={identifier}",
    "AuditEvent?patient={p}&entity=Binary/{binary}",
    "AuditEvent?patient={p}&entity=Patient/{p},DocumentReference/{id}",
    "AuditEvent?patient={p}&address={id}",
    "DocumentReference?patient={p}&_id={id}&_revinclude=AuditEvent:entity",
]


@pytest.mark.parametrize("template", OWN_PROBES)
@pytest.mark.parametrize("reader", list(READERS))
def test_r18_the_readers_own_probe_of_a_hidden_id_shows_in_the_trail_as_of_an_unknown_id(
    pair, reader, template
):
    world = pair[1]
    patient, key, _ = READERS[reader]
    token = _token(world, reader)
    shown = {}
    for kind, (target, identifier, binary) in {
        "hidden": (doc_id(key), doc_identifier(key), binary_id(key)),
        "unknown": (UNKNOWN_ID, f"urn:uuid:{UNKNOWN_ID}", UNKNOWN_ID),
    }.items():
        url = "/fhir/" + template.format(
            p=patient,
            id=target,
            identifier=quote(f"{IDENTIFIER_SYSTEM}|{identifier}"),
            binary=binary,
        )
        before = _trail_size(world, token, patient)
        answer = world.get(token, url)
        body = answer.get_json()
        shown[kind] = (
            answer.status_code,
            body.get("total"),
            len(body.get("entry", [])),
            _trail_size(world, token, patient) - before,
        )
    assert shown["hidden"] == shown["unknown"]


labelled_world = pytest.fixture(own_world, name="labelled_world")


@pytest.mark.parametrize("reader", list(READERS))
def test_r18_a_chain_from_an_old_event_to_a_document_labelled_since_finds_nothing(
    labelled_world, reader
):
    """An event recorded before the label was added names the document (R16 keeps it), but
    neither a chain from it nor `_include` reads the document as it is now."""
    world = labelled_world
    patient = READERS[reader][0]
    key = "a-visible" if reader == "R14-patient" else "m-visible"
    professional = READERS[reader][2]
    read = world.get(
        world.tokens.practitioner(professional), f"/fhir/DocumentReference/{doc_id(key)}"
    )
    assert read.status_code == 200
    token = _token(world, reader)
    chained = f"/fhir/AuditEvent?patient={patient}&entity:DocumentReference._id={doc_id(key)}"
    assert world.get(token, chained).get_json()["total"] == 1  # a control, before the label
    _label_later(world, key, LABELS[reader])
    assert world.get(token, f"/fhir/DocumentReference/{doc_id(key)}").status_code == 404
    for criterion in (
        f"entity:DocumentReference._id={doc_id(key)}",
        f"entity:DocumentReference.security-label={LABELS[reader]}",
        "entity:DocumentReference.category=10",
    ):
        answer = world.get(token, f"/fhir/AuditEvent?patient={patient}&{criterion}")
        assert answer.status_code == 200 and answer.get_json()["total"] == 0, criterion
    included = world.get(token, f"/fhir/AuditEvent?patient={patient}&_include=AuditEvent:entity")
    assert doc_id(key) not in {
        e["resource"]["id"]
        for e in included.get_json()["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    }


def test_r16_a_patients_refused_attempt_on_another_record_is_in_no_trail_they_read(
    labelled_world,
):
    world = labelled_world
    token = world.tokens.patient(PATIENT_A)
    assert world.get(token, f"/fhir/DocumentReference/{doc_id('b-doc')}").status_code == 404
    for query in (f"agent=Patient/{PATIENT_A}", f"entity=Patient/{PATIENT_B}"):
        answer = world.get(token, f"/fhir/AuditEvent?{query}&_total=accurate")
        assert answer.status_code == 200 and answer.get_json()["total"] == 0, query
    other = world.get(token, f"/fhir/AuditEvent?patient={PATIENT_B}")
    assert other.status_code == 403


@pytest.mark.parametrize("change", ["period-ended", "inactive", "adult"])
def test_r07_a_parents_view_of_the_minors_events_ends_with_the_guardianship(labelled_world, change):
    """The record's facts are cached by the parent's earlier searches; the write that ends
    the guardianship ends their view of the trail at every door."""
    world = labelled_world
    token = parent_token(world)
    first = world.get(token, f"/fhir/AuditEvent?patient={PATIENT_M}&_count=1")
    first = world.get(token, f"/fhir/AuditEvent?patient={PATIENT_M}&_count=1")
    assert first.status_code == 200
    event = first.get_json()["entry"][0]["resource"]["id"]
    assert world.get(token, f"/fhir/AuditEvent/{event}").status_code == 200
    resource_type, resource_id = (
        ("Patient", PATIENT_M) if change == "adult" else ("RelatedPerson", PARENT)
    )
    body = world.get(world.tokens.system(), f"/fhir/{resource_type}/{resource_id}").get_json()
    body.pop("meta", None)
    if change == "adult":
        body["birthDate"] = "2008-01-01"
    elif change == "inactive":
        body["active"] = False
    else:
        body["period"] = {"end": "2020-01-01"}
    written = world.client.put(
        f"/fhir/{resource_type}/{resource_id}",
        json=body,
        headers=auth(world.tokens.system(), **{"Content-Type": FHIR_JSON}),
    )
    assert written.status_code == 200, written.get_data(as_text=True)
    query = f"patient={PATIENT_M}"
    get, post, batch = _three_doors(world, token, query)
    assert get[0] == post[0] == 403
    assert [status for status, _ in batch[4]] == ["403"]
    assert world.get(token, f"/fhir/AuditEvent/{event}").status_code == 404
    assert world.get(token, f"/fhir/AuditEvent?_id={event}").status_code == 403


def _walk(world: World, token: str, url: str) -> list[tuple]:
    """Every page of a search by its next links: (status, total, entries, links) each."""
    pages: list[tuple] = []
    while url and len(pages) < 50:
        body = world.get(token, url).get_json() or {}
        links = {link["relation"]: link["url"] for link in body.get("link", [])}
        pages.append((body.get("total"), len(body.get("entry", [])), sorted(links)))
        url = links.get("next", "")
        url = url[url.index("/fhir/") :] if url else ""
    return pages


@pytest.mark.parametrize("sort", ["-date", "_id", "outcome", "-agent-name"])
@pytest.mark.parametrize("reader", list(READERS))
def test_r18_paging_through_the_trail_answers_alike_with_and_without_a_hidden_access(
    fresh_pair, reader, sort
):
    pair = fresh_pair
    patient = READERS[reader][0]
    for world in pair:  # a trail of a few pages
        for _ in range(4):
            assert world.get(_token(world, reader), f"/fhir/Patient/{patient}").status_code == 200
    url = f"/fhir/AuditEvent?patient={patient}&_count=2&_sort={sort}&_total=accurate"
    walks = [_walk(world, _token(world, reader), url) for world in pair]
    assert walks[0] == walks[1]
    assert len(walks[0]) > 1, "a single page: the cursors were not tried"
