"""Every external XDS fixture, accepted or rejected with exactly the errors it deserves.

Fixtures: tests/fixtures/external/{ipf,openxds,ehealthsuisse-epr,pdsm4dmp} (see each
folder's SOURCE and LICENSE). None of the XDS samples is a DMP message, so submissions are
checked with XDS_PROFILE (and, where instructive, DMP_PROFILE too).

| fixture | profile | outcome |
|---|---|---|
| ipf/ProvideAndRegisterDocumentSet.xml (inline Document) | XDS | 2 x XDSRepositoryMetadataError: hash `aaaa...dddd` and size `0815` given and wrong for the 28011-byte document |
| same | DMP | + patientId not an INS, classCode/typeCode/formatCode/facility/practiceSetting/confidentiality not from the French systems ("Connect-a-thon ..." / "LOINC" names), legalAuthenticator missing |
| ipf/iti18request-sql-injection.xml | - | StoredQueryError: XDSRegistryMetadataError on $XDSDocumentEntryPatientId (unterminated quoted string); the injected text never reaches a search |
| openxds/ProvideAndRegisterDocumentSet-bRequest.xml (inline Document, ObjectRefs) | XDS | accepted, no error |
| same | DMP | patientId not an INS; classCode from LOINC (not TRE_A03); format/facility/practiceSetting/confidentiality from connect-a-thon schemes; legalAuthenticator missing |
| openxds/submit_document.xml, submit_multiple_documents.xml (templates with `$...` placeholders, no Document) | XDS | per entry: uniqueId and patientId invalid (XDSRegistryMetadataError), XDSMissingDocument; SubmissionSet uniqueId and patientId invalid |
| openxds/document_replacement.xml, document_addendum.xml, document_transformation.xml | XDS | as above + the RPLC / APND / XFRM target `$..._uuid` is not a urn:uuid (XDSRegistryMetadataError on targetObject) |
| openxds/RegistryStoredQueryFindDocs.xml | - | FindDocuments, LeafClass, patient 1100099 @ 1.3.6.1.4.1.21367.2010.1.2.300, Approved, creation window |
| openxds/RetrieveDocumentSetRequest.xml | - | one DocumentRequest (repository 1.3.6.1.4.1.21367.2010.1.2.1125) |
| ehealthsuisse-epr/ITI-41_request_raw.xml (HTTP capture) | - | MtomError: the boundary of the captured Content-Type header (`MIMEBoundary_...`) does not occur in the body (the capture mixes two messages). With the body's own boundary and root Content-ID: XmlError, prefix `wsse` undeclared. With that declared: parses; the percent-encoded `cid:...%3Aihe%3A...` resolves to the part `<...:ihe:...>`; XDS profile: accepted; DMP profile: 10 errors (listed in the test) |
| ehealthsuisse-epr/ITI-41_request.xml, ITI-18_response.xml | - | XmlError: the samples carry line numbers (documentation listings, not XML) |
| ehealthsuisse-epr/ITI-18_request.xml, ITI-43_request.xml | - | XmlError: "namespaces omitted" in the sample (undeclared prefixes). With the standard namespaces declared: FindDocuments (ObjectRef) and one DocumentRequest |
| ehealthsuisse-epr/ITI-41_response.xml, ITI-43_response_raw.xml | - | read as envelopes; as requests they are refused (SoapFault Sender, wsa:ActionNotSupported: a response action) |
| pdsm4dmp/DocumentReference-doc-x-id.json | - | maps back to a DocumentEntry (test_xds_mapping) |
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ihe_xds import vocabulary as v
from ihe_xds.ebrim import parse_submission
from ihe_xds.mtom import MtomError, document_content, parse_http_body
from ihe_xds.responses import parse_retrieve_request
from ihe_xds.soap import SoapFault, check_action, read_envelope
from ihe_xds.stored_query import StoredQueryError, parse_stored_query
from ihe_xds.validation import DMP_PROFILE, XDS_PROFILE, validate_submission
from ihe_xds.xml import XmlError, parse_xml

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "external"
E = "XDSRegistryMetadataError"


def _read(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def _validate(name: str, profile) -> list[tuple[str, str]]:
    submission = parse_submission(parse_xml(_read(name)))
    return [(e.error_code, e.location) for e in validate_submission(submission, profile)]


IPF_DE = "DocumentEntry Document01 (1.3.6.1.4.1.21367.2005.3.9999.32)"


def test_ipf_provide_and_register_hash_and_size_given_and_wrong():
    assert _validate("ipf/ProvideAndRegisterDocumentSet.xml", XDS_PROFILE) == [
        ("XDSRepositoryMetadataError", f"{IPF_DE} hash"),
        ("XDSRepositoryMetadataError", f"{IPF_DE} size"),
    ]


def test_ipf_provide_and_register_under_dmp_profile():
    assert _validate("ipf/ProvideAndRegisterDocumentSet.xml", DMP_PROFILE) == [
        (E, f"{IPF_DE} patientId"),
        (E, f"{IPF_DE} classCode"),
        (E, f"{IPF_DE} typeCode"),
        (E, f"{IPF_DE} formatCode"),
        (E, f"{IPF_DE} healthcareFacilityTypeCode"),
        (E, f"{IPF_DE} practiceSettingCode"),
        (E, f"{IPF_DE} confidentialityCode"),
        ("XDSRepositoryMetadataError", f"{IPF_DE} hash"),
        ("XDSRepositoryMetadataError", f"{IPF_DE} size"),
        (E, f"{IPF_DE} legalAuthenticator"),
    ]


def test_ipf_iti18_sql_injection_answered_with_a_clean_metadata_error():
    with pytest.raises(StoredQueryError) as info:
        parse_stored_query(parse_xml(_read("ipf/iti18request-sql-injection.xml")))
    assert [(e.error_code, e.location) for e in info.value.errors] == [
        (E, "$XDSDocumentEntryPatientId")
    ]
    assert "unterminated quoted string" in info.value.errors[0].code_context


OPENXDS_DE = "DocumentEntry urn:uuid:87f7bc82-87f0-3782-afba-0c60760bb03d (1.3.6.1.4.1.21367.2010.1.2.110.1260801017357.8)"


def test_openxds_provide_and_register_accepted_under_xds_profile():
    name = "openxds/ProvideAndRegisterDocumentSet-bRequest.xml"
    assert _validate(name, XDS_PROFILE) == []
    submission = parse_submission(parse_xml(_read(name)))
    assert len(submission.object_refs) == 22
    assert submission.documents[submission.entries[0].id].startswith(b"<?xml")


def test_openxds_provide_and_register_under_dmp_profile():
    assert _validate("openxds/ProvideAndRegisterDocumentSet-bRequest.xml", DMP_PROFILE) == [
        (E, f"{OPENXDS_DE} patientId"),
        (E, f"{OPENXDS_DE} classCode"),
        (E, f"{OPENXDS_DE} formatCode"),
        (E, f"{OPENXDS_DE} healthcareFacilityTypeCode"),
        (E, f"{OPENXDS_DE} practiceSettingCode"),
        (E, f"{OPENXDS_DE} confidentialityCode"),
        (E, f"{OPENXDS_DE} legalAuthenticator"),
    ]


_SS = "SubmissionSet SubmissionSet"


def _template_entry_errors(entry_id: str, unique_id: str) -> list[tuple[str, str]]:
    name = f"DocumentEntry {entry_id} ({unique_id})"
    return [(E, f"{name} uniqueId"), (E, f"{name} patientId")]


def test_openxds_submit_document_template_rejected():
    assert _validate("openxds/submit_document.xml", XDS_PROFILE) == [
        (E, f"{_SS} uniqueId"),
        (E, f"{_SS} patientId"),
        *_template_entry_errors("$doc1", "$XDSDocumentEntry.uniqueId"),
        ("XDSMissingDocument", "DocumentEntry $doc1 ($XDSDocumentEntry.uniqueId)"),
    ]


def test_openxds_submit_multiple_documents_template_rejected():
    assert _validate("openxds/submit_multiple_documents.xml", XDS_PROFILE) == [
        (E, f"{_SS} uniqueId"),
        (E, f"{_SS} patientId"),
        *_template_entry_errors("$doc1", "$XDSDocumentEntry.uniqueId"),
        *_template_entry_errors("$doc2", "$XDSDocumentEntry.uniqueId1"),
        ("XDSMissingDocument", "DocumentEntry $doc1 ($XDSDocumentEntry.uniqueId)"),
        ("XDSMissingDocument", "DocumentEntry $doc2 ($XDSDocumentEntry.uniqueId1)"),
    ]


@pytest.mark.parametrize(
    ("name", "association"),
    [
        ("openxds/document_replacement.xml", "rplc_doc"),
        ("openxds/document_addendum.xml", None),
        ("openxds/document_transformation.xml", None),
    ],
)
def test_openxds_relationship_templates_rejected_with_target_error(name, association):
    errors = _validate(name, XDS_PROFILE)
    submission = parse_submission(parse_xml(_read(name)))
    relationship = [a for a in submission.associations if a.type in v.DOCUMENT_RELATIONSHIPS][0]
    assert errors == [
        (E, f"{_SS} uniqueId"),
        (E, f"{_SS} patientId"),
        *_template_entry_errors("doc1", "$XDSDocumentEntry.uniqueId"),
        ("XDSMissingDocument", "DocumentEntry doc1 ($XDSDocumentEntry.uniqueId)"),
        (E, f"Association {relationship.id} targetObject"),
    ]
    if association:
        assert relationship.id == association


def test_openxds_find_documents_query_parsed():
    query = parse_stored_query(parse_xml(_read("openxds/RegistryStoredQueryFindDocs.xml")))
    assert (query.name, query.return_type) == ("FindDocuments", "LeafClass")
    patient = query.one("$XDSDocumentEntryPatientId")
    assert (patient.value, patient.authority_oid) == ("1100099", "1.3.6.1.4.1.21367.2010.1.2.300")
    assert query.values("$XDSDocumentEntryStatus") == [v.STATUS_APPROVED]
    assert (
        query.one("$XDSDocumentEntryCreationTimeFrom"),
        query.one("$XDSDocumentEntryCreationTimeTo"),
    ) == (
        "20091115000000",
        "20091215143054",
    )


def test_openxds_retrieve_request_parsed():
    requests, errors = parse_retrieve_request(
        parse_xml(_read("openxds/RetrieveDocumentSetRequest.xml"))
    )
    assert errors == []
    assert [
        (r.home_community_id, r.repository_unique_id, r.document_unique_id) for r in requests
    ] == [
        (
            "1.3.6.1.4.1.21367.2010.1.2.2045",
            "1.3.6.1.4.1.21367.2010.1.2.1125",
            "1.3.6.1.4.1.21367.2010.1.2.110.1260801017357.8",
        )
    ]


def _capture() -> tuple[str, bytes]:
    raw = _read("ehealthsuisse-epr/ITI-41_request_raw.xml")
    head, _, body = raw.partition(b"\n\n")
    content_type = next(
        line for line in head.decode().splitlines() if line.startswith("Content-Type:")
    )
    return content_type.split(": ", 1)[1], body


_BODY_CONTENT_TYPE = (
    'multipart/related; boundary="uuid:df997b05-d075-415b-9cc8-0f68c74cd993"; type="application/xop+xml"; '
    'start="<root.message@cxf.apache.org>"; start-info="application/soap+xml"'
)
_WSSE = b'<wsse:Security xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd">'


def test_ehealthsuisse_iti41_capture_rejected_for_its_foreign_boundary():
    content_type, body = _capture()
    with pytest.raises(MtomError, match="boundary does not occur"):
        parse_http_body(content_type, body)


def test_ehealthsuisse_iti41_capture_envelope_has_an_undeclared_prefix():
    _, body = _capture()
    package = parse_http_body(_BODY_CONTENT_TYPE, body)
    with pytest.raises(XmlError, match="wsse"):
        read_envelope(package.envelope)


def test_ehealthsuisse_iti41_percent_encoded_cid_resolves_and_metadata_checked():
    _, body = _capture()
    package = parse_http_body(_BODY_CONTENT_TYPE, body)
    envelope = read_envelope(package.envelope.replace(b"<wsse:Security>", _WSSE))
    assert check_action(envelope) == v.ACTION_ITI41
    assert envelope.security is not None
    include = envelope.body.find(f"{{{v.NS_XDSB}}}Document")
    assert "%3A" in include[0].get("href")
    assert document_content(include, package.attachments).lstrip().startswith(b"{")
    submission = parse_submission(envelope.body, package.attachments)
    assert validate_submission(submission, XDS_PROFILE) == []
    de = "DocumentEntry urn:uuid:af516d8d-c449-4a8b-bbb4-9e36489d474d (2.25.267241352778226683619515102048382761723)"
    assert [(e.error_code, e.location) for e in validate_submission(submission, DMP_PROFILE)] == [
        (E, f"{de} patientId"),
        (E, f"{de} serviceStartTime"),
        (E, f"{de} classCode"),
        (E, f"{de} typeCode"),
        (E, f"{de} formatCode"),
        (E, f"{de} healthcareFacilityTypeCode"),
        (E, f"{de} practiceSettingCode"),
        (E, f"{de} confidentialityCode"),
        (E, f"{de} legalAuthenticator"),
        (E, f"{de} sourcePatientInfo"),
    ]


@pytest.mark.parametrize(
    "name", ["ehealthsuisse-epr/ITI-41_request.xml", "ehealthsuisse-epr/ITI-18_response.xml"]
)
def test_ehealthsuisse_line_numbered_listings_are_not_xml(name):
    with pytest.raises(XmlError):
        parse_xml(_read(name))


_DECLARATIONS = (
    f'xmlns:soapenv="{v.NS_SOAP12}" xmlns:wsa="{v.NS_WSA}" '
    'xmlns:wsse="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd" '
    f'xmlns:ns0="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}" xmlns:xsdb="{v.NS_XDSB}" '
    'xmlns:saml2="urn:oasis:names:tc:SAML:2.0:assertion"'
)


def _declared(name: str) -> bytes:
    text = _read(name).decode()
    start = text.index("<soapenv:Envelope")
    end = text.index(">", start)
    return (text[:start] + f"<soapenv:Envelope {_DECLARATIONS}" + text[end:]).encode()


@pytest.mark.parametrize(
    "name", ["ehealthsuisse-epr/ITI-18_request.xml", "ehealthsuisse-epr/ITI-43_request.xml"]
)
def test_ehealthsuisse_samples_with_namespaces_omitted_are_not_xml(name):
    with pytest.raises(XmlError):
        read_envelope(_read(name))


def test_ehealthsuisse_iti18_with_namespaces_declared_is_find_documents_objectref():
    envelope = read_envelope(_declared("ehealthsuisse-epr/ITI-18_request.xml"))
    assert check_action(envelope) == v.ACTION_ITI18
    query = parse_stored_query(envelope.body)
    assert (query.name, query.return_type) == ("FindDocuments", "ObjectRef")
    assert query.one("$XDSDocumentEntryPatientId").value == "7e1c6e78-58f1-4a43-ae88-0d5a5c4ab43e"


def test_ehealthsuisse_iti43_with_namespaces_declared_is_one_document_request():
    envelope = read_envelope(_declared("ehealthsuisse-epr/ITI-43_request.xml"))
    assert check_action(envelope) == v.ACTION_ITI43
    requests, errors = parse_retrieve_request(envelope.body)
    assert errors == [] and [r.document_unique_id for r in requests] == [
        "1.3.6.1.4.1.21367.2017.2.1.75.20200922130227623"
    ]


@pytest.mark.parametrize(
    "name", ["ehealthsuisse-epr/ITI-41_response.xml", "ehealthsuisse-epr/ITI-43_response_raw.xml"]
)
def test_ehealthsuisse_responses_are_refused_as_requests(name):
    envelope = read_envelope(_read(name))
    assert envelope.action.endswith("Response")
    with pytest.raises(SoapFault) as info:
        check_action(envelope)
    assert (info.value.fault_code, info.value.subcode) == ("Sender", "wsa:ActionNotSupported")
