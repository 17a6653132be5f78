"""`fhir-server audit verify`: check the AuditEvent hash chain and name the first break."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson

from fhir_server.audit.chain import ChainReport, verify_chain


def chain_events(store) -> Iterator[dict]:
    """Every AuditEvent of the store's audit log, in chain order."""
    for record in store.audit_log.scan():
        yield orjson.loads(record.body)


def verify_store(store) -> ChainReport:
    """The chain checked from its first event against the head the log recorded with its
    last commit (a cut tail shows against it)."""
    return verify_chain(chain_events(store), expected_head=store.audit_log.head())


def _verify(args: argparse.Namespace) -> int:
    from fhir_server.config import load_settings
    from fhir_server.paths import profiles_dir
    from fhir_server.search.registry import SearchRegistry
    from fhir_server.store.factory import open_store

    settings = load_settings({"data_dir": args.data_dir})
    store = open_store(settings, SearchRegistry.load(settings.profiles_dir or profiles_dir()))
    try:
        report = verify_store(store)
    finally:
        store.close()
    if report.ok:
        print(f"audit chain intact: {report.checked} AuditEvents")
        return 0
    print(
        f"audit chain broken at sequence {report.sequence} (AuditEvent {report.event_id}): {report.reason}",
        file=sys.stderr,
    )
    return 1


def add_audit_command(subparsers) -> None:
    audit = subparsers.add_parser("audit", help="AuditEvent tools")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser("verify", help="check the AuditEvent hash chain")
    verify.add_argument("--data-dir", dest="data_dir", type=Path, default=None)
    verify.set_defaults(func=_verify)
