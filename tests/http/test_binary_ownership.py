"""A Binary is read as the document it was deposited with, never through whatever points at it.

Issue #18, finding 1 (architecture invariant 8, "access from ownership"): a Binary used to be
served when ANY readable DocumentReference pointed at it, and anyone allowed to deposit can
create one. The attacks below are the ones the finding reproduced, each through HTTP with the
tokens `fhir-server token` makes:

| attacker | hidden document | pointer |
|---|---|---|
| the patient (R06/R14) | INVISIBLE_PATIENT | their own DocumentReference in their record |
| a parent of the minor (R07) | INVISIBLE_REPRESENTANTS_LEGAUX | their own DocumentReference |
| an authorized practitioner (R14) | MASQUE_PS | a deposit in the same record |
| a blocked practitioner (R09) | any document of the record | a PUT in another patient's record, with an id chosen to sort first, read in bris de glace |

The record is the R18 matrix's (`tests/http/test_r18_matrix.py`): seeded by the server itself,
so each seeded Binary was claimed by the one DocumentReference naming it
(`Binary.securityContext`).
"""

from __future__ import annotations

import base64
import json

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY, SYSTEM_IDNAT_PS
from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, auth, dmp_consent, permit
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    BLOCKED,
    GP,
    PARENT,
    PATIENT_A,
    PATIENT_B,
    PATIENT_M,
    UNKNOWN_ID,
    World,
    _build_world,
    binary_id,
    doc_id,
)
from tests.http.test_xds_endpoints import OTHER_PS, Xds, envelope_of, registry_status
from tests.support.documents import dmp_document

FIRST_ID = "00000000-0000-4000-8000-000000000000"  # sorts before every seeded id
PDF = b"%PDF-1.4 the attacker's own bytes"
SEEDED_BYTES = b"%PDF-1.4"  # the bytes of the Binaries tests/http/test_r18_matrix.py seeds


@pytest.fixture
def world(tmp_path):
    """Every test attacks its own record: the attacks write."""
    app, built = _build_world(tmp_path / "var")
    yield built
    app.extensions["fhir"].store.close()


def parent_token(world: World) -> str:
    return world.tokens.issuer.issue(
        subject=PARENT,
        scopes="patient/*.cruds",
        fhir_user=f"RelatedPerson/{PARENT}",
        patient=PATIENT_M,
    )


def pointer(
    patient_id: str,
    binary: str,
    author: dict | None = None,
    content: bytes = SEEDED_BYTES,
    **extra,
) -> dict:
    """A DMP DocumentReference of `patient_id`'s record whose content is `Binary/<binary>`
    holding `content` (`tests.support.documents`)."""
    return dmp_document(
        patient_id,
        f"Binary/{binary}",
        content=content,
        content_type="application/pdf",
        author=[author or {"reference": f"Patient/{patient_id}"}],
        **extra,
    )


