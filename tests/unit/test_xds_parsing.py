"""Reading XDS.b messages: hardened XML, MTOM/XOP, SOAP 1.2 envelopes, ebRIM, responses.

Ends with a hypothesis fuzz test: random and mutated XML / multipart bytes fed to every
parser may only produce the documented outcomes (a value, a MalformedMessage subclass,
StoredQueryError, or RegistryErrors in the result) - never another exception.
"""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from ihe_xds import vocabulary as v
from ihe_xds.ebrim import Submission, parse_submission
from ihe_xds.errors import (
    SEVERITY_WARNING,
    MalformedMessage,
    RegistryError,
    registry_error,
)
from ihe_xds.mtom import (
    Attachment,
    MtomError,
    build_mtom_response,
    document_content,
    normalize_cid,
    parse_http_body,
)
from ihe_xds.responses import (
    RetrievedDocument,
    adhoc_query_response,
    parse_retrieve_request,
    registry_response,
    retrieve_response,
)
from ihe_xds.soap import SoapFault, check_action, fault_envelope, read_envelope, response_envelope
from ihe_xds.stored_query import StoredQueryError, parse_stored_query
from ihe_xds.validation import DMP_PROFILE, validate_submission
from ihe_xds.xml import XmlError, parse_xml
from tests.xds_builders import build_iti41

NS = {
    "soap": v.NS_SOAP12,
    "wsa": v.NS_WSA,
    "rs": v.NS_RS,
    "xdsb": v.NS_XDSB,
    "rim": v.NS_RIM,
    "xop": v.NS_XOP,
}


# --------------------------------------------------------------------------- XML hardening


def test_xml_refuses_internal_entity_expansion_billion_laughs():
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><l>&b;</l>'
    )
    with pytest.raises(XmlError, match="DTD"):
        parse_xml(bomb)


def test_xml_refuses_external_entity_xxe():
    xxe = b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><r>&x;</r>'
    with pytest.raises(XmlError):
        parse_xml(xxe)


def test_xml_refuses_doctype_in_utf16_document():
    doc = '<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r [<!ENTITY x "y">]><r>&x;</r>'.encode(
        "utf-16"
    )
    with pytest.raises(XmlError):
        parse_xml(doc)


def test_xml_size_limit_checked_before_parsing():
    with pytest.raises(XmlError, match="limit of 10 bytes"):
        parse_xml(b"<a>" + b"x" * 20 + b"</a>", max_bytes=10)


@pytest.mark.parametrize("data", [b"", b"   ", b"not xml", b"<a><b></a>", b"<p:a/>"])
def test_xml_malformed_is_xmlerror_with_sender_fault_code(data):
    with pytest.raises(XmlError) as info:
        parse_xml(data)
    assert info.value.fault_code == "Sender"


# --------------------------------------------------------------------------- MTOM


def test_mtom_percent_encoded_xop_href_matches_raw_content_id():
    request = build_iti41(mtom=True, percent_encode_cid=True)
    assert b"%3A" in request.envelope  # the href really is percent-encoded
    package = parse_http_body(request.content_type, request.body)
    envelope = read_envelope(package.envelope)
    submission = parse_submission(envelope.body, package.attachments)
    assert submission.documents == request.documents


@pytest.mark.parametrize("raw", ["<a@b>", "a@b", "cid:a@b", " <a@b> ", "cid:a%40b"])
def test_content_id_normalized_with_or_without_angle_brackets(raw):
    assert normalize_cid(raw) == "a@b"


def _multipart(
    parts: list[tuple[dict[str, str], bytes]], boundary: str = "B0UND", newline: bytes = b"\r\n"
) -> bytes:
    chunks = []
    for headers, body in parts:
        chunks.append(b"--" + boundary.encode() + newline)
        for name, value in headers.items():
            chunks.append(f"{name}: {value}".encode() + newline)
        chunks.append(newline + body + newline)
    chunks.append(b"--" + boundary.encode() + b"--" + newline)
    return b"".join(chunks)


