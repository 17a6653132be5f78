"""A search of one record naming another record's document tells this record's patient
nothing of it (R06, R16, R18).

A search's event names the labelled resources its criteria name, with their labels, so that
it is hidden from whom they are hidden from (`AuditHooks._named_in_criteria`). A professional
searching patient A's record by the id of a document of patient B (a copy-paste from the
wrong record, say) put B's document, labelled `MASQUE_PS`, in A's event: A's trail named a
document of another record and told A it exists and how it is labelled, where the same
search by an id naming nothing names nothing. B's document is, for A's trail, an unknown id.
"""

from __future__ import annotations

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY
from tests.http.test_r18_matrix import (
    GP,
    PATIENT_A,
    UNKNOWN_ID,
    World,
    doc_id,
    document,
    own_world,
)

OTHER = "b-other"  # a document of patient B, masked from professionals below


world = pytest.fixture(own_world, name="world")


def _mask(world: World, key: str) -> str:
    """The document labelled MASQUE_PS (B's choice, made here by the server as the seed is)."""
    resource_id = doc_id(key)
    coding = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE_PS"}
    masked = {
        **document(key),
        "id": resource_id,
        "securityLabel": [{"coding": [coding]}],
        "meta": {"security": [coding]},
    }
    world.service.update(INTERNAL, "DocumentReference", resource_id, masked)
    return resource_id


def _shown_event(world: World, criterion: str) -> dict:
    """The patient's view of the event of the GP's search of A's record by `criterion`: its
    entities (references, labels) and its labels, the searched id blanked."""
    gp = world.tokens.practitioner(GP)
    searched = world.get(gp, f"/fhir/DocumentReference?patient={PATIENT_A}&{criterion}")
    assert searched.status_code == 200, searched.get_data(as_text=True)
    patient = world.tokens.patient(PATIENT_A)
    shown = world.get(patient, f"/fhir/AuditEvent?patient={PATIENT_A}&_sort=-date&_count=100")
    assert shown.status_code == 200, shown.get_data(as_text=True)
    events = [entry["resource"] for entry in shown.get_json().get("entry", [])]
    gp_searches = [e for e in events if _by(e, GP) and e["subtype"][0]["code"] == "search-type"]
    assert gp_searches, "the GP's search is not in the patient's trail"
    event = gp_searches[0]
    return {
        "entities": sorted(
            (
                entity["what"].get("reference", ""),
                tuple(label.get("code") for label in entity.get("securityLabel", [])),
            )
            for entity in event["entity"]
            if "reference" in entity.get("what", {})
        ),
        "labels": sorted(label.get("code") for label in event["meta"].get("security", [])),
    }


def _by(event: dict, idnat: str) -> bool:
    return any(
        agent.get("requestor") and agent.get("who", {}).get("identifier", {}).get("value") == idnat
        for agent in event.get("agent", [])
    )


@pytest.mark.parametrize(
    "criterion",
    ["_id={id}", "relatesto=DocumentReference/{id}", "_has:List:item:_id={id}"],
    ids=["by-id", "relatesto", "has-list"],
)
def test_r06_r18_a_search_naming_another_records_document_names_nothing_in_this_trail(
    world, criterion
):
    other = _mask(world, OTHER)
    named = _shown_event(world, criterion.format(id=other))
    unknown = _shown_event(world, criterion.format(id=UNKNOWN_ID))
    assert named == unknown, "patient A's trail names a document of another record"
