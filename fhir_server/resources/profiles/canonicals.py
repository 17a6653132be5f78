"""The canonical URLs of the server's profiles and the rules naming which apply by default.

Apart from the registry so that the XDS mapping, the audit and the tests can name a profile
without loading one (and the registry reads its rules from here, not from a second list).
"""

from __future__ import annotations

from fhir_server.paths import profiles_dir
from fhir_server.terminology import CANONICAL_BASE, PDSM_PROFILE_BASE

PROFILE_BASE = f"{CANONICAL_BASE}/StructureDefinition/"
DMP_DOCUMENT_REFERENCE = PROFILE_BASE + "dmp-document-reference"
DMP_SUBMISSION_SET = PROFILE_BASE + "dmp-submission-set"
DMP_PATIENT_INS = PROFILE_BASE + "dmp-patient-ins"
DMP_CONSENT = PROFILE_BASE + "dmp-consent"
DMP_AUDIT_EVENT = PROFILE_BASE + "dmp-audit-event"

DEFAULT_PROFILES: dict[str, tuple[str, ...]] = {
    "Patient": (DMP_PATIENT_INS,),
    "Consent": (DMP_CONSENT,),
}

CLAIM_ALIASES: dict[str, str] = {
    PDSM_PROFILE_BASE + "pdsm-comprehensive-document-reference": DMP_DOCUMENT_REFERENCE,
    PDSM_PROFILE_BASE + "pdsm-submissionset-comprehensive": DMP_SUBMISSION_SET,
}

PROFILES_DIR = profiles_dir()
