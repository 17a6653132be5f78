"""Attack pass: a reference, or the identifier a rule compares, spelled so that one reader
takes it for the canonical one and another does not (R04, R07, R09, R10, R14).

The patterns that read a relative reference (`Patient/<id>`), an IdNat_PS or an INS ended in
`$`, which in Python also matches before a final newline: `Patient/patient-a\\n` was bound
to patient A's record, indexed and judged as `Patient/patient-a`, but stored as written
(every face comparing the text saw another patient); an IdNat_PS `810000000020\\n` passed
the check the normal form makes (no white space) and was stored, so that a Consent's block
of that practitioner was in force for nobody: the practitioner read on (R09, 200). They are
anchored at the end of the text now: such a spelling designates nothing and is refused
(422, nothing written), as a leading or trailing space already was.

The other spellings of the matrix (absolute on this server's base or another, versioned,
trailing slash, `./`, `//`, percent-encoded id, lower-case type, white space, fragment,
query, `urn:uuid:`/`urn:oid:` outside a Bundle) are either read as the canonical reference
(this server's base, a version) or refused with a 4xx: the matrix below holds both.

A Reference names one patient. The record a write is bound to is read from literal
references; a Reference's `identifier` is read by no rule. A subject `Patient/patient-a`
carrying B's INS (or a logical `author` naming B by INS alone, a Consent of B carrying A's
INS) was stored in A's record and served to its readers as naming B, and
`patient=patient-a&patient:identifier=<B's INS>` found it: refused now (422, R04) at every
door that writes (REST, transaction, ITI-65), once the write is permitted, so that the
refusal tells no one refused by the record which INS a Patient id has.

Held (tried, refused with a 4xx or read as the canonical reference, not repeated here):
`relatesTo.target`, `context.related`, List `entry.item` and Communication references in
every spelling of the matrix; a contained or display-only subject; `type` disagreeing with
the literal; conditional `Patient?identifier=` references in Bundles (another criterion,
`patient?`, a newline); the patient's AuditEvent view by `patient=`, `entity=`, `agent=`,
chains and `_include` spelled otherwise; PATCH (served for DocumentReference metadata only,
subject unchangeable).
"""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_IDNAT_PS
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    auth,
    deny,
    dmp_consent,
    permit,
    valid_nir,
)
from tests.http.test_normal_form import (  # noqa: F401  (fixture)
    AUTHORIZED,
    BASE,
    BLOCKED,
    PATIENT_A,
    PATIENT_B,
    document,
    post,
    record,
)
from tests.support.documents import transaction

pytestmark = pytest.mark.usefixtures("record")


@pytest.fixture
def service(app):
    """The server's service (patients A and B are put in place by `record`, used by all)."""
    return app.extensions["fhir"].service


STRANGER = "810000000040"  # named in no Consent

# Spellings of `Patient/patient-a`, and whether the server reads them as it (True) or must
# refuse them (False): never accepted and read otherwise.
SUBJECT_SPELLINGS = {
    "relative": (f"Patient/{PATIENT_A}", True),
    "absolute-this-base": (f"{BASE}/Patient/{PATIENT_A}", True),
    "absolute-this-base-versioned": (f"{BASE}/Patient/{PATIENT_A}/_history/1", True),
    "versioned": (f"Patient/{PATIENT_A}/_history/2", True),
    "absolute-another-base": (f"https://evil.example/fhir/Patient/{PATIENT_A}", False),
    "absolute-this-host-another-path": (f"http://127.0.0.1:8080/FHIR/Patient/{PATIENT_A}", False),
    "trailing-slash": (f"Patient/{PATIENT_A}/", False),
    "dot-slash": (f"./Patient/{PATIENT_A}", False),
    "double-slash": (f"Patient//{PATIENT_A}", False),
    "percent-encoded-id": ("Patient/patient%2Da", False),
    "lower-case-type": (f"patient/{PATIENT_A}", False),
    "leading-space": (f" Patient/{PATIENT_A}", False),
    "embedded-space": (f"Patient/ {PATIENT_A}", False),
    "trailing-tab": (f"Patient/{PATIENT_A}\t", False),
    "trailing-newline": (f"Patient/{PATIENT_A}\n", False),
    "versioned-trailing-newline": (f"Patient/{PATIENT_A}/_history/1\n", False),
    "versioned-with-a-space": (f"Patient/{PATIENT_A}/_history/1 x", False),
    "versioned-with-a-fragment": (f"Patient/{PATIENT_A}/_history/1#x", False),
    "trailing-no-break-space": (f"Patient/{PATIENT_A}\u00a0", False),
    "fragment": (f"Patient/{PATIENT_A}#x", False),
    "query": (f"Patient/{PATIENT_A}?x=1", False),
    "urn-uuid-outside-a-bundle": ("urn:uuid:0e0e0e0e-0000-4000-8000-000000000000", False),
    "urn-oid": ("urn:oid:1.2.250.1.213.1.4.8", False),
}


