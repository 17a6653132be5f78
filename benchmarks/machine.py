"""The state of this virtual machine around a benchmark run, printed under its report.

The development machine is a virtual machine sharing its host. On 2026-11-22 the same code
gave 129 to 291 creates/s within the same hour, and `/proc/stat` showed why: in the slow runs
the host kept up to a third of the machine's CPU time for itself (steal). A report that says
how much was stolen during the run, and how fast a fixed Python loop ran before and after it
(`speed_index`), lets a reader tell a slower machine from slower code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.speed_index import speed_index


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Cumulated ticks of all CPUs (the `cpu` line of /proc/stat)."""

    total: int
    steal: int


@dataclass(frozen=True, slots=True)
class MachineState:
    speed_index_seconds: float
    cpu: CpuTimes | None  # None where /proc/stat is not available


def parse_cpu_line(line: str) -> CpuTimes:
    """`cpu user nice system idle iowait irq softirq steal guest guest_nice`: guest time is
    already counted in user and nice, so it is left out of the total."""
    fields = line.split()
    if not fields or fields[0] != "cpu":
        raise ValueError(f"not the aggregate cpu line of /proc/stat: {line!r}")
    ticks = [int(value) for value in fields[1:9]]
    ticks += [0] * (8 - len(ticks))
    return CpuTimes(total=sum(ticks), steal=ticks[7])


def read_cpu_times(path: Path = Path("/proc/stat")) -> CpuTimes | None:
    try:
        first_line = path.read_text().splitlines()[0]
    except (OSError, IndexError):
        return None
    return parse_cpu_line(first_line)


def steal_share(before: CpuTimes, after: CpuTimes) -> float:
    """The share of the CPU time between the two readings that the host took."""
    elapsed = after.total - before.total
    return (after.steal - before.steal) / elapsed if elapsed > 0 else 0.0


def sample() -> MachineState:
    return MachineState(speed_index(), read_cpu_times())


def describe(before: MachineState, after: MachineState) -> str:
    """One line for the end of a report."""
    speed = (
        f"speed index {before.speed_index_seconds:.3f} s before / "
        f"{after.speed_index_seconds:.3f} s after (`python -m benchmarks.speed_index`, "
        "lower is faster)"
    )
    if before.cpu is None or after.cpu is None:
        return f"machine: {speed}; CPU steal not available"
    stolen = steal_share(before.cpu, after.cpu)
    return (
        f"machine: CPU steal {stolen:.1%} during the run (CPU time the virtual machine's host "
        f"kept for itself); {speed}"
    )
