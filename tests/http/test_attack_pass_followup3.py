"""Attack pass on today's oracle fixes (R14, R18): how someone who may write could reach what
they may not read, and how the same fact can be spelled another way.

The fix under attack: a document names another only by `relatesTo` (a literal reference in
`context.related`, or one naming a DocumentReference, List, Binary or Communication elsewhere
in the document, is refused at write: `documents.rules.related_reference_issues`). Its
author, who reads a document the patient masked from other professionals (MASQUE_PS),
deposits a document naming it; the document is served as stored to every authorized
professional, who learns the masked document's id.

What got through before (each test below fails before its fix, 201 where 422 is expected,
and the masked id was served to the authorized professional):

- a contained resource naming the masked document (`contained[]` a List whose
  `entry.item` is `DocumentReference/<masked id>`): the rule walked the references as ref-1
  does, skipping contained resources, which are served with the document;
- the reference spelled otherwise than the rule's pattern: lower case
  (`documentreference/<id>`), a trailing `/`, a leading space, the type in any case in an
  absolute URL: the pattern was anchored and case-sensitive, the reference served as given;
- a logical reference (`Reference.type` DocumentReference and `identifier.value` the
  masked id): no `reference` string at all.

Each is now refused (422) by REST create, update, transaction and ITI-65 alike (PATCH
changes only status and labels), whatever the reference names (fail closed); a document
naming a Patient, Practitioner or Organization, and `context.related` by identifier, is
still deposited.

The same spellings in a List's entries (`entry.item`): the reads hide an entry naming a
hidden document by the reference they read (`Type/id`), and served any other spelling as
stored. The médecin traitant's folder naming the masked document as
`documentreference/<id>`, `DocumentReference/<id>/`, ` DocumentReference/<id>`,
`DocumentReference/<id>#see`, `DocumentReference/<id>?x=1` or under another server's base
was served to every authorized professional with the masked id. A List entry now names a
resource by a relative literal reference only (this server's absolute URLs are made
relative), as must a relation's `reference` (422 at create, update and in a transaction).

The same spellings in a message (`Communication.about`, `basedOn`, an extension): a
document named so was not read as one, the message neither judged nor labelled as naming
it, and the médecin traitant's message to an authorized colleague about the masked document
was served to them with its id. Refused (400) as a message naming what the rules cannot
judge is; a reference to another server's Encounter is still kept.

The List relabel (`FhirService._label_lists_naming`, `access.list_labels`): a List takes the
labels its entries share, and INVISIBLE_PATIENT hides a document from the representatives
as INVISIBLE_REPRESENTANTS_LEGAUX does. A minor's SubmissionSet of an INVISIBLE_PATIENT
document and an INVISIBLE_REPRESENTANTS_LEGAUX one (deposited so, or the second labelled
later by its author) shared no label, and was shown, empty, to the parent, who sees neither
document: that something was deposited, when, by whom and of what type, where a
SubmissionSet that does not exist shows nothing (R07, R18). An entry's INVISIBLE_PATIENT
now counts as INVISIBLE_REPRESENTANTS_LEGAUX too when the shared labels are taken.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.terminology import INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX
from tests.http.conftest import FHIR_JSON, auth
from tests.http.metadata_world import label as label_of
from tests.http.test_attack_pass_messaging import message, pract
from tests.http.test_attack_pass_messaging import post as post_message
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    CASES,
    GP,
    PATIENT_A,
    PATIENT_M,
    doc_id,
    own_world,
)
from tests.support.documents import (
    CDA,
    MHD_LIST_TYPES,
    assert_refused_at_deposit_doors,
    binary,
    dmp_document,
    new_entry_uuid,
    submission_set,
)

world = pytest.fixture(own_world, name="world")

MASKED = doc_id("a-masked")
SEE_ALSO = "https://example.org/fhir/see-also"


def _see_also(reference: dict) -> list[dict]:
    return [{"url": SEE_ALSO, "valueReference": reference}]


NAMING: dict[str, dict] = {
    "contained-list-item": {
        "contained": [
            {
                "resourceType": "List",
                "id": "see-also",
                "status": "current",
                "mode": "working",
                "entry": [{"item": {"reference": f"DocumentReference/{MASKED}"}}],
            }
        ]
    },
    "contained-document-relation": {
        "contained": [
            {
                "resourceType": "DocumentReference",
                "id": "see-also",
                "status": "current",
                "content": [{"attachment": {"contentType": "text/plain"}}],
                "relatesTo": [
                    {"code": "appends", "target": {"reference": f"DocumentReference/{MASKED}"}}
                ],
            }
        ]
    },
    "lower-case-type": {"extension": _see_also({"reference": f"documentreference/{MASKED}"})},
    "trailing-slash": {"extension": _see_also({"reference": f"DocumentReference/{MASKED}/"})},
    "leading-space": {"extension": _see_also({"reference": f" DocumentReference/{MASKED}"})},
    "absolute-upper-case": {
        "extension": _see_also(
            {"reference": f"http://127.0.0.1:8080/fhir/DOCUMENTREFERENCE/{MASKED}"}
        )
    },
    "logical-by-id": {
        "extension": _see_also({"type": "DocumentReference", "identifier": {"value": MASKED}})
    },
    "logical-by-profile-url": {
        "extension": _see_also(
            {
                "type": "http://hl7.org/fhir/StructureDefinition/DocumentReference",
                "identifier": {"value": MASKED},
            }
        )
    },
}


def _naming(shape: str) -> dict:
    """A document of A by the médecin traitant (who reads `a-masked`) naming it by `shape`."""
    document = dmp_document(PATIENT_A, author=GP)
    for key, value in NAMING[shape].items():
        document[key] = (document.get(key) or []) + value
    return document


def _not_shown(world) -> None:
    """No document of A served to the authorized professional names the masked id."""
    found = world.get(
        world.tokens.practitioner(AUTHORIZED), f"/fhir/DocumentReference?patient={PATIENT_A}"
    )
    assert found.status_code == 200
    assert MASKED not in found.get_data(as_text=True)


@pytest.mark.parametrize("shape", list(NAMING))
def test_r14_r18_a_document_names_another_by_no_other_spelling(world, shape):
    """Created by REST, a transaction or ITI-65 by a reader of the masked document: 422."""
    headers = auth(world.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON})
    assert_refused_at_deposit_doors(world.client, headers, PATIENT_A, _naming(shape))
    _not_shown(world)


@pytest.mark.parametrize("shape", ["contained-list-item", "lower-case-type", "logical-by-id"])
def test_r14_r18_an_update_or_patch_adds_no_other_spelling(world, shape):
    """The author's PUT of their own document adding the naming: 422; their JSON Patch: refused
    (a metadata update changes only status and labels, 405)."""
    headers = auth(
        world.tokens.practitioner(GP),
        **{"Content-Type": FHIR_JSON, "Prefer": "return=representation"},
    )
    created = world.client.post(
        "/fhir/DocumentReference",
        data=json.dumps(dmp_document(PATIENT_A, author=GP)),
        headers=headers,
    )
    assert created.status_code == 201, created.get_data(as_text=True)
    stored = created.get_json()
    changed = {**stored}
    for key, value in NAMING[shape].items():
        changed[key] = (stored.get(key) or []) + value
    updated = world.client.put(
        f"/fhir/DocumentReference/{stored['id']}", data=json.dumps(changed), headers=headers
    )
    assert updated.status_code == 422, updated.get_data(as_text=True)
    key, value = next(iter(NAMING[shape].items()))
    operations = [{"op": "add", "path": f"/{key}/-", "value": item} for item in value]
    if key not in stored:
        operations = [{"op": "add", "path": f"/{key}", "value": value}]
    patched = world.client.patch(
        f"/fhir/DocumentReference/{stored['id']}",
        data=json.dumps(operations),
        headers={**headers, "Content-Type": "application/json-patch+json"},
    )
    assert patched.status_code in (405, 422), patched.get_data(as_text=True)
    _not_shown(world)


def test_r14_a_document_naming_no_record_item_is_still_deposited(world):
    """Control: a logical reference to a Practitioner, a contained Organization and
    `context.related` by identifier are deposited."""
    document = dmp_document(PATIENT_A, author=GP)
    document["extension"] = _see_also(
        {"type": "Practitioner", "identifier": {"value": "810000000001"}}
    )
    document["contained"] = document.get("contained", []) + [
        {"resourceType": "Organization", "id": "org", "name": "Cabinet"}
    ]
    document["context"]["related"] = [
        {"identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.999.1"}}
    ]
    created = world.client.post(
        "/fhir/DocumentReference",
        data=json.dumps(document),
        headers=auth(world.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert created.status_code == 201, created.get_data(as_text=True)


# -- a minor's SubmissionSet whose entries are hidden from the representatives by two labels ----

PARENT_CASE = CASES["R07-invisible-representants-legaux-vs-parent"]


def _submission_sets_shown(world, token: str) -> set[str]:
    found = world.get(token, f"/fhir/List?patient={PATIENT_M}")
    assert found.status_code == 200, found.get_data(as_text=True)
    return {entry["resource"]["id"] for entry in found.get_json().get("entry", [])}


def _deposit(world, labels: tuple[str | None, ...]) -> tuple[str, list[str]]:
    """An ITI-65 of the minor's documents, labelled `labels`, by the authorized practitioner:
    its SubmissionSet's id and the documents' ids."""
    entries, members = [], []
    for code in labels:
        binary_url, document_url = new_entry_uuid(), new_entry_uuid()
        document = dmp_document(PATIENT_M, binary_url, label=code, author=AUTHORIZED)
        entries += [
            {
                "fullUrl": document_url,
                "resource": document,
                "request": {"method": "POST", "url": "DocumentReference"},
            },
            {
                "fullUrl": binary_url,
                "resource": binary(CDA),
                "request": {"method": "POST", "url": "Binary"},
            },
        ]
        members.append(document_url)
    entries.insert(
        0,
        {
            "fullUrl": new_entry_uuid(),
            "resource": submission_set(PATIENT_M, members),
            "request": {"method": "POST", "url": "List"},
        },
    )
    answered = world.client.post(
        "/fhir",
        data=json.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        headers=auth(world.tokens.practitioner(AUTHORIZED), **{"Content-Type": FHIR_JSON}),
    )
    assert answered.status_code == 200, answered.get_data(as_text=True)
    locations = [e["response"]["location"].split("/") for e in answered.get_json()["entry"]]
    (listing,) = [parts[1] for parts in locations if parts[0] == "List"]
    return listing, [parts[1] for parts in locations if parts[0] == "DocumentReference"]


def test_r07_r18_a_submission_set_hidden_entry_by_entry_is_hidden_from_the_parent(world):
    """A minor's SubmissionSet of an INVISIBLE_PATIENT document and an
    INVISIBLE_REPRESENTANTS_LEGAUX one: the parent sees neither document, and its List no
    more than one not deposited (it was shown, empty: its entries shared no label). The
    patient, who sees the second document, still sees the SubmissionSet, with it only."""
    parent = PARENT_CASE.requester(world.tokens)
    before = _submission_sets_shown(world, parent)
    listing, (_, shown) = _deposit(world, (INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX))
    assert _submission_sets_shown(world, parent) == before
    read = world.get(parent, f"/fhir/List/{listing}")
    missing = world.get(parent, "/fhir/List/no-such-list")
    assert read.status_code == missing.status_code == 404
    patient = world.tokens.patient(PATIENT_M)
    served = world.get(patient, f"/fhir/List/{listing}")
    assert served.status_code == 200, served.get_data(as_text=True)
    assert [e["item"]["reference"] for e in served.get_json()["entry"]] == [
        f"DocumentReference/{shown}"
    ]


def test_r07_r18_a_submission_set_labelled_entry_by_entry_later_is_hidden_too(world):
    """The same SubmissionSet deposited with an INVISIBLE_PATIENT document and an unlabelled
    one, the second labelled INVISIBLE_REPRESENTANTS_LEGAUX later by its author's PUT."""
    parent = PARENT_CASE.requester(world.tokens)
    before = _submission_sets_shown(world, parent)
    listing, (_, later) = _deposit(world, (INVISIBLE_PATIENT, None))
    assert listing in _submission_sets_shown(world, parent), "the control"
    headers = auth(world.tokens.practitioner(AUTHORIZED), **{"Content-Type": FHIR_JSON})
    current = world.client.get(f"/fhir/DocumentReference/{later}", headers=headers).get_json()
    current["securityLabel"] = [
        *current.get("securityLabel", []),
        label_of(INVISIBLE_REPRESENTANTS_LEGAUX),
    ]
    updated = world.client.put(
        f"/fhir/DocumentReference/{later}", data=json.dumps(current), headers=headers
    )
    assert updated.status_code == 200, updated.get_data(as_text=True)
    assert _submission_sets_shown(world, parent) == before


