"""The zone the DMP's days are counted in: France's (Europe/Paris).

A date written without a time (a Consent's or a guardianship's period bound) is that day in
this zone, and so is the day of R17's first access of the day: the record's rules and the
patient's notifications count the same days. **Decided here**: the DMP is France's record
and its days are France's legal ones; a UTC day ended an authorization an hour late in
winter (two in summer), and reading a date as the part of that day common to every zone
made a one-day authorization written with dates grant nothing.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

PATIENT_TIMEZONE = ZoneInfo("Europe/Paris")
