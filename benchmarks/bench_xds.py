"""XDS.b face benchmarks (issue 6, "Speed"): ITI-41 deposits/s, ITI-18 p95, parsing overhead.

    fhir-server bench xds [--seconds 10] [--workers 2] [--threads 4] [--data-dir DIR]

1. ITI-41 single-document deposits per second (MTOM, a 20 KB CDA and a 1 MB PDF), through
   the server's app under gunicorn with `fhir-server serve`'s settings
   (`benchmarks.wsgi:app`) on loopback, 8 concurrent keep-alive connections shared between
   the workers (`benchmarks.share_worker`), auditing on (every deposit stores its ITI-41 AuditEvent), into a
   fresh SQLite data dir. The 20 KB deposits are sent by wrk for `--seconds`, each a
   different ITI-41 built beforehand (`deposit_requests.lua`); each must be answered with
   success and be found stored. The 1 MB ones (a few dozen) by Python clients. Target:
   >= 100 deposits/s for 20 KB.
2. ITI-18 FindDocuments latency (single client, sequential, LeafClass and ObjectRef) on the
   corpus of `--data-dir` (a `python -m benchmarks.bulk` data dir: Patients and
   DocumentReferences, see bench_search.py), copied first because every ITI-18 writes
   AuditEvents; without `--data-dir`, on the documents of step 1 only. The professional's
   VIHF is in bris de glace mode (with a reason) since the corpus names no médecin traitant:
   records whose Consent opposes it answer LocalPolicyRestrictionError and are counted apart.
   Target: p95 <= 50 ms at 1M documents.
3. Parsing cost of an ITI-41 in-process: mtom.parse_http_body + soap.read_envelope +
   ebrim.parse_submission against a bare read of the same message, same run: for an inline
   (plain SOAP) body, lxml.etree.fromstring of the envelope; for MTOM, that plus the MIME
   framing any reader must do (one bytes.find of the delimiter that ends each part, one
   slice per part), see _bare_read. Target: <= 3x. The ratio to the envelope's lxml parse
   alone is printed too: for MTOM it grows with the document, whatever the parser, since
   the document lies outside the envelope but must be scanned for the delimiter (RFC 2046)
   and handed over as bytes; at 1 MB that scan and that copy alone cost about as much as
   the envelope's parse.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import json
import os
import random
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from email.message import Message
from pathlib import Path

from lxml import etree

from benchmarks.datagen import CorpusPlan, make_patient, nir
from benchmarks.harness import (
    percentile,
    request,
    running_server,
    table,
    temporary_data_dir,
    wrk,
)
from benchmarks.tokens import token
from fhir_server.auth.vihf import WSSE, load_or_create_structure_credential, mint_vihf
from fhir_server.config import load_settings
from fhir_server.rest.app import auth_settings
from ihe_xds import vocabulary as v
from ihe_xds.ebrim import parse_submission
from ihe_xds.mtom import Attachment, build_mtom_response, parse_http_body
from ihe_xds.soap import read_envelope
from tests.xds_builders import build_iti41, find_documents_request

INS_OID = "1.2.250.1.213.1.4.8"
PRACTITIONER = "810009999999"  # in no corpus Consent, so never blocked
KB20, MB1 = 20 * 1024, 1024 * 1024


# -- documents and requests ---------------------------------------------------------------


def cda(size: int) -> bytes:
    """A CDA-shaped XML document of about `size` bytes."""
    head = b'<?xml version="1.0" encoding="UTF-8"?><ClinicalDocument xmlns="urn:hl7-org:v3"><title>CRH</title><component><structuredBody>'
    tail = b"</structuredBody></component></ClinicalDocument>"
    section = (
        b"<section><text>Patient hospitalise pour bilan; examen clinique normal.</text></section>"
    )
    body = section * ((size - len(head) - len(tail)) // len(section) + 1)
    return head + body[: size - len(head) - len(tail)] + tail


def pdf(size: int, seed: int) -> bytes:
    rng = random.Random(seed)
    return b"%PDF-1.4\n" + rng.randbytes(size - 9)


def security(credential, audience: str, ins: str, mode: str = "normal") -> etree._Element:
    assertion = mint_vihf(
        credential,
        practitioner_id=PRACTITIONER,
        profession="10",
        audience=audience,
        patient_ins=f"urn:oid:{INS_OID}|{ins}",
        mode=mode,
        reason="benchmark" if mode == "bris_de_glace" else None,
        minutes=240,
    )
    header = etree.Element(f"{{{WSSE}}}Security", nsmap={"wsse": WSSE})
    header.append(assertion)
    return header


def iti41_request(ins: str, document: bytes, mime_type: str, header) -> tuple[str, bytes]:
    """(Content-Type, body) of a one-document MTOM ITI-41 (tests/xds_builders.py metadata)."""
    built = build_iti41(nir=ins, documents=[document], security=copy.deepcopy(header))
    if mime_type == "text/xml":
        return built.content_type, built.body
    envelope = built.envelope.replace(b'mimeType="text/xml"', f'mimeType="{mime_type}"'.encode())
    package = parse_http_body(built.content_type, built.body)
    parts = [Attachment(a.content_id, mime_type, a.data) for a in package.attachments.values()]
    return build_mtom_response(envelope, parts, action=v.ACTION_ITI41)


# -- 1. deposits ---------------------------------------------------------------------------


def _deposits(port: int, requests: list[tuple[str, bytes]], clients: int) -> dict:
    """Send every request once, `clients` at a time; deposits/s and latency percentiles."""
    queue = list(reversed(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def work() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        while True:
            with lock:
                if not queue:
                    break
                content_type, body = queue.pop()
            started = time.perf_counter()
            connection.request(
                "POST", "/xds/repository", body=body, headers={"Content-Type": content_type}
            )
            response = connection.getresponse()
            data = response.read()
            elapsed = time.perf_counter() - started
            with lock:
                latencies.append(elapsed * 1000)
                if response.status != 200 or b"ResponseStatusType:Success" not in data:
                    failures.append(data[:400].decode("utf-8", "replace"))
        connection.close()

    threads = [threading.Thread(target=work) for _ in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise SystemExit(f"{len(failures)} deposits failed, first: {failures[0]}")
    return {
        "count": len(requests),
        "rate": len(requests) / elapsed,
        "p50": percentile(latencies, 0.50),
        "p99": percentile(latencies, 0.99),
    }


DEPOSIT_SCRIPT = Path(__file__).with_name("deposit_requests.lua")
# Deposits built per second of the run: more than the server can take, so that no wrk thread
# runs out (the run fails if one does).
DEPOSITS_PER_SECOND = 300


def _wrk_deposits(
    port: int, data_dir: Path, requests: list[tuple[str, bytes]], clients: int, seconds: int
) -> dict:
    """Deposits sent by wrk over `clients` connections for `seconds`, each a different one.

    wrk rather than Python clients, as for the creates of the foundation bench: the Python
    clients spent about 1 ms of CPU per deposit on the two cores the server runs on. Every
    deposit wrk counts must be answered with success (`deposit_requests.lua`) and stored
    (DocumentReferences counted before and after).
    """
    before = _stored_documents(data_dir)
    threads = 2
    with tempfile.TemporaryDirectory(prefix="deposits-") as folder:
        for i, (content_type, body) in enumerate(requests):
            Path(folder, f"{i:06d}.body").write_bytes(body)
            Path(folder, f"{i:06d}.type").write_text(content_type)
        result = wrk(
            f"http://127.0.0.1:{port}/xds/repository",
            seconds=seconds,
            connections=clients,
            threads=threads,
            script=DEPOSIT_SCRIPT,
            env={
                "DEPOSITS_DIR": folder,
                "DEPOSITS_COUNT": str(len(requests)),
                "DEPOSITS_THREADS": str(threads),
            },
        )
    failures = int(re.search(r"deposit failures: (\d+)", result.output).group(1))
    if failures or result.errors:
        raise SystemExit(f"{failures + result.errors} deposits failed")
    if result.requests >= len(requests) - clients:
        raise SystemExit(f"the {len(requests)} deposits built ran out: build more")
    stored = _stored_documents(data_dir) - before
    if stored < result.requests:
        raise SystemExit(f"{result.requests} deposits answered but {stored} stored")
    return {
        "count": result.requests,
        "rate": result.requests_per_second,
        "p50": result.p50_ms,
        "p99": result.p99_ms,
    }


def _stored_documents(data_dir: Path) -> int:
    """DocumentReferences in the server's SQLite store, read beside it (no client may count
    them all: the DMP rules refuse such a search to every requester)."""
    connection = sqlite3.connect(f"file:{data_dir / 'fhir.sqlite3'}?mode=ro", uri=True)
    try:
        return connection.execute(
            "SELECT count(*) FROM resource WHERE type = 'DocumentReference'"
        ).fetchone()[0]
    finally:
        connection.close()


def _create_patients(port: int, admin: str, count: int, first: int) -> list[str]:
    nirs = []
    for n in range(first, first + count):
        status, body, _ = request(
            port, "POST", "/fhir/Patient", make_patient(n), admin, {"Prefer": "return=minimal"}
        )
        if status != 201:
            raise SystemExit(f"could not create a patient: {status} {body[:300]!r}")
        nirs.append(nir(n))
    return nirs


# -- 2. ITI-18 -----------------------------------------------------------------------------


def find_documents_envelope(ins: str, header, return_type: str) -> bytes:
    envelope = etree.Element(
        f"{{{v.NS_SOAP12}}}Envelope", nsmap={"soap": v.NS_SOAP12, "wsa": v.NS_WSA}
    )
    soap_header = etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Header")
    etree.SubElement(soap_header, f"{{{v.NS_WSA}}}Action").text = v.ACTION_ITI18
    etree.SubElement(soap_header, f"{{{v.NS_WSA}}}MessageID").text = f"urn:uuid:{uuid.uuid4()}"
    soap_header.append(copy.deepcopy(header))
    body = etree.SubElement(envelope, f"{{{v.NS_SOAP12}}}Body")
    body.append(find_documents_request(ins, return_type))
    return etree.tostring(envelope, xml_declaration=True, encoding="UTF-8")


def _queries(port: int, envelopes: list[bytes]) -> dict:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    latencies, entries, refused, failed = [], 0, 0, []

    def call(body: bytes) -> tuple[float, bytes]:
        started = time.perf_counter()
        connection.request(
            "POST",
            "/xds/registry",
            body=body,
            headers={"Content-Type": "application/soap+xml; charset=UTF-8"},
        )
        response = connection.getresponse()
        data = response.read()
        return (time.perf_counter() - started) * 1000, data

    for body in envelopes[:10]:
        call(body)  # warm-up
    for body in envelopes:
        elapsed, data = call(body)
        if b"ResponseStatusType:Success" in data:
            latencies.append(elapsed)
            entries += data.count(b"<rim:ExtrinsicObject ") + data.count(b"<rim:ObjectRef ")
        elif b"LocalPolicyRestrictionError" in data:
            refused += 1
        else:
            failed.append(data[:400])
    connection.close()
    if failed:
        raise SystemExit(f"{len(failed)} queries failed, first: {failed[0]!r}")
    if not latencies:
        raise SystemExit("every query was refused")
    return {
        "count": len(latencies),
        "refused": refused,
        "entries": entries / len(latencies),
        "p50": percentile(latencies, 0.50),
        "p95": percentile(latencies, 0.95),
        "p99": percentile(latencies, 0.99),
    }


def _corpus_nirs(data_dir: Path, repeats: int) -> tuple[list[str], str]:
    """INS of regular (not heavy) corpus patients, and a description of the corpus."""
    manifest = json.loads((data_dir / "bench-manifest.json").read_text())
    plan = CorpusPlan(**manifest["plan"])
    rng = random.Random(6)
    numbers = [rng.randrange(plan.heavy, plan.patients) for _ in range(repeats)]
    return [nir(n) for n in numbers], (
        f"{manifest['counts']['DocumentReference']:,} DocumentReferences, "
        f"{manifest['counts']['Patient']:,} patients (`{data_dir}`, copied)"
    )


# -- 3. parsing overhead -------------------------------------------------------------------


def _mime_parts(body: bytes, delimiter: bytes) -> list[bytes]:
    """The contents of the parts of an MTOM body as build_mtom_response writes it (CRLF
    lines): per part, one bytes.find of the delimiter that ends it (which reads every byte of
    the part: RFC 2046 lets no part hold its delimiter) and one slice. No header is read and
    nothing is checked: a baseline, not a parser."""
    parts = []
    after = len(delimiter)
    position = body.find(b"\r\n\r\n") + 4
    while True:
        end = body.find(delimiter, position)
        if position < 4 or end < 0:
            raise ValueError("not an MTOM body as build_mtom_response writes it")
        parts.append(body[position:end])
        if body.startswith(b"--", end + after):
            return parts
        position = body.find(b"\r\n\r\n", end + after) + 4


def _bare_read(content_type: str, body: bytes) -> Callable[[], object]:
    """The least any reader of this request does, as a function to time: lxml.etree.fromstring
    of the envelope, after _mime_parts for an MTOM body (whose root part comes first).

    Checked once against parse_http_body, so that it times the same envelope and parts.
    """
    package = parse_http_body(content_type, body)
    if not package.is_mtom:
        envelope = package.envelope
        return lambda: etree.fromstring(envelope)
    header = Message()
    header["Content-Type"] = content_type
    delimiter = b"\r\n--" + str(header.get_param("boundary")).encode("latin-1")
    parts = _mime_parts(body, delimiter)
    if parts != [package.envelope, *(a.data for a in package.attachments.values())]:
        raise RuntimeError("the bare MTOM read does not find the parts parse_http_body finds")
    return lambda: etree.fromstring(_mime_parts(body, delimiter)[0])


def _parse_ratio(content_type: str, body: bytes, repeats: int) -> tuple[float, float, float]:
    """(full read, bare lxml of the envelope, bare read) µs per request, best of 21 rounds.

    Each round times `repeats` calls of each in turn, so that a burst of load from the other
    processes sharing the machine slows every side of the ratio rather than one. The time is
    the thread's CPU time: on a machine shared by more runnable processes than cores, wall
    time also counts the slices the scheduler gives to others, which moved a ratio between
    two runs by up to 1x (two timings of the same function differed by 30%).
    """
    envelope = parse_http_body(content_type, body).envelope

    def full() -> None:
        package = parse_http_body(content_type, body)
        parsed = read_envelope(package.envelope)
        parse_submission(parsed.body, package.attachments)

    def bare() -> None:
        etree.fromstring(envelope)

    bare_read = _bare_read(content_type, body)

    def timed(function) -> float:
        started = time.thread_time()
        for _ in range(repeats):
            function()
        return (time.thread_time() - started) / repeats * 1e6

    full(), bare(), bare_read()
    rounds = [(timed(full), timed(bare), timed(bare_read)) for _ in range(21)]
    return tuple(min(r[i] for r in rounds) for i in range(3))  # type: ignore[return-value]


# -- run -----------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> str:
    load_before = os.getloadavg()
    clients = getattr(args, "clients", 8)
    small_count = 20 + DEPOSITS_PER_SECOND * args.seconds
    large_count = max(30, args.seconds * 5)
    lines = []
    with temporary_data_dir() as data_dir:
        admin = token(
            data_dir,
            "--system",
            "bench-admin",
            "--organization-type",
            "health_insurer",
            "--scope",
            "system/*.cruds",
        )
        credential = load_or_create_structure_credential(data_dir)
        settings = load_settings({"data_dir": data_dir}, environ={})
        audience = auth_settings(settings).effective_audience
        with running_server(
            data_dir,
            workers=args.workers,
            threads=args.threads,
            app="benchmarks.wsgi:app",
            clients=clients,
        ) as server:
            nirs = _create_patients(server.port, admin, 20, first=500_000)
            headers = {n: security(credential, audience, n) for n in nirs}
            document = cda(KB20)
            small = [
                iti41_request(
                    nirs[i % len(nirs)], document, "text/xml", headers[nirs[i % len(nirs)]]
                )
                for i in range(small_count)
            ]
            large = [
                iti41_request(
                    nirs[i % len(nirs)],
                    pdf(MB1, i),
                    "application/pdf",
                    headers[nirs[i % len(nirs)]],
                )
                for i in range(large_count)
            ]
            _deposits(server.port, small[:20], clients)  # warm-up
            small_result = _wrk_deposits(server.port, data_dir, small[20:], clients, args.seconds)
            large_result = _deposits(server.port, large, clients)
            if not args.bench_data_dir:
                envelopes_nirs = [nirs[i % len(nirs)] for i in range(300)]
                stored = _stored_documents(data_dir)
                corpus = f"{stored:,} documents of step 1 over {len(nirs)} patients"
                query_headers = {
                    n: security(credential, audience, n, "bris_de_glace") for n in nirs
                }
                leaf = _queries(
                    server.port,
                    [
                        find_documents_envelope(n, query_headers[n], "LeafClass")
                        for n in envelopes_nirs
                    ],
                )
                refs = _queries(
                    server.port,
                    [
                        find_documents_envelope(n, query_headers[n], "ObjectRef")
                        for n in envelopes_nirs
                    ],
                )
        if args.bench_data_dir:
            source = Path(args.bench_data_dir)
            envelopes_nirs, corpus = _corpus_nirs(source, 300)
            with temporary_data_dir() as copy_dir:
                shutil.copytree(source, copy_dir, dirs_exist_ok=True)
                credential = load_or_create_structure_credential(copy_dir)
                audience = auth_settings(
                    load_settings({"data_dir": copy_dir}, environ={})
                ).effective_audience
                headers = {}
                for n in set(envelopes_nirs):
                    headers[n] = security(credential, audience, n, "bris_de_glace")
                with running_server(copy_dir, workers=args.workers, threads=args.threads) as server:
                    leaf = _queries(
                        server.port,
                        [
                            find_documents_envelope(n, headers[n], "LeafClass")
                            for n in envelopes_nirs
                        ],
                    )
                    refs = _queries(
                        server.port,
                        [
                            find_documents_envelope(n, headers[n], "ObjectRef")
                            for n in envelopes_nirs
                        ],
                    )
    ratios = []
    for label, (content_type, body) in (
        ("20 KB CDA, MTOM", small[0]),
        ("1 MB PDF, MTOM", large[0]),
        (
            "20 KB CDA, inline base64",
            (
                f'application/soap+xml; charset=UTF-8; action="{v.ACTION_ITI41}"',
                build_iti41(
                    nir=nirs[0],
                    documents=[document],
                    mtom=False,
                    security=copy.deepcopy(headers_first(headers)),
                ).body,
            ),
        ),
    ):
        full, bare, bare_read = _parse_ratio(content_type, body, 70 if len(body) < MB1 else 7)
        ratios.append(
            (
                label,
                f"{full:,.0f}",
                f"{bare_read:,.0f}",
                f"**{full / bare_read:.2f}x**",
                f"{bare:,.0f}",
                f"{full / bare:.2f}x",
            )
        )
    load_after = os.getloadavg()
    lines.append("### ITI-41 deposits (MTOM, one document, auditing on)")
    lines.append("")
    lines.append(
        table(
            [
                (
                    "20 KB CDA",
                    small_result["count"],
                    f"**{small_result['rate']:.0f}/s**",
                    f"{small_result['p50']:.1f}",
                    f"{small_result['p99']:.1f}",
                    ">= 100/s",
                ),
                (
                    "1 MB PDF",
                    large_result["count"],
                    f"**{large_result['rate']:.1f}/s**",
                    f"{large_result['p50']:.1f}",
                    f"{large_result['p99']:.1f}",
                    "-",
                ),
            ],
            ("document", "deposits", "throughput", "p50 ms", "p99 ms", "target"),
        )
    )
    lines += ["", f"### ITI-18 FindDocuments ({corpus})", ""]
    lines.append(
        table(
            [
                (
                    rt,
                    r["count"],
                    r["refused"],
                    f"{r['entries']:.1f}",
                    f"{r['p50']:.1f}",
                    f"**{r['p95']:.1f}**",
                    f"{r['p99']:.1f}",
                )
                for rt, r in (("LeafClass", leaf), ("ObjectRef", refs))
            ],
            (
                "returnType",
                "queries",
                "refused (consent)",
                "entries/answer",
                "p50 ms",
                "p95 ms",
                "p99 ms",
            ),
        )
    )
    lines += [
        "",
        "### Parsing an ITI-41 (parse_http_body + read_envelope + parse_submission vs a bare read: MIME framing + lxml.etree.fromstring of the envelope)",
        "",
    ]
    lines.append(
        table(
            ratios,
            (
                "request",
                "full read µs",
                "bare read µs",
                "ratio (target <= 3x)",
                "lxml of the envelope alone µs",
                "ratio to it",
            ),
        )
    )
    lines += [
        "",
        f"server: the app as `fhir-server serve --workers {args.workers} --threads {args.threads}` serves it, {clients} keep-alive connections (wrk; Python clients for 1 MB); "
        f"{os.cpu_count()} CPUs; load average before {load_before[0]:.2f} / after {load_after[0]:.2f} "
        "(other benchmarks and test runs share the machine)",
    ]
    return "\n".join(lines)


def headers_first(headers: dict):
    return next(iter(headers.values()))
