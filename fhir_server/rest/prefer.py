"""The `Prefer` request header (RFC 7240), read once for every view that honours it.

FHIR uses three preferences: `return=minimal|representation|OperationOutcome` (http.html#ops,
how a write is answered), `handling=strict|lenient` (search.html#errors, whether an unknown
parameter is refused or ignored) and `respond-async` (async.html, not supported: ignored,
as RFC 7240 §2 lets a server ignore any preference).

The header is parsed as RFC 7240 §2 writes it, not searched for substrings: it was split on
`;` alone, so `return=minimal, handling=lenient` lost its `return` (the first part read
`minimal, handling=lenient`), and `handling=lenient` anywhere in it, even inside another
preference's quoted value, turned lenient handling on.

    Prefer     = "Prefer" ":" 1#preference
    preference = token [ BWS "=" BWS word ] *( OWS ";" [ OWS parameter ] )
    parameter  = token [ BWS "=" BWS word ]
    word       = token / quoted-string

- Preferences are comma-separated, and several `Prefer` header lines are one list (RFC 7230
  §3.2.2); a comma or `;` inside a quoted string separates nothing.
- Names are case-insensitive (RFC 7240 §2); values are compared as FHIR spells them, an
  unknown value is no preference (the default applies): `return=Minimal` is not `minimal`.
- A preference given twice: the first wins, the others are ignored without an error, as
  RFC 7240 §2 says ("only the first instance is to be considered ... SHOULD be ignored
  without signaling an error"). `handling=strict, handling=lenient` is strict.
- A preference that does not parse (an unterminated quoted string, a name that is not a
  token) is ignored, as one the server does not understand; the ones around it still count.
  Nothing here is an access decision, so ignoring is not failing open: every preference
  falls back to the strict, full answer.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

RETURN_VALUES = ("minimal", "representation", "OperationOutcome")
HANDLING_VALUES = ("strict", "lenient")

# RFC 7230 §3.2.6 tchar.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True)
class Preferences:
    """What the client prefers, defaults filled in: the full resource, strict handling."""

    return_: str = "representation"
    handling: str = "strict"
    respond_async: bool = False

    @property
    def lenient(self) -> bool:
        return self.handling == "lenient"


def _split(text: str, separator: str) -> list[str] | None:
    """`text` split on `separator` outside quoted strings; None if a quote is unterminated."""
    parts, current, quoted, escaped = [], [], False, False
    for char in text:
        if escaped:
            current.append(char)
            escaped = False
        elif quoted and char == "\\":
            current.append(char)
            escaped = True
        elif char == '"':
            current.append(char)
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted or escaped:
        return None
    parts.append("".join(current))
    return parts


def _word(text: str) -> str | None:
    """A token or a quoted string (unquoted, `\\` escapes undone); None if neither."""
    if _TOKEN.fullmatch(text):
        return text
    if len(text) >= 2 and text[0] == text[-1] == '"':
        inner = text[1:-1]
        out, escaped = [], False
        for char in inner:
            if escaped:
                out.append(char)
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                return None
            else:
                out.append(char)
        return None if escaped else "".join(out)
    return None


def _name_value(text: str) -> tuple[str, str] | None:
    """`name[=word]` as (lower-case name, value or ""); None if it does not parse."""
    name, equals, value = text.partition("=")
    name, value = name.strip(), value.strip()
    if not _TOKEN.fullmatch(name):
        return None
    if not equals:
        return name.lower(), ""
    word = _word(value)
    if word is None:
        return None
    return name.lower(), word


def parse_preferences(headers: Iterable[str]) -> dict[str, str]:
    """Every well-formed preference of the `Prefer` header lines, name (lower case) to
    value, the first occurrence of a name winning. Parameters after `;` are read for their
    syntax only: none of FHIR's preferences has any."""
    found: dict[str, str] = {}
    for header in headers:
        items = _split(header, ",")
        if items is None:
            continue  # an unterminated quoted string: the line cannot be split
        for item in items:
            if not item.strip():
                continue  # RFC 7230 §7: empty list elements are allowed and ignored
            pieces = _split(item, ";")
            assert pieces is not None  # the quotes balanced over the whole line
            preference = _name_value(pieces[0])
            if preference is None:
                continue
            if any(p.strip() and _name_value(p) is None for p in pieces[1:]):
                continue
            name, value = preference
            found.setdefault(name, value)
    return found


def preferences(headers: Iterable[str]) -> Preferences:
    """The `Preferences` the header lines ask for."""
    found = parse_preferences(headers)
    return_ = found.get("return", "")
    handling = found.get("handling", "")
    return Preferences(
        return_=return_ if return_ in RETURN_VALUES else "representation",
        handling=handling if handling in HANDLING_VALUES else "strict",
        respond_async="respond-async" in found,
    )


def request_preferences() -> Preferences:
    """The current Flask request's `Prefer` header lines, read."""
    from flask import request

    return preferences(request.headers.getlist("Prefer"))


__all__ = [
    "HANDLING_VALUES",
    "RETURN_VALUES",
    "Preferences",
    "parse_preferences",
    "preferences",
    "request_preferences",
]