def _documents_of(service, patient: str) -> set[str]:
    found = service.search(INTERNAL, "DocumentReference", [("patient", patient)])
    return {resource["id"] for resource in found.resources()[0]}


def _all_documents(service) -> set[str]:
    found = service.search(INTERNAL, "DocumentReference", [])
    return {resource["id"] for resource in found.resources()[0]}


@pytest.mark.parametrize("spelling", list(SUBJECT_SPELLINGS))
def test_r04_document_subject_in_any_spelling_is_the_patient_or_refused(
    client, tokens, service, spelling
):
    """R04: a document is bound to the record its subject names. A spelling the server reads
    as `Patient/patient-a` is stored under it (relative) and judged as A's (BLOCKED, blocked
    by A, may not read it); any other is refused with a 4xx OperationOutcome, nothing
    written. `Patient/patient-a\\n` was stored as written, read as A's by the rules and the
    index only."""
    reference, same = SUBJECT_SPELLINGS[spelling]
    before = _all_documents(service)
    resource = document(PATIENT_A)
    resource["subject"] = {"reference": reference}
    answer = post(client, tokens.practitioner(AUTHORIZED), resource)
    if not same:
        assert 400 <= answer.status_code < 500, answer.get_data(as_text=True)
        assert answer.get_json()["resourceType"] == "OperationOutcome"
        assert _all_documents(service) == before
        return
    assert answer.status_code == 201, answer.get_data(as_text=True)
    created = answer.get_json()["id"]
    stored = service.read(INTERNAL, "DocumentReference", created).json()["subject"]["reference"]
    assert stored.split("/_history/")[0] == f"Patient/{PATIENT_A}"
    assert created in _documents_of(service, PATIENT_A)
    blocked = client.get(
        f"/fhir/DocumentReference/{created}", headers=auth(tokens.practitioner(BLOCKED))
    )
    assert blocked.status_code == 404


@pytest.mark.parametrize("end", ["\n", "\r\n", " "], ids=["newline", "crlf", "space"])
def test_r09_consent_block_of_a_practitioner_spelled_with_a_line_end_is_refused(
    client, tokens, service, end
):
    """R09: a block whose actor's IdNat_PS ended in a newline passed the IdNat_PS check (no
    white space) and was stored; the rules compare IdNat_PS as written, so the block named
    nobody and the practitioner read on (201, then 200). Refused now, nothing written, and
    the practitioner's access is what it was."""
    consent = dmp_consent(PATIENT_B, deny(AUTHORIZED + end))
    refused = post(client, tokens.patient(PATIENT_B), consent)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert "IdNat_PS" in refused.get_data(as_text=True)
    found = service.search(INTERNAL, "Consent", [("patient", PATIENT_B)]).resources()[0]
    assert [c["id"] for c in found] == ["consent-b"]


