"""Value normalization shared by index extraction and query parsing.

Both sides of a comparison must go through the same function, otherwise a stored value and a
searched value that FHIR considers equal would differ by an accent or a time zone. So this
module is the single definition of:

- string normalization (FHIR string search is case- and accent-insensitive);
- the instant range of a date, dateTime, instant, Period or Timing at its precision;
- the range of a decimal at its precision.

Date values without a time zone (a `date`, or a search value such as `2024-01-15T10:00`) are
read as UTC: FHIR leaves the zone of such values to the server, and UTC keeps the index
independent of where the server runs.
"""

from __future__ import annotations

import re
import unicodedata
from calendar import isleap, monthrange
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation

# Open ends of a Period, and anything outside years 1..9999, clamp to these bounds.
MIN_INSTANT = -62135596800_000_000  # 0001-01-01T00:00:00Z in epoch microseconds
MAX_INSTANT = 253402300799_999_999  # 9999-12-31T23:59:59.999999Z

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WS = re.compile(r"\s+")
# ASCII digits, matched whole: `\d` also read fullwidth and Arabic-Indic digits (a search
# `date=ge٢٠٢٦` was read as 2026), and `$` let a trailing newline through.
_DATE = re.compile(
    r"(?P<y>[0-9]{4})(?:-(?P<m>[0-9]{2})(?:-(?P<d>[0-9]{2})"
    r"(?:T(?P<H>[0-9]{2}):(?P<M>[0-9]{2})(?::(?P<S>[0-9]{2})(?:\.(?P<f>[0-9]+))?)?"
    r"(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?"
)


def normalize_string(value: str) -> str:
    """Lower case, accents stripped (NFKD minus combining marks), whitespace folded to one space."""
    if not value.isascii():
        decomposed = unicodedata.normalize("NFKD", value)
        value = "".join(c for c in decomposed if not unicodedata.combining(c))
    return _WS.sub(" ", value.lower()).strip()


class DateFormatError(ValueError):
    """A value that is not a FHIR date, dateTime or instant."""


def _micros(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def date_range(value: str) -> tuple[int, int]:
    """(low, high) epoch microseconds, both inclusive, covering `value` at its precision.

    `2024` covers the whole year, `2024-03-01T10:00:00.5Z` the tenth of a second. Minute
    precision (`T10:00`) is accepted because search values use it. A search value whose `+`
    was decoded to a space by a form encoder (`10:00:00 01:00`) is read as `+01:00`.
    """
    text = value.strip()
    if len(text) > 19 and text[-6] == " ":
        text = text[:-6] + "+" + text[-5:]
    match = _DATE.fullmatch(text)
    if not match:
        raise DateFormatError(f"not a FHIR date/dateTime/instant: {value!r}")
    parts = match.groupdict()
    try:
        year = int(parts["y"])
        month = int(parts["m"] or 1)
        day = int(parts["d"] or 1)
        hour = int(parts["H"] or 0)
        minute = int(parts["M"] or 0)
        second = int(parts["S"] or 0)
        fraction = parts["f"] or ""
        micro = int((fraction + "000000")[:6]) if fraction else 0
        if year < 1:
            raise ValueError("year 0")
        start = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
        low = _micros(start)
        tz = parts["tz"]
        if tz and tz != "Z":
            hours, minutes = int(tz[1:3]), int(tz[4:6])
            if hours > 14 or minutes > 59:
                raise ValueError("time zone offset")
            sign = 1 if tz[0] == "+" else -1
            low -= sign * (hours * 3600 + minutes * 60) * 1_000_000
    except ValueError as exc:
        raise DateFormatError(f"not a valid date: {value!r}") from exc
    if parts["m"] is None:
        span = (366 if isleap(year) else 365) * 86_400_000_000
    elif parts["d"] is None:
        span = monthrange(year, month)[1] * 86_400_000_000
    elif parts["H"] is None:
        span = 86_400_000_000
    elif parts["S"] is None:
        span = 60_000_000
    elif not fraction:
        span = 1_000_000
    else:
        span = 10 ** max(0, 6 - len(fraction))
    return _clamp(low), _clamp(low + span - 1)


def instant_point(value: str) -> int:
    """The exact instant of a dateTime/instant (its low bound), e.g. `meta.lastUpdated`."""
    return date_range(value)[0]


def _clamp(value: int) -> int:
    return max(MIN_INSTANT, min(MAX_INSTANT, value))


def period_range(period: dict) -> tuple[int, int] | None:
    """A Period covers from the start of `start` to the end of `end`; a missing end is open."""
    start, end = period.get("start"), period.get("end")
    if start is None and end is None:
        return None
    low = date_range(start)[0] if start else MIN_INSTANT
    high = date_range(end)[1] if end else MAX_INSTANT
    return low, high


def timing_range(timing: dict) -> tuple[int, int] | None:
    """A Timing covers its events and its repeat.boundsPeriod (the envelope of all of them)."""
    ranges = [date_range(e) for e in timing.get("event", []) if isinstance(e, str)]
    bounds = (timing.get("repeat") or {}).get("boundsPeriod")
    if isinstance(bounds, dict):
        bound_range = period_range(bounds)
        if bound_range:
            ranges.append(bound_range)
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


def value_date_range(value: object) -> tuple[int, int] | None:
    """The range of any date-like FHIR value (date/dateTime/instant string, Period, Timing)."""
    if isinstance(value, str):
        return date_range(value)
    if isinstance(value, dict):
        if "start" in value or "end" in value:
            return period_range(value)
        if "event" in value or "repeat" in value:
            return timing_range(value)
    return None


class NumberFormatError(ValueError):
    """A value that is not a FHIR decimal."""


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def parse_decimal(value: str) -> Decimal:
    if not _NUMBER.match(value.strip()):
        raise NumberFormatError(f"not a number: {value!r}")
    try:
        number = Decimal(value.strip())
        number.scaleb(-1)  # raises on exponents beyond the decimal context
    except ArithmeticError as exc:
        raise NumberFormatError(f"number out of range: {value!r}") from exc
    return number


def decimal_range(value: str) -> tuple[Decimal, Decimal]:
    """[low, high) of a decimal at its precision: half a unit of the last significant digit.

    `100` -> [99.5, 100.5); `100.00` -> [99.995, 100.005); `1e2` -> [50, 150) (one significant
    digit at the hundreds; the R4 page's example of [95, 105) contradicts its own rule).
    """
    number = parse_decimal(value)
    exponent = number.as_tuple().exponent
    assert isinstance(exponent, int)
    try:
        half = Decimal(5).scaleb(exponent - 1)
        return number - half, number + half
    except ArithmeticError as exc:
        raise NumberFormatError(f"number out of range: {value!r}") from exc


def to_decimal(value: object) -> Decimal | None:
    """A JSON number (int/float/str) as a Decimal, through its shortest text (no binary noise)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float | str | Decimal):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    return None
