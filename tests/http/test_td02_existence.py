"""TD0.2, the existence check (PDSm4DMP `transaction_td02.md`; `service/existence_check.py`):
`GET Patient?identifier=<INS system>|<value>` tells a professional who may not read the
record whether it exists and is open, why it was closed (dmp-fermeture: dateFermeture,
motifFermeture, raisonFermeture) and whether they are its médecin traitant
(dmp-medecin-traitant), and nothing else (R10, R18), and nothing of a Patient the token's
scopes for Patient leave out (R02): answered as an INS without record, as a search
designating that Patient by id, INS or chain answers as for an unknown patient.
"""

from __future__ import annotations

import argparse
import base64
import json
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.lifecycle_cli import add_record_command
from fhir_server.resources.record_closure import Closure
from fhir_server.service import lifecycle
from fhir_server.terminology import EXT_RECORD_STATUS, SYSTEM_IDNAT_PS
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    a_patient,
    auth,
    current_engine,
    deny,
    dmp_consent,
    permit,
    valid_nir,
)

GP = "810000004001"  # médecin traitant of the open record
AUTHORIZED = "810000004002"
STRANGER = "810000004003"  # neither authorized nor blocked
BLOCKED = "810000004004"
FERMETURE = "https://interop.esante.gouv.fr/ig/fhir/dmp/StructureDefinition/dmp-fermeture"
TRAITANT = "https://interop.esante.gouv.fr/ig/fhir/dmp/StructureDefinition/dmp-medecin-traitant"
MOTIF = "https://interop.esante.gouv.fr/ig/fhir/dmp/CodeSystem/dmp-motif-fermeture"


class World:
    def __init__(self, app, client, tokens) -> None:
        self.client, self.tokens = client, tokens
        self.runtime = app.extensions["fhir"]
        system = auth(tokens.system(), **{"Content-Type": FHIR_JSON})
        gp = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}]
        telecom = [{"system": "phone", "value": "0601020304"}]
        self.ids: dict[str, str] = {}
        for name, n in (("open", 50), ("closed", 51)):
            patient = a_patient(n, generalPractitioner=gp, telecom=telecom)
            created = client.post("/fhir/Patient", data=json.dumps(patient), headers=system)
            assert created.status_code == 201, created.get_data(as_text=True)
            self.ids[name] = created.get_json()["id"]
        self.nir = {"open": valid_nir(50), "closed": valid_nir(51), "opposed": valid_nir(52)}
        for name in ("open", "closed"):
            choices = dmp_consent(self.ids[name], permit(AUTHORIZED), deny(BLOCKED))
            written = client.post(
                "/fhir/Consent",
                data=json.dumps(choices),
                headers=auth(tokens.patient(self.ids[name]), **{"Content-Type": FHIR_JSON}),
            )
            assert written.status_code == 201, written.get_data(as_text=True)
        lifecycle.close_record(self.runtime.service, self.ids["closed"])
        self.ids["opposed"] = lifecycle.oppose_creation(
            self.runtime.service,
            self.nir["opposed"],
            family="Durand52",
            given="Marie",
            gender="female",
            birth_date="1980-01-01",
        ).id

    def check(self, idnat: str, query: str | None = None, record: str = "open"):
        query = query or f"identifier={quote(f'{INS_SYSTEM}|{self.nir[record]}')}"
        return self.client.get(
            f"/fhir/Patient?{query}", headers=auth(self.tokens.practitioner(idnat))
        )


@pytest.fixture
def world(app, client, tokens) -> World:
    return World(app, client, tokens)


def only_patient(response) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)
    bundle = response.get_json()
    assert bundle["type"] == "searchset" and bundle.get("total", 1) == 1
    (entry,) = bundle["entry"]
    assert entry["search"]["mode"] == "match"
    return entry["resource"]


def test_td02_a_professional_who_may_not_read_learns_the_record_is_open_and_nothing_else(world):
    """R10: the whole Patient to an authorized professional; to another, what TD0.2 tells."""
    whole = only_patient(world.check(AUTHORIZED))
    assert {"name", "birthDate", "gender", "telecom", "generalPractitioner"} <= set(whole)
    answer = world.check(STRANGER)
    assert answer.get_json()["total"] == 1  # as the TD0.2 example
    reduced = only_patient(answer)
    assert reduced["id"] == world.ids["open"]
    assert reduced["active"] is True
    assert reduced["identifier"] == [{"system": INS_SYSTEM, "value": world.nir["open"]}]
    assert set(reduced) == {"resourceType", "id", "meta", "identifier", "active", "extension"}
    assert reduced["extension"] == [{"url": TRAITANT, "valueBoolean": False}]
    assert reduced["meta"]["tag"][0]["code"] == "SUBSETTED"
    text = json.dumps(reduced)
    assert "Durand50" not in text and "1985-07-01" not in text and GP not in text
    # The record itself stays closed to them.
    refused = world.client.get(
        f"/fhir/DocumentReference?patient={world.ids['open']}",
        headers=auth(world.tokens.practitioner(STRANGER)),
    )
    assert refused.status_code == 403


