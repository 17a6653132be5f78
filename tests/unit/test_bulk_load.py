"""The bulk loader (benchmarks/bulk.py): the generated corpus, generated and validated in
worker processes or in the writer, is stored whole and found by search."""

from __future__ import annotations

import tempfile

import pytest

from benchmarks.bulk import bulk_load, open_service
from benchmarks.datagen import CorpusPlan, dmp_corpus, patient_id_of, patient_resources
from fhir_server.access.requester import INTERNAL

PLAN = CorpusPlan(documents=120, per_patient=20, heavy=1, heavy_documents=30)


def test_a_patient_range_is_the_corpus_slice_of_those_patients():
    corpus = list(dmp_corpus(PLAN))
    slices = [r for n in range(PLAN.patients) for r in patient_resources(PLAN, n)]
    assert slices == corpus
    assert sum(r["resourceType"] == "DocumentReference" for r in corpus) == PLAN.documents


@pytest.mark.parametrize("validators", [0, 2])
def test_bulk_load_stores_every_generated_resource_with_its_index_entries(
    tmp_path, registry, validators
):
    service = open_service(tmp_path, registry)
    try:
        stats = bulk_load(service, PLAN, batch=50, validators=validators)
        expected = list(dmp_corpus(PLAN))
        assert stats.counts["DocumentReference"] == PLAN.documents
        assert stats.total == len(expected)
        heavy = patient_id_of(0)
        found = service.search(
            INTERNAL,
            "DocumentReference",
            [("patient", heavy), ("_count", "100"), ("_sort", "-date")],
        )
        ids = [resource_id for _, resource_id, *_ in found.matches]
        want = [
            r
            for r in expected
            if r["resourceType"] == "DocumentReference"
            and r["subject"]["reference"] == f"Patient/{heavy}"
        ]
        assert sorted(ids) == sorted(r["id"] for r in want)
        dates = [r["date"] for r in sorted(want, key=lambda r: ids.index(r["id"]))]
        assert dates == sorted(dates, reverse=True)
    finally:
        service.store.close()


def test_validator_processes_leave_no_temporary_directory(tmp_path, registry, monkeypatch):
    """The validators end by `Pool.terminate` (no exit handlers run): the in-memory store each
    holds must not leave its audit log's temporary directory behind (a suite run left two in
    /tmp each time)."""
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # inherited by the forked workers
    service = open_service(tmp_path / "data", registry)
    try:
        bulk_load(service, PLAN, batch=50, validators=2)
    finally:
        service.store.close()
    assert sorted(p.name for p in scratch.iterdir() if p.name.startswith("audit-log-")) == []
