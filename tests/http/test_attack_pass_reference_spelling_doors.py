"""Attack pass, second round: the doors the reference-spelling matrix had not been tried at
(R04, R06, R18). See `test_attack_pass_reference_spellings` for the first round.

Fixed here: a batch or transaction entry's `request.url` is read by `urlsplit`, which drops
tabs and line ends anywhere and control characters or spaces in front (WHATWG), while the
Bundle's own checks read it as written (`_PLAIN_READ` ended in `$`): `DocumentReference/<id>\\n`
was served as a read of `<id>`, and eleven of them passed MAX_BUNDLE_SEARCHES as plain reads.
A url is now read as written or refused (400 for the entry).

Held, kept as regression tests: conditional create (`If-None-Exist`, a Bundle's
`ifNoneExist`), conditional update and delete whose criteria spell the patient or the
identifier otherwise (a line end, a trailing slash, a lower-case type, an absolute base)
are refused or match in the record they designate, never another's; a FHIRPath Patch whose
value is a Reference in any spelling changes nothing; the AuditEvent view by `patient=` or
`entity=` spelled otherwise shows no event of another patient; an INS under an accepted
alias of its system (a bare OID, `URN:OID:` in capitals) is canonicalized before the check
that a Reference names the record's patient (`_other_patient_ins`): the record's own INS
so spelled is accepted, another patient's refused.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from tests.http.conftest import FHIR_JSON, INS_SYSTEM, auth, valid_nir
from tests.http.test_normal_form import (  # noqa: F401  (fixture)
    AUTHORIZED,
    BASE,
    PATIENT_A,
    PATIENT_B,
    document,
    post,
    record,
)

pytestmark = pytest.mark.usefixtures("record")


@pytest.fixture
def service(app):
    """The server's service (patients A and B are put in place by `record`)."""
    return app.extensions["fhir"].service


def _headers(token: str, **extra: str) -> dict[str, str]:
    return auth(token, **{"Content-Type": FHIR_JSON, **extra})


def _batch(client, token: str, *entries: dict, kind: str = "batch"):
    bundle = {"resourceType": "Bundle", "type": kind, "entry": list(entries)}
    return client.post("/fhir", data=json.dumps(bundle), headers=_headers(token))


# -- a Bundle entry's url read as written ----------------------------------------------------

URL_NOISE = {
    "trailing-newline": "{url}\n",
    "trailing-crlf": "{url}\r\n",
    "versioned-trailing-newline": "{url}/_history/1\n",
    "embedded-tab": "Document\tReference/{id}",
    "leading-space": " {url}",
    "leading-control": "\x01{url}",
}


@pytest.mark.parametrize("noise", list(URL_NOISE))
def test_r04_a_bundle_entry_url_read_otherwise_than_written_is_refused(client, tokens, noise):
    """A batch GET `DocumentReference/<id>\\n` was served as the read of `<id>`
    (`urlsplit` drops the line end) while the Bundle's checks took the url as written:
    refused now (the entry's 400), nothing served."""
    token = tokens.practitioner(AUTHORIZED)
    created = post(client, token, document(PATIENT_A)).get_json()["id"]
    url = URL_NOISE[noise].format(url=f"DocumentReference/{created}", id=created)
    answer = _batch(client, token, {"request": {"method": "GET", "url": url}})
    if answer.status_code == 400:  # a character no FHIR string holds: the whole Bundle
        assert answer.get_json()["resourceType"] == "OperationOutcome"
        return
    assert answer.status_code == 200, answer.get_data(as_text=True)
    entry = answer.get_json()["entry"][0]
    assert entry["response"]["status"].startswith("400"), entry
    assert "resource" not in entry


def test_r04_eleven_reads_spelled_with_a_line_end_count_as_searches(client, tokens):
    """MAX_BUNDLE_SEARCHES leaves plain reads uncounted; `Type/id\\n` is not one
    (`_PLAIN_READ` reads to the last character)."""
    token = tokens.practitioner(AUTHORIZED)
    created = post(client, token, document(PATIENT_A)).get_json()["id"]
    entry = {"request": {"method": "GET", "url": f"DocumentReference/{created}\n"}}
    answer = _batch(client, token, *[entry] * 11)
    assert answer.status_code == 400, answer.get_data(as_text=True)
    assert answer.get_json()["issue"][0]["code"] == "too-costly"


# -- conditional criteria spelled otherwise ----------------------------------------------------

