"""Attack pass five: the shapes the access fixes of the last merges (R08 namings no longer in
force, R11 blank reasons, R09 at the write doors, List answers without derived labels, R17
one notification per access, R05 at the XDS doors, R16 conditional criteria traced) were
never sent by their own tests.

What got through:

- R08: `Patient.generalPractitioner` whose literal reference names something other than a
  Practitioner or a PractitionerRole (`Organization/x`, `RelatedPerson/x`, a contained
  Organization) beside an IdNat_PS identifier was read as the médecin traitant, though the
  same reference typed Organization or RelatedPerson is refused; a local reference spelled
  so that it resolves to nothing (`#`, ` #gp`, `#gp `, `#GP` for `gp`) left the inactive
  contained Practitioner it meant unread, its identifier beside it naming the practitioner
  in force. Each opened the whole record, masked documents included. They are refused on
  write (422, the element's path) and read as naming nobody when stored.
- R08, one level down: a contained PractitionerRole in force was read through its
  `practitioner.identifier` alone, so its `practitioner` typed Organization, or naming
  `Organization/x`, a contained inactive Practitioner or a PractitionerRole beside that
  identifier, named the practitioner in force. The role's `practitioner` is now judged as
  the médecin traitant's reference is (it must name a Practitioner).

What held (tried over HTTP, kept out of the tests for their number):

- R08: `identifier.use` in another case (`Old`), a period with only an end, `type` as the
  absolute StructureDefinition URL of another server, two entries one in force and one not
  (422 naming the second); the Patient written by a transaction (422), a batch (the entry's
  422), a conditional update (422); PATCH of a Patient is not served (405). A Consent
  actor's literal must already be `Practitioner/<its IdNat_PS>` or absent.
- R11: reasons of combining marks only (U+0300), RTL and LTR marks, U+202E, U+034F, Khmer
  inherent vowels, U+180E, tag characters, variation selectors, U+2061, U+3000, U+00A0,
  U+061C, U+0600, Hangul fillers with a combining mark: none is a declared reason. Over
  XDS, the reason is the attribute's text before any child (a comment ahead of it leaves
  none: refused), two different values refuse the VIHF, a Name in another case is refused.
- R09 (a Consent the rules cannot read, naming STRANGER in a deny): STRANGER's deposit by
  transaction, batch and ITI-65 (403), a Communication to the patient (403), their own
  authorization by transaction and batch (403), conditional create and update of a Consent
  (403, practitioners read no Consent), the PATCH, PUT and DELETE of their own earlier
  document (404, 404, 204 as for a missing one, nothing changed), their ITI-57 of it
  (UnresolvedReferenceException, nothing changed); RelatedPerson writes are a system's
  (R15).
- List answers: transaction and batch answers (with `Prefer: return=representation` or
  `return=OperationOutcome`) carry no List body; `Prefer: return=OperationOutcome` and
  `return=minimal` on a REST create carry no label; the writer's read, vread and history of
  the List right after are 404 (it is hidden from them, as the modes module says); a
  conditional create whose criteria match such a List creates another (as for no match).
- R17: a bris de glace batch reading A's and B's documents tells each once; a batch
  depositing then reading tells the deposit and the access; a transaction refused at its
  last entry tells nothing and a read after it is told; a normal batch of two records is
  each record's first access of the day, told once each.
- R05 at XDS: an entity-encoded or CDATA value is the same text (lxml); spaces inside the
  value, an empty or nil value beside a code, a comment before the code, a code attribute
  in a namespace, another code system or the OID as `urn:oid:` refuse the VIHF.
- R16 for conditional references and PATCH criteria: what the patient's trail shows is
  what it shows for the same GET search (`Gate._named_in_criteria`), nothing more; the
  patient's own conditional reference and conditional PATCH naming an INVISIBLE_PATIENT
  document by identifier are answered and traced in their trail exactly as for an unknown
  identifier.
"""

from __future__ import annotations

import pytest

from fhir_server.terminology import SYSTEM_IDNAT_PS
from tests.http.conftest import FHIR_JSON, a_patient, auth, internal_put
from tests.http.test_attack_pass_modes import FORMER_GP, former_gp_reads, former_gp_searches
from tests.http.test_r18_matrix import PATIENT_B, own_world

world = pytest.fixture(own_world, name="world")

# -- R08: a médecin traitant's reference naming something else, or nothing -------------------

_IDNAT = {"system": SYSTEM_IDNAT_PS, "value": FORMER_GP}
_INACTIVE_GP = {"resourceType": "Practitioner", "id": "gp", "active": False, "identifier": [_IDNAT]}

