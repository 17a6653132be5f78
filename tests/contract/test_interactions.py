"""FHIR RESTful interactions through the service, on every engine (http.html)."""

from __future__ import annotations

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.errors import FhirError

INS = {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "185077512345608"}


def patient(family: str = "Durand", **extra) -> dict:
    return {
        "resourceType": "Patient",
        "identifier": [INS],
        "name": [{"family": family, "given": ["Marie"]}],
        "gender": "female",
        "birthDate": "1985-07-01",
        **extra,
    }


def test_create_assigns_id_version_and_meta(engine_service):
    service, _ = engine_service
    result = service.create(INTERNAL, "Patient", patient())
    body = result.stored.json()
    assert result.created and result.stored.version == 1
    assert body["id"] == result.stored.id and body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")


def test_read_returns_the_stored_bytes(engine_service):
    service, _ = engine_service
    created = service.create(INTERNAL, "Patient", patient()).stored
    assert service.read(INTERNAL, "Patient", created.id).body == created.body


def test_update_makes_a_new_version_and_vread_keeps_the_old(engine_service):
    service, _ = engine_service
    created = service.create(INTERNAL, "Patient", patient("Before")).stored
    updated = service.update(
        INTERNAL, "Patient", created.id, {**patient("After"), "id": created.id}
    ).stored
    assert updated.version == 2
    assert service.vread(INTERNAL, "Patient", created.id, 1).json()["name"][0]["family"] == "Before"
    assert service.read(INTERNAL, "Patient", created.id).json()["name"][0]["family"] == "After"


def test_update_as_create_keeps_the_client_id(engine_service):
    service, _ = engine_service
    result = service.update(
        INTERNAL, "Patient", "client-chosen-1", {**patient(), "id": "client-chosen-1"}
    )
    assert result.created and result.stored.id == "client-chosen-1"


def test_update_with_stale_if_match_is_412(engine_service):
    service, _ = engine_service
    created = service.create(INTERNAL, "Patient", patient()).stored
    service.update(INTERNAL, "Patient", created.id, {**patient(), "id": created.id}, if_match=1)
    with pytest.raises(FhirError) as raised:
        service.update(INTERNAL, "Patient", created.id, {**patient(), "id": created.id}, if_match=1)
    assert raised.value.status == 412


def test_update_with_mismatched_id_is_400(engine_service):
    service, _ = engine_service
    with pytest.raises(FhirError) as raised:
        service.update(INTERNAL, "Patient", "a", {**patient(), "id": "b"})
    assert raised.value.status == 400 and raised.value.issues[0].expression == ("Patient.id",)


def test_delete_is_logical_then_read_is_410_and_history_kept(engine_service):
    service, _ = engine_service
    created = service.create(INTERNAL, "Patient", patient()).stored
    service.delete(INTERNAL, "Patient", created.id)
    with pytest.raises(FhirError) as raised:
        service.read(INTERNAL, "Patient", created.id)
    assert raised.value.status == 410
    assert service.vread(INTERNAL, "Patient", created.id, 1).version == 1
    history = service.history(INTERNAL, "Patient", created.id)
    assert [e.method for e in history.entries] == ["DELETE", "POST"]


def test_unknown_resource_is_404_and_unknown_type_is_404(engine_service):
    service, _ = engine_service
    for call in (
        lambda: service.read(INTERNAL, "Patient", "nope"),
        lambda: service.read(INTERNAL, "Observation", "x"),
    ):
        with pytest.raises(FhirError) as raised:
            call()
        assert raised.value.status == 404


def test_invalid_resource_lists_every_issue_with_its_path(engine_service):
    service, _ = engine_service
    bad = {"resourceType": "Patient", "birthDate": "1985-13-45", "gender": "robot", "foo": 1}
    with pytest.raises(FhirError) as raised:
        service.create(INTERNAL, "Patient", bad)
    expressions = {e for issue in raised.value.issues for e in issue.expression}
    assert raised.value.status == 400
    assert {"Patient.birthDate", "Patient.gender", "Patient.foo"} <= expressions


def test_conditional_create_returns_the_existing_match(engine_service):
    """http.html#ccreate: If-None-Exist with one match creates nothing."""
    service, _ = engine_service
    first = service.create(
        INTERNAL,
        "Patient",
        patient(),
        if_none_exist=[("identifier", f"{INS['system']}|{INS['value']}")],
    )
    second = service.create(
        INTERNAL,
        "Patient",
        patient(),
        if_none_exist=[("identifier", f"{INS['system']}|{INS['value']}")],
    )
    assert first.created and not second.created and second.stored.id == first.stored.id