# Criteria naming a patient (`{p}`) and a document's masterIdentifier (`{s}|{v}`).
CRITERIA = {
    "relative": "patient=Patient/{p}&identifier={s}|{v}",
    "patient-line-end": "patient=Patient/{p}%0A&identifier={s}|{v}",
    "id-line-end": "patient={p}%0A&identifier={s}|{v}",
    "patient-trailing-slash": "patient=Patient/{p}/&identifier={s}|{v}",
    "patient-lower-case-type": "patient=patient/{p}&identifier={s}|{v}",
    "patient-another-base": "patient=https%3A%2F%2Fevil.example%2Ffhir%2FPatient%2F{p}"
    "&identifier={s}|{v}",
    "patient-this-base": "patient=" + quote(BASE, safe="") + "%2FPatient%2F{p}&identifier={s}|{v}",
    "identifier-line-end": "patient=Patient/{p}&identifier={s}|{v}%0A",
    "identifier-alone": "identifier={s}|{v}",
    "identifier-alone-line-end": "identifier={s}|{v}%0A",
}


def _criteria(name: str, patient: str, identifier: dict) -> str:
    system, value = (quote(identifier[k], safe="") for k in ("system", "value"))
    return CRITERIA[name].format(p=patient, s=system, v=value)


@pytest.mark.parametrize("name", list(CRITERIA))
def test_r04_conditional_criteria_in_any_spelling_never_match_another_record(
    client, tokens, service, name
):
    """R04/R06: criteria naming B and the identifier of A's document, however spelled, are
    refused or match in B's record: A's document is never answered, changed nor deleted by
    a conditional create (header or Bundle `ifNoneExist`), update or delete."""
    token = tokens.practitioner(AUTHORIZED)
    of_a = post(client, token, document(PATIENT_A)).get_json()
    criteria = _criteria(name, PATIENT_B, of_a["masterIdentifier"])
    for_b = document(PATIENT_B)
    for_b["masterIdentifier"] = of_a["masterIdentifier"]
    answers = [
        client.post(
            "/fhir/DocumentReference",
            data=json.dumps(for_b),
            headers=_headers(token, **{"If-None-Exist": criteria}),
        ),
        _batch(
            client,
            token,
            {
                "resource": for_b,
                "request": {"method": "POST", "url": "DocumentReference", "ifNoneExist": criteria},
            },
        ),
    ]
    changed = {k: v for k, v in of_a.items() if k not in ("id", "meta")}
    changed["description"] = "changed"
    answers.append(
        client.put(
            f"/fhir/DocumentReference?{criteria}", data=json.dumps(changed), headers=_headers(token)
        )
    )
    answers.append(client.delete(f"/fhir/DocumentReference?{criteria}", headers=_headers(token)))
    for answer in answers:
        assert answer.status_code < 500, answer.get_data(as_text=True)
        assert of_a["id"] not in answer.get_data(as_text=True), (name, answer.status_code)
        assert of_a["id"] not in (answer.headers.get("Location") or "")
    stored = service.read(INTERNAL, "DocumentReference", of_a["id"]).json()
    assert stored["meta"]["versionId"] == "1"
    assert "description" not in stored or stored["description"] != "changed"


@pytest.mark.parametrize("name", [n for n in CRITERIA if n != "relative" and "identifier" not in n])
def test_r04_conditional_criteria_designating_the_patient_otherwise_are_refused(
    client, tokens, service, name
):
    """A conditional update or delete whose criteria spell A otherwise than as the server
    reads it is a 4xx, and A's document stays as it was."""
    token = tokens.practitioner(AUTHORIZED)
    of_a = post(client, token, document(PATIENT_A)).get_json()
    criteria = _criteria(name, PATIENT_A, of_a["masterIdentifier"])
    deleted = client.delete(f"/fhir/DocumentReference?{criteria}", headers=_headers(token))
    assert 400 <= deleted.status_code < 500, deleted.get_data(as_text=True)
    assert (
        service.read(INTERNAL, "DocumentReference", of_a["id"]).json()["meta"]["versionId"] == "1"
    )


# -- FHIRPath Patch ------------------------------------------------------------------------------

PATCH_REFERENCES = [
    f"Patient/{PATIENT_B}",
    f"Patient/{PATIENT_A}\n",
    f"{BASE}/Patient/{PATIENT_B}",
    f"patient/{PATIENT_B}",
    f"Patient/{PATIENT_B}/",
]
IS_ARCHIVED = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/PDSm_isArchived"


def _operation(kind: str, reference: str) -> list[dict]:
    value = {"name": "value", "valueReference": {"reference": reference}}
    if kind == "replace-subject":
        return [
            {"name": "type", "valueCode": "replace"},
            {"name": "path", "valueString": "DocumentReference.subject"},
            value,
        ]
    if kind == "add-subject":
        return [
            {"name": "type", "valueCode": "add"},
            {"name": "path", "valueString": "DocumentReference"},
            {"name": "name", "valueString": "subject"},
            value,
        ]
    return [  # the one patchable extension, carrying a Reference
        {"name": "type", "valueCode": "add"},
        {"name": "path", "valueString": "DocumentReference"},
        {"name": "name", "valueString": "extension"},
        {
            "name": "value",
            "part": [
                {"name": "url", "valueUri": IS_ARCHIVED},
                {"name": "valueReference", "valueReference": {"reference": reference}},
            ],
        },
    ]


