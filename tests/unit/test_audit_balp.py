"""R16: AuditEvents in the IHE BALP shapes, checked the way a BALP validator would."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fhir.resources.R4B.auditevent import AuditEvent

from fhir_server.access.requester import AccessMode, ActorKind, Requester
from fhir_server.audit.balp import (
    EXT_REQUEST_ID,
    DataEntity,
    build_audit_events,
    build_refusal_events,
    build_xds_events,
    event_patients,
)
from fhir_server.errors import RULE_SYSTEM
from fhir_server.terminology import (
    INVISIBLE_REPRESENTANTS_LEGAUX,
    MASQUE_PS,
    SYSTEM_ACCESS_MODE,
    SYSTEM_ACT_REASON,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_PROFESSION,
)

BASE = "https://dmp.example.fr/fhir"
WHEN = datetime(2026, 11, 22, 9, 42, 7, 123000, tzinfo=UTC)
DCM = "http://dicom.nema.org/resources/ontology/DCM"
BALP = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/"

DOCTOR = Requester(
    kind=ActorKind.PRACTITIONER,
    subject_id="810000000001",
    display_name="Dr Marie Durand",
    profession="10",
    specialty="SM54",
    organization_id="urn:oid:1.2.250.1.71.4.2.2|1000000001",
    organization_name="CH Exemple",
    client_id="dpi-ch-exemple",
    token_id="tok-1",
)
PATIENT = Requester(kind=ActorKind.PATIENT, subject_id="p1", display_name="Jean Martin")
SYSTEM = Requester(kind=ActorKind.SYSTEM, subject_id="lab-system", client_id="lab-system")

DOC = {
    "resourceType": "DocumentReference",
    "id": "d1",
    "meta": {"versionId": "3"},
    "securityLabel": [
        {"coding": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": INVISIBLE_REPRESENTANTS_LEGAUX}]}
    ],
}


def rest(interaction: str, requester: Requester = DOCTOR, **kw) -> list[dict]:
    args = {
        "interaction": interaction,
        "requester": requester,
        "patients": ["p1"],
        "recorded": WHEN,
        "server_base": BASE,
        "request_id": "req-42",
        "client_address": "192.0.2.10",
        "entities": [DataEntity.from_resource(DOC, patient_id="p1")],
    } | kw
    return build_audit_events(**args)


def agent_of_type(event: dict, system: str, code: str) -> dict:
    found = [
        a
        for a in event["agent"]
        if any(c["system"] == system and c["code"] == code for c in a["type"]["coding"])
    ]
    assert len(found) == 1, f"expected one agent {system}#{code}"
    return found[0]


def entities_of_type(event: dict, system: str, code: str) -> list[dict]:
    return [
        e
        for e in event["entity"]
        if e.get("type", {}).get("system") == system and e["type"]["code"] == code
    ]


def check_common(event: dict, subtype: str, action: str, profile: str | None) -> None:
    """The parts every RESTful BALP profile fixes."""
    AuditEvent.model_validate(event)  # valid FHIR R4(B) structure
    assert event["type"] == {
        "system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
        "code": "rest",
        "display": "Restful Operation",
    }
    assert [(s["system"], s["code"]) for s in event["subtype"]] == [
        ("http://hl7.org/fhir/restful-interaction", subtype)
    ]
    assert event["action"] == action
    assert event["recorded"] == "2026-11-22T09:42:07.123Z"
    assert event["outcome"] == "0"
    assert event.get("meta", {}).get("profile") == ([BALP + profile] if profile else None)
    # server / source
    assert event["source"]["observer"]["identifier"]["value"] == BASE
    assert event["source"]["site"] == "dmp.example.fr"
    # the X-Request-Id is BALP's transaction entity
    (txn,) = entities_of_type(
        event, "https://profiles.ihe.net/ITI/BALP/CodeSystem/BasicAuditEntityType", "XrequestId"
    )
    assert txn["what"]["identifier"]["value"] == "req-42"
    # exactly one requestor
    assert sum(a["requestor"] for a in event["agent"]) == 1


def check_patient_entity(event: dict, patient_id: str) -> None:
    (patient,) = entities_of_type(
        event, "http://terminology.hl7.org/CodeSystem/audit-entity-type", "1"
    )
    assert patient["what"] == {"reference": f"Patient/{patient_id}"}
    assert patient["role"]["system"] == "http://terminology.hl7.org/CodeSystem/object-role"
    assert patient["role"]["code"] == "1"


def check_practitioner_user(event: dict, participation: str, purpose: str, mode: str) -> dict:
    user = agent_of_type(
        event, "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", participation
    )
    assert user["requestor"] is True
    assert user["who"]["identifier"] == {"system": SYSTEM_IDNAT_PS, "value": "810000000001"}
    assert user["name"] == "Dr Marie Durand"
    assert any(
        c["system"] == SYSTEM_PROFESSION and c["code"] == "10"
        for role in user["role"]
        for c in role["coding"]
    )
    codings = {(c["system"], c["code"]) for c in user["purposeOfUse"][0]["coding"]}
    assert codings == {(SYSTEM_ACT_REASON, purpose), (SYSTEM_ACCESS_MODE, mode)}
    assert user["policy"] == ["urn:ietf:params:oauth:jti:tok-1"]
    assert "network" not in user
    return user


def data_entities(event: dict) -> list[dict]:
    return entities_of_type(event, "http://terminology.hl7.org/CodeSystem/audit-entity-type", "2")


def test_r16_read_is_balp_patient_read():
    (event,) = rest("read")
    check_common(event, "read", "R", "IHE.BasicAudit.PatientRead")
    client = agent_of_type(event, DCM, "110152")  # Destination Role ID: the client in a read
    assert client["who"]["identifier"]["value"] == "dpi-ch-exemple"
    assert client["network"] == {"address": "192.0.2.10", "type": "2"}
    server = agent_of_type(event, DCM, "110153")
    assert server["who"]["identifier"]["value"] == BASE
    assert server["network"] == {"address": BASE, "type": "5"}
    check_practitioner_user(event, "IRCP", "TREAT", "normal")
    org = agent_of_type(event, "http://terminology.hl7.org/CodeSystem/v3-RoleClass", "PROV")
    assert org["who"]["identifier"] == {
        "system": "urn:oid:1.2.250.1.71.4.2.2",
        "value": "1000000001",
    }
    check_patient_entity(event, "p1")
    (data,) = data_entities(event)
    assert data["what"]["reference"] == "DocumentReference/d1/_history/3"
    assert data["role"]["code"] == "4"


def test_r16_vread_is_balp_patient_read():
    (event,) = rest("vread")
    check_common(event, "vread", "R", "IHE.BasicAudit.PatientRead")


def test_r16_search_is_balp_patient_query_with_raw_request_base64():
    raw = b"GET /fhir/DocumentReference?patient=p1&_count=10&name=%3Cscript%3E"
    (event,) = rest("search-type", raw_query=raw, entities=[], query_description="patient=p1")
    check_common(event, "search-type", "E", "IHE.BasicAudit.PatientQuery")
    agent_of_type(event, DCM, "110153")  # the client is the Source in a query
    server = agent_of_type(event, DCM, "110152")
    assert server["who"]["identifier"]["value"] == BASE
    check_practitioner_user(event, "IRCP", "TREAT", "normal")
    check_patient_entity(event, "p1")
    (query,) = [e for e in event["entity"] if e.get("role", {}).get("code") == "24"]
    assert base64.b64decode(query["query"]) == raw
    assert "what" not in query
    assert query["description"] == "patient=p1"


def test_r16_create_is_balp_patient_create_with_author():
    (event,) = rest("create")
    check_common(event, "create", "C", "IHE.BasicAudit.PatientCreate")
    agent_of_type(event, DCM, "110153")
    agent_of_type(event, DCM, "110152")
    check_practitioner_user(event, "AUT", "TREAT", "normal")
    check_patient_entity(event, "p1")
    assert len(data_entities(event)) == 1


def test_r16_update_is_balp_patient_update():
    (event,) = rest("update")
    check_common(event, "update", "U", "IHE.BasicAudit.PatientUpdate")
    check_patient_entity(event, "p1")
    assert data_entities(event)[0]["what"]["reference"] == "DocumentReference/d1/_history/3"


def test_r16_delete_is_balp_patient_delete():
    (event,) = rest("delete", requester=PATIENT)
    check_common(event, "delete", "D", "IHE.BasicAudit.PatientDelete")
    agent_of_type(event, DCM, "110150")
    agent_of_type(
        event, "http://terminology.hl7.org/CodeSystem/provenance-participant-type", "custodian"
    )
    user = agent_of_type(event, "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "AUT")
    assert user["who"]["reference"] == "Patient/p1"
    assert user["purposeOfUse"][0]["coding"][0]["code"] == "PATRQT"
    check_patient_entity(event, "p1")


def test_r16_one_event_per_patient_each_with_its_own_data():
    d2 = DataEntity(reference="DocumentReference/d2", version="1", patient_id="p2")
    events = rest(
        "transaction",
        patients=["p1", "p2", "p1"],
        entities=[DataEntity.from_resource(DOC, patient_id="p1"), d2],
    )
    assert [event_patients(e) for e in events] == [["p1"], ["p2"]]
    assert len({e["id"] for e in events}) == 2
    refs = [[d["what"]["reference"] for d in data_entities(e)] for e in events]
    assert refs == [["DocumentReference/d1/_history/3"], ["DocumentReference/d2/_history/1"]]
    # the p2 event carries none of p1's document labels
    assert "security" not in events[1].get("meta", {})


def test_r16_no_patient_gives_one_non_patient_event():
    (event,) = rest("read", patients=[], entities=[DataEntity(reference="Organization/o1")])
    check_common(event, "read", "R", "IHE.BasicAudit.Read")
    assert event_patients(event) == []


def test_r16_failed_interaction_keeps_shape_without_claiming_profile():
    (event,) = rest("create", outcome="4", outcome_desc="DocumentReference.subject: required")
    AuditEvent.model_validate(event)
    assert event["outcome"] == "4"
    assert event["outcomeDesc"] == "DocumentReference.subject: required"
    assert "profile" not in event.get("meta", {})


def test_r07_event_carries_document_labels_in_meta_security():
    (event,) = rest("read")
    assert {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": INVISIBLE_REPRESENTANTS_LEGAUX} in event[
        "meta"
    ]["security"]
    (data,) = data_entities(event)
    assert data["securityLabel"] == [
        {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": INVISIBLE_REPRESENTANTS_LEGAUX}
    ]


def test_r07_labels_from_meta_and_security_label_are_merged_once():
    doc = DOC | {
        "meta": {
            "versionId": "3",
            "security": [
                {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": MASQUE_PS},
                {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": INVISIBLE_REPRESENTANTS_LEGAUX},
            ],
        }
    }
    (event,) = rest("read", entities=[DataEntity.from_resource(doc, patient_id="p1")])
    codes = [c["code"] for c in event["meta"]["security"]]
    assert sorted(codes) == sorted([MASQUE_PS, INVISIBLE_REPRESENTANTS_LEGAUX])


def test_r11_bris_de_glace_purpose_is_btg_with_declared_reason():
    bdg = Requester(
        kind=ActorKind.PRACTITIONER,
        subject_id="810000000001",
        display_name="Dr Marie Durand",
        profession="10",
        access_mode=AccessMode.BRIS_DE_GLACE,
        access_reason="Patient inconscient aux urgences",
        token_id="tok-1",
    )
    (event,) = rest("read", requester=bdg)
    user = check_practitioner_user(event, "IRCP", "BTG", "bris_de_glace")
    assert user["purposeOfUse"][0]["text"] == "Patient inconscient aux urgences"


def test_r12_centre_15_purpose_is_etreat():
    c15 = Requester(
        kind=ActorKind.PRACTITIONER,
        subject_id="810000000001",
        display_name="Dr Marie Durand",
        profession="10",
        access_mode=AccessMode.CENTRE_15,
        token_id="tok-1",
    )
    for event in rest("search-type", requester=c15, raw_query=b"GET /fhir/DocumentReference"):
        check_practitioner_user(event, "IRCP", "ETREAT", "centre_15")


def test_r16_a_search_event_is_split_by_the_labels_that_hide_its_results():
    """R16, R18: a search finding a document hidden from nobody and an
    INVISIBLE_REPRESENTANTS_LEGAUX one is two events: the first names the first document and
    no hiding label (the patient and the parents see it), the second the hidden one with its
    label; what the criteria name (role query) is in both. One event naming both was hidden
    whole from the parents, who saw no trace of the search."""
    visible = DataEntity.from_resource({**DOC, "id": "d0", "securityLabel": []}, patient_id="p1")
    named = DataEntity(
        reference="DocumentReference/d9",
        security_labels=({"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE_PS"},),
        role="24",
    )
    hidden = DataEntity.from_resource(DOC, patient_id="p1")
    shown, kept = rest("search-type", entities=[hidden, visible, named], raw_query=b"GET /x")
    references = [
        [e.get("what", {}).get("reference") for e in ev["entity"]] for ev in (shown, kept)
    ]
    assert "DocumentReference/d0/_history/3" in references[0]
    assert "DocumentReference/d1/_history/3" not in references[0]
    assert "DocumentReference/d1/_history/3" in references[1]
    assert all("DocumentReference/d9" in refs for refs in references)
    assert [c["code"] for c in shown["meta"]["security"]] == ["MASQUE_PS"]
    assert INVISIBLE_REPRESENTANTS_LEGAUX in [c["code"] for c in kept["meta"]["security"]]
    (history,) = rest("history-instance", entities=[hidden, visible], raw_query=b"GET /x")


def test_r15_system_has_no_user_agent_and_the_client_is_requestor():
    (event,) = rest("create", requester=SYSTEM)
    client = agent_of_type(event, DCM, "110153")
    assert client["requestor"] is True
    assert client["who"]["identifier"]["value"] == "lab-system"
    assert all(
        c["system"] != "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
        for a in event["agent"]
        for c in a["type"]["coding"]
    )


def test_r16_recorded_is_converted_to_utc_and_naive_times_refused():
    paris = timezone(timedelta(hours=1))
    (event,) = rest("read", recorded=datetime(2026, 11, 22, 10, 42, tzinfo=paris))
    assert event["recorded"] == "2026-11-22T09:42:00.000Z"
    with pytest.raises(ValueError):
        rest("read", recorded=datetime(2026, 11, 22, 10, 42))
    with pytest.raises(ValueError):
        rest("frobnicate")
    with pytest.raises(ValueError):
        rest("read", outcome="1")


def refusal(**kw) -> list[dict]:
    args = {
        "requester": DOCTOR,
        "patients": ["p1"],
        "denied_rule": "R09",
        "recorded": WHEN,
        "server_base": BASE,
        "interaction": "read",
        "request_id": "req-42",
        "resource_type": "DocumentReference",
        "client_address": "192.0.2.10",
    } | kw
    return build_refusal_events(**args)


def test_r16_refusal_is_balp_authz_consent_failure():
    (event,) = refusal()
    AuditEvent.model_validate(event)
    assert event["meta"]["profile"] == [BALP + "IHE.BasicAudit.AuthZconsent"]
    assert event["type"]["system"] == DCM and event["type"]["code"] == "110113"
    assert [(s["system"], s["code"]) for s in event["subtype"]] == [
        ("https://profiles.ihe.net/ITI/BALP/CodeSystem/AuthZsubType", "AuthZ-Consent")
    ]
    assert event["action"] == "E"
    assert event["outcome"] == "8"
    assert "R09" in event["outcomeDesc"]
    client = agent_of_type(event, DCM, "110150")
    assert client["network"]["address"] == "192.0.2.10"
    user = agent_of_type(
        event, "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP"
    )
    assert user["requestor"] is True
    org = agent_of_type(event, "http://terminology.hl7.org/CodeSystem/v3-RoleClass", "PROV")
    assert org["requestor"] is False
    authorizer = agent_of_type(
        event, "http://terminology.hl7.org/CodeSystem/extra-security-role-type", "authserver"
    )
    assert authorizer["who"]["identifier"]["value"] == BASE
    check_patient_entity(event, "p1")
    # AuthZconsent closes its entity slicing: patient, consent, token only
    kinds = {(e["type"]["system"], e["type"]["code"]) for e in event["entity"]}
    assert kinds == {
        ("http://terminology.hl7.org/CodeSystem/audit-entity-type", "1"),
        ("http://hl7.org/fhir/resource-types", "Consent"),
        ("https://profiles.ihe.net/ITI/BALP/CodeSystem/UserAgentTypes", "UserOauthAgent"),
    }
    (consent,) = entities_of_type(event, "http://hl7.org/fhir/resource-types", "Consent")
    assert consent["what"]["identifier"] == {"system": RULE_SYSTEM, "value": "R09"}
    details = {d["type"]: d for d in consent["detail"]}
    assert details["denied-rule"]["valueString"] == "R09"
    assert details["interaction"]["valueString"] == "read"
    # The type refused, never the request's path (issue #18 finding 2: it names the resource)
    assert details["resource-type"]["valueString"] == "DocumentReference"
    assert "request" not in details
    # X-Request-Id cannot be an entity here: it is an extension
    assert event["extension"] == [{"url": EXT_REQUEST_ID, "valueString": "req-42"}]


def test_r07_refusal_carries_the_labels_of_the_resource_refused():
    """Issue #18 finding 2: a refusal about a labelled document is filtered like it (R07/R14)."""
    label = {"system": "urn:oid:1.2.250.1.213.1.1.4.13", "code": "INVISIBLE_PATIENT"}
    (event,) = refusal(security_labels=[label, dict(label)])
    assert event["meta"]["security"] == [label]
    assert event["meta"]["profile"] == [BALP + "IHE.BasicAudit.AuthZconsent"]
    AuditEvent.model_validate(event)


