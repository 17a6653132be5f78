"""R01 for XDS: the VIHF SAML assertion (ihe-xds-reference.md §VIHF), signed with XML-DSig."""

from __future__ import annotations

import copy
import datetime as dt
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from lxml import etree

from fhir_server.access.requester import AccessMode, ActorKind
from fhir_server.auth.tokens import AuthenticationError, AuthSettings
from fhir_server.auth.vihf import (
    ATTR_ROLE,
    NSMAP,
    WSSE,
    VihfTrust,
    load_or_create_structure_credential,
    mint_vihf,
    vihf_requester,
    vihf_to_string,
)

INS = "urn:oid:1.2.250.1.213.1.4.8|123456789012311"


@pytest.fixture(scope="module")
def settings(tmp_path_factory):
    return AuthSettings(
        data_dir=tmp_path_factory.mktemp("server"), base_url="https://dmp.example/fhir"
    )


@pytest.fixture(scope="module")
def credential(settings):
    return load_or_create_structure_credential(settings.data_dir)


@pytest.fixture(scope="module")
def trust(settings):
    return VihfTrust.from_settings(settings)


def mint(credential, settings, **overrides):
    arguments = {
        "practitioner_id": "810000000001",
        "profession": "10",
        "specialty": "SM54",
        "subject_name": "Dr Marie Durand",
        "organization_id": "1000000001",
        "patient_ins": INS,
        "audience": settings.effective_audience,
    }
    arguments.update(overrides)
    return mint_vihf(credential, **arguments)


def received(assertion: etree._Element) -> etree._Element:
    """As the XDS face would hand it over: parsed from the wire inside wsse:Security."""
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    security.append(etree.fromstring(vihf_to_string(assertion).encode()))
    return etree.fromstring(etree.tostring(security))


def test_vihf_signed_assertion_yields_the_practitioner(credential, settings, trust):
    requester = vihf_requester(received(mint(credential, settings)), trust)
    assert requester.kind is ActorKind.PRACTITIONER
    assert requester.subject_id == "810000000001"
    assert requester.display_name == "Dr Marie Durand"
    assert requester.profession == "10"
    assert requester.specialty == "SM54"
    assert requester.organization_id == "1000000001"
    assert requester.access_mode is AccessMode.NORMAL
    assert requester.extra["patient_identifier"] == INS


def test_vihf_signature_is_rsa_sha256_enveloped(credential, settings):
    assertion = mint(credential, settings)
    method = assertion.find("ds:Signature/ds:SignedInfo/ds:SignatureMethod", NSMAP)
    assert method.get("Algorithm").endswith("rsa-sha256")
    reference = assertion.find("ds:Signature/ds:SignedInfo/ds:Reference", NSMAP)
    assert reference.get("URI") == f"#{assertion.get('ID')}"
    # SAML orders Issuer, Signature, Subject
    assert [etree.QName(c).localname for c in assertion][:3] == ["Issuer", "Signature", "Subject"]


def test_r11_vihf_bris_de_glace_carries_mode_and_reason(credential, settings, trust):
    assertion = mint(credential, settings, mode="bris_de_glace", reason="patient inconscient")
    requester = vihf_requester(received(assertion), trust)
    assert requester.access_mode is AccessMode.BRIS_DE_GLACE
    assert requester.access_reason == "patient inconscient"


def test_r01_vihf_unsigned_assertion_is_refused(credential, settings, trust):
    assertion = received(mint(credential, settings))
    signed = assertion.find("saml2:Assertion", NSMAP)
    signed.remove(signed.find("ds:Signature", NSMAP))
    with pytest.raises(AuthenticationError, match="not signed"):
        vihf_requester(assertion, trust)


def test_r01_vihf_tampered_attribute_is_refused(credential, settings, trust):
    security = received(mint(credential, settings))
    role = security.find(f".//saml2:Attribute[@Name='{ATTR_ROLE}']/saml2:AttributeValue/*", NSMAP)
    role.set("code", "21")  # turn the médecin into a pharmacien
    with pytest.raises(AuthenticationError, match="signature"):
        vihf_requester(security, trust)


