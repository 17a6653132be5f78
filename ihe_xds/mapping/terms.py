"""The FHIR names both directions of the XDS <-> FHIR mapping agree on.

The extension URLs of a SubmissionSet List, the tag system of the DMP availability statuses
FHIR has no status for, and the relatesTo codes an ebRIM document relationship becomes:
`to_fhir` writes them and `from_fhir` reads them back, so each is written once, here.
"""

from __future__ import annotations

from fhir_server.terminology import CANONICAL_BASE
from ihe_xds.vocabulary import ASSOC_APND, ASSOC_RPLC, ASSOC_SIGNS, ASSOC_XFRM, ASSOC_XFRM_RPLC

EXT_SOURCE_ID = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
EXT_DESIGNATION_TYPE = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-designationType"
AVAILABILITY_SYSTEM = f"{CANONICAL_BASE}/CodeSystem/xds-availability-status"

# ebRIM document relationship -> its DocumentReference.relatesTo codes. XFRM_RPLC is two, to
# the same target; `from_fhir` folds them back and reads a relationship's extensions from
# its last code.
RELATES_TO = {
    ASSOC_RPLC: ("replaces",),
    ASSOC_APND: ("appends",),
    ASSOC_XFRM: ("transforms",),
    ASSOC_XFRM_RPLC: ("transforms", "replaces"),
    ASSOC_SIGNS: ("signs",),
}
