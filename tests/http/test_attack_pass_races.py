"""Time of check, time of use: a write committed between a decision and what it serves.

A read may serve a consistent snapshot taken when it was decided (what was readable at that
instant), never a body that was not readable together with the facts it was judged on: the
body of version 2 judged by the labels of version 1. Each race here is made deterministic by
running the concurrent write inside a wrapped store method, at the point between the gate's
decision and the read of what is served; no sleeps, no threads.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY
from ihe_xds import transactions
from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, auth, deny, dmp_consent, permit
from tests.http.test_r18_matrix import (
    AUTHOR,
    AUTHORIZED,
    BLOCKED,
    IDENTIFIER_SYSTEM,
    PATIENT_A,
    STRANGER,
    World,
    _id,
    doc_id,
    doc_identifier,
    document,
    own_world,
)
from tests.http.test_xds_endpoints import GP as XDS_GP
from tests.http.test_xds_endpoints import Xds, registry_status
from tests.support.documents import dmp_document

world = pytest.fixture(own_world, name="world")

CONSENT_A = _id("consent-a")  # A's Consent: permits AUTHORIZED, blocks BLOCKED
KEY = "a-visible"  # A's document, readable by AUTHORIZED until the patient masks it


def _mask(world: World) -> None:
    """The patient's write: MASQUE_PS added to the document (version 2), which hides it from
    AUTHORIZED, neither its author nor the médecin traitant (R14). Made by the server, as
    the seed is: the race is about when it lands, not who may make it."""
    coding = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE_PS"}
    masked = {
        **document(KEY),
        "id": doc_id(KEY),
        "securityLabel": [{"coding": [coding]}],
        "meta": {"security": [coding]},
    }
    world.service.update(INTERNAL, "DocumentReference", doc_id(KEY), masked)


def _after_search_of(
    world: World, monkeypatch, resource_type: str, write: Callable[[], None]
) -> list[bool]:
    """Runs `write` once, right after the first search of `resource_type` that matched the
    document returned its page: after the gate's access clause was decided and evaluated,
    before the server reads anything else. Returns a flag list, [True] once it ran."""
    store = world.service.store
    original = store.search
    ran: list[bool] = []

    def search(query, **kwargs):
        page = original(query, **kwargs)
        if (
            not ran
            and query.resource_type == resource_type
            and any(row[1] == doc_id(KEY) for row in page.rows)
        ):
            ran.append(True)
            write()
        return page

    monkeypatch.setattr(store, "search", search)
    return ran


def _new_document() -> dict:
    resource = dmp_document(PATIENT_A, None, content_type="text/plain", title="new")
    resource["author"] = [{"identifier": document(KEY)["author"][0]["identifier"]}]
    return resource


def _if_none_exist() -> str:
    criteria = quote(f"{IDENTIFIER_SYSTEM}|{doc_identifier(KEY)}")
    return f"patient={PATIENT_A}&identifier={criteria}"


def test_r14_conditional_create_never_answers_with_a_version_masked_after_its_search(
    world, monkeypatch
):
    """R14, R18: an If-None-Exist's match is judged by the access clause of its search, on
    the version the search read. The existing match answered (200) was read again after the
    search: masked in between, its version 2, carrying MASQUE_PS, was served to the
    practitioner it hides the document from, judged by version 1's labels."""
    ran = _after_search_of(world, monkeypatch, "DocumentReference", lambda: _mask(world))
    response = world.client.post(
        "/fhir/DocumentReference",
        data=json.dumps(_new_document()),
        headers=auth(
            world.tokens.practitioner(AUTHORIZED),
            **{"Content-Type": FHIR_JSON, "If-None-Exist": _if_none_exist()},
        ),
    )
    assert ran, "the masking write did not run: the race was not reproduced"
    text = response.get_data(as_text=True)
    assert "MASQUE_PS" not in text, "a version masked from the requester was served"
    if response.status_code == 200:
        served = response.get_json()
        assert served["id"] == doc_id(KEY)
        assert served["meta"]["versionId"] == "1", "served a version other than the one judged"
    current = world.service.store.read("DocumentReference", doc_id(KEY))
    assert current.version == 2  # the mask stands