def _soap_with_include(href: str) -> bytes:
    return (
        f'<s:Envelope xmlns:s="{v.NS_SOAP12}"><s:Body><d xmlns:xop="{v.NS_XOP}">'
        f'<xop:Include href="{href}"/></d></s:Body></s:Envelope>'
    ).encode()


def test_mtom_start_parameter_selects_root_part_not_first():
    body = _multipart(
        [
            ({"Content-ID": "<doc@x>", "Content-Type": "application/pdf"}, b"%PDF-1.4"),
            (
                {
                    "Content-ID": "<root@x>",
                    "Content-Type": 'application/xop+xml; type="application/soap+xml"',
                },
                _soap_with_include("cid:doc@x"),
            ),
        ]
    )
    ctype = 'multipart/related; boundary="B0UND"; type="application/xop+xml"; start="<root@x>"; start-info="application/soap+xml"'
    package = parse_http_body(ctype, body)
    assert package.is_mtom and b"Envelope" in package.envelope
    element = read_envelope(package.envelope).body
    assert document_content(element, package.attachments) == b"%PDF-1.4"


def test_mtom_lf_only_line_ends_and_base64_transfer_encoding():
    body = _multipart(
        [
            (
                {"Content-ID": "root@x", "Content-Type": "application/xop+xml"},
                _soap_with_include("cid:doc@x"),
            ),
            (
                {"Content-ID": "doc@x", "Content-Transfer-Encoding": "base64"},
                base64.b64encode(b"\x00\x01binary"),
            ),
        ],
        newline=b"\n",
    )
    package = parse_http_body('multipart/related; boundary=B0UND; type="application/xop+xml"', body)
    assert package.attachments["doc@x"].data == b"\x00\x01binary"


def test_mtom_action_read_from_start_info_when_not_its_own_parameter():
    body = _multipart([({"Content-ID": "<r@x>", "Content-Type": "application/xop+xml"}, b"<a/>")])
    ctype = 'multipart/related; boundary=B0UND; type="application/xop+xml"; start-info="application/soap+xml;action=urn:x:y"'
    assert parse_http_body(ctype, body).action == "urn:x:y"


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (
            'multipart/related; type="application/xop+xml"',
            b"--B0UND\r\n\r\n<a/>\r\n--B0UND--",
            "boundary",
        ),
        ("multipart/related; boundary=OTHER", _multipart([({}, b"<a/>")]), "does not occur"),
        (
            "multipart/related; boundary=B0UND",
            b"--B0UND\r\nContent-ID: <r>\r\n\r\n<a/>",
            "closing boundary",
        ),
        (
            'multipart/related; boundary=B0UND; start="<nope>"',
            _multipart([({"Content-ID": "<r>"}, b"<a/>")]),
            "start",
        ),
        ("text/plain", b"<a/>", "unsupported media type"),
        (None, b"<a/>", "missing Content-Type"),
    ],
)
def test_mtom_broken_packages_are_mtomerror(content_type, body, message):
    with pytest.raises(MtomError, match=message):
        parse_http_body(content_type, body)


def test_mtom_include_naming_absent_part_is_mtomerror():
    element = etree.fromstring(_soap_with_include("cid:missing@x"))[0][0]
    with pytest.raises(MtomError, match="no MIME part"):
        document_content(element, {})


def test_plain_soap_body_with_inline_base64_document_accepted():
    request = build_iti41(mtom=False)
    package = parse_http_body(request.content_type, request.body)
    assert not package.is_mtom and package.action == v.ACTION_ITI41
    submission = parse_submission(read_envelope(package.envelope).body, package.attachments)
    assert submission.documents == request.documents


