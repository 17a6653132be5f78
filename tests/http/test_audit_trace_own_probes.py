"""The patient's trace does not answer their own probes (R16 within R07, R14, R18).

A patient (or a parent of a minor) who holds an id can ask the server about it, then read
their own trail of accesses. Whatever the answer to the probe was (a 404 worded as for a
missing id, an empty search), the trail must not tell a hidden document's id from one that
names nothing:

- a search of theirs whose criteria name a document hidden from them was given that
  document's labels, like a professional's (`AuditHooks._named_in_criteria`), so it vanished
  from their own trail, while their search by an unknown id stayed in it;
- the events they are served carried the audit log's hash chain (sequence and previous
  hash), so a refused read of a hidden document, traced in their record but hidden from
  them, showed as a gap between the events around it, which a read of an unknown id (not
  traced) did not leave.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.http.test_r18_matrix import (
    CASES,
    IDENTIFIER_SYSTEM,
    PATIENT_A,
    PATIENT_M,
    UNKNOWN_ID,
    World,
    binary_id,
    doc_id,
    doc_identifier,
    own_world,
)

UNKNOWN_IDENTIFIER = f"urn:uuid:{UNKNOWN_ID}"

# Who probes, the record they act for, and the document of it hidden from them.
PROBERS = {
    "R14-patient-vs-invisible-patient": ("R14-invisible-patient-vs-patient", PATIENT_A),
    "R07-parent-vs-invisible-representants-legaux": (
        "R07-invisible-representants-legaux-vs-parent",
        PATIENT_M,
    ),
}


world = pytest.fixture(own_world, name="world")


def _prober(world: World, name: str) -> tuple[str, str, str]:
    """(token, patient id, DOCS key of the document hidden from them)."""
    case_id, patient_id = PROBERS[name]
    case = CASES[case_id]
    return case.requester(world.tokens), patient_id, case.hidden


def _trail_size(world: World, token: str, patient_id: str) -> int:
    response = world.get(token, f"/fhir/AuditEvent?patient={patient_id}&_summary=count")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["total"]


def _shown_events(world: World, token: str, patient_id: str, url: str) -> int:
    """How many events of the trail a request of `token` adds, as `token` is shown them."""
    before = _trail_size(world, token, patient_id)
    response = world.get(token, url)
    assert response.status_code == 200, response.get_data(as_text=True)
    # The count search of `before` is one event of the trail, shown in `after`.
    return _trail_size(world, token, patient_id) - before - 1


SEARCHES = {
    "by-id": "/fhir/DocumentReference?patient={patient}&_id={id}",
    "by-unique-id": "/fhir/DocumentReference?patient={patient}&identifier={identifier}",
    "events-by-entity": "/fhir/AuditEvent?patient={patient}&entity=DocumentReference/{id}",
    "list-item": "/fhir/List?patient={patient}&item=DocumentReference/{id}",
}


@pytest.mark.parametrize("search", list(SEARCHES))
@pytest.mark.parametrize("prober", list(PROBERS))
def test_r18_a_persons_search_by_a_hidden_documents_id_is_traced_as_by_an_unknown_one(
    world, prober, search
):
    """Their own search naming a document hidden from them shows in their trail exactly as
    their search naming nothing does: it used to take the document's labels and vanish."""
    token, patient_id, hidden = _prober(world, prober)
    template = SEARCHES[search]
    shown = {}
    for kind, (target, identifier) in {
        "hidden": (doc_id(hidden), f"{IDENTIFIER_SYSTEM}|{doc_identifier(hidden)}"),
        "unknown": (UNKNOWN_ID, f"{IDENTIFIER_SYSTEM}|{UNKNOWN_IDENTIFIER}"),
    }.items():
        url = template.format(patient=patient_id, id=target, identifier=quote(identifier, safe=""))
        shown[kind] = _shown_events(world, token, patient_id, url)
    assert shown["unknown"] == 1, "the control search is not in the trail: the test is broken"
    assert shown["hidden"] == shown["unknown"], (
        "the trail tells a hidden document's id from an unknown one"
    )


def _chain_gaps(world: World, token: str, patient_id: str) -> list[tuple]:
    """What the served events say about the events between each two of them, newest first:
    (sequence difference, whether the newer one's previous hash is the older one's hash),
    or None for a pair whose events carry no chain."""
    response = world.get(token, f"/fhir/AuditEvent?patient={patient_id}&_count=1000&_sort=-date")
    assert response.status_code == 200, response.get_data(as_text=True)
    links = [_link(entry["resource"]) for entry in response.get_json().get("entry", [])]
    gaps: list[tuple] = []
    for newer, older in zip(links, links[1:], strict=False):
        if newer is None or older is None:
            gaps.append((None, None))
        else:
            gaps.append((newer["sequence"] - older["sequence"], newer["previous"] == older["hash"]))
    return gaps


def _link(event: dict) -> dict | None:
    for extension in event.get("extension", []):
        if extension.get("url", "").endswith("/audit-chain"):
            return {
                part["url"]: part.get("valueInteger", part.get("valueString"))
                for part in extension["extension"]
            }
    return None


READS = {
    "read": "/fhir/DocumentReference/{id}",
    "vread": "/fhir/DocumentReference/{id}/_history/1",
    "history": "/fhir/DocumentReference/{id}/_history",
    "binary": "/fhir/Binary/{binary}?_format=json",
}


@pytest.mark.parametrize("read", list(READS))
@pytest.mark.parametrize("prober", list(PROBERS))
def test_r18_the_trail_shows_no_gap_where_a_hidden_documents_refused_read_was_traced(
    world, prober, read
):
    """A read of a hidden document and one of an unknown id both answer 404; the first is
    traced in the record (hidden from the prober), the second nowhere. Bracketed by reads
    of their own Patient, the events shown around each must say nothing of what lies
    between them: served with the log's chain, the hidden one left a gap of two sequences
    (and a previous hash that is not the hash before it), the unknown one a gap of one."""
    token, patient_id, hidden = _prober(world, prober)
    template = READS[read]
    gaps = {}
    for kind, (target, binary) in {
        "hidden": (doc_id(hidden), binary_id(hidden)),
        "unknown": (UNKNOWN_ID, UNKNOWN_ID),
    }.items():
        assert world.get(token, f"/fhir/Patient/{patient_id}").status_code == 200
        probe = world.get(token, template.format(id=target, binary=binary))
        assert probe.status_code == 404, probe.get_data(as_text=True)
        assert world.get(token, f"/fhir/Patient/{patient_id}").status_code == 200
        # Newest first: the second Patient read, then the first one.
        gaps[kind] = _chain_gaps(world, token, patient_id)[0]
    assert gaps["hidden"] == gaps["unknown"], (
        "the events around the probe tell that a hidden document's read was traced"
    )
