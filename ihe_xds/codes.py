"""Code system identity across XDS (OIDs in `codingScheme`) and FHIR (system URLs).

Rule (reference, "French DMP metadata"): a known OID maps to its canonical URL (LOINC,
SNOMED CT, v3-Confidentiality, the ANS TRE_* terminologies, IHE format codes); any other
OID maps to `urn:oid:<OID>`. A system the access rules act on (TRE_A07 masking codes, TRE_A03
classes, ...) maps to its canonical spelling in `profiles/terminology/system-aliases.json`, the
table the FHIR faces' normal form uses too (`fhir_server.resources.normal_form`).

XDS senders sometimes put a non-OID name in `codingScheme` ("LOINC", "Connect-a-thon
classCodes"); such a name maps to `<our base>/CodeSystem/xds-coding-scheme/<percent-encoded>`
so that the mapping stays reversible (a FHIR system must be a URI without spaces).
"""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from fhir_server.resources.normal_form import default_aliases
from fhir_server.terminology import (
    CANONICAL_BASE,
    NOS_BASE,
    OID_TRE_A03_CLASSE,
    OID_TRE_A07_CONFIDENTIALITY,
    SYSTEM_LOINC,
    SYSTEM_V3_CONFIDENTIALITY,
)

OID_LOINC = "2.16.840.1.113883.6.1"
OID_SNOMED = "2.16.840.1.113883.6.96"
OID_V3_CONFIDENTIALITY = "2.16.840.1.113883.5.25"
OID_TRE_A03 = OID_TRE_A03_CLASSE
OID_TRE_A05 = "1.2.250.1.213.1.1.4.12"
OID_TRE_A06 = "1.2.250.1.213.1.1.4.2.282"
OID_IHE_FORMAT = "1.3.6.1.4.1.19376.1.2.3"
OID_TRE_R02 = "1.2.250.1.71.4.2.4"
OID_TRE_A00 = "1.2.250.1.213.1.1.4.6"
OID_TRE_A01 = "1.2.250.1.213.1.1.4.9"
OID_TRE_A07 = OID_TRE_A07_CONFIDENTIALITY


def _nos(name: str) -> str:
    return f"{NOS_BASE}{name}/FHIR/{name.replace('_', '-')}"


OID_TO_URL: dict[str, str] = {
    OID_LOINC: SYSTEM_LOINC,
    OID_SNOMED: "http://snomed.info/sct",
    OID_V3_CONFIDENTIALITY: SYSTEM_V3_CONFIDENTIALITY,
    OID_TRE_A05: _nos("TRE_A05-TypeDocComplementaire"),
    OID_TRE_A06: _nos("TRE_A06-FormatCodeComplementaire"),
    OID_IHE_FORMAT: "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode",
    OID_TRE_R02: _nos("TRE_R02-SecteurActivite"),
    OID_TRE_A00: _nos("TRE_A00-ProducteurDocNonPS"),
    OID_TRE_A01: _nos("TRE_A01-CadreExercice"),
}
URL_TO_OID = {url: oid for oid, url in OID_TO_URL.items()}

# Code systems the DMP profile accepts per DocumentEntry attribute (reference table).
DMP_SCHEMES: dict[str, tuple[str, ...]] = {
    "classCode": (OID_TRE_A03,),
    "typeCode": (OID_LOINC, OID_TRE_A05),
    "formatCode": (OID_TRE_A06, OID_IHE_FORMAT),
    "healthcareFacilityTypeCode": (OID_TRE_R02, OID_TRE_A00),
    "practiceSettingCode": (OID_TRE_A01,),
    "confidentialityCode": (OID_V3_CONFIDENTIALITY, OID_TRE_A07),
}

_LOCAL_SCHEME_BASE = f"{CANONICAL_BASE}/CodeSystem/xds-coding-scheme/"
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


def is_oid(value: str | None) -> bool:
    return value is not None and len(value) <= 64 and bool(_OID.fullmatch(value))


def system_for_scheme(scheme: str | None) -> str | None:
    """FHIR Coding.system for an XDS codingScheme."""
    if not scheme:
        return None
    known = default_aliases().spec(scheme) if is_oid(scheme) else None
    if known is not None:
        return known.canonical  # a system the rules act on: its one spelling
    if scheme in OID_TO_URL:
        return OID_TO_URL[scheme]
    if is_oid(scheme):
        return f"urn:oid:{scheme}"
    return _LOCAL_SCHEME_BASE + quote(scheme, safe="")


def scheme_for_system(system: str | None) -> str | None:
    """XDS codingScheme for a FHIR Coding.system (inverse of system_for_scheme)."""
    if not system:
        return None
    known = default_aliases().spec(system)
    if known is not None and known.canonical.startswith("urn:oid:"):
        return known.canonical[len("urn:oid:") :]
    if system in URL_TO_OID:
        return URL_TO_OID[system]
    if system.startswith("urn:oid:"):
        return system[len("urn:oid:") :]
    if system.startswith(_LOCAL_SCHEME_BASE):
        return unquote(system[len(_LOCAL_SCHEME_BASE) :])
    return system
