"""Fuzzing the XDS endpoints over HTTP: thousands of hostile requests, never an unhandled error.

Inputs are mutated valid ITI-41, ITI-18 and ITI-43 requests (XML-level: elements removed,
duplicated or moved, attributes and texts replaced by hostile strings; byte-level: flips,
insertions, truncations) and random bytes under random content types, sent to
/xds/repository and /xds/registry through the Flask test client of one app (built once for
the module: the VIHF trust, the store and a deposited document are shared by all examples).

Every answer must be what an XDS client can read: HTTP 200 with a RegistryResponse,
AdhocQueryResponse or RetrieveDocumentSetResponse, or HTTP 400 / 500 with a SOAP 1.2 Fault
(Receiver for 500); never a Python traceback, never an exception escaping the app.
"""

from __future__ import annotations

import copy
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from fhir_server.auth.vihf import WSSE, load_or_create_structure_credential, mint_vihf
from fhir_server.config import load_settings
from fhir_server.rest.app import auth_settings
from ihe_xds import vocabulary as v
from ihe_xds.mtom import build_mtom_response, parse_http_body
from ihe_xds.stored_query import FIND_DOCUMENTS, QUERIES
from tests.http.conftest import INS_SYSTEM, Tokens, a_patient, auth, create_test_app, valid_nir
from tests.xds_builders import build_iti41, patient_cx


def fuzz(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


ANSWER_ROOTS = {
    f"{{{v.NS_RS}}}RegistryResponse",
    f"{{{v.NS_QUERY}}}AdhocQueryResponse",
    f"{{{v.NS_XDSB}}}RetrieveDocumentSetResponse",
}
FAULT = f"{{{v.NS_SOAP12}}}Fault"
ENDPOINTS = ("/xds/repository", "/xds/registry")
GP = "810001234567"
NIR = valid_nir(301)
HOSTILE_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "'",
            "''",
            "('a',",
            "()",
            "%",
            "urn:uuid:",
            "urn:uuid:00000000-0000-0000-0000-000000000000",
            "1.2.3",
            "1..2",
            "^^^&&ISO",
            "x" * 5000,
            "\u202e\u0000",
            "<![CDATA[",
            "&amp;",
            "99999999999999999999",
            "-1",
            v.STATUS_APPROVED,
            v.ASSOC_RPLC,
            patient_cx(NIR),
            f"'{patient_cx(NIR)}'",
            f"('{v.STATUS_APPROVED}')",
        ]
    ),
)
CONTENT_TYPES = st.one_of(
    st.none(),
    # what an HTTP header can carry: no CR / LF / NUL, latin-1
    st.text(
        st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=60,
    ),
    st.sampled_from(
        [
            "application/soap+xml",
            "application/soap+xml; charset=UTF-8",
            "text/xml",
            "application/xml",
            'multipart/related; boundary="b"; type="application/xop+xml"',
            'multipart/related; type="application/xop+xml"; start="<x>"; boundary=MIMEBoundary',
            "multipart/related",
            "multipart/related; boundary=",
            "application/json",
            'application/soap+xml; action="urn:ihe:iti:2007:RetrieveDocumentSet"',
        ]
    ),
)


