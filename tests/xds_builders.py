"""Builders of DMP-valid XDS.b requests for tests (unit and end-to-end).

`build_iti41()` returns a ProvideAndRegisterDocumentSet-b request, MTOM by default (the
Document as an `xop:Include` whose href is percent-encoded, as real senders do) or with the
documents inline in base64 (`mtom=False`), whose metadata passes `DMP_PROFILE` validation
with a valid INS. Keyword arguments break it in controlled ways for negative tests.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field
from urllib.parse import quote

from lxml import etree

from fhir_server.resources.ins import nir_key
from ihe_xds import vocabulary as v
from ihe_xds.mtom import Attachment, build_mtom_response

NIR13 = "2800175123456"
DEFAULT_NIR = NIR13 + f"{nir_key(NIR13):02d}"
OID_INS = "1.2.250.1.213.1.4.8"
REPOSITORY_UNIQUE_ID = "1.2.250.1.999.2"
SOURCE_ID = "1.2.250.1.999.1"
AUTHOR_PERSON = "810001234567^MARTIN^Jean^^^Dr^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"
AUTHOR_INSTITUTION = "CH DE TEST^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^11234567890"
AUTHOR_ROLE = "10^Médecin^1.2.250.1.71.1.2.7"
AUTHOR_SPECIALTY = "G15_10/SM26^Qualifié en Médecine Générale (SM)^1.2.250.1.71.4.2.5"
CDA = b'<?xml version="1.0" encoding="UTF-8"?><ClinicalDocument xmlns="urn:hl7-org:v3"><title>CRH</title></ClinicalDocument>'


def patient_cx(nir: str = DEFAULT_NIR) -> str:
    return f"{nir}^^^&{OID_INS}&ISO^NH"


def find_documents_request(nir: str, return_type: str = "LeafClass") -> etree._Element:
    """An ITI-18 FindDocuments AdhocQueryRequest for the patient `nir`'s Approved entries."""
    from ihe_xds.stored_query import FIND_DOCUMENTS

    request = etree.Element(
        f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM}
    )
    etree.SubElement(request, f"{{{v.NS_QUERY}}}ResponseOption", returnType=return_type)
    query = etree.SubElement(request, f"{{{v.NS_RIM}}}AdhocQuery", id=FIND_DOCUMENTS)
    for name, value in (
        ("$XDSDocumentEntryPatientId", f"'{patient_cx(nir)}'"),
        ("$XDSDocumentEntryStatus", f"('{v.STATUS_APPROVED}')"),
    ):
        slot = etree.SubElement(query, f"{{{v.NS_RIM}}}Slot", name=name)
        etree.SubElement(
            etree.SubElement(slot, f"{{{v.NS_RIM}}}ValueList"), f"{{{v.NS_RIM}}}Value"
        ).text = value
    return request


def _rim(local: str) -> str:
    return v.q(v.NS_RIM, local)


def _slot(parent: etree._Element, name: str, *values: str) -> None:
    slot = etree.SubElement(parent, _rim("Slot"), name=name)
    value_list = etree.SubElement(slot, _rim("ValueList"))
    for value in values:
        etree.SubElement(value_list, _rim("Value")).text = value


def _name(parent: etree._Element, value: str, local: str = "Name") -> None:
    holder = etree.SubElement(parent, _rim(local))
    etree.SubElement(holder, _rim("LocalizedString"), value=value)


def _coded(
    parent: etree._Element, owner: str, scheme: str, code: str, coding_scheme: str, display: str
) -> None:
    element = etree.SubElement(
        parent,
        _rim("Classification"),
        id=f"cl-{uuid.uuid4().hex[:12]}",
        classificationScheme=scheme,
        classifiedObject=owner,
        nodeRepresentation=code,
    )
    _slot(element, "codingScheme", coding_scheme)
    _name(element, display)


def _author(parent: etree._Element, owner: str, scheme: str) -> None:
    element = etree.SubElement(
        parent,
        _rim("Classification"),
        id=f"cl-{uuid.uuid4().hex[:12]}",
        classificationScheme=scheme,
        classifiedObject=owner,
        nodeRepresentation="",
    )
    _slot(element, "authorPerson", AUTHOR_PERSON)
    _slot(element, "authorInstitution", AUTHOR_INSTITUTION)
    _slot(element, "authorRole", AUTHOR_ROLE)
    _slot(element, "authorSpecialty", AUTHOR_SPECIALTY)


