"""VIHF: the SAML 2.0 identity assertion XDS callers put in the WS-Security header.

A VIHF (Vecteur d'Identification et d'Habilitation Formelles) names the practitioner
(Subject/NameID = IdNat_PS), their profession and specialty, the access mode, the patient
and the software, and is signed by the structure's certificate. The server verifies it
(XML-DSig with signxml, pinned to trusted certificates, validity window, audience) and maps
its attributes to the same claims a token carries, so `requester_from_claims` builds the
Requester for both faces.

Only what the signature covers is read: signxml returns the signed element, and the
attributes are taken from it, never from the tree received (signature-wrapping attacks
move a signed assertion aside and put a forged one where a naive reader looks).

The resource-id (the patient's INS) binds the request to that patient's record (see
`fhir_server.access.binding`); it and the NameID (IdNat_PS) are validated as written, never
trimmed, and a malformed one refuses the assertion.

For `fhir-server token --vihf` and tests, a local structure certificate (self-signed,
RSA 2048) is created in `<data_dir>/keys/` and trusted by default.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml import CanonicalizationMethod, DigestAlgorithm, SignatureMethod, XMLSigner, XMLVerifier
from signxml.exceptions import InvalidInput, SignXMLException
from signxml.verifier import SignatureConfiguration

from fhir_server.access.requester import Requester
from fhir_server.auth.identifiers import idnat_ps_error, ins_cx_token
from fhir_server.auth.keys import (
    keys_dir,
    private_key_from_pem,
    read_private_file,
    write_private_file,
)
from fhir_server.auth.requester import requester_from_claims
from fhir_server.auth.sectors import ATTR_SECTOR, CARE_SECTOR, sector_organization_type
from fhir_server.auth.tokens import AuthenticationError, AuthSettings
from fhir_server.config import ConfigError
from fhir_server.terminology import (
    CANONICAL_BASE,
    OID_TRE_G15_PROFESSION,
    OID_TRE_R38_SPECIALTY,
    OID_TRE_R248_MODE_ACCES,
    SYSTEM_ACCESS_MODE,
    SYSTEM_IDNAT_STRUCT,
)

SAML = "urn:oasis:names:tc:SAML:2.0:assertion"
DS = "http://www.w3.org/2000/09/xmldsig#"
HL7 = "urn:hl7-org:v3"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
NSMAP = {"saml2": SAML, "ds": DS}

ATTR_ROLE = "urn:oasis:names:tc:xacml:2.0:subject:role"
ATTR_PURPOSE = "urn:oasis:names:tc:xspa:1.0:subject:purposeofuse"
ATTR_RESOURCE_ID = "urn:oasis:names:tc:xacml:2.0:resource:resource-id"
ATTR_SUBJECT_ID = "urn:oasis:names:tc:xspa:1.0:subject:subject-id"
ATTR_STRUCTURE = "Identifiant_Structure"
ATTR_AUTH_MODE = "Authentification_Mode"
ATTR_LPS_ID = "LPS_ID"
ATTR_LPS_NAME = "LPS_Nom"
ATTR_LPS_VERSION = "LPS_Version"
ATTR_VIHF_VERSION = "VIHF_Version"
# Decided here: the declared reason of a bris_de_glace access travels in this attribute.
ATTR_ACCESS_REASON = f"{CANONICAL_BASE}/vihf/access-reason"
# A VIHF carries no OAuth scopes: the XDS face is bounded by the DMP rules alone (decided
# here), so its requesters hold what a practitioner's token holds by default.
VIHF_SCOPES = "user/*.cruds"

STRUCTURE_KEY_FILE = "vihf-structure-key.pem"
STRUCTURE_CERT_FILE = "vihf-structure-cert.pem"
LEEWAY_SECONDS = 60


@dataclass(frozen=True)
class StructureCredential:
    """The structure's signing key and certificate (key never shown in repr)."""

    private_key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    def __repr__(self) -> str:
        return f"StructureCredential(subject={self.certificate.subject.rfc4514_string()!r})"


