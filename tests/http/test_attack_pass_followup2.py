"""Attack pass on the day's fixes themselves: does each hold through every door and spelling?

The governance, messaging, authentication and If-Match passes each closed holes found through
one door and one spelling. This pass asked each fix again through the others: REST,
conditional operations, transaction and batch entries, ITI-65, ITI-41, PATCH, and the
spellings of one fact (a label under its OID, its NOS URL, no system, another case, in
`meta.tag` or an extension; an ETag weak or strong, empty, a JSON number, a list).

What it found, and what these tests hold (each fails on main):

- If-Match (http.html#concurrency): an If-Match header given empty, or a Bundle entry's
  `request.ifMatch` given `""`, `0` or `[]`, was taken for no precondition and the write made
  whatever the current version; an `ifMatch` given as a JSON number, a list, an object or a
  boolean was a 500; `W/"01"` or a half-quoted `"1` was read as version 1. A precondition the
  server cannot read is now a 400 at every door, nothing written; so is a Bundle entry's
  `request.ifNoneExist` holding no criteria (given `""`, a number, a list: the resource was
  created whatever existed).
- R14: the author's transform (relatesTo `transforms`, ITI-41 XFRM) of a document the
  patient masked (MASQUE_PS), deposited without the mask, was read by every authorized
  professional: the same content in another format. The mask now follows a transform as it
  follows a replacement (422 / XDSRegistryMetadataError, nothing written).

- R02, R14, R18: the granular constraint of a scope was added to the search unconfined,
  where a search's own chains, `_has` and naming parameters (`relatesto`, List `item`) read
  only what the requester may see: `patient/Patient.rs?_has:DocumentReference:patient:
  security-label=INVISIBLE_PATIENT` found the patient's own Patient when a document hidden
  from them existed (A) and not otherwise (B). Such a scope is now refused (403 R02).
- R03, R07: `implicitRules` on a Patient or RelatedPerson was refused by the governance
  pass, but the same modifier spelled as a `modifierExtension` (at the root or in an
  element) was stored and the identity read as if it had none; now 422 as a Consent's is.

- R08: `dmp-medecin-traitant` stored on a Patient was refused under its exact URL only;
  under http://, with a trailing slash or in another case it was stored. The DMP
  extensions (dmp-medecin-traitant, dmp-fermeture) are near misses of the normal form now.

What held (tried, refused or answered as the rules say): a masking label on a Consent under
its bare OID, its NOS URL, no system, another case, in `meta.tag` or in an extension's
valueCoding (422); a replacement of the masked document naming it by identifier (with or
without system), by an absolute or a versioned reference, or beside another relation, over
a transaction and ITI-65 (422); a new DocumentReference pointing at the masked document's
Binary (stored, but the Binary is read as its owner, test_binary_ownership); relatesTo codes
spelled as XDS codes or in another case (422); a Consent's modifierExtension at its root or
in a provision, policyRule under an OID, provision securityLabel/class/period (422); a
granular constraint with `:not`, `:missing`, `:text`, a list of codes, or `_id:not` (same
answers on SQLite and mongomock); If-Match `*` and a list of ETags (400), a conditional
update or delete with If-Match of a document hidden from the requester (412 as for none);
message recipients spelled `./Patient/A`, `patient/A`, `Patient//A`, with a query, a
fragment or leading space (400); a versioned recipient reference (read as the patient, who
reads the message). APND and `signs` of a masked document do not carry the mask (content of
their own; decided here, docs/access-rules.md R14).
"""

from __future__ import annotations

import json

import pytest

from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, auth, dmp_consent, permit
from tests.http.test_attack_pass_governance import (
    _authorize_author,
    _masked_from_authorized,
    count,
    current,
    send,
)
from tests.http.test_attack_pass_xds import deposit as iti41
from tests.http.test_attack_pass_xds import entry_uuid, errors
from tests.http.test_attack_pass_xds import record as xds_record  # noqa: F401 - fixture
from tests.http.test_r18_matrix import (
    AUTHOR,
    CLASS_SYSTEM,
    PARENT,
    PATIENT_A,
    PATIENT_B,
    STRANGER,
    World,
    doc_id,
    own_world,
)

# ruff: noqa: F811
from tests.http.test_xds_update_document_set import xds  # noqa: F401 - fixture
from tests.support.documents import dmp_document, transaction

world = pytest.fixture(own_world, name="world")


def _entry_status(response) -> int:
    """The status of a Bundle's only entry (a batch answers 200 around it)."""
    if response.status_code != 200:
        return response.status_code
    return int(response.get_json()["entry"][0]["response"]["status"].split()[0])


# -- If-Match: a precondition the server cannot read is refused, never ignored ------------------