def _block(world: World, idnat: str) -> None:
    """The patient's write: their Consent now blocks `idnat` too (R09)."""
    world.service.update(
        INTERNAL,
        "Consent",
        CONSENT_A,
        {
            **dmp_consent(PATIENT_A, permit(AUTHORIZED), deny(BLOCKED), deny(idnat)),
            "id": CONSENT_A,
        },
    )


def _consents_naming(world: World, idnat: str) -> list[str]:
    """The ids of A's stored Consents whose text names `idnat`."""
    found = world.service.search(INTERNAL, "Consent", [("patient", PATIENT_A), ("_count", "1000")])
    return [row[1] for row in found.matches if idnat.encode() in row[2]]


def test_r09_an_own_authorization_recorded_after_its_author_was_blocked_is_not_written(
    world, monkeypatch
):
    """R09: a blocked practitioner records no authorization of their own (R10). A create is
    judged before its store transaction opens (so that the write lock is not held
    meanwhile); the patient's block committed in between, and the practitioner's own
    authorization was written after it, judged by the Consent the block had replaced."""
    service = world.service
    original = service._prepare_create
    ran: list[bool] = []

    def prepare(requester, resource, resource_id):
        if not ran:
            ran.append(True)
            _block(world, STRANGER)
        return original(requester, resource, resource_id)

    monkeypatch.setattr(service, "_prepare_create", prepare)
    own = dmp_consent(PATIENT_A, permit(STRANGER), initial_consent=False)
    response = world.client.post(
        "/fhir/Consent",
        data=json.dumps(own),
        headers=auth(world.tokens.practitioner(STRANGER), **{"Content-Type": FHIR_JSON}),
    )
    assert ran, "the blocking write did not run: the race was not reproduced"
    assert response.status_code == 403, response.get_data(as_text=True)
    assert _consents_naming(world, STRANGER) == [CONSENT_A], "the blocked one's own was written"
    # A control: the same request, with no block in between, is written.
    monkeypatch.setattr(service, "_prepare_create", original)
    other = "810000000098"
    response = world.client.post(
        "/fhir/Consent",
        data=json.dumps(dmp_consent(PATIENT_A, permit(other), initial_consent=False)),
        headers=auth(world.tokens.practitioner(other), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)


def _deposit_after_block(world: World) -> str:
    """The patient blocks AUTHORIZED, then a new document is deposited in A's record (by
    its author, made here by the server): a document AUTHORIZED never could read. Its id."""
    _block(world, AUTHORIZED)
    new = {**document("a-visible"), "identifier": [{"system": IDENTIFIER_SYSTEM, "value": NEW}]}
    new.pop("relatesTo", None)
    return world.service.create(INTERNAL, "DocumentReference", new).stored.id


NEW = "urn:uuid:6a1e7c3e-0000-4000-8000-0000000000aa"


def test_r09_a_search_never_serves_a_document_deposited_after_its_requester_was_blocked(
    world, monkeypatch
):
    """R09, R18: a search's access is decided on the record's facts, then its page read.
    The patient's block, and a document deposited after it, committed in between: the page
    served that document to the blocked practitioner, judged by the Consent the block had
    replaced. Answering as of the decision is fine (what was readable then); a document
    that did not exist until after the block never was."""
    store = world.service.store
    original = store.search
    deposited: list[str] = []

    def search(query, **kwargs):
        if not deposited and query.resource_type == "DocumentReference":
            deposited.append(_deposit_after_block(world))
        return original(query, **kwargs)

    monkeypatch.setattr(store, "search", search)
    response = world.get(
        world.tokens.practitioner(AUTHORIZED), f"/fhir/DocumentReference?patient={PATIENT_A}"
    )
    assert deposited, "the blocking write did not run: the race was not reproduced"
    assert deposited[0] not in response.get_data(as_text=True), (
        "the blocked practitioner was served a document deposited after the block"
    )
    assert response.status_code == 403, response.get_data(as_text=True)


@pytest.fixture
def xds(app, client, tokens, data_dir):
    return Xds(app, client, tokens, data_dir)


def test_r14_a_retrieve_whose_document_was_labelled_during_it_is_not_named_to_the_patient(
    xds, monkeypatch
):
    """R14, R16, R18: ITI-43 finds the document by its uniqueId, then reads its Binary as the
    requester (judged by the document's current version). A practitioner's INVISIBLE_PATIENT
    committed in between: the médecin traitant's retrieve is still served (the label does
    not hide it from them), but its event carried the labels of the version found before the
    label, none, and named the document, by its uniqueId, in the trail of the patient it is
    now hidden from, as a read recorded after the label must not (test_audit_trace_label_added)."""
    patient_id, nir = xds.patient(1)
    request, response = xds.deposit(nir)
    assert response.status_code == 200, response.get_data(as_text=True)
    (unique_id,) = request.document_unique_ids.values()
    service = xds.runtime.service
    original = service.documents_with_unique_id
    labelled: list[str] = []

    def documents_with_unique_id(system, value):
        found = original(system, value)
        if not labelled:
            for document in found:
                labelled.append(document["id"])
                coding = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}
                service.update(
                    INTERNAL,
                    "DocumentReference",
                    document["id"],
                    {
                        **document,
                        "securityLabel": [*document.get("securityLabel", []), {"coding": [coding]}],
                        "meta": {"security": [coding]},
                    },
                )
        return found

    monkeypatch.setattr(service, "documents_with_unique_id", documents_with_unique_id)
    patient = xds.tokens.patient(patient_id)
    before = _events_naming(xds, patient, patient_id, unique_id)
    retrieved = xds.retrieve([unique_id], XDS_GP, nir)
    assert labelled, "the labelling write did not run: the race was not reproduced"
    assert retrieved.status_code == 200 and b"ClinicalDocument" in retrieved.get_data()
    # The deposit's own events keep the labels the document had then (none): an event keeps
    # the labels its entities had when it was recorded. The retrieve's must not name it.
    after = _events_naming(xds, patient, patient_id, unique_id)
    assert after == before, "the patient's trail names the document now hidden from them"


