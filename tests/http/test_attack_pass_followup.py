"""Attack pass on the day's fixes (attack9-12): the same fact at the doors and in the
spellings the fixes did not name (R06, R07, R14, R18).

Each test is a request that the fixes should have closed, or a legitimate one they should
still let through.
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from tests.http.conftest import FHIR_JSON, INS_SYSTEM, auth, valid_nir
from tests.http.test_attack_pass_spellings import record  # noqa: F401 (fixture)
from tests.http.test_attack_pass_writers import (
    HIDDEN_AND_ABSENT,
    STRANGER,
    _answer,
    _broken_provide_bundle,
    system_token,
)
from tests.http.test_audit_trace_hides import trace
from tests.http.test_audit_trace_label_added import LABELLED_LATER, _label_later, _trail_size
from tests.http.test_normal_form import PATIENT_A
from tests.http.test_r18_matrix import AUTHORIZED, CASES, UNKNOWN_ID, own_world

# test_r18_matrix's record, one per test (a deletion changes it).
world = pytest.fixture(own_world, name="world")


# -- R06, R07: fhirUser names a local Patient only as a relative reference or on this base ---


@pytest.mark.parametrize(
    "fhir_user",
    [
        " https://elsewhere.example/fhir/Patient/patient-a",
        "//elsewhere.example/fhir/Patient/patient-a",
        "https:/elsewhere.example/fhir/Patient/patient-a",
        "urn:oid:1.2.3/Patient/patient-a",
        "elsewhere/Patient/patient-a",
        "http://127.0.0.1:8080/fhir/other/Patient/patient-a",
        "Practitioner/p1/Patient/patient-a",
    ],
    ids=[
        "leading-space",
        "scheme-relative",
        "one-slash",
        "urn-prefix",
        "relative-with-prefix",
        "this-base-with-extra-segment",
        "two-references",
    ],
)
def test_r06_fhir_user_that_is_no_reference_type_id_is_refused(client, tokens, record, fhir_user):  # noqa: F811
    """fhirUser was read by its last two segments whenever it did not start with a scheme
    and `://`: a token naming another server's Patient/patient-a with a space before it, or
    with one slash, read patient A's record here (200) past the check of 4704525."""
    token = tokens.issuer.issue(
        subject="someone", scopes="patient/*.rs", fhir_user=fhir_user, patient=PATIENT_A
    )
    found = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert found.status_code == 401, found.get_json()


@pytest.mark.parametrize(
    "fhir_user",
    ["Patient/patient-a", "HTTP://127.0.0.1:8080/fhir/Patient/patient-a", "Patient/patient-a/"],
)
def test_r06_fhir_user_on_this_base_still_reads_the_own_record(client, tokens, record, fhir_user):  # noqa: F811
    """The legitimate spellings stay accepted (a fix refusing them would be a regression)."""
    token = tokens.issuer.issue(
        subject="someone", scopes="patient/*.rs", fhir_user=fhir_user, patient=PATIENT_A
    )
    found = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert found.status_code == 200, found.get_json()


# -- R18: ITI-65's conditional patient reference, by identifier alone in every spelling -------


@pytest.mark.parametrize(
    "prefix",
    ["http://127.0.0.1:8080/fhir/Patient?", "Patient/?", " Patient?", "./Patient?"],
    ids=["absolute-on-this-base", "slash-before-query", "leading-space", "dot-slash"],
)
@pytest.mark.parametrize("writer", ["practitioner-not-authorized", "system-client"])
def test_r18_an_iti65_patient_reference_spelled_otherwise_reads_nothing_of_the_record(
    world, writer, prefix
):
    """The check that a conditional patient reference names the INS alone looked at
    references starting with `Patient?`: spelled on this server's base, the same criteria
    must be refused (or read nothing) alike whether the record holds a masked document."""
    token = (
        world.tokens.practitioner(STRANGER) if writer != "system-client" else system_token(world)
    )
    ins = quote(f"{INS_SYSTEM}|{valid_nir(1)}")
    answers = []
    for criterion in HIDDEN_AND_ABSENT["masked-label"]:
        subject = f"{prefix}identifier={ins}&_has:DocumentReference:patient:{criterion}"
        response = world.client.post(
            "/fhir",
            data=json.dumps(_broken_provide_bundle(subject)),
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        )
        answers.append(_answer(response, criterion))
    assert answers[0] == answers[1], answers


