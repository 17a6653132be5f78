"""One mapping for both faces: a document deposited by MHD ITI-65 is found by XDS ITI-18 and
retrieved by ITI-43 with equivalent metadata and identical bytes, and one deposited by XDS
ITI-41 is found by MHD ITI-67 and retrieved by ITI-68 likewise."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from lxml import etree

from ihe_xds import vocabulary as v
from tests.dmp_codes import with_admitted_class
from tests.http.conftest import FHIR_JSON, INS_SYSTEM, auth
from tests.http.test_xds_endpoints import GP, OID_INS, envelope_of, registry_status
from tests.http.test_xds_endpoints import xds as xds  # noqa: F401  (the fixture)
from tests.support.documents import with_submission_set_unique_id

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "pdsm4dmp"
CONTENT = b'<?xml version="1.0" encoding="UTF-8"?><ClinicalDocument xmlns="urn:hl7-org:v3"><title>CR \xc3\xa9</title></ClinicalDocument>'
UNIQUE_ID = "1.2.250.1.213.1.4.8.99999.2"


def _iti65_bundle(nir: str) -> dict:
    text = (FIXTURES / "Bundle-example-td2-iti65-lot-soumission.json").read_text(encoding="utf-8")
    bundle = with_submission_set_unique_id(
        with_admitted_class(json.loads(text.replace("123456789012345", nir)))
    )
    binary = bundle["entry"][2]["resource"]
    binary["data"] = base64.b64encode(CONTENT).decode()
    attachment = bundle["entry"][1]["resource"]["content"][0]["attachment"]
    attachment["size"] = len(CONTENT)
    attachment["hash"] = base64.b64encode(hashlib.sha1(CONTENT).digest()).decode()
    return bundle


def _extrinsic(root: etree._Element) -> dict:
    """The comparable metadata of the one ExtrinsicObject of an ITI-18 answer."""
    (entry,) = root.iter(f"{{{v.NS_RIM}}}ExtrinsicObject")
    slots = {
        s.get("name"): [x.text for x in s.iter(f"{{{v.NS_RIM}}}Value")]
        for s in entry.findall(f"{{{v.NS_RIM}}}Slot")
    }
    classifications = {
        c.get("classificationScheme"): c.get("nodeRepresentation")
        for c in entry.findall(f"{{{v.NS_RIM}}}Classification")
        if c.get("nodeRepresentation")
    }
    identifiers = {
        e.get("identificationScheme"): e.get("value")
        for e in entry.findall(f"{{{v.NS_RIM}}}ExternalIdentifier")
    }
    return {
        "entryUUID": entry.get("id"),
        "mimeType": entry.get("mimeType"),
        "status": entry.get("status"),
        "slots": slots,
        "codes": classifications,
        "ids": identifiers,
    }


def test_iti65_deposit_is_found_by_iti18_and_retrieved_by_iti43(xds):
    patient_id, nir = xds.patient(60)
    response = xds.client.post(
        "/fhir",
        data=json.dumps(_iti65_bundle(nir)),
        headers=auth(xds.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    doc_id = next(
        e["response"]["location"].split("/")[1]
        for e in response.get_json()["entry"]
        if e["response"]["location"].startswith("DocumentReference/")
    )
    document = xds.client.get(
        f"/fhir/DocumentReference/{doc_id}", headers=auth(xds.tokens.practitioner(GP))
    ).get_json()

    answer = xds.find_documents(nir)
    assert registry_status(answer) == (v.RESPONSE_SUCCESS, [])
    root, _ = envelope_of(answer)
    entry = _extrinsic(root)
    entry_uuid = next(
        i["value"] for i in document["identifier"] if i["system"] == "urn:ietf:rfc:3986"
    )
    assert entry["entryUUID"] == entry_uuid
    assert entry["status"] == v.STATUS_APPROVED
    assert entry["mimeType"] == "application/xml"
    assert entry["ids"][v.DE_UNIQUE_ID] == UNIQUE_ID
    assert entry["ids"][v.DE_PATIENT_ID].startswith(f"{nir}^^^&{OID_INS}&ISO")
    assert entry["slots"]["hash"] == [hashlib.sha1(CONTENT).hexdigest()]
    assert entry["slots"]["size"] == [str(len(CONTENT))]
    assert entry["slots"]["languageCode"] == ["fr-FR"]
    assert entry["slots"]["creationTime"] == ["20260612080000"]  # 10:00+02:00 in UTC
    assert entry["slots"]["serviceStartTime"] == ["20260612080000"]
    assert entry["codes"][v.DE_CLASS_CODE] == "10"  # the class ASS_X16 gives 11488-4
    assert entry["codes"][v.DE_TYPE_CODE] == "11488-4"
    assert entry["codes"][v.DE_FORMAT_CODE] == "urn:ihe:iti:xds:2017:mimeTypeSufficient"
    assert entry["codes"][v.DE_FACILITY_TYPE_CODE] == "22232009"
    assert entry["codes"][v.DE_PRACTICE_SETTING_CODE] == "394802001"
    assert entry["codes"][v.DE_CONFIDENTIALITY_CODE] == "N"

    retrieved = xds.retrieve([UNIQUE_ID], nir=nir)
    assert registry_status(retrieved) == (v.RESPONSE_SUCCESS, [])
    root, package = envelope_of(retrieved)
    include = root.find(f".//{{{v.NS_XDSB}}}Document/{{{v.NS_XOP}}}Include")
    assert package.attachments[include.get("href").removeprefix("cid:")].data == CONTENT
    assert root.findtext(f".//{{{v.NS_XDSB}}}mimeType") == "application/xml"


@pytest.mark.parametrize("content", [CONTENT, bytes(range(256)) * 3], ids=["cda", "every-byte"])
def test_iti41_deposit_is_found_by_iti67_and_retrieved_by_iti68(xds, content):
    patient_id, nir = xds.patient(61)
    request, response = xds.deposit(nir, documents=[content])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    token = xds.tokens.practitioner(GP)
    searchset = xds.client.get(
        "/fhir/DocumentReference",
        query_string={"patient.identifier": f"{INS_SYSTEM}|{nir}", "status": "current"},
        headers=auth(token),
    ).get_json()
    (found,) = [e["resource"] for e in searchset["entry"]]
    unique_id = request.document_unique_ids["Document01"]
    assert found["masterIdentifier"] == {
        "system": "urn:ietf:rfc:3986",
        "value": f"urn:oid:{unique_id}",
    }
    assert found["subject"] == {"reference": f"Patient/{patient_id}"}
    attachment = found["content"][0]["attachment"]
    assert attachment["size"] == len(content)
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(content).digest()).decode()

    # The same entry seen by ITI-18: same entryUUID, same codes as the FHIR side.
    entry = _extrinsic(envelope_of(xds.find_documents(nir))[0])
    assert entry["entryUUID"] == next(
        i["value"] for i in found["identifier"] if i["system"] == "urn:ietf:rfc:3986"
    )
    assert entry["codes"][v.DE_CLASS_CODE] == found["category"][0]["coding"][0]["code"]
    assert entry["codes"][v.DE_TYPE_CODE] == found["type"]["coding"][0]["code"]
    assert entry["codes"][v.DE_FORMAT_CODE] == found["content"][0]["format"]["code"]
    assert entry["mimeType"] == attachment["contentType"]

    # ITI-68: identical bytes, the document's content type, an ETag.
    binary = xds.client.get(f"/fhir/{attachment['url']}", headers=auth(token, Accept="*/*"))
    assert binary.status_code == 200
    assert binary.get_data() == content
    assert binary.mimetype == attachment["contentType"]
    assert binary.headers["ETag"] == 'W/"1"'
