"""How the pure rules read an instant, a date or a period (R07's age, XDS times of R16's
ITI-18 answers): the logic side of `tests/http/test_attack_pass_periods.py`."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from fhir_server.access.consent import interpret_consent, period_bounds
from fhir_server.access.record import birth_date_problem, build_record
from fhir_server.terminology import SYSTEM_V3_ROLE_CODE
from ihe_xds.hl7v2 import fhir_to_xds_time
from tests.http.conftest import deny, dmp_consent, permit


def patient(birth: str) -> dict:
    return {"resourceType": "Patient", "id": "child", "birthDate": birth}


def parent() -> dict:
    return {
        "resourceType": "RelatedPerson",
        "id": "rp1",
        "patient": {"reference": "Patient/child"},
        "relationship": [{"coding": [{"system": SYSTEM_V3_ROLE_CODE, "code": "PRN"}]}],
    }


def facts(birth: str, now: datetime):
    return build_record(patient(birth), [], [parent()], now.date(), now)


NOW = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)


@pytest.mark.parametrize("birth", ["2999-01-01", "2027", "2027-01", "2026-12-08"])
def test_r07_a_birth_date_still_to_come_reads_as_no_minor(birth):
    """A birthDate in the future (the 8th is not yet anywhere at 05:00 UTC on the 7th, UTC+14
    being 19:00) was read as a minor's, of negative age: the RelatedPerson acted as the
    patient. It says no age: no minor, no representative; refused at write."""
    record = facts(birth, NOW)
    assert not record.minor
    assert record.representatives == frozenset()
    assert birth_date_problem(birth, NOW) is not None


@pytest.mark.parametrize("birth", ["2026-12-07", "2026-12", "2026", "2015-05-05"])
def test_r07_a_birth_date_of_today_or_before_is_a_minor(birth):
    """Control: a child born today (or this month, this year) is a minor."""
    record = facts(birth, NOW)
    assert record.minor and record.representatives == {"rp1"}
    assert birth_date_problem(birth, NOW) is None


@pytest.mark.parametrize(
    ("now", "minor"),
    [
        (datetime(2026, 2, 27, 5, 0, tzinfo=UTC), True),
        (datetime(2026, 2, 28, 5, 0, tzinfo=UTC), False),
        (datetime(2026, 3, 1, 5, 0, tzinfo=UTC), False),
    ],
    ids=["27-february", "28-february", "1-march"],
)
def test_r07_born_on_29_february_is_18_on_28_february_of_a_common_year(now, minor):
    """Born 29 February 2008, 2026 has no 29 February: the birthday was read as 1 March, a
    day after the earliest it can mean (28 February), the parent acting one more day. The
    earliest day is taken, as for a partial birthDate (R07)."""
    record = facts("2008-02-29", now)
    assert record.minor is minor
    assert (record.representatives == {"rp1"}) is minor


@pytest.mark.parametrize(
    ("stored", "xds"),
    [
        ("2026-06-30T23:59:60Z", "20260630235959"),
        ("2026-07-01T01:59:60+02:00", "20260630235959"),
        ("2026-06-30T23:59:59Z", "20260630235959"),
        # The ends of the calendar: an OverflowError, an internal error of ITI-18.
        ("9999-12-31T23:59:59-14:00", "99991231235959"),
        ("0001-01-01T00:00:00+14:00", "00010101000000"),
        # A year before 1000: strftime wrote `999`, a time XDS reads as another.
        ("0999-01-01T10:00:00+01:00", "09990101090000"),
    ],
)
def test_r16_an_instant_xds_cannot_hold_is_spelled_at_its_nearest(stored, xds):
    """A leap second stored before it was refused at write, an instant its zone moves past
    the calendar: each made every ITI-18 LeafClass answer of its record an internal error.
    Each is spelled as the nearest time an XDS time holds; years keep four digits."""
    assert fhir_to_xds_time(stored) == xds


def guardian(**period: str) -> dict:
    return {**parent(), "period": period}


def represented(now: datetime, **period: str) -> bool:
    record = build_record(patient("2015-05-05"), [], [guardian(**period)], now.date(), now)
    return record.representatives == {"rp1"}


@pytest.mark.parametrize(
    ("now", "period", "counts"),
    [
        # Ended on 7 December: at 23:30 UTC it is 00:30 on the 8th in Paris (UTC+1); read
        # as a UTC day, the guardianship held until midnight UTC.
        (datetime(2026, 12, 7, 23, 30, tzinfo=UTC), {"end": "2026-12-07"}, False),
        (datetime(2026, 12, 7, 22, 30, tzinfo=UTC), {"end": "2026-12-07"}, True),
        # In summer Paris is UTC+2: the 7 July ends at 22:00 UTC.
        (datetime(2026, 7, 7, 22, 30, tzinfo=UTC), {"end": "2026-07-07"}, False),
        (datetime(2026, 12, 31, 23, 30, tzinfo=UTC), {"end": "2026-12"}, False),
        (datetime(2026, 12, 31, 23, 30, tzinfo=UTC), {"end": "2026"}, False),
        # Beginning on the 7th: at 23:30 UTC on the 6th it is the 7th in Paris; read as a
        # UTC day, it had not begun.
        (datetime(2026, 12, 6, 23, 30, tzinfo=UTC), {"start": "2026-12-07"}, True),
        (datetime(2026, 12, 6, 22, 30, tzinfo=UTC), {"start": "2026-12-07"}, False),
        # Instants keep their zone, as before.
        (datetime(2026, 12, 7, 23, 30, tzinfo=UTC), {"end": "2026-12-08T01:00:00+01:00"}, True),
        (datetime(2026, 12, 6, 23, 30, tzinfo=UTC), {"start": "2026-12-07T00:00:00Z"}, False),
    ],
    ids=[
        "ended-in-paris",
        "ending-in-paris",
        "ended-in-paris-in-summer",
        "ended-this-month",
        "ended-this-year",
        "begun-in-paris",
        "not-yet-begun-in-paris",
        "end-instant",
        "start-instant",
    ],
)
def test_r07_a_guardianship_bounded_by_dates_holds_on_those_days_in_france(now, period, counts):
    """R07: a RelatedPerson's period written with dates covers those days in France
    (`days.PATIENT_TIMEZONE`), where R17 counts its days too; a UTC day let a former
    representative in for an hour (two in summer) after the guardianship had ended."""
    assert represented(now, **period) is counts


def test_r07_the_record_is_read_again_when_a_date_bounded_guardianship_ends():
    """The record cache reads the facts again when the guardianship ends in France (23:00
    UTC in winter), not at midnight UTC."""
    now = datetime(2026, 12, 7, 5, 0, tzinfo=UTC)
    record = build_record(patient("2015-05-05"), [], [guardian(end="2026-12-07")], now.date(), now)
    assert record.valid_until == datetime(2026, 12, 7, 23, 0, tzinfo=UTC)


# -- Consent periods written with dates (R09-R12, the initial consent) ---------------------

PRO = "810000000040"
BTG = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"}


def consent_with(*nested: dict, **period: str) -> dict:
    consent = dmp_consent("child", *nested)
    consent["provision"]["period"] = period
    return consent


def rules_at(now: datetime, consent: dict):
    return interpret_consent(consent, now)


@pytest.mark.parametrize(
    ("now", "period", "authorized"),
    [
        # Ended on the 7th: at 23:30 UTC it is the 8th in Paris; read as a UTC day the
        # authorization held until midnight UTC (01:00 in Paris).
        (datetime(2026, 12, 7, 23, 30, tzinfo=UTC), {"end": "2026-12-07"}, False),
        (datetime(2026, 12, 7, 22, 30, tzinfo=UTC), {"end": "2026-12-07"}, True),
        # Beginning on the 7th: at 23:30 UTC on the 6th it is the 7th in Paris.
        (datetime(2026, 12, 6, 23, 30, tzinfo=UTC), {"start": "2026-12-07"}, True),
        (datetime(2026, 12, 6, 22, 30, tzinfo=UTC), {"start": "2026-12-07"}, False),
        # A one-day authorization written with dates holds that whole day in France.
        (
            datetime(2026, 12, 7, 12, 0, tzinfo=UTC),
            {"start": "2026-12-07", "end": "2026-12-07"},
            True,
        ),
        (datetime(2026, 12, 7, 23, 0, tzinfo=UTC), {"end": "2026-12-07T23:30:00Z"}, True),
    ],
    ids=["ended-in-paris", "not-ended", "begun-in-paris", "not-begun", "one-day", "instant"],
)
def test_r10_an_authorization_bounded_by_dates_holds_on_those_days_in_france(
    now, period, authorized
):
    """R10: what a Consent's period written with dates grants holds on those days in France;
    instants keep their zone."""
    rules = rules_at(now, consent_with(permit(PRO), **period))
    assert rules.is_authorized(PRO) is authorized


@pytest.mark.parametrize(
    ("now", "period", "in_force"),
    [
        # Beginning on the 8th: at 23:30 UTC on the 7th it is the 8th in Paris; read as a UTC
        # day the block let its professional in for another half hour.
        (datetime(2026, 12, 7, 23, 30, tzinfo=UTC), {"start": "2026-12-08"}, True),
        (datetime(2026, 12, 7, 22, 30, tzinfo=UTC), {"start": "2026-12-08"}, False),
        (datetime(2026, 12, 7, 22, 30, tzinfo=UTC), {"end": "2026-12-07"}, True),
        (datetime(2026, 12, 7, 23, 30, tzinfo=UTC), {"end": "2026-12-07"}, False),
    ],
    ids=["begun-in-paris", "not-begun", "not-ended", "ended-in-paris"],
)
def test_r09_r11_a_block_or_opposition_bounded_by_dates_holds_on_those_days_in_france(
    now, period, in_force
):
    """R09, R11: what a Consent's period written with dates restricts holds on those days in
    France, as what it grants does."""
    blocked = rules_at(now, consent_with(deny(PRO), **period))
    assert blocked.is_blocked(PRO) is in_force
    opposed = rules_at(now, consent_with({"type": "deny", "purpose": [BTG]}, **period))
    assert opposed.oppose_bris_de_glace is in_force


def test_r10_the_initial_consent_bounded_by_dates_holds_on_those_days_in_france():
    """The initial consent (CE 15/10/2025) opens the record to the care team until the end
    of its last day in France."""
    assert not rules_at(
        datetime(2026, 12, 7, 23, 30, tzinfo=UTC), consent_with(end="2026-12-07")
    ).initial_consent
    assert rules_at(
        datetime(2026, 12, 7, 22, 30, tzinfo=UTC), consent_with(end="2026-12-07")
    ).initial_consent


def test_r10_the_record_is_read_again_when_a_date_bound_passes_in_france():
    """The record cache reads the facts again at the instant a date bound ends in France:
    23:00 UTC on a winter day."""
    bounds = period_bounds(consent_with(end="2026-12-07"))
    assert datetime(2026, 12, 7, 23, 0, tzinfo=UTC) in bounds
