"""Attack pass: can someone who may WRITE learn or reach what they may not READ? (R15, R18)

Writers tried: a system client holding write scopes (R15: it deposits and deprecates
documents, it reads no document), a professional who may deposit for a patient but not read
the record (no authorization, R10) or a masked document (R14), a representative (R07). Doors:
conditional create, update, delete and patch, If-Match, PUT, PATCH, DELETE, transaction and
batch entries, ITI-65 and ITI-41 associations, error messages, Location and ETag.

What it found, and what these tests hold:

- A system client's PATCH of a document's status (`entered-in-error`, PDSm's logical
  deletion) was permitted for any document of an open record, masked ones included, named
  by its id alone: the policy let a system change a document's status (meant for the PUT
  that deprecates a replaced document, whose body the system must send whole), and the
  answer was the patched document, whole: its labels, type, class, author, title and the
  Binary it names. A system reads no document (R15); it now gets the refusal every change it
  may make of no document gets, before the id is looked at (`DmpPolicy.change_refusal`): the
  same 403 whatever the id names, and nothing changes.
- A conditional PATCH (PDSm names the document by its identifier, no patient) was searched by
  the server and only its matches were judged: a chain or `_has` in the criteria read the
  record unconstrained. `?_id=V&patient._has:DocumentReference:patient:security-label=
  MASQUE_PS`, V a document the requester may read, found V exactly when the record held a
  masked document (a practitioner), an INVISIBLE_PATIENT one (the patient), told by a patch
  refused once V is found (422, nothing changed) against a 404. The clauses now read only
  what the requester could search (`Gate.constrain_joins`).
- ITI-65 resolves a conditional patient reference (`Patient?identifier=INS`) itself, since a
  depositor need not read the record; it resolved any criteria, so that
  `Patient?identifier=INS&_has:DocumentReference:patient:category=31` told a professional
  who may not read the record, or a system client, whether it holds a document of that
  class, masked or not (XDSUnknownPatientId or not, a wrong hash keeping anything from being
  deposited). Only `identifier` is accepted there now; anything else is refused the same way
  whatever the record holds.
- ITI-65 looked a deposit's uniqueId up as an `identifier` search parameter: a comma in the
  masterIdentifier (`<uniqueId>,urn:ietf:rfc:3986|<entryUUID>`) found a masked document by
  its entryUUID and compared its hash (XDSNonIdenticalHash, an unknown one a metadata
  error). It is looked up as a masterIdentifier, whole (`service.unique_ids`).
- Read side, found on the way: a DocumentReference is served without the relatesTo whose
  target its reader may not read, a List without those entries (R14), but
  `relatesto:missing=false`, `relation=appends`, `relationship=appends$DocumentReference/
  <hidden id>` and `item:missing=false` were judged on the stored elements: M's parent
  found the document whose only relation named an INVISIBLE_REPRESENTANTS_LEGAUX document,
  the relation's code, and a List whose every entry was hidden; `relatesto:identifier=
  <entryUUID>` (ITI-41 keeps the target's identifier beside its reference) and
  `item:identifier=` told that an entryUUID is a hidden document's. They are judged on what
  is served now (`Gate._constrain_joins`).

What held (tried, answered as for a missing resource or refused alike): conditional create,
update and delete by a professional who may only deposit (R10, refused before their
criteria are searched) and by a system client (no search scope); If-Match on a document
hidden from the writer; relatesTo (replaces, appends, transforms) and ITI-41 RPLC/APND/XFRM
naming a hidden document; a message attaching a hidden document; an attachment url naming a
hidden Binary in any spelling (a versioned or absolute one names no Binary); error messages
(no hidden id, title, type or status).
"""

from __future__ import annotations

import json
import re
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY
from tests.http.conftest import FHIR_JSON, INS_SYSTEM, auth, valid_nir
from tests.http.test_change_door_probes import knock, stored
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    CASES,
    IDENTIFIER_SYSTEM,
    PATIENT_A,
    PATIENT_M,
    STRANGER,
    UNKNOWN_ID,
    World,
    _id,
    doc_id,
    doc_identifier,
    document,
    own_world,
)
from tests.support.documents import transaction

# What a status PATCH is, at every door a PATCH has (alone, by criteria, a Bundle entry).
PATCH_DOORS = ("PATCH", "PATCH ?_id", "transaction PATCH", "batch PATCH")


# test_r18_matrix's record, one per test: a door that changed the document (a logical
# deletion) would hide it from the doors tried after it.
world = pytest.fixture(own_world, name="world")


def system_token(world: World) -> str:
    """A hospital's system client with the scopes of a deposit and a deprecation."""
    return world.tokens.system(
        "his", "system/DocumentReference.cu system/Binary.c system/List.c", "hospital"
    )