def test_mtom_response_round_trips_through_the_request_parser():
    element, attachments = retrieve_response(
        [RetrievedDocument("1.2.3", "1.2.3.4", "application/pdf", b"%PDF\x00\xff")]
    )
    envelope = response_envelope(v.ACTION_ITI43, "urn:uuid:m1", element)
    content_type, body = build_mtom_response(envelope, attachments)
    package = parse_http_body(content_type, body)
    read = read_envelope(package.envelope)
    document = read.body.find("xdsb:DocumentResponse/xdsb:Document", NS)
    assert document_content(document, package.attachments) == b"%PDF\x00\xff"
    assert read.action == v.ACTION_ITI43 + "Response"


# --------------------------------------------------------------------------- SOAP


def test_soap_envelope_exposes_action_message_id_security_and_body():
    security = etree.Element(
        "{http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd}Security"
    )
    etree.SubElement(security, "{urn:oasis:names:tc:SAML:2.0:assertion}Assertion", ID="_a1")
    request = build_iti41(mtom=False, security=security)
    envelope = read_envelope(request.envelope)
    assert envelope.action == v.ACTION_ITI41
    assert envelope.message_id == request.message_id
    assert envelope.security is not None and envelope.security[0].get("ID") == "_a1"
    assert check_action(envelope) == v.ACTION_ITI41
    assert envelope.body.tag == v.q(v.NS_XDSB, "ProvideAndRegisterDocumentSetRequest")


def test_soap11_envelope_is_version_mismatch_fault():
    with pytest.raises(SoapFault) as info:
        read_envelope(
            f'<e:Envelope xmlns:e="{v.NS_SOAP11}"><e:Body><x/></e:Body></e:Envelope>'.encode()
        )
    assert info.value.fault_code == "VersionMismatch"