# -- a List entry naming a document by a reference the rules cannot read ------------------------

ENTRY_SPELLINGS = {
    "lower-case-type": f"documentreference/{MASKED}",
    "trailing-slash": f"DocumentReference/{MASKED}/",
    "leading-space": f" DocumentReference/{MASKED}",
    "fragment": f"DocumentReference/{MASKED}#see",
    "query": f"DocumentReference/{MASKED}?x=1",
    "another-base": f"http://other.example/fhir/DocumentReference/{MASKED}",
}


def _folder(entries: list[str]) -> dict:
    """A folder List of A by the médecin traitant (who reads `a-masked`) naming `entries`."""
    listing = submission_set(PATIENT_A, entries)
    listing["code"] = {"coding": [{"system": MHD_LIST_TYPES, "code": "folder"}]}
    return listing


@pytest.mark.parametrize("spelling", list(ENTRY_SPELLINGS))
def test_r14_r18_a_list_entry_names_a_document_by_a_readable_reference_only(world, spelling):
    """The médecin traitant's folder naming the masked document otherwise than
    `DocumentReference/<id>`: the reads hide an entry naming a hidden document by the
    reference they read, and served this one as stored, the masked id with it, to every
    authorized professional. Refused (422) by REST create, update and transaction alike."""
    headers = auth(
        world.tokens.practitioner(GP),
        **{"Content-Type": FHIR_JSON, "Prefer": "return=representation"},
    )
    named = ENTRY_SPELLINGS[spelling]
    created = world.client.post("/fhir/List", data=json.dumps(_folder([named])), headers=headers)
    assert created.status_code == 422, created.get_data(as_text=True)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": _folder([named]), "request": {"method": "POST", "url": "List"}}],
    }
    answered = world.client.post("/fhir", data=json.dumps(bundle), headers=headers)
    # In a Bundle, `Type/id?x=1` is a conditional reference, of no type served (404).
    assert answered.status_code in (404, 422), answered.get_data(as_text=True)
    kept = world.client.post(
        "/fhir/List", data=json.dumps(_folder([f"DocumentReference/{MASKED}"])), headers=headers
    )
    assert kept.status_code == 201, kept.get_data(as_text=True)
    listing = kept.get_json()
    listing["entry"] = [{"item": {"reference": named}}]
    updated = world.client.put(
        f"/fhir/List/{listing['id']}", data=json.dumps(listing), headers=headers
    )
    assert updated.status_code == 422, updated.get_data(as_text=True)
    shown = world.get(world.tokens.practitioner(AUTHORIZED), f"/fhir/List?patient={PATIENT_A}")
    assert shown.status_code == 200 and MASKED not in shown.get_data(as_text=True)