def _visible_document(world: World) -> tuple[str, str, dict, int]:
    """The author's token, A's visible document (its id, body without meta, version)."""
    author = _authorize_author(world)
    target = doc_id("a-visible")
    body = {k: v for k, v in current(world, "DocumentReference", target).items() if k != "meta"}
    return author, target, body, world.service.store.read("DocumentReference", target).version


@pytest.mark.parametrize("value", ["", 'W/"01"', '"1', 'W/"1"x', 'W/"١"'])
@pytest.mark.parametrize("method", ["PUT", "DELETE"])
def test_if_match_header_the_server_cannot_read_is_a_400(world, method, value):
    """http.html#concurrency (fail closed): an If-Match header given empty was taken for no
    header, and the change was made whatever the version; `W/"01"`, a half-quoted `"1` or
    a non-ASCII digit were read as version 1 (one version, one spelling: W/"1"). 400
    naming If-Match, nothing written."""
    author, target, body, before = _visible_document(world)
    headers = auth(author, **{"Content-Type": FHIR_JSON, "If-Match": value})
    data = json.dumps({**body, "description": "changé"}) if method == "PUT" else None
    response = world.client.open(
        f"/fhir/DocumentReference/{target}", method=method, data=data, headers=headers
    )
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == ["If-Match"]
    assert world.service.store.read("DocumentReference", target).version == before


@pytest.mark.parametrize("value", ["", 0, 1, [], ['W/"1"'], {"version": 1}, True, None])
@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_if_match_of_a_bundle_entry_the_server_cannot_read_is_a_400(world, kind, value):
    """http.html#concurrency (fail closed), Bundle door: `request.ifMatch` given `""`, `0`
    or `[]` was taken for none (the update made at any version); a JSON number, a list, an
    object or a boolean was a 500. 400 naming the entry's ifMatch, nothing written."""
    author, target, body, before = _visible_document(world)
    entry = {
        "resource": {**body, "description": "changé"},
        "request": {"method": "PUT", "url": f"DocumentReference/{target}", "ifMatch": value},
    }
    bundle = {"resourceType": "Bundle", "type": kind, "entry": [entry]}
    response = send(world, author, "POST", "", bundle)
    assert _entry_status(response) == 400, response.get_data(as_text=True)
    assert "ifMatch" in response.get_data(as_text=True)
    assert world.service.store.read("DocumentReference", target).version == before


@pytest.mark.parametrize("value", ['W/"{v}"', '"{v}"', "{v}", ' W/"{v}" '])
def test_if_match_of_the_current_version_in_each_accepted_spelling_is_made(world, value):
    """Companion: the current version, weak, strong or bare (FHIR clients send each), is
    met at the header and in a Bundle entry."""
    author, target, body, before = _visible_document(world)
    headers = auth(author, **{"Content-Type": FHIR_JSON, "If-Match": value.format(v=before)})
    made = world.client.put(
        f"/fhir/DocumentReference/{target}",
        data=json.dumps({**body, "description": "changé"}),
        headers=headers,
    )
    assert made.status_code == 200, made.get_data(as_text=True)
    entry = {
        "resource": {**body, "description": "changé encore"},
        "request": {
            "method": "PUT",
            "url": f"DocumentReference/{target}",
            "ifMatch": value.format(v=before + 1),
        },
    }
    bundle = {"resourceType": "Bundle", "type": "batch", "entry": [entry]}
    assert _entry_status(send(world, author, "POST", "", bundle)) == 200


# -- R14: MASQUE_PS follows the document's content through a transform -------------------------


def _related(code: str, label: str | None, door: str) -> dict:
    document = dmp_document(PATIENT_A, author=AUTHOR, class_code="31", label=label)
    document["relatesTo"] = [
        {"code": code, "target": {"reference": f"DocumentReference/{doc_id('a-masked')}"}}
    ]
    return transaction(PATIENT_A, document, with_submission_set=door == "ITI-65")


@pytest.mark.parametrize("door", ["transaction", "ITI-65"])
def test_r14_a_transform_by_its_author_carries_the_patients_mask(world, door):
    """R14: the author's transform (relatesTo `transforms`: the masked document's content in
    another format) deposited without MASQUE_PS was read by every authorized professional,
    the patient's mask lifted as a replacement lifted it before the governance pass. 422
    (XDSRegistryMetadataError naming MASQUE_PS), nothing written; with the mask it is made
    and stays masked."""
    author = _authorize_author(world)
    before = count(world, "DocumentReference", ("patient", PATIENT_A))
    response = send(world, author, "POST", "", _related("transforms", None, door))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert "MASQUE_PS" in response.get_data(as_text=True)
    assert count(world, "DocumentReference", ("patient", PATIENT_A)) == before
    made = send(world, author, "POST", "", _related("transforms", "MASQUE_PS", door))
    assert made.status_code == 200, made.get_data(as_text=True)
    created = next(
        e["response"]["location"].split("/")[1]
        for e in made.get_json()["entry"]
        if e["response"]["location"].startswith("DocumentReference/")
    )
    assert _masked_from_authorized(world, created)


