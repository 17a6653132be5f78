"""What the access gate costs on a search (issue: access rules, "Speed").

    fhir-server bench access [--data-dir DIR] [--documents N] [--repeats 300]

The patient-scoped MHD ITI-67 queries of bench_search, each run twice in the same process,
on the same store, interleaved call by call: once as the INTERNAL requester (no access
constraints: the store alone) and once through the gate as a practitioner the patient
authorized (R10: a Consent permit naming them) or, for the few heavy patients nobody
authorized, a Samu regulator (R12; the same constraints). The gated call gathers the
record's facts (Patient, Consents, RelatedPersons), pushes R13/R14 constraints into the
query and records a BALP AuditEvent. Targets: gated p50 within 1.2x of the ungated one
without the audit, within 2x with it (issue #21).

Two gated figures are given: with the audit sink disabled (`AuditTrail.enabled = False`:
the cost of deciding and constraining), and with AuditEvents durably committed. The steady
rows open records whose day's first-access notification (R17) is already written; a row of
its own measures a practitioner's first access of the day in a record, which writes it. The
audited run writes its events to a scratch SQLite store in a temporary directory, so that a
shared corpus (`--data-dir /work/bench-100k`) is never changed by the benchmark; the commit
cost is the same kind (one synchronous SQLite transaction per read, grouped when
concurrent) though on a small database file.

Token validation is per request too; its cost is measured as in bench_token.py (local
RS256 key) and added to the table as a line of its own.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import orjson

from benchmarks.bench_search import CLASS_SYSTEM, DEEP_PAGE, INS, PAGE_SIZE
from benchmarks.bench_token import first_use_us, per_call_us
from benchmarks.bulk import DATABASE, corpus, open_service
from benchmarks.datagen import CorpusPlan, nir, patient_id_of
from benchmarks.harness import percentile, table
from fhir_server.access.requester import INTERNAL, AccessMode, ActorKind, Requester
from fhir_server.auth.keys import load_or_create_signing_key
from fhir_server.auth.requester import requester_from_claims
from fhir_server.auth.tokens import AuthSettings, TokenIssuer, TokenValidator
from fhir_server.paths import profiles_dir
from fhir_server.search.registry import SearchRegistry
from fhir_server.service.audit_trail import AuditTrail
from fhir_server.service.core import FhirService
from fhir_server.store.factory import with_audit_log
from fhir_server.store.sqlite import SqliteStore
from fhir_server.terminology import SYSTEM_IDNAT_PS

TARGET_RATIO = 1.2  # the gate without its audit (access rules issue)
AUDITED_TARGET_RATIO = 2.0  # the gate with its AuditEvent committed (issue #21)
REGULATOR = "810000999999"
Params = list[tuple[str, str]]


@dataclass(frozen=True)
class Row:
    label: str
    internal: list[float]
    gated: list[float]
    internal_rows: float
    gated_rows: float

    def p(self, which: str, fraction: float) -> float:
        return percentile(getattr(self, which), fraction)

    @property
    def ratio(self) -> float:
        return self.p("gated", 0.5) / self.p("internal", 0.5)


def practitioner(idnat: str, mode: AccessMode = AccessMode.NORMAL) -> Requester:
    return Requester(
        kind=ActorKind.PRACTITIONER,
        subject_id=idnat,
        display_name="Dr Bench",
        scopes=("user/*.cruds",),
        profession="10",
        organization_id="1000000001",
        access_mode=mode,
        access_reason=None,
    )


def authorized_practitioners(service: FhirService) -> dict[str, str]:
    """patient id -> IdNat_PS of a practitioner their active Consent permits and none blocks."""
    found: dict[str, str] = {}
    cursor = None
    while True:
        result = service.search(INTERNAL, "Consent", [("_count", "1000")], cursor=cursor)
        for _, _, body, _ in result.matches:
            consent = orjson.loads(body)
            if consent.get("status") != "active":
                continue
            nested = (consent.get("provision") or {}).get("provision") or []
            named = {
                kind: {
                    ((a.get("reference") or {}).get("identifier") or {}).get("value")
                    for p in nested
                    if p.get("type") == kind
                    for a in p.get("actor") or []
                    if ((a.get("reference") or {}).get("identifier") or {}).get("system")
                    == SYSTEM_IDNAT_PS
                }
                for kind in ("permit", "deny")
            }
            permitted = sorted(named["permit"] - named["deny"] - {None})
            patient = (consent.get("patient") or {}).get("reference", "").removeprefix("Patient/")
            if permitted and patient:
                found[patient] = permitted[0]
        cursor = result.next_cursor
        if cursor is None:
            return found


def _interleaved(
    label: str,
    internal: Callable[[int], int],
    gated: Callable[[int], int],
    repeats: int,
    warm_up: bool = True,
) -> Row:
    if warm_up:
        for i in range(min(20, repeats)):
            internal(i)
            gated(i)
    times: dict[str, list[float]] = {"internal": [], "gated": []}
    rows = {"internal": 0, "gated": 0}
    for i in range(repeats):
        for name, call in (("internal", internal), ("gated", gated)):
            started = time.perf_counter()
            rows[name] += call(i)
            times[name].append((time.perf_counter() - started) * 1000)
    return Row(
        label,
        times["internal"],
        times["gated"],
        rows["internal"] / repeats,
        rows["gated"] / repeats,
    )


def _page_cursor(service: FhirService, who: Requester, params: Params, page: int) -> str:
    cursor = None
    for _ in range(page - 1):
        cursor = service.search(who, "DocumentReference", params, cursor=cursor).next_cursor
        if cursor is None:
            raise SystemExit(f"{params} has fewer than {page} pages for {who.subject_id}")
    return cursor


def measure(service: FhirService, plan: CorpusPlan, repeats: int) -> list[Row]:
    permits = authorized_practitioners(service)
    regular = [n for n in range(plan.heavy, plan.patients) if patient_id_of(n) in permits]
    if not regular:
        raise SystemExit("no patient of the corpus has a Consent permit to measure with")
    rng = random.Random(11)
    chosen = [rng.choice(regular) for _ in range(repeats)]
    ids = [patient_id_of(n) for n in chosen]
    doctors = [practitioner(permits[p]) for p in ids]

    def pair(params_of: Callable[[int], Params]) -> tuple[Callable, Callable]:
        def internal(i: int) -> int:
            return len(service.search(INTERNAL, "DocumentReference", params_of(i)).matches)

        def gated(i: int) -> int:
            return len(service.search(doctors[i], "DocumentReference", params_of(i)).matches)

        return internal, gated

    queries: list[tuple[str, Callable[[int], Params]]] = [
        ("patient + status", lambda i: [("patient", ids[i]), ("status", "current")]),
        (
            "patient + type + date range",
            lambda i: [
                ("patient", ids[i]),
                ("type", "http://loinc.org|11488-4"),
                ("date", "ge2018-01-01"),
                ("date", "lt2023-01-01"),
            ],
        ),
        (
            "patient.identifier + category",
            lambda i: [
                ("patient.identifier", f"{INS}|{nir(chosen[i])}"),
                ("category", f"{CLASS_SYSTEM}|10"),
            ],
        ),
        (
            "patient + status + `_include=DocumentReference:subject`",
            lambda i: [
                ("patient", ids[i]),
                ("status", "current"),
                ("_include", "DocumentReference:subject"),
            ],
        ),
    ]
    heavy = [patient_id_of(n) for n in range(plan.heavy)]
    # Steady state: each record's facts are cached, as after a practitioner's first request
    # in it (their first-load cost is measured apart: record_facts_ms).
    for patient in {*ids, *heavy}:
        service.gate.record(patient)
    # A practitioner's first access of the day in a record also writes the patient's R17
    # notification (a resource-store commit): made here for the steady rows, and measured
    # apart, over records none of the rows opens (`first_access_row`).
    for i, patient in enumerate(ids):
        service.search(doctors[i], "DocumentReference", [("patient", patient), ("_count", "1")])
    rows = [_interleaved(label, *pair(params), repeats) for label, params in queries]
    first_access = first_access_row(service, permits, regular, set(chosen), repeats)
    if first_access is not None:
        rows.append(first_access)

    heavy_who = [
        practitioner(permits[h]) if h in permits else practitioner(REGULATOR, AccessMode.CENTRE_15)
        for h in heavy
    ]
    for sort in ((), (("_sort", "-date"),)):
        label = " `_sort=-date`" if sort else ""
        queries_h = [
            [("patient", h), ("status", "current"), *sort, ("_count", str(PAGE_SIZE))]
            for h in heavy
        ]
        deep_internal = [_page_cursor(service, INTERNAL, q, DEEP_PAGE) for q in queries_h]
        deep_gated = [
            _page_cursor(service, who, q, DEEP_PAGE)
            for who, q in zip(heavy_who, queries_h, strict=True)
        ]

        def paged(who_of, cursors, queries_h=queries_h):
            def call(i: int) -> int:
                k = i % len(queries_h)
                cursor = cursors[k] if cursors else None
                return len(
                    service.search(
                        who_of(k), "DocumentReference", queries_h[k], cursor=cursor
                    ).matches
                )

            return call

        rows.append(
            _interleaved(
                f"heavy patient{label}, page 1 (`_count=20`)",
                paged(lambda k: INTERNAL, None),
                paged(lambda k: heavy_who[k], None),
                repeats,
            )
        )
        rows.append(
            _interleaved(
                f"heavy patient{label}, page {DEEP_PAGE} (next cursor)",
                paged(lambda k: INTERNAL, deep_internal),
                paged(lambda k: heavy_who[k], deep_gated),
                repeats,
            )
        )
    return rows


def first_access_row(
    service: FhirService,
    permits: dict[str, str],
    regular: list[int],
    opened: set[int],
    repeats: int,
) -> Row:
    """ "patient + status" by a practitioner opening each record for the first time today:
    with the audit, the R17 notification is written too (its own durable commit). The
    records' facts are cached, as in the steady rows; no warm-up call, which would be the
    day's first access."""
    rng = random.Random(29)
    unopened = [n for n in regular if n not in opened]
    if not unopened:  # a small corpus: every authorized record is opened by the steady rows
        return None
    repeats = min(repeats, len(unopened))
    fresh = [patient_id_of(n) for n in rng.sample(unopened, repeats)]
    for patient in fresh:
        service.gate.record(patient)
    doctors = [practitioner(permits[p]) for p in fresh]

    def query(i: int) -> Params:
        return [("patient", fresh[i]), ("status", "current")]

    return _interleaved(
        "patient + status, the practitioner's first access of the day (R17 notification)",
        lambda i: len(service.search(INTERNAL, "DocumentReference", query(i)).matches),
        lambda i: len(service.search(doctors[i], "DocumentReference", query(i)).matches),
        repeats,
        warm_up=False,
    )