def _external(parent: etree._Element, owner: str, scheme: str, value: str, name: str) -> None:
    element = etree.SubElement(
        parent,
        _rim("ExternalIdentifier"),
        id=f"ei-{uuid.uuid4().hex[:12]}",
        registryObject=owner,
        identificationScheme=scheme,
        value=value,
    )
    _name(element, name)


@dataclass
class Iti41Request:
    content_type: str
    body: bytes
    envelope: bytes
    patient_cx: str
    message_id: str
    submission_set_unique_id: str
    document_unique_ids: dict[str, str] = field(default_factory=dict)  # symbolic id -> uniqueId
    documents: dict[str, bytes] = field(default_factory=dict)  # symbolic id -> content


def build_iti41(
    *,
    mtom: bool = True,
    nir: str = DEFAULT_NIR,
    documents: list[bytes] | None = None,
    masking: tuple[str, ...] = (),
    replaces: str | None = None,
    include_hash: bool = True,
    entry_patient_cx: str | None = None,
    security: etree._Element | None = None,
    percent_encode_cid: bool = True,
) -> Iti41Request:
    """A DMP-valid ITI-41 request (see the module docstring)."""
    contents = documents if documents is not None else [CDA]
    cx = patient_cx(nir)
    message_id = f"urn:uuid:{uuid.uuid4()}"
    envelope = etree.Element(
        v.q(v.NS_SOAP12, "Envelope"), nsmap={"soap": v.NS_SOAP12, "wsa": v.NS_WSA}
    )
    header = etree.SubElement(envelope, v.q(v.NS_SOAP12, "Header"))
    etree.SubElement(header, v.q(v.NS_WSA, "Action")).text = v.ACTION_ITI41
    etree.SubElement(header, v.q(v.NS_WSA, "MessageID")).text = message_id
    etree.SubElement(header, v.q(v.NS_WSA, "To")).text = "https://dmp-server.test/xds/repository"
    if security is not None:
        header.append(security)
    body = etree.SubElement(envelope, v.q(v.NS_SOAP12, "Body"))
    request = etree.SubElement(
        body,
        v.q(v.NS_XDSB, "ProvideAndRegisterDocumentSetRequest"),
        nsmap={"xdsb": v.NS_XDSB, "lcm": v.NS_LCM, "rim": v.NS_RIM, "xop": v.NS_XOP},
    )
    submit = etree.SubElement(request, v.q(v.NS_LCM, "SubmitObjectsRequest"))
    objects = etree.SubElement(submit, _rim("RegistryObjectList"))
    stamp = uuid.uuid4().int % 10**12
    result = Iti41Request("", b"", b"", cx, message_id, f"1.2.250.1.999.3.{stamp}")
    for index, content in enumerate(contents, start=1):
        doc_id = f"Document{index:02d}"
        unique_id = f"1.2.250.1.999.4.{stamp}.{index}"
        result.document_unique_ids[doc_id] = unique_id
        result.documents[doc_id] = content
        entry = etree.SubElement(
            objects,
            _rim("ExtrinsicObject"),
            id=doc_id,
            mimeType="text/xml",
            objectType=v.OBJECT_TYPE_STABLE,
        )
        _slot(entry, "creationTime", "20240115103000")
        if include_hash:
            _slot(entry, "hash", hashlib.sha1(content).hexdigest())  # noqa: S324
            _slot(entry, "size", str(len(content)))
        _slot(entry, "languageCode", "fr-FR")
        _slot(entry, "legalAuthenticator", AUTHOR_PERSON)
        _slot(entry, "serviceStartTime", "20240115090000")
        _slot(entry, "serviceStopTime", "20240115100000")
        _slot(entry, "sourcePatientId", cx)
        _slot(
            entry,
            "sourcePatientInfo",
            f"PID-3|{cx}",
            "PID-5|DUPONT^Marie",
            "PID-7|19800101",
            "PID-8|F",
        )
        _name(entry, "Compte rendu d'hospitalisation")
        _name(entry, "CRH du séjour de janvier", "Description")
        _author(entry, doc_id, v.DE_AUTHOR)
        _coded(entry, doc_id, v.DE_CLASS_CODE, "10", "1.2.250.1.213.1.1.4.1", "Compte rendu")
        _coded(entry, doc_id, v.DE_CONFIDENTIALITY_CODE, "N", "2.16.840.1.113883.5.25", "Normal")
        for code in masking:
            _coded(entry, doc_id, v.DE_CONFIDENTIALITY_CODE, code, "1.2.250.1.213.1.1.4.13", code)
        _coded(entry, doc_id, v.DE_EVENT_CODE, "GLE", "1.2.250.1.213.2.5", "Glycémie")
        _coded(
            entry,
            doc_id,
            v.DE_FORMAT_CODE,
            "urn:ihe:iti:xds:2017:mimeTypeSufficient",
            "1.3.6.1.4.1.19376.1.2.3",
            "mimeType Sufficient",
        )
        _coded(
            entry,
            doc_id,
            v.DE_FACILITY_TYPE_CODE,
            "SA01",
            "1.2.250.1.71.4.2.4",
            "Etablissement public de santé",
        )
        _coded(
            entry,
            doc_id,
            v.DE_PRACTICE_SETTING_CODE,
            "ETABLISSEMENT",
            "1.2.250.1.213.1.1.4.9",
            "Etablissement de santé",
        )
        _coded(
            entry, doc_id, v.DE_TYPE_CODE, "11490-0", "2.16.840.1.113883.6.1", "Lettre de sortie"
        )
        _external(
            entry, doc_id, v.DE_PATIENT_ID, entry_patient_cx or cx, "XDSDocumentEntry.patientId"
        )
        _external(entry, doc_id, v.DE_UNIQUE_ID, unique_id, "XDSDocumentEntry.uniqueId")
    package = etree.SubElement(objects, _rim("RegistryPackage"), id="SubmissionSet01")
    _slot(package, "submissionTime", "20240115110000")
    _name(package, "Dépôt CRH")
    _author(package, "SubmissionSet01", v.SS_AUTHOR)
    _coded(
        package,
        "SubmissionSet01",
        v.SS_CONTENT_TYPE_CODE,
        "10",
        "1.2.250.1.213.1.1.4.1",
        "Compte rendu",
    )
    _external(
        package,
        "SubmissionSet01",
        v.SS_UNIQUE_ID,
        result.submission_set_unique_id,
        "XDSSubmissionSet.uniqueId",
    )
    _external(package, "SubmissionSet01", v.SS_SOURCE_ID, SOURCE_ID, "XDSSubmissionSet.sourceId")
    _external(package, "SubmissionSet01", v.SS_PATIENT_ID, cx, "XDSSubmissionSet.patientId")
    etree.SubElement(
        objects,
        _rim("Classification"),
        id="cl-ss",
        classifiedObject="SubmissionSet01",
        classificationNode=v.SS_NODE,
    )
    for index in range(1, len(contents) + 1):
        association = etree.SubElement(
            objects,
            _rim("Association"),
            id=f"as{index:02d}",
            associationType=v.ASSOC_HAS_MEMBER,
            sourceObject="SubmissionSet01",
            targetObject=f"Document{index:02d}",
        )
        _slot(association, "SubmissionSetStatus", "Original")
    if replaces:
        etree.SubElement(
            objects,
            _rim("Association"),
            id="as-rplc",
            associationType=v.ASSOC_RPLC,
            sourceObject="Document01",
            targetObject=replaces,
        )
    attachments = []
    for doc_id, content in result.documents.items():
        document = etree.SubElement(request, v.q(v.NS_XDSB, "Document"), id=doc_id)
        if mtom:
            content_id = f"{doc_id}-{uuid.uuid4().hex[:8]}@urn:ihe:iti:xds-b:2007"
            href = quote(content_id, safe="@") if percent_encode_cid else content_id
            etree.SubElement(document, v.q(v.NS_XOP, "Include"), href=f"cid:{href}")
            attachments.append(Attachment(content_id, "text/xml", content))
        else:
            document.text = base64.b64encode(content).decode("ascii")
    result.envelope = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
    if mtom:
        result.content_type, result.body = build_mtom_response(
            result.envelope, attachments, action=v.ACTION_ITI41
        )
    else:
        result.content_type = f'application/soap+xml; charset=UTF-8; action="{v.ACTION_ITI41}"'
        result.body = result.envelope
    return result