def practitioner_author(idnat: str) -> dict:
    return {"identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}}


def post(world: World, token: str, resource: dict):
    return world.client.post(
        f"/fhir/{resource['resourceType']}",
        data=json.dumps(resource),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )


def put(world: World, token: str, resource: dict):
    return world.client.put(
        f"/fhir/{resource['resourceType']}/{resource['id']}",
        data=json.dumps(resource),
        headers=auth(token, **{"Content-Type": FHIR_JSON}),
    )


def expressions(response) -> list[str]:
    body = response.get_json() or {}
    return [e for issue in body.get("issue", []) for e in issue.get("expression", [])]


def assert_refused_pointer(response, position: int = 0) -> None:
    assert response.status_code == 422, response.get_data(as_text=True)
    assert f"DocumentReference.content[{position}].attachment.url" in expressions(response)


def assert_binary_hidden(world: World, token: str, binary: str) -> None:
    """read (raw and FHIR), vread and history answer as for a Binary that does not exist."""
    for template in (
        "/fhir/Binary/{id}",
        "/fhir/Binary/{id}?_format=json",
        "/fhir/Binary/{id}/_history/1",
        "/fhir/Binary/{id}/_history",
    ):
        hidden = world.get(token, template.format(id=binary), Accept="application/pdf")
        missing = world.get(token, template.format(id=UNKNOWN_ID), Accept="application/pdf")
        assert hidden.status_code == missing.status_code == 404, (template, hidden.status_code)
        assert b"JVBERi0" not in hidden.data and b"%PDF" not in hidden.data


# -- the attacks of finding 1 -----------------------------------------------------------------


def test_r14_patient_cannot_reach_invisible_patient_binary_through_own_pointer(world):
    """Finding 1: the patient pointed their own DocumentReference at the Binary of an
    INVISIBLE_PATIENT document and got its bytes."""
    token = world.tokens.patient(PATIENT_A)
    target = binary_id("a-invisible")
    assert_refused_pointer(post(world, token, pointer(PATIENT_A, target)))
    assert_binary_hidden(world, token, target)


def test_r07_representative_cannot_reach_invisible_rl_binary_through_own_pointer(world):
    """Finding 1: a parent pointed a DocumentReference of the minor's record at the Binary of
    an INVISIBLE_REPRESENTANTS_LEGAUX document."""
    token = parent_token(world)
    target = binary_id("m-invisible-rl")
    own = pointer(PATIENT_M, target, author={"reference": f"RelatedPerson/{PARENT}"})
    assert_refused_pointer(post(world, token, own))
    assert_binary_hidden(world, token, target)


def test_r14_binary_of_masked_document_not_served_through_own_pointer(world):
    """Finding 1: an authorized practitioner deposited a document of their own pointing at the
    Binary of a MASQUE_PS document (another author's) and read it through it."""
    token = world.tokens.practitioner(AUTHORIZED)
    target = binary_id("a-masked")
    own = pointer(PATIENT_A, target, author=practitioner_author(AUTHORIZED))
    assert_refused_pointer(post(world, token, own))
    assert_binary_hidden(world, token, target)


def test_r09_blocked_practitioner_cannot_reach_binary_from_another_patients_record(world):
    """Finding 1: a practitioner blocked by patient A PUT a DocumentReference in patient B's
    record (an id chosen to sort first) pointing at A's Binary, then read it in bris de glace,
    which B does not oppose."""
    token = world.tokens.practitioner(BLOCKED, mode="bris_de_glace", reason="urgence vitale")
    target = binary_id("a-visible")
    own = pointer(PATIENT_B, target, author=practitioner_author(BLOCKED))
    assert_refused_pointer(post(world, token, own))
    # Under an id chosen to sort first: clients create no ids (updateCreate false).
    assert put(world, token, {**own, "id": FIRST_ID}).status_code == 404
    assert_binary_hidden(world, token, target)
    normal = world.tokens.practitioner(BLOCKED)
    assert_binary_hidden(world, normal, target)


def test_r14_pointer_in_a_transaction_is_refused_at_its_entry(world):
    """The same pointer inside a transaction Bundle: refused, naming the entry and the element,
    and nothing of the Bundle is stored."""
    token = world.tokens.patient(PATIENT_A)
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": "urn:uuid:5b0c4b8a-0000-4000-8000-000000000001",
                "resource": pointer(PATIENT_A, binary_id("a-invisible")),
                "request": {"method": "POST", "url": "DocumentReference"},
            }
        ],
    }
    response = world.client.post(
        "/fhir", data=json.dumps(bundle), headers=auth(token, **{"Content-Type": FHIR_JSON})
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "Bundle.entry[0]" in expressions(response)
    assert "DocumentReference.content[0].attachment.url" in expressions(response)
    assert_binary_hidden(world, token, binary_id("a-invisible"))


def test_r14_pointer_to_a_missing_binary_is_refused_like_one_to_a_hidden_binary(world):
    """R18: the answer does not tell a hidden Binary from one that does not exist."""
    token = world.tokens.patient(PATIENT_A)
    hidden = post(world, token, pointer(PATIENT_A, binary_id("a-invisible")))
    missing = post(world, token, pointer(PATIENT_A, UNKNOWN_ID))
    assert hidden.status_code == missing.status_code == 422
    assert hidden.get_json() == missing.get_json()


def test_r06_patient_may_point_again_at_a_binary_of_their_own_record_they_can_read(world):
    """The control: a Binary its writer may read, of a document of the same record, may be
    named by a second document (a copy, a new version)."""
    token = world.tokens.patient(PATIENT_A)
    response = post(world, token, pointer(PATIENT_A, binary_id("a-visible")))
    assert response.status_code == 201, response.get_data(as_text=True)
    assert world.get(token, f"/fhir/Binary/{binary_id('a-visible')}").status_code == 200


def test_r06_patient_cannot_point_at_a_readable_binary_from_another_record(world):
    """A practitioner who may read A's document may not name its Binary from B's record."""
    token = world.tokens.practitioner(AUTHORIZED)
    own = pointer(PATIENT_B, binary_id("a-visible"), author=practitioner_author(AUTHORIZED))
    assert_refused_pointer(post(world, token, own))


# -- ownership recorded at write ---------------------------------------------------------------


def test_r15_two_step_deposit_claims_the_unowned_binary(world):
    """POST Binary, then POST DocumentReference naming it: the first document to name an
    unowned Binary nobody points at owns it (its securityContext), and a second pointer from
    someone who may not read it is then refused."""
    hospital = world.tokens.system()
    posted = world.client.post(
        "/fhir/Binary", data=PDF, headers=auth(hospital, **{"Content-Type": "application/pdf"})
    )
    assert posted.status_code == 201, posted.get_data(as_text=True)
    new_binary = posted.get_json()["id"]
    masked = pointer(
        PATIENT_A,
        new_binary,
        author=practitioner_author(GP),
        content=PDF,
        meta={"security": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "INVISIBLE_PATIENT"}]},
    )
    created = post(world, hospital, masked)
    assert created.status_code == 201, created.get_data(as_text=True)
    document_id = created.get_json()["id"]
    stored = world.service.read(INTERNAL, "Binary", new_binary).json()
    assert stored["securityContext"] == {"reference": f"DocumentReference/{document_id}"}
    gp = world.tokens.practitioner(GP)
    assert world.get(gp, f"/fhir/Binary/{new_binary}", Accept="application/pdf").data == PDF
    patient = world.tokens.patient(PATIENT_A)
    assert_refused_pointer(post(world, patient, pointer(PATIENT_A, new_binary)))
    assert_binary_hidden(world, patient, new_binary)


