"""Attack pass on the doors of secure messaging and notifications (R06, R07, R09, R14, R17,
R18): how someone who may write a message could reach, through it, what they may not read,
and how one fact of a message can be spelled another way.

The record is test_r18_matrix's (one per test, `own_world`): patient A (médecin traitant GP,
AUTHORIZED authorized, BLOCKED blocked, a document masked from professionals `a-masked`, one
invisible to the patient `a-invisible`), a minor M with a parent, and a patient B.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from fhir_server.audit.notifications import (
    EXT_NOTIFICATION_FACT,
    SYSTEM_COMMUNICATION_CATEGORY,
    SYSTEM_HL7_COMMUNICATION_CATEGORY,
    SYSTEM_NOTIFICATION_EVENT,
)
from fhir_server.terminology import (
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_IDNAT_STRUCT,
)
from tests.http.conftest import FHIR_JSON, auth
from tests.http.test_audit_trace_hides import trace
from tests.http.test_binary_ownership import parent_token
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    GP,
    PATIENT_A,
    PATIENT_B,
    PATIENT_M,
    UNKNOWN_ID,
    World,
    binary_id,
    doc_id,
    doc_identifier,
    own_world,
)

world = pytest.fixture(own_world, name="world")


def pract(idnat: str) -> dict:
    return {"type": "Practitioner", "identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}}


PATIENT_A_REF = {"reference": f"Patient/{PATIENT_A}"}


def message(sender: dict, recipients: list[dict], **extra) -> dict:
    """A message about patient A."""
    return {
        "resourceType": "Communication",
        "status": "completed",
        "subject": {"reference": f"Patient/{PATIENT_A}"},
        "sender": sender,
        "recipient": recipients,
        "payload": [{"contentString": "Bonjour"}],
        **extra,
    }


def attaching(key: str) -> list[dict]:
    return [
        {"contentString": "Voir le document"},
        {"contentReference": {"reference": f"DocumentReference/{doc_id(key)}"}},
    ]


def post(world: World, token: str, body: dict):
    return world.client.post(
        "/fhir/Communication",
        data=json.dumps(body),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )


def sent_id(response) -> str:
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


# -- a document named outside the payload ----------------------------------------------------

EXTENSION_URL = "https://example.org/fhir/StructureDefinition/about-document"
ABOUT_THE_DOCUMENT = {
    "about": lambda ref: {"about": [ref]},
    "basedOn": lambda ref: {"basedOn": [ref]},
    "extension": lambda ref: {"extension": [{"url": EXTENSION_URL, "valueReference": ref}]},
    "payload-extension": lambda ref: {
        "payload": [
            {
                "contentString": "Voir le document",
                "extension": [{"url": EXTENSION_URL, "valueReference": ref}],
            }
        ]
    },
    "attachment-url": lambda ref: {
        "extension": [
            {
                "url": EXTENSION_URL,
                "valueAttachment": {"contentType": "application/pdf", "url": ref["reference"]},
            }
        ]
    },
}


@pytest.mark.parametrize("element", list(ABOUT_THE_DOCUMENT))
def test_r14_a_message_about_a_document_invisible_to_the_patient_is_hidden_from_them(
    world, element
):
    """An attachment (`payload.contentReference`) to an INVISIBLE_PATIENT document gives the
    message the label, which hides it from the patient until the announcement; the same
    document named in `about`, `basedOn` or an extension left the message unlabelled, and the
    patient read the message naming it (fails before the fix: 200)."""
    reference = {"reference": f"DocumentReference/{doc_id('a-invisible')}"}
    body = message(pract(GP), [PATIENT_A_REF], **ABOUT_THE_DOCUMENT[element](reference))
    message_id = sent_id(post(world, world.tokens.practitioner(GP), body))
    patient = world.tokens.patient(PATIENT_A)
    read = world.get(patient, f"/fhir/Communication/{message_id}")
    assert read.status_code == 404, read.get_data(as_text=True)
    listed = world.get(patient, f"/fhir/Communication?_id={message_id}&_summary=count")
    assert listed.get_json()["total"] == 0


@pytest.mark.parametrize("element", list(ABOUT_THE_DOCUMENT))
def test_r14_r18_a_message_about_a_document_hidden_from_its_author_is_refused_as_unknown(
    world, element
):
    """A professional names, in `about`, `basedOn` or an extension, a document masked from
    them: refused exactly as a document that does not exist (404), as an attachment is."""
    token = world.tokens.practitioner(AUTHORIZED)
    answers = []
    for target in (doc_id("a-masked"), UNKNOWN_ID):
        reference = {"reference": f"DocumentReference/{target}"}
        body = message(pract(AUTHORIZED), [pract(GP)], **ABOUT_THE_DOCUMENT[element](reference))
        response = post(world, token, body)
        answers.append(
            (
                response.status_code,
                response.get_json()["issue"][0]["diagnostics"].replace(target, "ID"),
            )
        )
    assert answers[0] == answers[1] and answers[0][0] == 404, answers


OTHER_NAMES = {
    "another-patient": {"about": [{"reference": f"Patient/{PATIENT_B}"}]},
    "another-records-document": {"about": [{"reference": f"DocumentReference/{doc_id('b-doc')}"}]},
    "a-binary": {"about": [{"reference": f"Binary/{binary_id('a-invisible')}"}]},
    "a-binary-as-an-attachment": {
        "extension": [
            {
                "url": EXTENSION_URL,
                "valueAttachment": {"url": f"Binary/{binary_id('a-invisible')}"},
            }
        ]
    },
    "a-list": {"basedOn": [{"reference": f"List/{doc_id('a-visible')}"}]},
    "a-document-by-identifier": {
        "about": [
            {
                "type": "DocumentReference",
                "identifier": {
                    "system": "urn:ietf:rfc:3986",
                    "value": doc_identifier("a-invisible"),
                },
            }
        ]
    },
    "an-inlined-document": {
        "contained": [
            {
                "resourceType": "DocumentReference",
                "id": "inlined",
                "status": "current",
                "securityLabel": [
                    {
                        "coding": [
                            {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}
                        ]
                    }
                ],
                "content": [{"attachment": {"contentType": "text/plain", "data": "UsOpc3VsdGF0"}}],
            }
        ]
    },
    "a-contained-resource": {
        "contained": [{"resourceType": "Basic", "id": "c1", "code": {"text": "x"}}],
        "about": [{"reference": "#c1"}],
    },
}


@pytest.mark.parametrize("case", list(OTHER_NAMES))
def test_r06_r14_a_message_naming_what_the_rules_cannot_judge_is_refused(world, case):
    """Besides its parties, its thread and its record's documents, a message names nothing:
    another record's Patient or document, a Binary, a List, a document by its uniqueId, a
    contained resource, or a document inlined as one (an INVISIBLE_PATIENT result served, its
    label ignored, to the patient) was stored and served to the recipients (fails before the
    fix: 201).
    Refused with an OperationOutcome (400, or 404 for a document not of its record, as an
    attachment), nothing stored."""
    token = world.tokens.practitioner(GP)
    response = post(world, token, message(pract(GP), [PATIENT_A_REF], **OTHER_NAMES[case]))
    assert response.status_code in (400, 404), response.get_data(as_text=True)
    assert response.get_json()["resourceType"] == "OperationOutcome"
    listed = world.get(token, f"/fhir/Communication?patient={PATIENT_A}&_summary=count")
    assert listed.get_json()["total"] == 0


def test_r14_a_message_naming_a_foreign_resource_is_kept(world):
    """A reference to another server names nothing of this one's records: kept as it is."""
    foreign = {"reference": "https://other.example/fhir/Encounter/42"}
    response = post(
        world, world.tokens.practitioner(GP), message(pract(GP), [PATIENT_A_REF], about=[foreign])
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["about"] == [foreign]


# -- an answer to a message hidden from its author ------------------------------------------


def _answer(world: World, token: str, sender: dict, recipient: dict, target: str):
    body = message(sender, [recipient], inResponseTo=[{"reference": f"Communication/{target}"}])
    response = post(world, token, body)
    return response.status_code, response.get_json()["issue"][0]["diagnostics"].replace(
        target, "ID"
    ) if response.status_code >= 400 else ""


def test_r14_r18_the_patient_answers_a_message_hidden_from_them_as_an_unknown_one(world):
    """A message attaching an INVISIBLE_PATIENT document is hidden from the patient (404 on
    read); answering it was judged by a second reading of the messaging rules that forgot the
    label: 201, its thread's first message in `partOf`, where an unknown id is 404 (fails
    before the fix)."""
    body = message(pract(GP), [PATIENT_A_REF], payload=attaching("a-invisible"))
    hidden = sent_id(post(world, world.tokens.practitioner(GP), body))
    patient = world.tokens.patient(PATIENT_A)
    assert world.get(patient, f"/fhir/Communication/{hidden}").status_code == 404
    answers = {
        kind: _answer(world, patient, PATIENT_A_REF, pract(GP), target)
        for kind, target in {"hidden": hidden, "unknown": UNKNOWN_ID}.items()
    }
    assert answers["hidden"] == answers["unknown"], answers
    assert answers["hidden"][0] == 404


def test_r14_r18_a_professional_answers_a_message_masked_from_them_as_an_unknown_one(world):
    """The médecin traitant writes to an authorized colleague attaching a document masked
    from professionals (MASQUE_PS): the colleague cannot read the message (R14); answering it
    was accepted (fails before the fix: 201 where an unknown id is 404)."""
    body = message(pract(GP), [pract(AUTHORIZED)], payload=attaching("a-masked"))
    hidden = sent_id(post(world, world.tokens.practitioner(GP), body))
    colleague = world.tokens.practitioner(AUTHORIZED)
    assert world.get(colleague, f"/fhir/Communication/{hidden}").status_code == 404
    answers = {
        kind: _answer(world, colleague, pract(AUTHORIZED), pract(GP), target)
        for kind, target in {"hidden": hidden, "unknown": UNKNOWN_ID}.items()
    }
    assert answers["hidden"] == answers["unknown"], answers
    assert answers["hidden"][0] == 404


# -- a participant named two ways -------------------------------------------------------------

TWO_NAMES = {
    "sender-as-another-practitioner": lambda: {
        "sender": {
            "reference": f"Practitioner/{AUTHORIZED}",
            "identifier": {"system": SYSTEM_IDNAT_PS, "value": GP},
        }
    },
    "sender-with-an-organisation-identifier": lambda: {
        "sender": {
            "reference": f"Practitioner/{AUTHORIZED}",
            "type": "Practitioner",
            "identifier": {"system": SYSTEM_IDNAT_STRUCT, "value": "123456789"},
        }
    },
    "recipient": lambda: {
        "recipient": [{**PATIENT_A_REF, "identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}]
    },
}


@pytest.mark.parametrize("case", list(TWO_NAMES))
def test_r18_a_participant_named_both_by_reference_and_identifier_is_refused(world, case):
    """The rules judged a participant by its literal reference and the readers matched its
    identifier too: a message sent in one's own name with another practitioner's (or a
    pharmacy's) IdNat in the sender's identifier was stored, shown as theirs and read by them
    as its sender (fails before the fix: 201, and the GP reads it). Refused, 400."""
    body = {**message(pract(AUTHORIZED), [PATIENT_A_REF]), **TWO_NAMES[case]()}
    response = post(world, world.tokens.practitioner(AUTHORIZED), body)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["code"] == "value"
    listed = world.get(
        world.tokens.practitioner(GP), f"/fhir/Communication?patient={PATIENT_A}&_summary=count"
    )
    assert listed.get_json()["total"] == 0


def test_r18_a_sender_typed_as_an_organisation_is_refused(world):
    """The pharmacy's name on one's own message by `type`: a sender `Practitioner/<me>`
    typed `Organization`, with a structure's identifier, would be read as the pharmacy by a
    face reading `type`. The normal form refuses a Reference whose type disagrees with its
    reference (FHIR R4 Reference), 422 naming `sender.type`; nothing is stored."""
    body = {
        **message(pract(AUTHORIZED), [PATIENT_A_REF]),
        "sender": {
            "reference": f"Practitioner/{AUTHORIZED}",
            "type": "Organization",
            "identifier": {"system": SYSTEM_IDNAT_STRUCT, "value": "123456789"},
        },
    }
    response = post(world, world.tokens.practitioner(AUTHORIZED), body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "sender.type" in " ".join(response.get_json()["issue"][0]["expression"])
    listed = world.get(
        world.tokens.practitioner(GP), f"/fhir/Communication?patient={PATIENT_A}&_summary=count"
    )
    assert listed.get_json()["total"] == 0


# -- a message spelled as a notification ---------------------------------------------------

NOTIFICATION_MARKS = {
    "hl7-category": lambda: {
        "category": [
            {"coding": [{"system": SYSTEM_HL7_COMMUNICATION_CATEGORY, "code": "notification"}]}
        ]
    },
    "near-miss-of-our-category": lambda: {
        "category": [
            {"coding": [{"system": f"{SYSTEM_COMMUNICATION_CATEGORY}/", "code": "notification"}]}
        ]
    },
    "category-without-system": lambda: {"category": [{"coding": [{"code": "Notification"}]}]},
    "facts-extension": lambda: {
        "extension": [
            {
                "url": EXT_NOTIFICATION_FACT,
                "extension": [
                    {
                        "url": "event",
                        "valueCoding": {"system": SYSTEM_NOTIFICATION_EVENT, "code": "deposit"},
                    }
                ],
            }
        ]
    },
}


@pytest.mark.parametrize("mark", list(NOTIFICATION_MARKS))
def test_r17_a_client_message_spelled_as_a_notification_is_refused(world, mark):
    """Only the server writes notifications (R17): a client's message with our notification
    category is refused, but one coded with the HL7 `communication-category#notification` a
    notification carries for generic clients, with a near miss of ours, without system, or
    with the notification facts' extension, was stored and listed among the server's
    notifications (fails before the fix: 201)."""
    body = message(pract(GP), [PATIENT_A_REF], **NOTIFICATION_MARKS[mark]())
    response = post(world, world.tokens.practitioner(GP), body)
    assert response.status_code == 403, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["code"] == "forbidden"
    by_hl7 = quote(f"{SYSTEM_HL7_COMMUNICATION_CATEGORY}|notification")
    listed = world.get(world.tokens.patient(PATIENT_A), f"/fhir/Communication?category={by_hl7}")
    senders = [entry["resource"]["sender"] for entry in listed.get_json().get("entry", [])]
    assert all(sender.get("type") == "Device" for sender in senders), senders


# -- a visible message naming a hidden one ------------------------------------------------------


def test_r14_r18_no_message_served_to_the_patient_names_one_hidden_from_them(world):
    """The médecin traitant sends the patient a result still invisible to them (an
    INVISIBLE_PATIENT attachment: the message is hidden from the patient), then a follow-up
    answering it ("prenez rendez-vous"). The follow-up was served to the patient with
    `inResponseTo` and `partOf` naming the hidden message, telling them before the
    announcement that a message about something kept from them was there (fails before the
    fix). An answer takes the labels of the message it answers."""
    gp = world.tokens.practitioner(GP)
    first = message(pract(GP), [PATIENT_A_REF], payload=attaching("a-invisible"))
    hidden = sent_id(post(world, gp, first))
    follow_up = message(
        pract(GP),
        [PATIENT_A_REF],
        payload=[{"contentString": "Prenez rendez-vous"}],
        inResponseTo=[{"reference": f"Communication/{hidden}"}],
    )
    sent_id(post(world, gp, follow_up))
    shown = world.get(world.tokens.patient(PATIENT_A), f"/fhir/Communication?patient={PATIENT_A}")
    assert shown.status_code == 200, shown.get_data(as_text=True)
    assert hidden not in shown.get_data(as_text=True), "a served message names the hidden one"


# -- a notification naming what is hidden ----------------------------------------------------

NOTIFICATIONS = (
    f"/fhir/Communication?category={quote(SYSTEM_COMMUNICATION_CATEGORY + '|notification')}"
)


def _access_notification_as_the_patient_sees_it(world: World, key: str) -> tuple:
    """The médecin traitant reads document `key` of A (the first access of the day): what the
    patient can learn of it from the notification they are sent, and from what it names."""
    assert (
        world.get(
            world.tokens.practitioner(GP), f"/fhir/DocumentReference/{doc_id(key)}"
        ).status_code
        == 200
    )
    patient = world.tokens.patient(PATIENT_A)
    told = [entry["resource"] for entry in world.get(patient, NOTIFICATIONS).get_json()["entry"]]
    assert len(told) == 1, told
    named = [
        value["reference"]
        for value in [
            *told[0].get("about", []),
            *(
                part.get("valueReference")
                for ext in told[0].get("extension", [])
                for part in ext.get("extension", [])
            ),
        ]
        if isinstance(value, dict) and "reference" in value
    ]
    return tuple(sorted(world.get(patient, f"/fhir/{ref}").status_code for ref in named))


def test_r14_r17_an_access_notification_does_not_tell_the_patient_a_hidden_document_was_read(world):
    """R17 tells the patient that the médecin traitant opened their record, whatever was read;
    the notification drops INVISIBLE_PATIENT so that the access is told. It named the access's
    AuditEvent, which carries that label: read by the patient, 404 after an access to a
    document invisible to them, 200 after any other, so the notification told them that
    something was kept from them (fails before the fix: (404, 404) against (200, 200))."""
    hidden = _access_notification_as_the_patient_sees_it(world, "a-invisible")
    assert hidden == (), hidden


def test_r14_r17_an_access_notification_names_nothing_the_patient_reads_in_vain(world):
    """The same for an access to a document the patient sees: no AuditEvent is named either,
    so that the two notifications cannot be told apart (fails before the fix: (200, 200))."""
    assert _access_notification_as_the_patient_sees_it(world, "a-visible") == ()


# -- the change doors of a message -----------------------------------------------------------


def _conditional_delete(world: World, token: str, criteria: str, batch: bool) -> int:
    if not batch:
        return world.client.delete(
            f"/fhir/Communication?{criteria}", headers=auth(token)
        ).status_code
    bundle = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [{"request": {"method": "DELETE", "url": f"Communication?{criteria}"}}],
    }
    response = world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    return int(response.get_json()["entry"][0]["response"]["status"].split()[0])


@pytest.mark.parametrize("batch", [False, True], ids=["rest", "batch-entry"])
def test_r18_a_conditional_delete_of_messages_is_refused_whatever_its_criteria_match(world, batch):
    """Messages are never deleted: a DELETE is refused (403) for any id; a conditional one
    was refused only when it matched a message the requester sees, and answered 204 for
    criteria matching nothing, or only a message hidden from them (fails before the fix)."""
    gp = world.tokens.practitioner(GP)
    shown = sent_id(post(world, gp, message(pract(GP), [PATIENT_A_REF])))
    hidden = sent_id(post(world, gp, message(pract(GP), [pract(AUTHORIZED)])))
    patient = world.tokens.patient(PATIENT_A)
    answers = {
        kind: _conditional_delete(world, patient, f"_id={target}", batch)
        for kind, target in {"shown": shown, "hidden": hidden, "unknown": UNKNOWN_ID}.items()
    }
    assert answers == {"shown": 403, "hidden": 403, "unknown": 403}, answers
    assert world.get(gp, f"/fhir/Communication/{shown}").status_code == 200


LOOSE_PATIENT_REFERENCES = {
    "another-server": f"https://other.example/fhir/Patient/{PATIENT_A}",
    "trailing-slash": f"Patient/{PATIENT_A}/",
}


@pytest.mark.parametrize("spelling", list(LOOSE_PATIENT_REFERENCES))
def test_r06_a_recipient_the_index_does_not_read_as_the_patient_is_refused(world, spelling):
    """The messaging rules took the last two segments of a recipient's reference for the
    participant, the index and the readers only a local relative reference: a message to
    `https://other.example/fhir/Patient/A` was accepted as addressed to patient A, and A
    never saw it (fails before the fix: 201). One reading: refused, 400."""
    recipient = {"reference": LOOSE_PATIENT_REFERENCES[spelling]}
    response = post(world, world.tokens.practitioner(GP), message(pract(GP), [recipient]))
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["resourceType"] == "OperationOutcome"


@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_r14_a_bundle_entry_about_a_document_invisible_to_the_patient_is_hidden_from_them(
    world, kind
):
    """The same message posted as a transaction or batch entry: judged and labelled as at
    the REST door (fails before the fix: the patient reads it)."""
    reference = {"reference": f"DocumentReference/{doc_id('a-invisible')}"}
    body = message(pract(GP), [PATIENT_A_REF], about=[reference])
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [{"resource": body, "request": {"method": "POST", "url": "Communication"}}],
    }
    response = world.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(world.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    location = response.get_json()["entry"][0]["response"]["location"]
    message_id = location.split("/")[1]
    read = world.get(world.tokens.patient(PATIENT_A), f"/fhir/Communication/{message_id}")
    assert read.status_code == 404, read.get_data(as_text=True)


@pytest.mark.parametrize(
    "reads", [("m-invisible-rl", "m-visible"), ("m-visible",)], ids=["hidden-first", "plain"]
)
def test_r07_r17_a_parent_is_told_of_the_days_access_they_see_after_one_hidden_from_them(
    world, reads
):
    """An authorized professional reads the minor's document hidden from the parents
    (INVISIBLE_REPRESENTANTS_LEGAUX), then one they see, the same day. The day's access
    notification carried the first access's label: hidden from the parent, who was told of no
    access that day while their trail showed the second read, and so learnt that something
    kept from them had been read first (fails before the fix: 0 notifications against 1 when
    only the visible document is read). The minor is told in both cases."""
    doctor = world.tokens.practitioner(AUTHORIZED)
    for key in reads:
        assert world.get(doctor, f"/fhir/DocumentReference/{doc_id(key)}").status_code == 200
    parent = world.get(parent_token(world), NOTIFICATIONS).get_json()
    assert parent["total"] == 1, parent
    minor = world.get(world.tokens.patient(PATIENT_M), NOTIFICATIONS).get_json()
    assert minor["total"] >= 1, minor


# -- the patient's trail -------------------------------------------------------------------------

SEARCHES_NAMING = {
    "_id": "/fhir/Communication?patient={patient}&_id={id}",
    "_id-matching-nothing": "/fhir/Communication?patient={patient}&_id={id}&status=preparation",
    "_id-in-capitals": "/fhir/Communication?patient={patient}&_id={upper}",
    "part-of": "/fhir/Communication?patient={patient}&part-of=Communication/{id}",
    "has": "/fhir/Patient?_id={patient}&_has:Communication:subject:_id={id}",
}


@pytest.mark.parametrize("search", list(SEARCHES_NAMING))
def test_r14_r16_a_professionals_search_naming_a_message_hidden_from_the_patient_is_not_in_their_trail(
    world, search
):
    """A search event keeps its query and carries the labels of what it names, so that a
    professional's search by the id of a document hidden from the patient is not shown to
    them. A message labelled INVISIBLE_PATIENT (it attaches such a document) is hidden from
    the patient as the document is, but a plain id (`_id`) was looked up as a document, a
    Binary and a List only: the médecin traitant's search by the message's id was shown in
    the patient's trail, naming a message they cannot read, unless the search found it
    (fails before the fix: in capitals, matching nothing, under `_has`)."""
    gp = world.tokens.practitioner(GP)
    body = message(pract(GP), [PATIENT_A_REF], payload=attaching("a-invisible"))
    hidden = sent_id(post(world, gp, body))
    url = SEARCHES_NAMING[search].format(patient=PATIENT_A, id=hidden, upper=hidden.upper())
    assert world.get(gp, url).status_code == 200
    patient = world.tokens.patient(PATIENT_A)
    assert world.get(patient, f"/fhir/Patient/{PATIENT_A}").status_code == 200  # a control
    text, events = trace(world, patient, PATIENT_A)
    assert events, "the patient's trail is empty: the search is broken"
    assert hidden not in text.lower(), "the patient's trail names a message hidden from them"


# -- a closure hidden from a participant -------------------------------------------------------

CLOSURE = {
    "coding": [{"system": SYSTEM_COMMUNICATION_CATEGORY, "code": "closure"}],
}
MESSAGE = {"coding": [{"system": SYSTEM_COMMUNICATION_CATEGORY, "code": "message"}]}


def test_r14_r18_a_conversation_is_not_closed_by_a_message_hidden_from_a_participant(world):
    """The médecin traitant opens a conversation with the patient, sends in it a result still
    invisible to them (hidden message), and closes the conversation answering that message:
    the closure, which takes its label, was stored hidden from the patient, whose answer to
    the opening message was then refused 409 `conversation-closed`, telling them that a
    message they cannot read was in their conversation (fails before the fix: 201 for the
    closure, 409 for the answer). A closing message carries no label (422): the professional
    closes with one every participant reads."""
    gp = world.tokens.practitioner(GP)
    opening = sent_id(post(world, gp, message(pract(GP), [PATIENT_A_REF])))
    thread = [{"reference": f"Communication/{opening}"}]
    body = message(
        pract(GP), [PATIENT_A_REF], payload=attaching("a-invisible"), inResponseTo=thread
    )
    result = sent_id(post(world, gp, body))
    closing = message(
        pract(GP),
        [PATIENT_A_REF],
        category=[MESSAGE, CLOSURE],
        inResponseTo=[{"reference": f"Communication/{result}"}],
    )
    closed = post(world, gp, closing)
    assert closed.status_code == 422, closed.get_data(as_text=True)
    assert closed.get_json()["issue"][0]["code"] == "business-rule"
    patient = world.tokens.patient(PATIENT_A)
    answer = message(PATIENT_A_REF, [pract(GP)], inResponseTo=thread)
    answered = post(world, patient, answer)
    assert answered.status_code == 201, answered.get_data(as_text=True)


@pytest.mark.parametrize(
    "reference",
    [
        f"Patient/{PATIENT_B}\n",
        f"Patient/{PATIENT_B}/",
        f"patient/{PATIENT_B}",
        f"Patient/{PATIENT_B}#x",
    ],
    ids=["line-end", "trailing-slash", "lower-case-type", "fragment"],
)
def test_r06_a_message_naming_another_patient_spelled_otherwise_is_refused(world, reference):
    """R06: `about` `Patient/<B>` is refused as naming another record's Patient; spelled so
    that no rule reads it (a line end, a trailing slash, a lower-case type, a fragment) it
    named no resource for the message's check and was stored, naming B, in A's record (201).
    Refused now (422, R06), nothing stored."""
    token = world.tokens.practitioner(GP)
    body = message(pract(GP), [PATIENT_A_REF], about=[{"reference": reference}])
    response = post(world, token, body)
    assert 400 <= response.status_code < 500, response.get_data(as_text=True)
    assert response.get_json()["resourceType"] == "OperationOutcome"
    listed = world.get(token, f"/fhir/Communication?patient={PATIENT_A}&_summary=count")
    assert listed.get_json()["total"] == 0
