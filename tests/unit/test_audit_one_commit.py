"""AuditTrail.one_commit (R16): the events of one request's several accesses are committed
together when the block ends, durably, before it returns; nothing is lost on an error."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fhir_server.access.requester import ActorKind, Requester
from fhir_server.audit.balp import build_audit_events
from fhir_server.service.factory import build_service
from fhir_server.store.factory import audit_log_path
from fhir_server.store.sqlite import SqliteStore

DOCTOR = Requester(ActorKind.PRACTITIONER, "810001234567", "Dr A", profession="10")


def _event() -> list[dict]:
    return build_audit_events(
        interaction="read",
        requester=DOCTOR,
        patients=["p1"],
        recorded=datetime.now(UTC),
        server_base="http://127.0.0.1/fhir",
    )


def _durable_events(path: Path) -> int:
    """What another process sees: AuditEvents committed to the audit log beside `path`."""
    connection = sqlite3.connect(audit_log_path(str(path)))
    try:
        return connection.execute("SELECT count(*) FROM event").fetchone()[0]
    finally:
        connection.close()


@pytest.fixture
def trail(tmp_path: Path, registry):
    store = SqliteStore(tmp_path / "fhir.sqlite3")
    service = build_service(store, registry, data_dir=tmp_path)
    yield service.gate.audit
    service.store.close()


def test_r16_events_of_a_block_are_durable_when_it_ends(trail, tmp_path):
    path = tmp_path / "fhir.sqlite3"
    with trail.one_commit():
        trail.record(_event())
        with trail.one_commit():  # a nested block joins the outer one
            trail.record(_event())
        assert _durable_events(path) == 0
    assert _durable_events(path) == 2


def test_r16_events_of_a_failing_block_are_still_recorded(trail, tmp_path):
    """An access that happened is traced even if the request then fails."""
    with pytest.raises(RuntimeError), trail.one_commit():
        trail.record(_event())
        raise RuntimeError("the request failed after reading")
    assert _durable_events(tmp_path / "fhir.sqlite3") == 1