@pytest.mark.parametrize("association", [v.ASSOC_XFRM, v.ASSOC_XFRM_RPLC])
def test_r14_the_authors_iti41_transform_carries_the_patients_mask(xds, xds_record, association):
    """R14, over XDS: the author's ITI-41 XFRM (or XFRM_RPLC) of the masked document
    without MASQUE_PS is refused (XDSRegistryMetadataError) as the FHIR transform is; with
    MASQUE_PS it is made."""
    _, masked = xds_record["masked"]
    relation = (association, entry_uuid(masked))
    _, refused = iti41(xds, xds_record["nir"], relation=relation, documents=[b"<v2/>"])
    assert "XDSRegistryMetadataError" in [code for code, _ in errors(refused)], errors(refused)
    assert current(xds, "DocumentReference", masked["id"])["status"] == "current"
    _, made = iti41(
        xds, xds_record["nir"], relation=relation, documents=[b"<v3/>"], masking=("MASQUE_PS",)
    )
    assert errors(made) == []


# -- R02, R14, R18: a granular scope reads nothing beyond what it confines ---------------------

HIDDEN_BY_SCOPE = {
    # The patient learns that a document invisible to them exists: their Patient is found
    # (A has one) or not (B has none).
    "_has": "patient/Patient.rs?_has:DocumentReference:patient:security-label=INVISIBLE_PATIENT",
    "_has, system|code": (
        "patient/Patient.rs?_has:DocumentReference:patient:security-label="
        "urn:oid:1.2.250.1.213.1.1.4.13|INVISIBLE_PATIENT"
    ),
    # A chain through the document A's visible one relates to (the hidden one).
    "chain": "patient/DocumentReference.rs?relatesto.security-label=INVISIBLE_PATIENT",
    # A naming parameter: the visible document relating to the hidden one is found by it.
    "relatesto": "patient/DocumentReference.rs?relatesto=DocumentReference/{hidden}",
    "relatesto:missing": "patient/DocumentReference.rs?relatesto:missing=false",
}


@pytest.mark.parametrize("case", list(HIDDEN_BY_SCOPE))
def test_r02_r14_a_granular_scope_does_not_read_what_is_hidden_from_its_holder(world, case):
    """R02, R14, R18: a search's chains, `_has` and naming parameters (List `item`,
    DocumentReference `relatesto`) read only what the requester may see; the granular
    constraint of a scope was added to the search as it stood, unconfined. The patient
    holding `patient/Patient.rs?_has:DocumentReference:patient:security-label=
    INVISIBLE_PATIENT` found their Patient (A) or not (B), learning that a document hidden
    from them exists. Decided here: a granular scope naming a chain, a `_has` or a naming
    parameter is refused (403 R02, as any constraint the server cannot apply)."""
    scope = HIDDEN_BY_SCOPE[case].format(hidden=doc_id("a-invisible"))
    resource_type = scope.split("/")[1].split(".")[0]
    token = world.tokens.issuer.issue(
        subject=PATIENT_A, scopes=scope, fhir_user=f"Patient/{PATIENT_A}", patient=PATIENT_A
    )
    search = f"_id={PATIENT_A}" if resource_type == "Patient" else f"patient={PATIENT_A}"
    response = world.get(token, f"/fhir/{resource_type}?{search}")
    assert response.status_code == 403, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert issue["code"] == "forbidden" and "granular scope" in issue["diagnostics"]


def test_r02_a_granular_scope_on_the_resources_own_elements_is_applied(world):
    """Companion: a constraint on the resource's own elements (category) still confines a
    search (test_attack_pass_authentication and test_scopes hold the rest)."""
    scope = f"patient/DocumentReference.rs?category={CLASS_SYSTEM}|10"
    token = world.tokens.issuer.issue(
        subject=PATIENT_A, scopes=scope, fhir_user=f"Patient/{PATIENT_A}", patient=PATIENT_A
    )
    response = world.get(token, f"/fhir/DocumentReference?patient={PATIENT_A}")
    assert response.status_code == 200, response.get_data(as_text=True)
    found = {e["resource"]["id"] for e in response.get_json().get("entry", [])}
    assert found == {doc_id("a-visible")}


# -- R03, R07: a modifier extension is a modifier, as implicitRules is --------------------------

IDENTITY_SCOPES = "system/Patient.crus system/RelatedPerson.cru"
MODIFIER = [{"url": "https://example.org/fhir/tutelle-levee", "valueBoolean": True}]


