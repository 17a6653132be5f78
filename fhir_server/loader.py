"""`fhir-server load`: FHIR JSON files into the store, through the service like any request.

Accepts single resources (kept at their id when they have one: update-as-create), Bundles
(batch and transaction are processed as such; other Bundle types are loaded entry by
entry), and NDJSON (one resource per line). The operator's loader acts as the server itself
(the INTERNAL requester); everything still passes validation, indexing and versioning, and
the record check the REST door makes of every writer (R06: one record per resource).

Every file is read and parsed before anything is stored: a malformed one (truncated, a bad
NDJSON line mid-file, not UTF-8, or what the REST door refuses of any JSON body: too deep,
a repeated key, a null, a control character) loads nothing (`check_paths`). Each resource
the service refuses is named with its file and line; the others are loaded.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from fhir_server.access.constraints import compartment_of
from fhir_server.access.requester import INTERNAL
from fhir_server.errors import FhirError, error
from fhir_server.resources.input_limits import (
    check_json_body,
    check_json_characters,
    check_json_nulls,
)


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


class LoadError(Exception):
    """A path `load` cannot read as FHIR JSON; the message names the file (and the line of
    an NDJSON file, the entry of a Bundle) and the problem."""


# Byte order marks of the encodings FHIR JSON files are not in (RFC 8259: JSON exchanged
# between systems is UTF-8): named, rather than reported as invalid UTF-8 at character 0.
_FOREIGN_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)


def _files(paths: Iterable[str]) -> list[Path]:
    """The files named, a directory standing for its .json and .ndjson files. A path that
    names nothing is refused (LoadError): a typo must not load nothing and succeed."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(
                p for p in path.rglob("*") if p.suffix in (".json", ".ndjson") and p.is_file()
            )
            if not inside:  # a mistyped or empty export: "loaded 0 resources", exit 0
                raise LoadError(f"{path}: a directory with no .json or .ndjson file")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        elif path.exists():
            # A pipe or a device (/dev/stdin, /dev/zero): read once by the check, nothing is
            # left for the load, or never ends. A file is read twice (`check_paths`).
            raise LoadError(f"{path}: not a regular file (save the data to a file first)")
        else:
            raise LoadError(f"{path}: no such file or directory")
    return found


