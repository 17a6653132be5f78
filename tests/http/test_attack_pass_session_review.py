"""Attack pass on this session's own changes (review of 5a6e4ee..main).

R09/R10, FHIR per-1: a Consent period's date bound is now that day in France
(`consent.date_bound_window`), while per-1 still compares the bounds as UTC days. A period
starting at an instant late on a day and ending on that same day as a date passed per-1
(23:30 UTC is before the end of the UTC day) yet, read in France (the day ended at 23:00
UTC in winter), it is in force at no instant: a block written so was stored and ignored.
"""

from __future__ import annotations

import pytest

from tests.http.conftest import a_patient, auth, deny, dmp_consent, internal_put, permit
from tests.http.test_normal_form import AUTHORIZED, PATIENT_B, post


@pytest.fixture
def record(app):
    """Patient B, who authorizes AUTHORIZED."""
    service = app.extensions["fhir"].service
    put = internal_put(service)
    put(a_patient(2), PATIENT_B)
    put(dmp_consent(PATIENT_B, permit(AUTHORIZED)), "consent-b")
    return service


@pytest.mark.parametrize(
    "period",
    [
        {"start": "2026-12-07T23:30:00Z", "end": "2026-12-07"},  # winter: the day ends 23:00Z
        {"start": "2026-07-07T22:30:00Z", "end": "2026-07-07"},  # summer: it ends 22:00Z
        {"start": "2026-12-31T23:30:00Z", "end": "2026-12"},  # a month ends in France too
    ],
    ids=["winter-day", "summer-day", "month"],
)
def test_r09_per1_a_period_empty_when_its_date_is_read_in_france_is_refused(
    client, tokens, record, period
):
    """per-1 (a period ending before it starts is refused) holds for the bounds as they are
    read for coverage: a date is that day in France. Accepted (201), the block was in force
    at no instant."""
    consent = dmp_consent(PATIENT_B, deny(AUTHORIZED))
    consent["provision"]["period"] = period
    refused = post(client, tokens.patient(PATIENT_B), consent)
    assert refused.status_code == 422, refused.get_json()
    url = f"/fhir/DocumentReference?patient={PATIENT_B}"
    assert client.get(url, headers=auth(tokens.practitioner(AUTHORIZED))).status_code == 200


def test_r09_per1_a_period_in_order_in_france_is_still_accepted(client, tokens, record):
    """Companion: 22:30 UTC to the end of 7 December in Paris (23:00 UTC) is in order."""
    consent = dmp_consent(PATIENT_B, deny(AUTHORIZED))
    consent["provision"]["period"] = {"start": "2026-12-07T22:30:00Z", "end": "2026-12-07"}
    assert post(client, tokens.patient(PATIENT_B), consent).status_code == 201
