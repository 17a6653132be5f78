"""Bulk loading of a generated DMP corpus through the service's normal write path.

Each resource is validated (`FhirService.validate_for_write`: model, profiles, INS) and
written with `FhirService.create_in` (index extraction, versioning, history) as the INTERNAL
requester; what is batched is only the store transaction: `batch` resources per commit, so a
durable SQLite commit (synchronous=FULL) is paid once per batch instead of once per resource.
Into an empty store, the secondary indexes are built once after the load (`SqliteStore.
bulk_load`) instead of row by row; the index rows themselves are written by each resource's
write as usual, and the rebuild is inside the timed load.

    python -m benchmarks.bulk --data-dir /work/bench-1m --documents 1000000

writes the store to <data-dir>/fhir.sqlite3 (where `fhir-server serve --data-dir` finds it)
and a manifest (`bench-manifest.json`: the plan and the measured ingest rate) that
`fhir-server bench search --data-dir` reuses.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import shutil
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

from benchmarks.datagen import CorpusPlan, dmp_corpus, patient_documents, patient_resources
from fhir_server.access.requester import INTERNAL
from fhir_server.loader import Progress
from fhir_server.paths import profiles_dir
from fhir_server.resources.model import ELEMENT_MEMO
from fhir_server.search.extract import PreparedEntries, extract, prepare
from fhir_server.search.registry import SearchRegistry
from fhir_server.service.core import FhirService
from fhir_server.service.factory import build_service
from fhir_server.service.prepared import PreparedWrite
from fhir_server.store.factory import open_sqlite
from fhir_server.store.sqlite import SqliteStore

MANIFEST = "bench-manifest.json"
DATABASE = "fhir.sqlite3"


@dataclass
class LoadStats:
    seconds: float = 0.0
    counts: Counter = field(default_factory=Counter)
    indexes_deferred: bool = False  # the store's secondary indexes were built after the load

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def documents_per_second(self) -> float:
        return self.counts["DocumentReference"] / self.seconds if self.seconds else 0.0

    @property
    def resources_per_second(self) -> float:
        return self.total / self.seconds if self.seconds else 0.0


def _batches(items: Iterable, size: int) -> Iterator[list]:
    batch: list = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


_worker_service: FhirService | None = None


# Validated elements the workers remember (resources.model.ElementMemo): the corpus's 3,000
# professionals recur as contained authors, more than the server's default keeps; about
# 1 KB each (2 KB accounted), so some 40 MB per worker, within the byte bound set here.
WORKER_MEMO_CAPACITY = 16_384
WORKER_MEMO_BYTES = 96 * 1024 * 1024


def _start_validator(data_dir: str) -> None:
    """Each worker process holds its own service (model, profiles, INS checks)."""
    global _worker_service
    registry = SearchRegistry.load(profiles_dir())
    _worker_service = build_service(SqliteStore(":memory:"), registry, data_dir=Path(data_dir))
    # A validator writes nothing: its in-memory store's audit log goes at once, with the
    # temporary directory it holds, which a worker ended by `Pool.terminate` (SIGTERM, no
    # exit handlers) would leave behind.
    _worker_service.store.audit_log.close()
    ELEMENT_MEMO.capacity = WORKER_MEMO_CAPACITY
    ELEMENT_MEMO.max_bytes = WORKER_MEMO_BYTES
    _few_collections()


# The cyclic garbage collector, at its default threshold (700 allocations), runs every few
# resources and walks the models the memo keeps: 14 % of a worker's time. Loading creates
# few cycles, so it runs every GC_THRESHOLD allocations, after what exists at start-up is
# moved out of its reach (gc.freeze).
GC_THRESHOLD = 100_000


def _few_collections() -> None:
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, 20, 20)


def _warm_up(service: FhirService, plan: CorpusPlan) -> None:
    """Validate and prepare one regular patient's resources here, before the workers are
    forked: the fhir.resources models they need are then imported and built once, in this
    process, instead of once per worker."""
    sample = CorpusPlan(documents=max(plan.per_patient, 1), heavy=0, seed=plan.seed + 1)
    _made(service, sample, range(min(2, sample.patients)))


def _generated(plan: CorpusPlan, patients: range) -> list[tuple[dict, PreparedEntries]]:
    """The resources of a range of patients, generated, validated and their index entries
    prepared (`extract.prepare`) in a worker process."""
    return _made(_worker_service, plan, patients)


def _made(
    service: FhirService, plan: CorpusPlan, patients: range
) -> list[tuple[dict, PreparedEntries]]:
    made = []
    for n in patients:
        for resource in patient_resources(plan, n):
            service.validate_for_write(resource, resource["resourceType"])
            made.append((resource, prepare(resource, service.registry)))
    return made


def _patient_ranges(plan: CorpusPlan, batch: int) -> Iterator[range]:
    """Consecutive ranges of patients holding about `batch` resources each (a heavy patient
    is a range of its own), so that the workers' tasks are of even size."""
    extra = 1 + plan.communication_rate + plan.audit_rate
    start, size = 0, 0.0
    for n in range(plan.patients):
        size += 2 + patient_documents(plan, n) * extra
        if size >= batch:
            yield range(start, n + 1)
            start, size = n + 1, 0.0
    if start < plan.patients:
        yield range(start, plan.patients)


