"""Attack pass on the FHIR XML door (R14): a fact the rules read, spelled in a way only XML
has, must be read as in JSON or refused.

The model library's XML reader kept the last of two copies of a single element (JSON
refuses a repeated key), read an element of another namespace (or of none) as the FHIR
element of that name, and dropped an element's text content or CDATA without a word (a
`<code>MASQUE_PS</code>` stored as a coding without its code). Fail closed: such XML is
refused with a 400 naming the problem, and nothing is stored.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.rest.formats import json_to_xml
from tests.http.conftest import auth
from tests.http.test_attack_pass_spellings import MASQUE_PS, documents_of, record  # noqa: F401
from tests.http.test_normal_form import AUTHORIZED, PATIENT_A, document, post
from tests.support.documents import transaction

FHIR_XML = "application/fhir+xml"
MASQUE = b'<code value="MASQUE_PS"/>'


def masked_document_xml() -> bytes:
    """A document of patient A, by AUTHORIZED, masked to practitioners (MASQUE_PS), in XML."""
    body = json_to_xml(document(PATIENT_A, labels=[MASQUE_PS]))
    assert body.count(MASQUE) == 1
    return body


def post_xml(client, token: str, body: bytes):
    return client.post(
        "/fhir/DocumentReference", data=body, headers=auth(token, **{"Content-Type": FHIR_XML})
    )


@pytest.mark.parametrize(
    "spelling",
    [
        MASQUE + b'<code value="INVISIBLE_PATIENT"/>',  # twice: the last one was kept
        b'<code xmlns="urn:example" value="MASQUE_PS"/>',  # another namespace read as FHIR
        b'<code xmlns="" value="MASQUE_PS"/>',  # no namespace read as FHIR
        # two values of one code, one of them in another namespace: one read, one dropped
        b'<code xmlns:x="urn:example" x:value="INVISIBLE_PATIENT" value="MASQUE_PS"/>',
        b'<code value="MASQUE_PS" display="INVISIBLE_PATIENT"/>',  # an attribute dropped
    ],
    ids=[
        "duplicated-code",
        "foreign-namespace",
        "no-namespace",
        "namespaced-value-attribute",
        "unknown-attribute",
    ],
)
def test_r14_masking_label_spelled_only_as_xml_can_is_refused(client, tokens, record, spelling):  # noqa: F811
    """Each spelling was stored (201): the code given twice as INVISIBLE_PATIENT, the last
    copy (the document not masked to practitioners, though its XML first says MASQUE_PS);
    an element outside the FHIR namespace, which no FHIR reader should take for `code`, as
    the label; an attribute FHIR XML does not have, silently dropped."""
    body = masked_document_xml().replace(MASQUE, spelling)
    before = documents_of(record, PATIENT_A)
    refused = post_xml(client, tokens.practitioner(AUTHORIZED), body)
    assert refused.status_code == 400, refused.data[:600]
    assert documents_of(record, PATIENT_A) == before


def test_r14_masking_label_in_plain_xml_is_stored_and_read(client, tokens, record):  # noqa: F811
    """The control: the same document in plain XML, its root naming its schema as FHIR's
    examples do (`xsi:schemaLocation`), is stored with its MASQUE_PS label."""
    body = masked_document_xml().replace(
        b'<DocumentReference xmlns="http://hl7.org/fhir">',
        b'<DocumentReference xmlns="http://hl7.org/fhir" '
        b'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        b'xsi:schemaLocation="http://hl7.org/fhir documentreference.xsd">',
    )
    assert b"schemaLocation" in body
    created = post_xml(client, tokens.practitioner(AUTHORIZED), body)
    assert created.status_code == 201, created.data[:600]
    assert "MASQUE_PS" in json.dumps(created.get_json())


def test_r14_xml_transaction_with_a_code_given_twice_is_refused_whole(client, tokens, record):  # noqa: F811
    """In an XML transaction Bundle, the document's masking code given twice was stored as
    its last copy (INVISIBLE_PATIENT) with its Binary; the whole Bundle is refused, nothing
    written, and the same Bundle without the copy is accepted."""
    bundle = transaction(PATIENT_A, document(PATIENT_A, labels=[MASQUE_PS]), b"bonjour")
    body = json_to_xml(bundle)
    assert body.count(MASQUE) == 1
    token = tokens.practitioner(AUTHORIZED)
    headers = auth(token, **{"Content-Type": FHIR_XML})
    before = documents_of(record, PATIENT_A)
    twice = body.replace(MASQUE, MASQUE + b'<code value="INVISIBLE_PATIENT"/>')
    refused = client.post("/fhir", data=twice, headers=headers)
    assert refused.status_code == 400, refused.data[:600]
    assert documents_of(record, PATIENT_A) == before
    accepted = client.post("/fhir", data=body, headers=headers)
    assert accepted.status_code == 200, accepted.data[:600]
    assert len(documents_of(record, PATIENT_A)) == len(before) + 1


def test_r14_xml_transaction_entry_holding_two_resources_is_refused(client, tokens, record):  # noqa: F811
    """An entry's `<resource>` holding the masked document and a second, unmasked copy was
    stored as its first and the second dropped without a word (200): which copy a reader
    of the XML takes is the sender's guess. The whole Bundle is refused, nothing written."""
    bundle = transaction(PATIENT_A, document(PATIENT_A, labels=[MASQUE_PS]), b"bonjour")
    body = json_to_xml(bundle)
    start, end = body.index(b"<DocumentReference>"), body.index(b"</DocumentReference>")
    masked = body[start : end + len(b"</DocumentReference>")]
    unmasked = masked.replace(MASQUE, b'<code value="INVISIBLE_PATIENT"/>')
    before = documents_of(record, PATIENT_A)
    refused = client.post(
        "/fhir",
        data=body.replace(masked, masked + unmasked),
        headers=auth(tokens.practitioner(AUTHORIZED), **{"Content-Type": FHIR_XML}),
    )
    assert refused.status_code == 400, refused.data[:600]
    assert documents_of(record, PATIENT_A) == before


