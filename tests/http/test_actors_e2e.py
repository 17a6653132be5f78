"""Every kind of actor, end to end over HTTP, with tokens printed by `fhir-server token`.

One realistic record is built the way it is in production: the health insurer's system
creates the identities (R15), the patient writes their Consent (R06), a hospital system
deposits documents with classes (TRE_A03) and DMP labels (TRE_A07). Then each actor reads
it with a token from the command line and sees exactly what the rules give them.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest

from fhir_server.cli import main as fhir_server
from fhir_server.terminology import (
    SYSTEM_ACT_REASON,
    SYSTEM_DMP_CONFIDENTIALITY,
    SYSTEM_IDNAT_PS,
    SYSTEM_V3_ROLE_CODE,
)
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
from tests.support.documents import dmp_document

CLASS_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.1"  # TRE_A03 ClasseDocument

GP = "810000001001"  # médecin traitant of Paul (R08), also (vainly) blocked by him
AUTHORIZED = "810000001002"  # a hospital physician Paul authorized (R10)
PHARMACIST = "810000001003"  # profession 21, authorized by Paul (R13 limits his classes)
BLOCKED = "810000001004"  # blocked by Paul (R09)
EMERGENCY = "810000001005"  # an emergency physician nobody authorized (R11)
REGULATOR = "810000001006"  # a Samu regulator (R12)
AUTHOR = "810000001007"  # the hospital physician who wrote the documents

INSURER_SCOPES = (
    "system/Patient.crus system/RelatedPerson.crus system/DocumentReference.c "
    "system/Binary.c system/List.c"
)


def token(data_dir: Path, *flags: str) -> str:
    """What `fhir-server token FLAGS --data-dir DIR` prints."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = fhir_server(["token", *flags, "--data-dir", str(data_dir)])
    assert code == 0, f"fhir-server token {' '.join(flags)} failed"
    printed = out.getvalue().strip()
    assert printed.count(".") == 2, "the command must print only the JWT"
    return printed


def practitioner(data_dir: Path, idnat: str, profession: str = "10", *more: str) -> str:
    return token(data_dir, "--practitioner", idnat, "--profession", profession, *more)


def by_actor(kind: str, idnat: str) -> dict:
    return permit(idnat) if kind == "permit" else deny(idnat)


def opposing(purpose: str) -> dict:
    return {"type": "deny", "purpose": [{"system": SYSTEM_ACT_REASON, "code": purpose}]}


def document(patient_id: str, title: str, class_code: str, label: str | None = None) -> dict:
    """A DMP document by AUTHOR, its bytes inline (ITI-105), `title` as its description."""
    resource = dmp_document(
        patient_id, class_code=class_code, label=label, title=title, description=title
    )
    resource["author"] = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": AUTHOR}}]
    if label:
        resource["meta"] = {"security": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": label}]}
    return resource


@dataclass
class Record:
    client: object
    data_dir: Path
    paul: str  # an adult with a médecin traitant and a detailed Consent
    lea: str  # Paul's daughter, a minor
    parent: str  # RelatedPerson: Paul as Léa's parent
    anne: str  # an adult who opposed centre 15 but not bris de glace
    docs: dict[str, str]  # title -> id

    def post(self, bearer: str, resource: dict):
        return self.client.post(
            f"/fhir/{resource['resourceType']}",
            data=json.dumps(resource),
            headers=auth(bearer, **{"Content-Type": FHIR_JSON}),
        )

    def titles(self, bearer: str, query: str) -> set[str]:
        response = self.client.get(f"/fhir/DocumentReference?{query}", headers=auth(bearer))
        assert response.status_code == 200, response.get_data(as_text=True)
        return {e["resource"]["description"] for e in response.get_json().get("entry", [])}


def _created(response) -> str:
    assert response.status_code == 201, response.get_data(as_text=True)
    return response.get_json()["id"]


@pytest.fixture
def record(client, data_dir) -> Record:
    insurer = token(
        data_dir,
        "--system", "cnam-feed",
        "--organization-type", "health_insurer",
        "--scope", INSURER_SCOPES,
    )  # fmt: skip
    hospital = token(data_dir, "--system", "his-ch-exemple", "--organization-type", "hospital")
    built = Record(client, data_dir, "", "", "", "", {})
    gp = [{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}]
    built.paul = _created(built.post(insurer, a_patient(11, generalPractitioner=gp)))
    built.lea = _created(built.post(insurer, a_patient(12, birthDate="2015-09-14")))
    built.anne = _created(built.post(insurer, a_patient(13)))
    built.parent = _created(
        built.post(
            insurer,
            {
                "resourceType": "RelatedPerson",
                "patient": {"reference": f"Patient/{built.lea}"},
                "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": "PRN"}]}],
                "name": [{"family": "Durand11", "given": ["Marie"]}],
            },
        )
    )
    paul = token(data_dir, "--patient", built.paul)
    _created(
        built.post(
            paul,
            dmp_consent(
                built.paul,
                by_actor("permit", AUTHORIZED),
                by_actor("permit", PHARMACIST),
                by_actor("deny", BLOCKED),
                by_actor("deny", GP),  # R08: the médecin traitant cannot be blocked
                opposing("BTG"),
            ),
        )
    )
    anne = token(data_dir, "--patient", built.anne)
    _created(built.post(anne, dmp_consent(built.anne, opposing("ETREAT"))))
    for patient_id, title, class_code, label in (
        (built.paul, "discharge report", "10", None),
        (built.paul, "prescription", "42", None),
        (built.paul, "care history", "60", None),
        (built.paul, "psychiatric report", "10", "MASQUE_PS"),
        (built.paul, "biopsy result", "10", "INVISIBLE_PATIENT"),
        (built.lea, "vaccination report", "10", None),
        (built.lea, "contraception consultation", "10", "INVISIBLE_REPRESENTANTS_LEGAUX"),
        (built.anne, "anne discharge report", "10", None),
        (built.anne, "anne masked report", "10", "MASQUE_PS"),
    ):
        built.docs[title] = _created(
            built.post(hospital, document(patient_id, title, class_code, label))
        )
    return built