def test_r01_vihf_tampered_name_id_is_refused(credential, settings, trust):
    security = received(mint(credential, settings))
    security.find(".//saml2:NameID", NSMAP).text = "810000000999"
    with pytest.raises(AuthenticationError):
        vihf_requester(security, trust)


def test_r01_vihf_signature_moved_out_of_its_assertion_is_refused(credential, settings, trust):
    genuine = mint(credential, settings)
    forged = copy.deepcopy(genuine)
    forged.find("saml2:Subject/saml2:NameID", NSMAP).text = "810000000999"
    forged.remove(forged.find("ds:Signature", NSMAP))
    forged.append(genuine)
    with pytest.raises(AuthenticationError, match="not signed"):
        vihf_requester(received(forged), trust)


def test_r01_vihf_signature_wrapping_is_refused(credential, settings, trust):
    """XSW: a forged assertion carries the genuine signature; the genuine one hides inside."""
    genuine = mint(credential, settings)
    signature = genuine.find("ds:Signature", NSMAP)
    forged = copy.deepcopy(genuine)
    forged.set("ID", "_forged")
    forged.find("saml2:Subject/saml2:NameID", NSMAP).text = "810000000999"
    forged.remove(forged.find("ds:Signature", NSMAP))
    genuine.remove(signature)
    forged.insert(1, signature)
    advice = etree.SubElement(forged, "{urn:oasis:names:tc:SAML:2.0:assertion}Advice")
    advice.append(genuine)
    with pytest.raises(AuthenticationError, match="does not cover"):
        vihf_requester(received(forged), trust)


def test_r01_vihf_expired_assertion_is_refused(credential, settings, trust):
    old = mint(credential, settings, now=time.time() - 7200, minutes=30)
    with pytest.raises(AuthenticationError, match="expired"):
        vihf_requester(received(old), trust)


def test_r01_vihf_not_yet_valid_assertion_is_refused(credential, settings, trust):
    future = mint(credential, settings, now=time.time() + 3600)
    with pytest.raises(AuthenticationError, match="not yet valid"):
        vihf_requester(received(future), trust)


def test_r01_vihf_for_another_audience_is_refused(credential, settings, trust):
    with pytest.raises(AuthenticationError, match="audience"):
        vihf_requester(received(mint(credential, settings, audience="https://other/fhir")), trust)


def test_r01_vihf_signed_by_an_untrusted_structure_is_refused(tmp_path, settings, trust):
    stranger = load_or_create_structure_credential(tmp_path / "stranger")
    with pytest.raises(AuthenticationError, match="not trusted"):
        vihf_requester(received(mint(stranger, settings)), trust)


def test_vihf_configured_certificates_are_trusted(tmp_path, settings):
    partner = load_or_create_structure_credential(tmp_path / "partner")
    cert_file = tmp_path / "partner.pem"
    cert_file.write_bytes(partner.certificate.public_bytes(serialization.Encoding.PEM))
    configured = AuthSettings(
        data_dir=settings.data_dir, base_url=settings.base_url, vihf_trusted_cert_files=(cert_file,)
    )
    trust = VihfTrust.from_settings(configured, trust_local=False)
    assert vihf_requester(received(mint(partner, settings)), trust).subject_id == "810000000001"
    local = load_or_create_structure_credential(settings.data_dir)
    with pytest.raises(AuthenticationError):
        vihf_requester(received(mint(local, settings)), trust)


def test_r01_missing_assertion_is_refused(trust):
    with pytest.raises(AuthenticationError, match="exactly one"):
        vihf_requester(etree.Element(f"{{{WSSE}}}Security"), trust)


def test_vihf_local_structure_certificate_is_self_signed_and_reused(settings, credential):
    again = load_or_create_structure_credential(settings.data_dir)
    assert again.certificate == credential.certificate
    assert credential.certificate.issuer == credential.certificate.subject
    assert credential.certificate.not_valid_after_utc > dt.datetime.now(dt.UTC)
    assert isinstance(credential.certificate, x509.Certificate)
    assert "PRIVATE" not in repr(credential)
