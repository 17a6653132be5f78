"""One document model, one rule set (issue #19, deliverable 1).

A DMP document is the same thing whatever door it comes through (REST POST, PUT,
conditional create or update, a transaction or batch entry whatever profile its Bundle
claims, ITI-65, ITI-105 Simplified Publish, or ITI-41 mapped to FHIR), and the same rules
judge it, from here:

- `model`: what a document is made of (entryUUID, uniqueId, attachments, relatesTo);
- `rules`: the rules that need no store (DMP metadata as the DMP DocumentReference profile
  says, entryUUID and uniqueId well-formed, no inline bytes, ref-1, relatesTo codes, size
  and hash against the bytes, the update rule, uniqueness within one message);
- `registry`: the one check of a write, with the store (`DocumentRules.check_write`, run by
  `FhirService.create_in` / `update_in`): entryUUID held by nothing else, content equal to
  the Binary's, one content per uniqueId, association targets existing, of the same patient,
  current, and a replacement written with its supersede;
- `publish`: a single POST DocumentReference (with inline data, ITI-105) as the transaction
  ITI-65 uses.

Which rules run never depends on `meta.profile` nor on the canonical a Bundle declares.
The SubmissionSet rules are the DMP SubmissionSet profile (uniqueId and contentTypeCode
required, as ITI-41 requires them), enforced on every write of a List coded submissionset.
"""
