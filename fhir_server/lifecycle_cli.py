"""`fhir-server record ...`: close, reopen, oppose and purge records (R03).

fhir-server record close PATIENT_ID [--reason patient-demande|deces|autre [--reason-text TEXT]]
fhir-server record reopen PATIENT_ID
fhir-server record oppose --ins NIR [--family F --given G --gender g --birth-date YYYY-MM-DD]
fhir-server record purge [--now 2034-01-01T00:00:00Z]   # the retention job
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fhir_server.config import flag_parser
from fhir_server.errors import FhirError
from fhir_server.resources import record_closure
from fhir_server.resources.record_closure import Closure
from fhir_server.service import lifecycle


def _with_service(args: argparse.Namespace, action: Callable, *, creates: bool = False) -> int:
    """Run `action` on the service of the configured store. Unless the command `creates`
    (an opposition may be the first thing a new server records), the store must be there:
    `record purge` on a mistyped data dir created an empty store and "purged 0 record(s)"."""
    from fhir_server.config import load_settings
    from fhir_server.paths import profiles_dir
    from fhir_server.search.registry import SearchRegistry
    from fhir_server.service.factory import build_service
    from fhir_server.store.factory import missing_store, open_store

    settings = load_settings({"data_dir": Path(args.data_dir)} if args.data_dir else {})
    missing = None if creates else missing_store(settings)
    if missing is not None:
        print(
            f"fhir-server record {args.record_command}: no store at {missing} (check "
            "--data-dir or FHIR_DATA_DIR); nothing done",
            file=sys.stderr,
        )
        return 2
    registry = SearchRegistry.load(settings.profiles_dir or profiles_dir())
    store = open_store(settings, registry)
    try:
        service = build_service(
            store,
            registry,
            data_dir=settings.data_dir,
            base_url=settings.fhir_base_url,
            profiles_path=settings.profiles_dir,
        )
        print(action(service))
        return 0
    except FhirError as exc:
        print("; ".join(issue.diagnostics or issue.code for issue in exc.issues), file=sys.stderr)
        return 1
    finally:
        store.close()


def parse_now(value: str | None) -> datetime:
    if not value:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _instant(value: str) -> str:
    """`--now` checked when the arguments are parsed: a usage error naming it, not a
    traceback once the store is open."""
    try:
        parse_now(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r} is not an ISO instant (e.g. 2034-01-01T00:00:00Z)"
        ) from None
    return value


def _close(args):
    if args.reason_text is not None and args.reason is None:
        print("--reason-text says more of a --reason (the closure motive)", file=sys.stderr)
        return 2
    closure = Closure(args.reason, args.reason_text) if args.reason is not None else None

    def action(service):
        return (
            f"record closed: Patient/{lifecycle.close_record(service, args.patient_id, closure).id}"
        )

    return _with_service(args, action)


def _reopen(args):
    return _with_service(
        args, lambda s: f"record reopened: Patient/{lifecycle.reopen_record(s, args.patient_id).id}"
    )


def _oppose(args):
    def action(service):
        stored = lifecycle.oppose_creation(
            service,
            args.ins,
            ins_system=args.ins_system,
            family=args.family,
            given=args.given,
            gender=args.gender,
            birth_date=args.birth_date,
        )
        return f"opposition recorded: Patient/{stored.id}"

    return _with_service(args, action, creates=True)


def _purge(args):
    def action(service):
        report = lifecycle.purge_expired(service, parse_now(args.now))
        return f"purged {len(report.patients)} record(s), {report.resources} resource(s); AuditEvents kept"

    return _with_service(args, action)


def add_record_command(subparsers) -> None:
    record = subparsers.add_parser(
        "record", help="record lifecycle: close, reopen, oppose, purge (R03)"
    )
    commands = record.add_subparsers(dest="record_command", required=True)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        parser = commands.add_parser(name, help=help_text)
        parser.add_argument(
            "--data-dir",
            dest="data_dir",
            type=flag_parser("FHIR_DATA_DIR", "--data-dir"),
            default=None,
        )
        parser.set_defaults(func=handler)
        return parser

    close = command("close", _close, "close a patient's record")
    close.add_argument("patient_id")
    close.add_argument(
        "--reason",
        choices=sorted(record_closure.motifs()),
        help="the closure motive (TD0.2 dmp-fermeture motifFermeture, "
        "profiles/terminology/CodeSystem-dmp-motif-fermeture.json)",
    )
    close.add_argument(
        "--reason-text",
        dest="reason_text",
        help="the closure reason in words (raisonFermeture; with --reason)",
    )
    command("reopen", _reopen, "reopen a closed record").add_argument("patient_id")
    oppose = command("oppose", _oppose, "record an opposition to the creation of a record")
    oppose.add_argument("--ins", required=True, help="the patient's INS (NIR)")
    oppose.add_argument("--ins-system", default=lifecycle.INS_NIR_SYSTEM)
    oppose.add_argument("--family")
    oppose.add_argument("--given")
    oppose.add_argument("--gender", choices=("male", "female", "other", "unknown"))
    oppose.add_argument("--birth-date", dest="birth_date")
    purge = command(
        "purge", _purge, "retention job: purge records closed ten years ago (AuditEvents kept)"
    )
    purge.add_argument(
        "--now",
        default=None,
        type=_instant,
        help="the job's 'now' (ISO instant; default: the clock)",
    )