def test_r10_authorization_of_a_practitioner_spelled_with_a_line_end_is_refused(
    client, tokens, service
):
    """R10: the same spelling in a permit authorized nobody while the patient believed it
    authorized the practitioner: refused, as the patient must learn it."""
    refused = post(client, tokens.patient(PATIENT_B), dmp_consent(PATIENT_B, permit(STRANGER)))
    assert refused.status_code == 201  # control: the well-spelled permit is accepted
    refused = post(
        client, tokens.patient(PATIENT_B), dmp_consent(PATIENT_B, permit(STRANGER + "\n"))
    )
    assert refused.status_code == 422, refused.get_data(as_text=True)


def test_r14_document_author_spelled_with_a_line_end_is_refused(client, tokens, service):
    """R14: a document's author is compared by IdNat_PS (its author reads what it masked); an
    author `810000000020\\n` was stored and matched no practitioner."""
    before = _all_documents(service)
    resource = document(PATIENT_A)
    resource["author"] = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHORIZED + "\n"}}]
    refused = post(client, tokens.practitioner(AUTHORIZED), resource)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert _all_documents(service) == before


def test_r09_consent_about_a_patient_spelled_with_a_line_end_is_refused(client, tokens, service):
    """R09: `Consent.patient` `Patient/patient-0b\\n` was stored as written and read as B's
    by the rules alone: refused now, as any Consent.patient the rules cannot read."""
    consent = dmp_consent(PATIENT_B, deny(AUTHORIZED))
    consent["patient"]["reference"] += "\n"
    refused = post(client, tokens.patient(PATIENT_B), consent)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    found = service.search(INTERNAL, "Consent", [("patient", PATIENT_B)]).resources()[0]
    assert [c["id"] for c in found] == ["consent-b"]


def _related_person(patient: dict) -> dict:
    return {
        "resourceType": "RelatedPerson",
        "patient": patient,
        "relationship": [
            {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "PRN"}
                ]
            }
        ],
        "name": [{"family": "Parent"}],
    }


@pytest.mark.parametrize(
    "patient",
    [
        {"reference": f"Patient/{PATIENT_B}\n"},
        {"reference": f"Patient/{PATIENT_B}", "identifier": {"system": INS_SYSTEM, "value": "X"}},
    ],
    ids=["line-end", "another-patients-ins"],
)
def test_r07_related_person_naming_its_patient_otherwise_is_refused(
    client, tokens, service, patient
):
    """R07: a representative is the RelatedPerson whose `patient` names the record; the
    spelling with a newline was stored as written and read as the patient's by the rules, and
    one carrying A's INS beside `Patient/patient-0b` was B's representative for the rules and
    A's for whoever read the identifier. Refused, nothing written."""
    if "identifier" in patient:
        patient["identifier"]["value"] = valid_nir(1)
    admin = tokens.system(
        "insurer",
        scope="system/Patient.cruds system/RelatedPerson.cruds",
        organization_type="health_insurer",
    )
    refused = client.post(
        "/fhir/RelatedPerson",
        data=json.dumps(_related_person(patient)),
        headers=auth(admin, **{"Content-Type": FHIR_JSON}),
    )
    assert 400 <= refused.status_code < 500, refused.get_data(as_text=True)
    assert service.search(INTERNAL, "RelatedPerson", []).resources()[0] == []


@pytest.mark.parametrize(
    "value",
    [f"Patient/{PATIENT_A}\n", f"Patient/{PATIENT_A}/_history/1\n", f"{PATIENT_A}\n"],
    ids=["type-and-id", "versioned", "id"],
)
def test_r04_search_designating_the_patient_with_a_line_end_is_refused(
    client, tokens, service, value
):
    """A search `patient=Patient/patient-a%0A` was read as designating A (the gate and the
    store alike): refused now as a value that is no reference, before any record is read."""
    post(client, tokens.practitioner(AUTHORIZED), document(PATIENT_A))
    answer = client.get(
        f"/fhir/DocumentReference?patient={quote(value, safe='')}",
        headers=auth(tokens.practitioner(AUTHORIZED)),
    )
    assert 400 <= answer.status_code < 500, answer.get_data(as_text=True)
    assert "entry" not in answer.get_json()


# -- a reference naming one patient by its literal and another by its identifier -------------

