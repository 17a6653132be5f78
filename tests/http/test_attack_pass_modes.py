"""Attack pass on the access modes and the rules that name who may read (R05, R08-R12, R15).

Asked at every door (REST read, search, history, Binary, conditional operations, Bundle
entries, the IHE transactions): how could someone who may write reach what they may not
read, and how can the same fact be spelled another way?

What got through, reproduced over HTTP with tokens and VIHFs as `fhir-server token` makes
them:

- R11: a bris de glace reason made only of characters that print as nothing (a zero-width
  space U+200B, a BOM U+FEFF, a word joiner U+2060, a soft hyphen, a NUL, the Hangul filler
  U+3164, the Braille blank U+2800) was a declared reason: `str.strip` removes spaces only.
  The record opened in bris de glace, and the patient was told an empty motive. A reason now
  holds a letter or a digit (`policy.gates.declares_reason`), at the REST and XDS doors alike.

- R08: `Patient.generalPractitioner` was read as naming the médecin traitant whatever said
  the naming was no longer in force: an IdNat_PS identifier of `use` old or temp, or with a
  `period` (a former médecin traitant, as an identity feed keeps them), a reference typed
  Organization or RelatedPerson, a contained Practitioner `active: false`, a contained
  PractitionerRole inactive or with a period. Written by the health insurer's feed, each
  opened the whole record to that practitioner, masked documents included, blocks and the
  initial consent aside. They are now refused on write (422, the element's path) and read
  as naming nobody when stored before (fail closed), as a Consent actor so named is.

- R15, R14, R18: a List takes the DMP labels all the documents it names share
  (`access.list_labels`), and a write was answered with the List as stored: a system client
  depositing a List naming a MASQUE_PS document by id was told its label (a system reads no
  document), and that the id names a document of the record (an unknown id adds none); an
  authorized practitioner learned a masked document's label, the patient an
  INVISIBLE_PATIENT one's, a parent an INVISIBLE_REPRESENTANTS_LEGAUX one's, by a create or
  an update. The answer now carries the labels its writer sent (`dispatch`); the List is
  stored labelled. Not closed: the List so labelled (or, for a practitioner, judged through
  its entries) is then hidden from its writer, so reading it back (200 against 404), or
  updating it, still tells them; and a List is served without the entries hidden from its
  reader, an unknown id's entry kept.

- R09: an active Consent the rules cannot read refuses every practitioner but the médecin
  traitant (it may block them): it refused their reads only. A practitioner it named in a
  deny deposited documents (REST, ITI-41) and recorded their own authorization (notified to
  the patient, in force once the Consent is revoked). Deposits and Consents are now refused
  alike (`WriteDecisions._practitioner_write`).

- R15: a system deprecates the document it replaced by a PUT of it whole, the status
  changed. Compared with the document's DMP labels, the deprecation of a document the
  patient had masked since its deposit was refused (403) where an unmasked one's is
  accepted: it told the system that the patient masked its deposit. The labels are now left
  out of the comparison and kept as stored (the system cannot lift a mask by deprecating),
  and the answer carries the labels the system sent. Not closed: the answer's version
  (ETag, versionId) still tells that the document changed since the deposit.

What held (tried, refused or answered as for a missing resource alike): payers (insurer,
employer, health insurer, a practitioner or a patient token carrying a payer type) at read,
vread, instance, type and system history, Binary, search, AuditEvent, Communication and
Consent; Patient searches by a system with `_has` on documents, Consents, messages (answered
as matching nothing); conditional create (If-None-Exist) by a system (R15, no search) or a
payer (R05), and by an authorized practitioner naming a masked document (created, as for an
unknown identifier); conditional update and delete naming a masked document in every mode;
ITI-65 entries with ifNoneExist (refused before the search) and answers (no bodies); a
system replacing a document by relatesTo (answered as an unknown one); Binary
securityContext naming a document (refused alike); a Consent naming its patient by a
versioned, absolute or upper-case reference (read as the patient's) or by one with a query
or fragment (refused); a Consent's period ended or not yet begun (the record cache reads it
again at its bounds, both engines); a patient or parent writing another record's Consent.
Controls for the fixes are kept below.
"""

from __future__ import annotations

import pytest