def bulk_load(
    service: FhirService,
    plan: CorpusPlan,
    *,
    batch: int = 500,
    log_every: int = 50_000,
    validators: int = 2,
) -> LoadStats:
    """Write the corpus of `plan` through the service, `batch` resources per transaction.

    Generating the corpus, validating it (`validate_for_write`: model, profiles, INS) and
    extracting its index entries need nothing from the store, so `validators` worker
    processes do them, a range of patients each (`datagen.patient_resources`), ahead of the
    writer; the writer does what `create_in` does for every write (versioning, history,
    index rows, completing the prepared entries with `_lastUpdated`), in corpus order. With
    `validators=0` everything runs in this process. A progress bar on a
    terminal; otherwise one line per `log_every` documents on stderr. Raises the first
    FhirError (a generated resource that fails validation is a bug).
    """
    stats = LoadStats()
    thresholds = gc.get_threshold()
    _few_collections()
    bar = Progress(plan.documents, enabled=sys.stderr.isatty())
    next_log = log_every
    started = time.perf_counter()
    pool = None
    ranges = _patient_ranges(plan, batch)
    if validators:
        _warm_up(service, plan)
        context = multiprocessing.get_context("fork")
        pool = context.Pool(validators, _start_validator, (str(Path(service.store.path).parent),))
        chunks = _bounded(pool, plan, ranges, in_flight=2 * validators)
    else:
        chunks = (_made(service, plan, patients) for patients in ranges)
    try:
        with _indexes_after(service) as stats.indexes_deferred:
            for pairs in _batches((pair for made in chunks for pair in made), batch):
                chunk = [resource for resource, _ in pairs]
                with service._transaction() as tx:
                    for resource, prepared in pairs:
                        service.create_in(
                            tx,
                            INTERNAL,
                            resource,
                            resource_id=resource["id"],
                            prepared=PreparedWrite(prepared, None),
                        )
                documents = sum(1 for r in chunk if r["resourceType"] == "DocumentReference")
                stats.counts.update(r["resourceType"] for r in chunk)
                bar.advance(documents)
                if not bar.enabled and stats.counts["DocumentReference"] >= next_log:
                    elapsed = time.perf_counter() - started
                    done = stats.counts["DocumentReference"]
                    print(
                        f"{time.strftime('%H:%M:%S')} {done}/{plan.documents} DocumentReferences,"
                        f" {stats.total} resources, {done / elapsed:,.0f} documents/s",
                        file=sys.stderr,
                        flush=True,
                    )
                    next_log += log_every
    finally:
        if pool is not None:
            pool.terminate()
        gc.set_threshold(*thresholds)
        gc.unfreeze()
    stats.seconds = time.perf_counter() - started
    bar.close()
    return stats


def _indexes_after(service: FhirService) -> AbstractContextManager[bool]:
    """The store's bulk-load mode when it has one (`SqliteStore.bulk_load`: an empty store's
    secondary indexes built after the load rather than row by row)."""
    bulk = getattr(service.store, "bulk_load", None)
    return bulk() if bulk is not None else nullcontext(False)


