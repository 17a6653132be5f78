"""Index entries prepared before a write transaction equal those of the version as stored
(architecture: index entries extracted at write time, stored with the resource): only
`meta.lastUpdated` is stamped inside the transaction, and only `_lastUpdated` is evaluated
there; for an AuditEvent, its hash-chain seal changes nothing a search parameter reads."""

from __future__ import annotations

import copy
import random
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from benchmarks.datagen import make_document_reference, make_patient, professionals
from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import DataEntity, build_audit_events
from fhir_server.audit.chain import GENESIS_HASH, seal
from fhir_server.paths import profiles_dir
from fhir_server.search.extract import extract, prepare
from fhir_server.search.registry import SearchRegistry
from fhir_server.service import versions

REGISTRY = SearchRegistry.load(profiles_dir())
# Ten years of microseconds: provisional and final stamps anywhere in them, in any order.
INSTANTS = st.integers(min_value=1_600_000_000_000_000, max_value=1_915_000_000_000_000)


def _document() -> dict:
    pool = professionals(3)
    return make_document_reference(random.Random(3), "d1", "p1", "1840775123456", pool)


def _write_event(resource: dict) -> dict:
    doctor = Requester(kind=ActorKind.PRACTITIONER, subject_id="810000000001", profession="10")
    return build_audit_events(
        interaction="create",
        requester=doctor,
        patients=["p1"],
        recorded=datetime(2026, 11, 22, tzinfo=UTC),
        server_base="https://dmp.example/fhir",
        request_id="req-1",
        entities=(DataEntity.from_resource(resource),),
    )[0]


@pytest.mark.parametrize("make", [_document, lambda: make_patient(7)], ids=["document", "patient"])
@settings(max_examples=25, deadline=None)
@given(provisional=INSTANTS, final=INSTANTS)
def test_prepared_resource_entries_equal_those_of_the_stored_version(make, provisional, final):
    resource = make()
    versions.stamp(resource, "r1", 1, provisional)
    prepared = prepare(copy.deepcopy(resource), REGISTRY)
    versions.stamp(resource, "r1", 1, final)
    assert extract(resource, REGISTRY, content=prepared.entries()) == extract(resource, REGISTRY)


@settings(max_examples=25, deadline=None)
@given(provisional=INSTANTS, final=INSTANTS)
def test_prepared_auditevent_entries_equal_those_of_the_sealed_event(provisional, final):
    """R16: the write's AuditEvent is searchable exactly as if built inside the transaction.
    It is prepared as built (unstamped, unsealed), about a document stamped at `provisional`,
    then sealed into the hash chain and stamped at `final`."""
    document = _document()
    versions.stamp(document, "d1", 1, provisional)
    event = _write_event(document)
    prepared = prepare(copy.deepcopy(event), REGISTRY)
    sealed = seal(event, GENESIS_HASH, 1)
    versions.stamp(sealed, sealed["id"], 1, final)
    assert extract(sealed, REGISTRY, content=prepared.entries()) == extract(sealed, REGISTRY)
