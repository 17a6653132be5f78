"""Which strings a transaction rewrites (FHIR R4 http.html#trules; issue #19, point 5).

When a transaction gives server ids to `urn:uuid:` fullUrls, it rewrites the references to
them: Reference.reference, elements of type uri/url/canonical/oid/uuid (an Attachment.url
naming the Binary), and `href`/`src` links of the narrative. A string that merely equals a
fullUrl (an IHE entryUUID identifier, a valueString) is data and stays as sent: the server
rewrote it, so a DocumentReference whose entryUUID equals its fullUrl, as the IHE examples
do, was refused, and a SubmissionSet lost its entryUUID.
"""

from __future__ import annotations

from tests.http.test_mhd import SUBMISSION, fixture, locations, mhd  # noqa: F401 (fixture)


def test_trules_identifier_equal_to_a_fullurl_is_not_rewritten(mhd):  # noqa: F811
    patient_id, nir = mhd.patient(31)
    bundle = fixture(SUBMISSION, nir)
    submission_set, document, binary = (entry for entry in bundle["entry"])
    document["resource"]["identifier"] = [
        {"system": "urn:ietf:rfc:3986", "value": document["fullUrl"], "use": "official"}
    ]
    submission_set["resource"].setdefault("identifier", []).append(
        {"system": "urn:ietf:rfc:3986", "value": submission_set["fullUrl"]}
    )
    document["resource"]["extension"] = [
        {"url": "https://example.org/note", "valueString": binary["fullUrl"]}
    ]
    document["resource"]["text"] = {
        "status": "generated",
        "div": (
            '<div xmlns="http://www.w3.org/1999/xhtml">'
            f'<a href="{binary["fullUrl"]}">the document</a> '
            f"<img src='{binary['fullUrl']}'/> {binary['fullUrl']}</div>"
        ),
    }
    response = mhd.provide(bundle)
    assert response.status_code == 200, response.get_data(as_text=True)
    found = locations(response)
    stored = mhd.get(f"/fhir/DocumentReference/{found['DocumentReference']}").get_json()
    assert {"system": "urn:ietf:rfc:3986", "value": document["fullUrl"], "use": "official"} in (
        stored["identifier"]
    )
    assert stored["extension"][0]["valueString"] == binary["fullUrl"]
    assert stored["content"][0]["attachment"]["url"] == f"Binary/{found['Binary']}"
    div = stored["text"]["div"]
    assert f'href="Binary/{found["Binary"]}"' in div
    assert f"src='Binary/{found['Binary']}'" in div
    assert div.endswith(f" {binary['fullUrl']}</div>"), "text outside links is not a link"
    listing = mhd.get(f"/fhir/List/{found['List']}").get_json()
    assert {"system": "urn:ietf:rfc:3986", "value": submission_set["fullUrl"]} in listing[
        "identifier"
    ]
    assert listing["entry"] == [
        {"item": {"reference": f"DocumentReference/{found['DocumentReference']}"}}
    ]