# (generalPractitioner entry, contained) of patient B: each names FORMER_GP by its identifier
# beside a literal that says it is no médecin traitant in force.
NOT_A_PRACTITIONER = {
    "literal-organization": ({"reference": "Organization/cabinet", "identifier": _IDNAT}, []),
    "literal-related-person": ({"reference": "RelatedPerson/x", "identifier": _IDNAT}, []),
    "contained-organization": (
        {"reference": "#org", "identifier": _IDNAT},
        [{"resourceType": "Organization", "id": "org", "name": "Cabinet"}],
    ),
    "local-reference-hash-only": ({"reference": "#", "identifier": _IDNAT}, [_INACTIVE_GP]),
    "local-reference-leading-space": ({"reference": " #gp", "identifier": _IDNAT}, [_INACTIVE_GP]),
    "local-reference-trailing-space": ({"reference": "#gp ", "identifier": _IDNAT}, [_INACTIVE_GP]),
    "local-reference-other-case": ({"reference": "#GP", "identifier": _IDNAT}, [_INACTIVE_GP]),
}


def _role(practitioner: dict) -> dict:
    return {"resourceType": "PractitionerRole", "id": "role", "practitioner": practitioner}


# The same, one level down: a contained PractitionerRole in force whose `practitioner` names
# FORMER_GP by its identifier beside what says it is no practitioner in force.
ROLE_NOT_A_PRACTITIONER = {
    "role-practitioner-typed-organization": [_role({"type": "Organization", "identifier": _IDNAT})],
    "role-practitioner-literal-organization": [
        _role({"reference": "Organization/cabinet", "identifier": _IDNAT})
    ],
    "role-practitioner-contained-inactive": [
        _role({"reference": "#gp", "identifier": _IDNAT}),
        _INACTIVE_GP,
    ],
    "role-practitioner-contained-role": [_role({"reference": "#role", "identifier": _IDNAT})],
}


def _patient_b(key: str) -> dict:
    if key in ROLE_NOT_A_PRACTITIONER:
        reference, contained = {"reference": "#role"}, ROLE_NOT_A_PRACTITIONER[key]
    else:
        reference, contained = NOT_A_PRACTITIONER[key]
    patient = {**a_patient(3, generalPractitioner=[reference]), "id": PATIENT_B}
    if contained:
        patient["contained"] = contained
    return patient


@pytest.mark.parametrize("key", [*NOT_A_PRACTITIONER, *ROLE_NOT_A_PRACTITIONER])
def test_r08_a_general_practitioner_reference_naming_no_practitioner_is_refused_on_write(
    world, key
):
    """R08: the health insurer's feed naming B's médecin traitant by an identifier beside a
    literal naming an Organization, a RelatedPerson or no contained resource is refused (422
    naming the reference), as the reference typed so is; the practitioner reads nothing."""
    feed = world.tokens.system("cnam", "system/*.cruds", "health_insurer")
    response = world.client.put(
        f"/fhir/Patient/{PATIENT_B}",
        json=_patient_b(key),
        headers=auth(feed, **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 422, response.get_data(as_text=True)
    expression = response.get_json()["issue"][0]["expression"]
    if key in ROLE_NOT_A_PRACTITIONER:
        assert expression[0].startswith("Patient.contained["), expression
    else:
        assert expression == ["Patient.generalPractitioner[0].reference"]
    assert former_gp_reads(world) == 404


@pytest.mark.parametrize("key", [*NOT_A_PRACTITIONER, *ROLE_NOT_A_PRACTITIONER])
def test_r08_a_stored_general_practitioner_reference_naming_no_practitioner_grants_nothing(
    world, key
):
    """R08, fail closed: stored before the write refused it, such a reference names nobody:
    the practitioner neither reads B's document nor searches B's record."""
    internal_put(world.service)(_patient_b(key), PATIENT_B)
    assert former_gp_reads(world) == 404
    search = former_gp_searches(world)
    assert search.status_code == 403, search.get_data(as_text=True)


def test_r08_a_contained_practitioner_in_force_still_reads(world):
    """Control: the same practitioner as a contained Practitioner in force, referenced by its
    exact local id, is the médecin traitant."""
    active = {**_INACTIVE_GP, "active": True}
    patient = {
        **a_patient(3, generalPractitioner=[{"reference": "#gp", "identifier": _IDNAT}]),
        "id": PATIENT_B,
        "contained": [active],
    }
    feed = world.tokens.system("cnam", "system/*.cruds", "health_insurer")
    response = world.client.put(
        f"/fhir/Patient/{PATIENT_B}",
        json=patient,
        headers=auth(feed, **{"Content-Type": FHIR_JSON}),
    )
    assert response.status_code == 200, response.get_data(as_text=True)
    assert former_gp_reads(world) == 200