@pytest.mark.parametrize("reference", PATCH_REFERENCES)
@pytest.mark.parametrize("kind", ["replace-subject", "add-subject", "archived-as-reference"])
@pytest.mark.parametrize("actor", ["author", "patient"])
def test_r06_fhirpath_patch_with_a_reference_in_any_spelling_changes_nothing(
    client, tokens, service, kind, reference, actor
):
    """R06: a document never moves to another record; a Patch whose value is a Reference,
    spelled any way, is a 4xx and the document keeps its version."""
    author = tokens.practitioner(AUTHORIZED)
    of_a = post(client, author, document(PATIENT_A)).get_json()
    token = author if actor == "author" else tokens.patient(PATIENT_A)
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": "operation", "part": _operation(kind, reference)}],
    }
    answer = client.patch(
        f"/fhir/DocumentReference/{of_a['id']}", data=json.dumps(body), headers=_headers(token)
    )
    assert 400 <= answer.status_code < 500, answer.get_data(as_text=True)
    stored = service.read(INTERNAL, "DocumentReference", of_a["id"]).json()
    assert stored["meta"]["versionId"] == "1"
    assert stored["subject"] == {"reference": f"Patient/{PATIENT_A}"}


# -- the AuditEvent view -------------------------------------------------------------------------

AUDIT_QUERIES = [
    "patient=Patient/{a}%0A",
    "patient={a}%0A",
    "patient=patient/{a}",
    "patient=Patient/{a}/",
    "patient=" + quote(BASE, safe="") + "%2FPatient%2F{a}",
    "patient=https%3A%2F%2Fevil.example%2Ffhir%2FPatient%2F{a}",
    "entity=DocumentReference/{d}%0A",
    "entity=DocumentReference/{d}",
    "entity=" + quote(BASE, safe="") + "%2FDocumentReference%2F{d}",
    "entity-identifier={u}",
]


@pytest.mark.parametrize("query", AUDIT_QUERIES)
def test_r06_audit_event_view_spelled_otherwise_shows_no_event_of_another_patient(
    client, tokens, query
):
    """R06/R18: patient B asking the AuditEvent view for A's record or A's document, spelled
    any way, is refused or answered with no event."""
    of_a = post(client, tokens.practitioner(AUTHORIZED), document(PATIENT_A)).get_json()
    url = "/fhir/AuditEvent?" + query.format(
        a=PATIENT_A, d=of_a["id"], u=quote(of_a["masterIdentifier"]["value"], safe="")
    )
    answer = client.get(url, headers=auth(tokens.patient(PATIENT_B)))
    assert answer.status_code < 500, answer.get_data(as_text=True)
    if answer.status_code == 200:
        assert answer.get_json().get("entry", []) == []
    else:
        assert 400 <= answer.status_code < 500


# -- an INS under an accepted spelling of its system --------------------------------------------

INS_OID = INS_SYSTEM.removeprefix("urn:oid:")
INS_SPELLINGS = [INS_SYSTEM, INS_OID, f"URN:OID:{INS_OID}", f"urn:OID:{INS_OID}"]


@pytest.mark.parametrize("system", INS_SPELLINGS)
@pytest.mark.parametrize("whose", ["own", "another"])
def test_r04_an_ins_under_any_accepted_system_spelling_is_read_as_canonical(
    client, tokens, service, system, whose
):
    """R04: the normal form rewrites an INS system's aliases before `_other_patient_ins`
    compares (system, value): the record's own INS so spelled is accepted (stored under the
    canonical system), another patient's is refused (422 R04), nothing written."""
    nir = valid_nir(1 if whose == "own" else 2)
    resource = document(PATIENT_A)
    resource["subject"] = {
        "reference": f"Patient/{PATIENT_A}",
        "identifier": {"system": system, "value": nir},
    }
    answer = post(client, tokens.practitioner(AUTHORIZED), resource)
    if whose == "own":
        assert answer.status_code == 201, answer.get_data(as_text=True)
        stored = service.read(INTERNAL, "DocumentReference", answer.get_json()["id"]).json()
        assert stored["subject"]["identifier"] == {"system": INS_SYSTEM, "value": nir}
        return
    assert answer.status_code == 422, answer.get_data(as_text=True)
    assert answer.get_json()["issue"][0]["details"]["coding"][0]["code"] == "R04"


