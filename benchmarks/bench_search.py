"""Search latency on a realistic DMP corpus (issue: FHIR search, "Speed").

    fhir-server bench search [--documents 100000] [--data-dir DIR]

Builds (or, with --data-dir holding a corpus from `python -m benchmarks.bulk`, reuses) a
SQLite store of N DocumentReferences, ~50 per patient plus a few patients with 600 each, and
their Patients, Consents, Communications and AuditEvents (benchmarks/datagen.py). Then times
the standard MHD ITI-67 queries in-process through `FhirService.search` (parse, store query,
`_include` resolution; not the HTTP layer nor the Bundle serialization) as the INTERNAL
requester, i.e. without access constraints: the gated comparison belongs to the access issue.

Each query runs `--repeats` times (default 300) over different patients after a warm-up;
p50/p95/p99 are per call. Targets: p95 <= 30 ms at 1M documents for patient-scoped queries,
page 25 within 1.5x of page 1, ingest >= 1,000 DocumentReferences/s.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from benchmarks.bulk import corpus, ingest_line, open_service
from benchmarks.datagen import CorpusPlan, nir, patient_id_of
from benchmarks.harness import percentile, table
from fhir_server.access.requester import INTERNAL
from fhir_server.paths import profiles_dir
from fhir_server.search.registry import SearchRegistry
from fhir_server.service.core import FhirService

INS = "urn:oid:1.2.250.1.213.1.4.8"
CLASS_SYSTEM = "urn:oid:1.2.250.1.213.1.1.4.1"
DEEP_PAGE = 25
PAGE_SIZE = 20


@dataclass(frozen=True)
class Timing:
    label: str
    p50: float
    p95: float
    p99: float
    results: float  # mean matches per call (page rows)
    included: float


def _time(call: Callable[[int], tuple[int, int]], repeats: int) -> tuple[list[float], float, float]:
    """Per-call milliseconds of call(i) for i in range(repeats), after a warm-up."""
    for i in range(min(20, repeats)):
        call(i)
    timings, rows, included = [], 0, 0
    for i in range(repeats):
        started = time.perf_counter()
        matched, extra = call(i)
        timings.append((time.perf_counter() - started) * 1000)
        rows += matched
        included += extra
    return timings, rows / repeats, included / repeats


def _timing(label: str, call: Callable[[int], tuple[int, int]], repeats: int) -> Timing:
    timings, rows, included = _time(call, repeats)
    return Timing(
        label,
        percentile(timings, 0.50),
        percentile(timings, 0.95),
        percentile(timings, 0.99),
        rows,
        included,
    )


def _search(service: FhirService, params: list[tuple[str, str]], cursor: str | None = None):
    return service.search(INTERNAL, "DocumentReference", params, cursor=cursor)


def _deep_cursors(service: FhirService, params: list[tuple[str, str]], page: int) -> str:
    """The cursor of page `page` (1-based), found by following next links from page 1."""
    cursor = None
    for _ in range(page - 1):
        cursor = _search(service, params, cursor).next_cursor
        if cursor is None:
            raise SystemExit(f"the paging query {params} has fewer than {page} pages")
    return cursor


def measure(service: FhirService, plan: CorpusPlan, repeats: int) -> list[Timing]:
    rng = random.Random(11)
    regular = [rng.randrange(plan.heavy, plan.patients) for _ in range(repeats)]
    ids = [patient_id_of(n) for n in regular]

    def search(params: list[tuple[str, str]]) -> tuple[int, int]:
        result = _search(service, params)
        return len(result.matches), len(result.included)

    rows = [
        _timing(
            "patient + status",
            lambda i: search([("patient", ids[i]), ("status", "current")]),
            repeats,
        ),
        _timing(
            "patient + type + date range",
            lambda i: search(
                [
                    ("patient", ids[i]),
                    ("type", "http://loinc.org|11488-4"),
                    ("date", "ge2018-01-01"),
                    ("date", "lt2023-01-01"),
                ]
            ),
            repeats,
        ),
        _timing(
            "patient.identifier + category",
            lambda i: search(
                [
                    ("patient.identifier", f"{INS}|{nir(regular[i])}"),
                    ("category", f"{CLASS_SYSTEM}|10"),
                ]
            ),
            repeats,
        ),
        _timing(
            "patient + status + `_include=DocumentReference:subject`",
            lambda i: search(
                [
                    ("patient", ids[i]),
                    ("status", "current"),
                    ("_include", "DocumentReference:subject"),
                ]
            ),
            repeats,
        ),
    ]
    heavy = [patient_id_of(n) for n in range(plan.heavy)]
    for sort in ((), (("_sort", "-date"),)):
        label = " `_sort=-date`" if sort else ""
        queries = [
            [("patient", h), ("status", "current"), *sort, ("_count", str(PAGE_SIZE))]
            for h in heavy
        ]
        deep = [_deep_cursors(service, q, DEEP_PAGE) for q in queries]

        def page(i: int, cursors: list | None, queries: list = queries) -> tuple[int, int]:
            k = i % len(queries)
            result = _search(service, queries[k], cursors[k] if cursors else None)
            return len(result.matches), 0

        rows.append(
            _timing(
                f"heavy patient{label}, page 1 (`_count=20`)",
                lambda i, page=page: page(i, None),
                repeats,
            )
        )
        rows.append(
            _timing(
                f"heavy patient{label}, page {DEEP_PAGE} (next cursor)",
                lambda i, page=page, deep=deep: page(i, deep),
                repeats,
            )
        )
    return rows


def report(timings: list[Timing], manifest: dict, documents: int) -> str:
    body = table(
        [
            (
                t.label,
                f"{t.p50:.2f}",
                f"{t.p95:.2f}",
                f"{t.p99:.2f}",
                f"{t.results:.1f}",
                f"{t.included:.1f}" if t.included else "",
            )
            for t in timings
        ],
        ("query (DocumentReference)", "p50 ms", "p95 ms", "p99 ms", "matches/page", "included"),
    )
    by_label = {t.label: t for t in timings}
    ratios = []
    for label in ("", " `_sort=-date`"):
        first = by_label[f"heavy patient{label}, page 1 (`_count=20`)"]
        deep = by_label[f"heavy patient{label}, page {DEEP_PAGE} (next cursor)"]
        ratios.append(f"{deep.p50 / first.p50:.2f}x{label or ' (id order)'}")
    return "\n".join(
        [
            f"{documents:,} DocumentReferences, SQLite, in-process `FhirService.search` as the"
            " INTERNAL requester (no access constraints); target p95 <= 30 ms at 1M",
            "",
            body,
            "",
            f"page {DEEP_PAGE} / page 1 (p50): {', '.join(ratios)} (target <= 1.5x)",
            ingest_line(manifest),
        ]
    )


def run(args: argparse.Namespace) -> str:
    registry = SearchRegistry.load(profiles_dir())
    repeats = getattr(args, "repeats", None) or 300
    with corpus(args.bench_data_dir, args.documents, registry, "fhir-bench-search-") as (
        data_dir,
        manifest,
    ):
        plan = CorpusPlan(**manifest["plan"])
        service = open_service(data_dir, registry)
        try:
            timings = measure(service, plan, repeats)
        finally:
            service.store.close()
        return report(timings, manifest, plan.documents)