from fhir_server.access.requester import INTERNAL
from fhir_server.terminology import SYSTEM_DMP_CONFIDENTIALITY, SYSTEM_IDNAT_PS
from tests.http.conftest import (
    FHIR_JSON,
    a_patient,
    auth,
    deny,
    dmp_consent,
    internal_put,
    permit,
)
from tests.http.test_attack_pass_xds_spellings import find_documents_with
from tests.http.test_r18_matrix import (
    AUTHORIZED,
    CASES,
    DOCS,
    PATIENT_A,
    PATIENT_B,
    STRANGER,
    UNKNOWN_ID,
    World,
    doc_id,
    outcome_shape,
    own_world,
)
from tests.http.test_xds_endpoints import GP, Xds, registry_status
from tests.support.documents import dmp_document

world = pytest.fixture(own_world, name="world")

# Reasons that print as nothing: each was a declared bris de glace reason (R11).
BLANK_REASONS = {
    "zero-width-space": "\u200b",
    "byte-order-mark": "\ufeff",
    "word-joiner": "\u2060",
    "soft-hyphen": "\u00ad",
    "nul": "\x00",
    "hangul-filler": "\u3164",
    "braille-blank": "\u2800",
    "zero-width-around-space": "\u200b \u200b",
}


def bris_de_glace(world: World, reason: str) -> str:
    return world.tokens.practitioner(STRANGER, mode="bris_de_glace", reason=reason)


@pytest.mark.parametrize("reason", BLANK_REASONS.values(), ids=BLANK_REASONS.keys())
def test_r11_a_bris_de_glace_reason_that_prints_as_nothing_is_no_reason(world, reason):
    """R11: without a declared reason, bris de glace is refused (403 R11), as for a reason
    of spaces; a reason that prints as nothing is none."""
    url = f"/fhir/DocumentReference/{doc_id('b-doc')}"
    blank = world.client.get(url, headers=auth(bris_de_glace(world, " ")))
    response = world.client.get(url, headers=auth(bris_de_glace(world, reason)))
    assert blank.status_code == 403
    assert (response.status_code, response.get_json()) == (blank.status_code, blank.get_json())
    search = world.client.get(
        f"/fhir/DocumentReference?patient={PATIENT_B}", headers=auth(bris_de_glace(world, reason))
    )
    assert search.status_code == 403, search.get_data(as_text=True)


def test_r11_a_declared_reason_still_opens_the_record(world):
    """Control: a reason with words opens the record in bris de glace."""
    url = f"/fhir/DocumentReference/{doc_id('b-doc')}"
    response = world.client.get(url, headers=auth(bris_de_glace(world, "patient inconscient")))
    assert response.status_code == 200, response.get_data(as_text=True)


@pytest.fixture
def xds(app, client, tokens, data_dir) -> Xds:
    return Xds(app, client, tokens, data_dir)


@pytest.mark.parametrize("reason", ["\u200b", "\u3164"], ids=["zero-width-space", "hangul"])
def test_r11_iti18_with_a_reason_that_prints_as_nothing_is_refused(xds, reason):
    """R11 at the XDS door: a VIHF in bris de glace whose access reason prints as nothing
    is answered as one with a reason of spaces, not as one with a declared reason."""
    _, nir = xds.patient(701)

    def status(text: str):
        security = xds.security(STRANGER, nir, mode="bris_de_glace", reason=text)
        return registry_status(find_documents_with(xds, nir, security))

    assert status("patient inconscient")[0].endswith("Success")
    assert status(reason) == status(" ")
    assert not status(reason)[0].endswith("Success")


# -- R08: a médecin traitant named by a naming no longer in force -----------------------------

FORMER_GP = "810000000077"  # named in B's generalPractitioner only by the spellings below


def _idnat(**extra) -> dict:
    return {"system": SYSTEM_IDNAT_PS, "value": FORMER_GP, **extra}


# (generalPractitioner, contained) of patient B, each naming FORMER_GP as no longer in force.
NOT_IN_FORCE = {
    "identifier-use-old": ([{"identifier": _idnat(use="old")}], []),
    "identifier-use-temp": ([{"identifier": _idnat(use="temp")}], []),
    "identifier-period-ended": ([{"identifier": _idnat(period={"end": "2020-01-01"})}], []),
    "typed-organization": ([{"type": "Organization", "identifier": _idnat()}], []),
    "typed-related-person": ([{"type": "RelatedPerson", "identifier": _idnat()}], []),
    "contained-practitioner-inactive": (
        [{"reference": "#gp"}],
        [{"resourceType": "Practitioner", "id": "gp", "active": False, "identifier": [_idnat()]}],
    ),
    "contained-practitioner-old-identifier": (
        [{"reference": "#gp"}],
        [{"resourceType": "Practitioner", "id": "gp", "identifier": [_idnat(use="old")]}],
    ),
    "contained-role-inactive": (
        [{"reference": "#gp"}],
        [
            {
                "resourceType": "PractitionerRole",
                "id": "gp",
                "active": False,
                "practitioner": {"identifier": _idnat()},
            }
        ],
    ),
    "contained-role-ended": (
        [{"reference": "#gp"}],
        [
            {
                "resourceType": "PractitionerRole",
                "id": "gp",
                "period": {"end": "2020-01-01"},
                "practitioner": {"identifier": _idnat()},
            }
        ],
    ),
}


