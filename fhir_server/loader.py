"""`fhir-server load`: FHIR JSON files into the store, through the service like any request.

Accepts single resources (kept at their id when they have one: update-as-create), Bundles
(batch and transaction are processed as such; other Bundle types are loaded entry by
entry), and NDJSON (one resource per line). The operator's loader acts as the server itself
(the INTERNAL requester); everything still passes validation, indexing and versioning.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from fhir_server.access.requester import INTERNAL
from fhir_server.errors import FhirError


@dataclass
class LoadReport:
    files: int = 0
    stored: int = 0
    failed: int = 0


class Progress:
    """A one-line progress bar on stderr (a terminal), silent elsewhere unless forced."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total = max(total, 1)
        self.enabled = enabled
        self.done = 0
        self.started = time.monotonic()
        self._last = 0.0

    def advance(self, count: int = 1) -> None:
        self.done += count
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.2 or self.done >= self.total):
            self._last = now
            width = 30
            filled = int(width * min(self.done, self.total) / self.total)
            rate = self.done / max(now - self.started, 1e-9)
            sys.stderr.write(
                f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} ({rate:,.0f}/s)"
            )
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _files(paths: Iterable[str]) -> list[Path]:
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(sorted(p for p in path.rglob("*") if p.suffix in (".json", ".ndjson")))
        else:
            found.append(path)
    return found


def _documents(path: Path) -> Iterator[dict]:
    data = path.read_bytes()
    if path.suffix == ".ndjson":
        for line in data.splitlines():
            if line.strip():
                yield orjson.loads(line)
    else:
        yield orjson.loads(data)


def load_paths(runtime, paths: Iterable[str], *, progress: bool = True) -> LoadReport:
    files = _files(paths)
    report = LoadReport(files=len(files))
    bar = Progress(len(files), progress)
    for path in files:
        for document in _documents(path):
            stored, failed = load_document(runtime, document)
            report.stored += stored
            report.failed += failed
            if failed:
                print(f"\n{path}: {failed} resource(s) refused", file=sys.stderr)
        bar.advance()
    bar.close()
    return report


def load_document(runtime, document: dict) -> tuple[int, int]:
    """Store one JSON document; (stored, failed) counts."""
    service = runtime.service
    try:
        if document.get("resourceType") == "Bundle" and document.get("type") in (
            "batch",
            "transaction",
        ):
            _, responses = runtime.bundles.process(INTERNAL, document)
            failed = sum(1 for r in responses if not r.status.startswith("2"))
            return len(responses) - failed, failed
        if document.get("resourceType") == "Bundle":
            results = [
                load_document(runtime, entry["resource"])
                for entry in document.get("entry", [])
                if "resource" in entry
            ]
            return sum(r[0] for r in results), sum(r[1] for r in results)
        resource_type = document.get("resourceType", "")
        if document.get("id"):
            service.update(INTERNAL, resource_type, document["id"], document)
        else:
            service.create(INTERNAL, resource_type, document)
        return 1, 0
    except FhirError as exc:
        print(
            f"\n{document.get('resourceType')}/{document.get('id', '')}: {exc.message}",
            file=sys.stderr,
        )
        return 0, 1