# -- a message naming a document by a reference the rules cannot read ---------------------------

MESSAGE_SPELLINGS = {
    "lower-case-type": f"documentreference/{MASKED}",
    "trailing-slash": f"DocumentReference/{MASKED}/",
    "leading-space": f" DocumentReference/{MASKED}",
    "another-base": f"https://other.example/fhir/DocumentReference/{MASKED}",
}


@pytest.mark.parametrize("spelling", list(MESSAGE_SPELLINGS))
def test_r14_r18_a_message_names_a_document_by_a_readable_reference_only(world, spelling):
    """The médecin traitant's message to an authorized colleague `about` the masked document
    spelled otherwise than `DocumentReference/<id>`: not read as a document, it was neither
    judged nor labelled as naming one, and was served to the colleague with the masked id.
    Refused (400), as a message naming what the rules cannot judge is; a foreign Encounter
    is still kept (test_attack_pass_messaging)."""
    body = message(
        pract(GP), [pract(AUTHORIZED)], about=[{"reference": MESSAGE_SPELLINGS[spelling]}]
    )
    sent = post_message(world, world.tokens.practitioner(GP), body)
    assert sent.status_code == 400, sent.get_data(as_text=True)
    assert sent.get_json()["issue"][0]["expression"] == ["Communication.about[0]"]
    received = world.get(
        world.tokens.practitioner(AUTHORIZED), f"/fhir/Communication?patient={PATIENT_A}"
    )
    assert received.status_code == 200 and MASKED not in received.get_data(as_text=True)
