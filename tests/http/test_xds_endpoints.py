"""The XDS.b face end to end: ITI-41, ITI-18, ITI-43 over HTTP, authenticated by a VIHF."""

from __future__ import annotations

import uuid
from pathlib import Path

import orjson
import pytest
from lxml import etree

from fhir_server.access.requester import INTERNAL
from fhir_server.auth.vihf import WSSE, load_or_create_structure_credential, mint_vihf
from fhir_server.rest.app import auth_settings
from fhir_server.terminology import SYSTEM_CONSENT_SCOPE, SYSTEM_IDNAT_PS, SYSTEM_PARTICIPATION_TYPE
from ihe_xds import vocabulary as v
from ihe_xds.mtom import parse_http_body
from tests.http.conftest import FHIR_JSON, INS_SYSTEM, a_patient, auth, valid_nir
from tests.xds_builders import CDA, build_iti41, find_documents_request, patient_cx

GP = "810001234567"  # the médecin traitant, also the documents' author in xds_builders
OTHER_PS = "810009999999"
OID_INS = INS_SYSTEM.removeprefix("urn:oid:")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "external" / "ipf"


@pytest.fixture
def xds(app, client, tokens, data_dir):
    """The app (create_app mounts the XDS blueprint), and helpers to call it."""
    return Xds(app, client, tokens, data_dir)


