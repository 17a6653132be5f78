"""Issue 6 ("Speed"): the fast paths of the XDS face give what the plain ones gave.

Each faster reading or writing is checked against the definition it replaces (lxml
serialisation, uuid.uuid5, the email package's Content-Type reading, strftime), and the
VIHF verification cache against the rules that must hold on every request (validity
window, audience, signer certificate validity, tampering).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import datetime as dt
import time
import uuid
from email.message import Message
from email.utils import collapse_rfc2231_value

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from fhir_server.auth.tokens import AuthenticationError, AuthSettings
from fhir_server.auth.vihf import (
    WSSE,
    StructureCredential,
    VerifiedAssertions,
    VihfTrust,
    load_or_create_structure_credential,
    mint_vihf,
    self_signed_certificate,
    vihf_requester,
    vihf_to_string,
)
from ihe_xds import soap
from ihe_xds import vocabulary as v
from ihe_xds.ebrim import (
    Author,
    Coded,
    DocumentEntry,
    Slot,
    StableIds,
    parse_submission,
    stable_id,
)
from ihe_xds.errors import registry_error
from ihe_xds.hl7v2 import XCN, fhir_to_xds_time, xcn_to_hl7
from ihe_xds.mtom import (
    Attachment,
    MtomError,
    _strict_b64decode,
    build_mtom_response,
    document_content,
    parse_http_body,
)
from ihe_xds.responses import adhoc_query_answer, adhoc_query_response, answer_envelope
from ihe_xds.vocabulary import NS_XDSB, q
from tests import xds_ebrim_reference as ebrim_reference
from tests.xds_builders import build_iti41

# -- ITI-18 LeafClass answers written as text ------------------------------------------------

# Characters that exercise every escaping rule of libxml2's serialiser...
_AWKWARD = st.sampled_from(
    ["a", "Z", "é", "&", "<", ">", '"', "'", "\n", "\r", "\t", " ", "]]>", "\x85", "\u2028"]
    + ["\U0001f600"]
)
# ... and some lxml refuses (rarer, so that most entries take the text path).
_REFUSED = st.sampled_from(["\x01", "\x1f", "\ufffe", "\ud800"])
_TEXT = st.lists(_AWKWARD, max_size=6).map("".join)
_MAYBE = st.one_of(st.none(), _TEXT)
_CODED = st.builds(Coded, code=_TEXT, scheme=_MAYBE, display=_MAYBE)


@st.composite
def document_entries(draw) -> DocumentEntry:
    entry = DocumentEntry(id=draw(st.one_of(_TEXT, st.just("urn:uuid:1234"))))
    for name in ("mime_type", "status", "home", "logical_id", "version", "title", "comments"):
        setattr(entry, name, draw(_MAYBE))
    for name in ("creation_time", "hash", "size", "uri", "patient_id", "unique_id"):
        setattr(entry, name, draw(_MAYBE))
    entry.source_patient_info = draw(st.lists(_TEXT, max_size=2))
    entry.class_code = draw(st.one_of(st.none(), _CODED))
    entry.event_codes = draw(st.lists(_CODED, max_size=2))
    entry.authors = draw(
        st.lists(
            st.builds(Author, person=_MAYBE, institutions=st.lists(_TEXT, max_size=2)),
            max_size=2,
        )
    )
    entry.extra_slots = draw(
        st.lists(st.builds(Slot, name=_TEXT, values=st.lists(_TEXT)), max_size=2)
    )
    entry.limited_metadata = draw(st.booleans())
    if draw(st.integers(0, 9)) == 0:
        entry.comments = draw(_REFUSED)
    return entry


def _outcome(function):
    try:
        return "ok", function()
    except Exception as exc:  # the answer path turns any exception into XDSRegistryError
        return "raised", type(exc)


@pytest.fixture
def fixed_message_id(monkeypatch):
    fixed = uuid.UUID(int=6)
    monkeypatch.setattr(soap.uuid, "uuid4", lambda: fixed)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=st.lists(document_entries(), min_size=1, max_size=3), with_error=st.booleans())
def test_iti18_leafclass_text_answer_is_byte_identical_to_lxml_serialisation(
    fixed_message_id, entries, with_error
):
    errors = [registry_error("XDSRegistryError", "x<y & z", "here")] if with_error else []
    built = _outcome(
        lambda: soap.response_envelope("urn:a", "urn:uuid:r", adhoc_query_response(entries, errors))
    )
    written = _outcome(
        lambda: answer_envelope(adhoc_query_answer(entries, errors), "urn:a", "urn:uuid:r")
    )
    assert written == built


def test_iti18_leafclass_of_plain_entries_takes_the_text_path_and_odd_values_do_not():
    entry = DocumentEntry(id="urn:uuid:1", title="Compte rendu <CRH> & co", hash="ab")
    assert adhoc_query_answer([entry]).objects_text is not None
    assert adhoc_query_answer([entry], return_type="ObjectRef").objects_text is None
    # A value lxml converts (bytes) is left to lxml, and so is one it refuses, with its error.
    assert adhoc_query_answer([dataclasses.replace(entry, title=b"CRH")]).objects_text is None
    with pytest.raises(ValueError, match="XML compatible"):
        adhoc_query_answer([dataclasses.replace(entry, title="bell\x07")])


@given(parts=st.lists(st.text(max_size=20), min_size=1, max_size=4))
def test_stable_ids_are_the_rfc4122_uuid5_of_the_joined_parts(parts):
    expected = uuid.uuid5(uuid.NAMESPACE_URL, "|".join(parts))
    assert stable_id(*parts) == f"urn:uuid:{expected}"


@given(owner=st.text(max_size=20), parts=st.lists(st.text(max_size=20), min_size=1, max_size=3))
def test_stable_ids_of_one_owner_are_those_of_stable_id(owner, parts):
    assert StableIds.of(owner)(*parts) == stable_id(owner, *parts)


def _xcn_as_defined(id, family, given, suffix, prefix, namespace, oid, name_type, id_type):
    """XCN.to_hl7 as first written: thirteen components, empty ones dropped from the end."""
    given = list(given) + [None] * (2 - len(given))
    authority = f"{namespace or ''}&{oid or ''}&ISO" if oid or namespace else ""
    components = [id, family, given[0], " ".join(g for g in given[1:] if g) or None]
    components += [suffix, prefix, None, None, authority, name_type, None, None, id_type]
    return "^".join(c or "" for c in components).rstrip("^")


_PART = st.one_of(st.none(), st.text(alphabet="ab &^", max_size=4))


@given(
    values=st.tuples(_PART, _PART, st.lists(_PART, max_size=3).map(tuple), *[_PART] * 6),
)
def test_xcn_written_without_the_dataclass_is_the_xcn_of_the_dataclass(values):
    assert xcn_to_hl7(*values) == XCN(*values).to_hl7() == _xcn_as_defined(*values)


# -- MTOM reading ----------------------------------------------------------------------------


def _email_reading(header: str) -> tuple[str, dict[str, str]]:
    """RFC 2045/2231 Content-Type reading by the standard library, the reference; a
    parameter given twice is refused (the email package keeps both, a dict the last)."""
    message = Message()
    message["Content-Type"] = header
    params: dict[str, str] = {}
    for k, value in message.get_params(failobj=[])[1:]:
        if k.lower() in params:
            raise ValueError(f"parameter {k!r} given twice")
        params[k.lower()] = (
            collapse_rfc2231_value(value) if isinstance(value, tuple) else str(value)
        )
    return message.get_content_type(), params


_TOKEN = st.text(alphabet="abcXYZ019-._+!#$&^*%'~", min_size=1, max_size=8)
_QUOTED = st.text(alphabet='ab <>@:;=/\\"é\t', max_size=8).map(lambda s: f'"{s}"')
_PARAM = st.tuples(
    st.sampled_from(["", " ", "\t"]),
    _TOKEN,
    st.sampled_from(["=", " = ", ""]),
    st.one_of(_TOKEN, _QUOTED, st.just("")),
)
_HEADERS = st.tuples(
    st.sampled_from(["multipart/related", "Multipart/Related", "application/soap+xml", "text"]),
    st.lists(_PARAM, max_size=4),
    st.sampled_from(["", ";", " ", "; "]),
).map(lambda t: t[0] + "".join(f";{a}{n}{e}{v}" for a, n, e, v in t[1]) + t[2])


@settings(max_examples=500)
@given(header=_HEADERS)
def test_mtom_content_type_reading_agrees_with_the_email_package(header):
    """The media type and parameters that decide MTOM reading (boundary, start, action)."""
    from ihe_xds.mtom import _read_content_type

    try:
        expected = _email_reading(header)
    except Exception:
        with pytest.raises(Exception):  # noqa: B017 - parse_http_body maps it to MtomError
            _read_content_type(header)
        return
    assert _read_content_type(header) == expected


def _multipart(boundary: bytes, documents: list[bytes], newline: bytes) -> bytes:
    """An MTOM body written by hand, with `newline` as the line end of its MIME structure."""
    chunks = [b"--" + boundary + newline, b"Content-Type: application/xop+xml" + newline]
    chunks += [newline, b"<e/>", newline]
    for index, data in enumerate(documents):
        chunks += [b"--" + boundary + newline, b"Content-ID: <d%d@x>" % index + newline]
        chunks += [newline, data, newline]
    return b"".join([*chunks, b"--" + boundary + b"--" + newline])


@settings(max_examples=300)
@given(
    documents=st.lists(
        st.lists(
            st.sampled_from([b"x", b"\r\n", b"\n", b"--", b"\r", b"\x00", b"\xff", b" ", b"-B"]),
            max_size=12,
        ).map(b"".join),
        min_size=1,
        max_size=3,
    ),
    newline=st.sampled_from([b"\r\n", b"\n"]),
)
def test_mtom_parts_are_recovered_whatever_look_alike_delimiters_they_hold(documents, newline):
    boundary = b"B0undary"
    # Data holding the delimiter followed by something else than "--", a space or a line end.
    documents = [d + newline + b"--" + boundary + b"X" + d for d in documents]
    if newline == b"\n":  # bare LF MIME: a CR in the data would read as part of the structure
        documents = [d.replace(b"\r", b"") for d in documents]
    body = _multipart(boundary, documents, newline)
    package = parse_http_body('multipart/related; boundary="B0undary"', body)
    assert package.envelope == b"<e/>"
    assert [a.data for a in package.attachments.values()] == documents


def test_mtom_truncated_multipart_is_refused():
    content_type, body = build_mtom_response(b"<e/>", [Attachment("d@x", "text/plain", b"abc")])
    with pytest.raises(MtomError, match="closing boundary"):
        parse_http_body(content_type, body[: body.rindex(b"--MIMEBoundary")])


def _document(text: str) -> etree._Element:
    element = etree.Element(q(NS_XDSB, "Document"))
    element.text = text
    return element


def test_inline_document_base64_drops_ascii_and_unicode_whitespace_as_before():
    data = bytes(range(256)) * 3
    encoded = base64.b64encode(data).decode()
    spaced = "\n ".join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    assert document_content(_document(spaced + "\t\r \n"), {}) == data
    assert document_content(_document(spaced + "\u00a0\u2003"), {}) == data
    for broken in (encoded[:-1], encoded + "é", "QUJD=QUJD", encoded.replace("A", "-", 1)):
        with pytest.raises(ValueError, match="not valid base64"):
            document_content(_document(broken), {})


# -- times of ITI-18 answers -----------------------------------------------------------------


@given(
    moment=st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 30)),
    zone=st.sampled_from(["", "Z", "+01:00", "-05:30", "+00:00"]),
    seconds=st.booleans(),
)
def test_fhir_to_xds_time_is_the_utc_moment_in_hl7_form(moment, zone, seconds):
    m = moment
    text = f"{m.year:04d}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}"
    text += (f":{m.second:02d}" if seconds else "") + zone
    naive = moment.replace(second=moment.second if seconds else 0, microsecond=0)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = dt.timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
        try:
            naive = naive - sign * offset
        except OverflowError:
            return
    # The year in four digits: strftime writes one before 1000 without its leading zeros, an
    # HL7 time XDS reads as another (`tests/unit/test_access_periods.py`).
    assert fhir_to_xds_time(text) == f"{naive.year:04d}" + naive.strftime("%m%d%H%M%S")


def test_fhir_to_xds_time_still_refuses_impossible_dates():
    for text in ("2024-02-30T10:00:00Z", "2024-13-01T00:00Z", "2024-01-01T24:00:00Z"):
        with pytest.raises(ValueError):
            fhir_to_xds_time(text)


# -- VIHF verification cache -----------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def auth(tmp_path_factory) -> AuthSettings:
    return AuthSettings(data_dir=tmp_path_factory.mktemp("vihf"), base_url="https://dmp.test/fhir")


@pytest.fixture(scope="module")
def credential(auth) -> StructureCredential:
    return load_or_create_structure_credential(auth.data_dir)


def _trust(auth, clock, certificates=None, audience=None) -> VihfTrust:
    base = VihfTrust.from_settings(auth)
    return dataclasses.replace(
        base,
        certificates=certificates or base.certificates,
        audience=audience or base.audience,
        clock=clock,
    )


def _received(assertion: etree._Element) -> etree._Element:
    security = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    security.append(etree.fromstring(vihf_to_string(assertion).encode()))
    return etree.fromstring(etree.tostring(security))


def _mint(credential, auth, clock, **overrides) -> etree._Element:
    arguments = {
        "practitioner_id": "810000000001",
        "profession": "10",
        "audience": auth.effective_audience,
        "now": clock(),
        "minutes": 30,
    }
    arguments.update(overrides)
    return mint_vihf(credential, **arguments)


@pytest.fixture
def verifications(monkeypatch):
    """Counts the signature checks really made (cache misses)."""
    from signxml import XMLVerifier

    calls = []
    original = XMLVerifier.verify

    def counting(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(XMLVerifier, "verify", counting)
    return calls


def test_vihf_identical_assertion_is_verified_once_then_served_from_the_cache(
    credential, auth, verifications
):
    clock, cache = Clock(), VerifiedAssertions()
    trust = _trust(auth, clock)
    assertion = _mint(credential, auth, clock)
    first = vihf_requester(_received(assertion), trust, cache=cache)
    second = vihf_requester(_received(assertion), trust, cache=cache)
    assert first.subject_id == second.subject_id == "810000000001"
    assert len(verifications) == 1 and len(cache) == 1


def test_vihf_expired_assertion_is_refused_even_when_its_verification_is_cached(
    credential, auth, verifications
):
    clock, cache = Clock(), VerifiedAssertions()
    trust = _trust(auth, clock)
    security = _received(_mint(credential, auth, clock, minutes=30))
    vihf_requester(security, trust, cache=cache)
    clock.now += 30 * 60 + trust.leeway_seconds + 1
    with pytest.raises(AuthenticationError, match="expired"):
        vihf_requester(security, trust, cache=cache)
    assert len(verifications) == 1  # refused on the cached verification, not by a new one


def test_vihf_cached_verification_still_checks_the_audience(credential, auth):
    clock, cache = Clock(), VerifiedAssertions()
    security = _received(_mint(credential, auth, clock))
    vihf_requester(security, _trust(auth, clock), cache=cache)
    with pytest.raises(AuthenticationError, match="audience"):
        vihf_requester(security, _trust(auth, clock, audience="https://other/fhir"), cache=cache)


def test_vihf_tampered_copy_of_a_cached_assertion_is_refused(credential, auth):
    clock, cache = Clock(), VerifiedAssertions()
    trust = _trust(auth, clock)
    security = _received(_mint(credential, auth, clock))
    vihf_requester(security, trust, cache=cache)
    name_id = security.find(".//{urn:oasis:names:tc:SAML:2.0:assertion}NameID")
    name_id.text = "810000000666"
    with pytest.raises(AuthenticationError, match="invalid"):
        vihf_requester(etree.fromstring(etree.tostring(security)), trust, cache=cache)


def test_vihf_cache_entry_is_not_used_with_other_trusted_certificates(credential, auth, tmp_path):
    clock, cache = Clock(), VerifiedAssertions()
    security = _received(_mint(credential, auth, clock))
    vihf_requester(security, _trust(auth, clock), cache=cache)
    stranger = load_or_create_structure_credential(tmp_path).certificate
    with pytest.raises(AuthenticationError, match="not trusted"):
        vihf_requester(security, _trust(auth, clock, certificates=(stranger,)), cache=cache)


def test_vihf_cache_does_not_outlive_the_signing_certificate(auth, tmp_path):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "short-lived signer")])
    certificate = self_signed_certificate(key, name, dt.timedelta(minutes=10))
    short = StructureCredential(private_key=key, certificate=certificate)
    clock, cache = Clock(), VerifiedAssertions()
    trust = _trust(auth, clock, certificates=(certificate,))
    security = _received(_mint(short, auth, clock, minutes=240))
    vihf_requester(security, trust, cache=cache)
    clock.now += 3600  # the assertion is still valid, its signer's certificate no longer
    with pytest.raises(AuthenticationError, match="invalid or its signer"):
        vihf_requester(security, trust, cache=cache)


def test_vihf_cache_keeps_at_most_its_size(credential, auth):
    clock, cache = Clock(), VerifiedAssertions(size=2)
    trust = _trust(auth, clock)
    for _ in range(3):
        vihf_requester(_received(_mint(credential, auth, clock)), trust, cache=cache)
    assert len(cache) == 2


# -- ITI-41 metadata read in one pass ----------------------------------------------------------

_MUTATION_VALUES = st.sampled_from(
    ["", " ", "  x ", "x", "Document01", "SubmissionSet01", "cl-ss"]
    + [v.FOLDER_NODE, v.SS_NODE, v.DE_LIMITED_METADATA, v.SS_LIMITED_METADATA]
    + [v.DE_AUTHOR, v.DE_CLASS_CODE, v.DE_EVENT_CODE, v.DE_CONFIDENTIALITY_CODE]
    + [v.SS_AUTHOR, v.SS_CONTENT_TYPE_CODE, v.DE_UNIQUE_ID, v.DE_PATIENT_ID, v.SS_UNIQUE_ID]
    + ["creationTime", "sourcePatientInfo", "homeCommunityId", "authorPerson", "authorRole"]
    + ["codingScheme", "submissionTime", "intendedRecipient", "SubmissionSetStatus"]
    + ["as01", v.ASSOCIATION_DOCUMENTATION]  # an Association's own Classifications
)
_MUTATED_ATTRIBUTES = st.sampled_from(
    ["name", "id", "classificationNode", "classificationScheme", "classifiedObject", "value"]
    + ["identificationScheme", "nodeRepresentation", "home", "lid", "versionName"]
)
_MUTATIONS = st.sampled_from(
    ["remove", "duplicate", "duplicate", "attribute", "drop_attribute", "drop_name", "text"]
    + ["comment", "move"]
)
_MUTATED_ELEMENTS = st.sampled_from(
    ["Value", "Value", "Slot", "Slot", "ValueList", "Classification", "Classification"]
    + ["ExternalIdentifier", "Name", "Description", "LocalizedString", "VersionInfo", None]
)
_MTOM_REQUEST = build_iti41(documents=[b"<a/>", b"%PDF-1.4 x"])
_INLINE_REQUEST = build_iti41(documents=[b"<a/>", b"%PDF-1.4 x"], mtom=False)


def _request_parts(request) -> tuple[etree._Element, dict]:
    package = parse_http_body(request.content_type, request.body)
    return soap.read_envelope(package.envelope).body, package.attachments


@st.composite
def _mutated_submissions(draw) -> tuple[etree._Element, dict]:
    """A valid ITI-41 body broken by a few random edits of elements, attributes and texts."""
    body, attachments = _request_parts(draw(st.sampled_from([_MTOM_REQUEST, _INLINE_REQUEST])))
    root = copy.deepcopy(body)
    for _ in range(draw(st.integers(0, 24))):
        elements = [e for e in root.iter() if isinstance(e.tag, str)][1:]
        if not elements:
            break
        # Mostly the elements whose reading has rules (slots and their values above all).
        local = draw(_MUTATED_ELEMENTS)
        wanted = [e for e in elements if local is None or e.tag == q(v.NS_RIM, local)]
        target = draw(st.sampled_from(wanted or elements))
        mutation = draw(_MUTATIONS)
        parent = target.getparent()
        if mutation == "remove":
            parent.remove(target)
        elif mutation == "duplicate":
            target.addnext(copy.deepcopy(target))
        elif mutation == "attribute":
            target.set(draw(_MUTATED_ATTRIBUTES), draw(_MUTATION_VALUES))
        elif mutation == "drop_attribute":
            target.attrib.pop(draw(_MUTATED_ATTRIBUTES), None)
        elif mutation == "drop_name":
            target.attrib.pop("name", None)
        elif mutation == "text":
            target.text = draw(st.one_of(st.none(), _MUTATION_VALUES, st.just("QUJD\n RA==")))
        elif mutation == "comment":
            target.insert(draw(st.integers(0, len(target))), etree.Comment("c"))
        else:  # move under another element
            destination = draw(st.sampled_from(elements))
            if destination is not target and target not in destination.iterancestors():
                destination.append(target)
    if draw(st.booleans()):  # ITI-42 shape: the SubmitObjectsRequest alone
        inner = root.find(q(v.NS_LCM, "SubmitObjectsRequest"))
        root = inner if inner is not None else root
    return root, attachments


def _outcome_of(parse, body, attachments):
    try:
        return parse(body, attachments)
    except Exception as exc:  # noqa: BLE001 - the same exception is the expected outcome
        return (type(exc).__name__, str(exc))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(submission=_mutated_submissions())
def test_iti41_metadata_one_pass_reading_gives_what_the_former_reading_gave(submission):
    """Same entries, sets, folders, associations, documents, and problems in the same order."""
    body, attachments = submission
    expected = _outcome_of(ebrim_reference.parse_submission, body, attachments)
    assert _outcome_of(parse_submission, body, attachments) == expected


@settings(max_examples=300)
@given(
    chunks=st.lists(
        st.sampled_from(["QUJD", "RA==", "QQ==", "QUI=", " ", "\n", "\t", "\r\n", "\x0c", "\u00a0"])
        | st.sampled_from(["=", "*", "\u2028", "é"]),
        max_size=8,
    )
)
def test_inline_base64_decoding_gives_what_translating_first_gave(chunks):
    """Decoding the text as it is first only spares work: same bytes or same refusal."""
    import binascii

    text = "".join(chunks)

    def former(text: str) -> bytes:
        try:
            compact = text.encode("ascii").translate(None, b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")
        except UnicodeEncodeError:
            return base64.b64decode("".join(text.split()), validate=True)
        return binascii.a2b_base64(compact, strict_mode=True)

    assert _outcome_of(lambda t, _: _strict_b64decode(t), text, None) == _outcome_of(
        lambda t, _: former(t), text, None
    )


@settings(max_examples=300)
@given(
    payload=st.binary(max_size=3000),
    damage=st.one_of(
        st.none(),
        st.tuples(st.integers(min_value=0), st.sampled_from(["=", "*", " ", "\n", "-", "_", "A"])),
    ),
)
def test_inline_base64_of_any_document_decodes_as_strict_decoding_does(payload, damage):
    """The SIMD decoder (pybase64) is tried first: for any document, intact or with one
    character inserted, the same bytes or the same refusal as the standard strict decoder
    on the text without its whitespace."""
    import binascii

    text = base64.b64encode(payload).decode("ascii")
    if damage is not None:
        position, character = damage
        position %= len(text) + 1
        text = text[:position] + character + text[position:]

    def standard(text: str) -> bytes:
        compact = text.encode("ascii").translate(None, b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f")
        return binascii.a2b_base64(compact, strict_mode=True)

    assert _outcome_of(lambda t, _: _strict_b64decode(t), text, None) == _outcome_of(
        lambda t, _: standard(t), text, None
    )