@pytest.mark.parametrize(
    "system", ["urn:oid:1.2.250.1.213.1.4.10", f"{INS_SYSTEM} ", INS_OID + "\n"]
)
def test_r04_the_patients_ins_under_another_or_a_near_miss_system_is_refused(
    client, tokens, system
):
    """Another INS system (NIR test) with the record's NIR is another (system, value): refused
    (R04, fail closed); a near miss of the system (a space, a line end) is refused by the
    normal form."""
    resource = document(PATIENT_A)
    resource["subject"] = {
        "reference": f"Patient/{PATIENT_A}",
        "identifier": {"system": system, "value": valid_nir(1)},
    }
    answer = post(client, tokens.practitioner(AUTHORIZED), resource)
    assert answer.status_code == 422, answer.get_data(as_text=True)


# -- a document's entryUUID read to its last character ---------------------------------------


@pytest.mark.parametrize("end", ["\n", "\r\n", " "], ids=["newline", "crlf", "space"])
def test_r04_an_entry_uuid_spelled_with_a_line_end_is_refused(client, tokens, service, end):
    """A DocumentEntry's entryUUID is `urn:uuid:` and a UUID to the value's last character:
    `$` also matched before a final newline, so `urn:uuid:<an existing entryUUID>\n` was
    stored (201), a second document under the first one's entryUUID for any reader that
    trims it, past the registry's uniqueness check (which compares as written). Refused
    now (422), nothing written."""
    token = tokens.practitioner(AUTHORIZED)
    entry_uuid = f"urn:uuid:{uuid.uuid4()}"
    first = document(PATIENT_A)
    first["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": entry_uuid}]
    assert post(client, token, first).status_code == 201
    before = service.search(INTERNAL, "DocumentReference", [("patient", PATIENT_A)])
    second = document(PATIENT_A)
    second["identifier"] = [{"system": "urn:ietf:rfc:3986", "value": entry_uuid + end}]
    refused = post(client, token, second)
    assert refused.status_code == 422, refused.get_data(as_text=True)
    after = service.search(INTERNAL, "DocumentReference", [("patient", PATIENT_A)])
    assert len(after.resources()[0]) == len(before.resources()[0])


# -- a second Patient outside the compartment, or spelled otherwise --------------------------

OTHER_PATIENT_SPELLINGS = {
    "relative": f"Patient/{PATIENT_B}",
    "trailing-newline": f"Patient/{PATIENT_B}\n",
    "versioned-trailing-newline": f"Patient/{PATIENT_B}/_history/1\n",
    "trailing-slash": f"Patient/{PATIENT_B}/",
    "lower-case-type": f"patient/{PATIENT_B}",
    "fragment": f"Patient/{PATIENT_B}#x",
    "leading-space": f" Patient/{PATIENT_B}",
    "this-base-trailing-slash": f"{BASE}/Patient/{PATIENT_B}/",
    "own-patient-trailing-newline": f"Patient/{PATIENT_A}\n",
}


def _naming(where: str, reference: str) -> dict:
    resource = document(PATIENT_A)
    if where == "author":
        resource["author"] = [*resource["author"], {"reference": reference}]
    elif where == "context.encounter":
        resource.setdefault("context", {})["encounter"] = [{"reference": reference}]
    elif where == "context.sourcePatientInfo":
        resource.setdefault("context", {})["sourcePatientInfo"] = {"reference": reference}
    else:
        resource[where] = {"reference": reference}
    return resource


@pytest.mark.parametrize("spelling", list(OTHER_PATIENT_SPELLINGS))
@pytest.mark.parametrize(
    "where",
    ["author", "authenticator", "custodian", "context.encounter", "context.sourcePatientInfo"],
)
def test_r06_a_document_naming_another_patient_anywhere_in_any_spelling_is_refused(
    client, tokens, service, where, spelling
):
    """R06: a document of A naming B is refused. The two-patient check read the compartment
    (`subject`, `author`) as the index reads it: `author` `Patient/patient-0b\\n`, `.../`,
    `patient/...`, `#x` or ` Patient/...` named nobody and was stored (201), as was
    `Patient/patient-0b` in `authenticator`, `custodian` or `context`; served to A's
    readers, each named B. Refused now (422), nothing written."""
    before = _all_documents(service)
    refused = post(
        client, tokens.practitioner(AUTHORIZED), _naming(where, OTHER_PATIENT_SPELLINGS[spelling])
    )
    assert refused.status_code == 422, refused.get_data(as_text=True)
    assert refused.get_json()["resourceType"] == "OperationOutcome"
    assert _all_documents(service) == before


def test_r06_a_document_naming_its_own_patient_outside_the_subject_is_accepted(
    client, tokens, service
):
    """The control: `Patient/patient-a` in `authenticator` (the patient validated it)."""
    answer = post(
        client, tokens.practitioner(AUTHORIZED), _naming("authenticator", f"Patient/{PATIENT_A}")
    )
    assert answer.status_code == 201, answer.get_data(as_text=True)


def _all_documents(service) -> set[str]:
    found = service.search(INTERNAL, "DocumentReference", [])
    return {resource["id"] for resource in found.resources()[0]}