@pytest.mark.parametrize("door", PATCH_DOORS)
@pytest.mark.parametrize("key", ["a-visible", "a-masked"])
def test_r15_a_system_clients_patch_of_a_document_answers_as_for_a_missing_id(world, key, door):
    """R15: a system client reads no document and deprecates one only by a PUT of it whole.
    Its PATCH of a document's status (a logical deletion), by id, by criteria or in a
    Bundle, answers exactly as for an id that names nothing, and changes nothing."""
    token = system_token(world)
    target = doc_id(key)
    before = stored(world, "DocumentReference", target)
    answers = [
        knock(world, token, door, "DocumentReference", resource_id, {})
        for resource_id in (target, UNKNOWN_ID)
    ]
    assert answers[0] == answers[1], answers
    assert stored(world, "DocumentReference", target) == before, "the document changed"


def test_r15_a_system_clients_patch_does_not_answer_the_document(world):
    """The answer to a system's PATCH names nothing of the document: before, it was the
    patched document whole (labels, type, author, title, its Binary)."""
    token = system_token(world)
    target = doc_id("a-masked")
    document = world.service.read(INTERNAL, "DocumentReference", target).json()
    response = world.client.patch(
        f"/fhir/DocumentReference/{target}",
        data=json.dumps([{"op": "replace", "path": "/status", "value": "entered-in-error"}]),
        headers=auth(
            token,
            **{"Content-Type": "application/json-patch+json", "Prefer": "return=representation"},
        ),
    )
    assert response.status_code == 403, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    for secret in (
        document["type"]["coding"][0]["code"],
        document["content"][0]["attachment"]["url"],
        "MASQUE_PS",
    ):
        assert secret not in text
    assert "ETag" not in response.headers and "Location" not in response.headers
    assert world.service.read(INTERNAL, "DocumentReference", target).json()["status"] == "current"


# -- criteria a writer gives, evaluated by the server ----------------------------------------

# Pairs of criteria on A's record: the first names what A's record holds but the requester
# may not see, the second what it does not hold. Joined to what the requester may see, each
# pair must be answered alike.
HIDDEN_AND_ABSENT = {
    # a-masked (class 31, MASQUE_PS) is hidden from an authorized practitioner (R14)
    "class-of-a-masked-document": ("category=31", "category=99"),
    "masked-label": ("security-label=MASQUE_PS", "security-label=INVISIBLE_REPRESENTANTS_LEGAUX"),
    # a-invisible (class 42, INVISIBLE_PATIENT) is hidden from the patient (R14)
    "invisible-patient-label": (
        "security-label=INVISIBLE_PATIENT",
        "security-label=INVISIBLE_REPRESENTANTS_LEGAUX",
    ),
}


def _broken_provide_bundle(subject: str) -> dict:
    """An ITI-65 of one document for `subject` (a conditional Patient reference) whose hash is
    wrong: refused whatever the subject resolves to, so that nothing is deposited, with
    every problem of the Bundle reported at once (the resolution of the subject included)."""
    bundle = transaction(subject, with_submission_set=True)
    document = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    )
    document["content"][0]["attachment"]["hash"] = "AAAAAAAAAAAAAAAAAAAAAAAAAAA="
    return bundle


def _answer(response, *values: str) -> tuple:
    """Status, and each issue's code, XDS code and diagnostics, with the criteria and
    `values` blanked."""
    body = response.get_json(silent=True) or {}
    issues = []
    for issue in body.get("issue", []):
        codes = [c.get("code") for c in (issue.get("details") or {}).get("coding", [])]
        text = re.sub(r"Patient\?\S*", "Patient?<criteria>", issue.get("diagnostics") or "")
        text = re.sub(r"urn:oid:[0-9.]+", "<uniqueId>", text)
        for value in values:
            text = text.replace(value, "<value>")
        issues.append((issue.get("code"), codes, text))
    return response.status_code, issues


@pytest.mark.parametrize("writer", ["practitioner-not-authorized", "system-client"])
@pytest.mark.parametrize("pair", ["class-of-a-masked-document", "masked-label"])
def test_r18_an_iti65_patient_reference_reads_nothing_of_the_record(world, writer, pair):
    """ITI-65 lets a depositor name the patient by a conditional reference, which the
    registry resolves itself (a depositor need not read the record, R10, R15). It resolved
    any criteria: `Patient?identifier=INS&_has:DocumentReference:patient:category=31` told a
    writer who may read nothing of the record whether it holds a document of that class, a
    masked one too (XDSUnknownPatientId or not), with a wrong hash so that nothing was
    deposited. Criteria naming what the record holds and what it does not are answered
    alike, and a patient named by INS alone is still resolved."""
    token = (
        world.tokens.practitioner(STRANGER) if writer != "system-client" else system_token(world)
    )
    ins = quote(f"{INS_SYSTEM}|{valid_nir(1)}")
    answers = []
    for criterion in HIDDEN_AND_ABSENT[pair]:
        subject = f"Patient?identifier={ins}&_has:DocumentReference:patient:{criterion}"
        response = world.client.post(
            "/fhir",
            data=json.dumps(_broken_provide_bundle(subject)),
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        )
        answers.append(_answer(response))
    assert answers[0] == answers[1], answers
    alone = world.client.post(
        "/fhir",
        data=json.dumps(_broken_provide_bundle(f"Patient?identifier={ins}")),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )
    assert "XDSUnknownPatientId" not in alone.get_data(as_text=True)