def load_or_create_structure_credential(data_dir: str | os.PathLike[str]) -> StructureCredential:
    """The data dir's self-signed structure certificate and key, created on first use."""
    folder = keys_dir(data_dir)
    key_path, cert_path = folder / STRUCTURE_KEY_FILE, folder / STRUCTURE_CERT_FILE
    if not key_path.exists():
        fresh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = fresh.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        write_private_file(key_path, pem)
    key = private_key_from_pem(read_private_file(key_path))
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(f"{key_path} must hold an RSA private key")
    if not cert_path.exists():
        name = x509.Name(
            [
                x509.NameAttribute(NameOID.COUNTRY_NAME, "FR"),
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fhir-server local structure"),
                x509.NameAttribute(NameOID.COMMON_NAME, "fhir-server VIHF signer"),
            ]
        )
        certificate = self_signed_certificate(key, name, dt.timedelta(days=3650))
        write_private_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return StructureCredential(private_key=key, certificate=certificate)


def self_signed_certificate(
    key: rsa.RSAPrivateKey, name: x509.Name, lifetime: dt.timedelta
) -> x509.Certificate:
    """A signer certificate for `key`, valid from five minutes ago for `lifetime`."""
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


@dataclass(frozen=True)
class VihfTrust:
    """Which signers and which audience a VIHF must have to be accepted."""

    certificates: tuple[x509.Certificate, ...]
    audience: str
    leeway_seconds: int = LEEWAY_SECONDS
    clock: Callable[[], float] = time.time

    @classmethod
    def from_settings(cls, settings: AuthSettings, *, trust_local: bool = True) -> VihfTrust:
        certificates = [_trusted_certificate(Path(p)) for p in settings.vihf_trusted_cert_files]
        if trust_local:
            certificates.insert(
                0, load_or_create_structure_credential(settings.data_dir).certificate
            )
        return cls(tuple(certificates), settings.effective_audience, settings.leeway_seconds)


def _trusted_certificate(path: Path) -> x509.Certificate:
    """A certificate of FHIR_XDS_TRUSTED_CERTIFICATES, or a configuration error naming it
    (a file missing or holding no PEM certificate was a traceback at start-up)."""
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "no PEM certificate"
        raise ConfigError(f"FHIR_XDS_TRUSTED_CERTIFICATES: {path}: {reason}") from None


def _instant(epoch: float) -> str:
    return dt.datetime.fromtimestamp(int(epoch), dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# xs:dateTime as SAML writes its instants (SAML core §1.3.3): date, time, optional fraction
# and zone. Python's fromisoformat also reads a date alone or the basic format (20991231):
# an instant the signer's software may have meant otherwise is refused.
# The zone is at most 14 hours from UTC (XML Schema 1.1 §D.2.1, `timezoneFrag`): Python read
# `+23:59` too, an instant no xs:dateTime spells.
_INSTANT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?"
    r"(Z|[+-](?:(?:0[0-9]|1[0-3]):[0-5][0-9]|14:00))?"
)


def _parse_instant(text: str | None) -> float | None:
    """A validity instant; one without a zone is UTC, as SAML requires its instants to be."""
    if not text:
        return None
    if not _INSTANT.fullmatch(text):
        raise AuthenticationError("VIHF has a malformed validity instant")
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)  # Python reads microseconds at most
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise AuthenticationError("VIHF has a malformed validity instant") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    return value.timestamp()


def _q(ns: str, name: str) -> str:
    return f"{{{ns}}}{name}"


def _attribute(statement: etree._Element, name: str, values: Iterable[Any]) -> None:
    attribute = etree.SubElement(statement, _q(SAML, "Attribute"), Name=name)
    for value in values:
        holder = etree.SubElement(attribute, _q(SAML, "AttributeValue"))
        if isinstance(value, etree._Element):
            holder.append(value)
        else:
            holder.text = str(value)


def _coded(tag: str, code: str, oid: str) -> etree._Element:
    element = etree.Element(_q(HL7, tag), nsmap={None: HL7, "xsi": XSI})
    element.set(_q(XSI, "type"), "CE")
    element.set("code", code)
    element.set("codeSystem", oid)
    return element


