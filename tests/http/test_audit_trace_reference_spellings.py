"""A search naming a hidden document by an absolute reference, however it ends, is not
shown to whom the document is hidden from (R14, R18).

A search's AuditEvent keeps its query as asked and carries the labels of what the query
names (`access.query_names.named_targets`). An absolute reference was read as naming the
`Type/id` that ends it (`$`): `relatesto=https://elsewhere.example/fhir/DocumentReference/
<hidden id>/` (or ending in `#x`, `?x=1` or a space) named nothing, and a professional's
search so spelled was shown, unlabelled, with the hidden document's id in its query, in
the trail of the patient it is hidden from. A reference ending in a newline was named (`$`
matches before it): ending the pattern at `\\Z` would have opened that spelling too.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from tests.http.test_audit_trace_conditional_criteria import (
    HIDDEN,
    NARROW_PROFESSION,
    _names_hidden,
    _text,
)
from tests.http.test_r18_matrix import AUTHORIZED, PATIENT_A, doc_id, own_world

world = pytest.fixture(own_world, name="world")


@pytest.mark.parametrize(
    "tail",
    ["", "/", "#x", "?x=1", " ", "\n", "/_history/1/"],
    ids=["plain", "slash", "fragment", "query", "space", "newline", "versioned-slash"],
)
@pytest.mark.parametrize(
    "base",
    ["https://elsewhere.example/fhir/", "http://127.0.0.1:8080/fhir/"],
    ids=["another-base", "this-base"],
)
def test_r18_a_search_naming_a_hidden_document_by_any_absolute_spelling_is_not_shown(
    world, base, tail
):
    professional = world.tokens.practitioner(AUTHORIZED, profession=NARROW_PROFESSION)
    hidden_read = world.get(professional, f"/fhir/DocumentReference/{doc_id(HIDDEN)}")
    assert hidden_read.status_code == 404, "the professional reads the document: no test"
    url = f"{base}DocumentReference/{doc_id(HIDDEN)}{tail}"
    answer = world.get(
        professional,
        f"/fhir/DocumentReference?patient={PATIENT_A}&relatesto={quote(url, safe='')}",
    )
    assert answer.status_code < 500, answer.get_data(as_text=True)
    patient = world.tokens.patient(PATIENT_A)
    shown = world.get(patient, f"/fhir/AuditEvent?patient={PATIENT_A}&_count=1000")
    assert shown.status_code == 200, shown.get_data(as_text=True)
    events = [entry["resource"] for entry in shown.get_json().get("entry", [])]
    assert not [e for e in events if _names_hidden(_text(e))], (
        "the patient's trail names the document hidden from them"
    )
