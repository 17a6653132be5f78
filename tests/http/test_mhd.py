"""IHE MHD over HTTP: ITI-65 (Provide Document Bundle), ITI-66 (List), ITI-67 (DocumentReference
search), ITI-68 (document retrieve), with the ANS PDSm4DMP examples.

Verdicts on tests/fixtures/external/pdsm4dmp/ through ITI-65 (POST /fhir):
- Bundle-example-td2-iti65-lot-soumission.json, as published: rejected, 422, two issues
  XDSUnknownPatientId (List.subject and DocumentReference.subject): its patient
  `Patient?identifier=urn:oid:1.2.250.1.213.1.4.8|123456789012345` cannot exist here, the NIR
  key of that INS is wrong (expected 11) so no Patient with it can be written. With the INS of
  a patient of the server substituted: accepted (201 per entry); the registry assigns the
  entryUUID the example lacks, and its hash and size match its Binary.
- Bundle-example-td2-1-remplacement.json, with the INS substituted and doc-x-id stored (current)
  first: accepted; the PATCH entry (status -> superseded of doc-x-id) is folded into the
  registry's own supersede of the document relatesTo.replaces names; doc-x-id is superseded.
  As published: rejected, 422, XDSUnknownPatientId (same patient) and XDSReplaceFailed
  (doc-x-id is not known).
- Both Bundles are adapted to the DMP first: their SubmissionSet carries no uniqueId, which
  ITI-41 and the DMP SubmissionSet profile require (as published, XDSRepositoryMetadataError
  at `List.identifier`, see tests/http/test_document_model.py); `fixture` adds one.
- The other files of the folder are not transaction Bundles (a FHIR document, a searchset, two
  DocumentReferences); their profile verdicts are in tests/unit/test_pdsm4dmp_fixtures.py.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from pathlib import Path
from urllib.parse import urlencode

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_IDNAT_PS
from ihe_xds.errors import XDS_ERROR_SYSTEM
from tests.dmp_codes import with_admitted_class
from tests.http.conftest import FHIR_JSON, INS_SYSTEM, a_patient, auth, valid_nir
from tests.support.documents import with_submission_set_unique_id

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "pdsm4dmp"
FIXTURE_INS = "123456789012345"
AUTHOR = "899700218896"  # the IdNat of the examples' author
SUBMISSION = "Bundle-example-td2-iti65-lot-soumission.json"
REPLACEMENT = "Bundle-example-td2-1-remplacement.json"
CDA = b'<?xml version="1.0" encoding="UTF-8"?><ClinicalDocument xmlns="urn:hl7-org:v3"/>'
FHIR_XML = "application/fhir+xml"


def fixture(name: str, nir: str | None = None, *, as_published: bool = False) -> dict:
    """A PDSm4DMP example, for patient `nir`; unless `as_published`, adapted to the DMP: its
    documents' class is the one ASS_X16 gives their type (`tests.dmp_codes.with_admitted_class`)
    and a SubmissionSet gets the uniqueId the examples lack (`tests.support.documents`)."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    resource = json.loads(text.replace(FIXTURE_INS, nir) if nir else text)
    if as_published:
        return resource
    return with_submission_set_unique_id(with_admitted_class(resource))


