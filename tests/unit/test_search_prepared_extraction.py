"""Index entries prepared ahead of the write (`extract.prepare`, used by REST creates, the
audit trail and the bulk loader's worker processes): completed by `extract` once the
version is stamped, they are exactly the entries `extract` computes itself."""

from __future__ import annotations

from benchmarks.datagen import CorpusPlan, patient_resources
from fhir_server.search.extract import extract, prepare
from fhir_server.service import versions

PLAN = CorpusPlan(documents=400, communication_rate=0.3, audit_rate=0.3)
NOW_US = 1_700_000_000_123_000  # meta.lastUpdated keeps milliseconds


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
    prepared = [prepare(r, registry) for r in resources]
    from_prepared = []
    for resource, entries in zip(resources, prepared, strict=True):
        versions.stamp(resource, resource["id"], 1, NOW_US)
        from_prepared.append(extract(resource, registry, content=entries.entries()))
    assert from_prepared == [extract(r, registry) for r in resources]


def test_lastupdated_comes_from_the_stamp_not_from_the_prepared_entries(registry):
    document = next(r for r in _corpus() if r["resourceType"] == "DocumentReference")
    versions.stamp(document, document["id"], 1, NOW_US - 5_000_000)
    prepared = prepare(document, registry)
    versions.stamp(document, document["id"], 1, NOW_US)
    entries = extract(document, registry, content=prepared.entries())
    dates = [d for d in entries.dates if d.param == "_lastUpdated"]
    assert [(d.low, d.high) for d in dates] == [(NOW_US, NOW_US)]


def test_prepared_entries_serve_any_number_of_writes(registry):
    """`entries()` is a fresh object each time: a retried transaction completes it anew."""
    document = next(r for r in _corpus() if r["resourceType"] == "DocumentReference")
    prepared = prepare(document, registry)
    versions.stamp(document, document["id"], 1, NOW_US)
    first = extract(document, registry, content=prepared.entries())
    again = extract(document, registry, content=prepared.entries())
    assert first == again == extract(document, registry)
