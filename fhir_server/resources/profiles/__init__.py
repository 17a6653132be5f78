"""The server's profiles (profiles/StructureDefinition-*.json) enforced as compiled checks.

Why a small differential checker rather than a general validator: the write path must stay
cheap (a DocumentReference is checked in tens of microseconds, see
benchmarks/bench_profiles.py), the structural part is already done by the fhir.resources models
(`resources/model.py`), and our profiles only add a handful of constraint kinds. Each
StructureDefinition is compiled once, at load, into a flat list of checks:

- cardinality (`min`/`max`) of an element, counted in every instance of its parent, so a
  nested element (`content.attachment.hash`) is only required where its parent exists;
- `fixed[x]` (equality) and `pattern[x]` (the instance contains the pattern) values;
- required bindings, to the local ValueSets expanded from the local CodeSystems and the
  concepts listed in `compose` (a CodeSystem's `identifier` values, e.g. its `urn:oid:`, are
  accepted as aliases of its url, because XDS carries code systems as OIDs);
- slices, matched by the value/pattern of their discriminator (`system`, `url`, `$this`);
- reference targets (`type.targetProfile`) when the reference names its type;
- named invariants (`constraint.key`): the ones on the write path are implemented in Python
  (`INVARIANTS`, e.g. the INS key); any other key is evaluated from its FHIRPath
  `expression` with fhirpathpy.

Which profiles apply on write (`ProfileRegistry.profiles_for`):

- always, by resource type (`default_profiles`): Patient -> dmp-patient-ins, Consent ->
  dmp-consent;
- the profiles of ours the resource claims in `meta.profile`, and ours that stand for a
  claimed ANS PDSm profile (`CLAIM_ALIASES`: pdsm-comprehensive-document-reference ->
  dmp-document-reference, pdsm-submissionset-comprehensive -> dmp-submission-set);
- dmp-document-reference for a DocumentReference a client writes, whatever the door
  (`deposit=True`, asked by the document rules of `fhir_server.documents`, which also assign
  the entryUUID (identifier) of a new document before, as PDSm4DMP says);
- dmp-submission-set for a List whose code is the MHD `submissionset`.

dmp-audit-event applies only when claimed: the server writes AuditEvents itself.

The modules, in the order a profile goes through them:

- `canonicals`: the profiles' URLs, the default and the claim-alias rules;
- `value_sets`: the local terminology folded onto one key per system, ValueSets expanded;
- `element_path`: element ids as steps, walked fast (values) or with FHIRPaths (issues);
- `checks`: cardinality, fixed/pattern, required binding, reference target, and their issues;
- `invariants`: the named invariants and their check;
- `compiler`: a differential (its slices included) into a Profile's flat list of checks;
- `registry`: ProfileRegistry, loading from profiles/, which profiles apply, validation.
"""

from __future__ import annotations

from fhir_server.resources.profiles.canonicals import (
    CLAIM_ALIASES,
    DEFAULT_PROFILES,
    DMP_AUDIT_EVENT,
    DMP_CONSENT,
    DMP_DOCUMENT_REFERENCE,
    DMP_PATIENT_INS,
    DMP_SUBMISSION_SET,
    PROFILE_BASE,
    PROFILES_DIR,
)
from fhir_server.resources.profiles.checks import matches_pattern
from fhir_server.resources.profiles.compiler import Profile
from fhir_server.resources.profiles.invariants import INVARIANTS
from fhir_server.resources.profiles.registry import ProfileRegistry, default_registry
from fhir_server.resources.profiles.value_sets import ValueSetExpansion

__all__ = [
    "CLAIM_ALIASES",
    "DEFAULT_PROFILES",
    "DMP_AUDIT_EVENT",
    "DMP_CONSENT",
    "DMP_DOCUMENT_REFERENCE",
    "DMP_PATIENT_INS",
    "DMP_SUBMISSION_SET",
    "INVARIANTS",
    "PROFILES_DIR",
    "PROFILE_BASE",
    "Profile",
    "ProfileRegistry",
    "ValueSetExpansion",
    "default_registry",
    "matches_pattern",
]