def test_td02_r09_a_blocked_professional_gets_the_answer_of_an_unauthorized_one(world):
    assert only_patient(world.check(BLOCKED)) == only_patient(world.check(STRANGER))


def test_td02_r16_the_check_is_traced_for_the_patient(world):
    only_patient(world.check(STRANGER))
    patient = world.tokens.patient(world.ids["open"])
    events = world.client.get(
        f"/fhir/AuditEvent?patient={world.ids['open']}&_count=200", headers=auth(patient)
    ).get_json()
    checks = [
        e["resource"]
        for e in events["entry"]
        if STRANGER in json.dumps(e["resource"].get("agent"))
        and any(
            detail.get("valueString") == "TD0.2"
            for entity in e["resource"]["entity"]
            for detail in entity.get("detail") or []
        )
    ]
    assert len(checks) == 1
    named = [(entity.get("what") or {}).get("reference") for entity in checks[0]["entity"]]
    assert f"Patient/{world.ids['open']}" in named


def test_td02_r03_a_closed_record_is_told_closed_with_its_closure(world):
    reduced = only_patient(world.check(STRANGER, record="closed"))
    assert reduced["active"] is False
    extensions = {e["url"]: e for e in reduced["extension"]}
    assert extensions[EXT_RECORD_STATUS]["valueCode"] == "closed"
    closure = {e["url"]: e for e in extensions[FERMETURE]["extension"]}
    assert closure["dateFermeture"]["valueDate"] == datetime.now(UTC).date().isoformat()
    assert set(closure) == {"dateFermeture"}, "closed with no motive: none is told"
    assert extensions[TRAITANT]["valueBoolean"] is False
    assert set(reduced) == {"resourceType", "id", "meta", "identifier", "active", "extension"}
    # Every professional is told so, authorized or not: the record is closed to all (R03).
    assert only_patient(world.check(AUTHORIZED, record="closed")) == reduced


def test_td02_an_ins_without_record_has_no_entry_and_an_opposed_one_is_told_as_before(world):
    unknown = world.check(STRANGER, f"identifier={quote(f'{INS_SYSTEM}|{valid_nir(59)}')}")
    assert unknown.status_code == 200, unknown.get_data(as_text=True)
    assert unknown.get_json()["total"] == 0 and "entry" not in unknown.get_json()
    # Audited as any search is (R16): an event of that professional keeping the query.
    events = world.runtime.service.search(INTERNAL, "AuditEvent", [("_count", "1000")])
    queries = [
        base64.b64decode(entity["query"]).decode()
        for event in events.resources()[0]
        if STRANGER in json.dumps(event.get("agent"))
        for entity in event["entity"]
        if entity.get("query")
    ]
    assert any(valid_nir(59) in query for query in queries), queries
    opposed = world.check(STRANGER, record="opposed")
    assert opposed.status_code == 403
    assert "opposed" in opposed.get_json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize(
    "extra",
    [
        "&name=Durand50",
        "&birthdate=1985-07-01",
        "&_include=Patient:general-practitioner",
        "&_revinclude=Consent:patient",
        "&_count=1",
        "&_summary=true",
        "&_elements=name",
        "&_total=accurate",
        "&_sort=birthdate",
        "&general-practitioner.identifier=" + quote(f"{SYSTEM_IDNAT_PS}|{GP}"),
        "&_has:Consent:patient:status=active",
        "&identifier=" + quote(f"{INS_SYSTEM}|{valid_nir(51)}"),
    ],
)
def test_td02_r18_only_the_exact_ins_search_is_an_existence_check(world, extra):
    """Not an oracle beyond TD0.2: with any other parameter the search is judged as before
    (the refusal of R10), and answers nothing of the record."""
    only_patient(world.check(STRANGER))
    nir = world.nir["open"]
    ins = f"identifier={quote(f'{INS_SYSTEM}|{nir}')}"
    response = world.check(STRANGER, ins + extra)
    assert response.status_code in (400, 403), response.get_data(as_text=True)
    assert world.ids["open"] not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "query",
    ["identifier={nir}", "identifier=urn:oid:1.2.3|{nir}", "identifier:not={ins}", "_id={id}"],
    ids=["no-system", "not-an-ins-system", "modifier", "by-id"],
)
def test_td02_r18_other_patient_searches_are_judged_as_before(world, query):
    only_patient(world.check(STRANGER))
    ins = quote(f"{INS_SYSTEM}|{world.nir['open']}")
    spelled = query.format(nir=world.nir["open"], ins=ins, id=world.ids["open"])
    response = world.check(STRANGER, spelled)
    assert response.status_code in (400, 403, 404), response.get_data(as_text=True)
    assert "Durand50" not in response.get_data(as_text=True)


