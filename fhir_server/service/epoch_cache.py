"""A bounded, thread-safe cache of values that hold while a record epoch has not moved.

The gate keeps facts computed from the store (a patient's record, what an INS designates)
per process. Each is stored with the epoch read before computing it; the writes that could
change it bump that epoch in their own transaction, whichever process makes them, so a
value is served only while the epoch read now is the one it was computed under.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")


class EpochCache(Generic[V]):
    def __init__(self, max_size: int) -> None:
        self._max_size = max_size
        self._entries: OrderedDict[Hashable, tuple[int, V]] = OrderedDict()
        self._lock = threading.Lock()

    def get_or_compute(
        self,
        key: Hashable,
        epoch: int,
        compute: Callable[[], V],
        fresh: Callable[[V], bool] | None = None,
    ) -> V:
        """The value kept for `key` if it was computed under `epoch` (and, given `fresh`, still
        holds by it: a value may expire with time alone), else `compute()`'s (kept for next
        time; the least recently used entry goes when the cache is full)."""
        with self._lock:
            kept = self._entries.get(key)
            if kept is not None and kept[0] == epoch and (fresh is None or fresh(kept[1])):
                self._entries.move_to_end(key)
                return kept[1]
        value = compute()
        with self._lock:
            self._entries[key] = (epoch, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_size:
                self._entries.popitem(last=False)
        return value