@pytest.mark.parametrize(
    "resource_type, resource_id, where",
    [
        ("Patient", PATIENT_B, None),
        ("Patient", PATIENT_B, "contact"),
        ("RelatedPerson", PARENT, None),
    ],
)
@pytest.mark.parametrize("door", ["PUT", "transaction"])
def test_r03_r07_a_modifier_extension_the_rules_do_not_read_is_refused(
    world, resource_type, resource_id, where, door
):
    """R03, R07 (fail closed): the governance pass refused `implicitRules` on a Patient or a
    RelatedPerson (a modifier: the resource means something else), but a `modifierExtension`,
    the same modifier spelled as an extension (FHIR R4: one not understood is not ignored),
    was stored and the identity read as if it had none: a parent's guardianship marked
    lifted stayed in force. 422 `processing` naming it, nothing written (a Consent's was
    refused already)."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    body = {k: v for k, v in current(world, resource_type, resource_id).items() if k != "meta"}
    before = world.service.store.read(resource_type, resource_id).version
    if where is None:
        body["modifierExtension"] = MODIFIER
        expected = f"{resource_type}.modifierExtension"
    else:
        body[where] = [{"name": {"family": "Tuteur"}, "modifierExtension": MODIFIER}]
        expected = f"{resource_type}.{where}[0].modifierExtension"
    if door == "PUT":
        response = send(world, admin, "PUT", f"{resource_type}/{resource_id}", body)
    else:
        entry = {
            "resource": body,
            "request": {"method": "PUT", "url": f"{resource_type}/{resource_id}"},
        }
        response = send(
            world, admin, "POST", "", {"resourceType": "Bundle", "type": door, "entry": [entry]}
        )
    assert response.status_code == 422, response.get_data(as_text=True)
    assert expected in response.get_data(as_text=True)
    assert world.service.store.read(resource_type, resource_id).version == before


# -- R08: no stored médecin traitant, whatever its spelling -------------------------------------

MEDECIN_TRAITANT = (
    "https://interop.esante.gouv.fr/ig/fhir/dmp/StructureDefinition/dmp-medecin-traitant"
)


@pytest.mark.parametrize(
    "url",
    [
        MEDECIN_TRAITANT.replace("https://", "http://"),
        MEDECIN_TRAITANT + "/",
        MEDECIN_TRAITANT.replace("dmp-medecin", "DMP-Medecin"),
    ],
    ids=["http", "trailing slash", "case"],
)
def test_r08_a_stored_medecin_traitant_spelled_otherwise_is_refused(world, url):
    """R08: the governance pass refused `dmp-medecin-traitant` stored on a Patient (served to
    every professional reading it as "you are the médecin traitant"), under its exact URL
    only: under http://, with a trailing slash or in another case it was stored (200). The
    DMP extensions are near misses of the normal form now, as the record-status is: 422
    naming the expected URL, nothing written."""
    admin = world.tokens.system("admin", IDENTITY_SCOPES, "admin")
    body = {k: v for k, v in current(world, "Patient", PATIENT_B).items() if k != "meta"}
    body["extension"] = [*body.get("extension", []), {"url": url, "valueBoolean": True}]
    before = world.service.store.read("Patient", PATIENT_B).version
    response = send(world, admin, "PUT", f"Patient/{PATIENT_B}", body)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert MEDECIN_TRAITANT in response.get_data(as_text=True)
    assert world.service.store.read("Patient", PATIENT_B).version == before


@pytest.mark.parametrize("value", ["", "?", 1, [], {"identifier": "x"}, True, None])
@pytest.mark.parametrize("kind", ["transaction", "batch"])
def test_if_none_exist_of_a_bundle_entry_the_server_cannot_read_is_a_400(world, kind, value):
    """http.html#ccreate (fail closed), Bundle door: `request.ifNoneExist` given `""`, a
    number, a list, an object or a boolean was taken for none and the resource created
    whatever existed (the If-None-Exist header holding no criteria is a 400 already). 400
    naming the entry's ifNoneExist, nothing written."""
    token = world.tokens.patient(PATIENT_A)
    consent = dmp_consent(PATIENT_A, permit(STRANGER), initial_consent=False)
    before = count(world, "Consent", ("patient", PATIENT_A))
    entry = {
        "resource": consent,
        "request": {"method": "POST", "url": "Consent", "ifNoneExist": value},
    }
    response = send(
        world, token, "POST", "", {"resourceType": "Bundle", "type": kind, "entry": [entry]}
    )
    assert _entry_status(response) == 400, response.get_data(as_text=True)
    assert "ifNoneExist" in response.get_data(as_text=True)
    assert count(world, "Consent", ("patient", PATIENT_A)) == before
