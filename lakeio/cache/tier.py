"""The contract every cache tier keeps: get / put / evict / stats, thread-safe, bounded in bytes.

A tier only ever holds copies; evicting never loses data (the origin keeps it).
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any, Protocol

_warned: set[tuple[type, str]] = set()  # (warning class, folder) this process has warned of
_warned_lock = threading.Lock()


def warn_once(folder: str, warning: Warning) -> None:
    """``warning`` once per kind, folder and process: a full disk or /dev/shm would otherwise
    warn for every chunk."""
    with _warned_lock:
        if (type(warning), folder) in _warned:
            return
        _warned.add((type(warning), folder))
    warnings.warn(warning, stacklevel=4)


@dataclass
class TierStats:
    """Counters of one tier. Hit rate h = hits / requests; miss rate = 1 - h."""

    requests: int = 0
    hits: int = 0
    evictions: int = 0
    bytes_held: int = 0
    items: int = 0
    write_errors: int = 0  # copies the tier could not store (a full disk); the reads went on
    refused: int = 0  # entries not written by lakeio (pickles): dropped unread, read as misses

    @property
    def misses(self) -> int:
        return self.requests - self.hits

    @property
    def hit_rate(self) -> float:
        return self.hits / self.requests if self.requests else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "hits": self.hits,
            "misses": self.misses,
            "hit_rate": round(self.hit_rate, 4),
            "miss_rate": round(1 - self.hit_rate, 4) if self.requests else 0.0,
            "evictions": self.evictions,
            "bytes_held": self.bytes_held,
            "items": self.items,
            "write_errors": self.write_errors,
            "refused": self.refused,
        }


class Tier(Protocol):
    """A bounded store of chunk copies keyed by chunk key."""

    capacity: int

    def get(self, key: str) -> Any | None: ...

    def put(self, key: str, value: Any) -> bool: ...

    def evict(self, key: str) -> None: ...

    def stats(self) -> TierStats: ...

    def clear(self) -> None: ...