def _envelope(action: str | None, body: str = "<x/>", header_extra: str = "") -> bytes:
    action_xml = f"<wsa:Action>{action}</wsa:Action>" if action else ""
    return (
        f'<s:Envelope xmlns:s="{v.NS_SOAP12}" xmlns:wsa="{v.NS_WSA}"><s:Header>{action_xml}{header_extra}'
        f"<wsa:MessageID>urn:uuid:1</wsa:MessageID></s:Header><s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


def test_unknown_action_is_sender_fault_action_not_supported():
    with pytest.raises(SoapFault) as info:
        check_action(read_envelope(_envelope("urn:example:unknown")))
    assert info.value.fault_code == "Sender" and info.value.subcode == "wsa:ActionNotSupported"


def test_action_with_wrong_body_is_sender_fault():
    with pytest.raises(SoapFault, match="AdhocQueryRequest"):
        check_action(read_envelope(_envelope(v.ACTION_ITI18)))


def test_missing_action_is_sender_fault():
    with pytest.raises(SoapFault, match="Action"):
        check_action(read_envelope(_envelope(None)))


def test_empty_body_and_missing_body_are_faults():
    with pytest.raises(SoapFault, match="empty"):
        read_envelope(_envelope(v.ACTION_ITI18, body=""))
    with pytest.raises(SoapFault, match="no Body"):
        read_envelope(f'<s:Envelope xmlns:s="{v.NS_SOAP12}"/>'.encode())


def test_must_understand_unknown_header_is_fault():
    extra = '<z:Thing xmlns:z="urn:z" s:mustUnderstand="true"/>'
    with pytest.raises(SoapFault) as info:
        read_envelope(_envelope(v.ACTION_ITI18, header_extra=extra))
    assert info.value.fault_code == "MustUnderstand"


def test_response_envelope_action_is_request_action_plus_response_and_relates_to_message_id():
    root = etree.fromstring(
        response_envelope(v.ACTION_ITI41, "urn:uuid:abc", registry_response([]))
    )
    assert root.findtext("soap:Header/wsa:Action", namespaces=NS) == v.ACTION_ITI41 + "Response"
    assert root.findtext("soap:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:abc"
    assert root.find("soap:Body/rs:RegistryResponse", NS).get("status") == v.RESPONSE_SUCCESS


def test_fault_envelope_has_soap12_code_subcode_and_reason():
    root = etree.fromstring(
        fault_envelope("Sender", "bad", subcode="wsa:ActionNotSupported", relates_to="urn:uuid:1")
    )
    fault = root.find("soap:Body/soap:Fault", NS)
    assert fault.findtext("soap:Code/soap:Value", namespaces=NS) == "soap:Sender"
    assert (
        fault.findtext("soap:Code/soap:Subcode/soap:Value", namespaces=NS)
        == "wsa:ActionNotSupported"
    )
    assert fault.findtext("soap:Reason/soap:Text", namespaces=NS) == "bad"
    assert root.findtext("soap:Header/wsa:RelatesTo", namespaces=NS) == "urn:uuid:1"


# --------------------------------------------------------------------------- ebRIM


def test_ebrim_parses_every_documententry_attribute_of_the_builder_message():
    request = build_iti41(mtom=False, masking=("MASQUE_PS",))
    submission = parse_submission(read_envelope(request.envelope).body)
    (entry,) = submission.entries
    assert entry.id == "Document01" and entry.mime_type == "text/xml"
    assert entry.unique_id == request.document_unique_ids["Document01"]
    assert entry.patient_id == request.patient_cx
    assert entry.class_code.code == "10" and entry.class_code.scheme == "1.2.250.1.213.1.1.4.1"
    assert [c.code for c in entry.confidentiality_codes] == ["N", "MASQUE_PS"]
    assert entry.authors[0].roles == ["10^Médecin^1.2.250.1.71.1.2.7"]
    assert entry.source_patient_info[1] == "PID-5|DUPONT^Marie"
    assert submission.submission_set.content_type_code.code == "10"
    assert submission.associations[0].submission_set_status == "Original"


def test_ebrim_loose_classification_marks_submission_set_and_folder_is_recognised():
    xml = f"""<lcm:SubmitObjectsRequest xmlns:lcm="{v.NS_LCM}" xmlns:rim="{v.NS_RIM}"><rim:RegistryObjectList>
      <rim:RegistryPackage id="F1"><rim:ExternalIdentifier identificationScheme="{v.FOLDER_UNIQUE_ID}" value="1.2.3"/></rim:RegistryPackage>
      <rim:Classification classifiedObject="F1" classificationNode="{v.FOLDER_NODE}"/>
      <rim:RegistryPackage id="S1"/>
      <rim:Classification classifiedObject="S1" classificationNode="{v.SS_NODE}"/>
    </rim:RegistryObjectList></lcm:SubmitObjectsRequest>"""
    submission = parse_submission(parse_xml(xml.encode()))
    assert [f.unique_id for f in submission.folders] == ["1.2.3"]
    assert [s.id for s in submission.submission_sets] == ["S1"]


def test_ebrim_second_classcode_is_reported_not_raised():
    request = build_iti41(mtom=False)
    root = read_envelope(request.envelope).body
    entry = root.find(".//rim:ExtrinsicObject", NS)
    class_code = [
        c
        for c in entry.findall("rim:Classification", NS)
        if c.get("classificationScheme") == v.DE_CLASS_CODE
    ][0]
    entry.append(etree.fromstring(etree.tostring(class_code)))
    errors = validate_submission(parse_submission(root), DMP_PROFILE)
    assert [(e.error_code, e.location) for e in errors] == [
        ("XDSRegistryMetadataError", "DocumentEntry Document01 classCode")
    ]


def test_ebrim_invalid_inline_base64_is_repository_metadata_error():
    request = build_iti41(mtom=False)
    root = read_envelope(request.envelope).body
    root.find("xdsb:Document", NS).text = "***not base64***"
    submission = parse_submission(root)
    assert [(e.error_code, e.location) for e in submission.problems] == [
        ("XDSRepositoryMetadataError", "Document Document01")
    ]


# --------------------------------------------------------------------------- responses


def test_registry_response_failure_lists_errors_with_highest_severity():
    errors = [
        registry_error("XDSMissingDocument", "no document", "DocumentEntry D1"),
        RegistryError("XDSRegistryMetadataError", "minor", "X", SEVERITY_WARNING),
    ]
    element = registry_response(errors)
    assert element.get("status") == v.RESPONSE_FAILURE
    error_list = element.find("rs:RegistryErrorList", NS)
    assert error_list.get("highestSeverity").endswith(":Error")
    first = error_list.find("rs:RegistryError", NS)
    assert (first.get("errorCode"), first.get("codeContext"), first.get("location")) == (
        "XDSMissingDocument",
        "no document",
        "DocumentEntry D1",
    )


def test_registry_response_warnings_only_is_success():
    element = registry_response(
        [RegistryError("XDSRegistryMetadataError", "w", "", SEVERITY_WARNING)]
    )
    assert element.get("status") == v.RESPONSE_SUCCESS
    assert element.find("rs:RegistryErrorList", NS).get("highestSeverity").endswith(":Warning")


def test_adhoc_query_response_objectref_and_leafclass_and_partial_success():
    request = build_iti41(mtom=False)
    entry = parse_submission(read_envelope(request.envelope).body).entries[0]
    refs = adhoc_query_response([entry], return_type="ObjectRef")
    assert [r.get("id") for r in refs.findall("rim:RegistryObjectList/rim:ObjectRef", NS)] == [
        "Document01"
    ]
    leaf = adhoc_query_response([entry], [registry_error("XDSTooManyResults", "x")])
    assert leaf.get("status") == v.RESPONSE_PARTIAL_SUCCESS
    assert leaf.find("rim:RegistryObjectList/rim:ExtrinsicObject", NS).get("id") == "Document01"


def test_retrieve_request_parsed_and_incomplete_request_reported():
    xml = f"""<x:RetrieveDocumentSetRequest xmlns:x="{v.NS_XDSB}">
      <x:DocumentRequest><x:HomeCommunityId>urn:oid:1.2</x:HomeCommunityId>
        <x:RepositoryUniqueId>1.2.3</x:RepositoryUniqueId><x:DocumentUniqueId>1.2.3.4</x:DocumentUniqueId></x:DocumentRequest>
      <x:DocumentRequest><x:RepositoryUniqueId>1.2.3</x:RepositoryUniqueId></x:DocumentRequest>
    </x:RetrieveDocumentSetRequest>"""
    requests, errors = parse_retrieve_request(parse_xml(xml.encode()))
    assert [
        (r.repository_unique_id, r.document_unique_id, r.home_community_id) for r in requests
    ] == [("1.2.3", "1.2.3.4", "urn:oid:1.2")]
    assert [(e.error_code, e.location) for e in errors] == [
        ("XDSRepositoryMetadataError", "DocumentRequest[1]")
    ]


def test_retrieve_response_with_errors_and_documents_is_partial_success():
    element, attachments = retrieve_response(
        [RetrievedDocument("1.2.3", "1.2.3.4", "text/xml", b"<a/>")],
        [registry_error("XDSDocumentUniqueIdError", "unknown", "1.2.3.5")],
    )
    assert element.find("rs:RegistryResponse", NS).get("status") == v.RESPONSE_PARTIAL_SUCCESS
    href = element.find("xdsb:DocumentResponse/xdsb:Document/xop:Include", NS).get("href")
    assert normalize_cid(href) == attachments[0].content_id
    assert element.findtext("xdsb:DocumentResponse/xdsb:mimeType", namespaces=NS) == "text/xml"


# --------------------------------------------------------------------------- fuzz

_SEED = build_iti41(mtom=True)
_SEED_INLINE = build_iti41(mtom=False)


def _all_parsers(content_type: str | None, body: bytes) -> None:
    """Run every parser on the input; only the documented outcomes may come out."""
    try:
        package = parse_http_body(content_type, body)
        envelope = read_envelope(package.envelope)
        with contextlib.suppress(SoapFault):
            check_action(envelope)
        element = envelope.body
        for parser in (parse_submission, parse_stored_query, parse_retrieve_request):
            try:
                result = (
                    parser(element, package.attachments)
                    if parser is parse_submission
                    else parser(element)
                )
            except (MalformedMessage, StoredQueryError):
                continue
            if isinstance(result, Submission):
                errors = validate_submission(result, DMP_PROFILE)
                assert all(isinstance(e, RegistryError) for e in errors)
    except MalformedMessage:
        pass


def _mutate(data: bytes, positions: list[int], replacement: bytes) -> bytes:
    out = bytearray(data)
    for position in positions:
        index = position % max(len(out), 1)
        out[index : index + len(replacement)] = replacement
    return bytes(out)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    positions=st.lists(st.integers(min_value=0, max_value=10**6), min_size=1, max_size=4),
    replacement=st.binary(min_size=0, max_size=6)
    | st.sampled_from([b"<", b">", b"--", b"'", b"\r\n\r\n", b"&", b'"', b"\x00"]),
    mtom=st.booleans(),
)
def test_fuzz_mutated_requests_yield_only_documented_outcomes(positions, replacement, mtom):
    seed = _SEED if mtom else _SEED_INLINE
    _all_parsers(seed.content_type, _mutate(seed.body, positions, replacement))


@settings(max_examples=1500, deadline=None)
@given(
    body=st.binary(max_size=400),
    content_type=st.sampled_from(
        [
            None,
            "application/soap+xml",
            "multipart/related; boundary=B",
            'multipart/related; boundary="B"; start="<r>"; type="application/xop+xml"',
            "multipart/related",
            'multipart/related; boundary=""',
        ]
    ),
)
def test_fuzz_random_bytes_yield_only_documented_outcomes(body, content_type):
    _all_parsers(
        content_type,
        b"--B\r\n" + body
        if content_type and "boundary=B" in content_type.replace('"', "")
        else body,
    )


@settings(max_examples=800, deadline=None)
@given(text=st.text(max_size=200))
def test_fuzz_random_text_in_query_values_never_escapes_the_grammar(text):
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    xml = (
        f'<q:AdhocQueryRequest xmlns:q="{v.NS_QUERY}" xmlns:rim="{v.NS_RIM}"><rim:AdhocQuery id="urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d">'
        f'<rim:Slot name="$XDSDocumentEntryPatientId"><rim:ValueList><rim:Value>{escaped}</rim:Value></rim:ValueList></rim:Slot>'
        f"<rim:Slot name=\"$XDSDocumentEntryStatus\"><rim:ValueList><rim:Value>('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')</rim:Value></rim:ValueList></rim:Slot>"
        "</rim:AdhocQuery></q:AdhocQueryRequest>"
    )
    try:
        root = parse_xml(xml.encode("utf-8"))
    except XmlError:
        return  # e.g. characters XML 1.0 forbids
    try:
        query = parse_stored_query(root)
    except StoredQueryError as exc:
        assert {e.error_code for e in exc.errors} <= {
            "XDSRegistryMetadataError",
            "XDSStoredQueryParamNumber",
        }
        return
    patient = query.one("$XDSDocumentEntryPatientId")
    assert "'" not in patient.authority_oid and patient.to_hl7().count("^") >= 3


def test_fuzz_seed_messages_are_valid_before_mutation():
    """The fuzz seeds are real, valid requests: mutations start from a message that passes."""
    for seed in (_SEED, _SEED_INLINE):
        package = parse_http_body(seed.content_type, seed.body)
        submission = parse_submission(read_envelope(package.envelope).body, package.attachments)
        assert validate_submission(submission, DMP_PROFILE) == []


def test_attachment_is_a_value():
    assert Attachment("a", "text/plain", b"x") == Attachment("a", "text/plain", b"x")