def ins_to_cx(system: str, value: str) -> str:
    """`urn:oid:1.2.250.1.213.1.4.8|123` -> `123^^^&1.2.250.1.213.1.4.8&ISO^NH`."""
    return f"{value}^^^&{system.removeprefix('urn:oid:')}&ISO^NH"


def mint_vihf(
    credential: StructureCredential,
    *,
    practitioner_id: str,
    profession: str,
    audience: str,
    specialty: str | None = None,
    subject_name: str = "",
    organization_id: str | None = None,
    sectors: Iterable[str | etree._Element] = (CARE_SECTOR,),
    mode: str = "normal",
    reason: str | None = None,
    patient_ins: str | None = None,  # "urn:oid:<INS OID>|<value>"
    minutes: int = 60,
    now: float | None = None,
    issuer: str = "fhir-server local structure",
) -> etree._Element:
    """A signed VIHF assertion (enveloped XML-DSig, RSA-SHA256, exclusive c14n).

    `sectors`: the Secteur_Activite values, written as given (`SA01^1.2.250.1.71.4.2.4`);
    by default a care sector (`CARE_SECTOR`); none: an assertion the server refuses."""
    issued = time.time() if now is None else now
    assertion_id = f"_{uuid.uuid4().hex}"
    assertion = etree.Element(
        _q(SAML, "Assertion"),
        nsmap={"saml2": SAML},
        ID=assertion_id,
        Version="2.0",
        IssueInstant=_instant(issued),
    )
    etree.SubElement(assertion, _q(SAML, "Issuer")).text = issuer
    # Where signxml puts the signature: after Issuer, as the SAML schema orders it.
    etree.SubElement(assertion, _q(DS, "Signature"), nsmap={"ds": DS}, Id="placeholder")
    subject = etree.SubElement(assertion, _q(SAML, "Subject"))
    name_id = etree.SubElement(subject, _q(SAML, "NameID"))
    name_id.text = practitioner_id
    conditions = etree.SubElement(
        assertion,
        _q(SAML, "Conditions"),
        NotBefore=_instant(issued - 60),
        NotOnOrAfter=_instant(issued + minutes * 60),
    )
    restriction = etree.SubElement(conditions, _q(SAML, "AudienceRestriction"))
    etree.SubElement(restriction, _q(SAML, "Audience")).text = audience
    statement = etree.SubElement(assertion, _q(SAML, "AttributeStatement"))
    roles = [_coded("Role", profession, OID_TRE_G15_PROFESSION)]
    if specialty:
        roles.append(_coded("Role", specialty, OID_TRE_R38_SPECIALTY))
    _attribute(statement, ATTR_SUBJECT_ID, [subject_name or practitioner_id])
    _attribute(statement, ATTR_ROLE, roles)
    _attribute(statement, ATTR_PURPOSE, [_coded("PurposeOfUse", mode, OID_TRE_R248_MODE_ACCES)])
    if organization_id:
        _attribute(statement, ATTR_STRUCTURE, [organization_id])
    sectors = list(sectors)
    if sectors:
        _attribute(statement, ATTR_SECTOR, sectors)
    if patient_ins:
        system, _, value = patient_ins.partition("|")
        _attribute(statement, ATTR_RESOURCE_ID, [ins_to_cx(system, value)])
    if reason:
        _attribute(statement, ATTR_ACCESS_REASON, [reason])
    _attribute(statement, ATTR_AUTH_MODE, ["INDIRECTE"])
    _attribute(statement, ATTR_LPS_ID, ["fhir-server"])
    _attribute(statement, ATTR_LPS_NAME, ["fhir-server token"])
    _attribute(statement, ATTR_LPS_VERSION, ["1"])
    _attribute(statement, ATTR_VIHF_VERSION, ["3.0"])
    signer = XMLSigner(
        signature_algorithm=SignatureMethod.RSA_SHA256,
        digest_algorithm=DigestAlgorithm.SHA256,
        c14n_algorithm=CanonicalizationMethod.EXCLUSIVE_XML_CANONICALIZATION_1_0,
    )
    return signer.sign(
        assertion,
        key=credential.private_key,
        cert=[credential.certificate],
        reference_uri=f"#{assertion_id}",
        id_attribute="ID",
    )


