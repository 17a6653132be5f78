"""TD0.2, the existence check (PDSm4DMP `transaction_td02.md`; `service/existence_check.py`):
`GET Patient?identifier=<INS system>|<value>` tells a professional who may not read the
record whether it exists and is open, and nothing else (R10, R18).
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from urllib.parse import quote

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.service import lifecycle
from fhir_server.terminology import EXT_RECORD_STATUS, SYSTEM_IDNAT_PS
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    a_patient,
    auth,
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
    assert set(reduced) == {"resourceType", "id", "meta", "identifier", "active"}
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
