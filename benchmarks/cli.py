"""`fhir-server bench NAME`: run one benchmark and print its Markdown table."""

from __future__ import annotations

import argparse
import importlib

from benchmarks import machine
from fhir_server.config import Settings

BENCHMARKS = {
    "foundation": "benchmarks.bench_foundation",
    "search": "benchmarks.bench_search",
    "extract": "benchmarks.bench_extract",
    "audit": "benchmarks.bench_audit",
    "access": "benchmarks.bench_access",
    "xds": "benchmarks.bench_xds",
}


def _positive(value: str) -> int:
    """A count or a duration: `--seconds 0` or `--rounds -1` measured nothing (or divided by
    zero at the end of a long run); refused when the arguments are parsed."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{value}' is not a whole number") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {number}")
    return number


def add_bench_command(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("bench", help="run a benchmark (see benchmarks/README.md)")
    parser.add_argument("name", choices=sorted(BENCHMARKS))
    parser.add_argument(
        "--seconds", type=_positive, default=10, help="duration of each throughput run"
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=3,
        help="throughput runs of each side of a ratio, taken in turn (foundation, audit)",
    )
    parser.add_argument("--workers", type=_positive, default=2)
    parser.add_argument("--threads", type=_positive, default=Settings.threads)
    parser.add_argument(
        "--documents", type=_positive, default=100_000, help="DocumentReferences to load (search)"
    )
    parser.add_argument(
        "--data-dir",
        "--bench-data-dir",
        dest="bench_data_dir",
        default=None,
        help="reuse a loaded data dir (search, access)",
    )
    parser.add_argument(
        "--repeats", type=_positive, default=None, help="calls per query (search, access)"
    )
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    module = importlib.import_module(BENCHMARKS[args.name])
    before = machine.sample()
    report = module.run(args)
    after = machine.sample()
    print(report)
    print()
    print(machine.describe(before, after))
    return 0
