"""R10 and the Conseil d'État ruling of 15 October 2025: no care-team access before the
patient's initial consent is collected (`fhir_server/access/initial_consent.py`).

The record: a patient whose médecin traitant is GP, one document deposited through ITI-41.
CARE is a hospital physician of the patient's care team. Each door a professional reads a
record through is tried: REST read (the document, the Patient), search (ITI-67), a
transaction's GET entry, ITI-18 FindDocuments and ITI-43 Retrieve.
"""

from __future__ import annotations

import json

import pytest

from fhir_server.access.initial_consent import INITIAL_CONSENT_CODING
from fhir_server.terminology import SYSTEM_IDNAT_PS
from ihe_xds import vocabulary as v
from tests.http.conftest import FHIR_JSON, auth, dmp_consent, permit
from tests.http.test_notifications import facts, notifications
from tests.http.test_xds_endpoints import GP, Xds, envelope_of, registry_status

CARE = "810000003001"  # a hospital physician of the care team
OTHER = "810000003002"  # another professional of the care team
MISSING = "initial consent"  # what the refusal says


@pytest.fixture
def world(app, client, tokens, data_dir) -> World:
    xds = Xds(app, client, tokens, data_dir)
    patient_id, nir = xds.patient(40)
    request, response = xds.deposit(nir)
    assert registry_status(response)[0] == v.RESPONSE_SUCCESS
    unique_id = request.document_unique_ids["Document01"]
    found = client.get(
        f"/fhir/DocumentReference?patient={patient_id}", headers=auth(tokens.practitioner(GP))
    ).get_json()
    return World(xds, patient_id, nir, found["entry"][0]["resource"]["id"], unique_id)


