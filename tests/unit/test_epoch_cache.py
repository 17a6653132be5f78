"""EpochCache (service/epoch_cache.py): the gate's per-process facts are served only while
the record epoch they were computed under holds (record facts, R04 designation)."""

from __future__ import annotations

from fhir_server.service.epoch_cache import EpochCache


def test_a_value_is_kept_while_its_epoch_holds_and_recomputed_when_it_moves():
    cache: EpochCache[str] = EpochCache(10)
    computed: list[str] = []

    def compute(value: str):
        def run() -> str:
            computed.append(value)
            return value

        return run

    assert cache.get_or_compute("p1", 1, compute("a")) == "a"
    assert cache.get_or_compute("p1", 1, compute("b")) == "a"
    assert cache.get_or_compute("p1", 2, compute("c")) == "c"
    assert computed == ["a", "c"]


def test_the_least_recently_used_entry_goes_first():
    cache: EpochCache[int] = EpochCache(2)
    cache.get_or_compute("a", 0, lambda: 1)
    cache.get_or_compute("b", 0, lambda: 2)
    cache.get_or_compute("a", 0, lambda: 99)  # "a" used again: "b" is now the oldest
    cache.get_or_compute("c", 0, lambda: 3)
    assert cache.get_or_compute("a", 0, lambda: 99) == 1
    assert cache.get_or_compute("b", 0, lambda: 42) == 42
