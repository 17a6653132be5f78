"""`fhir-server audit verify`: check the AuditEvent hash chain and name the first break."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fhir_server.audit.chain import chain_link, verify_chain


def chain_events(store) -> list[dict]:
    """Every AuditEvent, in chain order (AuditEvents have one version: history is the set)."""
    events: list[dict] = []
    cursor = None
    while True:
        page = store.history("AuditEvent", None, since=None, count=1000, cursor=cursor)
        events += [entry.resource.json() for entry in page.entries if not entry.resource.deleted]
        cursor = page.next_cursor
        if cursor is None:
            break
    return sorted(events, key=lambda event: chain_link(event).sequence if chain_link(event) else 0)


def verify_store(store):
    with store.transaction() as tx:
        head = tx.audit_head()
    return verify_chain(chain_events(store), expected_head=head)


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