def _events_naming(xds, token: str, patient_id: str, *names: str) -> set[str]:
    """The ids of the events `token` is shown in the record's trail that name any of `names`."""
    shown = xds.client.get(f"/fhir/AuditEvent?patient={patient_id}&_count=100", headers=auth(token))
    assert shown.status_code == 200, shown.get_data(as_text=True)
    events = [entry["resource"] for entry in shown.get_json().get("entry", [])]
    assert events, "the patient's trace is empty: the search is broken"
    return {event["id"] for event in events if any(name in json.dumps(event) for name in names)}


def _documents(world: World) -> set[str]:
    """The ids of A's stored DocumentReferences, as the server itself finds them."""
    found = world.service.search(
        INTERNAL, "DocumentReference", [("patient", PATIENT_A), ("_count", "1000")]
    )
    return {row[1] for row in found.matches}


def _add_invisible_patient(world: World, resource_id: str) -> None:
    """A practitioner's write: INVISIBLE_PATIENT added to the document (its version 2), which
    hides it from the patient until the medical announcement (R14)."""
    current = world.service.store.read("DocumentReference", resource_id).json()
    coding = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}
    current.pop("meta", None)
    labelled = {**current, "securityLabel": [{"coding": [coding]}], "meta": {"security": [coding]}}
    world.service.update(INTERNAL, "DocumentReference", resource_id, labelled)


