"""Benchmark reports end with the machine's state during the run (`benchmarks/machine.py`):
the CPU time the virtual machine's host stole, and the speed index before and after."""

from pathlib import Path

import pytest

from benchmarks.machine import (
    CpuTimes,
    MachineState,
    describe,
    parse_cpu_line,
    read_cpu_times,
    steal_share,
)


def test_the_aggregate_cpu_line_gives_total_and_steal_ticks_without_guest_time():
    # user nice system idle iowait irq softirq steal guest guest_nice
    times = parse_cpu_line("cpu  100 10 50 800 20 0 5 15 40 0")
    assert times == CpuTimes(total=1000, steal=15)


def test_a_per_cpu_line_is_refused():
    with pytest.raises(ValueError, match="aggregate cpu line"):
        parse_cpu_line("cpu0 100 10 50 800 20 0 5 15 0 0")


def test_steal_share_is_the_stolen_part_of_the_ticks_between_two_readings():
    before, after = CpuTimes(total=10_000, steal=100), CpuTimes(total=12_000, steal=400)
    assert steal_share(before, after) == pytest.approx(0.15)
    assert steal_share(after, after) == 0.0


def test_read_cpu_times_reads_the_first_line_and_is_none_without_the_file(tmp_path: Path):
    stat = tmp_path / "stat"
    stat.write_text("cpu  1 2 3 4 5 6 7 8 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
    assert read_cpu_times(stat) == CpuTimes(total=36, steal=8)
    assert read_cpu_times(tmp_path / "missing") is None


def test_the_report_line_names_steal_and_both_speed_indexes():
    line = describe(
        MachineState(0.312, CpuTimes(total=10_000, steal=0)),
        MachineState(0.405, CpuTimes(total=20_000, steal=1_250)),
    )
    assert "CPU steal 12.5%" in line
    assert "0.312 s before / 0.405 s after" in line


def test_without_proc_stat_the_line_says_steal_is_not_available():
    line = describe(MachineState(0.3, None), MachineState(0.3, CpuTimes(1, 0)))
    assert "CPU steal not available" in line
