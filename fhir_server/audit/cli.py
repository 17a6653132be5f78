"""`fhir-server audit verify`: check the audit log (`audit.verify`), name the first break,
and print the head for the auditor to keep as an anchor."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from fhir_server.audit.chain import MAX_SEQUENCE
from fhir_server.audit.verify import verify_store


def _verify(args: argparse.Namespace) -> int:
    anchors: dict[int, str] = {}
    for sequence, digest in args.anchors or ():
        kept = anchors.setdefault(sequence, digest)
        if kept != digest:
            # At most one is the chain's: keeping either would check against the other.
            print(
                f"audit verify: two anchors for sequence {sequence} differ ({kept}, {digest})",
                file=sys.stderr,
            )
            return 2
    from fhir_server.config import load_settings
    from fhir_server.paths import profiles_dir
    from fhir_server.search.registry import SearchRegistry
    from fhir_server.store.factory import open_store

    settings = load_settings({"data_dir": args.data_dir})
    store = open_store(settings, SearchRegistry.load(settings.profiles_dir or profiles_dir()))
    try:
        report = verify_store(store, anchors)
    finally:
        store.close()
    if report.ok:
        print(
            f"audit chain intact: {report.checked} AuditEvents, each as its narrow record "
            "and patient keys say"
        )
        if report.checked:
            sequence, digest = report.head
            print(
                f"head: sequence {sequence}, hash {digest}. Keep it apart from this server; "
                f"`--anchor {sequence}:{digest}` then shows that nothing up to it was rewritten"
            )
        return 0
    where = f" at sequence {report.sequence}" if report.sequence is not None else ""
    event = f" (AuditEvent {report.event_id})" if report.event_id is not None else ""
    print(
        f"audit log broken{where}{event}: {report.reason}",
        file=sys.stderr,
    )
    return 1


_ANCHOR = re.compile(r"([1-9][0-9]{0,9}):([0-9a-f]{64})")


def _anchor(value: str) -> tuple[int, str]:
    match = _ANCHOR.fullmatch(value)
    if match is None or int(match.group(1)) > MAX_SEQUENCE:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not SEQUENCE:HASH (a sequence from 1 to {MAX_SEQUENCE}, 64 "
            "lower-case hex digits)"
        )
    return int(match.group(1)), match.group(2)


def add_audit_command(subparsers) -> None:
    audit = subparsers.add_parser("audit", help="AuditEvent tools")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser("verify", help="check the AuditEvent hash chain")
    verify.add_argument("--data-dir", dest="data_dir", type=Path, default=None)
    verify.add_argument(
        "--anchor",
        dest="anchors",
        action="append",
        type=_anchor,
        metavar="SEQUENCE:HASH",
        help="a head printed by an earlier run, kept apart from the server (repeatable)",
    )
    verify.set_defaults(func=_verify)