# -- the closure's motive and reason, the médecin traitant status (PDSm4DMP TD0.2 output) -------


def told(reduced: dict) -> dict:
    """url -> extension of a TD0.2 answer."""
    return {e["url"]: e for e in reduced.get("extension") or []}


def fermeture(reduced: dict) -> dict:
    return {e["url"]: e for e in told(reduced)[FERMETURE]["extension"]}


def assert_reduced(reduced: dict, *, active: bool) -> None:
    """Exactly what TD0.2 tells a professional who may not read the record: the record's
    status, its closure, the requester's médecin traitant status; nothing of its content."""
    assert set(reduced) == {"resourceType", "id", "meta", "identifier", "active", "extension"}
    assert reduced["active"] is active
    expected = {TRAITANT} | ({EXT_RECORD_STATUS, FERMETURE} if not active else set())
    assert set(told(reduced)) == expected
    text = json.dumps(reduced)
    for secret in ("Durand", "1985-07-01", "0601020304", GP, "DocumentReference"):
        assert secret not in text, secret


def close_by_command(world, data_dir, *options: str) -> int:
    if current_engine() != "sqlite":
        pytest.skip("the command opens the data dir's store (SQLite): mongomock's is in memory")
    parser = argparse.ArgumentParser()
    add_record_command(parser.add_subparsers())
    args = parser.parse_args(
        ["record", "close", "--data-dir", str(data_dir), world.ids["open"], *options]
    )
    return args.func(args)


def test_td02_a_closure_motive_and_reason_given_by_the_command_are_told(world, data_dir):
    """`fhir-server record close --reason CODE --reason-text TEXT`: TD0.2 answers them in
    dmp-fermeture (motifFermeture of the dmp-motif-fermeture system, raisonFermeture)."""
    assert close_by_command(world, data_dir, "--reason", "deces", "--reason-text", "Acte reçu") == 0
    reduced = only_patient(world.check(STRANGER))
    assert_reduced(reduced, active=False)
    closure = fermeture(reduced)
    assert closure["motifFermeture"]["valueCodeableConcept"]["coding"][0]["system"] == MOTIF
    assert closure["motifFermeture"]["valueCodeableConcept"]["coding"][0]["code"] == "deces"
    assert closure["raisonFermeture"] == {"url": "raisonFermeture", "valueString": "Acte reçu"}
    assert closure["dateFermeture"]["valueDate"] == datetime.now(UTC).date().isoformat()


def test_td02_a_closure_motive_outside_the_code_list_is_refused_by_the_command(
    world, data_dir, capsys
):
    with pytest.raises(SystemExit):
        close_by_command(world, data_dir, "--reason", "demenagement")
    assert "demenagement" in capsys.readouterr().err
    assert close_by_command(world, data_dir, "--reason-text", "sans motif") == 2
    assert only_patient(world.check(STRANGER))["active"] is True


def test_td02_reopening_removes_the_closure(world):
    service = world.runtime.service
    lifecycle.close_record(service, world.ids["open"], Closure("patient-demande", "Demande"))
    assert "motifFermeture" in fermeture(only_patient(world.check(STRANGER)))
    lifecycle.reopen_record(service, world.ids["open"])
    reduced = only_patient(world.check(STRANGER))
    assert_reduced(reduced, active=True)
    assert FERMETURE not in json.dumps(service.store.read("Patient", world.ids["open"]).json())


def closing_update(world, *parts: dict) -> dict:
    """The Patient update that closes the open record (the FHIR door, R03), with these
    dmp-fermeture parts."""
    body = world.runtime.service.store.read("Patient", world.ids["open"]).json()
    body.pop("meta")
    body = lifecycle.with_status(body, "closed")
    body["extension"].append({"url": FERMETURE, "extension": list(parts)})
    return body


