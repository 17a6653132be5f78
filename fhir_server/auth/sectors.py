"""R05 at the XDS doors: the VIHF `Secteur_Activite` (TRE_R02-SecteurActivite) of the
structure a practitioner acts for, and the sectors the DMP is closed to.

A token carries the organization type R05 compares (`extensions.dmp.organization_type`,
copied from the client's registration); a VIHF carries none, only the structure's activity
sector. Unread, it let an occupational health service or an insurer's medical department
read and write records through ITI-18, ITI-43, ITI-41 and ITI-57 as any care structure,
where the Code de la santé publique (art. L1111-18) closes the DMP to occupational medicine,
to insurers and mutual insurers and to anyone at the conclusion of a contract. Each excluded
sector is mapped here to the R05 organization type it stands for, so that the policy refuses
it exactly as it refuses a token of that type.

Source of the codes (ANS, *Nomenclatures des Objets de Santé*, NOS):
- the CodeSystem TRE_R02-SecteurActivite, OID 1.2.250.1.71.4.2.4, as published in
  github.com/ansforge/IG-NOS, `ig/allNos2/CodeSystem-TRE-R02-SecteurActivite.json` (commit
  b8b0cc32cc5e1471d417d6d3a3dd17bfb0fce3e9, date 2023-03-31, SA01 to SA63);
- the codes added since, SA64 to SA69 (SA66 "Services de Prévention et de Santé au Travail
  (SPST)"), as JDV_J02-XdsHealthcareFacilityTypeCode-CISIS version 20260223120000 lists
  them (ANS terminology IG, package ans.fr.terminologies 1.12.0).
The NOS are public reference data the ANS publishes for reuse (see
profiles/terminology/nos/SOURCE.md for their licence: the ANS's open-data distribution of
the NOS is under ODbL 1.0); only the codes are transcribed here, no file is brought in.

Read as written (fail closed): the value is `CODE^1.2.250.1.71.4.2.4` (the CI-SIS VIHF
text form) or an HL7 CE element with `code` and `codeSystem`; a code in another case, with
spaces, under another code system, not in TRE_R02, or two different sectors refuse the
assertion, rather than serving as a care structure a requester the rules could not place.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from fhir_server.access.policy.tables import PAYER_TYPES
from fhir_server.auth.tokens import AuthenticationError

ATTR_SECTOR = "Secteur_Activite"
OID_TRE_R02_SECTEUR_ACTIVITE = "1.2.250.1.71.4.2.4"

# Every code of TRE_R02 (SA01 to SA69): SA11 was closed in 2020 (dateFin) and is still one.
TRE_R02_CODES = frozenset(f"SA{n:02d}" for n in range(1, 70))

# The sectors the DMP is closed to (R05, CSP L1111-18), by the R05 organization type each
# stands for. Occupational medicine acts for the employer (L1111-18 names it apart; the
# rule book's type is `employer`).
EXCLUDED_SECTORS: dict[str, str] = {
    "SA11": "employer",  # Entreprise d'intérim (closed 2020): a temporary work agency
    "SA13": "employer",  # Prévention et soins en entreprise: occupational medicine
    "SA23": "insurer",  # Assurance privée
    "SA24": "health_insurer",  # Organisme de sécurité sociale
    "SA44": "employer",  # Recrutement ou Gestion RH
    "SA48": "employer",  # Entreprise industrielle et tertiaire hors industrie pharmaceutique
    "SA66": "employer",  # Services de Prévention et de Santé au Travail (SPST)
}
assert set(EXCLUDED_SECTORS) <= TRE_R02_CODES

# The sector the minting tool (`vihf.mint_vihf`, `fhir-server token --vihf`) declares unless
# told otherwise: SA01, "Etablissement public de santé", a care structure.
CARE_SECTOR = f"SA01^{OID_TRE_R02_SECTEUR_ACTIVITE}"

assert set(EXCLUDED_SECTORS.values()) <= PAYER_TYPES

_TEXT_FORM = re.compile(r"(SA\d{2})\^" + re.escape(OID_TRE_R02_SECTEUR_ACTIVITE))
_FORM = (
    f"VIHF attribute {ATTR_SECTOR} must be one TRE_R02-SecteurActivite code "
    f"(codeSystem {OID_TRE_R02_SECTEUR_ACTIVITE}), written CODE^{OID_TRE_R02_SECTEUR_ACTIVITE}"
)


def _sector_code(text: str | None, coded: list[tuple[str | None, str | None]]) -> str:
    """The TRE_R02 code of one AttributeValue: its text `CODE^OID`, or one CE element."""
    if coded:
        if (text or "").strip() or len(coded) != 1:
            raise AuthenticationError(f"{_FORM}: a value holds more than one code")
        code, system = coded[0]
        if system != OID_TRE_R02_SECTEUR_ACTIVITE:
            raise AuthenticationError(f"{_FORM}: codeSystem {system!r}")
    else:
        found = _TEXT_FORM.fullmatch(text or "")
        if found is None:
            raise AuthenticationError(f"{_FORM}: {text!r}")
        code = found.group(1)
    if code not in TRE_R02_CODES:
        raise AuthenticationError(f"{_FORM}: {code!r} is not a TRE_R02 code")
    return code


def sector_organization_type(
    values: Iterable[tuple[str | None, list[tuple[str | None, str | None]]]],
) -> str | None:
    """The R05 organization type the sector of `values` stands for, or None (a care sector).

    `values`: each AttributeValue of Secteur_Activite as (its text, its coded children as
    (code, codeSystem)). AuthenticationError when a value is not one TRE_R02 code as written,
    or when the values name two different sectors (read as the first, element order chose
    whether R05 applied), or when there is none."""
    codes = {_sector_code(text, coded) for text, coded in values}
    if len(codes) > 1:
        raise AuthenticationError(
            f"VIHF attribute {ATTR_SECTOR} names more than one sector: {sorted(codes)}"
        )
    if not codes:
        # Fail closed: R05 is judged on the sector, and an assertion without one (or with
        # the attribute spelled so that it is not read: another name, a namespace prefix,
        # no Name) was served as a care structure's. The DMP's VIHF carries it (CI-SIS
        # VIHF, `docs/french-dmp-sources.md` 1.3).
        raise AuthenticationError(
            f"VIHF attribute {ATTR_SECTOR} is required: the structure's TRE_R02 sector, "
            f"written CODE^{OID_TRE_R02_SECTEUR_ACTIVITE}"
        )
    return EXCLUDED_SECTORS.get(next(iter(codes)))
