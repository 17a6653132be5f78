"""Helpers of the audit log tests (tests/contract/test_audit_log_contract.py and
test_mongo_audit_log.py): events as the BALP builders shape them, and the log's chain."""

from __future__ import annotations

import uuid

import orjson


def audit_event(*patients: str, agent: str = "Practitioner/pr1", action: str = "R") -> dict:
    """A BALP-shaped AuditEvent: the requesting agent, and each patient as an entity."""
    return {
        "resourceType": "AuditEvent",
        "id": str(uuid.uuid4()),
        "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110110"},
        "subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "read"}],
        "action": action,
        "recorded": "2024-03-01T10:00:00Z",
        "outcome": "0",
        "agent": [{"who": {"reference": agent}, "requestor": True}],
        "source": {"observer": {"display": "test"}},
        "entity": [{"what": {"reference": f"Patient/{patient}"}} for patient in patients],
    }


def chain_of(log) -> list[dict]:
    """Every event of the log, in chain order, as served."""
    return [orjson.loads(record.body) for record in log.scan()]
