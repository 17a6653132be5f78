"""References by any form (issue #19, deliverable 5).

FHIR R4 references.html: a literal reference is relative or absolute, and may be
version-specific (`DocumentReference/x/_history/1`, the location this server answers a
write with). search.html#reference: "a reference parameter ... absolute and relative forms
match". So every form that designates a resource of this server, relative or absolute on its
own base (http or https, any case of scheme and host), versioned or not, designates it as
targets of `relatesTo`, List entries and reference searches; an absolute URL on another
server designates nothing local, whatever its last segments (architecture invariant 7).
The reference parameters served are not version-aware: a version-specific search value is
read as its resource, its version ignored.

The search and relatesTo forms already held (#19 points 6 and 7); what did not: the rule
that leaves a hidden document out of a List read only digits as a version id, while the
index reads any, so `DocumentReference/<hidden>/_history/v1` was served to the patient.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest

from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY
from tests.http.conftest import auth
from tests.http.test_normal_form import (  # noqa: F401  (fixture)
    AUTHORIZED,
    BASE,
    PATIENT_A,
    document,
    ids_in,
    post,
    record,
)

# Patients A and B, their Consents and médecin traitant (tests/http/test_normal_form.py).
pytestmark = pytest.mark.usefixtures("record")

FOREIGN = "https://evil.example/fhir"


def own_spellings(relative: str) -> list[str]:
    """`relative` as this server's absolute URL in the spellings the normal form accepts."""
    return [
        f"{BASE}/{relative}",
        f"{BASE.replace('http://', 'https://')}/{relative}",
        f"{BASE.replace('http://', 'HTTP://')}/{relative}",
    ]


def find(client, token: str, path: str) -> set[str]:
    response = client.get(path, headers=auth(token))
    assert response.status_code == 200, response.get_data(as_text=True)
    return ids_in(response)


def test_search_by_patient_or_subject_in_any_form_of_this_servers_reference(client, tokens):
    """search.html#reference: `patient=` and `subject=` with this server's absolute URL, or a
    version-specific reference, find the documents of the relative form; another server's
    URL ending in the same id finds nothing."""
    author = tokens.practitioner(AUTHORIZED)
    created = post(client, author, document(PATIENT_A)).get_json()["id"]
    values = [
        *own_spellings(f"Patient/{PATIENT_A}"),
        f"Patient/{PATIENT_A}/_history/1",
        f"{BASE}/Patient/{PATIENT_A}/_history/1",
    ]
    for param in ("patient", "subject"):
        for value in values:
            path = f"/fhir/DocumentReference?{param}={quote(value, safe='')}"
            assert find(client, author, path) == {created}, path
        # Another server's Patient is no patient of this record: the search designates no
        # record (R04), and nothing is served.
        foreign = quote(f"{FOREIGN}/Patient/{PATIENT_A}", safe="")
        answer = client.get(f"/fhir/DocumentReference?{param}={foreign}", headers=auth(author))
        assert answer.status_code == 400 and created not in answer.get_data(as_text=True)


def test_relatesto_target_in_any_form_of_this_servers_reference(client, tokens):
    """A `relatesTo.target` written version-specific or absolute on this server's base names
    the document, and `relatesto=` finds it by any of its forms; one naming another server's
    document of the same id is found by none of them."""
    author = tokens.practitioner(AUTHORIZED)
    target = post(client, author, document(PATIENT_A)).get_json()["id"]
    written = [
        f"DocumentReference/{target}/_history/1",
        *own_spellings(f"DocumentReference/{target}"),
        f"{BASE}/DocumentReference/{target}/_history/1",
    ]
    naming = {}
    for reference in written:
        appendix = document(
            PATIENT_A, relatesTo=[{"code": "appends", "target": {"reference": reference}}]
        )
        created = post(client, author, appendix)
        assert created.status_code == 201, created.get_data(as_text=True)
        naming[created.get_json()["id"]] = reference
    foreign = document(
        PATIENT_A,
        relatesTo=[
            {"code": "appends", "target": {"reference": f"{FOREIGN}/DocumentReference/{target}"}}
        ],
    )
    # another server's document is no target here: an association names an existing
    # document of this registry (#19 deliver 1), so the appendix is refused
    assert post(client, author, foreign).status_code == 422
    for value in [f"DocumentReference/{target}", *written]:
        path = f"/fhir/DocumentReference?patient={PATIENT_A}&relatesto={quote(value, safe='')}"
        assert find(client, author, path) == set(naming), value