PAUL_ALL = {
    "discharge report",
    "prescription",
    "care history",
    "psychiatric report",
    "biopsy result",
}


def test_r06_patient_reads_own_record_except_invisible_patient(record):
    paul = token(record.data_dir, "--patient", record.paul)
    assert record.titles(paul, f"patient={record.paul}") == PAUL_ALL - {"biopsy result"}
    hidden = record.client.get(
        f"/fhir/DocumentReference/{record.docs['biopsy result']}", headers=auth(paul)
    )
    assert hidden.status_code == 404


def test_r07_parent_reads_childs_record_except_invisible_representants_legaux(record):
    parent = token(record.data_dir, "--representative", record.parent, "--patient", record.lea)
    assert record.titles(parent, f"patient={record.lea}") == {"vaccination report"}
    assert record.titles(parent, "") == {"vaccination report"}
    # ...and nothing of the parent's own record through the child's token.
    assert (
        record.titles(parent, f"patient={record.lea}&_id={record.docs['discharge report']}")
        == set()
    )


def test_r08_medecin_traitant_sees_everything_even_masked_and_despite_a_block(record):
    gp = practitioner(record.data_dir, GP)
    assert record.titles(gp, f"patient={record.paul}") == PAUL_ALL


def test_r10_authorized_practitioner_sees_all_but_masque_ps(record):
    doctor = practitioner(record.data_dir, AUTHORIZED)
    ins = quote(f"{INS_SYSTEM}|{valid_nir(11)}")
    assert record.titles(doctor, f"patient.identifier={ins}") == PAUL_ALL - {"psychiatric report"}


def test_r10_practitioner_without_authorization_is_told_it_is_missing(record):
    stranger = practitioner(record.data_dir, "810000001999")
    response = record.client.get(
        f"/fhir/DocumentReference?patient={record.anne}", headers=auth(stranger)
    )
    assert response.status_code == 403
    assert "authorization is missing" in response.get_json()["issue"][0]["diagnostics"]


def test_r09_blocked_practitioner_is_refused_like_an_unauthorized_one(record):
    blocked = practitioner(record.data_dir, BLOCKED)
    stranger = practitioner(record.data_dir, "810000001999")
    url = f"/fhir/DocumentReference?patient={record.paul}"
    refused = record.client.get(url, headers=auth(blocked))
    unauthorized = record.client.get(url, headers=auth(stranger))
    assert refused.status_code == unauthorized.status_code == 403
    assert refused.get_json() == unauthorized.get_json()
    read = record.client.get(
        f"/fhir/DocumentReference/{record.docs['discharge report']}", headers=auth(blocked)
    )
    assert read.status_code == 404


def test_r13_pharmacist_sees_only_the_classes_of_the_habilitation_matrix(record):
    pharmacist = practitioner(record.data_dir, PHARMACIST, "21")
    # Matrix: pharmacien reads 10, 11, 42, 43, 44, 45, 90; not 60 (reimbursement).
    assert record.titles(pharmacist, f"patient={record.paul}") == {
        "discharge report",
        "prescription",
        "biopsy result",
    }
    care_history = record.client.get(
        f"/fhir/DocumentReference/{record.docs['care history']}", headers=auth(pharmacist)
    )
    assert care_history.status_code == 404


def test_r11_bris_de_glace_opens_the_record_but_masked_documents_stay_masked(record):
    emergency = practitioner(
        record.data_dir, EMERGENCY, "10", "--mode", "bris_de_glace", "--reason", "coma, SAU"
    )
    assert record.titles(emergency, f"patient={record.anne}") == {"anne discharge report"}


