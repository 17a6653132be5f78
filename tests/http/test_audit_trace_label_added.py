"""A version read after a document was labelled is hidden like the document (R07, R14, R18).

An event keeps the labels its entities had when it was recorded (docs/access-rules.md, "What
a refusal reveals"): a label added later does not hide the events recorded before it. But a
read recorded after it must be hidden from whom the label now hides the document. A vread
of a version written before `INVISIBLE_PATIENT` (or `INVISIBLE_REPRESENTANTS_LEGAUX`) was
added is served only while the current version may be read (masking hides all of history),
yet its event carried the labels of the version read, none: the patient (or a parent) found
in their trail a professional's read of `DocumentReference/<id>/_history/1`, a document their
own read of answers 404.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_audit_trace_hides import trace
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    CASES,
    GP,
    PATIENT_A,
    PATIENT_M,
    UNKNOWN_ID,
    World,
    doc_id,
    document,
    own_world,
)

# (the document labelled later, the label, who reads it after, the viewer's case, patient)
LABELLED_LATER = {
    "R14-invisible-patient-vs-patient": (
        "a-visible",
        "INVISIBLE_PATIENT",
        GP,
        "R14-invisible-patient-vs-patient",
        PATIENT_A,
    ),
    "R07-invisible-representants-legaux-vs-parent": (
        "m-visible",
        "INVISIBLE_REPRESENTANTS_LEGAUX",
        AUTHORIZED,
        "R07-invisible-representants-legaux-vs-parent",
        PATIENT_M,
    ),
}


world = pytest.fixture(own_world, name="world")


def _label_later(world: World, key: str, label: str) -> str:
    """Version 2 of the document adds `label` (its author's change, made here by the server
    as the seed is); returns the document's id."""
    resource_id = doc_id(key)
    coding = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": label}
    labelled = {
        **document(key),
        "id": resource_id,
        "securityLabel": [{"coding": [coding]}],
        "meta": {"security": [coding]},
    }
    world.service.update(INTERNAL, "DocumentReference", resource_id, labelled)
    return resource_id


def _vread(world: World, token: str, resource_id: str, door: str):
    path = f"DocumentReference/{resource_id}/_history/1"
    if door == "rest":
        return world.get(token, f"/fhir/{path}")
    bundle = {"resourceType": "Bundle", "type": door, "entry": []}
    bundle["entry"].append({"request": {"method": "GET", "url": path}})
    return world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )


@pytest.mark.parametrize("door", ["rest", "batch", "transaction"])
@pytest.mark.parametrize("case_id", list(LABELLED_LATER))
def test_r14_r07_a_vread_recorded_after_a_label_was_added_is_hidden_like_the_document(
    world, case_id, door
):
    key, label, professional, viewer_case, patient_id = LABELLED_LATER[case_id]
    resource_id = _label_later(world, key, label)
    viewer = CASES[viewer_case].requester(world.tokens)
    assert world.get(viewer, f"/fhir/DocumentReference/{resource_id}").status_code == 404
    assert world.get(viewer, f"/fhir/Patient/{patient_id}").status_code == 200  # a control
    read = _vread(world, world.tokens.practitioner(professional), resource_id, door)
    assert read.status_code == 200, read.get_data(as_text=True)
    text, events = trace(world, viewer, patient_id)
    assert events, "the viewer's trail is empty: the search is broken"
    assert resource_id not in text, "the trail names the document now hidden from the viewer"


def _trail_size(world: World, token: str, patient_id: str) -> int:
    response = world.get(token, f"/fhir/AuditEvent?patient={patient_id}&_summary=count")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()["total"]


@pytest.mark.parametrize("door", ["rest", "batch"])
@pytest.mark.parametrize("case_id", list(LABELLED_LATER))
def test_r18_a_viewers_refused_vread_of_a_version_before_the_label_is_traced_hidden(
    world, case_id, door
):
    """The viewer's own vread of version 1 (unlabelled) of the document now hidden from
    them answers 404, as for an unknown id; its refusal, traced with version 1's labels
    (none), showed in their trail, where a vread of an unknown id shows nothing."""
    key, label, _, viewer_case, patient_id = LABELLED_LATER[case_id]
    resource_id = _label_later(world, key, label)
    viewer = CASES[viewer_case].requester(world.tokens)
    shown = {}
    for kind, target in {"hidden": resource_id, "unknown": UNKNOWN_ID}.items():
        before = _trail_size(world, viewer, patient_id)
        answer = _vread(world, viewer, target, door)
        if door == "rest":
            assert answer.status_code == 404, answer.get_data(as_text=True)
        # The count search of `before` is one event of the trail.
        shown[kind] = _trail_size(world, viewer, patient_id) - before - 1
    assert shown["hidden"] == shown["unknown"], (
        "the trail tells a hidden document's version from an unknown id"
    )