def put_patient(world, body: dict):
    return world.client.put(
        f"/fhir/Patient/{world.ids['open']}",
        data=json.dumps(body),
        headers=auth(world.tokens.system(), **{"Content-Type": FHIR_JSON}),
    )


MOTIF_PART = {
    "url": "motifFermeture",
    "valueCodeableConcept": {"coding": [{"system": MOTIF, "code": "patient-demande"}]},
}


def test_td02_a_closure_given_by_the_patient_update_that_closes_is_told(world):
    reason = {"url": "raisonFermeture", "valueString": "Demande explicite du patient"}
    response = put_patient(world, closing_update(world, MOTIF_PART, reason))
    assert response.status_code == 200, response.get_data(as_text=True)
    closure = fermeture(only_patient(world.check(AUTHORIZED)))
    assert closure["motifFermeture"]["valueCodeableConcept"]["coding"][0]["code"] == (
        "patient-demande"
    )
    assert closure["raisonFermeture"]["valueString"] == "Demande explicite du patient"


@pytest.mark.parametrize(
    "parts, status, named",
    [
        (
            [{**MOTIF_PART, "valueCodeableConcept": {"coding": [{"system": MOTIF, "code": "x"}]}}],
            "closed",
            "motifFermeture",
        ),
        ([{"url": "raisonFermeture", "valueString": "sans motif"}], "closed", "dmp-fermeture"),
        ([MOTIF_PART, {"url": "dateFermeture", "valueDate": "2020-01-01"}], "closed", "date"),
        ([MOTIF_PART, {"url": "raisonFermeture", "valueString": "x" * 501}], "closed", "raison"),
        ([MOTIF_PART], "open", "record-status"),
    ],
    ids=["unknown-motive", "no-motive", "date-is-the-servers", "reason-too-long", "open-record"],
)
def test_td02_a_malformed_closure_is_refused_and_nothing_is_written(world, parts, status, named):
    body = closing_update(world, *parts)
    body = {**body, "extension": [e for e in body["extension"] if e["url"] != EXT_RECORD_STATUS]}
    body["extension"].append({"url": EXT_RECORD_STATUS, "valueCode": status})
    response = put_patient(world, body)
    assert response.status_code == 422, response.get_data(as_text=True)
    issue = response.get_json()["issue"][0]
    assert named in issue["diagnostics"] + " ".join(issue.get("expression", []))
    assert lifecycle.record_status(
        world.runtime.service.store.read("Patient", world.ids["open"]).json()
    ) == ("open")


def test_td02_the_medecin_traitant_is_told_so_and_nothing_more(world):
    """EF_DMP01_07, "statut médecin traitant DMP": the médecin traitant of a closed record
    (which they may no longer read, R03) is told they are; another professional that they
    are not; neither is told anything else."""
    lifecycle.close_record(world.runtime.service, world.ids["open"], Closure("autre", "Erreur"))
    traitant = only_patient(world.check(GP))
    assert_reduced(traitant, active=False)
    assert told(traitant)[TRAITANT]["valueBoolean"] is True
    stranger = only_patient(world.check(STRANGER))
    assert_reduced(stranger, active=False)
    assert told(stranger)[TRAITANT]["valueBoolean"] is False
    assert fermeture(traitant) == fermeture(stranger)
    documents = world.client.get(
        f"/fhir/DocumentReference?patient={world.ids['open']}",
        headers=auth(world.tokens.practitioner(GP)),
    )
    assert documents.status_code == 403


# -- R02, R18: within the token's scope limits for Patient ---------------------------------------


def scoped_practitioner(world: World, idnat: str, scopes: str, patient: str | None = None) -> str:
    """A practitioner's token with `scopes` (and a patient in context, if given)."""
    extensions = {
        "ihe_iua": {
            "subject_name": "Dr Marie Durand",
            "national_provider_identifier": idnat,
            "subject_role": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": "10"}],
            "subject_organization": "CH Exemple",
            "subject_organization_id": "urn:oid:1.2.250.1.71.4.2.2|1000000001",
            "purpose_of_use": [{"system": "urn:oid:1.2.250.1.213.1.1.4.248", "code": "normal"}],
        },
        "dmp": {"access_mode": "normal"},
    }
    return world.tokens.issuer.issue(
        subject=idnat, scopes=scopes, patient=patient, extensions=extensions
    )


# Scopes whose limit for Patient leaves out the records of `World` (every one is a woman's),
# with or without another patient in context.
CONFINING = {
    "patient/ scope, no patient in context": ("patient/Patient.rs", False),
    "patient/ scope, another patient in context": ("patient/Patient.rs", True),
    "granular patient/ scope, another patient in context": ("patient/Patient.rs?gender=male", True),
    "granular user/ scope": ("user/Patient.rs?gender=male", False),
}
UNKNOWN_ID = "0b0b0b0b-0000-4000-8000-000000000000"