INS_A = {"system": INS_SYSTEM, "value": valid_nir(1)}  # patient A's INS (`a_patient(1)`)
INS_B = {"system": INS_SYSTEM, "value": valid_nir(2)}  # patient B's


def _list_of(patient_reference: dict) -> dict:
    return {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "subject": patient_reference,
    }


@pytest.mark.parametrize(
    ("where", "reference"),
    [
        ("subject", {"reference": f"Patient/{PATIENT_A}", "identifier": INS_B}),
        ("subject", {"reference": f"{BASE}/Patient/{PATIENT_A}", "identifier": INS_B}),
        ("author", {"identifier": INS_B, "type": "Patient"}),
        ("author", {"identifier": INS_B}),
        ("list-subject", {"reference": f"Patient/{PATIENT_A}", "identifier": INS_B}),
    ],
    ids=[
        "subject-literal-a-identifier-b",
        "subject-absolute-a-identifier-b",
        "author-logical-patient-b",
        "author-identifier-b-untyped",
        "list-subject-literal-a-identifier-b",
    ],
)
def test_r04_a_reference_naming_another_patient_by_its_ins_is_refused(
    client, tokens, service, where, reference
):
    """R04/R06: the record a write is bound to is read from literal references; a Reference
    whose `identifier` is another patient's INS (beside a literal naming A, or alone, as a
    logical reference in `author`) was stored in A's record and served to A's readers as
    naming B: `patient=patient-a&patient:identifier=<B's INS>` found it, and a reader took
    B's INS for the document's patient. One Reference, one patient: refused (422), nothing
    written; the record's own INS beside its literal is still accepted."""
    token = tokens.practitioner(AUTHORIZED)
    if where == "list-subject":
        before = service.search(INTERNAL, "List", []).resources()[0]
        refused = post(client, token, _list_of(reference))
        assert refused.status_code == 422, refused.get_data(as_text=True)
        assert service.search(INTERNAL, "List", []).resources()[0] == before
        assert post(client, token, _list_of({**reference, "identifier": INS_A})).status_code == 201
        return
    before = _all_documents(service)
    resource = document(PATIENT_A)
    if where == "subject":
        resource["subject"] = reference
    else:
        resource["author"] = [*resource["author"], reference]
    refused = post(client, token, resource)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert refused.get_json()["resourceType"] == "OperationOutcome"
    assert _all_documents(service) == before
    control = document(PATIENT_A)
    control["subject"] = {"reference": f"Patient/{PATIENT_A}", "identifier": INS_A}
    assert post(client, token, control).status_code == 201


def test_r09_consent_about_b_naming_a_by_its_ins_is_refused(client, tokens, service):
    """R09: a Consent whose `patient` names B by its literal and A by its INS was B's for the
    rules and A's for whoever read the identifier: refused, B's Consents unchanged."""
    consent = dmp_consent(PATIENT_B, deny(AUTHORIZED))
    consent["patient"] = {"reference": f"Patient/{PATIENT_B}", "identifier": INS_A}
    refused = post(client, tokens.patient(PATIENT_B), consent)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    found = service.search(INTERNAL, "Consent", [("patient", PATIENT_B)]).resources()[0]
    assert [c["id"] for c in found] == ["consent-b"]


def test_r18_the_ins_check_tells_a_writer_refused_the_record_nothing(client, tokens, service):
    """The check runs once the write is permitted: a practitioner the patient blocked (R09)
    gets the same 403 whether the INS beside the literal is the patient's or not, so that
    it tells no one which INS a Patient id has."""
    answers = []
    for ins in (INS_A, INS_B):
        resource = document(PATIENT_A)
        resource["subject"] = {"reference": f"Patient/{PATIENT_A}", "identifier": ins}
        refused = post(client, tokens.practitioner(BLOCKED), resource)
        answers.append((refused.status_code, refused.get_json()["issue"][0]["diagnostics"]))
    assert answers[0] == answers[1] and answers[0][0] == 403, answers


# -- one character more, anywhere: the canonical reading or a refusal -------------------------

