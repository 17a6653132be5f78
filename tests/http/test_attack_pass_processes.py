"""Attack pass: the access rules across worker processes and over time (R03, R04, R07-R10).

The server runs as several gunicorn workers on one database, each keeping the facts of the
records it read (`service.gate.facts`: a record per record epoch, an INS's Patients per
Patient epoch). Two apps on one data directory (on MongoDB: one database) stand for two
workers: worker B reads (its cache now holds the record), worker A writes the change, and
worker B must refuse at once what the rules now refuse. `test_record_cache.py` sends the
one shape of a Consent turned from permit to deny; these send the other changes of a
record's facts (a closure, a revoked authorization, a new médecin traitant, the end of a
representation, an INS given to another Patient) and the server's own writes (the loader).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from fhir_server.access.record import ADULT_AGE, latest_date
from fhir_server.access.requester import INTERNAL
from fhir_server.config import load_settings
from fhir_server.service.gate import facts
from fhir_server.terminology import EXT_RECORD_STATUS, SYSTEM_IDNAT_PS, SYSTEM_V3_ROLE_CODE
from tests.http.conftest import (
    FHIR_JSON,
    INS_SYSTEM,
    a_patient,
    another_worker,
    auth,
    dmp_consent,
    permit,
    valid_nir,
)

AUTHORIZED = "810000000042"  # authorized by the patient's Consent (R10)
GP = "810000000043"  # the médecin traitant (R08)


class World:
    """Two workers on one database and the tokens of the actors."""

    def __init__(self, app, client, tokens, data_dir) -> None:
        self.a = client
        self.b = another_worker(app, load_settings({"data_dir": data_dir}, environ={}))
        self.b_client = self.b.test_client()
        self.tokens = tokens
        self.app = app

    def write(self, method: str, path: str, body: dict, token: str | None = None) -> dict:
        if token is None and body.get("resourceType") == "Consent":
            token = self.tokens.patient(body["patient"]["reference"].removeprefix("Patient/"))
        response = getattr(self.a, method)(
            f"/fhir/{path}",
            json=body,
            headers=auth(token or self.tokens.system(), **{"Content-Type": FHIR_JSON}),
        )
        assert response.status_code in (200, 201), response.get_data(as_text=True)
        return response.get_json()

    def read_on_b(self, path: str, token: str) -> int:
        return self.b_client.get(f"/fhir/{path}", headers=auth(token)).status_code


@pytest.fixture
def world(app, client, tokens, data_dir):
    built = World(app, client, tokens, data_dir)
    yield built
    built.b.extensions["fhir"].store.close()


def _patient(world: World, n: int, **extra) -> dict:
    patient = world.write("post", "Patient", a_patient(n, **extra))
    world.write("post", "Consent", dmp_consent(patient["id"], permit(AUTHORIZED)))
    return patient


def _with_gp(n: int) -> dict:
    return {
        "generalPractitioner": [
            {
                "type": "Practitioner",
                "identifier": {"system": SYSTEM_IDNAT_PS, "value": GP},
            }
        ]
    }


def test_r03_a_record_closed_through_one_worker_is_closed_on_the_other(world):
    patient = _patient(world, 1)
    search = f"DocumentReference?patient={patient['id']}"
    practitioner = world.tokens.practitioner(AUTHORIZED)
    assert world.read_on_b(search, practitioner) == 200  # cached: open, authorized
    closed = {
        **patient,
        "extension": [{"url": EXT_RECORD_STATUS, "valueCode": "closed"}],
        "active": False,
    }
    closed.pop("meta", None)
    world.write("put", f"Patient/{patient['id']}", closed)
    assert world.read_on_b(search, practitioner) == 403


def test_r10_an_authorization_revoked_through_one_worker_is_revoked_on_the_other(world):
    patient = world.write("post", "Patient", a_patient(2))
    consent = world.write("post", "Consent", dmp_consent(patient["id"], permit(AUTHORIZED)))
    search = f"DocumentReference?patient={patient['id']}"
    practitioner = world.tokens.practitioner(AUTHORIZED)
    assert world.read_on_b(search, practitioner) == 200
    response = world.a.delete(
        f"/fhir/Consent/{consent['id']}", headers=auth(world.tokens.patient(patient["id"]))
    )
    assert response.status_code in (200, 204), response.get_data(as_text=True)
    assert world.read_on_b(search, practitioner) == 403


def test_r08_a_medecin_traitant_replaced_through_one_worker_loses_access_on_the_other(world):
    patient = world.write("post", "Patient", a_patient(3, **_with_gp(3)))
    world.write("post", "Consent", dmp_consent(patient["id"]))
    search = f"DocumentReference?patient={patient['id']}"
    gp = world.tokens.practitioner(GP)
    assert world.read_on_b(search, gp) == 200  # the médecin traitant
    replaced = {**patient}
    replaced.pop("meta", None)
    replaced["generalPractitioner"] = [
        {"type": "Practitioner", "identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHORIZED}}
    ]
    world.write("put", f"Patient/{patient['id']}", replaced)
    assert world.read_on_b(search, gp) == 403


def _parent(world: World, minor_id: str) -> tuple[dict, str]:
    """A parent (PRN) of the minor, and their token as `fhir-server token` makes it."""
    parent = world.write(
        "post",
        "RelatedPerson",
        {
            "resourceType": "RelatedPerson",
            "patient": {"reference": f"Patient/{minor_id}"},
            "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": "PRN"}]}],
            "name": [{"family": "Parent"}],
        },
    )
    token = world.tokens.issuer.issue(
        subject=parent["id"],
        scopes="patient/*.cruds",
        fhir_user=f"RelatedPerson/{parent['id']}",
        patient=minor_id,
    )
    return parent, token


def test_r07_a_representation_ended_through_one_worker_ends_on_the_other(world):
    minor = _patient(world, 4, birthDate="2015-03-03")
    parent, token = _parent(world, minor["id"])
    search = f"DocumentReference?patient={minor['id']}"
    assert world.read_on_b(search, token) == 200
    ended = {**parent, "period": {"end": "2020-01-01"}}
    ended.pop("meta", None)
    world.write("put", f"RelatedPerson/{parent['id']}", ended)
    assert world.read_on_b(search, token) == 403


def test_r04_an_ins_given_to_another_patient_through_one_worker_designates_it_on_the_other(
    world,
):
    """Worker B resolved the INS to the Patient the practitioner is authorized on; the
    identity feed moves the INS to another Patient, whose record they may not read."""
    nir = valid_nir(5)
    first = _patient(world, 5)
    search = f"DocumentReference?patient.identifier={INS_SYSTEM}|{nir}"
    practitioner = world.tokens.practitioner(AUTHORIZED)
    assert world.read_on_b(search, practitioner) == 200
    moved = {**first, "identifier": [{"system": INS_SYSTEM, "value": valid_nir(6)}]}
    moved.pop("meta", None)
    world.write("put", f"Patient/{first['id']}", moved)
    second = world.write("post", "Patient", a_patient(5))
    world.write("post", "Consent", dmp_consent(second["id"]))
    assert world.read_on_b(search, practitioner) == 403


def test_r10_r06_a_consent_the_loader_moves_to_another_record_leaves_the_first(world):
    """The server's own writes (`fhir-server load`: INTERNAL) may give a Consent another
    patient; the record it leaves must be read again too, by every worker. Only the record
    it enters was: worker B kept the authorization on the record the Consent left."""
    first = world.write("post", "Patient", a_patient(7))
    world.write("post", "Consent", dmp_consent(first["id"]))  # initial consent, no permit
    second = world.write("post", "Patient", a_patient(8))
    authorization = world.write("post", "Consent", dmp_consent(first["id"], permit(AUTHORIZED)))
    search = f"DocumentReference?patient={first['id']}"
    practitioner = world.tokens.practitioner(AUTHORIZED)
    assert world.read_on_b(search, practitioner) == 200  # cached: authorized on the first
    moved = {**authorization, "patient": {"reference": f"Patient/{second['id']}"}}
    moved.pop("meta", None)
    world.app.extensions["fhir"].service.update(INTERNAL, "Consent", moved["id"], moved)
    assert world.read_on_b(search, practitioner) == 403


def test_r07_r06_a_guardianship_the_loader_moves_to_another_minor_leaves_the_first(world):
    """As the Consent above: a RelatedPerson the server's own write re-points to another
    minor no longer represents the first, on any worker."""
    first = _patient(world, 9, birthDate="2015-03-03")
    second = _patient(world, 10, birthDate="2016-04-04")
    parent, token = _parent(world, first["id"])
    search = f"DocumentReference?patient={first['id']}"
    assert world.read_on_b(search, token) == 200  # cached: the first minor's parent
    moved = {**parent, "patient": {"reference": f"Patient/{second['id']}"}}
    moved.pop("meta", None)
    world.app.extensions["fhir"].service.update(INTERNAL, "RelatedPerson", moved["id"], moved)
    assert world.read_on_b(search, token) == 403


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def test_r07_a_minor_turning_18_ends_the_representation_with_no_write(world, monkeypatch):
    """Over time in one worker: the record cached the day before the 18th birthday (on the
    latest date anywhere) must not keep the parent in on the birthday, though nothing was
    written to the record in between."""
    now = datetime.now(UTC)
    birthday = latest_date(now) + timedelta(days=1)
    minor = _patient(world, 11, birthDate=_years_before(birthday, ADULT_AGE).isoformat())
    _, token = _parent(world, minor["id"])
    search = f"DocumentReference?patient={minor['id']}"
    assert world.read_on_b(search, token) == 200  # 17 everywhere: the parent reads

    class Tomorrow(datetime):
        @classmethod
        def now(cls, tz=None):
            return now + timedelta(days=1)

    monkeypatch.setattr(facts, "datetime", Tomorrow)
    assert world.read_on_b(search, token) == 403
