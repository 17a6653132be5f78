"""What of the searches' results an ITI-18 answer keeps: per resource (`QueryPlan.keep`, the
conditions FHIR search cannot say: AuthorPerson LIKE, service time bounds, sourceId,
contentType, the members' codes) and, over the whole answer, each query's `select`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ihe_xds.ebrim import Association
from ihe_xds.stored_query.fhir_search import code_token
from ihe_xds.stored_query.parameters import Code, StoredQuery
from ihe_xds.vocabulary import OBJECT_TYPE_STABLE


def like_matches(pattern: str, value: str) -> bool:
    """SQL LIKE semantics of AuthorPerson (% any run, _ one character), case-sensitive."""
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, flags=re.DOTALL) is not None


@dataclass(frozen=True, slots=True)
class Answer:
    """What an ITI-18 answer is written from, before ebRIM: `documents` the DocumentReferences
    answered as DocumentEntries (after `QueryPlan.keep`), `found` every DocumentReference the
    searches gave (matched or included), `submission_sets` the SubmissionSet Lists,
    `associations` those among them of the plan's `association_types` and `folders` the
    folder Lists (MHD Vol 3 4.5.1: XDSFolders)."""

    documents: list[dict]
    found: list[dict]
    submission_sets: list[dict]
    associations: list[Association]
    folders: list[dict] = field(default_factory=list)


def as_found(query: StoredQuery, answer: Answer) -> Answer:
    """The answer as the searches and `keep` left it."""
    return answer


def document_keep(query: StoredQuery) -> Callable[[dict], bool]:
    from ihe_xds.hl7v2 import fhir_to_xds_time

    authors = query.values("$XDSDocumentEntryAuthorPerson")
    start_to = query.one("$XDSDocumentEntryServiceStartTimeTo")
    stop_from = query.one("$XDSDocumentEntryServiceStopTimeFrom")
    start_from = query.one("$XDSDocumentEntryServiceStartTimeFrom")
    stop_to = query.one("$XDSDocumentEntryServiceStopTimeTo")
    object_types = query.values("$XDSDocumentEntryType")
    if not (authors or object_types or start_to or stop_from or start_from or stop_to):
        return lambda resource: True  # FHIR search said it all: spare the per-entry work

    def keep(resource: dict) -> bool:
        if object_types and OBJECT_TYPE_STABLE not in object_types:
            return False  # this registry holds stable entries only
        period = (resource.get("context") or {}).get("period") or {}
        start = fhir_to_xds_time(period["start"]) if period.get("start") else None
        stop = fhir_to_xds_time(period["end"]) if period.get("end") else None
        for bound, value, lower in (
            (start_from, start, True),
            (start_to, start, False),
            (stop_from, stop, True),
            (stop_to, stop, False),
        ):
            if bound is None:
                continue
            if value is None:
                return False
            width = min(len(bound), len(value))
            if lower and value[:width] < bound[:width]:
                return False
            if not lower and value[:width] >= bound[:width]:
                return False
        if authors:
            from ihe_xds.mapping import document_reference_to_ebrim

            entry = document_reference_to_ebrim(resource, patient_cx="", repository_unique_id="")
            persons = [a.person for a in entry.authors if a.person]
            if not any(like_matches(p, person) for p in authors for person in persons):
                return False
        return True

    return keep


def member_keep(query: StoredQuery) -> Callable[[dict], bool]:
    """GetSubmissionSetAndContents: which members the answer keeps. Its FormatCode and
    ConfidentialityCode filters were accepted and ignored (issue #19, point 4): each Slot is
    an OR-list, several Slots AND together, as in FindDocuments."""
    base = document_keep(query)
    wanted = [
        (
            element,
            [
                {code_token(code) for code in group if isinstance(code, Code)}
                for group in query.params.get(name) or []
            ],
        )
        for name, element in (
            ("$XDSDocumentEntryFormatCode", "format"),
            ("$XDSDocumentEntryConfidentialityCode", "securityLabel"),
        )
    ]
    if not any(groups for _, groups in wanted):
        return base

    def codes_of(resource: dict, element: str) -> set[str]:
        if element == "format":
            codings = [(c.get("format") or {}) for c in resource.get("content") or []]
        else:
            codings = [
                c
                for concept in resource.get("securityLabel") or []
                for c in concept.get("coding") or []
            ]
        return {f"{c.get('system')}|{c.get('code')}" for c in codings if isinstance(c, dict)}

    def keep(resource: dict) -> bool:
        if not base(resource):
            return False
        return all(
            codes_of(resource, element) & group for element, groups in wanted for group in groups
        )

    return keep


def submission_set_keep(query: StoredQuery) -> Callable[[dict], bool]:
    sources = query.values("$XDSSubmissionSetSourceId")
    authors = query.values("$XDSSubmissionSetAuthorPerson")
    content_types = query.values("$XDSSubmissionSetContentType")

    def keep(resource: dict) -> bool:
        from ihe_xds.mapping import list_to_ebrim

        submission_set = list_to_ebrim(resource)
        if sources and submission_set.source_id not in sources:
            return False
        if authors:
            persons = [a.person for a in submission_set.authors if a.person]
            if not any(like_matches(p, person) for p in authors for person in persons):
                return False
        if content_types:
            coded = submission_set.content_type_code
            if coded is None or not any(
                c.code == coded.code and c.scheme == coded.scheme for c in content_types
            ):
                return False
        return True

    return keep