def record_facts_ms(service: FhirService, plan: CorpusPlan, sample: int = 200) -> list[float]:
    """Loading one record's facts (Patient, Consents, RelatedPersons): the extra cost of a
    practitioner's first request in a record, or of the first one after the record changed."""
    rng = random.Random(5)
    timings = []
    for n in rng.sample(range(plan.patients), min(sample, plan.patients)):
        started = time.perf_counter()
        service.gate.facts.load_record(patient_id_of(n))
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def token_cost_us(n: int = 2000) -> tuple[float, float]:
    """Validation of a local RS256 token (bench_token's figure) and claims -> Requester."""
    with tempfile.TemporaryDirectory() as tmp:
        settings = AuthSettings(data_dir=Path(tmp))
        key = load_or_create_signing_key(tmp)
        validator = TokenValidator.from_settings(settings, local_key=key)
        issuer = TokenIssuer(key, settings.local_issuer, settings.effective_audience)
        bearer = issuer.issue(
            subject="810000000001",
            scopes="user/*.cruds",
            extensions={
                "ihe_iua": {
                    "national_provider_identifier": "810000000001",
                    "subject_role": [{"system": "urn:oid:1.2.250.1.71.1.2.7", "code": "10"}],
                }
            },
        )
        claims = validator.validate(bearer)
        return first_use_us(validator, bearer, n), per_call_us(
            lambda: requester_from_claims(claims), n
        )


