"""Code systems, OIDs and URLs the server uses, in one place.

Names follow the French terminologies (TRE_*) and the IHE/HL7 systems they come from.
"""

from __future__ import annotations

# Our own canonical base, for extensions and code systems decided here.
CANONICAL_BASE = "https://dmp-server.fr/fhir"
# The ANS publications: the NOS terminologies and the PDSm implementation guide's profiles.
NOS_BASE = "https://mos.esante.gouv.fr/NOS/"
PDSM_PROFILE_BASE = "https://interop.esante.gouv.fr/ig/fhir/pdsm/StructureDefinition/"

# R13 on messages: a Communication carries in `meta.tag`, under this system, the J66 type of
# every document it names (code `<type system>|<type code>`), so that it is hidden from a
# professional whose profession may not read that type, as the document is (decided here).
SYSTEM_NAMED_DOCUMENT_TYPE = f"{CANONICAL_BASE}/CodeSystem/named-document-type"

# Record lifecycle (R03): Patient extension, valueCode open | opposed | closed (decided here).
EXT_RECORD_STATUS = f"{CANONICAL_BASE}/StructureDefinition/record-status"
RECORD_OPEN = "open"
RECORD_OPPOSED = "opposed"
RECORD_CLOSED = "closed"

# Identifiers
OID_INS_NIR = "1.2.250.1.213.1.4.8"
OID_INS_NIA = "1.2.250.1.213.1.4.9"
OID_INS_NIR_TEST = "1.2.250.1.213.1.4.10"
OID_INS_NIR_DEMO = "1.2.250.1.213.1.4.11"
INS_OIDS = (OID_INS_NIR, OID_INS_NIA, OID_INS_NIR_TEST, OID_INS_NIR_DEMO)
SYSTEM_INS_NIR = f"urn:oid:{OID_INS_NIR}"
OID_IDNAT_PS = "1.2.250.1.71.4.2.1"
SYSTEM_IDNAT_PS = f"urn:oid:{OID_IDNAT_PS}"
OID_IDNAT_STRUCT = "1.2.250.1.71.4.2.2"
SYSTEM_IDNAT_STRUCT = f"urn:oid:{OID_IDNAT_STRUCT}"
SYSTEM_RFC3986 = "urn:ietf:rfc:3986"

# Professions and access modes
OID_TRE_G15_PROFESSION = "1.2.250.1.71.1.2.7"
SYSTEM_PROFESSION = f"urn:oid:{OID_TRE_G15_PROFESSION}"
# TRE_R38 (spécialités ordinales): the VIHF's specialty Role.
OID_TRE_R38_SPECIALTY = "1.2.250.1.71.4.2.5"
OID_TRE_R248_MODE_ACCES = "1.2.250.1.213.1.1.4.248"
SYSTEM_ACCESS_MODE = f"urn:oid:{OID_TRE_R248_MODE_ACCES}"
SYSTEM_ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PURPOSE_BY_MODE = {"normal": "TREAT", "bris_de_glace": "BTG", "centre_15": "ETREAT"}

# Document metadata
OID_TRE_A03_CLASSE = "1.2.250.1.213.1.1.4.1"
OID_TRE_A07_CONFIDENTIALITY = "1.2.250.1.213.1.1.4.13"
SYSTEM_DMP_CONFIDENTIALITY = f"urn:oid:{OID_TRE_A07_CONFIDENTIALITY}"
MASQUE_PS = "MASQUE_PS"
INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
INVISIBLE_REPRESENTANTS_LEGAUX = "INVISIBLE_REPRESENTANTS_LEGAUX"
SYSTEM_V3_CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
SYSTEM_LOINC = "http://loinc.org"

# Consent
SYSTEM_CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
SYSTEM_PARTICIPATION_TYPE = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType"
SYSTEM_V3_ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"

# MHD
SYSTEM_MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
