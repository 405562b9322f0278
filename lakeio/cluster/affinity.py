"""Which worker owns a chunk: rendezvous (highest-random-weight) hashing over the workers.

Every trainer computes the same owner for a chunk from the same worker list, so each chunk is
loaded — and cached — on one worker, and the cluster's memory acts as one cache. When a worker
joins or leaves, only the chunks it wins or held change owner; all others stay where they are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence


def _weight(worker: str, key: str) -> int:
    digest = hashlib.blake2b(f"{worker}\0{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, workers: Sequence[str]) -> str:
    """The worker (of ``workers``, by address or name) that owns ``key``."""
    if not workers:
        raise ValueError("no workers to assign chunks to: the cluster has none")
    return max(workers, key=lambda w: _weight(w, key))