class Xds:
    def __init__(self, app, client, tokens, data_dir) -> None:
        self.app, self.client, self.tokens = app, client, tokens
        self.runtime = app.extensions["fhir"]
        self.credential = load_or_create_structure_credential(data_dir)
        self.audience = auth_settings(self.runtime.settings).effective_audience
        self.repository_id = self.runtime.settings.xds_repository_id

    # -- setup through the FHIR API ----------------------------------------------------

    def patient(self, n: int, **extra) -> tuple[str, str]:
        """(Patient id, NIR) of a new patient whose médecin traitant is GP."""
        resource = a_patient(
            n,
            generalPractitioner=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}],
            **extra,
        )
        response = self.client.post(
            "/fhir/Patient",
            json=resource,
            headers=auth(self.tokens.system(), **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()["id"], valid_nir(n)

    def block(self, patient_id: str, idnat: str) -> None:
        consent = {
            "resourceType": "Consent",
            "status": "active",
            "scope": {"coding": [{"system": SYSTEM_CONSENT_SCOPE, "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "patient": {"reference": f"Patient/{patient_id}"},
            "provision": {
                "type": "permit",
                "provision": [
                    {
                        "type": "deny",
                        "actor": [
                            {
                                "role": {
                                    "coding": [
                                        {"system": SYSTEM_PARTICIPATION_TYPE, "code": "IRCP"}
                                    ]
                                },
                                "reference": {
                                    "identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}
                                },
                            }
                        ],
                    }
                ],
            },
        }
        response = self.client.post(
            "/fhir/Consent",
            json=consent,
            headers=auth(self.tokens.patient(patient_id), **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code == 201, response.get_data(as_text=True)

    # -- VIHF ----------------------------------------------------------------------------

    def security(self, idnat: str = GP, nir: str | None = None, **kwargs) -> etree._Element:
        assertion = mint_vihf(
            self.credential,
            practitioner_id=idnat,
            profession="10",
            audience=kwargs.pop("audience", self.audience),
            patient_ins=f"{INS_SYSTEM}|{nir}" if nir else None,
            **kwargs,
        )
        header = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
        header.append(assertion)
        return header

    # -- calls ---------------------------------------------------------------------------

    def deposit(self, nir: str, idnat: str = GP, **kwargs):
        request = build_iti41(nir=nir, security=self.security(idnat, nir), **kwargs)
        response = self.client.post(
            "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
        )
        return request, response

    def deposited_unique_id(self, nir: str, **kwargs) -> str:
        """The uniqueId of one document the médecin traitant deposits (ITI-41, asserted)."""
        request, response = self.deposit(nir, **kwargs)
        assert response.status_code == 200, response.get_data(as_text=True)
        (unique_id,) = request.document_unique_ids.values()
        return unique_id

    def soap(self, path: str, action: str, body: etree._Element, security=None, message_id=None):
        envelope = etree.Element(
            f"{{{v.NS_SOAP12}}}Envelope", nsmap={"soap": v.NS_SOAP12, "wsa": v.NS_WSA}
        )
        header = etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Header")
        etree.SubElement(header, f"{{{v.NS_WSA}}}Action").text = action
        etree.SubElement(header, f"{{{v.NS_WSA}}}MessageID").text = (
            message_id or f"urn:uuid:{uuid.uuid4()}"
        )
        if security is not None:
            header.append(security)
        etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Body").append(body)
        data = etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")
        return self.client.post(
            path, data=data, headers={"Content-Type": "application/soap+xml; charset=UTF-8"}
        )

    def find_documents(self, nir: str, idnat: str = GP, return_type: str = "LeafClass"):
        request = find_documents_request(nir, return_type)
        return self.soap("/xds/registry", v.ACTION_ITI18, request, self.security(idnat, nir))

    def retrieve(
        self,
        unique_ids: list[str],
        idnat: str = GP,
        nir: str | None = None,
        repository: str | None = None,
    ):
        request = etree.Element(
            f"{{{v.NS_XDSB}}}RetrieveDocumentSetRequest", nsmap={"xdsb": v.NS_XDSB}
        )
        for unique_id in unique_ids:
            item = etree.SubElement(request, f"{{{v.NS_XDSB}}}DocumentRequest")
            etree.SubElement(item, f"{{{v.NS_XDSB}}}RepositoryUniqueId").text = (
                repository or self.repository_id
            )
            etree.SubElement(item, f"{{{v.NS_XDSB}}}DocumentUniqueId").text = unique_id
        return self.soap("/xds/repository", v.ACTION_ITI43, request, self.security(idnat, nir))


# -- reading answers -----------------------------------------------------------------------


def envelope_of(response) -> etree._Element:
    package = parse_http_body(response.headers["Content-Type"], response.get_data())
    return etree.fromstring(package.envelope), package


def registry_status(response) -> tuple[str, list[str]]:
    root, _ = envelope_of(response)
    status = root.find(f".//{{{v.NS_RS}}}RegistryResponse")
    if status is None:
        status = root.find(f".//{{{v.NS_QUERY}}}AdhocQueryResponse")
    codes = [e.get("errorCode") for e in root.iter(f"{{{v.NS_RS}}}RegistryError")]
    return status.get("status"), codes


def fault_of(response) -> tuple[str, str]:
    root = etree.fromstring(response.get_data())
    code = root.findtext(f".//{{{v.NS_SOAP12}}}Code/{{{v.NS_SOAP12}}}Value")
    reason = root.findtext(f".//{{{v.NS_SOAP12}}}Reason/{{{v.NS_SOAP12}}}Text")
    return code, reason


# -- ITI-41 --------------------------------------------------------------------------------


@pytest.mark.parametrize("mtom", [True, False], ids=["mtom", "inline"])
def test_iti41_dmp_valid_deposit_succeeds_and_is_searchable_over_fhir(xds, mtom):
    patient_id, nir = xds.patient(1)
    request, response = xds.deposit(nir, mtom=mtom)
    assert response.status_code == 200
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    root, package = envelope_of(response)
    assert package.is_mtom is mtom
    assert root.findtext(f".//{{{v.NS_WSA}}}Action") == v.ACTION_ITI41 + "Response"
    assert root.findtext(f".//{{{v.NS_WSA}}}RelatesTo") == request.message_id

    found = xds.client.get(
        f"/fhir/DocumentReference?patient={patient_id}&status=current",
        headers=auth(xds.tokens.practitioner(GP)),
    ).get_json()
    unique_id = request.document_unique_ids["Document01"]
    masters = [e["resource"]["masterIdentifier"]["value"] for e in found.get("entry", [])]
    assert masters == [f"urn:oid:{unique_id}"]
    binary_url = found["entry"][0]["resource"]["content"][0]["attachment"]["url"]
    raw = xds.client.get(
        f"/fhir/{binary_url}", headers=auth(xds.tokens.practitioner(GP), Accept="*/*")
    )
    assert raw.status_code == 200 and raw.get_data() == CDA


def test_iti41_resubmission_with_other_content_is_xdsnonidenticalhash(xds):
    _, nir = xds.patient(2)
    first, response = xds.deposit(nir)
    assert registry_status(response)[0] == v.RESPONSE_SUCCESS
    again = build_iti41(nir=nir, documents=[b"<other/>"], security=xds.security(GP, nir))
    # Same uniqueId as the first deposit, other bytes.
    body = again.body.replace(
        again.document_unique_ids["Document01"].encode(),
        first.document_unique_ids["Document01"].encode(),
    )
    response = xds.client.post(
        "/xds/repository", data=body, headers={"Content-Type": again.content_type}
    )
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSNonIdenticalHash"])


def test_iti41_unknown_patient_is_xdsunknownpatientid(xds):
    _, response = xds.deposit(valid_nir(77))
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSUnknownPatientId"])


def test_iti41_opposed_record_is_xdsunknownpatientid_r03(xds):
    from fhir_server.terminology import EXT_RECORD_STATUS

    _, nir = xds.patient(3, extension=[{"url": EXT_RECORD_STATUS, "valueCode": "opposed"}])
    _, response = xds.deposit(nir)
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSUnknownPatientId"])


def test_iti41_rplc_supersedes_the_replaced_document(xds):
    patient_id, nir = xds.patient(4)
    first, _ = xds.deposit(nir)
    old = xds.client.get(
        f"/fhir/DocumentReference?patient={patient_id}", headers=auth(xds.tokens.practitioner(GP))
    ).get_json()["entry"][0]["resource"]
    entry_uuid = next(i["value"] for i in old["identifier"] if i["value"].startswith("urn:uuid:"))
    _, response = xds.deposit(nir, replaces=entry_uuid, documents=[b"<v2/>"])
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    statuses = {
        e["resource"]["masterIdentifier"]["value"]: e["resource"]["status"]
        for e in xds.client.get(
            f"/fhir/DocumentReference?patient={patient_id}",
            headers=auth(xds.tokens.practitioner(GP)),
        ).get_json()["entry"]
    }
    assert statuses[f"urn:oid:{first.document_unique_ids['Document01']}"] == "superseded"
    assert sorted(statuses.values()) == ["current", "superseded"]
    # Replacing it again: no longer current.
    _, response = xds.deposit(nir, replaces=entry_uuid, documents=[b"<v3/>"])
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSReplaceFailed"])


def test_iti41_invalid_metadata_is_a_registry_response_not_a_fault(xds):
    _, nir = xds.patient(5)
    _, response = xds.deposit(nir, entry_patient_cx=patient_cx(valid_nir(6)))
    status, codes = registry_status(response)
    assert response.status_code == 200 and status == v.RESPONSE_FAILURE
    assert "XDSPatientIdDoesNotMatch" in codes


# -- R01: the VIHF --------------------------------------------------------------------------


def test_r01_request_without_vihf_is_a_sender_fault(xds):
    _, nir = xds.patient(7)
    request = build_iti41(nir=nir)
    response = xds.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    assert response.status_code == 400
    code, reason = fault_of(response)
    assert code == "soap:Sender" and "wsse:Security" in reason


def test_r01_tampered_vihf_is_refused(xds):
    _, nir = xds.patient(8)
    security = xds.security(GP, nir)
    name_id = security.find(".//{urn:oasis:names:tc:SAML:2.0:assertion}NameID")
    name_id.text = OTHER_PS  # a signed assertion, altered after signing
    request = build_iti41(nir=nir, security=security)
    response = xds.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    code, reason = fault_of(response)
    assert response.status_code == 400 and code == "soap:Sender" and "VIHF" in reason


def test_r01_unsigned_and_expired_vihf_are_refused(xds):
    _, nir = xds.patient(9)
    unsigned = xds.security(GP, nir)
    assertion = unsigned[0]
    assertion.remove(assertion.find("{http://www.w3.org/2000/09/xmldsig#}Signature"))
    expired = xds.security(GP, nir, now=1_000_000_000.0)
    for security, words in ((unsigned, "not signed"), (expired, "expired")):
        request = build_iti41(nir=nir, security=security)
        response = xds.client.post(
            "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
        )
        code, reason = fault_of(response)
        assert (response.status_code, code) == (400, "soap:Sender") and words in reason


# -- malformed messages ----------------------------------------------------------------------


def test_unknown_action_is_a_soap_fault_action_not_supported(xds):
    message_id = f"urn:uuid:{uuid.uuid4()}"
    response = xds.soap(
        "/xds/repository", "urn:ihe:iti:2007:Unknown", etree.Element("x"), message_id=message_id
    )
    assert response.status_code == 400
    root = etree.fromstring(response.get_data())
    assert (
        root.findtext(f".//{{{v.NS_SOAP12}}}Subcode/{{{v.NS_SOAP12}}}Value")
        == "wsa:ActionNotSupported"
    )
    assert root.findtext(f".//{{{v.NS_WSA}}}RelatesTo") == message_id


def test_registry_action_on_the_repository_endpoint_is_a_soap_fault(xds):
    response = xds.soap(
        "/xds/repository", v.ACTION_ITI18, etree.Element(f"{{{v.NS_QUERY}}}AdhocQueryRequest")
    )
    assert fault_of(response)[0] == "soap:Sender"


def test_malformed_xml_is_a_soap_fault_without_trace(xds):
    response = xds.client.post(
        "/xds/registry",
        data=b"<soap:Envelope xmlns:soap='x'><unclosed>",
        headers={"Content-Type": "application/soap+xml"},
    )
    code, reason = fault_of(response)
    assert response.status_code == 400 and code == "soap:Sender"
    assert "well-formed" in reason and "Traceback" not in response.get_data(as_text=True)


def test_broken_mtom_package_is_a_soap_fault(xds):
    response = xds.client.post(
        "/xds/repository",
        data=b"--nope\r\nContent-Type: text/plain\r\n\r\nx",
        headers={"Content-Type": 'multipart/related; boundary="b"; type="application/xop+xml"'},
    )
    assert response.status_code == 400 and fault_of(response)[0] == "soap:Sender"


# -- ITI-18 -----------------------------------------------------------------------------------


def test_iti18_find_documents_returns_the_deposited_entry(xds):
    _, nir = xds.patient(10)
    request, _ = xds.deposit(nir)
    response = xds.find_documents(nir)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    root, _ = envelope_of(response)
    entries = root.findall(f".//{{{v.NS_RIM}}}ExtrinsicObject")
    assert len(entries) == 1
    identifiers = {
        e.get("identificationScheme"): e.get("value")
        for e in entries[0].iter(f"{{{v.NS_RIM}}}ExternalIdentifier")
    }
    assert identifiers[v.DE_UNIQUE_ID] == request.document_unique_ids["Document01"]
    assert identifiers[v.DE_PATIENT_ID].startswith(f"{nir}^^^&{OID_INS}&ISO")
    assert root.findtext(f".//{{{v.NS_WSA}}}Action") == v.ACTION_ITI18 + "Response"


def test_iti18_object_ref_answer(xds):
    _, nir = xds.patient(11)
    xds.deposit(nir)
    root, _ = envelope_of(xds.find_documents(nir, return_type="ObjectRef"))
    refs = root.findall(f".//{{{v.NS_RIM}}}ObjectRef")
    assert len(refs) == 1 and refs[0].get("id").startswith("urn:uuid:")


def test_r09_blocked_practitioner_query_is_localpolicyrestrictionerror(xds):
    patient_id, nir = xds.patient(12)
    xds.deposit(nir)
    xds.block(patient_id, OTHER_PS)
    status, codes = registry_status(xds.find_documents(nir, idnat=OTHER_PS))
    assert (status, codes) == (v.RESPONSE_FAILURE, ["LocalPolicyRestrictionError"])


def test_iti18_sql_injection_query_gets_a_clean_metadata_error(xds):
    _, nir = xds.patient(13)
    body = etree.fromstring((FIXTURES / "iti18request-sql-injection.xml").read_bytes())
    response = xds.soap("/xds/registry", v.ACTION_ITI18, body, xds.security(GP, nir))
    assert response.status_code == 200
    status, codes = registry_status(response)
    assert status == v.RESPONSE_FAILURE and codes == ["XDSRegistryMetadataError"]


def test_iti18_too_many_results_is_xdstoomanyresults(xds):
    _, nir = xds.patient(14)
    xds.deposit(nir, documents=[b"<a/>", b"<b/>"])
    xds.runtime.settings = _with(xds.runtime.settings, xds_max_results=1)
    assert registry_status(xds.find_documents(nir)) == (v.RESPONSE_FAILURE, ["XDSTooManyResults"])


def _with(settings, **changes):
    from dataclasses import replace

    return replace(settings, **changes)


# -- ITI-43 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mtom", [True, False], ids=["mtom", "inline"])
def test_iti43_retrieve_returns_the_deposited_bytes(xds, mtom):
    content = bytes(range(256)) * 4  # every byte value, binary-safe
    _, nir = xds.patient(15)
    request, _ = xds.deposit(nir, documents=[content], mtom=mtom)
    response = xds.retrieve([request.document_unique_ids["Document01"]], nir=nir)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("multipart/related")
    root, package = envelope_of(response)
    assert registry_status(response) == (v.RESPONSE_SUCCESS, [])
    include = root.find(f".//{{{v.NS_XDSB}}}Document/{{{v.NS_XOP}}}Include")
    cid = include.get("href").removeprefix("cid:")
    assert package.attachments[cid].data == content
    assert root.findtext(f".//{{{v.NS_XDSB}}}mimeType") == "text/xml"


def test_iti43_unknown_repository_is_xdsunknownrepositoryid(xds):
    _, nir = xds.patient(16)
    request, _ = xds.deposit(nir)
    response = xds.retrieve(
        [request.document_unique_ids["Document01"]], nir=nir, repository="1.2.3.4"
    )
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSUnknownRepositoryId"])


def test_r18_document_the_requester_may_not_see_is_answered_like_an_unknown_one(xds):
    _, nir = xds.patient(17)
    request, _ = xds.deposit(nir)
    hidden_id = request.document_unique_ids["Document01"]
    unknown_id = "1.2.250.1.999.4.424242.1"
    # OTHER_PS is neither the médecin traitant nor authorized on that record.
    answers = []
    for unique_id in (hidden_id, unknown_id):
        response = xds.retrieve([unique_id], idnat=OTHER_PS)
        root, package = envelope_of(response)
        errors = root.findall(f".//{{{v.NS_RS}}}RegistryError")
        assert package.attachments == {} and len(errors) == 1
        answers.append(
            (
                response.status_code,
                registry_status(response)[0],
                errors[0].get("errorCode"),
                errors[0].get("codeContext").replace(unique_id, "<id>"),
                errors[0].get("location").replace(unique_id, "<id>"),
            )
        )
    assert answers[0] == answers[1]
    assert answers[0][2] == "XDSDocumentUniqueIdError"


def test_r18_document_of_another_patient_is_not_retrievable_with_a_vihf_for_mine(xds):
    _, nir_a = xds.patient(20)
    other = a_patient(21)  # a record where GP is not the médecin traitant
    created = xds.client.post(
        "/fhir/Patient",
        json=other,
        headers=auth(xds.tokens.system(), **{"Content-Type": FHIR_JSON}),
    )
    assert created.status_code == 201
    request, response = xds.deposit(valid_nir(21), idnat=OTHER_PS)
    assert registry_status(response)[0] == v.RESPONSE_SUCCESS  # deposits need an open record only
    response = xds.retrieve([request.document_unique_ids["Document01"]], nir=nir_a)
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["XDSDocumentUniqueIdError"])


def test_r09_blocked_practitioner_deposit_is_localpolicyrestrictionerror(xds):
    patient_id, nir = xds.patient(22)
    xds.block(patient_id, OTHER_PS)
    _, response = xds.deposit(nir, idnat=OTHER_PS)
    assert registry_status(response) == (v.RESPONSE_FAILURE, ["LocalPolicyRestrictionError"])


def test_iti43_mixed_request_is_partialsuccess(xds):
    _, nir = xds.patient(18)
    request, _ = xds.deposit(nir)
    response = xds.retrieve(
        [request.document_unique_ids["Document01"], "1.2.250.1.999.4.1.1"], nir=nir
    )
    status, codes = registry_status(response)
    assert (status, codes) == (v.RESPONSE_PARTIAL_SUCCESS, ["XDSDocumentUniqueIdError"])
    root, package = envelope_of(response)
    assert len(package.attachments) == 1


def test_xds_transactions_are_audited(xds):
    patient_id, nir = xds.patient(19)
    request, _ = xds.deposit(nir)
    xds.find_documents(nir)
    xds.retrieve([request.document_unique_ids["Document01"]], nir=nir)
    events = xds.runtime.service.search(
        INTERNAL, "AuditEvent", [("patient", patient_id), ("_count", "100")]
    )
    subtypes = {
        c.get("code")
        for _, _, body, _ in events.matches
        for c in orjson.loads(body).get("subtype", [])
    }
    assert {"ITI-41", "ITI-18", "ITI-43"} <= subtypes


def test_iti18_get_documents_takes_the_patient_from_the_vihf_r04(xds):
    from ihe_xds.stored_query import GET_DOCUMENTS

    _, nir = xds.patient(23)
    request, _ = xds.deposit(nir)
    unique_id = request.document_unique_ids["Document01"]

    def get_documents(security):
        body = etree.Element(
            f"{{{v.NS_QUERY}}}AdhocQueryRequest", nsmap={"query": v.NS_QUERY, "rim": v.NS_RIM}
        )
        etree.SubElement(body, f"{{{v.NS_QUERY}}}ResponseOption", returnType="LeafClass")
        query = etree.SubElement(body, f"{{{v.NS_RIM}}}AdhocQuery", id=GET_DOCUMENTS)
        slot = etree.SubElement(query, f"{{{v.NS_RIM}}}Slot", name="$XDSDocumentEntryUniqueId")
        values = etree.SubElement(slot, f"{{{v.NS_RIM}}}ValueList")
        etree.SubElement(values, f"{{{v.NS_RIM}}}Value").text = f"('{unique_id}')"
        return xds.soap("/xds/registry", v.ACTION_ITI18, body, security)

    named = get_documents(xds.security(GP, nir))
    assert registry_status(named) == (v.RESPONSE_SUCCESS, [])
    assert len(envelope_of(named)[0].findall(f".//{{{v.NS_RIM}}}ExtrinsicObject")) == 1
    unnamed = get_documents(xds.security(GP))
    assert registry_status(unnamed) == (v.RESPONSE_FAILURE, ["XDSStoredQueryMissingParam"])


def test_oversized_request_is_a_soap_fault(xds):
    limit = xds.runtime.settings.max_body_bytes
    _, nir = xds.patient(24)
    request = build_iti41(nir=nir, documents=[b"x" * (limit + 1)], security=xds.security(GP, nir))
    response = xds.client.post(
        "/xds/repository", data=request.body, headers={"Content-Type": request.content_type}
    )
    code, reason = fault_of(response)
    assert (response.status_code, code) == (400, "soap:Sender") and "limit" in reason