def _conditional_patch(world: World, token: str, criteria: str):
    """A conditional PATCH that fails once its target is found (PDSm changes no
    description), so that it changes nothing: 404 when the criteria find no document."""
    return world.client.patch(
        f"/fhir/DocumentReference?{criteria}",
        data=json.dumps([{"op": "replace", "path": "/description", "value": "x"}]),
        headers=auth(token, **{"Content-Type": "application/json-patch+json"}),
    )


@pytest.mark.parametrize(
    ("reader", "pair", "seen"),
    [
        ("authorized-practitioner", "class-of-a-masked-document", "category=10"),
        ("authorized-practitioner", "masked-label", "category=10"),
        ("patient", "invisible-patient-label", "security-label=MASQUE_PS"),
    ],
)
@pytest.mark.parametrize("designated", [True, False], ids=["patient-named", "identifier-only"])
def test_r18_conditional_patch_criteria_read_only_what_the_requester_may_see(
    world, reader, pair, seen, designated
):
    """A conditional PATCH's criteria were searched by the server, and only the documents
    found were judged: a chain or `_has` in them read the record unconstrained. A
    practitioner patching a document they may read, `?_id=V&patient._has:DocumentReference:
    patient:security-label=MASQUE_PS`, learned whether the record holds a masked document
    (a patch refused once V is found, or 404), its class too; the patient likewise learned
    of an INVISIBLE_PATIENT document. The criteria now see what a search by the requester
    sees: a pair naming a hidden and an absent document is answered alike, and what the
    requester may see is still found."""
    token = (
        world.tokens.patient(PATIENT_A)
        if reader == "patient"
        else world.tokens.practitioner(AUTHORIZED)
    )
    target = doc_id("a-visible")
    before = stored(world, "DocumentReference", target)
    prefix = f"_id={target}&" + (f"patient={PATIENT_A}&" if designated else "")
    answers = [
        _answer(
            _conditional_patch(world, token, f"{prefix}patient._has:DocumentReference:patient:{c}")
        )
        for c in HIDDEN_AND_ABSENT[pair]
    ]
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 404
    if designated or reader == "patient":
        control = _conditional_patch(
            world, token, f"{prefix}patient._has:DocumentReference:patient:{seen}"
        )
        assert control.status_code != 404, "the criteria no longer find what the requester sees"
    assert stored(world, "DocumentReference", target) == before


# -- searches by a naming element, judged on what is served ----------------------------------

# M's m-visible relates to m-invisible-rl only (an `appends`), which is hidden from M's parent
# (R07) and seen by AUTHORIZED; the List the test adds names only documents hidden from the
# parent, seen by AUTHORIZED.
NAMING_SEARCHES = {
    "relatesto-present": ("DocumentReference", "relatesto:missing=false"),
    "relation-code": ("DocumentReference", "relation=appends"),
    "relationship-to-it": (
        "DocumentReference",
        "relationship=appends$DocumentReference/" + doc_id("m-invisible-rl"),
    ),
    "list-item-present": ("List", "item:missing=false"),
    # ITI-41 keeps a relation's target identifier (its entryUUID) beside its reference
    "relatesto-by-identifier": (
        "DocumentReference",
        "relatesto:identifier=" + quote(f"{IDENTIFIER_SYSTEM}|{doc_identifier('m-invisible-rl')}"),
    ),
    "list-item-by-identifier": (
        "List",
        "item:identifier=" + quote(f"{IDENTIFIER_SYSTEM}|{doc_identifier('m-invisible-rl')}"),
    ),
}


