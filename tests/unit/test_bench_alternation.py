"""Throughput ratios are measured in alternation (`benchmarks.harness.alternated`): the two
sides of each ratio are taken in turn, round after round, so that the host's drift falls on
both alike, and the report gives each round's ratio with their median (issue 21, "Speed":
ratios against a baseline in the same run)."""

import pytest

from benchmarks.harness import (
    WrkResult,
    alternated,
    median_result,
    ratios,
    spread,
    throughput_row,
)


def _result(rate: float, errors: int = 0) -> WrkResult:
    return WrkResult(rate, p50_ms=1000 / rate, p99_ms=3000 / rate, errors=errors)


def test_the_measures_are_taken_in_turn_round_after_round():
    taken: list[str] = []

    def measure(name: str, rate: float):
        def run() -> WrkResult:
            taken.append(name)
            return _result(rate + len(taken))

        return run

    results = alternated({"audited": measure("audited", 100), "bare": measure("bare", 200)}, 3)

    assert taken == ["audited", "bare"] * 3
    assert [r.requests_per_second for r in results["audited"]] == [101, 103, 105]
    assert [r.requests_per_second for r in results["bare"]] == [202, 204, 206]


def test_no_round_is_refused():
    with pytest.raises(SystemExit, match="--rounds"):
        alternated({"read": lambda: _result(1)}, 0)


def test_a_ratio_is_taken_within_each_round_never_across_rounds():
    # The host slowed down by half in round 2: both sides moved, the round's ratio did not.
    audited = [_result(600), _result(300), _result(630)]
    unaudited = [_result(1000), _result(500), _result(900)]
    assert ratios(audited, unaudited) == pytest.approx([0.6, 0.6, 0.7])


def test_rounds_of_unequal_number_are_refused():
    with pytest.raises(ValueError):
        ratios([_result(1)], [_result(1), _result(2)])


def test_the_report_gives_the_median_and_every_round():
    assert spread([0.58, 0.66, 0.61]) == "**0.61** (rounds: 0.58, 0.66, 0.61)"


def test_the_table_row_is_the_median_round_with_its_latencies_and_all_rounds_errors():
    rounds = [_result(900, errors=1), _result(1200), _result(1000, errors=2)]
    assert median_result(rounds) is rounds[2]
    assert throughput_row("read", rounds) == ("read", "1,000/s", "1.00", "3.00", 3)
