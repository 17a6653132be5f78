"""A conditional write's criteria name nothing hidden in the patient's trace (R14, R16, R18).

A conditional update or delete (`PUT|DELETE [base]/DocumentReference?criteria`) is audited
as its requester's search (issue #18, finding 8), and that event keeps the request as asked
(BALP: the query entity holds the method, the path and the query string). A search's event
carries the labels of what its criteria name (`AuditHooks._named_in_criteria`), so that a
professional's search by a hidden document's id or uniqueId is not shown to whom it is
hidden from; the conditional write's event did not: a professional who may not read an
`INVISIBLE_PATIENT` document (here, by the habilitation matrix, R13) naming it in a
conditional delete left, in the patient's trail, an unlabelled event whose query named the
document's id or uniqueId.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import quote, unquote

import pytest

from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    IDENTIFIER_SYSTEM,
    PATIENT_A,
    World,
    doc_id,
    doc_identifier,
    document,
    logged_events,
    own_world,
)

HIDDEN = "a-invisible"  # INVISIBLE_PATIENT, class 42
# Profession 32 reads class 31 only (the placeholder matrix, R13): authorized by the patient,
# it may search the record but not read the hidden document.
NARROW_PROFESSION = "32"


world = pytest.fixture(own_world, name="world")


def _text(event: dict) -> str:
    """An event as a reader sees it: its JSON, its base64 values decoded, URLs unquoted."""
    values = [entity.get("query") for entity in event.get("entity", [])]
    decoded = [base64.b64decode(v).decode("utf-8", "replace") for v in values if v]
    return unquote("\n".join([json.dumps(event), *decoded]))


def _names_hidden(text: str) -> bool:
    return doc_id(HIDDEN) in text or doc_identifier(HIDDEN) in text


CRITERIA = {
    "by-id": f"_id={doc_id(HIDDEN)}",
    "by-unique-id": "identifier=" + quote(f"{IDENTIFIER_SYSTEM}|{doc_identifier(HIDDEN)}", safe=""),
}


def _conditional(world: World, token: str, method: str, criteria: str):
    url = f"/fhir/DocumentReference?patient={PATIENT_A}&{criteria}"
    headers = auth(token, **{"Content-Type": FHIR_JSON})
    if method == "DELETE":
        return world.client.delete(url, headers=headers)
    body = {**document("a-visible"), "subject": {"reference": f"Patient/{PATIENT_A}"}}
    return world.client.put(url, data=json.dumps(body), headers=headers)


@pytest.mark.parametrize("criteria", list(CRITERIA))
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_r14_a_conditional_write_naming_a_hidden_document_is_not_shown_to_the_patient(
    world, method, criteria
):
    professional = world.tokens.practitioner(AUTHORIZED, profession=NARROW_PROFESSION)
    hidden_read = world.get(professional, f"/fhir/DocumentReference/{doc_id(HIDDEN)}")
    assert hidden_read.status_code == 404, "the professional reads the document: no test"
    answer = _conditional(world, professional, method, CRITERIA[criteria])
    assert answer.status_code < 500, answer.get_data(as_text=True)
    logged = [e for e in logged_events(world) if _names_hidden(_text(e))]
    assert logged, "no event keeps the criteria: the conditional search did not run"
    patient = world.tokens.patient(PATIENT_A)
    assert world.get(patient, f"/fhir/Patient/{PATIENT_A}").status_code == 200  # a control
    shown = world.get(patient, f"/fhir/AuditEvent?patient={PATIENT_A}&_count=1000")
    assert shown.status_code == 200, shown.get_data(as_text=True)
    events = [entry["resource"] for entry in shown.get_json().get("entry", [])]
    assert events, "the patient's trail is empty: the search is broken"
    assert not [e for e in events if _names_hidden(_text(e))], (
        "the patient's trail names the document hidden from them"
    )