def _found(world: World, token: str, resource_type: str, criteria: str) -> set[str]:
    response = world.client.get(
        f"/fhir/{resource_type}?patient={PATIENT_M}&{criteria}", headers=auth(token)
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return {e["resource"]["id"] for e in response.get_json().get("entry", [])}


@pytest.mark.parametrize("search", list(NAMING_SEARCHES))
def test_r14_a_search_by_relations_finds_only_what_the_served_resource_names(world, search):
    """R14: a DocumentReference is served without the relatesTo whose target the reader may
    not read, a List without those entries. `relatesto:missing=false`, `relation=appends`,
    `relationship=appends$DocumentReference/<hidden id>` and `item:missing=false` were
    judged on the stored elements: they found m-visible (and a List whose only entry is
    hidden) for M's parent, telling that a hidden relation exists, its code, and that an id
    is a hidden document's. They now find what the served resources name; who sees the
    target still finds them."""
    # A List of M's record naming two documents hidden from the parent under two labels
    # (INVISIBLE_REPRESENTANTS_LEGAUX, INVISIBLE_PATIENT). It was served to the parent
    # without entries; INVISIBLE_PATIENT hiding from the representatives too, its entries
    # now share INVISIBLE_REPRESENTANTS_LEGAUX (`list_labels`), and it is hidden from the
    # parent as a whole, found by no search (test_attack_pass_followup3).
    invisible = {**document("m-invisible-rl"), "id": _id("m-invisible-patient")}
    coding = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}
    invisible["securityLabel"] = [{"coding": [coding]}]
    invisible["meta"] = {"security": [coding]}
    invisible["identifier"] = [
        {"system": IDENTIFIER_SYSTEM, "value": f"urn:uuid:{invisible['id']}"}
    ]
    world.service.update(INTERNAL, "DocumentReference", invisible["id"], invisible)
    # m-visible's relation names its target by reference and identifier, as ITI-41 writes it.
    related = world.service.read(INTERNAL, "DocumentReference", doc_id("m-visible")).json()
    identifier = {"system": IDENTIFIER_SYSTEM, "value": doc_identifier("m-invisible-rl")}
    related["relatesTo"][0]["target"]["identifier"] = identifier
    world.service.update(INTERNAL, "DocumentReference", related["id"], related)
    hidden_list = _id("list-of-hidden")
    world.service.update(
        INTERNAL,
        "List",
        hidden_list,
        {
            "resourceType": "List",
            "id": hidden_list,
            "status": "current",
            "mode": "working",
            "subject": {"reference": f"Patient/{PATIENT_M}"},
            "entry": [
                {"item": {"reference": f"DocumentReference/{doc_id('m-invisible-rl')}"}},
                {"item": {"reference": f"DocumentReference/{invisible['id']}"}},
                {
                    "item": {
                        "reference": f"DocumentReference/{doc_id('m-invisible-rl')}",
                        "identifier": identifier,
                    }
                },
            ],
        },
    )
    resource_type, criteria = NAMING_SEARCHES[search]
    parent = CASES["R07-invisible-representants-legaux-vs-parent"].requester(world.tokens)
    named = {doc_id("m-visible"), hidden_list}
    assert not _found(world, parent, resource_type, criteria) & named
    if "missing=false" in criteria:
        served = _found(world, parent, resource_type, criteria.replace("false", "true"))
        if resource_type == "List":
            assert not served & named, "a List of hidden entries only is hidden as a whole"
        else:
            assert served & named, "served without the element, it is found as missing it"
    seer = _found(world, world.tokens.practitioner(AUTHORIZED), resource_type, criteria)
    assert seer & named, "whoever sees the target no longer finds what names it"


@pytest.mark.parametrize("writer", ["practitioner-not-authorized", "system-client"])
def test_r18_an_iti65_uniqueid_is_looked_up_as_a_uniqueid_only(world, writer):
    """ITI-65 looked a deposit's uniqueId up as an `identifier` search parameter: a comma in
    the masterIdentifier made a search of several values, so that
    `<uniqueId>,urn:ietf:rfc:3986|<entryUUID>` found a masked document by its entryUUID and
    compared its hash (XDSNonIdenticalHash, where an unknown entryUUID got a metadata error):
    whether it exists, and whether a guess of its content is right. The uniqueId is now looked
    up as every door looks it up: a masterIdentifier, whole."""
    token = (
        world.tokens.practitioner(STRANGER) if writer != "system-client" else system_token(world)
    )
    answers = []
    for entry_uuid in (doc_identifier("a-masked"), "urn:uuid:0e0e0e0e-0000-4000-8000-000000000000"):
        bundle = transaction(PATIENT_A, with_submission_set=True)
        document = next(
            e["resource"]
            for e in bundle["entry"]
            if e["resource"]["resourceType"] == "DocumentReference"
        )
        master = document["masterIdentifier"]
        master["value"] = f"{master['value']},{IDENTIFIER_SYSTEM}|{entry_uuid}"
        response = world.client.post(
            "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
        )
        answers.append(_answer(response, entry_uuid))
    assert answers[0] == answers[1], answers
    assert answers[0][0] == 422
