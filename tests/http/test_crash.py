"""R16 and invariant 5 under a crash: `fhir-server serve` killed with SIGKILL mid-load.

A mixed load of reads (patient reads, a médecin traitant's searches, which also notify) and
writes (document deposits) runs against the real server; the whole process group is killed
with SIGKILL. After a restart: every request that got a 2xx has its AuditEvent (found by its
X-Request-Id), every deposit answered 201 is stored whole (byte-identical to the answer, found
by search, with its deposit notification), and `fhir-server audit verify` passes.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest

from fhir_server.terminology import SYSTEM_IDNAT_PS
from tests.http.conftest import FHIR_JSON, Tokens, a_patient
from tests.http.test_notifications import document
from tests.http.test_serve import _free_port
from tests.http.test_serve import _start as start_server

GP = "810000000010"


def _start(data_dir: Path, port: int) -> subprocess.Popen:
    """Two workers of four threads, in a process group of their own (SIGKILLed at once)."""
    return start_server(data_dir, port, workers=2, threads=4, own_session=True)


def _call(
    port: int,
    method: str,
    path: str,
    token: str,
    body: dict | None = None,
    request_id: str | None = None,
):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": FHIR_JSON}
    if request_id:
        headers["X-Request-Id"] = request_id
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers=headers,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.slow
def test_r16_invariant5_sigkill_under_load_loses_no_acknowledged_audit_or_write(tmp_path):
    data_dir = tmp_path / "var"
    port = _free_port()
    process = _start(data_dir, port)
    try:
        tokens = Tokens(data_dir)
        patient = a_patient(
            1, generalPractitioner=[{"identifier": {"system": SYSTEM_IDNAT_PS, "value": GP}}]
        )
        status, body = _call(port, "POST", "/fhir/Patient", tokens.system(), patient)
        assert status == 201
        patient_id = json.loads(body)["id"]
        reader, doctor = tokens.patient(patient_id), tokens.practitioner(GP)
        depositor = tokens.system(
            "lab",
            scope="system/DocumentReference.c system/Binary.c",
            organization_type="laboratory",
        )

        acknowledged_reads: list[str] = []
        acknowledged_writes: list[tuple[str, bytes]] = []
        stop = threading.Event()
        lock = threading.Lock()

        def load(kind: int) -> None:
            while not stop.is_set():
                request_id = uuid.uuid4().hex
                try:
                    if kind == 0:
                        status, body = _call(
                            port,
                            "GET",
                            f"/fhir/Patient/{patient_id}",
                            reader,
                            request_id=request_id,
                        )
                    elif kind == 1:
                        status, body = _call(
                            port,
                            "GET",
                            f"/fhir/DocumentReference?patient={patient_id}&_count=5",
                            doctor,
                            request_id=request_id,
                        )
                    else:
                        status, body = _call(
                            port,
                            "POST",
                            "/fhir/DocumentReference",
                            depositor,
                            document(patient_id, f"Bilan {request_id}"),
                            request_id,
                        )
                except (OSError, http.client.HTTPException):
                    continue  # the server died under this request: not acknowledged
                if 200 <= status < 300:
                    with lock:
                        acknowledged_reads.append(request_id)
                        if kind == 2:
                            acknowledged_writes.append((request_id, body))

        workers = [threading.Thread(target=load, args=(i % 3,), daemon=True) for i in range(9)]
        for worker in workers:
            worker.start()
        time.sleep(4)
        os.killpg(process.pid, signal.SIGKILL)  # the crash: master and workers at once
        process.wait(timeout=10)
        stop.set()
        for worker in workers:
            worker.join(timeout=35)
        assert len(acknowledged_writes) > 5 and len(acknowledged_reads) > 30, "the load did not run"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)

    # The data dir as the server had it, from its environment (`--data-dir` works too:
    # tests/contract/test_audit_verify.py).
    verify = subprocess.run(
        [sys.executable, "-m", "fhir_server.cli", "audit", "verify"],
        capture_output=True,
        text=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("FHIR_")},
            "FHIR_DATA_DIR": str(data_dir),
        },
    )
    assert verify.returncode == 0, verify.stderr

    from fhir_server.paths import profiles_dir
    from fhir_server.search.query import ReferenceTest, SearchQuery
    from fhir_server.search.registry import SearchRegistry
    from fhir_server.store.factory import with_audit_log
    from fhir_server.store.sqlite import SqliteStore

    store = with_audit_log(
        SqliteStore(data_dir / "fhir.sqlite3"), SearchRegistry.load(profiles_dir())
    )
    try:
        traced: set[str] = set()
        cursor = None
        while True:
            page = store.history("AuditEvent", None, since=None, count=1000, cursor=cursor)
            for entry in page.entries:
                for entity in entry.resource.json().get("entity", []):
                    value = ((entity.get("what") or {}).get("identifier") or {}).get("value")
                    if value:
                        traced.add(value)
            cursor = page.next_cursor
            if cursor is None:
                break
        missing = [r for r in acknowledged_reads if r not in traced]
        assert missing == [], f"{len(missing)} acknowledged requests have no AuditEvent"
        for _, body in acknowledged_writes:
            answered = json.loads(body)
            stored = store.read("DocumentReference", answered["id"])
            assert stored is not None and json.loads(stored.body) == answered
        found = store.search(
            SearchQuery(
                "DocumentReference",
                where=ReferenceTest("patient", "Patient", patient_id),
                count=10_000,
            ),
            cursor_key=b"k" * 32,
            cursor_binding="t",
        )
        assert {json.loads(b)["id"] for _, b in acknowledged_writes} <= {
            row[1] for row in found.rows
        }
        told = store.search(
            SearchQuery(
                "Communication", where=ReferenceTest("subject", "Patient", patient_id), count=10_000
            ),
            cursor_key=b"k" * 32,
            cursor_binding="t",
        )
        deposits_told = {
            ref["reference"] for row in told.rows for ref in json.loads(row[2]).get("about", [])
        }
        assert {
            f"DocumentReference/{json.loads(b)['id']}" for _, b in acknowledged_writes
        } <= deposits_told
    finally:
        store.close()

    process = _start(data_dir, port)  # and the server starts again on the same data
    try:
        status, _ = _call(
            port, "GET", f"/fhir/Patient/{patient_id}", Tokens(data_dir).patient(patient_id)
        )
        assert status == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