VERIFIED_CACHE_SIZE = 1024


class VerifiedAssertions:
    """Assertions whose signature already verified, by a digest of their exact bytes.

    A VIHF is minted once and sent with every request of a session: verifying its RSA
    signature again (and the canonicalisations around it) was a large share of each XDS
    request (issue 6). signxml verifies `etree.tostring(assertion)`, so for the same bytes
    and the same trusted certificates the outcome differs only by the time: whether the
    signing certificate is within its validity period, checked again here on every hit (a
    hit outside it falls back to full verification). The assertion's own validity window
    and audience are not cached: `vihf_requester` checks them on every use. Only successes
    are kept, at most `size` of them, least recently used dropped first.
    """

    def __init__(self, size: int = VERIFIED_CACHE_SIZE) -> None:
        self.size = size
        self._entries: OrderedDict[tuple, tuple[etree._Element, x509.Certificate]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, moment: dt.datetime) -> etree._Element | None:
        """The signed element verified earlier under `key`, if its signer is valid at `moment`."""
        with self._lock:
            found = self._entries.get(key)
            if found is not None:
                self._entries.move_to_end(key)
        if found is None:
            return None
        signed, certificate = found
        if not certificate.not_valid_before_utc <= moment <= certificate.not_valid_after_utc:
            return None
        return signed

    def put(self, key: tuple, signed: etree._Element, certificate: x509.Certificate) -> None:
        with self._lock:
            self._entries[key] = (signed, certificate)
            self._entries.move_to_end(key)
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


VERIFIED = VerifiedAssertions()


def _verify(
    assertion: etree._Element, trust: VihfTrust, cache: VerifiedAssertions | None = None
) -> etree._Element:
    """The signed assertion element, verified against one of the trusted certificates.

    `cache` (by default the process-wide one) spares the signature check of bytes already
    verified with the same certificates; None verifies every time.
    """
    if assertion.find(_q(DS, "Signature")) is None:
        raise AuthenticationError("VIHF assertion is not signed")
    data = etree.tostring(assertion)  # what signxml verifies for an element
    moment = dt.datetime.fromtimestamp(trust.clock(), dt.UTC)
    key = (hashlib.sha256(data).digest(), trust.certificates)
    if cache is not None:
        signed = cache.get(key, moment)
        if signed is not None:
            return signed
    return _verify_signature(assertion, data, trust, moment, cache, key)


def _verify_signature(
    assertion: etree._Element,
    data: bytes,
    trust: VihfTrust,
    moment: dt.datetime,
    cache: VerifiedAssertions | None,
    key: tuple,
) -> etree._Element:
    config = SignatureConfiguration(
        location="./",  # the Signature must be a child of the Assertion it signs
        expect_references=1,
        signature_methods=frozenset(
            {SignatureMethod.RSA_SHA256, SignatureMethod.RSA_SHA384, SignatureMethod.RSA_SHA512}
        ),
        digest_algorithms=frozenset(
            {DigestAlgorithm.SHA256, DigestAlgorithm.SHA384, DigestAlgorithm.SHA512}
        ),
        verification_time=moment,
    )
    for certificate in trust.certificates:
        try:
            result = XMLVerifier().verify(
                data, x509_cert=certificate, expect_config=config, id_attribute="ID"
            )
        except (SignXMLException, InvalidInput, ValueError):
            continue
        signed = result.signed_xml  # type: ignore[union-attr]
        if (
            signed is None
            or signed.tag != _q(SAML, "Assertion")
            or signed.get("ID") != assertion.get("ID")
        ):
            # The signature is valid but covers some other element (signature wrapping).
            raise AuthenticationError("VIHF signature does not cover the assertion")
        if cache is not None:
            cache.put(key, signed, certificate)
        return signed
    raise AuthenticationError("VIHF signature is invalid or its signer is not trusted")