def test_r14_a_replacement_never_drops_a_label_added_to_the_replaced_document_meanwhile(
    world, monkeypatch
):
    """R14: a replacement supersedes the replaced document by a PUT of it with status
    superseded, read before the write transaction opens. A practitioner's INVISIBLE_PATIENT
    committed in between: the PUT wrote back the version read before it, and the label was
    gone, the document shown to the patient before the medical announcement, by a
    depositor who never asked for it (a lost update). The label stays, or nothing is
    written."""
    registry = world.service.documents
    original = registry.supersedes
    ran: list[bool] = []

    def supersedes(requester, entries):
        found = original(requester, entries)
        if not ran and found[1]:
            ran.append(True)
            _add_invisible_patient(world, doc_id(KEY))
        return found

    monkeypatch.setattr(registry, "supersedes", supersedes)
    before = _documents(world)
    # The document's author may replace it once the patient authorizes them (R10).
    world.service.update(
        INTERNAL,
        "Consent",
        CONSENT_A,
        {
            **dmp_consent(PATIENT_A, permit(AUTHORIZED), permit(AUTHOR), deny(BLOCKED)),
            "id": CONSENT_A,
        },
    )
    replacement = _new_document()
    replacement["relatesTo"] = [
        {"code": "replaces", "target": {"reference": f"DocumentReference/{doc_id(KEY)}"}}
    ]
    response = world.client.post(
        "/fhir/DocumentReference",
        data=json.dumps(replacement),
        headers=auth(world.tokens.practitioner(AUTHOR), **{"Content-Type": FHIR_JSON}),
    )
    assert ran, response.get_data(as_text=True)
    current = world.service.store.read("DocumentReference", doc_id(KEY)).json()
    codes = {c["code"] for c in current.get("meta", {}).get("security", [])}
    assert "INVISIBLE_PATIENT" in codes, (
        f"the replacement ({response.status_code}) dropped the label added meanwhile"
    )
    if response.status_code != 201:  # refused whole: nothing of it written
        assert response.status_code == 412, response.get_data(as_text=True)
        assert _documents(world) == before


def test_r14_an_iti41_rplc_never_drops_a_label_added_to_the_replaced_document_meanwhile(
    xds, monkeypatch
):
    """R14: ITI-41 RPLC, the same race: the replaced entry is read to be superseded before
    the deposit's transaction opens; INVISIBLE_PATIENT added in between was written over by
    the superseding PUT of the version read before it."""
    patient_id, nir = xds.patient(4)
    xds.deposit(nir)
    service = xds.runtime.service
    (old,) = service.find(INTERNAL, "DocumentReference", [("patient", patient_id)])
    entry_uuid = next(
        i["value"] for i in old.json()["identifier"] if i["value"].startswith("urn:uuid:")
    )
    original = transactions._replacements
    ran: list[bool] = []

    def replacements(submission, mapped, find_entry):
        found = original(submission, mapped, find_entry)
        if not ran and found[0]:
            ran.append(True)
            current = service.store.read("DocumentReference", old.id).json()
            coding = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}
            current.pop("meta", None)
            current["securityLabel"] = [{"coding": [coding]}]
            current["meta"] = {"security": [coding]}
            service.update(INTERNAL, "DocumentReference", old.id, current)
        return found

    monkeypatch.setattr(transactions, "_replacements", replacements)
    _, response = xds.deposit(nir, replaces=entry_uuid, documents=[b"<v2/>"])
    assert ran, response.get_data(as_text=True)
    current = service.store.read("DocumentReference", old.id).json()
    codes = {c["code"] for c in current.get("meta", {}).get("security", [])}
    assert "INVISIBLE_PATIENT" in codes, "the RPLC dropped the label added meanwhile"
    if current["status"] != "superseded":  # refused whole: nothing of it written
        assert registry_status(response)[0] == v.RESPONSE_FAILURE
        assert len(service.find(INTERNAL, "DocumentReference", [("patient", patient_id)])) == 1


OTHER_CONSENT = "0b0b0b0b-0000-4000-8000-00000000c0c0"


