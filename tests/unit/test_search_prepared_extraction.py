"""Index entries prepared ahead of the write (extract.prepare / PREPARED, used by the bulk
loader's worker processes): `extract` gives exactly the entries it would compute itself,
and only for a resource whose content is the one the entries were prepared from."""

from __future__ import annotations

import copy

import pytest

from benchmarks.datagen import CorpusPlan, patient_resources
from fhir_server.search.extract import PREPARED, content_key, extract, prepare
from fhir_server.service import versions

PLAN = CorpusPlan(documents=400, communication_rate=0.3, audit_rate=0.3)
NOW_US = 1_700_000_000_123_000  # meta.lastUpdated keeps milliseconds


@pytest.fixture(autouse=True)
def empty_prepared():
    PREPARED.clear()
    yield
    PREPARED.clear()


def _corpus() -> list[dict]:
    return [r for n in range(PLAN.heavy, PLAN.heavy + 4) for r in patient_resources(PLAN, n)]


def test_prepared_entries_are_exactly_the_extracted_ones_for_every_corpus_type(registry):
    resources = _corpus()
    assert {r["resourceType"] for r in resources} >= {
        "Patient",
        "Consent",
        "DocumentReference",
        "Communication",
        "AuditEvent",
    }
    PREPARED.offer(prepare(r, registry) for r in resources)
    from_prepared = []
    for resource in resources:
        versions.stamp(resource, resource["id"], 1, NOW_US)
        from_prepared.append(extract(resource, registry))
    assert len(PREPARED) == 0  # each one used
    assert from_prepared == [extract(r, registry) for r in resources]


def test_lastupdated_comes_from_the_stamp_not_from_the_prepared_entries(registry):
    document = next(r for r in _corpus() if r["resourceType"] == "DocumentReference")
    PREPARED.offer([prepare(document, registry)])
    versions.stamp(document, document["id"], 1, NOW_US)
    dates = [d for d in extract(document, registry).dates if d.param == "_lastUpdated"]
    assert [(d.low, d.high) for d in dates] == [(NOW_US, NOW_US)]


def test_a_resource_changed_after_preparation_is_extracted_anew(registry):
    document = next(r for r in _corpus() if r["resourceType"] == "DocumentReference")
    PREPARED.offer([prepare(copy.deepcopy(document), registry)])
    document["status"] = "superseded"
    statuses = [t.code for t in extract(document, registry).tokens if t.param == "status"]
    assert statuses == ["superseded"]
    assert len(PREPARED) == 1  # not taken: it belongs to other content


def test_the_content_key_ignores_only_the_version_stamp():
    resource = {"resourceType": "Patient", "id": "p", "meta": {"profile": ["x"]}}
    stamped = copy.deepcopy(resource)
    versions.stamp(stamped, "p", 3, NOW_US)
    assert content_key(stamped) == content_key(resource)
    bare = {"resourceType": "Patient", "id": "p"}
    assert content_key(versions.stamp(bare, "p", 1, NOW_US) and bare) == content_key(
        {"resourceType": "Patient", "id": "p"}
    )
    assert content_key({**resource, "meta": {"profile": ["y"]}}) != content_key(resource)