def test_r16_refusal_points_at_the_consent_when_known():
    (event,) = refusal(consent_references=["Consent/c1"], denied_rule="R10")
    (consent,) = entities_of_type(event, "http://hl7.org/fhir/resource-types", "Consent")
    assert consent["what"] == {"reference": "Consent/c1"}
    assert consent["detail"][0] == {"type": "denied-rule", "valueString": "R10"}


def test_r16_refusal_cannot_be_a_success():
    with pytest.raises(ValueError):
        refusal(outcome="0")


def xds(transaction: str, **kw) -> list[dict]:
    args = {
        "transaction": transaction,
        "requester": DOCTOR,
        "patients": ["p1"],
        "recorded": WHEN,
        "server_base": BASE,
        "endpoint": "https://dmp.example.fr/xds/repository",
        "client_address": "192.0.2.10",
    } | kw
    return build_xds_events(**args)


def test_iti41_audit_is_import_with_submission_set():
    doc = DataEntity(
        reference="DocumentReference/d1",
        identifier=("urn:ietf:rfc:3986", "urn:oid:1.2.3.4.5"),
        role="3",
        security_labels=({"system": SYSTEM_DMP_CONFIDENTIALITY, "code": MASQUE_PS},),
    )
    (event,) = xds(
        "ITI-41",
        submission_set_unique_id="1.2.3.4.9",
        submission_set_reference="List/ss1",
        documents=[doc],
    )
    AuditEvent.model_validate(event)
    assert (event["type"]["system"], event["type"]["code"]) == (DCM, "110107")
    assert (event["subtype"][0]["system"], event["subtype"][0]["code"]) == (
        "urn:ihe:event-type-code",
        "ITI-41",
    )
    assert event["action"] == "C"
    agent_of_type(event, DCM, "110153")
    repo = agent_of_type(event, DCM, "110152")
    assert repo["network"]["address"] == "https://dmp.example.fr/xds/repository"
    check_patient_entity(event, "p1")
    (ss,) = [e for e in event["entity"] if e.get("role", {}).get("code") == "20"]
    assert ss["what"]["identifier"]["value"] == "1.2.3.4.9"
    assert ss["what"]["reference"] == "List/ss1"
    assert ss["what"]["identifier"]["type"]["coding"][0]["code"] == (
        "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
    )
    assert event["meta"]["security"] == [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": MASQUE_PS}]


def test_iti18_audit_is_query_with_encoded_request():
    body = b"<query:AdhocQueryRequest>...</query:AdhocQueryRequest>"
    (event,) = xds(
        "ITI-18", raw_query=body, query_id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
    )
    AuditEvent.model_validate(event)
    assert (event["type"]["code"], event["action"]) == ("110112", "E")
    assert event["subtype"][0]["code"] == "ITI-18"
    agent_of_type(event, DCM, "110153")
    agent_of_type(event, DCM, "110152")
    (query,) = [e for e in event["entity"] if e.get("role", {}).get("code") == "24"]
    assert base64.b64decode(query["query"]) == body
    assert query["what"]["identifier"]["value"].startswith("urn:uuid:14d4debf")
    assert {"type": "QueryEncoding", "valueString": "UTF-8"} in query["detail"]


def test_iti43_audit_is_export_of_each_document():
    docs = [
        DataEntity(
            identifier=(None, f"1.2.3.{n}"),
            role="3",
            details=(("Repository Unique Id", "1.2.250.1.999"),),
        )
        for n in (1, 2)
    ]
    (event,) = xds("ITI-43", documents=docs)
    AuditEvent.model_validate(event)
    assert (event["type"]["code"], event["action"]) == ("110106", "R")
    assert event["subtype"][0]["code"] == "ITI-43"
    agent_of_type(event, DCM, "110152")  # the consumer receives the data
    agent_of_type(event, DCM, "110153")  # the repository is the source
    reports = [e for e in event["entity"] if e.get("role", {}).get("code") == "3"]
    assert [r["what"]["identifier"]["value"] for r in reports] == ["1.2.3.1", "1.2.3.2"]
    assert reports[0]["detail"] == [
        {"type": "Repository Unique Id", "valueString": "1.2.250.1.999"}
    ]


def test_r16_search_without_raw_request_does_not_claim_patient_query():
    (event,) = rest("history-instance", entities=[])
    AuditEvent.model_validate(event)
    (query,) = [e for e in event["entity"] if e.get("role", {}).get("code") == "24"]
    assert "query" not in query  # never an empty base64Binary
    assert "profile" not in event.get("meta", {})


def test_iti41_audit_needs_the_submission_set():
    with pytest.raises(ValueError):
        xds("ITI-41")


def test_event_ids_are_uuid_version_7_in_creation_order():
    """RFC 9562 5.7: the id starts with the Unix millisecond, so successive events' ids sort
    in the order they were built (the audit log's id index grows at its right edge)."""
    import time
    import uuid

    ids = []
    for _ in range(50):
        (event,) = build_audit_events(
            interaction="read",
            requester=DOCTOR,
            patients=["p1"],
            recorded=WHEN,
            server_base=BASE,
        )
        ids.append(event["id"])
        time.sleep(0.001)
    parsed = [uuid.UUID(i) for i in ids]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert abs((parsed[-1].int >> 80) - time.time_ns() // 1_000_000) < 60_000