CM_BEARER = "urn:oasis:names:tc:SAML:2.0:cm:bearer"
CM_SENDER_VOUCHES = "urn:oasis:names:tc:SAML:2.0:cm:sender-vouches"


def _check_subject_confirmations(assertion: etree._Element, now: float, leeway: int) -> None:
    """Bearer or sender-vouches confirmations only, within their own window.

    A holder-of-key assertion is good only with proof that the presenter holds the key it
    names, which the server does not check: served as a bearer one, anyone it was shown to
    could present it. A SubjectConfirmationData's NotOnOrAfter (often shorter than the
    Conditions') was not read: the assertion was served past it."""
    for confirmation in assertion.iterfind("saml2:Subject/saml2:SubjectConfirmation", NSMAP):
        method = confirmation.get("Method")
        if method not in (CM_BEARER, CM_SENDER_VOUCHES):
            raise AuthenticationError(
                f"VIHF SubjectConfirmation method {method!r} is not supported (bearer or "
                "sender-vouches)"
            )
        for data in confirmation.iterfind("saml2:SubjectConfirmationData", NSMAP):
            until = _parse_instant(data.get("NotOnOrAfter"))
            since = _parse_instant(data.get("NotBefore"))
            if until is not None and now >= until + leeway:
                raise AuthenticationError("VIHF subject confirmation expired")
            if since is not None and now + leeway < since:
                raise AuthenticationError("VIHF subject confirmation not yet valid")


def _check_conditions(assertion: etree._Element, trust: VihfTrust) -> None:
    """The validity window and the audience (SAML core §2.5.1).

    One Conditions element (the schema allows no more; the first of two was read); every
    AudienceRestriction must name this server (they are AND-ed, the Audiences of one are
    OR-ed: an assertion restricted to another relying party and to this one is for neither
    alone); a condition the server does not enforce (OneTimeUse: no replay cache here; an
    extension Condition) makes the assertion invalid rather than ignored. ProxyRestriction
    limits the assertions a relying party issues, and the server issues none."""
    all_conditions = assertion.findall(_q(SAML, "Conditions"))
    if len(all_conditions) > 1:
        raise AuthenticationError("VIHF has more than one Conditions element")
    conditions = all_conditions[0] if all_conditions else None
    if conditions is None:
        raise AuthenticationError("VIHF has no Conditions (validity window)")
    for condition in conditions:
        if not isinstance(condition.tag, str):
            continue
        if condition.tag not in (_q(SAML, "AudienceRestriction"), _q(SAML, "ProxyRestriction")):
            raise AuthenticationError(
                f"VIHF condition {etree.QName(condition).localname} is not supported"
            )
    now, leeway = trust.clock(), trust.leeway_seconds
    not_before = _parse_instant(conditions.get("NotBefore"))
    not_on_or_after = _parse_instant(conditions.get("NotOnOrAfter"))
    if not_on_or_after is None:
        raise AuthenticationError("VIHF has no NotOnOrAfter")
    if now >= not_on_or_after + leeway:
        raise AuthenticationError("VIHF expired")
    if not_before is not None and now + leeway < not_before:
        raise AuthenticationError("VIHF not yet valid")
    _check_subject_confirmations(assertion, now, leeway)
    restrictions = conditions.findall("saml2:AudienceRestriction", NSMAP)
    if not restrictions or any(
        trust.audience not in [a.text for a in r.iterfind("saml2:Audience", NSMAP)]
        for r in restrictions
    ):
        raise AuthenticationError("VIHF audience does not name this server")


def _values(assertion: etree._Element, name: str) -> list[etree._Element]:
    path = f"saml2:AttributeStatement/saml2:Attribute[@Name='{name}']/saml2:AttributeValue"
    return list(assertion.iterfind(path, NSMAP))


def _text_value(assertion: etree._Element, name: str) -> str | None:
    """The one value of a text attribute (its surrounding spaces dropped), or None.

    Two different values (in one Attribute, in two, or in two AttributeStatements) refuse
    the assertion: read as the first, the order of elements chose the organisation a
    practitioner acts for (R18) or the declared reason of a bris de glace (R11)."""
    texts = {value.text.strip() for value in _values(assertion, name) if value.text}
    texts.discard("")
    if len(texts) > 1:
        raise AuthenticationError(f"VIHF attribute {name} names more than one value")
    return next(iter(texts), None)