def answer(response) -> tuple:
    """What a response tells: status, and the entries or the refusal's wording."""
    body = response.get_json()
    if body.get("resourceType") == "Bundle":
        return response.status_code, body.get("total"), body.get("entry", [])
    return response.status_code, [(i["code"], i.get("diagnostics")) for i in body["issue"]]


def confined_token(world: World, idnat: str, confining: str) -> str:
    scopes, in_context = CONFINING[confining]
    other = None
    if in_context:
        created = world.client.post(
            "/fhir/Patient",
            data=json.dumps(a_patient(58, gender="male")),
            headers=auth(world.tokens.system(), **{"Content-Type": FHIR_JSON}),
        )
        assert created.status_code == 201, created.get_data(as_text=True)
        other = created.get_json()["id"]
    return scoped_practitioner(world, idnat, f"{scopes} user/DocumentReference.rs", other)


@pytest.mark.parametrize("idnat", [STRANGER, AUTHORIZED])
@pytest.mark.parametrize("record", ["open", "closed", "opposed"])
@pytest.mark.parametrize("confining", list(CONFINING))
def test_td02_r02_r18_a_patient_outside_the_scopes_is_answered_as_an_ins_without_record(
    world, confining, record, idnat
):
    """R02, R18: the check judged the record whatever the token's scopes for Patient: under
    `patient/Patient.rs` without a patient in context, or `user/Patient.rs?gender=male`,
    an unauthorized professional was told the id of a woman's record and whether it was
    open, closed (and why) or opposed. Now the answer is the one of an INS without record
    (and with another patient in context, the refusal of the binding, as before)."""
    token = confined_token(world, idnat, confining)

    def check(nir: str):
        query = f"identifier={quote(f'{INS_SYSTEM}|{nir}')}"
        return world.client.get(f"/fhir/Patient?{query}", headers=auth(token))

    known = check(world.nir[record])
    assert answer(known) == answer(check(valid_nir(59)))
    assert world.ids[record] not in known.get_data(as_text=True)


@pytest.mark.parametrize(
    "path",
    [
        "Patient?_id={id}",
        "Patient?identifier={ins}&_count=5",
        "DocumentReference?patient.identifier={ins}",
    ],
)
@pytest.mark.parametrize("idnat", [STRANGER, AUTHORIZED])
@pytest.mark.parametrize("record", ["open", "closed", "opposed"])
@pytest.mark.parametrize("confining", list(CONFINING))
def test_r02_r18_a_search_designating_a_patient_outside_the_scopes_answers_as_an_unknown_one(
    world, confining, record, idnat, path
):
    """R02, R18: a search designating a patient by reading Patients (`_id` or `identifier`
    in a search of Patient, a `patient.identifier` chain) was judged on the record before
    the scopes confined the Patients read: 403 (R10, closed, opposed) or 200 without entry,
    against 404 for an unknown id or INS. The read of that Patient answers 404 as for a
    missing one; the search now answers as for an unknown patient too."""
    token = confined_token(world, idnat, confining)

    def search(patient_id: str, nir: str):
        url = path.format(id=patient_id, ins=quote(f"{INS_SYSTEM}|{nir}"))
        return world.client.get(f"/fhir/{url}", headers=auth(token))

    known = search(world.ids[record], world.nir[record])
    assert answer(known) == answer(search(UNKNOWN_ID, valid_nir(59)))


def test_td02_r02_a_patient_within_a_granular_scope_is_answered_as_before(world):
    """The scope's constraint is applied, not a blanket refusal: under
    `user/Patient.rs?gender=female` the women's records are checked and searched as before."""
    scopes = "user/Patient.rs?gender=female user/DocumentReference.rs"
    stranger = scoped_practitioner(world, STRANGER, scopes)
    nir = world.nir["open"]
    query = f"identifier={quote(f'{INS_SYSTEM}|{nir}')}"
    reduced = only_patient(world.client.get(f"/fhir/Patient?{query}", headers=auth(stranger)))
    assert reduced["id"] == world.ids["open"] and reduced["active"] is True
    authorized = scoped_practitioner(world, AUTHORIZED, scopes)
    whole = only_patient(
        world.client.get(f"/fhir/Patient?_id={world.ids['open']}", headers=auth(authorized))
    )
    assert whole["name"][0]["family"] == "Durand50"
