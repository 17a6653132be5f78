"""One home for what the server knows of each served type (issue #22, deliver 1).

The patient compartment decides both what a search of a patient's record finds (the store
indexes it: `IndexEntries.compartment`) and what a single read, a write or an audit is judged
on (the access rules: `access.constraints.compartment_of`). FHIR R4 defines it once
(CompartmentDefinition patient: a resource is in a Patient's compartment when one of the
listed search parameters refers to that Patient, and a Patient is in its own); if the access
rules and the index disagreed, a write would be judged on another record than the one a
search then shows it in. These tests check, for every served type:

- `resources.served` names exactly the CompartmentDefinition's parameters, and reads the
  paths those SearchParameters read;
- over realistic resources (the external fixtures, the search corpora, a Consent, BALP
  AuditEvents) and the awkward spellings of a reference (absolute, versioned, contained,
  identifier only, a RelatedPerson, a second Patient among the authors), the compartment
  the access rules use is the one the store indexes, which is the one the SearchParameters
  give.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_server.access.constraints import compartment_of
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import DataEntity, build_audit_events
from fhir_server.resources import served
from fhir_server.resources.model import REQUIRED_CODES, SERVED_TYPES
from fhir_server.search.extract import extract
from fhir_server.search.registry import SearchRegistry
from tests.search_strategies import corpora

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "external"
COMPARTMENT_DEFINITION = ROOT / "profiles" / "compartmentdefinition-patient.json"


@pytest.fixture(scope="module")
def registry() -> SearchRegistry:
    return SearchRegistry.load(ROOT / "profiles")


def indexed_by_search_parameters(resource: dict, registry: SearchRegistry) -> list[str]:
    """The compartment as FHIR defines it, in the index's order (its first id is the
    resource's shard key): a Patient's own id, then the Patients the compartment
    parameters' index entries point to."""
    resource_type = resource["resourceType"]
    params = set(registry.compartment_params(resource_type))
    own = [resource["id"]] if resource_type == "Patient" and resource.get("id") else []
    pointed = [
        entry.target_id
        for entry in extract(resource, registry).references
        if entry.param in params and entry.target_type == "Patient" and entry.target_id
    ]
    return list(dict.fromkeys([*own, *pointed]))


def assert_one_compartment(resource: dict, registry: SearchRegistry) -> None:
    indexed = extract(resource, registry).compartment
    assert indexed == indexed_by_search_parameters(resource, registry), json.dumps(resource)
    assert compartment_of(resource) == set(indexed), json.dumps(resource)[:400]


# -- the table is the standard's -------------------------------------------------------------


def test_every_served_type_has_one_entry_read_by_model_registry_and_rules(registry):
    assert tuple(t.name for t in served.SERVED) == SERVED_TYPES
    assert len(set(SERVED_TYPES)) == len(SERVED_TYPES)
    assert registry.resource_types() == SERVED_TYPES
    assert set(REQUIRED_CODES) <= set(SERVED_TYPES)


def test_the_compartment_parameters_are_the_compartmentdefinitions(registry):
    """FHIR R4 CompartmentDefinition patient, `resource.param` for each served type."""
    definition = json.loads(COMPARTMENT_DEFINITION.read_text(encoding="utf-8"))
    standard = {entry["code"]: set(entry.get("param", ())) for entry in definition["resource"]}
    for resource_type in SERVED_TYPES:
        assert set(registry.compartment_params(resource_type)) == standard.get(
            resource_type, set()
        ), resource_type


def test_the_compartment_paths_are_those_the_search_parameters_read(registry):
    """Each parameter's paths are its SearchParameter expression's, less the `Type.` root
    and the `where(resolve() is Patient)` filter (the compartment only keeps Patients)."""
    for entry in served.SERVED:
        for param, paths in entry.compartment.items():
            definition = registry.get(entry.name, param)
            assert definition is not None, (entry.name, param)
            read = tuple(
                part.strip()
                .removeprefix(f"{entry.name}.")
                .removesuffix(".where(resolve() is Patient)")
                for part in definition.expression.split("|")
            )
            assert read == paths, (entry.name, param, definition.expression)


# -- the access rules' compartment is the index's --------------------------------------------


def _resources_in(node: object) -> Iterator[dict]:
    """Every served resource of a fixture file (Bundle entries included, contained not)."""
    if isinstance(node, dict):
        if node.get("resourceType") in SERVED_TYPES and isinstance(node.get("id"), str):
            yield node
        for key, value in node.items():
            if key != "contained":
                yield from _resources_in(value)
    elif isinstance(node, list):
        for item in node:
            yield from _resources_in(item)


FIXTURE_FILES = sorted(FIXTURES.rglob("*.json"))


def test_the_fixtures_hold_every_kind_of_resource_the_record_does():
    kinds = {
        resource["resourceType"]
        for path in FIXTURE_FILES
        for resource in _resources_in(json.loads(path.read_text(encoding="utf-8")))
    }
    assert {"Patient", "DocumentReference", "List", "Binary"} <= kinds


