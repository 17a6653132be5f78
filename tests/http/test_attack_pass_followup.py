"""Attack pass on the day's fixes (attack9-12): the same fact at the doors and in the
spellings the fixes did not name (R06, R07, R14, R18).

Each test is a request that the fixes should have closed, or a legitimate one they should
still let through.
"""

from __future__ import annotations

import pytest

from tests.http.conftest import auth
from tests.http.test_attack_pass_spellings import record  # noqa: F401 (fixture)
from tests.http.test_normal_form import PATIENT_A

# -- R06, R07: fhirUser names a local Patient only as a relative reference or on this base ---


@pytest.mark.parametrize(
    "fhir_user",
    [
        " https://elsewhere.example/fhir/Patient/patient-a",
        "//elsewhere.example/fhir/Patient/patient-a",
        "https:/elsewhere.example/fhir/Patient/patient-a",
        "urn:oid:1.2.3/Patient/patient-a",
        "elsewhere/Patient/patient-a",
        "http://127.0.0.1:8080/fhir/other/Patient/patient-a",
        "Practitioner/p1/Patient/patient-a",
    ],
    ids=[
        "leading-space",
        "scheme-relative",
        "one-slash",
        "urn-prefix",
        "relative-with-prefix",
        "this-base-with-extra-segment",
        "two-references",
    ],
)
def test_r06_fhir_user_that_is_no_reference_type_id_is_refused(client, tokens, record, fhir_user):  # noqa: F811
    """fhirUser was read by its last two segments whenever it did not start with a scheme
    and `://`: a token naming another server's Patient/patient-a with a space before it, or
    with one slash, read patient A's record here (200) past the check of 4704525."""
    token = tokens.issuer.issue(
        subject="someone", scopes="patient/*.rs", fhir_user=fhir_user, patient=PATIENT_A
    )
    found = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert found.status_code == 401, found.get_json()


@pytest.mark.parametrize(
    "fhir_user",
    ["Patient/patient-a", "HTTP://127.0.0.1:8080/fhir/Patient/patient-a", "Patient/patient-a/"],
)
def test_r06_fhir_user_on_this_base_still_reads_the_own_record(client, tokens, record, fhir_user):  # noqa: F811
    """The legitimate spellings stay accepted (a fix refusing them would be a regression)."""
    token = tokens.issuer.issue(
        subject="someone", scopes="patient/*.rs", fhir_user=fhir_user, patient=PATIENT_A
    )
    found = client.get(f"/fhir/DocumentReference?patient={PATIENT_A}", headers=auth(token))
    assert found.status_code == 200, found.get_json()
