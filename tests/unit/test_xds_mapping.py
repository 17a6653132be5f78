"""XDS ebRIM <-> FHIR (MHD) mapping: forward to List/DocumentReference/Binary, and back."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.documentreference import DocumentReference

from fhir_server.resources.document_state import IS_ARCHIVED_URL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY, SYSTEM_MHD_LIST_TYPES
from ihe_xds import vocabulary as v
from ihe_xds.codes import scheme_for_system, system_for_scheme
from ihe_xds.ebrim import DocumentEntry, parse_submission
from ihe_xds.hl7v2 import xds_time_to_fhir
from ihe_xds.mapping import (
    AVAILABILITY_SYSTEM,
    EXT_DESIGNATION_TYPE,
    EXT_SOURCE_ID,
    associations_from_fhir,
    availability_of,
    document_reference_to_ebrim,
    entry_uuid_of,
    fhir_availability,
    list_to_ebrim,
    submission_to_fhir,
)
from ihe_xds.soap import read_envelope
from ihe_xds.xml import parse_xml
from tests.xds_builders import REPOSITORY_UNIQUE_ID, build_iti41

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "external"


def _submission(**kwargs):
    request = build_iti41(mtom=False, **kwargs)
    return request, parse_submission(read_envelope(request.envelope).body)


def _map(submission, resolve_patient=lambda oid, value: "patient-1", **kwargs):
    return submission_to_fhir(
        submission,
        submission.documents,
        repository_unique_id=REPOSITORY_UNIQUE_ID,
        resolve_patient=resolve_patient,
        **kwargs,
    )


def test_mapping_produces_a_valid_r4_transaction_bundle_with_urn_uuid_fullurls():
    _, submission = _submission(documents=[b"<a/>", b"<b/>"])
    result = _map(submission)
    assert result.errors == []
    Bundle.model_validate(result.bundle)  # raises when not valid FHIR R4(B)
    kinds = [e["resource"]["resourceType"] for e in result.bundle["entry"]]
    assert kinds == ["Binary", "Binary", "DocumentReference", "DocumentReference", "List"]
    for entry in result.bundle["entry"]:
        assert entry["fullUrl"] == f"urn:uuid:{entry['resource']['id']}"
        assert (
            entry["request"]["url"]
            == f"{entry['resource']['resourceType']}/{entry['resource']['id']}"
        )


def test_document_reference_fields_follow_the_mhd_table():
    request, submission = _submission(masking=("MASQUE_PS",))
    result = _map(submission)
    (doc,) = result.document_references
    (binary,) = result.binaries
    content = request.documents["Document01"]
    assert doc["masterIdentifier"] == {
        "system": "urn:ietf:rfc:3986",
        "value": f"urn:oid:{request.document_unique_ids['Document01']}",
    }
    assert doc["identifier"][0]["value"] == result.entry_uuids["Document01"]
    assert doc["identifier"][0]["value"].startswith("urn:uuid:")
    assert doc["status"] == "current"
    assert doc["subject"] == {"reference": "Patient/patient-1"}
    # TRE_A03 in its one spelling (profiles/terminology/system-aliases.json), the one the
    # habilitation matrix (R13) reads.
    assert doc["category"][0]["coding"][0]["system"] == "urn:oid:1.2.250.1.213.1.1.4.1"
    assert doc["type"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "11490-0",
        "display": "Lettre de sortie",
    }
    attachment = doc["content"][0]["attachment"]
    assert attachment["url"] == f"Binary/{binary['id']}"
    assert attachment["size"] == len(content)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(content).digest()).decode()
    assert attachment["contentType"] == "text/xml" and attachment["language"] == "fr-FR"
    assert (
        attachment["creation"] == "2024-01-15T10:30:00Z" and doc["date"] == "2024-01-15T10:30:00Z"
    )
    assert doc["context"]["period"] == {
        "start": "2024-01-15T09:00:00Z",
        "end": "2024-01-15T10:00:00Z",
    }
    assert doc["context"]["sourcePatientInfo"] == {"reference": "#source-patient"}
    assert (
        doc["content"][0]["format"]["system"]
        == "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
    )
    assert base64.b64decode(binary["data"]) == content
    assert binary["securityContext"] == {"reference": f"DocumentReference/{doc['id']}"}
    DocumentReference.model_validate(doc)


def test_r14_masking_codes_in_security_label_and_meta_security():
    _, submission = _submission(masking=("MASQUE_PS", "INVISIBLE_PATIENT"))
    (doc,) = _map(submission).document_references
    labels = [c["coding"][0] for c in doc["securityLabel"]]
    assert {
        "system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
        "code": "N",
        "display": "Normal",
    } in labels
    assert [(c["system"], c["code"]) for c in doc["meta"]["security"]] == [
        (SYSTEM_DMP_CONFIDENTIALITY, "MASQUE_PS"),
        (SYSTEM_DMP_CONFIDENTIALITY, "INVISIBLE_PATIENT"),
    ]


def test_author_as_contained_practitioner_role_with_idnat_ps():
    _, submission = _submission()
    (doc,) = _map(submission).document_references
    contained = {r["id"]: r for r in doc["contained"]}
    assert doc["author"] == [{"reference": "#a0-role"}]
    role = contained["a0-role"]
    practitioner = contained[role["practitioner"]["reference"][1:]]
    assert practitioner["identifier"][0]["system"] == "urn:oid:1.2.250.1.71.4.2.1"
    assert practitioner["identifier"][0]["value"] == "810001234567"
    organization = contained[role["organization"]["reference"][1:]]
    assert organization["identifier"][0] == {
        "system": "urn:oid:1.2.250.1.71.4.2.2",
        "value": "11234567890",
        "type": {
            "coding": [
                {
                    "system": "https://hl7.fr/ig/fhir/core/CodeSystem/fr-core-cs-v2-0203",
                    "code": "IDNST",
                }
            ]
        },
    }
    assert doc["authenticator"] == {"reference": "#authenticator"}


def test_list_is_an_mhd_submissionset():
    request, submission = _submission()
    result = _map(submission)
    resource = result.list_resource
    assert resource["code"]["coding"] == [
        {"system": SYSTEM_MHD_LIST_TYPES, "code": "submissionset"}
    ]
    assert resource["mode"] == "working" and resource["status"] == "current"
    assert {e["url"] for e in resource["extension"]} == {EXT_SOURCE_ID, EXT_DESIGNATION_TYPE}
    values = {i["value"] for i in resource["identifier"]}
    assert values == {
        f"urn:oid:{request.submission_set_unique_id}",
        result.entry_uuids["SubmissionSet01"],
    }
    assert resource["entry"] == [
        {"item": {"reference": f"DocumentReference/{result.document_references[0]['id']}"}}
    ]
    assert resource["date"] == "2024-01-15T11:00:00Z"


def test_unknown_patient_is_xdsunknownpatientid_and_no_bundle():
    _, submission = _submission()
    calls = []

    def resolve(oid, value):
        calls.append((oid, value))
        return None

    result = _map(submission, resolve_patient=resolve)
    assert result.bundle is None
    assert {(e.error_code, e.location) for e in result.errors} == {
        ("XDSUnknownPatientId", "SubmissionSet SubmissionSet01 patientId")
    }
    assert calls == [("1.2.250.1.213.1.4.8", submission.submission_set.patient_id.split("^")[0])]


def test_entry_naming_another_repository_is_refused():
    _, submission = _submission()
    submission.entries[0].repository_unique_id = "9.9.9"
    result = _map(submission)
    assert [(e.error_code, e.location) for e in result.errors] == [
        ("XDSRepositoryMetadataError", "DocumentEntry Document01 repositoryUniqueId")
    ]


def test_rplc_becomes_relates_to_replaces_and_target_listed_as_replaced():
    target = "urn:uuid:0b2a6c1e-8b0f-4d5e-9f3a-1c2d3e4f5a6b"
    _, submission = _submission(replaces=target)
    result = _map(submission, resolve_document=lambda uuid: "old-doc" if uuid == target else None)
    (doc,) = result.document_references
    assert doc["relatesTo"] == [
        {
            "code": "replaces",
            "target": {
                "reference": "DocumentReference/old-doc",
                "identifier": {"system": "urn:ietf:rfc:3986", "value": target},
            },
        }
    ]
    assert result.replaced == [target]


def test_xfrm_rplc_maps_to_transforms_and_replaces_and_folds_back():
    target = "urn:uuid:0b2a6c1e-8b0f-4d5e-9f3a-1c2d3e4f5a6b"
    _, submission = _submission(replaces=target)
    submission.associations[-1].type = v.ASSOC_XFRM_RPLC
    result = _map(submission)
    (doc,) = result.document_references
    assert sorted(r["code"] for r in doc["relatesTo"]) == ["replaces", "transforms"]
    associations = associations_from_fhir([], [doc])
    assert [(a.type, a.source, a.target) for a in associations] == [
        (v.ASSOC_XFRM_RPLC, entry_uuid_of(doc), target)
    ]


@pytest.mark.parametrize(
    ("status", "fhir_status", "tag"),
    [
        (v.STATUS_APPROVED, "current", None),
        (v.STATUS_DEPRECATED, "superseded", None),
        (v.STATUS_ARCHIVED, "current", None),  # PDSm_IsArchived, issue #20
        (v.STATUS_DELETED, "entered-in-error", "Deleted"),
    ],
)
def test_dmp_availability_statuses_map_both_ways(status, fhir_status, tag):
    mapped_status, coding = fhir_availability(status)
    assert mapped_status == fhir_status
    assert coding == ({"system": AVAILABILITY_SYSTEM, "code": tag} if tag else None)
    _, submission = _submission()
    (doc,) = _map(submission, entry_status=status).document_references
    assert doc["status"] == fhir_status
    assert availability_of(doc) == status
    # Archived is the PDSm_IsArchived extension (PDSm st_maj.md's table; issue #20).
    archived = [{"url": IS_ARCHIVED_URL, "valueBoolean": True}]
    assert (doc.get("extension") == archived) == (status == v.STATUS_ARCHIVED)


@pytest.mark.parametrize(
    ("scheme", "system"),
    [
        ("2.16.840.1.113883.6.1", "http://loinc.org"),
        ("2.16.840.1.113883.5.25", "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"),
        ("1.2.250.1.213.1.1.4.13", "urn:oid:1.2.250.1.213.1.1.4.13"),
        (
            "1.2.250.1.71.4.2.4",
            "https://mos.esante.gouv.fr/NOS/TRE_R02-SecteurActivite/FHIR/TRE-R02-SecteurActivite",
        ),
        ("1.2.3.4.5", "urn:oid:1.2.3.4.5"),
        (
            "Connect-a-thon classCodes",
            "https://dmp-server.fr/fhir/CodeSystem/xds-coding-scheme/Connect-a-thon%20classCodes",
        ),
    ],
)
def test_oid_url_rule_is_reversible(scheme, system):
    assert system_for_scheme(scheme) == system
    assert scheme_for_system(system) == scheme


def _comparable(entry: DocumentEntry) -> dict:
    values = dataclasses.asdict(entry)
    for name in ("creation_time", "service_start_time", "service_stop_time"):
        if values[name]:
            values[name] = xds_time_to_fhir(values[name])  # precision-normalized instant
    return values


def test_round_trip_ebrim_fhir_ebrim_attribute_by_attribute():
    """A document deposited by ITI-41 comes back from ITI-18 with the same metadata."""
    target = "urn:uuid:0b2a6c1e-8b0f-4d5e-9f3a-1c2d3e4f5a6b"
    request, submission = _submission(masking=("MASQUE_PS",), replaces=target)
    original = submission.entries[0]
    result = _map(submission)
    (doc,) = result.document_references
    back = document_reference_to_ebrim(
        doc, patient_cx=request.patient_cx, repository_unique_id=REPOSITORY_UNIQUE_ID
    )
    content = request.documents["Document01"]
    expected = dataclasses.replace(
        original,
        id=result.entry_uuids["Document01"],
        status=v.STATUS_APPROVED,
        logical_id=result.entry_uuids["Document01"],
        version="1",
        repository_unique_id=REPOSITORY_UNIQUE_ID,
        hash=hashlib.sha1(content).hexdigest(),
        size=str(len(content)),
    )
    for name, value in dataclasses.asdict(expected).items():
        assert dataclasses.asdict(back)[name] == value, name
    list_back = list_to_ebrim(result.list_resource, patient_cx=request.patient_cx)
    original_set = submission.submission_set
    for name in (
        "unique_id",
        "source_id",
        "patient_id",
        "submission_time",
        "title",
        "comments",
        "content_type_code",
        "authors",
    ):
        assert getattr(list_back, name) == getattr(original_set, name), name
    assert list_back.id == result.entry_uuids["SubmissionSet01"]
    associations = associations_from_fhir([result.list_resource], [doc])
    assert sorted((a.type, a.source, a.target) for a in associations) == sorted(
        [
            (v.ASSOC_HAS_MEMBER, list_back.id, back.id),
            (v.ASSOC_RPLC, back.id, target),
        ]
    )
    assert (
        associations_from_fhir([result.list_resource], [doc])[0].id == associations[0].id
    )  # stable ids


def test_round_trip_of_the_ipf_fixture_with_free_text_authors_and_local_schemes():
    root = parse_xml((FIXTURES / "ipf" / "ProvideAndRegisterDocumentSet.xml").read_bytes())
    submission = parse_submission(root)
    result = _map(submission)
    (doc,) = result.document_references
    DocumentReference.model_validate(doc)
    back = document_reference_to_ebrim(
        doc, patient_cx=submission.entries[0].patient_id, repository_unique_id="1.2.3"
    )
    original = submission.entries[0]
    same = [
        "mime_type",
        "unique_id",
        "title",
        "comments",
        "language_code",
        "source_patient_id",
        "class_code",
        "type_code",
        "format_code",
        "healthcare_facility_type_code",
        "practice_setting_code",
        "confidentiality_codes",
        "event_codes",
    ]
    for name in same:
        assert getattr(back, name) == getattr(original, name), name
    assert _comparable(back)["service_start_time"] == _comparable(original)["service_start_time"]
    assert back.creation_time == "20051224"
    # The author with two institutions keeps the person, role, specialty and both institutions.
    assert back.authors[0].person == "^Gerald^Smitty"
    assert back.authors[0].institutions == ["Cleveland Clinic", "Parma Community"]
    assert back.authors[0].roles == ["Attending"] and back.authors[0].specialties == ["Orthopedic"]


def test_pdsm4dmp_document_reference_maps_to_a_document_entry():
    doc = json.loads((FIXTURES / "pdsm4dmp" / "DocumentReference-doc-x-id.json").read_text())
    entry = document_reference_to_ebrim(
        doc, patient_cx="123456789012345^^^&1.2.250.1.213.1.4.8&ISO", repository_unique_id="1.2.3"
    )
    assert entry.status == v.STATUS_DEPRECATED
    assert entry.unique_id == "1.2.250.1.213.1.4.8.99999.0"
    assert (entry.class_code.code, entry.class_code.scheme) == ("11", "1.2.250.1.213.1.1.4.1")
    assert (entry.type_code.code, entry.type_code.scheme) == ("11488-4", "2.16.840.1.113883.6.1")
    assert entry.format_code.scheme == "1.3.6.1.4.1.19376.1.2.3"
    assert (
        entry.hash == base64.b64decode("A/hMRrv6Y15BjSM8kMLidrz+mHc=").hex() and entry.size == "80"
    )
    assert entry.creation_time == "20260610070000"  # 09:00+02:00 in UTC
    assert entry.authors[0].person == "899700218896^^^^^^^^&1.2.250.1.71.4.2.1&ISO"
    assert entry.legal_authenticator == entry.authors[0].person
    assert entry.source_patient_id == "123456789012345^^^&1.2.250.1.213.1.4.8&ISO"
    assert entry.language_code == "fr-FR" and entry.title == "Compte rendu de consultation (v1)"