@pytest.mark.parametrize("path", FIXTURE_FILES, ids=lambda p: str(p.relative_to(FIXTURES)))
def test_external_fixtures_have_one_compartment(path, registry):
    for resource in _resources_in(json.loads(path.read_text(encoding="utf-8"))):
        assert_one_compartment(resource, registry)


def _spellings(patient_id: str) -> list[dict]:
    """The ways a client writes a reference to Patient `patient_id`."""
    return [
        {"reference": f"Patient/{patient_id}"},
        {"reference": f"Patient/{patient_id}/_history/2"},  # version-specific: still local
        {"reference": f"https://other.example/fhir/Patient/{patient_id}"},  # foreign
        {"reference": f"#{patient_id}"},  # contained: no Patient of this server
        {"type": "Patient", "identifier": {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "1"}},
        {"reference": f"RelatedPerson/{patient_id}"},
        {"reference": f"Patient/{patient_id}", "display": "Zoé"},
    ]


@st.composite
def respelled(draw: st.DrawFn, resource: dict) -> dict:
    """`resource` with each Patient reference respelled, a contained Patient for every `#id`,
    and sometimes a second Patient among a document's or a list's authors."""
    resource = copy.deepcopy(resource)
    contained: list[dict] = []

    def respell(node: object) -> object:
        if isinstance(node, list):
            return [respell(item) for item in node]
        if not isinstance(node, dict):
            return node
        reference = node.get("reference")
        if isinstance(reference, str) and reference.startswith("Patient/"):
            patient_id = reference.split("/")[1]
            spelled = draw(st.sampled_from(_spellings(patient_id)))
            if spelled.get("reference", "").startswith("#"):
                contained.append({"resourceType": "Patient", "id": patient_id})
            return spelled
        return {key: respell(value) for key, value in node.items()}

    resource = respell(resource)
    if resource["resourceType"] == "DocumentReference" and draw(st.booleans()):
        resource.setdefault("author", []).append(draw(st.sampled_from(_spellings("p9"))))
    if resource["resourceType"] == "List" and draw(st.booleans()):
        resource["source"] = draw(st.sampled_from(_spellings("p8")))
    if resource["resourceType"] == "Communication" and draw(st.booleans()):
        resource["sender"] = draw(st.sampled_from(_spellings("p7")))
    if contained:
        resource["contained"] = list({c["id"]: c for c in contained}.values())
    return resource


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_search_corpora_in_every_spelling_have_one_compartment(data, registry):
    for resource in data.draw(corpora()).values():
        assert_one_compartment(resource, registry)
        assert_one_compartment(data.draw(respelled(resource)), registry)


def _consent(patient: dict) -> dict:
    """A DMP consent record (`access.consent`), as tests/unit/test_access_consent.py builds."""
    return {
        "resourceType": "Consent",
        "id": "c1",
        "status": "active",
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": patient,
        "provision": {"type": "permit"},
    }


def _audit_events(patients: list[str]) -> list[dict]:
    """BALP AuditEvents of a read by a practitioner (agents, a patient entity, the data)."""
    doctor = Requester(kind=ActorKind.PRACTITIONER, subject_id="810000000001")
    document = {"resourceType": "DocumentReference", "id": "d1", "meta": {"versionId": "1"}}
    events = build_audit_events(
        interaction="read",
        requester=doctor,
        patients=patients,
        recorded=datetime(2026, 11, 22, 9, 42, tzinfo=UTC),
        server_base="https://dmp.example.fr/fhir",
        entities=[DataEntity.from_resource(document, patient_id=patients[0] if patients else None)],
    )
    return [{**event, "id": f"ae{index}"} for index, event in enumerate(events)]


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_consents_audit_events_and_related_persons_have_one_compartment(data, registry):
    spelling = data.draw(st.sampled_from(_spellings("p1")))
    assert_one_compartment(_consent(spelling), registry)
    related = {"resourceType": "RelatedPerson", "id": "r1", "patient": spelling}
    assert_one_compartment(related, registry)
    patients = data.draw(st.lists(st.sampled_from(("p1", "p2")), max_size=2, unique=True))
    for event in _audit_events(patients):
        assert_one_compartment(event, registry)
        event["agent"].append({"who": spelling, "requestor": False})
        assert_one_compartment(event, registry)


def test_a_binary_is_in_no_compartment_whatever_it_references(registry):
    """A Binary is not in the patient CompartmentDefinition: it is judged as the document
    owning it (`access.ownership`), never by what its securityContext happens to name."""
    for context in ("DocumentReference/d1", "Patient/p1", "Patient/p1/_history/1"):
        binary = {
            "resourceType": "Binary",
            "id": "b1",
            "contentType": "text/plain",
            "securityContext": {"reference": context},
        }
        assert_one_compartment(binary, registry)
        assert compartment_of(binary) == frozenset()