class World:
    def __init__(self, xds: Xds, patient_id: str, nir: str, doc_id: str, unique_id: str):
        self.xds, self.patient_id, self.nir = xds, patient_id, nir
        self.doc_id, self.unique_id = doc_id, unique_id
        self.client, self.tokens = xds.client, xds.tokens

    def post(self, token: str, resource: dict):
        return self.client.post(
            f"/fhir/{resource['resourceType']}",
            data=json.dumps(resource),
            headers=auth(token, **{"Content-Type": FHIR_JSON}),
        )

    def patient_consent(self, *nested: dict, initial: bool) -> str:
        """The patient writes a Consent (R06); its id."""
        response = self.post(
            self.tokens.patient(self.patient_id),
            dmp_consent(self.patient_id, *nested, initial_consent=initial),
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        return response.get_json()["id"]

    def self_authorization(self, idnat: str):
        """A care-team professional records their own authorization (R10, presumed consent)."""
        return self.post(
            self.tokens.practitioner(idnat),
            dmp_consent(self.patient_id, permit(idnat), initial_consent=False),
        )

    def declaration(self, idnat: str, **changes) -> dict:
        """A professional's declaration that they collected the patient's initial consent."""
        consent = dmp_consent(self.patient_id)
        consent["category"] = [{"coding": [INITIAL_CONSENT_CODING]}]
        consent["dateTime"] = "2026-12-01T10:00:00+01:00"
        consent["performer"] = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": idnat}}]
        consent.update(changes)
        return consent

    def revoke(self, consent_id: str) -> None:
        """The patient sets the Consent carrying the initial consent inactive."""
        patient = self.tokens.patient(self.patient_id)
        current = self.client.get(f"/fhir/Consent/{consent_id}", headers=auth(patient)).get_json()
        current["status"] = "inactive"
        response = self.client.put(
            f"/fhir/Consent/{consent_id}",
            data=json.dumps(current),
            headers=auth(patient, **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code == 200, response.get_data(as_text=True)

    def doors(self, idnat: str, **token) -> dict[str, str]:
        """What each door answers `idnat`: "served", or how it refused."""
        bearer = auth(self.tokens.practitioner(idnat, **token))
        answers: dict[str, str] = {}
        read = self.client.get(f"/fhir/DocumentReference/{self.doc_id}", headers=bearer)
        answers["REST read"] = "served" if read.status_code == 200 else str(read.status_code)
        patient = self.client.get(f"/fhir/Patient/{self.patient_id}", headers=bearer)
        answers["Patient read"] = _told(patient)
        search = self.client.get(
            f"/fhir/DocumentReference?patient={self.patient_id}", headers=bearer
        )
        answers["search"] = _told(search, found=self.doc_id)
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [{"request": {"method": "GET", "url": f"DocumentReference/{self.doc_id}"}}],
        }
        transaction = self.client.post(
            "/fhir",
            data=json.dumps(bundle),
            headers={**bearer, "Content-Type": FHIR_JSON},
        )
        assert transaction.status_code == 200, transaction.get_data(as_text=True)
        entry = transaction.get_json()["entry"][0]
        status = entry["response"]["status"].split()[0]
        answers["transaction GET"] = "served" if status == "200" and "resource" in entry else status
        if token:  # the VIHF of these tests is minted in normal mode only
            return answers
        found = self.xds.find_documents(self.nir, idnat=idnat)
        status, codes = registry_status(found)
        entries = envelope_of(found)[0].findall(f".//{{{v.NS_RIM}}}ExtrinsicObject")
        answers["ITI-18"] = "served" if status == v.RESPONSE_SUCCESS and entries else str(codes)
        retrieved = self.xds.retrieve([self.unique_id], idnat=idnat, nir=self.nir)
        status, codes = registry_status(retrieved)
        answers["ITI-43"] = "served" if status == v.RESPONSE_SUCCESS else str(codes)
        return answers


def _told(response, found: str | None = None) -> str:
    if response.status_code == 200:
        if found is None or found in response.get_data(as_text=True):
            return "served"
        return "empty"
    diagnostics = response.get_json()["issue"][0].get("diagnostics", "")
    return f"{response.status_code} {'initial consent missing' if MISSING in diagnostics else diagnostics}"


REFUSED = {
    "REST read": "404",  # a document read answers as for a missing one (R18)
    "Patient read": "403 initial consent missing",
    "search": "403 initial consent missing",
    "transaction GET": "404",
    "ITI-18": "['LocalPolicyRestrictionError']",
    "ITI-43": "['XDSDocumentUniqueIdError']",  # as for an unknown document (R18)
}
SERVED = dict.fromkeys(REFUSED, "served")


def test_r10_ce2025_a_care_team_member_cannot_authorize_themselves_before_the_initial_consent(
    world,
):
    refused = world.self_authorization(CARE)
    assert refused.status_code == 403, refused.get_data(as_text=True)
    assert MISSING in refused.get_json()["issue"][0]["diagnostics"]
    assert (
        world.doors(CARE)["search"]
        == "403 The patient's authorization is missing for this access to their record"
    )
    world.patient_consent(initial=True)
    assert world.self_authorization(CARE).status_code == 201
    assert world.doors(CARE) == SERVED


def test_r10_ce2025_an_authorized_professional_is_refused_at_every_door_without_it(world):
    """A permit naming CARE opens nothing while the initial consent is not collected; it opens
    every door once the patient records it, and revoking it closes every door again."""
    world.patient_consent(permit(CARE), initial=False)
    assert world.doors(CARE) == REFUSED
    initial = world.patient_consent(initial=True)
    assert world.doors(CARE) == SERVED
    world.revoke(initial)
    assert world.doors(CARE) == REFUSED


def test_r10_ce2025_revoking_it_closes_the_record_to_self_authorized_members(world):
    initial = world.patient_consent(initial=True)
    assert world.self_authorization(CARE).status_code == 201
    assert world.doors(CARE) == SERVED
    world.revoke(initial)
    assert world.doors(CARE) == REFUSED
    again = world.self_authorization(OTHER)
    assert again.status_code == 403 and MISSING in again.get_json()["issue"][0]["diagnostics"]


def test_r10_ce2025_a_professional_declares_they_collected_it_and_it_is_traced(world):
    practitioner = world.tokens.practitioner(CARE)
    declared = world.post(practitioner, world.declaration(CARE))
    assert declared.status_code == 201, declared.get_data(as_text=True)
    assert world.post(practitioner, world.declaration(CARE)).status_code == 409
    assert world.self_authorization(CARE).status_code == 201
    assert world.doors(CARE) == SERVED
    # The patient sees who declared it: the Consent names them, its write is audited.
    patient = world.tokens.patient(world.patient_id)
    consent_id = declared.get_json()["id"]
    stored = world.client.get(f"/fhir/Consent/{consent_id}", headers=auth(patient)).get_json()
    assert stored["performer"][0]["identifier"]["value"] == CARE
    events = world.client.get(
        f"/fhir/AuditEvent?patient={world.patient_id}&_count=200", headers=auth(patient)
    ).get_json()
    writes = [
        e["resource"]
        for e in events["entry"]
        if e["resource"]["action"] == "C"
        and any(
            (entity.get("what") or {}).get("reference", "").startswith(f"Consent/{consent_id}")
            for entity in e["resource"]["entity"]
        )
    ]
    assert len(writes) == 1 and CARE in json.dumps(writes[0]["agent"])
    # R17 (decided here): the patient is told, since it opens their record to the care team.
    told = [
        n
        for n in notifications(world.client, patient)
        if facts(n)["event"]["code"] == "initial-consent"
    ]
    assert len(told) == 1
    assert facts(told[0])["consent"]["reference"] == f"Consent/{consent_id}"
    assert "consentement initial" in told[0]["payload"][0]["contentString"]
    # Only the patient revokes it: a professional can neither deactivate nor delete it.
    deactivated = {**stored, "status": "inactive"}
    put = world.client.put(
        f"/fhir/Consent/{consent_id}",
        data=json.dumps(deactivated),
        headers=auth(world.tokens.practitioner(OTHER), **{"Content-Type": FHIR_JSON}),
    )
    assert put.status_code == 403, put.get_data(as_text=True)
    deleted = world.client.delete(f"/fhir/Consent/{consent_id}", headers=auth(practitioner))
    assert deleted.status_code == 403
    assert world.doors(CARE) == SERVED
    world.revoke(consent_id)
    assert world.doors(CARE) == REFUSED


@pytest.mark.parametrize(
    ("change", "status", "expression"),
    [
        ({"dateTime": None}, 422, "Consent.dateTime"),
        ({"performer": None}, 422, "Consent.performer"),
        (
            {"performer": [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": OTHER}}]},
            403,
            "Consent.performer[0].identifier",
        ),
        ({"status": "draft"}, 422, "Consent.status"),
        (
            {"provision": {"type": "permit", "provision": [permit(CARE)]}},
            422,
            "Consent.provision.provision",
        ),
    ],
    ids=["no-date", "no-performer", "someone-else", "not-active", "grants-something"],
)
def test_r10_ce2025_a_declaration_is_only_what_it_says(world, change, status, expression):
    """A professional's declaration says when, and that they collected it, and grants nothing
    by itself; anything else is refused naming the element, and opens nothing."""
    declaration = world.declaration(CARE)
    for name, value in change.items():
        if value is None:
            declaration.pop(name)
        else:
            declaration[name] = value
    response = world.post(world.tokens.practitioner(CARE), declaration)
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.get_json()["issue"][0]["expression"] == [expression]
    assert world.self_authorization(CARE).status_code == 403


def test_r10_ce2025_a_blocked_professional_declares_nothing(world):
    world.patient_consent({"type": "deny", "actor": permit(CARE)["actor"]}, initial=False)
    response = world.post(world.tokens.practitioner(CARE), world.declaration(CARE))
    assert response.status_code == 403
    assert world.self_authorization(OTHER).status_code == 403


def test_r08_r11_r12_ce2025_the_medecin_traitant_and_emergency_access_do_not_need_it(world):
    """Decided (access/initial_consent.py): the ruling binds the care team's access under
    R10; the médecin traitant (R08), bris de glace (R11) and centre 15 (R12) are as before."""
    world.patient_consent(permit(CARE), initial=False)
    assert world.doors(CARE) == REFUSED
    assert world.doors(GP) == SERVED
    rest_doors = {k: v for k, v in SERVED.items() if not k.startswith("ITI")}
    emergency = world.doors(OTHER, mode="bris_de_glace", reason="patient inconscient")
    assert emergency == rest_doors
    assert world.doors(OTHER, mode="centre_15") == rest_doors