def test_json_string_with_a_control_character_is_refused_so_xml_searches_answer(
    client,
    tokens,
    record,  # noqa: F811
):
    """A document whose description held U+0001 (escaped in JSON) was stored (201); XML
    cannot carry that character, and every XML answer holding the document, its read and any
    search of the patient's documents, was then a 500. FHIR strings may not hold it: 400."""
    token = tokens.practitioner(AUTHORIZED)
    before = documents_of(record, PATIENT_A)
    refused = post(client, token, {**document(PATIENT_A), "description": "bon\x01jour"})
    assert refused.status_code == 400, refused.get_json()
    assert documents_of(record, PATIENT_A) == before
    search = client.get(
        f"/fhir/DocumentReference?patient={PATIENT_A}&_format=xml", headers=auth(token)
    )
    assert search.status_code == 200, search.data[:600]


@pytest.mark.parametrize(
    ("url", "status"),
    [("/fhir/Foo%01", 404), ("/fhir/Patient/a%01", 404), ("/fhir/Patient?bad%01=1", 400)],
)
def test_xml_outcome_echoing_a_control_character_keeps_its_status(
    client,
    tokens,
    record,  # noqa: F811
    url,
    status,
):
    """The OperationOutcome naming the request's U+0001 could not be written in XML: the
    XML answer was a 500 where the JSON one was a 404 or a 400."""
    token = tokens.practitioner(AUTHORIZED)
    assert client.get(url, headers=auth(token)).status_code == status
    separator = "&" if "?" in url else "?"
    answer = client.get(f"{url}{separator}_format=xml", headers=auth(token))
    assert answer.status_code == status, answer.data[:600]
    assert b"<OperationOutcome" in answer.data