# White space and controls a client or a proxy may add, and characters that change a path.
_NOISE = st.sampled_from(
    [
        " ",
        "\t",
        "\n",
        "\r",
        "\x0b",
        "\x0c",
        "\u00a0",
        "\u200b",
        "\u2028",
        "/",
        ".",
        "#",
        "?",
        "%",
        "\\",
        ":",
    ]
)
_FEW = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FEW
@given(noise=_NOISE, position=st.integers(min_value=0, max_value=len(f"Patient/{PATIENT_A}")))
@example(noise="\n", position=len(f"Patient/{PATIENT_A}"))  # stored as written before
def test_r04_subject_with_one_more_character_is_read_as_written_or_refused(
    client, tokens, service, noise, position
):
    """R04: `Patient/patient-a` with one character added anywhere is either stored as the
    reference the rules read (relative, the same record, judged as A's) or refused with a
    4xx OperationOutcome; never stored as written and bound by a reading that skips it."""
    canonical = f"Patient/{PATIENT_A}"
    reference = canonical[:position] + noise + canonical[position:]
    resource = document(PATIENT_A)
    resource["subject"] = {"reference": reference}
    answer = post(client, tokens.practitioner(AUTHORIZED), resource)
    if answer.status_code == 201:
        created = answer.get_json()["id"]
        stored = service.read(INTERNAL, "DocumentReference", created).json()
        assert stored["subject"]["reference"] == canonical, reference
    else:
        assert 400 <= answer.status_code < 500, (reference, answer.get_data(as_text=True))
        assert answer.get_json()["resourceType"] == "OperationOutcome"


@_FEW
@given(noise=_NOISE, position=st.integers(min_value=0, max_value=len(AUTHORIZED)))
@example(noise="\n", position=len(AUTHORIZED))  # a block of nobody before
def test_r09_block_naming_a_practitioner_with_one_more_character_is_refused(
    client, tokens, service, noise, position
):
    """R09: an IdNat_PS with one character added anywhere names no practitioner the rules
    could match: the block is refused (422, or 400 for a character no FHIR string holds),
    never stored as blocking nobody."""
    idnat = AUTHORIZED[:position] + noise + AUTHORIZED[position:]
    refused = post(client, tokens.patient(PATIENT_B), dmp_consent(PATIENT_B, deny(idnat)))
    assert refused.status_code in (400, 422), (idnat, refused.get_data(as_text=True))
    assert refused.get_json()["resourceType"] == "OperationOutcome"


def test_r09_token_of_a_practitioner_spelled_with_a_line_end_is_refused(client, tokens, service):
    """R09/R10: a token's IdNat_PS is checked by the same function (`idnat_ps_problem`);
    `<blocked IdNat_PS>\\n` passed it and the request was judged (403 R10) for a requester
    the patient's block, compared as written, did not name: refused now (401), as a token
    naming no practitioner."""
    blocked = client.get(
        f"/fhir/DocumentReference?patient={PATIENT_A}",
        headers=auth(tokens.practitioner(BLOCKED + "\n")),
    )
    assert blocked.status_code == 401, blocked.get_data(as_text=True)


@pytest.mark.parametrize("iti65", [False, True], ids=["transaction", "iti65"])
def test_r04_a_bundle_document_naming_another_patient_by_its_ins_is_refused(
    client, tokens, service, iti65
):
    """The transaction and ITI-65 doors judge each entry as a REST write is judged: a
    document of A whose subject carries B's INS is refused and nothing of the Bundle is
    written."""
    resource = document(PATIENT_A)
    resource["subject"] = {"reference": f"Patient/{PATIENT_A}", "identifier": INS_B}
    bundle = transaction(PATIENT_A, resource, b"bonjour", with_submission_set=iti65)
    before = _all_documents(service)
    refused = client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(tokens.practitioner(AUTHORIZED), **{"Content-Type": FHIR_JSON}),
    )
    assert 400 <= refused.status_code < 500, refused.get_data(as_text=True)
    assert _all_documents(service) == before