def test_list_entry_in_any_form_of_this_servers_reference(client, tokens):
    """List entries naming a document version-specific or by this server's absolute URL are
    found by `item=` in every form; another server's URL with the same id is refused (422),
    as a relation's is: the reads could not hide it, and served it as stored, the id of a
    document hidden from the reader with it (R18, test_attack_pass_followup3)."""
    author = tokens.practitioner(AUTHORIZED)
    target = post(client, author, document(PATIENT_A)).get_json()["id"]
    written = [
        f"DocumentReference/{target}/_history/1",
        *own_spellings(f"DocumentReference/{target}/_history/1"),
        *own_spellings(f"DocumentReference/{target}"),
    ]
    lists = set()
    for reference in [*written, f"{FOREIGN}/DocumentReference/{target}"]:
        listing = {
            "resourceType": "List",
            "status": "current",
            "mode": "working",
            "subject": {"reference": f"Patient/{PATIENT_A}"},
            "entry": [{"item": {"reference": reference}}],
        }
        created = post(client, author, listing)
        if reference.startswith(FOREIGN):
            assert created.status_code == 422, created.get_data(as_text=True)
            continue
        assert created.status_code == 201, created.get_data(as_text=True)
        lists.add(created.get_json()["id"])
    for value in [f"DocumentReference/{target}", *written]:
        path = f"/fhir/List?patient={PATIENT_A}&item={quote(value, safe='')}"
        assert find(client, author, path) == lists, value


@pytest.mark.parametrize("version", ["1", "v1", "1.0"])
def test_r18_list_entry_naming_a_hidden_document_by_any_version_is_not_served(
    client, tokens, version
):
    """R14/R18: a List entry naming a document hidden from its reader is left out of what they
    are served, whatever version id the reference carries (references.html: a version id is
    an `id`, `[A-Za-z0-9-.]{1,64}`, not only digits). The index reads
    `DocumentReference/<id>/_history/v1` as the document, so must the rule that hides it."""
    hidden_label = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}
    author = tokens.practitioner(AUTHORIZED)
    hidden = post(client, author, document(PATIENT_A, labels=[hidden_label])).get_json()["id"]
    visible = post(client, author, document(PATIENT_A)).get_json()["id"]
    listing = {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "subject": {"reference": f"Patient/{PATIENT_A}"},
        "entry": [
            {"item": {"reference": f"DocumentReference/{hidden}/_history/{version}"}},
            {"item": {"reference": f"DocumentReference/{visible}"}},
        ],
    }
    created = post(client, author, listing)
    assert created.status_code == 201, created.get_data(as_text=True)
    served = client.get(
        f"/fhir/List/{created.get_json()['id']}", headers=auth(tokens.patient(PATIENT_A))
    )
    assert served.status_code == 200
    assert hidden not in served.get_data(as_text=True)


def test_r18_relatesto_naming_a_hidden_document_by_any_version_is_not_served(client, tokens):
    """The same rule for `relatesTo`: an appendix visible to the patient, naming by
    `_history/v1` the document hidden from them, is served without that relation."""
    hidden_label = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}
    author = tokens.practitioner(AUTHORIZED)
    hidden = post(client, author, document(PATIENT_A, labels=[hidden_label])).get_json()["id"]
    target = {"reference": f"DocumentReference/{hidden}/_history/v1"}
    appendix = document(PATIENT_A, relatesTo=[{"code": "appends", "target": target}])
    created = post(client, author, appendix)
    assert created.status_code == 201, created.get_data(as_text=True)
    served = client.get(
        f"/fhir/DocumentReference/{created.get_json()['id']}",
        headers=auth(tokens.patient(PATIENT_A)),
    )
    assert served.status_code == 200
    assert hidden not in served.get_data(as_text=True)