def _consent_with_identifier(value: str) -> dict:
    """A second Consent of A's, with a business identifier (the patient's own)."""
    return {
        **dmp_consent(PATIENT_A, permit("810000000097"), initial_consent=False),
        "identifier": [{"system": IDENTIFIER_SYSTEM, "value": value}],
    }


def _moved_after_its_match(world, monkeypatch, first: str, moved: str) -> list[bool]:
    """OTHER_CONSENT stored with identifier `first`, then moved to `moved` by a write
    committed right after the first conditional search that finds it (the race: between
    the match and the write transaction). The list it returns holds True once it ran."""
    put = world.service.update
    put(
        INTERNAL, "Consent", OTHER_CONSENT, {**_consent_with_identifier(first), "id": OTHER_CONSENT}
    )
    service = world.service
    original = service.conditional_matches
    ran: list[bool] = []

    def conditional_matches(requester, condition):
        found = original(requester, condition)
        if not ran and found:
            ran.append(True)
            changed = {**_consent_with_identifier(moved), "id": OTHER_CONSENT}
            put(INTERNAL, "Consent", OTHER_CONSENT, changed)
        return found

    monkeypatch.setattr(service, "conditional_matches", conditional_matches)
    return ran


def test_r06_a_conditional_update_never_writes_over_what_its_criteria_no_longer_match(
    world, monkeypatch
):
    """FHIR http.html#cond-update, R06: a conditional update writes the one resource its
    criteria match. The match was searched before the write transaction opened; the
    resource changed in between so that the criteria no longer match it, and the update
    wrote over it all the same (a Consent the criteria did not name any more). The
    criteria are searched again in the write's transaction: what they match then is
    updated, here nothing, so the body is created."""
    first, moved = "urn:uuid:6a1e7c3e-0000-4000-8000-0000000000c1", "urn:uuid:moved"
    ran = _moved_after_its_match(world, monkeypatch, first, moved)
    body = _consent_with_identifier(first)
    body["provision"]["provision"].append(deny("810000000096"))
    response = world.client.put(
        f"/fhir/Consent?patient={PATIENT_A}&identifier={quote(f'{IDENTIFIER_SYSTEM}|{first}')}",
        data=json.dumps(body),
        headers=auth(world.tokens.patient(PATIENT_A), **{"Content-Type": FHIR_JSON}),
    )
    assert ran, response.get_data(as_text=True)
    stored = world.service.store.read("Consent", OTHER_CONSENT).json()
    assert stored["identifier"][0]["value"] == moved, (
        f"the update ({response.status_code}) wrote over a Consent its criteria no longer match"
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["id"] != OTHER_CONSENT


@pytest.mark.parametrize("kind", ["batch", "transaction"])
def test_r06_a_bundles_conditional_update_never_writes_over_what_its_criteria_no_longer_match(
    world, monkeypatch, kind
):
    """The same race through a Bundle entry: a transaction searches its conditional
    entries' criteria before its write transaction opens (http.html#trules), and wrote
    over the Consent they no longer matched; a batch entry is performed as the request
    alone."""
    first, moved = "urn:uuid:6a1e7c3e-0000-4000-8000-0000000000c2", "urn:uuid:moved"
    ran = _moved_after_its_match(world, monkeypatch, first, moved)
    body = _consent_with_identifier(first)
    body["provision"]["provision"].append(deny("810000000096"))
    criteria = quote(f"{IDENTIFIER_SYSTEM}|{first}")
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {
                "resource": body,
                "request": {
                    "method": "PUT",
                    "url": f"Consent?patient={PATIENT_A}&identifier={criteria}",
                },
            }
        ],
    }
    response = world.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(world.tokens.patient(PATIENT_A), **{"Content-Type": FHIR_JSON}),
    )
    assert ran, response.get_data(as_text=True)
    stored = world.service.store.read("Consent", OTHER_CONSENT).json()
    assert stored["identifier"][0]["value"] == moved, (
        "the entry wrote over a Consent its criteria no longer match"
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    (entry,) = response.get_json()["entry"]
    assert entry["response"]["status"].startswith("201"), entry