class Mhd:
    def __init__(self, client, tokens) -> None:
        self.client, self.tokens = client, tokens
        self.ps = tokens.practitioner(AUTHOR)

    def patient(self, n: int) -> tuple[str, str]:
        """A patient whose médecin traitant is AUTHOR (so AUTHOR may read the record)."""
        resource = a_patient(
            n, generalPractitioner=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHOR}}]
        )
        response = self.client.post(
            "/fhir/Patient",
            json=resource,
            headers=auth(self.tokens.system(), **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()["id"], valid_nir(n)

    def provide(self, bundle: dict, token: str | None = None):
        return self.client.post(
            "/fhir",
            data=json.dumps(bundle),
            headers=auth(token or self.ps, **{"Content-Type": FHIR_JSON}),
        )

    def get(self, path: str, token: str | None = None, **headers):
        return self.client.get(path, headers=auth(token or self.ps, **headers))

    def search(self, resource_type: str, params: dict | list, token: str | None = None):
        response = self.client.get(
            f"/fhir/{resource_type}", query_string=params, headers=auth(token or self.ps)
        )
        assert response.status_code == 200, response.get_data(as_text=True)
        return response.get_json()

    def ids(self, resource_type: str, params: dict | list) -> set[str]:
        return {e["resource"]["id"] for e in self.search(resource_type, params).get("entry", [])}


@pytest.fixture
def mhd(client, tokens):
    return Mhd(client, tokens)


def xds_codes(response) -> list[str]:
    outcome = response.get_json()
    assert outcome["resourceType"] == "OperationOutcome"
    return [
        c["code"]
        for issue in outcome["issue"]
        for c in issue.get("details", {}).get("coding", [])
        if c.get("system") == XDS_ERROR_SYSTEM
    ]


def expressions(response) -> list[str]:
    return [e for issue in response.get_json()["issue"] for e in issue.get("expression", [])]


def locations(response) -> dict[str, str]:
    """resource type -> id, from a transaction-response."""
    out = {}
    for entry in response.get_json()["entry"]:
        kind, resource_id = entry["response"]["location"].split("/")[:2]
        out.setdefault(kind, resource_id)
    return out


def deposit(mhd: Mhd, n: int = 1, content: bytes = CDA, **document_changes) -> tuple[str, dict]:
    """Deposit the PDSm4DMP submission for patient n (with `content`); (patient id, locations)."""
    patient_id, nir = mhd.patient(n)
    bundle = fixture(SUBMISSION, nir)
    set_content(bundle, content)
    bundle["entry"][1]["resource"].update(document_changes)
    bundle["entry"][1]["resource"]["masterIdentifier"]["value"] += f".{n}{len(content)}"
    response = mhd.provide(bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    return patient_id, locations(response)


def set_content(bundle: dict, content: bytes) -> None:
    binary = next(
        e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Binary"
    )
    binary["data"] = base64.b64encode(content).decode()
    document = next(
        e["resource"]
        for e in bundle["entry"]
        if e["resource"]["resourceType"] == "DocumentReference"
    )
    attachment = document["content"][0]["attachment"]
    attachment["size"] = len(content)
    attachment["hash"] = base64.b64encode(hashlib.sha1(content).digest()).decode()


# --------------------------------------------------------------------------- ITI-65


def test_iti65_pdsm4dmp_submission_as_published_is_xdsunknownpatientid(mhd):
    response = mhd.provide(fixture(SUBMISSION, as_published=True))
    assert response.status_code == 422
    assert xds_codes(response) == ["XDSUnknownPatientId", "XDSUnknownPatientId"]
    assert expressions(response) == [
        "Bundle.entry[0].resource.subject",
        "Bundle.entry[1].resource.subject",
    ]


def test_iti65_pdsm4dmp_submission_with_a_known_ins_is_stored_with_an_assigned_entryuuid(mhd):
    patient_id, nir = mhd.patient(1)
    response = mhd.provide(fixture(SUBMISSION, nir))
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["type"] == "transaction-response"
    assert [e["response"]["status"] for e in body["entry"]] == ["201 Created"] * 3
    found = locations(response)
    document = mhd.get(f"/fhir/DocumentReference/{found['DocumentReference']}").get_json()
    assert document["subject"] == {"reference": f"Patient/{patient_id}"}
    assert document["content"][0]["attachment"]["url"] == f"Binary/{found['Binary']}"
    (entry_uuid,) = [
        i["value"] for i in document["identifier"] if i["system"] == "urn:ietf:rfc:3986"
    ]
    assert entry_uuid.startswith("urn:uuid:")
    submission_set = mhd.get(f"/fhir/List/{found['List']}").get_json()
    assert submission_set["entry"] == [
        {"item": {"reference": f"DocumentReference/{found['DocumentReference']}"}}
    ]
    assert submission_set["subject"] == {"reference": f"Patient/{patient_id}"}


def with_wrong_hash(bundle: dict) -> None:
    """The submission's DocumentReference declares a hash its Binary does not have."""
    attachment = bundle["entry"][1]["resource"]["content"][0]["attachment"]
    attachment["hash"] = base64.b64encode(b"\0" * 20).decode()


def test_iti65_wrong_hash_is_xdsrepositorymetadataerror_and_nothing_is_stored(mhd):
    patient_id, nir = mhd.patient(2)
    bundle = fixture(SUBMISSION, nir)
    with_wrong_hash(bundle)
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert xds_codes(response) == ["XDSRepositoryMetadataError"]
    assert expressions(response) == ["Bundle.entry[1].resource.content[0].attachment.hash"]
    assert mhd.ids("DocumentReference", {"patient": patient_id}) == set()
    assert mhd.ids("List", {"patient": patient_id}) == set()


def older_canonicals(bundle: dict) -> dict:
    """The same Bundle with IHE's canonicals under http:// (as the IHE MHD examples and the
    NIST MHD collections of before the https:// move spell them)."""
    return json.loads(
        json.dumps(bundle).replace("https://profiles.ihe.net/", "http://profiles.ihe.net/")
    )


def test_iti65_checks_run_whatever_spelling_of_the_mhd_canonicals(mhd):
    """Issue #19, point 8: a Provide Document Bundle declaring the older http:// canonicals,
    with a wrong hash, was stored as a plain transaction; both spellings are one profile."""
    patient_id, nir = mhd.patient(19)
    bundle = older_canonicals(fixture(SUBMISSION, nir))
    assert "http://profiles.ihe.net/" in json.dumps(bundle)
    with_wrong_hash(bundle)
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert xds_codes(response) == ["XDSRepositoryMetadataError"]
    assert mhd.ids("DocumentReference", {"patient": patient_id}) == set()
    accepted = mhd.provide(older_canonicals(fixture(SUBMISSION, nir)))
    assert accepted.status_code == 200, accepted.get_data(as_text=True)
    submission_set = mhd.get(f"/fhir/List/{locations(accepted)['List']}").get_json()
    assert "http://profiles.ihe.net/" not in json.dumps(submission_set)


def test_iti65_wrong_size_is_xdsrepositorymetadataerror(mhd):
    _, nir = mhd.patient(3)
    bundle = fixture(SUBMISSION, nir)
    bundle["entry"][1]["resource"]["content"][0]["attachment"]["size"] = 81
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert xds_codes(response) == ["XDSRepositoryMetadataError"]
    assert expressions(response) == ["Bundle.entry[1].resource.content[0].attachment.size"]


def test_iti65_documents_of_two_patients_is_xdspatientiddoesnotmatch(mhd):
    _, nir = mhd.patient(4)
    other_id, _ = mhd.patient(5)
    bundle = fixture(SUBMISSION, nir)
    bundle["entry"][1]["resource"]["subject"] = {"reference": f"Patient/{other_id}"}
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert xds_codes(response) == ["XDSPatientIdDoesNotMatch"]
    assert expressions(response) == ["Bundle.entry[1].resource.subject"]


def test_iti65_needs_exactly_one_submissionset(mhd):
    _, nir = mhd.patient(6)
    bundle = fixture(SUBMISSION, nir)
    second = copy.deepcopy(bundle["entry"][0])
    second["fullUrl"] = "urn:uuid:aaaaaaaa-0000-0000-0000-000000000009"
    bundle["entry"].append(second)
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert xds_codes(response) == ["XDSRepositoryMetadataError"]
    assert "exactly one SubmissionSet" in response.get_json()["issue"][0]["diagnostics"]


def test_iti65_document_without_its_binary_is_xdsmissingdocument(mhd):
    _, nir = mhd.patient(7)
    bundle = fixture(SUBMISSION, nir)
    del bundle["entry"][2]
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert xds_codes(response) == ["XDSMissingDocument"]
    assert expressions(response) == ["Bundle.entry[1].resource.content[0].attachment.url"]


def test_iti65_binary_without_its_document_is_xdsmissingdocumentmetadata(mhd):
    _, nir = mhd.patient(8)
    bundle = fixture(SUBMISSION, nir)
    extra = copy.deepcopy(bundle["entry"][2])
    extra["fullUrl"] = "urn:uuid:aaaaaaaa-0000-0000-0000-000000000008"
    bundle["entry"].append(extra)
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert xds_codes(response) == ["XDSMissingDocumentMetadata"]
    assert expressions(response) == ["Bundle.entry[3].fullUrl"]


def test_iti65_dmp_profile_issue_points_at_the_element_with_xds_code(mhd):
    _, nir = mhd.patient(9)
    bundle = fixture(SUBMISSION, nir)
    del bundle["entry"][1]["resource"]["content"][0]["attachment"]["language"]
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert "XDSRepositoryMetadataError" in xds_codes(response)
    assert "DocumentReference.content[0].attachment.language" in expressions(response)
    assert "Bundle.entry[1]" in expressions(response)


def test_iti65_same_uniqueid_with_other_content_is_xdsnonidenticalhash(mhd):
    patient_id, nir = mhd.patient(10)
    assert mhd.provide(fixture(SUBMISSION, nir)).status_code == 200
    bundle = fixture(SUBMISSION, nir)
    set_content(bundle, b"<ClinicalDocument>other</ClinicalDocument>")
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert xds_codes(response) == ["XDSNonIdenticalHash"]
    assert len(mhd.ids("DocumentReference", {"patient": patient_id})) == 1


def test_iti65_opposed_record_is_xdsunknownpatientid(mhd, client, tokens):
    patient_id, nir = mhd.patient(11)
    patient = client.get(f"/fhir/Patient/{patient_id}", headers=auth(tokens.system())).get_json()
    patient["extension"] = [
        {
            "url": "https://dmp-server.fr/fhir/StructureDefinition/record-status",
            "valueCode": "opposed",
        }
    ]
    updated = client.put(
        f"/fhir/Patient/{patient_id}",
        json=patient,
        headers=auth(tokens.system(), **{"Content-Type": FHIR_JSON}),
    )
    assert updated.status_code == 200, updated.get_data(as_text=True)
    response = mhd.provide(fixture(SUBMISSION, nir))
    assert response.status_code in (403, 404, 422)
    assert "XDSUnknownPatientId" in xds_codes(response)


def test_iti65_payer_cannot_deposit_localpolicyrestrictionerror(mhd, tokens):
    _, nir = mhd.patient(12)
    response = mhd.provide(
        fixture(SUBMISSION, nir),
        token=tokens.system("mutuelle", organization_type="mutual_insurer"),
    )
    assert response.status_code == 403
    assert xds_codes(response) == ["LocalPolicyRestrictionError"]


def _store_doc_x(mhd: Mhd, patient_id: str, nir: str) -> None:
    """doc-x-id of the PDSm4DMP examples, current, as the replaced document."""
    document = fixture("DocumentReference-doc-x-id.json", nir)
    document["status"] = "current"
    document["subject"] = {"reference": f"Patient/{patient_id}"}
    document["identifier"] = [
        {"system": "urn:ietf:rfc:3986", "value": "urn:uuid:6f1c9a8e-3b0d-4b7e-9a51-4f0c2d7e8a10"}
    ]
    # Seeded by the server itself: clients create no ids (CapabilityStatement updateCreate
    # false), and the examples name this one.
    service = mhd.client.application.extensions["fhir"].service
    service.update(INTERNAL, "DocumentReference", "doc-x-id", {**document, "id": "doc-x-id"})


def test_iti65_pdsm4dmp_replacement_supersedes_the_replaced_document(mhd):
    patient_id, nir = mhd.patient(13)
    _store_doc_x(mhd, patient_id, nir)
    response = mhd.provide(fixture(REPLACEMENT, nir))
    assert response.status_code == 200, response.get_data(as_text=True)
    statuses = [e["response"]["status"] for e in response.get_json()["entry"]]
    assert statuses == [
        "201 Created",
        "201 Created",
        "200 OK",
        "201 Created",
    ]  # the PATCH entry: 200
    assert response.get_json()["entry"][2]["response"]["location"].startswith(
        "DocumentReference/doc-x-id/_history/2"
    )
    old = mhd.get("/fhir/DocumentReference/doc-x-id").get_json()
    assert old["status"] == "superseded"
    new_id = locations(response)["DocumentReference"]
    assert mhd.ids("DocumentReference", {"patient": patient_id, "status": "current"}) == {new_id}
    assert mhd.ids(
        "DocumentReference", {"patient": patient_id, "relatesto": "DocumentReference/doc-x-id"}
    ) == {new_id}


@pytest.mark.parametrize(
    "target",
    [
        "DocumentReference/doc-x-id/_history/1",
        "http://127.0.0.1:8080/fhir/DocumentReference/doc-x-id",
        "HTTP://127.0.0.1:8080/fhir/DocumentReference/doc-x-id/_history/1",
    ],
)
def test_iti65_replacement_target_in_any_form_of_this_servers_reference(mhd, target):
    """Issue #19, point 7 and deliverable 5: a replace whose target is the version-specific
    location the server itself answered, or this server's absolute URL, names the document
    as `DocumentReference/doc-x-id` does (FHIR R4 references.html, http.html#trules)."""
    patient_id, nir = mhd.patient(17)
    _store_doc_x(mhd, patient_id, nir)
    bundle = fixture(REPLACEMENT, nir)
    bundle["entry"][1]["resource"]["relatesTo"][0]["target"]["reference"] = target
    response = mhd.provide(bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert mhd.get("/fhir/DocumentReference/doc-x-id").get_json()["status"] == "superseded"


def test_iti65_replacement_target_on_another_server_is_xdsreplacefailed(mhd):
    """An absolute reference to another server names no document of this registry, even
    when its last segments are the id of one (architecture invariant 7)."""
    patient_id, nir = mhd.patient(18)
    _store_doc_x(mhd, patient_id, nir)
    bundle = fixture(REPLACEMENT, nir)
    bundle["entry"][1]["resource"]["relatesTo"][0]["target"]["reference"] = (
        "https://elsewhere.example/fhir/DocumentReference/doc-x-id"
    )
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert "XDSReplaceFailed" in xds_codes(response)
    assert mhd.get("/fhir/DocumentReference/doc-x-id").get_json()["status"] == "current"


def test_iti65_pdsm4dmp_replacement_as_published_is_rejected_with_reasons(mhd):
    response = mhd.provide(fixture(REPLACEMENT))
    assert response.status_code == 422
    assert list(zip(xds_codes(response), expressions(response), strict=True)) == [
        ("XDSUnknownPatientId", "Bundle.entry[0].resource.subject"),
        ("XDSUnknownPatientId", "Bundle.entry[1].resource.subject"),
        ("XDSReplaceFailed", "Bundle.entry[1].resource.relatesTo[0].target"),
        # the PATCH of doc-x-id cannot be folded into a replacement that failed
        ("XDSRepositoryMetadataError", "Bundle.entry[2].request"),
    ]


def test_iti65_replacement_of_a_superseded_document_is_xdsreplacefailed(mhd):
    patient_id, nir = mhd.patient(14)
    _store_doc_x(mhd, patient_id, nir)
    assert mhd.provide(fixture(REPLACEMENT, nir)).status_code == 200
    again = fixture(REPLACEMENT, nir)
    again["entry"][1]["resource"]["masterIdentifier"]["value"] += ".2"
    response = mhd.provide(again)
    assert response.status_code == 422
    assert "XDSReplaceFailed" in xds_codes(response)
    assert "Bundle.entry[1].resource.relatesTo[0].target" in expressions(response)


def test_iti65_replacement_of_another_patients_document_is_xdspatientiddoesnotmatch(mhd):
    other_id, other_nir = mhd.patient(15)
    _store_doc_x(mhd, other_id, other_nir)
    _, nir = mhd.patient(16)
    bundle = fixture(REPLACEMENT, nir)
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert "XDSPatientIdDoesNotMatch" in xds_codes(response)
    assert mhd.get("/fhir/DocumentReference/doc-x-id").get_json()["status"] == "current"


def test_iti65_other_patch_is_refused(mhd):
    patient_id, nir = mhd.patient(17)
    _store_doc_x(mhd, patient_id, nir)
    bundle = fixture(REPLACEMENT, nir)
    bundle["entry"][2]["resource"]["parameter"][0]["part"][2]["valueCode"] = "entered-in-error"
    response = mhd.provide(bundle)
    assert response.status_code == 422
    assert xds_codes(response) == ["XDSRepositoryMetadataError"]
    assert expressions(response) == ["Bundle.entry[2].request"]


# --------------------------------------------------------------------------- ITI-66


def test_iti66_list_search_parameters(mhd):
    patient_id, nir = mhd.patient(20)
    bundle = fixture(SUBMISSION, nir)
    bundle["entry"][0]["resource"]["source"] = {
        "reference": f"Patient/{patient_id}"
    }  # literal, searchable
    response = mhd.provide(bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    found = locations(response)
    list_id = found["List"]
    submission_set = mhd.get(f"/fhir/List/{list_id}").get_json()
    (entry_uuid,) = [
        i["value"]
        for i in submission_set["identifier"]
        if i["system"] == "urn:ietf:rfc:3986" and i["value"].startswith("urn:uuid:")
    ]
    base = {"patient": patient_id}
    cases = [
        {"code": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|submissionset"},
        {"patient.identifier": f"{INS_SYSTEM}|{valid_nir(20)}"},
        {"identifier": f"urn:ietf:rfc:3986|{entry_uuid}"},
        {"sourceId": "urn:ietf:rfc:3986|urn:oid:1.2.3.4.5.6.7.8"},
        {
            "designationType": "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument|11"
        },
        {"date": "ge2026-06-12T00:00:00+02:00"},
        {"status": "current"},
        {"source": f"Patient/{patient_id}"},
    ]
    for criteria in cases:
        assert mhd.ids("List", {**base, **criteria}) == {list_id}, criteria
    misses = [
        {"code": "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes|folder"},
        {"sourceId": "urn:ietf:rfc:3986|urn:oid:9.9.9"},
        {
            "designationType": "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument|10"
        },
        {"date": "lt2026-01-01"},
        {"status": "retired"},
        {"source": "Patient/someone-else"},
    ]
    for criteria in misses:
        assert mhd.ids("List", {**base, **criteria}) == set(), criteria


# --------------------------------------------------------------------------- ITI-67

MHD_PARAMS_HIT = [
    ("author.given", "Marie"),
    ("author.family", "Durand"),
    (
        "category",
        "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument|10",
    ),  # the class ASS_X16 gives the Consult note 11488-4 (`fixture`)
    ("creation", "2026-06-12"),
    ("date", "ge2026-06-12"),
    ("event", "http://snomed.info/sct|1234"),
    ("facility", "http://snomed.info/sct|22232009"),
    (
        "format",
        "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode|urn:ihe:iti:xds:2017:mimeTypeSufficient",
    ),
    ("period", "ge2026-06-12"),
    ("related:identifier", "urn:oid:1.2.3|ORDER-1"),
    ("security-label", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|N"),
    ("setting", "http://snomed.info/sct|394802001"),
    ("status", "current"),
    ("type", "http://loinc.org|11488-4"),
]
MHD_PARAMS_MISS = [
    ("author.given", "Paul"),
    ("author.family", "Martin"),
    (
        "category",
        "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument|11",
    ),
    ("creation", "2025-01-01"),
    ("date", "lt2026-01-01"),
    ("event", "http://snomed.info/sct|9999"),
    ("facility", "http://snomed.info/sct|1"),
    (
        "format",
        "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode|urn:ihe:pcc:xphr:2007",
    ),
    ("period", "lt2026-01-01"),
    ("related:identifier", "urn:oid:1.2.3|ORDER-2"),
    ("security-label", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"),
    ("setting", "http://snomed.info/sct|1"),
    ("status", "superseded"),
    ("type", "http://loinc.org|60591-5"),
]


def _searchable_deposit(mhd: Mhd, n: int) -> tuple[str, str, dict]:
    """A deposit whose contained author has a name, with an event code and a related id."""
    patient_id, nir = mhd.patient(n)
    bundle = fixture(SUBMISSION, nir)
    document = bundle["entry"][1]["resource"]
    document["contained"][1]["name"] = [{"family": "Durand", "given": ["Marie"]}]
    document["context"]["event"] = [
        {"coding": [{"system": "http://snomed.info/sct", "code": "1234"}]}
    ]
    document["context"]["related"] = [
        {"identifier": {"system": "urn:oid:1.2.3", "value": "ORDER-1"}}
    ]
    response = mhd.provide(bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    found = locations(response)
    document = mhd.get(f"/fhir/DocumentReference/{found['DocumentReference']}").get_json()
    return patient_id, nir, document


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_iti67_every_mhd_responder_parameter(mhd, method):
    patient_id, nir, document = _searchable_deposit(mhd, 30)
    doc_id = document["id"]
    entry_uuid = next(
        i["value"] for i in document["identifier"] if i["system"] == "urn:ietf:rfc:3986"
    )

    def ids(criteria: list[tuple[str, str]]) -> set[str]:
        if method == "GET":
            response = mhd.client.get(
                "/fhir/DocumentReference", query_string=criteria, headers=auth(mhd.ps)
            )
        else:
            response = mhd.client.post(
                "/fhir/DocumentReference/_search",
                data=urlencode(criteria),
                headers=auth(mhd.ps, **{"Content-Type": "application/x-www-form-urlencoded"}),
            )
        assert response.status_code == 200, response.get_data(as_text=True)
        return {e["resource"]["id"] for e in response.get_json().get("entry", [])}

    patients = [("patient", patient_id), ("patient.identifier", f"{INS_SYSTEM}|{nir}")]
    for patient in patients:
        assert ids([patient]) == {doc_id}
        for name, value in MHD_PARAMS_HIT:
            assert ids([patient, (name, value)]) == {doc_id}, (name, value)
        for name, value in MHD_PARAMS_MISS:
            assert ids([patient, (name, value)]) == set(), (name, value)
    assert ids([patients[0], ("identifier", f"urn:ietf:rfc:3986|{entry_uuid}")]) == {doc_id}
    assert ids(
        [patients[0], ("identifier", "urn:ietf:rfc:3986|urn:oid:1.2.250.1.213.1.4.8.99999.2")]
    ) == {doc_id}
    assert ids([patients[0], ("identifier", "urn:ietf:rfc:3986|urn:oid:1.2.3.4")]) == set()


def test_iti67_xml_searchset(mhd):
    patient_id, _, document = _searchable_deposit(mhd, 31)
    response = mhd.client.get(
        "/fhir/DocumentReference",
        query_string={"patient": patient_id, "author.family": "durand"},
        headers=auth(mhd.ps, Accept=FHIR_XML),
    )
    assert response.status_code == 200
    assert response.mimetype == FHIR_XML
    text = response.get_data(as_text=True)
    assert '<type value="searchset"/>' in text and f'<id value="{document["id"]}"/>' in text


# --------------------------------------------------------------------------- ITI-68


def test_iti68_returns_the_bytes_with_content_type_and_etag(mhd):
    content = b"<ClinicalDocument>bytes of the report \xc3\xa9</ClinicalDocument>"
    _, found = deposit(mhd, 40, content)
    document = mhd.get(f"/fhir/DocumentReference/{found['DocumentReference']}").get_json()
    url = document["content"][0]["attachment"]["url"]
    response = mhd.get(f"/fhir/{url}", Accept="*/*")
    assert response.status_code == 200
    assert response.get_data() == content
    assert response.mimetype == "application/xml"
    assert response.headers["ETag"] == 'W/"1"'


def test_iti68_is_gated_like_its_document(mhd, tokens):
    patient_id, found = deposit(mhd, 41)
    other_patient, _ = mhd.patient(42)
    url = f"/fhir/Binary/{found['Binary']}"
    assert mhd.get(url, token=tokens.patient(patient_id), Accept="*/*").status_code == 200
    assert mhd.get(url, token=tokens.patient(other_patient), Accept="*/*").status_code == 404
    assert mhd.client.get(url).status_code == 401