def patient_b_naming(key: str) -> dict:
    general_practitioner, contained = NOT_IN_FORCE[key]
    extra: dict = {"generalPractitioner": general_practitioner}
    if contained:
        extra["contained"] = contained
    return {**a_patient(3, **extra), "id": PATIENT_B}


def former_gp_reads(world: World) -> int:
    """The status of FORMER_GP's read of B's document (they hold no authorization)."""
    response = world.client.get(
        f"/fhir/DocumentReference/{doc_id('b-doc')}",
        headers=auth(world.tokens.practitioner(FORMER_GP)),
    )
    return response.status_code


def former_gp_searches(world: World):
    """FORMER_GP's search of B's documents (they hold no authorization)."""
    return world.client.get(
        f"/fhir/DocumentReference?patient={PATIENT_B}",
        headers=auth(world.tokens.practitioner(FORMER_GP)),
    )


@pytest.mark.parametrize("key", NOT_IN_FORCE)
def test_r08_a_general_practitioner_no_longer_in_force_is_refused_on_write(world, key):
    """R08: the health insurer's feed writing B's médecin traitant by a naming no longer in
    force is refused (422 naming the element), and the practitioner reads nothing."""
    feed = world.tokens.system("cnam", "system/*.cruds", "health_insurer")
    response = world.client.put(
        f"/fhir/Patient/{PATIENT_B}",
        json=patient_b_naming(key),
        headers=auth(feed, **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    outcome = response.get_json()
    assert outcome["issue"][0]["expression"][0].startswith("Patient.")
    assert former_gp_reads(world) == 404


@pytest.mark.parametrize("key", NOT_IN_FORCE)
def test_r08_a_stored_general_practitioner_no_longer_in_force_grants_nothing(world, key):
    """R08, fail closed: such a naming stored before the write refused it names nobody."""
    internal_put(world.service)(patient_b_naming(key), PATIENT_B)
    assert former_gp_reads(world) == 404
    masked = former_gp_searches(world)
    assert masked.status_code == 403, masked.get_data(as_text=True)


def test_r08_a_general_practitioner_in_force_still_reads(world):
    """Control: the same practitioner named by an IdNat_PS in force (use official) is the
    médecin traitant, through the feed's write."""
    feed = world.tokens.system("cnam", "system/*.cruds", "health_insurer")
    patient = {
        **a_patient(3, generalPractitioner=[{"identifier": _idnat(use="official")}]),
        "id": PATIENT_B,
    }
    response = world.client.put(
        f"/fhir/Patient/{PATIENT_B}",
        json=patient,
        headers=auth(feed, **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert former_gp_reads(world) == 200


# -- R15, R14, R18: a List's answer told the labels of the documents it names -----------------

# (writer, the document of the writer's record hidden from them): the writer deposits a List
# naming it, then one naming an id that names nothing.
LIST_WRITERS = {
    "R15-system-client": (
        lambda w: w.tokens.system("his", "system/DocumentReference.cu system/List.c", "hospital"),
        "a-masked",
    ),
    "R14-authorized-practitioner": (lambda w: w.tokens.practitioner(AUTHORIZED), "a-masked"),
    "R14-patient": (lambda w: w.tokens.patient(PATIENT_A), "a-invisible"),
    "R07-parent": (
        lambda w: CASES["R07-invisible-representants-legaux-vs-parent"].requester(w.tokens),
        "m-invisible-rl",
    ),
}


def a_list(patient_id: str, document_id: str) -> dict:
    return {
        "resourceType": "List",
        "status": "current",
        "mode": "working",
        "subject": {"reference": f"Patient/{patient_id}"},
        "entry": [{"item": {"reference": f"DocumentReference/{document_id}"}}],
    }


@pytest.mark.parametrize("writer", LIST_WRITERS)
@pytest.mark.parametrize("prefer", ["return=representation", None])
def test_r15_a_lists_answer_does_not_tell_the_label_of_a_document_it_names(world, writer, prefer):
    """R15 (a system reads no document), R14, R18: the answer to a List naming a document
    hidden from its writer is the answer to a List naming an id that names nothing. Before,
    it carried the label the server copied from the document (MASQUE_PS, INVISIBLE_PATIENT,
    INVISIBLE_REPRESENTANTS_LEGAUX): that the id names a document of the record, and how it
    is labelled. The List is still stored labelled (it hides from whom the document hides)."""
    token_of, key = LIST_WRITERS[writer]
    patient_id = DOCS[key][0]
    headers = {"Content-Type": FHIR_JSON, **({"Prefer": prefer} if prefer else {})}
    answers = []
    for document_id in (doc_id(key), UNKNOWN_ID):
        response = world.client.post(
            "/fhir/List",
            json=a_list(patient_id, document_id),
            headers=auth(token_of(world), **headers),
        )
        assert response.status_code == 201, response.get_data(as_text=True)
        answers.append(outcome_shape(response, doc_id(key), UNKNOWN_ID, response.get_json()["id"]))
    assert answers[0] == answers[1]
    created = world.client.post(
        "/fhir/List", json=a_list(patient_id, doc_id(key)), headers=auth(token_of(world), **headers)
    ).get_json()["id"]
    stored = world.service.read(INTERNAL, "List", created).json()
    assert DOCS[key][2] in {c["code"] for c in stored["meta"]["security"]}


def test_r15_a_lists_answer_keeps_the_labels_its_writer_sent(world):
    """Control: a label the writer sent is answered (the patient hiding their own List)."""
    body = a_list(PATIENT_A, doc_id("a-visible"))
    body["meta"] = {"security": [{"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE_PS"}]}
    response = world.client.post(
        "/fhir/List",
        json=body,
        headers=auth(world.tokens.patient(PATIENT_A), **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 201, response.get_data(as_text=True)
    assert [c["code"] for c in response.get_json()["meta"]["security"]] == ["MASQUE_PS"]


def test_r14_a_lists_update_answer_does_not_tell_the_label_of_a_document_it_names(world):
    """R14, R18: the patient's update of their own List to name a document hidden from them
    is answered without the label the server copied from it (INVISIBLE_PATIENT), as one
    naming an id that names nothing. (Its entry is left out of the answer, as any reader is
    served a List without the entries hidden from them: not closed here, see the module.)"""
    headers = auth(world.tokens.patient(PATIENT_A), **{"Content-Type": FHIR_JSON})
    own = {"reference": f"Patient/{PATIENT_A}"}  # the patient changes the Lists they wrote
    first = {**a_list(PATIENT_A, UNKNOWN_ID), "source": own}
    list_id = world.client.post("/fhir/List", json=first, headers=headers).get_json()["id"]
    body = {**a_list(PATIENT_A, doc_id("a-invisible")), "id": list_id, "source": own}
    response = world.client.put(f"/fhir/List/{list_id}", json=body, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert "security" not in response.get_json()["meta"]
    stored = world.service.read(INTERNAL, "List", list_id).json()
    assert "INVISIBLE_PATIENT" in {c["code"] for c in stored["meta"]["security"]}


# -- R09: a Consent the rules cannot read refuses deposits as it refuses reads -----------------

RESEARCH = {
    "system": "http://terminology.hl7.org/CodeSystem/consentcategorycodes",
    "code": "research",
}


def store_unreadable_consent(world: World) -> None:
    """B's Consent blocking STRANGER, of a category the rules do not read (a research
    Consent, written before the write refused it): read as uninterpretable (R09)."""
    consent = dmp_consent(PATIENT_B, deny(STRANGER))
    consent["category"] = [{"coding": [RESEARCH]}]
    internal_put(world.service)(consent, "unreadable-consent-b")


def practitioner_writes(world: World, idnat: str) -> dict[str, int]:
    """The status of `idnat`'s deposit, own authorization and read on B's record."""
    headers = auth(world.tokens.practitioner(idnat), **{"Content-Type": FHIR_JSON})
    deposit = world.client.post(
        "/fhir/DocumentReference", json=dmp_document(PATIENT_B, author=idnat), headers=headers
    )
    own = world.client.post(
        "/fhir/Consent",
        json=dmp_consent(PATIENT_B, permit(idnat), initial_consent=False),
        headers=headers,
    )
    read = world.client.get(f"/fhir/DocumentReference?patient={PATIENT_B}", headers=headers)
    return {"deposit": deposit.status_code, "own": own.status_code, "read": read.status_code}


def test_r09_an_unreadable_consent_refuses_a_practitioners_deposit_and_own_authorization(world):
    """R09, fail closed: an active Consent the rules cannot read may block any practitioner
    but the médecin traitant, for deposits as for reads. STRANGER, whom it names in a deny,
    deposited (201) and recorded their own authorization (201, notified to the patient, in
    force once the Consent is revoked) while their read was refused (403)."""
    store_unreadable_consent(world)
    consents = len(world.service.search(INTERNAL, "Consent", [("patient", PATIENT_B)]).matches)
    assert practitioner_writes(world, STRANGER) == {"deposit": 403, "own": 403, "read": 403}
    assert len(world.service.search(INTERNAL, "Consent", [("patient", PATIENT_B)]).matches) == (
        consents
    )


def test_r09_an_unreadable_consent_refuses_an_iti41_deposit(xds):
    """R09 at the XDS door: the same deposit by ITI-41 is refused."""
    patient_id, nir = xds.patient(702)
    consent = dmp_consent(patient_id, deny(STRANGER))
    consent["category"] = [{"coding": [RESEARCH]}]
    internal_put(xds.runtime.service)(consent, "unreadable-consent-702")
    _, refused = xds.deposit(nir, STRANGER)
    assert registry_status(refused)[0].endswith("Failure"), refused.get_data(as_text=True)
    _, accepted = xds.deposit(nir, GP)
    assert registry_status(accepted)[0].endswith("Success"), accepted.get_data(as_text=True)


def test_r08_the_general_practitioner_still_deposits_past_an_unreadable_consent(world):
    """Control: the médecin traitant (R08) is not held to it."""
    store_unreadable_consent(world)
    feed = world.tokens.system("cnam", "system/*.cruds", "health_insurer")
    patient = {**a_patient(3, generalPractitioner=[{"identifier": _idnat()}]), "id": PATIENT_B}
    world.client.put(
        f"/fhir/Patient/{PATIENT_B}",
        json=patient,
        headers=auth(feed, **{"Content-Type": FHIR_JSON}),
    )
    headers = auth(world.tokens.practitioner(FORMER_GP), **{"Content-Type": FHIR_JSON})
    deposit = world.client.post(
        "/fhir/DocumentReference", json=dmp_document(PATIENT_B, author=FORMER_GP), headers=headers
    )
    assert deposit.status_code == 201, deposit.get_data(as_text=True)


# -- R15: a system's deprecation told it whether the patient masked its deposit ----------------


def deposit_then_deprecate(world: World, masked: bool):
    """A hospital system deposits a document of A; the patient masks it or not; the system
    deprecates it by a PUT of its deposit, status superseded (R15). Returns the document's
    id, what the system sent and the answer."""
    system = world.tokens.system("his", "system/DocumentReference.cu system/Binary.c", "hospital")
    headers = auth(system, **{"Content-Type": FHIR_JSON})
    deposited = world.client.post(
        "/fhir/DocumentReference", json=dmp_document(PATIENT_A), headers=headers
    ).get_json()
    if masked:
        mask = {key: value for key, value in deposited.items() if key != "meta"}
        coding = {"system": SYSTEM_DMP_CONFIDENTIALITY, "code": "MASQUE_PS"}
        mask["securityLabel"] = [*mask.get("securityLabel", []), {"coding": [coding]}]
        patient = auth(world.tokens.patient(PATIENT_A), **{"Content-Type": FHIR_JSON})
        response = world.client.put(
            f"/fhir/DocumentReference/{deposited['id']}", json=mask, headers=patient
        )
        assert response.status_code == 200, response.get_data(as_text=True)
    deprecation = {**deposited, "status": "superseded"}
    response = world.client.put(
        f"/fhir/DocumentReference/{deposited['id']}", json=deprecation, headers=headers
    )
    return deposited["id"], deprecation, response


def _unversioned(resource: dict) -> dict:
    return {key: value for key, value in resource.items() if key != "meta"}


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked-by-the-patient"])
def test_r15_a_systems_deprecation_does_not_tell_that_the_patient_masked_its_deposit(world, masked):
    """R15: a system reads no document. Its deprecation of a document the patient masked
    was refused (403) where one of an unmasked document is accepted (200): it told the
    system that the patient had masked its deposit, and the document could not be
    deprecated. Both are accepted now and answered with what the system sent; the mask
    stays."""
    document_id, sent, response = deposit_then_deprecate(world, masked)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert _unversioned(response.get_json()) == _unversioned(sent)
    stored = world.service.read(INTERNAL, "DocumentReference", document_id).json()
    assert stored["status"] == "superseded"
    codes = {c["code"] for concept in stored.get("securityLabel", []) for c in concept["coding"]}
    assert ("MASQUE_PS" in codes) is masked