KNOWN_ATTRIBUTES = (
    ATTR_ROLE,
    ATTR_PURPOSE,
    ATTR_RESOURCE_ID,
    ATTR_SUBJECT_ID,
    ATTR_STRUCTURE,
    ATTR_SECTOR,
    ATTR_AUTH_MODE,
    ATTR_LPS_ID,
    ATTR_LPS_NAME,
    ATTR_LPS_VERSION,
    ATTR_VIHF_VERSION,
    ATTR_ACCESS_REASON,
)
_KNOWN_BY_FOLDED = {name.casefold(): name for name in KNOWN_ATTRIBUTES}


def _check_attribute_names(assertion: etree._Element) -> None:
    """Refuse an Attribute whose Name is another spelling (case, surrounding spaces) of one
    the server reads: matched exactly, it was dropped, so that a PurposeOfUse declaring bris
    de glace was served in mode normal (R11) and a resource-id left the request bound to no
    patient. Names the server does not know at all are ignored, as SAML allows."""
    for attribute in assertion.iterfind("saml2:AttributeStatement/saml2:Attribute", NSMAP):
        name = attribute.get("Name") or ""
        known = _KNOWN_BY_FOLDED.get(name.strip().casefold())
        if known is not None and known != name:
            raise AuthenticationError(f"VIHF attribute Name {name!r} is not spelled as {known!r}")


def _coded_values(assertion: etree._Element, name: str) -> list[dict[str, str]]:
    codings = []
    for value in _values(assertion, name):
        for child in value:
            if isinstance(child.tag, str) and child.get("code"):
                codings.append(
                    {"system": f"urn:oid:{child.get('codeSystem', '')}", "code": child.get("code")}
                )
    return codings


def _sector_type(assertion: etree._Element) -> str | None:
    """The R05 organization type of the structure's Secteur_Activite (`auth.sectors`): an
    occupational health service or an insurer was served as a care structure, the attribute
    unread. None for a care sector; a malformed one, or none, refuses the assertion."""
    return sector_organization_type(
        (
            value.text,
            [
                (child.get("code"), child.get("codeSystem"))
                for child in value
                if isinstance(child.tag, str)
            ],
        )
        for value in _values(assertion, ATTR_SECTOR)
    )


def _patient_ins(assertion: etree._Element) -> str | None:
    """The resource-id (the patient's INS, `INS^^^&OID&ISO`) as `urn:oid:OID|INS`, or None
    when the assertion names no patient.

    Taken as written, never trimmed: a resource-id that is present but not one INS (several
    values, an empty one, another identifier, a bad key) refuses the assertion, rather than
    leaving the request unbound to any patient as if it named none.
    """
    values = _values(assertion, ATTR_RESOURCE_ID)
    if not values:
        return None
    if len(values) != 1:
        raise AuthenticationError("VIHF resource-id must hold exactly one value, the patient's INS")
    token, problem = ins_cx_token(values[0].text or "")
    if problem is not None:
        raise AuthenticationError(f"VIHF resource-id: {problem}")
    return token


def _access_modes(assertion: etree._Element) -> list[dict[str, str]]:
    """The access mode (R11, R12) as purpose_of_use codings: every PurposeOfUse value one
    TRE_R248 code, all of them the same mode.

    Fail closed: a PurposeOfUse in another code system, or without a code, was dropped and the
    request served in mode normal; two modes were read as the first, so that the order of the
    values chose between normal and bris_de_glace. Both are refused.
    """
    modes = []
    for value in _values(assertion, ATTR_PURPOSE):
        coded = [child for child in value if isinstance(child.tag, str)]
        if (
            len(coded) != 1
            or not coded[0].get("code")
            or coded[0].get("codeSystem") != OID_TRE_R248_MODE_ACCES
        ):
            raise AuthenticationError(
                "VIHF access mode (PurposeOfUse) must be a TRE_R248 code "
                f"(codeSystem {OID_TRE_R248_MODE_ACCES}): normal, bris_de_glace or centre_15"
            )
        modes.append({"system": SYSTEM_ACCESS_MODE, "code": coded[0].get("code") or ""})
    if len({mode["code"] for mode in modes}) > 1:
        raise AuthenticationError("VIHF access mode (PurposeOfUse) names more than one mode")
    return modes