def test_conditional_update_and_delete_by_identifier(engine_service):
    service, _ = engine_service
    criteria = [("identifier", f"{INS['system']}|{INS['value']}")]
    created = service.conditional_update(INTERNAL, "Patient", criteria, patient("One"))
    updated = service.conditional_update(INTERNAL, "Patient", criteria, patient("Two"))
    assert created.created and not updated.created and updated.stored.id == created.stored.id
    service.conditional_delete(INTERNAL, "Patient", criteria)
    with pytest.raises(FhirError) as raised:
        service.read(INTERNAL, "Patient", created.stored.id)
    assert raised.value.status == 410


def test_conditional_delete_with_several_matches_is_412(engine_service):
    service, _ = engine_service
    service.create(INTERNAL, "Patient", patient("Twin"))
    service.create(INTERNAL, "Patient", patient("Twin"))
    with pytest.raises(FhirError) as raised:
        service.conditional_delete(INTERNAL, "Patient", [("family", "Twin")])
    assert raised.value.status == 412


def _transaction(*entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": "transaction", "entry": list(entries)}


def test_transaction_rewrites_urn_uuid_references(engine_service):
    """http.html#trules: fullUrl urn:uuid references point at the server ids after processing."""
    service, bundles = engine_service
    bundle = _transaction(
        {
            "fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
            "resource": patient(),
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
            "resource": {
                "resourceType": "DocumentReference",
                "status": "current",
                "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
                "content": [
                    {
                        "attachment": {
                            "contentType": "text/plain",
                            "url": "urn:uuid:33333333-3333-3333-3333-333333333333",
                        }
                    }
                ],
            },
            "request": {"method": "POST", "url": "DocumentReference"},
        },
        {
            "fullUrl": "urn:uuid:33333333-3333-3333-3333-333333333333",
            "resource": {"resourceType": "Binary", "contentType": "text/plain", "data": "aGVsbG8="},
            "request": {"method": "POST", "url": "Binary"},
        },
    )
    kind, responses = bundles.process(INTERNAL, bundle)
    assert kind == "transaction-response" and [r.status for r in responses] == ["201 Created"] * 3
    patient_ref = responses[0].location.split("/_history")[0]
    binary_ref = responses[2].location.split("/_history")[0]
    document = service.read(INTERNAL, *responses[1].location.split("/")[:2]).json()
    assert document["subject"]["reference"] == patient_ref
    assert document["content"][0]["attachment"]["url"] == binary_ref


def test_transaction_entries_are_indexed_with_their_rewritten_references(engine_service):
    """A transaction's entries are indexed as stored (search.html): by the server ids their
    urn:uuid references were rewritten to (http.html#trules), and an entry updated by a later
    transaction by its new values only. Their index entries are extracted before the write
    transaction opens, after the rewrite."""
    service, bundles = engine_service
    _, created = bundles.process(
        INTERNAL,
        _transaction(
            {
                "fullUrl": "urn:uuid:11111111-1111-1111-1111-111111111111",
                "resource": patient(family="Avant"),
                "request": {"method": "POST", "url": "Patient"},
            },
            {
                "fullUrl": "urn:uuid:22222222-2222-2222-2222-222222222222",
                "resource": {
                    "resourceType": "List",
                    "status": "current",
                    "mode": "working",
                    "subject": {"reference": "urn:uuid:11111111-1111-1111-1111-111111111111"},
                },
                "request": {"method": "POST", "url": "List"},
            },
        ),
    )
    patient_ref = created[0].location.split("/_history")[0]
    patient_id = patient_ref.split("/")[1]

    def found(resource_type: str, params: list[tuple[str, str]]) -> list[str]:
        result = service.search(INTERNAL, resource_type, params)
        return [resource_id for _, resource_id, *_ in result.matches]

    list_id = created[1].location.split("/")[1]
    assert found("List", [("subject", patient_ref)]) == [list_id]
    assert found("List", [("patient", patient_id)]) == [list_id]

    _, updated = bundles.process(
        INTERNAL,
        _transaction(
            {
                "resource": patient(family="Apres", id=patient_id),
                "request": {"method": "PUT", "url": patient_ref},
            }
        ),
    )
    assert updated[0].status == "200 OK"
    assert found("Patient", [("family", "Apres")]) == [patient_id]
    assert found("Patient", [("family", "Avant")]) == []


def test_transaction_with_a_failing_entry_stores_nothing_and_names_the_entry(engine_service):
    service, bundles = engine_service
    bundle = _transaction(
        {"resource": patient("Kept?"), "request": {"method": "POST", "url": "Patient"}},
        {
            "resource": {"resourceType": "Patient", "birthDate": "not a date"},
            "request": {"method": "POST", "url": "Patient"},
        },
    )
    with pytest.raises(FhirError) as raised:
        bundles.process(INTERNAL, bundle)
    assert raised.value.status == 400
    assert any("Bundle.entry[1]" in issue.diagnostics for issue in raised.value.issues)
    assert service.search(INTERNAL, "Patient", [("family", "Kept")]).matches == []


def test_transaction_rolls_back_when_a_write_fails_midway(engine_service):
    """A stale If-Match on the last entry undoes the entries written before it."""
    service, bundles = engine_service
    existing = service.create(INTERNAL, "Patient", patient("Existing")).stored
    bundle = _transaction(
        {"resource": patient("New"), "request": {"method": "POST", "url": "Patient"}},
        {
            "resource": {**patient("Changed"), "id": existing.id},
            "request": {"method": "PUT", "url": f"Patient/{existing.id}", "ifMatch": 'W/"7"'},
        },
    )
    with pytest.raises(FhirError) as raised:
        bundles.process(INTERNAL, bundle)
    assert raised.value.status == 412 and "Bundle.entry[1]" in raised.value.issues[0].diagnostics
    assert service.search(INTERNAL, "Patient", [("family", "New")]).matches == []
    assert service.read(INTERNAL, "Patient", existing.id).version == 1


def test_transaction_processing_order_deletes_before_creates(engine_service):
    """http.html#trules: DELETE, then POST, then PUT, then GET, whatever the entry order."""
    service, bundles = engine_service
    old = service.create(INTERNAL, "Patient", patient("Old")).stored
    bundle = _transaction(
        {"request": {"method": "GET", "url": f"Patient/{old.id}"}},
        {"resource": patient("Fresh"), "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "DELETE", "url": f"Patient/{old.id}"}},
    )
    _, responses = bundles.process(INTERNAL, bundle)
    assert responses[2].status.startswith("204")
    assert responses[0].status == "410"  # the GET ran after the DELETE


def test_transaction_resolves_conditional_references(engine_service):
    service, bundles = engine_service
    target = service.create(INTERNAL, "Patient", patient()).stored
    bundle = _transaction(
        {
            "resource": {
                "resourceType": "Consent",
                "status": "active",
                "scope": {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                            "code": "patient-privacy",
                        }
                    ]
                },
                "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
                "patient": {"reference": f"Patient?identifier={INS['system']}|{INS['value']}"},
                "provision": {"type": "permit"},
            },
            "request": {"method": "POST", "url": "Consent"},
        },
    )
    _, responses = bundles.process(INTERNAL, bundle)
    consent = service.read(INTERNAL, *responses[0].location.split("/")[:2]).json()
    assert consent["patient"]["reference"] == f"Patient/{target.id}"


def test_batch_entries_succeed_or_fail_on_their_own(engine_service):
    service, bundles = engine_service
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": patient("Good"), "request": {"method": "POST", "url": "Patient"}},
            {
                "resource": {"resourceType": "Patient", "gender": "robot"},
                "request": {"method": "POST", "url": "Patient"},
            },
        ],
    }
    kind, responses = bundles.process(INTERNAL, bundle)
    assert kind == "batch-response"
    assert responses[0].status == "201 Created" and responses[1].status == "400"
    assert responses[1].outcome["issue"][0]["expression"] == ["Patient.gender"]


def test_batch_get_entry_may_be_a_search(engine_service):
    """http.html#transaction: a GET entry's url may be a search; its answer is a searchset."""
    import orjson

    service, bundles = engine_service
    service.create(INTERNAL, "Patient", patient("Findable"))
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "GET", "url": "Patient?family=Findable&_total=accurate"}}],
    }
    _, responses = bundles.process(INTERNAL, bundle)
    searchset = orjson.loads(responses[0].resource)
    assert responses[0].status == "200 OK" and searchset["type"] == "searchset"
    assert searchset["total"] == 1
    assert searchset["entry"][0]["resource"]["name"][0]["family"] == "Findable"
