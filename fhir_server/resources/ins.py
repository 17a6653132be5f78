"""The INS (Identifiant National de Santé) and its NIR key.

The INS-NIR matricule is the NIR: 13 characters (sex, year, month, department, commune,
order) and a 2-digit key = 97 - (NIR mod 97). Corsican departments 2A and 2B are read as 19
and 18 for the key computation only.
"""

from __future__ import annotations

import re

from fhir_server.terminology import INS_OIDS

# Corsica in capitals only: `2a` would be a second spelling of one INS, and the rules compare
# INS as written (a second Patient, a binding to no record).
_NIR_SHAPE = re.compile(r"^[12378]\d{4}(?:\d{2}|2[AB])\d{6}\d{2}\Z")


def nir_key(nir13: str) -> int:
    """The key of the first 13 characters of a NIR (Corsica read as 19 / 18)."""
    department = {"2A": "19", "2B": "18"}.get(nir13[5:7].upper(), nir13[5:7])
    return 97 - (int(nir13[:5] + department + nir13[7:]) % 97)


def nir_key_error(nir: str) -> str | None:
    """A message saying what is wrong with a 15-character INS-NIR, or None when it is valid."""
    if not isinstance(nir, str) or len(nir) != 15:
        return "the INS matricule must have 15 characters (13 for the NIR and a 2-digit key)"
    if not _NIR_SHAPE.match(nir):
        if _NIR_SHAPE.match(nir.upper()):
            return f"the INS matricule writes Corsica in capitals (2A, 2B): {nir.upper()!r}"
        return "the INS matricule is not a NIR (sex, year, month, department, commune, order, key)"
    expected = nir_key(nir[:13])
    if int(nir[13:]) != expected:
        return f"the INS key {nir[13:]} does not match the NIR (expected {expected:02d})"
    return None


def is_ins_system(system: str | None) -> bool:
    """Whether an Identifier.system (urn:oid:...) names one of the INS assigning authorities."""
    return system is not None and system.removeprefix("urn:oid:") in INS_OIDS