def vihf_claims(assertion: etree._Element) -> dict[str, Any]:
    """Token-shaped claims from a verified assertion's attributes.

    The NameID (IdNat_PS) and the resource-id are passed on as written: the IdNat_PS is
    validated by `requester_from_claims` like a token's, so the two faces accept exactly the
    same values (a NameID with surrounding spaces is refused on both, not trimmed on one).
    """
    subjects = assertion.findall("saml2:Subject", NSMAP)
    if len(subjects) > 1 or len(assertion.findall("saml2:Subject/saml2:NameID", NSMAP)) > 1:
        # Read as the first, which practitioner the rules judged hung on element order.
        raise AuthenticationError("VIHF must carry one Subject with one NameID (IdNat_PS)")
    name_id = assertion.findtext("saml2:Subject/saml2:NameID", namespaces=NSMAP)
    if not name_id or not name_id.strip():
        raise AuthenticationError("VIHF has no Subject/NameID (IdNat_PS)")
    problem = idnat_ps_error(name_id)
    if problem is not None:
        raise AuthenticationError(f"VIHF Subject/NameID (IdNat_PS): {problem}")
    _check_attribute_names(assertion)
    roles = _coded_values(assertion, ATTR_ROLE)
    purposes = _access_modes(assertion)
    structure = _text_value(assertion, ATTR_STRUCTURE)
    iua: dict[str, Any] = {
        "national_provider_identifier": name_id,
        "subject_name": _text_value(assertion, ATTR_SUBJECT_ID) or "",
        "subject_role": roles,
        "purpose_of_use": purposes,
    }
    if structure:
        iua["subject_organization_id"] = f"{SYSTEM_IDNAT_STRUCT}|{structure}"
    dmp: dict[str, Any] = {}
    sector_type = _sector_type(assertion)
    if sector_type:
        dmp["organization_type"] = sector_type
    reason = _text_value(assertion, ATTR_ACCESS_REASON)
    if reason:
        dmp["access_reason"] = reason
    patient_ins = _patient_ins(assertion)
    if patient_ins:
        dmp["patient_identifier"] = patient_ins
    specialties = [r["code"] for r in roles if r["system"] == f"urn:oid:{OID_TRE_R38_SPECIALTY}"]
    if specialties:
        dmp["specialty"] = specialties[0]
    return {
        "iss": assertion.findtext("saml2:Issuer", namespaces=NSMAP) or "",
        "sub": name_id,
        "jti": assertion.get("ID"),
        "scope": VIHF_SCOPES,
        "extensions": {"ihe_iua": iua, "dmp": dmp},
    }


def find_assertion(security_element: etree._Element) -> etree._Element:
    if security_element.tag == _q(SAML, "Assertion"):
        return security_element
    assertions = security_element.findall("saml2:Assertion", NSMAP)
    if len(assertions) != 1:
        raise AuthenticationError("WS-Security header must hold exactly one VIHF assertion")
    return assertions[0]


def vihf_requester(
    security_element: etree._Element,
    trust: VihfTrust,
    *,
    cache: VerifiedAssertions | None = VERIFIED,
) -> Requester:
    """The Requester of an XDS request, from its `wsse:Security` header (or the Assertion).

    AuthenticationError when the assertion is missing, unsigned, tampered with, signed by
    an untrusted certificate, expired, or for another audience. The signature check of an
    assertion already verified comes from `cache` (see VerifiedAssertions); the validity
    window and audience are checked on every call.
    """
    signed = _verify(find_assertion(security_element), trust, cache)
    _check_conditions(signed, trust)
    return requester_from_claims(vihf_claims(signed))


def vihf_to_string(assertion: etree._Element) -> str:
    return etree.tostring(assertion, encoding="unicode")
