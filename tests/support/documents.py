"""One way for tests to write a DMP document: a DocumentReference with every metadata the
DMP requires (the DMP DocumentReference profile, issue #19 deliverable 1) and its Binary.

Every DocumentReference a client writes is a DMP document, whatever the door, so tests that
need "a document" build it here and only change what they are about (its patient, label,
class, author, relations). The bytes, size and hash agree; the uniqueId is new per call.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import itertools
import uuid
from typing import Any

from tests.dmp_codes import type_of_class

CDA = b'<?xml version="1.0" encoding="UTF-8"?><ClinicalDocument xmlns="urn:hl7-org:v3"/>'
AUTHOR = "899700218896"  # IdNat_PS of the PDSm4DMP examples' author
SYSTEM_IDNAT_PS = "urn:oid:1.2.250.1.71.4.2.1"
SYSTEM_RFC3986 = "urn:ietf:rfc:3986"
SYSTEM_CLASS = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"
SYSTEM_V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SYSTEM_DMP_CONFIDENTIALITY = "urn:oid:1.2.250.1.213.1.1.4.13"
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
EXT_SOURCE_ID = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
EXT_DESIGNATION_TYPE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"

_numbers = itertools.count(1)


def new_unique_id() -> str:
    """A uniqueId (masterIdentifier value) no other call returns."""
    return f"urn:oid:1.2.250.1.213.1.4.8.99999.{uuid.uuid4().int % 10**9}.{next(_numbers)}"


def new_entry_uuid() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def sha1_base64(content: bytes) -> str:
    return base64.b64encode(hashlib.sha1(content).digest()).decode()  # noqa: S324


def binary(content: bytes = CDA, content_type: str = "application/xml") -> dict:
    return {
        "resourceType": "Binary",
        "contentType": content_type,
        "data": base64.b64encode(content).decode(),
    }


def dmp_document(
    patient: str,
    url: str | None = None,
    *,
    content: bytes = CDA,
    author: str | list[dict] = AUTHOR,
    class_code: str = "11",
    label: str | None = None,
    title: str = "Compte rendu de consultation",
    content_type: str = "application/xml",
    entry_uuid: str | None = None,
    **changes: Any,
) -> dict:
    """A valid DMP DocumentReference of `patient` (an id, or any subject reference such as
    `Patient?identifier=...`), whose attachment is `url` (`Binary/<id>` or a Bundle fullUrl)
    with the size and hash of `content`; without `url`, `content` is inline (ITI-105).
    `author`: the IdNat_PS of its author (a contained Practitioner, as PDSm writes it), or
    the `author` references themselves (a Patient, a logical IdNat_PS identifier).
    `label`: a DMP masking code (TRE_A07) added to the securityLabels. `changes` replace
    top-level elements."""
    subject = patient if "/" in patient or "?" in patient else f"Patient/{patient}"
    attachment: dict = {
        "contentType": content_type,
        "language": "fr-FR",
        "size": len(content),
        "hash": sha1_base64(content),
        "title": title,
        "creation": "2026-06-12T10:00:00+02:00",
    }
    if url is None:
        attachment["data"] = base64.b64encode(content).decode()
    else:
        attachment["url"] = url
    labels = [{"coding": [{"system": SYSTEM_V3_CONFIDENTIALITY, "code": "N"}]}]
    if label:
        labels.append({"coding": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": label}]})
    document: dict = {
        "resourceType": "DocumentReference",
        "contained": [
            {
                "resourceType": "Patient",
                "id": "patient-source",
                "identifier": [
                    {"system": "urn:oid:1.2.250.1.213.1.4.8", "value": "123456789012345"}
                ],
            },
            {
                "resourceType": "Practitioner",
                "id": "practitioner-author",
                "identifier": [
                    {
                        "system": SYSTEM_IDNAT_PS,
                        "value": author if isinstance(author, str) else AUTHOR,
                    }
                ],
            },
        ],
        "masterIdentifier": {"system": SYSTEM_RFC3986, "value": new_unique_id()},
        "status": "current",
        "type": type_of_class(class_code),  # the type ASS_X16 files under that class
        "category": [{"coding": [{"system": SYSTEM_CLASS, "code": class_code}]}],
        "subject": {"reference": subject},
        "date": "2026-06-12T10:00:00+02:00",
        "author": ([{"reference": "#practitioner-author"}] if isinstance(author, str) else author),
        "authenticator": {"reference": "#practitioner-author"},
        "securityLabel": labels,
        "content": [
            {
                "attachment": attachment,
                "format": {
                    "system": "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
                    "code": "urn:ihe:iti:xds:2017:mimeTypeSufficient",
                },
            }
        ],
        "context": {
            "period": {"start": "2026-06-12T10:00:00+02:00"},
            "sourcePatientInfo": {"reference": "#patient-source"},
            "facilityType": {"coding": [{"system": "http://snomed.info/sct", "code": "22232009"}]},
            "practiceSetting": {
                "coding": [{"system": "http://snomed.info/sct", "code": "394802001"}]
            },
        },
    }
    if entry_uuid is not None:
        document["identifier"] = [
            {"use": "official", "system": SYSTEM_RFC3986, "value": entry_uuid}
        ]
    document.update(copy.deepcopy(changes))
    return document


def submission_set(patient: str, members: list[str], **changes: Any) -> dict:
    """A valid DMP SubmissionSet List of `patient` naming `members` (fullUrls or references)."""
    subject = patient if "/" in patient or "?" in patient else f"Patient/{patient}"
    resource = {
        "resourceType": "List",
        "contained": [
            {
                "resourceType": "Practitioner",
                "id": "practitioner-author",
                "identifier": [{"system": SYSTEM_IDNAT_PS, "value": AUTHOR}],
            }
        ],
        "extension": [
            {
                "url": EXT_DESIGNATION_TYPE,
                "valueCodeableConcept": {"coding": [{"system": SYSTEM_CLASS, "code": "11"}]},
            },
            {
                "url": EXT_SOURCE_ID,
                "valueIdentifier": {"system": SYSTEM_RFC3986, "value": "urn:oid:1.2.3.4.5.6.7.8"},
            },
        ],
        "identifier": [{"use": "usual", "system": SYSTEM_RFC3986, "value": new_unique_id()}],
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
        "subject": {"reference": subject},
        "date": "2026-06-12T10:00:00+02:00",
        "source": {"reference": "#practitioner-author"},
        "entry": [{"item": {"reference": member}} for member in members],
    }
    resource.update(copy.deepcopy(changes))
    return resource


def transaction(
    patient: str,
    document: dict | None = None,
    content: bytes = CDA,
    *,
    with_submission_set: bool = False,
    profile: str | None = None,
) -> dict:
    """A transaction depositing one document and its Binary (POSTs with urn:uuid fullUrls);
    `with_submission_set`: an ITI-65 (its SubmissionSet List first); `profile`: the
    Bundle's meta.profile."""
    document_url, binary_url = new_entry_uuid(), new_entry_uuid()
    if document is None:
        document = dmp_document(patient, binary_url, content=content)
    else:
        document = copy.deepcopy(document)
        document["content"][0]["attachment"].pop("data", None)
        document["content"][0]["attachment"]["url"] = binary_url
    entries = [
        {
            "fullUrl": document_url,
            "resource": document,
            "request": {"method": "POST", "url": "DocumentReference"},
        },
        {
            "fullUrl": binary_url,
            "resource": binary(content),
            "request": {"method": "POST", "url": "Binary"},
        },
    ]
    if with_submission_set:
        entries.insert(
            0,
            {
                "fullUrl": new_entry_uuid(),
                "resource": submission_set(patient, [document_url]),
                "request": {"method": "POST", "url": "List"},
            },
        )
    bundle: dict = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    if profile:
        bundle["meta"] = {"profile": [profile]}
    return bundle