class Target:
    """The one app every example talks to, with valid requests to mutate."""

    def __init__(self, data_dir) -> None:
        app_settings = load_settings({"data_dir": data_dir, "max_body_bytes": 200_000}, environ={})
        self.app = create_test_app(app_settings)
        self.client = self.app.test_client()
        tokens = Tokens(data_dir)
        credential = load_or_create_structure_credential(data_dir)
        audience = auth_settings(self.app.extensions["fhir"].settings).effective_audience
        created = self.client.post(
            "/fhir/Patient",
            json=a_patient(301),
            headers=auth(tokens.system(), **{"Content-Type": "application/fhir+json"}),
        )
        assert created.status_code == 201
        patient_id = created.get_json()["id"]
        # GP is the médecin traitant, so that valid requests reach the whole pipeline.
        patient = created.get_json()
        patient["generalPractitioner"] = [
            {"identifier": {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": GP}}
        ]
        self.client.put(
            f"/fhir/Patient/{patient_id}",
            json=patient,
            headers=auth(tokens.system(), **{"Content-Type": "application/fhir+json"}),
        )
        assertion = mint_vihf(
            credential,
            practitioner_id=GP,
            profession="10",
            audience=audience,
            patient_ins=f"{INS_SYSTEM}|{NIR}",
            minutes=120,
        )
        self.security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
        self.security.append(assertion)
        deposit = build_iti41(nir=NIR, security=copy.deepcopy(self.security))
        response = self.client.post(
            "/xds/repository", data=deposit.body, headers={"Content-Type": deposit.content_type}
        )
        assert b"ResponseStatusType:Success" in response.get_data()
        self.unique_id = deposit.document_unique_ids["Document01"]
        self.repository_id = self.app.extensions["fhir"].settings.xds_repository_id
        self._serialized: dict[tuple[str, bool], tuple[str, str, bytes]] = {}

    def close(self) -> None:
        self.app.extensions["fhir"].store.close()

    # -- valid requests ------------------------------------------------------------------

    def envelope(self, action: str, body: etree._Element) -> etree._Element:
        envelope = etree.Element(
            f"{{{v.NS_SOAP12}}}Envelope", nsmap={"soap": v.NS_SOAP12, "wsa": v.NS_WSA}
        )
        header = etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Header")
        etree.SubElement(header, f"{{{v.NS_WSA}}}Action").text = action
        etree.SubElement(header, f"{{{v.NS_WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
        header.append(copy.deepcopy(self.security))
        etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Body").append(body)
        return envelope

    def iti18(self, query_id: str) -> etree._Element:
        request = etree.Element(
            f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM}
        )
        etree.SubElement(request, f"{{{v.NS_QUERY}}}ResponseOption", returnType="LeafClass")
        query = etree.SubElement(request, f"{{{v.NS_RIM}}}AdhocQuery", id=query_id)
        values = {
            "patient": f"'{patient_cx(NIR)}'",
            "status": f"('{v.STATUS_APPROVED}')",
            "uniqueId": f"('{self.unique_id}')",
            "uuid": f"('urn:uuid:{uuid.uuid4()}')",
            "associationType": f"('{v.ASSOC_RPLC}')",
        }
        definition = QUERIES[query_id]
        for name, kind in definition.params.items():
            if kind in values:
                slot = etree.SubElement(query, f"{{{v.NS_RIM}}}Slot", name=name)
                value_list = etree.SubElement(slot, f"{{{v.NS_RIM}}}ValueList")
                etree.SubElement(value_list, f"{{{v.NS_RIM}}}Value").text = values[kind]
        return self.envelope(v.ACTION_ITI18, request)

    def iti43(self) -> etree._Element:
        request = etree.Element(
            f"{{{v.NS_XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": v.NS_XDSB}
        )
        item = etree.SubElement(request, f"{{{v.NS_XDSB}}}DocumentRequest")
        etree.SubElement(item, f"{{{v.NS_XDSB}}}RepositoryUniqueId").text = self.repository_id
        etree.SubElement(item, f"{{{v.NS_XDSB}}}DocumentUniqueId").text = self.unique_id
        return self.envelope(v.ACTION_ITI43, request)

    def iti41(self) -> etree._Element:
        request = build_iti41(nir=NIR, mtom=False, security=copy.deepcopy(self.security))
        return etree.fromstring(request.envelope)

    def serialized(self, which: str, mtom: bool) -> tuple[str, str, bytes]:
        """(path, content type, body) of a valid request, the same bytes every time (so that
        hypothesis can replay and shrink byte-level mutations)."""
        key = (which, mtom)
        if key not in self._serialized:
            if which == "iti18":
                tree, path, action = self.iti18(FIND_DOCUMENTS), "/xds/registry", v.ACTION_ITI18
            elif which == "iti43":
                tree, path, action = self.iti43(), "/xds/repository", v.ACTION_ITI43
            else:
                tree, path, action = self.iti41(), "/xds/repository", v.ACTION_ITI41
            envelope = serialize(tree)
            if mtom:
                content_type, body = as_mtom(envelope, action)
            else:
                content_type, body = "application/soap+xml; charset=UTF-8", envelope
            self._serialized[key] = (path, content_type, body)
        return self._serialized[key]

    # -- sending and checking ------------------------------------------------------------

    def post(self, path: str, data: bytes, content_type: str | None) -> None:
        headers = {"Content-Type": content_type} if content_type is not None else {}
        response = self.client.post(path, data=data, headers=headers)
        check_answer(response)


def check_answer(response) -> None:
    data = response.get_data()
    assert response.status_code in (200, 400, 500), (response.status_code, data[:300])
    assert b"Traceback" not in data and b'File "' not in data, data[:500]
    content_type = response.headers.get("Content-Type", "")
    package = parse_http_body(content_type, data)
    root = etree.fromstring(package.envelope)
    assert root.tag == f"{{{v.NS_SOAP12}}}Envelope"
    body = root.find(f"{{{v.NS_SOAP12}}}Body")
    (child,) = [c for c in body if isinstance(c.tag, str)]
    if response.status_code == 200:
        assert child.tag in ANSWER_ROOTS, child.tag
    else:
        assert child.tag == FAULT, child.tag
        code = child.findtext(f"{{{v.NS_SOAP12}}}Code/{{{v.NS_SOAP12}}}Value")
        assert code == ("soap:Sender" if response.status_code == 400 else "soap:Receiver") or (
            response.status_code == 500 and code in ("soap:VersionMismatch", "soap:MustUnderstand")
        ), code


@pytest.fixture(scope="module")
def target(tmp_path_factory):
    target = Target(tmp_path_factory.mktemp("xds-fuzz") / "var")
    yield target
    target.close()


# -- mutations ---------------------------------------------------------------------------------


@st.composite
def mutated_tree(draw, tree: etree._Element) -> etree._Element:
    """A copy of tree with 1-4 XML-level changes in its Body (the VIHF stays valid)."""
    tree = copy.deepcopy(tree)
    body = tree.find(f"{{{v.NS_SOAP12}}}Body")
    for _ in range(draw(st.integers(1, 4))):
        elements = [e for e in body.iter() if isinstance(e.tag, str) and e is not body]
        if not elements:
            break
        element = draw(st.sampled_from(elements))
        operation = draw(
            st.sampled_from(["remove", "duplicate", "attribute", "text", "move", "rename", "empty"])
        )
        parent = element.getparent()
        if operation == "remove" and parent is not None:
            parent.remove(element)
        elif operation == "duplicate" and parent is not None:
            parent.append(copy.deepcopy(element))
        elif operation == "attribute":
            names = list(element.attrib) or ["id"]
            element.set(draw(st.sampled_from(names)), draw(HOSTILE_TEXT.filter(_xml_safe)))
        elif operation == "text":
            element.text = draw(HOSTILE_TEXT.filter(_xml_safe))
        elif operation == "move" and parent is not None:
            destination = draw(st.sampled_from(elements))
            if element not in destination.iterancestors() and destination is not element:
                parent.remove(element)
                destination.append(element)
        elif operation == "rename":
            element.tag = draw(
                st.sampled_from([f"{{{v.NS_RIM}}}Slot", "x", f"{{{v.NS_XDSB}}}Document"])
            )
        elif operation == "empty":
            for child in list(element):
                element.remove(child)
    return tree


def _xml_safe(text: str) -> bool:
    try:
        etree.Element("x").text = text
    except ValueError:
        return False
    return True


@st.composite
def byte_mutation(draw, data: bytes) -> bytes:
    data = bytearray(data)
    for _ in range(draw(st.integers(1, 6))):
        if not data:
            break
        position = draw(st.integers(0, len(data) - 1))
        operation = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        if operation == "flip":
            data[position] ^= 1 << draw(st.integers(0, 7))
        elif operation == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        elif operation == "delete":
            del data[position : position + draw(st.integers(1, 16))]
        else:
            del data[position:]
    return bytes(data)


def serialize(tree: etree._Element) -> bytes:
    return etree.tostring(tree, xml_declaration=True, encoding="UTF-8")


def as_mtom(envelope: bytes, action: str) -> tuple[str, bytes]:
    return build_mtom_response(envelope, [], action=action)


# -- tests -------------------------------------------------------------------------------------


@fuzz(1000)
@given(data=st.binary(max_size=2000), content_type=CONTENT_TYPES, path=st.sampled_from(ENDPOINTS))
def test_random_bytes_under_random_content_types_never_crash(target, data, content_type, path):
    target.post(path, data, content_type)


@fuzz(400)
@given(data=st.data(), mtom=st.booleans())
def test_mutated_iti41_requests_are_answered_cleanly(target, data, mtom):
    tree = data.draw(mutated_tree(target.iti41()))
    envelope = serialize(tree)
    if mtom:
        content_type, body = as_mtom(envelope, v.ACTION_ITI41)
    else:
        content_type, body = "application/soap+xml; charset=UTF-8", envelope
    target.post("/xds/repository", body, content_type)


@fuzz(600)
@given(data=st.data(), query_id=st.sampled_from(sorted(QUERIES)))
def test_mutated_iti18_requests_are_answered_cleanly(target, data, query_id):
    tree = data.draw(mutated_tree(target.iti18(query_id)))
    target.post("/xds/registry", serialize(tree), "application/soap+xml; charset=UTF-8")


@fuzz(500)
@given(data=st.data(), mtom=st.booleans())
def test_mutated_iti43_requests_are_answered_cleanly(target, data, mtom):
    tree = data.draw(mutated_tree(target.iti43()))
    envelope = serialize(tree)
    if mtom:
        content_type, body = as_mtom(envelope, v.ACTION_ITI43)
    else:
        content_type, body = "application/soap+xml; charset=UTF-8", envelope
    target.post("/xds/repository", body, content_type)


@fuzz(500)
@given(data=st.data(), which=st.sampled_from(["iti41", "iti18", "iti43"]), mtom=st.booleans())
def test_byte_mutated_requests_are_answered_cleanly(target, data, which, mtom):
    path, content_type, body = target.serialized(which, mtom)
    target.post(path, data.draw(byte_mutation(body)), content_type)


def test_vihf_signature_the_verifier_cannot_process_is_a_sender_fault(target):
    """Found by the fuzzer: a well-formed but schema-invalid ds:Signature made the XML-DSig
    verifier raise an unexpected error, answered as an internal failure instead of a refusal."""
    path, content_type, body = target.serialized("iti18", False)
    broken = body.replace(b"<ds:Transform ", b"<ds8Transform ", 1)
    assert broken != body
    response = target.client.post(path, data=broken, headers={"Content-Type": content_type})
    check_answer(response)
    root = etree.fromstring(response.get_data())
    assert response.status_code == 400
    assert (
        root.findtext(f".//{{{v.NS_SOAP12}}}Subcode/{{{v.NS_SOAP12}}}Value")
        == "wsse:FailedAuthentication"
    )
