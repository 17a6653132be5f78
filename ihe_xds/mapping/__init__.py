"""XDS ebRIM <-> FHIR R4 (IHE MHD): the one mapping the XDS face and the MHD face share.

The package, one module per direction and the pieces both read:
- `to_fhir` (ITI-41 deposit): `submission_to_fhir` turns a validated Submission and its
  documents into plain FHIR JSON dicts: one List (MHD SubmissionSet), one DocumentReference
  per DocumentEntry, one Binary per document, and the transaction Bundle holding them.
- `from_fhir` (ITI-18 answers): `document_reference_to_ebrim`, `list_to_ebrim`,
  `list_to_folder` (a folder List as an XDSFolder) and
  `associations_from_fhir` rebuild the ebRIM objects from what is stored, so that a document
  deposited by ITI-41 comes back with equivalent metadata.
- `parties`: authors, people, organisations and telecoms as contained resources, both ways
  (read by both directions and by `list_parties`);
- `list_parties`: the SubmissionSet's authors and intendedRecipients on its List, both ways;
- `terms`: the extension URLs, tag system and relatesTo codes both directions agree on.
Every name callers use is importable from `ihe_xds.mapping` itself.

Decisions (beyond the reference tables):
- Resource ids are generated (uuid4, canonical form); each bundle entry has fullUrl
  `urn:uuid:<id>` and request `PUT <Type>/<id>`, and references inside the resources are
  already the final relative ones (`Binary/<id>`, `DocumentReference/<id>`, `Patient/<id>`):
  the store must keep the given ids (PUT = create with a client id), nothing to rewrite.
- Availability: Approved -> status current; Deprecated -> superseded; DMP Deleted ->
  entered-in-error plus meta.tag (AVAILABILITY_SYSTEM|Deleted); DMP Archived -> status
  current plus the PDSm_IsArchived extension (PDSm st_maj.md's table,
  `resources.document_state`), since an archived document is still valid, only hidden from
  default searches. `fhir_availability` gives the pair. A document stored with the older
  meta.tag AVAILABILITY_SYSTEM|Archived, and no isArchived extension, still reads Archived.
- Authors: contained Practitioner / PractitionerRole / Organization with ids
  `a<n>-practitioner`, `a<n>-role`, `a<n>-org<k>`; the `a<n>-` prefix groups them back
  into the same XDS author. authorRole / authorSpecialty of the form `code^display^OID` become
  codings, anything else stays as CodeableConcept.text (lossless either way).
- XFRM_RPLC becomes two relatesTo (transforms + replaces) to the same target; the
  backward mapping folds them back. A relationship target outside the submission is
  written as a logical reference (identifier = its entryUUID), plus a literal reference
  when `resolve_document` knows it.
- SubmissionSet authors and intendedRecipients: List.source, MHD's authorOrg and
  intendedRecipient extensions and one extension of ours for the authors List.source cannot
  hold (`list_parties`). Extra metadata Slots (ITI TF-3 4.1.14) of a DocumentEntry, a
  SubmissionSet or an Association: one extension each on the DocumentReference / List /
  List.entry / relatesTo (`extra_metadata`). The Association Documentation Classification of
  a document relationship (ITI TF-3 4.2.2.2): one valueCoding extension on its relatesTo
  (`association_documentation`).
- `repository_unique_id` is not stored in FHIR (it is this server's own id); a DocumentEntry
  naming another repository is refused (XDSRepositoryMetadataError).
"""

from __future__ import annotations

from ihe_xds.codes import OID_TO_URL, URL_TO_OID, scheme_for_system, system_for_scheme
from ihe_xds.mapping.from_fhir import (
    associations_from_fhir,
    availability_of,
    document_reference_to_ebrim,
    entry_uuid_of,
    is_folder_list,
    list_to_ebrim,
    list_to_folder,
    unique_id_from,
)
from ihe_xds.mapping.terms import AVAILABILITY_SYSTEM, EXT_DESIGNATION_TYPE, EXT_SOURCE_ID
from ihe_xds.mapping.to_fhir import (
    FhirSubmission,
    concept,
    fhir_availability,
    submission_to_fhir,
)

# The name `concept` had when the mapping was one module (ihe_xds.update_document_set used it).
_concept = concept

__all__ = [
    "AVAILABILITY_SYSTEM",
    "EXT_DESIGNATION_TYPE",
    "EXT_SOURCE_ID",
    "FhirSubmission",
    "OID_TO_URL",
    "URL_TO_OID",
    "associations_from_fhir",
    "availability_of",
    "concept",
    "document_reference_to_ebrim",
    "entry_uuid_of",
    "fhir_availability",
    "is_folder_list",
    "list_to_ebrim",
    "list_to_folder",
    "scheme_for_system",
    "submission_to_fhir",
    "system_for_scheme",
    "unique_id_from",
]