def deposit_bundle(
    patient_id: str,
    security_context: dict | None = None,
    *,
    binary_first: bool = False,
    **document_extra,
) -> dict:
    """A minimal transaction of a Binary and the DocumentReference it is the content of (by
    the GP), the document listed first unless `binary_first`; `document_extra`: more
    elements of the document (its `meta`, say)."""
    binary: dict = {
        "resourceType": "Binary",
        "contentType": "application/pdf",
        "data": base64.b64encode(PDF).decode(),
    }
    if security_context is not None:
        binary["securityContext"] = security_context
    document = pointer(
        patient_id, "x", author=practitioner_author(GP), content=PDF, **document_extra
    )
    document["content"][0]["attachment"]["url"] = "urn:uuid:5b0c4b8a-0000-4000-8000-0000000000b1"
    entries = [
        {
            "fullUrl": "urn:uuid:5b0c4b8a-0000-4000-8000-0000000000d1",
            "resource": document,
            "request": {"method": "POST", "url": "DocumentReference"},
        },
        {
            "fullUrl": "urn:uuid:5b0c4b8a-0000-4000-8000-0000000000b1",
            "resource": binary,
            "request": {"method": "POST", "url": "Binary"},
        },
    ]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": entries[::-1] if binary_first else entries,
    }


def locations(response) -> dict[str, str]:
    """Type -> id of what a transaction's answer says it created."""
    found = {}
    for entry in response.get_json()["entry"]:
        kind, resource_id = entry["response"]["location"].split("/")[:2]
        found[kind] = resource_id
    return found


