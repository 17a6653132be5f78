"""The machine's speed right now: seconds for a fixed pure-Python loop (lower is faster).

    python -m benchmarks.speed_index

The development machine is a virtual machine whose speed varies with its host's load: on
2026-11-22 this loop took 0.25 s to 0.42 s on the otherwise idle machine within a few hours,
and every throughput moved with it. Run it before and after a benchmark to tell a change of
the code from a change of the machine.
"""

from __future__ import annotations

import time


def speed_index(iterations: int = 3_000_000) -> float:
    started = time.perf_counter()
    total = 0
    for i in range(iterations):
        total += i * i % 7
    return time.perf_counter() - started


if __name__ == "__main__":
    print(f"speed index: {speed_index():.3f} s (lower is faster)")
