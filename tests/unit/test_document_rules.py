"""The document rules without a store (fhir_server/documents, issue #19 deliverable 1): what
each rule refuses, named by its element, with the XDS error code every door reports."""

from __future__ import annotations

import base64
import copy

import pytest

from fhir_server.documents import model, publish, rules
from fhir_server.documents.registry import (
    NOT_CURRENT,
    OTHER_PATIENT,
    UNKNOWN,
    relation_error_code,
    relation_problem,
)
from fhir_server.errors import FhirError
from tests.support.documents import CDA, dmp_document, new_entry_uuid, sha1_base64

STORED = dmp_document("p1", "Binary/b1", entry_uuid=new_entry_uuid())


def expressions(issues) -> list[str]:
    return [e for issue in issues for e in issue.expression]


# -- what an update may change -----------------------------------------------------------------


def test_an_update_of_status_labels_and_description_changes_nothing_locked():
    new = copy.deepcopy(STORED)
    new["status"] = "entered-in-error"
    new["securityLabel"].append({"coding": [{"system": "urn:x", "code": "y"}]})
    new["description"] = "relu"
    assert rules.update_issues(new, STORED) == []


@pytest.mark.parametrize(
    "path, change",
    [
        ("DocumentReference.identifier", lambda d: d.update(identifier=[])),
        ("DocumentReference.masterIdentifier", lambda d: d["masterIdentifier"].update(value="x")),
        ("DocumentReference.subject", lambda d: d.update(subject={"reference": "Patient/p2"})),
        ("DocumentReference.relatesTo", lambda d: d.update(relatesTo=[{"code": "signs"}])),
        (
            "DocumentReference.content",
            lambda d: d["content"].append(copy.deepcopy(d["content"][0])),
        ),
        (
            "DocumentReference.content[0].attachment.hash",
            lambda d: d["content"][0]["attachment"].update(hash=sha1_base64(b"other")),
        ),
        (
            "DocumentReference.content[0].attachment.url",
            lambda d: d["content"][0]["attachment"].update(url="Binary/b2"),
        ),
    ],
)
def test_an_update_never_changes_what_names_the_document_its_record_bytes_or_relations(
    path, change
):
    new = copy.deepcopy(STORED)
    change(new)
    issues = rules.update_issues(new, STORED)
    assert expressions(issues) == [path]
    assert issues[0].details_code == "XDSRepositoryMetadataError"


# -- identity -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "master, ok",
    [
        ({"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1.213.1.4.8.1"}, True),
        ({"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.250.1^ext-1"}, True),
        ({"system": "urn:ietf:rfc:3986", "value": f"{new_entry_uuid()}"}, True),
        ({"value": "1.2.250.1.213"}, True),
        ({"system": "urn:ietf:rfc:3986", "value": "urn:oid:not-an-oid"}, False),
        ({"system": "urn:ietf:rfc:3986", "value": "1.2.250"}, False),
        ({"value": "hello"}, False),
    ],
)
def test_a_unique_id_is_an_oid_or_a_uuid(master, ok):
    document = dict(STORED, masterIdentifier=master)
    found = expressions(rules.identity_issues(document))
    assert found == ([] if ok else ["DocumentReference.masterIdentifier.value"])


def test_an_entry_uuid_is_one_rfc4122_uuid():
    malformed = dict(STORED, identifier=[{"system": model.SYSTEM_RFC3986, "value": "urn:uuid:1"}])
    assert expressions(rules.identity_issues(malformed)) == [
        "DocumentReference.identifier[0].value"
    ]
    two = dict(
        STORED,
        identifier=[
            {"system": model.SYSTEM_RFC3986, "value": new_entry_uuid()},
            {"system": model.SYSTEM_RFC3986, "value": new_entry_uuid()},
        ],
    )
    assert expressions(rules.identity_issues(two)) == ["DocumentReference.identifier[1]"]


def test_two_documents_of_a_message_share_no_entry_uuid_nor_unique_id():
    same_uuid = dict(STORED, masterIdentifier={"value": "1.2.3"})
    found = rules.message_issues(
        [("Bundle.entry[0]", STORED), ("Bundle.entry[1]", same_uuid), ("Bundle.entry[2]", STORED)]
    )
    assert [(i.expression, i.details_code) for i in found] == [
        (("Bundle.entry[1].resource.identifier",), "XDSRepositoryMetadataError"),
        (("Bundle.entry[2].resource.identifier",), "XDSRepositoryMetadataError"),
        (("Bundle.entry[2].resource.masterIdentifier",), "XDSRepositoryDuplicateUniqueIdInMessage"),
    ]


def test_a_local_reference_names_a_contained_resource():
    """FHIR invariant ref-1, e.g. context.sourcePatientInfo."""
    assert rules.contained_reference_issues(STORED) == []
    dangling = copy.deepcopy(STORED)
    dangling["context"]["sourcePatientInfo"] = {"reference": "#nobody"}
    assert expressions(rules.contained_reference_issues(dangling)) == [
        "DocumentReference.context.sourcePatientInfo.reference"
    ]


# -- associations -------------------------------------------------------------------------------


def test_an_association_names_a_current_document_of_the_same_patient():
    current = {"id": "d1", "status": "current", "subject": {"reference": "Patient/p1"}}
    assert relation_problem(current, "p1", replaces=False) is None
    assert relation_problem(None, "p1", replaces=False) == UNKNOWN
    assert relation_problem(current, "p2", replaces=True) == OTHER_PATIENT
    superseded = dict(current, status="superseded")
    assert relation_problem(superseded, "p1", replaces=False) == NOT_CURRENT
    archived = dict(
        current, meta={"tag": [{"system": model.AVAILABILITY_SYSTEM, "code": "Archived"}]}
    )
    assert relation_problem(archived, "p1", replaces=False) == NOT_CURRENT


@pytest.mark.parametrize(
    "problem, replaces, code",
    [
        (UNKNOWN, True, "XDSReplaceFailed"),
        (NOT_CURRENT, True, "XDSReplaceFailed"),
        (OTHER_PATIENT, True, "XDSPatientIdDoesNotMatch"),
        (UNKNOWN, False, "XDSRegistryMetadataError"),
        (NOT_CURRENT, False, "XDSRegistryDeprecatedDocumentError"),
        (OTHER_PATIENT, False, "XDSPatientIdDoesNotMatch"),
    ],
)
def test_each_association_problem_has_the_xds_code_of_itis_41_and_65(problem, replaces, code):
    assert relation_error_code(problem, replaces=replaces) == code


# -- ITI-105 as a transaction ---------------------------------------------------------------------


def test_simplified_publish_makes_the_binary_of_the_inline_bytes():
    document = dmp_document("p1")
    del document["content"][0]["attachment"]["size"], document["content"][0]["attachment"]["hash"]
    bundle = publish.as_transaction(document)
    posted, binary = bundle["entry"]
    attachment = posted["resource"]["content"][0]["attachment"]
    assert "data" not in attachment
    assert attachment["url"] == binary["fullUrl"]
    assert (attachment["size"], attachment["hash"]) == (len(CDA), sha1_base64(CDA))
    assert base64.b64decode(binary["resource"]["data"]) == CDA
    assert model.entry_uuid(posted["resource"]) is not None


def test_simplified_publish_checks_the_size_and_hash_given_with_the_bytes():
    document = dmp_document("p1")
    document["content"][0]["attachment"]["hash"] = sha1_base64(b"other")
    with pytest.raises(FhirError) as refused:
        publish.as_transaction(document)
    assert refused.value.status == 422
    assert expressions(refused.value.issues) == ["DocumentReference.content[0].attachment.hash"]