def test_r14_transaction_sets_the_binary_owner_to_its_document(world):
    """A transaction creating a Binary and the DocumentReference naming it records the
    document as the Binary's owner, whatever their order in the Bundle."""
    response = world.client.post(
        "/fhir",
        data=json.dumps(deposit_bundle(PATIENT_A)),
        headers=auth(world.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    found = locations(response)
    stored = world.service.read(INTERNAL, "Binary", found["Binary"]).json()
    assert stored["securityContext"] == {
        "reference": f"DocumentReference/{found['DocumentReference']}"
    }


def test_r14_transaction_binary_claiming_another_owner_is_refused(world):
    """A client-set securityContext naming another resource than the Binary's document: 422."""
    bundle = deposit_bundle(PATIENT_A, {"reference": f"DocumentReference/{doc_id('a-invisible')}"})
    response = world.client.post(
        "/fhir",
        data=json.dumps(bundle),
        headers=auth(world.tokens.practitioner(GP), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "Bundle.entry[1].resource.securityContext" in expressions(response)


def test_r14_standalone_binary_cannot_name_its_owner(world):
    """A Binary created on its own cannot make itself the content of an existing document."""
    binary = {
        "resourceType": "Binary",
        "contentType": "application/pdf",
        "data": base64.b64encode(PDF).decode(),
        "securityContext": {"reference": f"DocumentReference/{doc_id('a-visible')}"},
    }
    response = post(world, world.tokens.system(), binary)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "Binary.securityContext" in expressions(response)
    raw = world.client.post(
        "/fhir/Binary",
        data=PDF,
        headers=auth(
            world.tokens.system(),
            **{
                "Content-Type": "application/pdf",
                "X-Security-Context": f"DocumentReference/{doc_id('a-visible')}",
            },
        ),
    )
    assert raw.status_code == 422, raw.get_data(as_text=True)
    assert "Binary.securityContext" in expressions(raw)


def test_r14_binary_owner_cannot_be_changed(world):
    """An update cannot move a Binary to another document (refused; the owner stays)."""
    target = binary_id("a-visible")
    current = world.service.read(INTERNAL, "Binary", target).json()
    moved = {**current, "securityContext": {"reference": f"DocumentReference/{FIRST_ID}"}}
    for token in (world.tokens.system(), world.tokens.practitioner(GP)):
        response = put(world, token, moved)
        assert response.status_code in (403, 422), response.get_data(as_text=True)
    stored = world.service.read(INTERNAL, "Binary", target).json()
    assert stored["securityContext"] == {"reference": f"DocumentReference/{doc_id('a-visible')}"}


def test_r14_binary_is_judged_by_its_owner_current_version(world):
    """Masking the owning document hides its Binary at once (the current version decides)."""
    token = world.tokens.practitioner(AUTHORIZED)
    target = binary_id("a-visible")
    assert world.get(token, f"/fhir/Binary/{target}").status_code == 200
    document = world.service.read(INTERNAL, "DocumentReference", doc_id("a-visible")).json()
    label = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE_PS"}
    document["meta"] = {"security": [label]}
    response = put(world, world.tokens.patient(PATIENT_A), document)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert_binary_hidden(world, token, target)


# -- legacy Binaries (no securityContext) ------------------------------------------------------


def _legacy(world: World, key: str, *patients: str) -> str:
    """A Binary without owner, named by one document per patient (written before the Binary,
    as data loaded before ownership was recorded)."""
    legacy = f"1e9acy00-0000-4000-8000-00000000000{len(patients)}"
    for n, patient_id in enumerate(patients):
        document = pointer(patient_id, legacy, author=practitioner_author(GP))
        world.service.update(
            INTERNAL, "DocumentReference", f"{key}-{n}", {**document, "id": f"{key}-{n}"}
        )
    world.service.update(
        INTERNAL,
        "Binary",
        legacy,
        {
            "resourceType": "Binary",
            "id": legacy,
            "contentType": "application/pdf",
            "data": "JVBERi0=",
        },
    )
    assert "securityContext" not in world.service.read(INTERNAL, "Binary", legacy).json()
    return legacy


def test_r18_legacy_binary_needs_every_pointer_readable_and_one_record(world):
    """A Binary with no owner is readable only when every current document naming it is, and
    they all concern one patient: an attacker's pointer can never grant access."""
    one = _legacy(world, "legacy-one", PATIENT_A)
    patient = world.tokens.patient(PATIENT_A)
    assert world.get(patient, f"/fhir/Binary/{one}").status_code == 200
    two = _legacy(world, "legacy-two", PATIENT_A, PATIENT_B)
    assert_binary_hidden(world, patient, two)
    assert_binary_hidden(world, world.tokens.patient(PATIENT_B), two)


# -- the XDS face ------------------------------------------------------------------------------


@pytest.fixture
def xds(app, client, tokens, data_dir):
    return Xds(app, client, tokens, data_dir)


def test_r14_iti43_does_not_serve_a_masked_document_through_a_copy_of_its_metadata(xds):
    """Finding 1 over XDS: an authorized practitioner writes a DocumentReference with the
    masked document's uniqueId (masterIdentifier) and its Binary as content, then retrieves
    that uniqueId (ITI-43): the pointer is refused, and the retrieve answers like for an
    unknown document."""
    patient_id, nir = xds.patient(30)
    response = xds.client.post(
        "/fhir/Consent",
        json=dmp_consent(patient_id, permit(OTHER_PS)),
        headers=auth(xds.tokens.patient(patient_id), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    request, deposited = xds.deposit(nir, masking=("MASQUE_PS",))
    assert registry_status(deposited) == (v.RESPONSE_SUCCESS, [])
    (unique_id,) = request.document_unique_ids.values()
    (document,) = xds.runtime.service.find(INTERNAL, "DocumentReference", [("patient", patient_id)])
    url = document.json()["content"][0]["attachment"]["url"]
    copy = pointer(
        patient_id,
        url.removeprefix("Binary/"),
        author=practitioner_author(OTHER_PS),
        masterIdentifier={"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{unique_id}"},
    )
    posted = xds.client.post(
        "/fhir/DocumentReference",
        data=json.dumps(copy),
        headers=auth(xds.tokens.practitioner(OTHER_PS), **{"Content-Type": FHIR_JSON}),
    )
    assert_refused_pointer(posted)
    retrieved = xds.retrieve([unique_id], idnat=OTHER_PS, nir=nir)
    assert registry_status(retrieved) == (v.RESPONSE_FAILURE, ["XDSDocumentUniqueIdError"])
    assert xds.retrieve([unique_id], nir=nir).status_code == 200  # the médecin traitant
    _, package = envelope_of(xds.retrieve([unique_id], nir=nir))
    assert list(package.attachments.values())[0].data == request.documents["Document01"]