# -- R07, R14, R18: a vread after the document was deleted keeps its last labels --------------


@pytest.mark.parametrize("case_id", list(LABELLED_LATER))
def test_r14_r07_a_vread_of_a_deleted_document_is_hidden_like_its_last_version(world, case_id):
    """Version 2 of the document adds INVISIBLE_PATIENT (INVISIBLE_REPRESENTANTS_LEGAUX),
    version 3 deletes it. A professional's vread of version 1 (refused now that a deletion is
    its author's only) was traced with version 1's
    labels (none), the deletion carrying none: the patient (the parent) found in their trail
    the document their own read answers 404 for, as 4bb5097 had closed while it lived."""
    key, label, professional, viewer_case, patient_id = LABELLED_LATER[case_id]
    resource_id = _label_later(world, key, label)
    world.service.delete(INTERNAL, "DocumentReference", resource_id)
    viewer = CASES[viewer_case].requester(world.tokens)
    assert world.get(viewer, f"/fhir/Patient/{patient_id}").status_code == 200  # a control
    read = world.get(
        world.tokens.practitioner(professional),
        f"/fhir/DocumentReference/{resource_id}/_history/1",
    )
    # Refused since a deletion is its author's only (TD3.3c, test_attack_pass_lifecycle):
    # the refusal is traced, and must not name the document to the viewer either.
    assert read.status_code == 404, read.get_data(as_text=True)
    text, events = trace(world, viewer, patient_id)
    assert events, "the viewer's trail is empty: the search is broken"
    assert resource_id not in text, "the trail names the document hidden from the viewer"


def test_r14_a_version_of_a_deleted_masked_document_is_not_read_unmasked(world):
    """(Held; a guard of the fix above.) Version 2 adds MASQUE_PS, version 3 deletes the
    document: version 1 is served only to whom version 2 was (masking hides all of
    history), not to every authorized professional once the document is deleted."""
    resource_id = _label_later(world, "a-visible", "MASQUE_PS")
    before = world.get(
        world.tokens.practitioner(AUTHORIZED), f"/fhir/DocumentReference/{resource_id}/_history/1"
    )
    world.service.delete(INTERNAL, "DocumentReference", resource_id)
    after = world.get(
        world.tokens.practitioner(AUTHORIZED), f"/fhir/DocumentReference/{resource_id}/_history/1"
    )
    assert (before.status_code, after.status_code) == (404, 404), after.get_data(as_text=True)


@pytest.mark.parametrize("case_id", list(LABELLED_LATER))
def test_r18_a_viewers_refused_vread_of_a_deleted_hidden_document_shows_as_an_unknown_ids(
    world, case_id
):
    """The viewer's own vread of version 1 of the document hidden from them, then deleted,
    answers 404 as for an unknown id; its refusal, traced with version 1's labels (none),
    showed in their trail (one more event), where a vread of an unknown id shows nothing."""
    key, label, _, viewer_case, patient_id = LABELLED_LATER[case_id]
    resource_id = _label_later(world, key, label)
    world.service.delete(INTERNAL, "DocumentReference", resource_id)
    viewer = CASES[viewer_case].requester(world.tokens)
    grown = {}
    for kind, target in {"hidden": resource_id, "unknown": UNKNOWN_ID}.items():
        before = _trail_size(world, viewer, patient_id)
        probe = world.get(viewer, f"/fhir/DocumentReference/{target}/_history/1")
        assert probe.status_code == 404, probe.get_data(as_text=True)
        grown[kind] = _trail_size(world, viewer, patient_id) - before
    assert grown["hidden"] == grown["unknown"], grown