def _documents(path: Path) -> Iterator[tuple[str, dict]]:
    """(where, resource) for each JSON document of `path`: the file, or the file and the line
    of an NDJSON file. LoadError when it is no FHIR JSON a load can take."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    for bom, encoding in _FOREIGN_BOMS:
        if data.startswith(bom):
            raise LoadError(f"{path}: is {encoding}; FHIR JSON files are UTF-8")
    data = data.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte order mark says nothing more
    if path.suffix == ".ndjson":
        for number, line in enumerate(data.splitlines(), start=1):
            if line.strip():
                yield _parsed(f"{path}, line {number}", line)
    else:
        yield _parsed(str(path), data)


def _parsed(where: str, data: bytes) -> tuple[str, dict]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise LoadError(f"{where}: not JSON ({exc})") from None
    if not isinstance(document, dict):  # before the checks below, which walk objects
        raise LoadError(f"{where}: a FHIR resource is a JSON object, not {type(document).__name__}")
    try:
        # The checks the REST door makes of every JSON body before validation
        # (`rest.formats`): depth, one value per key, no null, no control character. A
        # loaded Patient whose name held U+0001, a repeated key or a null was stored as is.
        check_json_body(data, document)
        check_json_nulls(data, document)
        check_json_characters(data, document)
    except FhirError as exc:
        raise LoadError(f"{where}: {exc.message}") from None
    _check_shape(where, document)
    return where, document


def _check_shape(where: str, document: object) -> None:
    """Refuse what the service cannot even be handed: a document that is no JSON object with
    a resourceType and a string id, a Bundle whose entries or their resources are not."""
    if not isinstance(document, dict):
        raise LoadError(f"{where}: a FHIR resource is a JSON object, not {type(document).__name__}")
    if not isinstance(document.get("resourceType"), str):
        raise LoadError(f"{where}: resourceType: missing or not a string")
    if "id" in document and not isinstance(document["id"], str):
        raise LoadError(f"{where}: id: not a string")
    if document["resourceType"] != "Bundle":
        return
    entries = document.get("entry", [])
    if not isinstance(entries, list):
        raise LoadError(f"{where}: Bundle.entry: not a list")
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise LoadError(f"{where}: Bundle.entry[{index}]: not a JSON object")
        if "resource" in entry and document.get("type") not in ("batch", "transaction"):
            _check_shape(f"{where}, Bundle.entry[{index}].resource", entry["resource"])


def check_paths(paths: Iterable[str]) -> list[Path]:
    """The files of `paths`, each read and parsed once before anything is stored: a
    malformed file (truncated JSON, a bad NDJSON line mid-file, UTF-16...) refuses the whole
    load (LoadError naming it) rather than leave the store with the part before it."""
    files = _files(paths)
    for path in files:
        for _ in _documents(path):
            pass
    return files


def load_paths(runtime, paths: Iterable[str], *, progress: bool = True) -> LoadReport:
    """Load the files of `paths` (checked by `check_paths` first); each resource refused by
    the service is named with its file (and line) and counted in `failed`."""
    files = check_paths(paths)
    report = LoadReport(files=len(files))
    bar = Progress(len(files), progress)
    try:
        for path in files:
            for where, document in _documents(path):
                stored, failed = load_document(runtime, document, where)
                report.stored += stored
                report.failed += failed
                if failed:
                    print(f"\n{path}: {failed} resource(s) refused", file=sys.stderr)
            bar.advance()
    except LoadError as exc:  # a file changed since `check_paths` read it
        raise LoadError(
            f"{exc} (the file changed while it was loaded; {report.stored} resources were "
            "loaded before it)"
        ) from None
    bar.close()
    return report


def load_document(runtime, document: dict, where: str = "") -> tuple[int, int]:
    """Store one JSON document; (stored, failed) counts. `where`: the file (and line) it
    comes from, named with each refusal."""
    service = runtime.service
    try:
        if document.get("resourceType") == "Bundle" and document.get("type") in (
            "batch",
            "transaction",
        ):
            entries = document.get("entry", [])
            try:
                for entry in entries:
                    if isinstance(entry.get("resource"), dict):
                        _check_one_record(entry["resource"])
            except FhirError as exc:
                print(
                    f"\n{where}: {exc.message}; none of the Bundle's entries loaded",
                    file=sys.stderr,
                )
                return 0, max(len(entries), 1)
            _, responses = runtime.bundles.process(INTERNAL, document)
            failed = sum(1 for r in responses if not r.status.startswith("2"))
            return len(responses) - failed, failed
        if document.get("resourceType") == "Bundle":
            results = [
                load_document(runtime, entry["resource"], f"{where}, Bundle.entry[{index}]")
                for index, entry in enumerate(document.get("entry", []))
                if "resource" in entry
            ]
            return sum(r[0] for r in results), sum(r[1] for r in results)
        resource_type = document.get("resourceType", "")
        _check_one_record(document)
        if document.get("id"):
            service.update(INTERNAL, resource_type, document["id"], document)
        else:
            service.create(INTERNAL, resource_type, document)
        return 1, 0
    except FhirError as exc:
        named = f"{document.get('resourceType')}/{document.get('id', '')}"
        print(f"\n{where + ': ' if where else ''}{named}: {exc.message}", file=sys.stderr)
        return 0, 1


# The INTERNAL requester passes the access gate, and with it the check of a write's record
# the REST door makes of every requester (`WriteGate.authorize_write`): a loaded document
# naming two Patients was stored in both compartments, judged on whichever record a reader
# came by. It is made here, in the same words. Moving a resource to another record stays
# the loader's (README: the server's own writes keep only the one-content-per-uniqueId rule
# of a document's update; the record cache follows such moves).


def _check_one_record(resource: dict) -> None:
    """R06: a resource belongs to one patient's record (a Patient to its own). An AuditEvent
    is the server's, no door's, and names every patient an access touched (R16)."""
    if resource.get("resourceType") in ("Patient", "AuditEvent"):
        return
    patients = compartment_of(resource)
    if len(patients) > 1:
        raise error(
            422,
            "processing",
            f"a {resource.get('resourceType')} belongs to one patient's record; this one "
            f"names {len(patients)} Patients",
            details_code="R06",
        )