def test_r11_bris_de_glace_refused_when_the_patient_opposed_it(record):
    emergency = practitioner(
        record.data_dir, EMERGENCY, "10", "--mode", "bris_de_glace", "--reason", "coma, SAU"
    )
    response = record.client.get(
        f"/fhir/DocumentReference?patient={record.paul}", headers=auth(emergency)
    )
    assert response.status_code == 403
    assert "opposed bris de glace" in response.get_json()["issue"][0]["diagnostics"]


def test_r11_bris_de_glace_without_a_reason_cannot_be_minted():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = fhir_server(
            ["token", "--practitioner", EMERGENCY, "--profession", "10", "--mode", "bris_de_glace"]
        )
    assert code != 0 and out.getvalue() == "" and "--reason" in err.getvalue()


def test_r12_samu_regulator_reads_unless_the_patient_opposed_centre_15(record):
    regulator = practitioner(record.data_dir, REGULATOR, "10", "--mode", "centre_15")
    assert record.titles(regulator, f"patient={record.paul}") == PAUL_ALL - {"psychiatric report"}
    opposed = record.client.get(
        f"/fhir/DocumentReference?patient={record.anne}", headers=auth(regulator)
    )
    assert opposed.status_code == 403
    assert "opposed centre 15" in opposed.get_json()["issue"][0]["diagnostics"]


def test_r15_hospital_system_deposits_but_never_reads_back(record):
    hospital = token(
        record.data_dir, "--system", "his-ch-exemple", "--organization-type", "hospital"
    )
    deposited = record.post(hospital, document(record.paul, "new report", "10"))
    assert deposited.status_code == 201 and deposited.get_json()["description"] == "new report"
    read = record.client.get(
        f"/fhir/DocumentReference/{deposited.get_json()['id']}", headers=auth(hospital)
    )
    search = record.client.get(
        f"/fhir/DocumentReference?patient={record.paul}", headers=auth(hospital)
    )
    assert read.status_code == 403 and search.status_code == 403


def test_r05_health_insurer_deposits_and_resolves_identities_but_reads_no_clinical_data(record):
    insurer = token(
        record.data_dir,
        "--system", "cnam-feed",
        "--organization-type", "health_insurer",
        "--scope", INSURER_SCOPES + " system/DocumentReference.rs",
    )  # fmt: skip
    deposit = record.post(insurer, document(record.paul, "care history 2024", "60"))
    assert deposit.status_code == 201
    search = record.client.get(
        f"/fhir/DocumentReference?patient={record.paul}", headers=auth(insurer)
    )
    read = record.client.get(
        f"/fhir/DocumentReference/{record.docs['care history']}", headers=auth(insurer)
    )
    assert search.status_code == read.status_code == 403
    assert search.get_json()["issue"][0]["details"]["coding"][0]["code"] == "R05"
    identity = record.client.get(
        f"/fhir/Patient?identifier={quote(f'{INS_SYSTEM}|{valid_nir(11)}')}", headers=auth(insurer)
    )
    assert identity.status_code == 200
    assert [e["resource"]["id"] for e in identity.get_json()["entry"]] == [record.paul]


def test_r03_no_deposit_and_no_read_once_the_record_is_closed(record, client):
    """The insurer closes Anne's record; deposits and reads then name the reason."""
    insurer = token(
        record.data_dir,
        "--system", "cnam-feed",
        "--organization-type", "health_insurer",
        "--scope", INSURER_SCOPES,
    )  # fmt: skip
    anne = client.get(
        f"/fhir/Patient/{record.anne}",
        headers=auth(token(record.data_dir, "--patient", record.anne)),
    ).get_json()
    from fhir_server.terminology import EXT_RECORD_STATUS, RECORD_CLOSED

    anne["extension"] = [{"url": EXT_RECORD_STATUS, "valueCode": RECORD_CLOSED}]
    closed = client.put(
        f"/fhir/Patient/{record.anne}",
        data=json.dumps(anne),
        headers=auth(insurer, **{"Content-Type": FHIR_JSON}),
    )
    assert closed.status_code == 200, closed.get_data(as_text=True)
    hospital = token(
        record.data_dir, "--system", "his-ch-exemple", "--organization-type", "hospital"
    )
    deposit = record.post(hospital, document(record.anne, "late report", "10"))
    emergency = practitioner(
        record.data_dir, EMERGENCY, "10", "--mode", "bris_de_glace", "--reason", "coma"
    )
    read = client.get(f"/fhir/DocumentReference?patient={record.anne}", headers=auth(emergency))
    for response in (deposit, read):
        assert response.status_code in (403, 422)
        assert response.get_json()["issue"][0]["details"]["coding"][0]["code"] == "record-closed"