def _bounded(pool, plan: CorpusPlan, ranges: Iterator[range], in_flight: int) -> Iterator[list]:
    """Generated, validated chunks in order, with at most `in_flight` submitted ahead of the
    writer (Pool.imap would queue every range at once, and their results pile up in memory)."""
    pending: deque = deque()
    for patients in ranges:
        pending.append(pool.apply_async(_generated, (plan, patients)))
        if len(pending) >= in_flight:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def extraction_cost_us(registry: SearchRegistry, plan: CorpusPlan, sample: int = 2000) -> float:
    """Mean extract() time per generated DocumentReference, in microseconds."""
    small = CorpusPlan(documents=sample, seed=plan.seed + 1)
    documents = [r for r in dmp_corpus(small) if r["resourceType"] == "DocumentReference"]
    for document in documents[:50]:
        extract(document, registry)  # warm up
    started = time.perf_counter()
    for document in documents:
        extract(document, registry)
    return (time.perf_counter() - started) / len(documents) * 1e6


def open_service(data_dir: Path, registry: SearchRegistry) -> FhirService:
    """The service over the corpus, its store opened as the server opens it; the audit facts
    of a corpus loaded before them are derived first, so that no measurement pays for it."""
    store = open_sqlite(data_dir / DATABASE, registry)
    store.backfill_facts()
    return build_service(store, registry, data_dir=data_dir)


@contextmanager
def corpus(
    data_dir: str | None, documents: int, registry: SearchRegistry, prefix: str
) -> Iterator[tuple[Path, dict]]:
    """(directory, manifest) of a benchmark corpus: `data_dir`'s (loaded there first when it
    holds none), or a temporary one of `documents` DocumentReferences, removed afterwards."""
    temporary = None if data_dir else Path(tempfile.mkdtemp(prefix=prefix))
    directory = Path(data_dir) if data_dir else temporary
    try:
        manifest = read_manifest(directory)
        if manifest is None:
            if (directory / DATABASE).exists():
                raise SystemExit(f"{directory} holds a database but no bench manifest")
            manifest = load_corpus(directory, CorpusPlan(documents=documents), registry)
        yield directory, manifest
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)


def read_manifest(data_dir: Path) -> dict | None:
    path = data_dir / MANIFEST
    return json.loads(path.read_text()) if path.exists() else None


def load_corpus(
    data_dir: Path,
    plan: CorpusPlan,
    registry: SearchRegistry,
    batch: int = 500,
    validators: int = 2,
) -> dict:
    """Generate and load `plan` into `data_dir` (which must not hold a corpus yet); the manifest."""
    data_dir.mkdir(parents=True, exist_ok=True)
    if (data_dir / DATABASE).exists():
        raise SystemExit(f"{data_dir / DATABASE} exists: remove it or reuse it with --data-dir")
    service = open_service(data_dir, registry)
    try:
        stats = bulk_load(service, plan, batch=batch, validators=validators)
    finally:
        service.store.close()
    manifest = {
        "plan": asdict(plan),
        "counts": dict(stats.counts),
        "seconds": round(stats.seconds, 1),
        "documents_per_second": round(stats.documents_per_second, 1),
        "resources_per_second": round(stats.resources_per_second, 1),
        "batch": batch,
        "validators": validators,
        "indexes_deferred": stats.indexes_deferred,
        "extract_us": round(extraction_cost_us(registry, plan), 1),
    }
    (data_dir / MANIFEST).write_text(json.dumps(manifest, indent=2))
    return manifest


def ingest_line(manifest: dict) -> str:
    counts = manifest["counts"]
    return (
        f"ingest: **{manifest['documents_per_second']:,.0f} DocumentReferences/s**"
        f" ({manifest['resources_per_second']:,.0f} resources/s; {counts.get('DocumentReference', 0):,}"
        f" DocumentReferences + {counts.get('Patient', 0):,} Patients, {counts.get('Consent', 0):,} Consents,"
        f" {counts.get('Communication', 0):,} Communications, {counts.get('AuditEvent', 0):,} AuditEvents"
        f" in {manifest['seconds']:,.0f} s, {manifest['batch']} resources per transaction, validation"
        f" + extraction + versioning{_index_note(manifest)}; target >= 1,000/s); index extraction"
        f" {manifest['extract_us']:,.0f} µs per DocumentReference"
    )


def _index_note(manifest: dict) -> str:
    if manifest.get("indexes_deferred"):
        return ", secondary indexes built after the load (empty store)"
    return ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data-dir", required=True, type=Path)
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--validators", type=int, default=2, help="validation processes")
    args = parser.parse_args()
    registry = SearchRegistry.load(profiles_dir())
    manifest = load_corpus(
        args.data_dir, CorpusPlan(documents=args.documents), registry, args.batch, args.validators
    )
    print(ingest_line(manifest), flush=True)


if __name__ == "__main__":
    main()
