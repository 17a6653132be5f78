"""Attack pass on the IHE faces (ITI-41, ITI-18, ITI-43, ITI-65) after issue #18's fixes.

What got through, each reproduced over HTTP with VIHFs and tokens as `fhir-server token` makes
them:

- An ITI-41 RPLC / XFRM_RPLC naming (by entryUUID) a document hidden from the depositor (a
  MASQUE_PS document, for an authorized practitioner) answered XDSRepositoryError "Resource
  DocumentReference/<its FHIR id> is not known" where an unknown entryUUID answers
  XDSReplaceFailed: the document's existence and its id were told. A relation (RPLC, APND,
  XFRM) to a document of another record the depositor may not read answered
  XDSPatientIdDoesNotMatch "belongs to another patient", where an unknown one answers
  XDSReplaceFailed (or Success for APND).
- An ITI-65 `relatesTo.replaces` naming a hidden document by uniqueId (guessable: an OID root
  and a counter), entryUUID or id: the patient got past the registry checks for an
  INVISIBLE_PATIENT document (another answer than for an unknown uniqueId), a practitioner got
  a 404 naming the MASQUE_PS document's id, and anyone learned that a uniqueId exists in
  another patient's record (XDSPatientIdDoesNotMatch).

A document the depositor may not read is now answered, by both faces, exactly as an unknown one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import uuid

import pytest
from lxml import etree

from fhir_server.access.requester import INTERNAL
from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, auth, dmp_consent, permit
from tests.http.test_mhd import SUBMISSION, fixture, xds_codes
from tests.http.test_xds_endpoints import GP, Xds, envelope_of, registry_status
from tests.http.test_xds_stored_queries import APPROVED, FIND_SUBMISSION_SETS, adhoc
from tests.support.documents import dmp_document
from tests.xds_builders import build_iti41, patient_cx

RIM = f"{{{v.NS_RIM}}}"
AUTHORIZED = "810002222222"


@pytest.fixture
def xds(app, client, tokens, data_dir):
    return Xds(app, client, tokens, data_dir)


def deposit(api: Xds, nir: str, idnat: str = GP, relation=None, bound=True, **kwargs):
    """An inline ITI-41 by `idnat` (VIHF naming the patient when `bound`); `relation` =
    (association type, target entryUUID) from Document01."""
    security = api.security(idnat, nir if bound else None)
    request = build_iti41(nir=nir, mtom=False, security=security, **kwargs)
    root = etree.fromstring(request.envelope)
    if relation:
        etree.SubElement(
            root.find(f".//{RIM}RegistryObjectList"),
            f"{RIM}Association",
            id="as-relation",
            associationType=relation[0],
            sourceObject="Document01",
            targetObject=relation[1],
        )
    body = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    response = api.client.post(
        "/xds/repository", data=body, headers={"Content-Type": request.content_type}
    )
    return request, response


def errors(response) -> list[tuple[str, str]]:
    root, _ = envelope_of(response)
    return [
        (e.get("errorCode"), e.get("codeContext")) for e in root.iter(f"{{{v.NS_RS}}}RegistryError")
    ]


def stored(api: Xds, request) -> dict:
    unique_id = request.document_unique_ids["Document01"]
    (found,) = api.runtime.service.find(
        INTERNAL, "DocumentReference", [("identifier", f"urn:ietf:rfc:3986|urn:oid:{unique_id}")]
    )
    return found.json()


def entry_uuid(document: dict) -> str:
    return next(i["value"] for i in document["identifier"] if i["value"].startswith("urn:uuid:"))


@pytest.fixture
def record(xds):
    """A record whose médecin traitant is GP, AUTHORIZED permitted by the patient, and three
    documents of GP: masked from professionals, invisible to the patient, and another record's."""
    patient_id, nir = xds.patient(41)
    response = xds.client.post(
        "/fhir/Consent",
        json=dmp_consent(patient_id, permit(AUTHORIZED)),
        headers=auth(xds.tokens.patient(patient_id), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    masked, r1 = deposit(xds, nir, masking=("MASQUE_PS",), documents=[b"<masked/>"])
    invisible, r2 = deposit(xds, nir, masking=("INVISIBLE_PATIENT",), documents=[b"<inv/>"])
    other_id, other_nir = xds.patient(42)
    other, r3 = deposit(xds, other_nir, documents=[b"<other/>"])
    for response in (r1, r2, r3):
        assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)
    return {
        "patient": patient_id,
        "nir": nir,
        "masked": (masked, stored(xds, masked)),
        "invisible": (invisible, stored(xds, invisible)),
        "other": (other, stored(xds, other)),
    }


# -- ITI-41 --------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", [v.ASSOC_RPLC, v.ASSOC_XFRM_RPLC], ids=["RPLC", "XFRM_RPLC"])
def test_r18_iti41_replacing_a_masked_document_answers_as_for_an_unknown_one(xds, record, kind):
    """An authorized practitioner's RPLC of a MASQUE_PS document (by the entryUUID they saw
    before it was masked) was refused with its FHIR id (XDSRepositoryError "Resource
    DocumentReference/<id> is not known") where an unknown entryUUID is XDSReplaceFailed."""
    _, masked = record["masked"]
    answers = []
    for target in (entry_uuid(masked), f"urn:uuid:{uuid.uuid4()}"):
        _, response = deposit(
            xds, record["nir"], AUTHORIZED, relation=(kind, target), documents=[b"<v2/>"]
        )
        assert masked["id"] not in response.get_data(as_text=True)
        answers.append(
            [(code, text.replace(target, "<target>")) for code, text in errors(response)]
        )
    assert answers[0] == answers[1]
    assert answers[0][0][0] == "XDSReplaceFailed"
    (after,) = xds.runtime.service.find(INTERNAL, "DocumentReference", [("_id", masked["id"])])
    assert after.json()["status"] == "current"


def _refusals_in(api: Xds, patient_id: str) -> int:
    """The refusal events (security alerts, DICOM 110113) of the audit log naming the Patient."""
    result = api.runtime.service.search(INTERNAL, "AuditEvent", [("_count", "1000")])
    return sum(
        1
        for _, _, body, _ in result.matches
        if (event := json.loads(body)).get("type", {}).get("code") == "110113"
        and any(
            e.get("what", {}).get("reference") == f"Patient/{patient_id}"
            for e in event.get("entity", [])
        )
    )


@pytest.mark.parametrize("kind", [v.ASSOC_RPLC, v.ASSOC_XFRM_RPLC], ids=["RPLC", "XFRM_RPLC"])
def test_r16_iti41_replacing_a_masked_document_is_traced_as_its_refused_change(xds, record, kind):
    """R16, R18: the RPLC of a document masked from the depositor, answered as for an unknown
    document (above), is traced in the patient's record as the FHIR transaction's and
    ITI-65's are (tests/http/test_audit_trace_refusals.py); an unknown entryUUID leaves no
    refusal."""
    _, masked = record["masked"]
    counts = []
    for target in (entry_uuid(masked), f"urn:uuid:{uuid.uuid4()}"):
        before = _refusals_in(xds, record["patient"])
        _, response = deposit(
            xds, record["nir"], AUTHORIZED, relation=(kind, target), documents=[b"<v2/>"]
        )
        assert registry_status(response)[0] != v.RESPONSE_SUCCESS
        counts.append(_refusals_in(xds, record["patient"]) - before)
    assert counts == [1, 0]


@pytest.mark.parametrize("kind", [v.ASSOC_RPLC, v.ASSOC_APND], ids=["RPLC", "APND"])
def test_r18_iti41_relation_into_a_record_the_depositor_may_not_read_answers_as_unknown(
    xds, record, kind
):
    """A practitioner authorized on one record only named a document of another record:
    XDSPatientIdDoesNotMatch "belongs to another patient" told that it exists there. It is
    now answered as an unknown document, and no literal reference into that record is
    stored."""
    _, other = record["other"]
    answers = []
    for target in (entry_uuid(other), f"urn:uuid:{uuid.uuid4()}"):
        request, response = deposit(
            xds,
            record["nir"],
            AUTHORIZED,
            relation=(kind, target),
            bound=False,
            documents=[f"<{uuid.uuid4().hex}/>".encode()],
        )
        answers.append(
            (
                registry_status(response)[0],
                [(code, text.replace(target, "<target>")) for code, text in errors(response)],
            )
        )
        if registry_status(response)[0] == v.RESPONSE_SUCCESS and target == entry_uuid(other):
            relates_to = stored(xds, request)["relatesTo"]
            assert all("reference" not in r["target"] for r in relates_to), relates_to
    assert answers[0] == answers[1]


# -- ITI-65 --------------------------------------------------------------------------------


def provide_bundle(nir: str, replaces: dict) -> dict:
    bundle = fixture(SUBMISSION, nir)
    content = f"<{uuid.uuid4().hex}/>".encode()
    next(e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Binary")[
        "data"
    ] = base64.b64encode(content).decode()
    document = bundle["entry"][1]["resource"]
    document["masterIdentifier"]["value"] = f"urn:oid:1.2.250.1.999.7.{uuid.uuid4().int % 10**12}"
    attachment = document["content"][0]["attachment"]
    attachment["size"] = len(content)
    attachment["hash"] = base64.b64encode(hashlib.sha1(content).digest()).decode()  # noqa: S324
    document["relatesTo"] = [{"code": "replaces", "target": replaces}]
    return bundle


def by_unique_id(request) -> dict:
    unique_id = request.document_unique_ids["Document01"]
    return {"identifier": {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{unique_id}"}}


UNKNOWN = {"identifier": {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.999.4.1.1"}}


@pytest.mark.parametrize(
    ("who", "hidden"),
    [
        ("patient", "invisible"),  # INVISIBLE_PATIENT: hidden from the patient (R14)
        ("authorized", "masked"),  # MASQUE_PS: hidden from the practitioner (R14)
        ("authorized", "other"),  # another record, not theirs to read (R10)
        ("patient", "other"),
    ],
)
@pytest.mark.parametrize("spelling", ["uniqueId", "entryUUID", "id"])
def test_r18_iti65_replacing_a_hidden_document_answers_as_for_an_unknown_one(
    xds, record, who, hidden, spelling
):
    """ITI-65 relatesTo.replaces naming a document hidden from the depositor: the patient
    passed the registry's checks for an INVISIBLE_PATIENT document, a practitioner got a 404
    naming a MASQUE_PS document's id, and either learned that a document exists in another
    record (XDSPatientIdDoesNotMatch). Every spelling is answered as an unknown document."""
    request, document = record[hidden]
    target = {
        "uniqueId": by_unique_id(request),
        "entryUUID": {"identifier": {"system": "urn:ietf:rfc:3986", "value": entry_uuid(document)}},
        "id": {"reference": f"DocumentReference/{document['id']}"},
    }[spelling]
    token = (
        xds.tokens.patient(record["patient"])
        if who == "patient"
        else xds.tokens.practitioner(AUTHORIZED)
    )
    answers = []
    for replaces in (target, UNKNOWN):
        response = xds.client.post(
            "/fhir",
            data=json.dumps(provide_bundle(record["nir"], replaces)),
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        )
        assert document["id"] not in response.get_data(as_text=True)
        outcome = response.get_json()
        answers.append(
            (
                response.status_code,
                xds_codes(response),
                [i.get("diagnostics") for i in outcome["issue"]],
            )
        )
    assert answers[0] == answers[1]
    assert answers[0][1] == ["XDSReplaceFailed"]


# -- ITI-43: one content per uniqueId ------------------------------------------------------


def _retrieved_bytes(response) -> bytes | None:
    root, package = envelope_of(response)
    include = root.find(f".//{{{v.NS_XDSB}}}Document/{{{v.NS_XOP}}}Include")
    if include is not None:
        return package.attachments[include.get("href").removeprefix("cid:")].data
    inline = root.findtext(f".//{{{v.NS_XDSB}}}Document")
    return base64.b64decode(inline) if inline else None


def test_r18_iti43_decoys_naming_a_uniqueid_do_not_hide_or_replace_the_document(xds):
    """Attack pass: patient 2 wrote eleven DocumentReferences of their own record (under ids
    chosen to sort first, before clients lost update as create) whose `identifier` is the
    uniqueId of patient 1's document; ITI-43 looked at the first ten matches only and answered
    XDSDocumentUniqueIdError to the médecin traitant (such decoys are now refused). A decoy with
    that uniqueId as its masterIdentifier (a plain REST write, which ran none of the XDS
    checks) could be served in the document's place."""
    _, nir = xds.patient(61)
    request, response = deposit(xds, nir, documents=[b"<the-real-one/>"])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)
    unique_id = request.document_unique_ids["Document01"]
    attacker_id, _ = xds.patient(62)
    patient = xds.tokens.patient(attacker_id)
    planted_identifier = {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{unique_id}"}

    def decoy() -> dict:
        return dmp_document(
            attacker_id,
            content=b"decoy",
            content_type="text/plain",
            identifier=[planted_identifier],
            author=[{"reference": f"Patient/{attacker_id}"}],
        )

    # Since every DocumentReference is a DMP document (issue #19 deliverable 1), a decoy is
    # refused at the door: its one identifier under urn:ietf:rfc:3986 is its entryUUID, and a
    # uniqueId there is no urn:uuid.
    for _ in range(11):
        planted = xds.client.post(
            "/fhir/DocumentReference",
            json=decoy(),
            headers=auth(patient, **{"Content-Type": FHIR_JSON}),
        )
        assert planted.status_code == 422, planted.get_data(as_text=True)
        assert "DocumentReference.identifier[0].value" in planted.get_data(as_text=True)
    substitute = {**decoy(), "masterIdentifier": planted_identifier}
    del substitute["identifier"]  # the registry assigns its entryUUID
    refused = xds.client.post(
        "/fhir/DocumentReference",
        json=substitute,
        headers=auth(patient, **{"Content-Type": FHIR_JSON}),
    )
    assert refused.status_code == 409, refused.get_data(as_text=True)
    assert "DocumentReference.masterIdentifier" in refused.get_data(as_text=True)
    retrieved = xds.retrieve([unique_id], nir=nir)
    assert registry_status(retrieved) == (v.RESPONSE_SUCCESS, [])
    assert _retrieved_bytes(retrieved) == b"<the-real-one/>"


# -- A SubmissionSet whose every document is hidden is hidden too --------------------------


def _submission_sets(api: Xds, token: str, patient_id: str) -> list[dict]:
    found = api.client.get(f"/fhir/List?patient={patient_id}", headers=auth(token))
    assert found.status_code == 200, found.get_data(as_text=True)
    return [e["resource"] for e in found.get_json().get("entry", [])]


def _find_submission_sets(api: Xds, nir: str, idnat: str) -> list[str]:
    query = adhoc(
        FIND_SUBMISSION_SETS,
        [
            ("$XDSSubmissionSetPatientId", f"'{patient_cx(nir)}'"),
            ("$XDSSubmissionSetStatus", APPROVED),
        ],
    )
    response = api.soap("/xds/registry", v.ACTION_ITI18, query, api.security(idnat, nir))
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), response.get_data()[:2000]
    root, _ = envelope_of(response)
    return [p.get("id") for p in root.iter(f"{RIM}RegistryPackage")]


def test_r14_submission_set_of_an_invisible_patient_document_is_not_shown_to_the_patient(xds):
    """Attack pass: a deposit of one INVISIBLE_PATIENT document left its SubmissionSet in
    the patient's `List?patient=` (empty entry, but its submission time, author and content
    type): the patient learned that something was deposited, when and by whom, before the
    medical announcement (R14, R18). The SubmissionSet now carries the labels all its
    documents carry."""
    patient_id, nir = xds.patient(71)
    request, response = deposit(xds, nir, masking=("INVISIBLE_PATIENT",), documents=[b"<inv/>"])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)
    assert _submission_sets(xds, xds.tokens.patient(patient_id), patient_id) == []
    (seen,) = _submission_sets(xds, xds.tokens.practitioner(GP), patient_id)
    assert len(seen["entry"]) == 1
    # The control: an unlabelled deposit's SubmissionSet is the patient's to see.
    _, response = deposit(xds, nir, documents=[b"<visible/>"])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, []), errors(response)
    (shown,) = _submission_sets(xds, xds.tokens.patient(patient_id), patient_id)
    assert len(shown["entry"]) == 1


def test_r14_submission_set_of_a_masked_document_is_not_found_by_another_professional(xds, record):
    """The same for MASQUE_PS: the authorized practitioner, who may not see the masked
    document, neither finds its SubmissionSet (FHIR ITI-66, XDS FindSubmissionSets) nor
    learns of the deposit; the médecin traitant does."""
    patient_id, nir = record["patient"], record["nir"]
    authorized = xds.tokens.practitioner(AUTHORIZED)
    sets = _submission_sets(xds, authorized, patient_id)
    masked_doc = record["masked"][1]["id"]
    assert all(masked_doc not in json.dumps(s) for s in sets)
    seen_by_gp = _submission_sets(xds, xds.tokens.practitioner(GP), patient_id)
    assert len(seen_by_gp) == len(sets) + 1
    assert len(_find_submission_sets(xds, nir, AUTHORIZED)) == len(sets)
    assert len(_find_submission_sets(xds, nir, GP)) == len(seen_by_gp)