def report(
    sections: list[tuple[str, list[Row], float]],
    documents: int,
    token_us: tuple[float, float],
    record_ms: list[float],
) -> str:
    lines = [
        f"{documents:,} DocumentReferences, SQLite, in-process `FhirService.search`; each query"
        " as the INTERNAL requester (no constraints) and through the gate as an authorized"
        " practitioner, interleaved, same store; target gated p50 <= 1.2x",
        "",
    ]
    for title, rows, target in sections:
        body = table(
            [
                (
                    r.label,
                    f"{r.p('internal', 0.5):.2f}",
                    f"{r.p('internal', 0.95):.2f}",
                    f"{r.p('gated', 0.5):.2f}",
                    f"{r.p('gated', 0.95):.2f}",
                    f"**{r.ratio:.2f}x**",
                    f"{r.p('gated', 0.95) / r.p('internal', 0.95):.2f}x",
                    f"{r.internal_rows:.1f} / {r.gated_rows:.1f}",
                )
                for r in rows
            ],
            (
                "query (DocumentReference)",
                "store p50 ms",
                "store p95 ms",
                "gated p50 ms",
                "gated p95 ms",
                "p50 ratio",
                "p95 ratio",
                "matches store / gated",
            ),
        )
        worst = max(r.ratio for r in rows)
        verdict = "meets" if worst <= target else "misses"
        lines += [
            f"### {title}",
            "",
            body,
            "",
            f"worst p50 ratio {worst:.2f}x: {verdict} the {target:.1f}x target",
            "",
        ]
    lines.append(
        "gated rows: every record's facts already cached (steady state); loading them, on a"
        " practitioner's first request in a record or after it changed, adds"
        f" p50 {percentile(record_ms, 0.5):.2f} ms / p95 {percentile(record_ms, 0.95):.2f} ms"
        " once"
    )
    lines.append("")
    validate_us, requester_us = token_us
    lines.append(
        f"token per request (bench_token.py method, local RS256): validation {validate_us:.0f} µs"
        " on a token's first use (signature verified; later requests hit the verified-token"
        f" cache) + claims -> Requester {requester_us:.1f} µs"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> str:
    registry = SearchRegistry.load(profiles_dir())
    repeats = getattr(args, "repeats", None) or 300
    scratch = Path(tempfile.mkdtemp(prefix="fhir-bench-access-audit-"))
    try:
        with corpus(args.bench_data_dir, args.documents, registry, "fhir-bench-access-") as (
            data_dir,
            manifest,
        ):
            return _run_on(data_dir, manifest, registry, repeats, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _run_on(
    data_dir: Path, manifest: dict, registry: SearchRegistry, repeats: int, scratch: Path
) -> str:
    """Both measures on the corpus of `data_dir`; AuditEvents go to a store in `scratch`."""
    plan = CorpusPlan(**manifest["plan"])
    service = open_service(data_dir, registry)
    audit_store = with_audit_log(SqliteStore(scratch / DATABASE), registry)
    try:
        gate = service.gate
        shared_audit = gate.audit
        shared_audit.enabled = False  # never write into the measured corpus
        sections = [
            (
                "gate without the audit sink (decide + constrain)",
                measure(service, plan, repeats),
                TARGET_RATIO,
            )
        ]
        record_ms = record_facts_ms(service, plan)
        gate.audit = AuditTrail(audit_store, registry, shared_audit.base_url, shared_audit.clock)
        sections.append(
            (
                "gate with AuditEvents committed (scratch audit store)",
                measure(service, plan, repeats),
                AUDITED_TARGET_RATIO,
            )
        )
        gate.audit = shared_audit
    finally:
        service.store.close()
        audit_store.close()
    return report(sections, plan.documents, token_cost_us(), record_ms)