def with_submission_set_unique_id(bundle: dict) -> dict:
    """A PDSm4DMP example Bundle adapted to the DMP: its SubmissionSet without a uniqueId (the
    published examples carry none, which ITI-41 and the DMP SubmissionSet profile require)
    gets one (use usual, as MHD writes it)."""
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") or {}
        codes = [c.get("code") for c in (resource.get("code") or {}).get("coding") or []]
        if resource.get("resourceType") == "List" and "submissionset" in codes:
            identifiers = resource.setdefault("identifier", [])
            if not any(i.get("use") == "usual" for i in identifiers):
                identifiers.append(
                    {"use": "usual", "system": SYSTEM_RFC3986, "value": new_unique_id()}
                )
    return bundle


def assert_refused_at_deposit_doors(
    client: Any, headers: dict, patient: str, document: dict
) -> None:
    """`document` is refused (422 invalid) alike by a REST create, a transaction and an
    ITI-65 (a transaction with its SubmissionSet): the deposit doors a rule on a document's
    content must hold at."""
    import json

    created = client.post("/fhir/DocumentReference", data=json.dumps(document), headers=headers)
    assert created.status_code == 422, created.get_data(as_text=True)
    assert created.get_json()["issue"][0]["code"] == "invalid"
    for with_submission_set in (False, True):
        bundle = transaction(
            patient, copy.deepcopy(document), with_submission_set=with_submission_set
        )
        answered = client.post("/fhir", data=json.dumps(bundle), headers=headers)
        assert answered.status_code == 422, answered.get_data(as_text=True)


def put_bundle(resource: dict) -> dict:
    """A transaction Bundle of one entry: the PUT of `resource` at its own id."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            }
        ],
    }
