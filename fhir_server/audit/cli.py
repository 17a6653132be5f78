"""`fhir-server audit verify`: check the audit log (`audit.verify`), name the first break,
and print the head for the auditor to keep as an anchor."""

from __future__ import annotations

import argparse
import os
import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from fhir_server.audit.chain import MAX_SEQUENCE
from fhir_server.audit.verify import verify_store
from fhir_server.config import flag_parser


def _verify(args: argparse.Namespace) -> int:
    given = list(args.anchors or ())
    if args.keep_head and args.anchors_file is None:
        print("audit verify: --keep-head needs --anchors-file", file=sys.stderr)
        return 2
    # A witness started by this run has no file yet; otherwise the file must be there.
    starting = args.keep_head and not args.anchors_file.exists()
    if args.anchors_file is not None and not starting:
        try:
            given += read_anchors(args.anchors_file)
        except (OSError, ValueError) as exc:
            print(f"audit verify: {exc}", file=sys.stderr)
            return 2
    anchors: dict[int, str] = {}
    for sequence, digest in given:
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
    from fhir_server.store.factory import missing_store, open_store

    settings = load_settings({"data_dir": args.data_dir})
    missing = missing_store(settings)
    if missing is not None:
        # Opening it would create an empty store, whose empty log verifies: a mistyped data
        # dir answered "audit chain intact" (exit 0) and left a store behind. Fail closed.
        print(
            f"audit verify: no store at {missing} (check --data-dir or FHIR_DATA_DIR); "
            "nothing verified",
            file=sys.stderr,
        )
        return 2
    registry = SearchRegistry.load(settings.profiles_dir or profiles_dir())
    try:
        store = open_store(settings, registry)
    except Exception as exc:  # noqa: BLE001 - the auditor is told, not shown a traceback
        # Opening the store replays its outbox into the log and moves older events into it
        # (`StoreWithAuditLog`): a log that refuses them (a constraint added behind the
        # server's back) fails here, before any event is read. Fail closed: broken.
        print(
            f"audit log broken: the store could not be opened ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return 1
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
            if args.keep_head and anchors.get(sequence) != digest:
                keep_anchor(args.anchors_file, report.head)
                print(f"kept in {args.anchors_file}")
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


# A line of an anchors file: SEQUENCE:HASH, then a comment if any.
_ANCHOR_LINE = re.compile(r"(\S+)(?:\s+#.*)?")


def read_anchors(path: Path) -> list[tuple[int, str]]:
    """The anchors kept in `path`, one `SEQUENCE:HASH` per line (`keep_anchor`'s lines);
    blank lines and lines starting with `#` are skipped. A line of any other form is refused
    (ValueError naming it): an anchor misread is a check silently not made."""
    anchors = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        match = _ANCHOR_LINE.fullmatch(text)
        try:
            if match is None:
                raise argparse.ArgumentTypeError("not SEQUENCE:HASH")
            anchors.append(_anchor(match.group(1)))
        except argparse.ArgumentTypeError as exc:
            raise ValueError(f"{path}, line {number}: {exc}") from None
    return anchors


def keep_anchor(path: Path, head: tuple[int, str]) -> None:
    """Append `head` to the anchors file, durably (the file is the auditor's witness: it
    should live apart from the server, on storage the server's operators cannot rewrite)."""
    sequence, digest = head
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with path.open("a+b") as anchors:
        # A file edited by hand may end without a newline: appended to its last line (a
        # comment), the head would be skipped by the next run.
        line = f"{sequence}:{digest}  # verified {stamp}\n"
        anchors.write((line if _ends_a_line(anchors) else "\n" + line).encode("utf-8"))
        anchors.flush()
        os.fsync(anchors.fileno())


def _ends_a_line(file: BinaryIO) -> bool:
    """Whether `file` is empty or ends with a newline."""
    if file.seek(0, os.SEEK_END) == 0:
        return True
    file.seek(-1, os.SEEK_END)
    return file.read(1) == b"\n"


def add_audit_command(subparsers) -> None:
    audit = subparsers.add_parser("audit", help="AuditEvent tools")
    commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = commands.add_parser("verify", help="check the AuditEvent hash chain")
    verify.add_argument(
        "--data-dir",
        dest="data_dir",
        type=flag_parser("FHIR_DATA_DIR", "--data-dir"),
        default=None,
    )
    verify.add_argument(
        "--anchor",
        dest="anchors",
        action="append",
        type=_anchor,
        metavar="SEQUENCE:HASH",
        help="a head printed by an earlier run, kept apart from the server (repeatable)",
    )
    verify.add_argument(
        "--anchors-file",
        dest="anchors_file",
        type=Path,
        default=None,
        metavar="FILE",
        help="anchors kept by earlier runs (one SEQUENCE:HASH per line), checked too",
    )
    verify.add_argument(
        "--keep-head",
        dest="keep_head",
        action="store_true",
        help="append the head of an intact log to --anchors-file, for the next run",
    )
    verify.set_defaults(func=_verify)
