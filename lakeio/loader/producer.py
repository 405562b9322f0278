"""The batcher thread and its hand-over to the training loop.

The batcher thread walks the epoch's batches: it waits for each batch's chunks (the prefetcher
loads them ahead), prepares the batch's copy as a `CopyOrder` and queues it. The copy itself is
made by whichever thread needs it first: the training loop when it is waiting for that batch
anyway, or the batcher thread when it is ahead (the queue is full). The copy runs without the
GIL, so while one thread copies, the other prepares the next batch: at 64×64 that took a warm
epoch from ~59% to ~75% of a memory-mapped array's rate here, against ~59% when the batcher
thread made every copy itself (the training loop idle meanwhile).

When it is ahead, the batcher thread copies the *newest* order nobody has started, not the
oldest: the oldest is the one the training loop asks for next, and finding it half made, the
training loop could only wait (for ~half of a 64×64 epoch, traced), and then wait again for
the GIL while the batcher thread ran Python. Taking them from opposite ends, both threads copy
at once: 64×64 went from ~400 to ~300-350 µs a batch (`benchmarks/peers.py` has the shares).

A batch's chunks are let go only once its copy is made, so an order in the queue always finds
them held.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

DONE = object()  # the last item of an epoch's queue


class CopyOrder:
    """One batch's gather, made once, by the first thread that `take`s it."""

    __slots__ = ("_args", "_claim", "_done", "_error", "_gather", "_result")

    def __init__(self, gather: Callable[..., dict[str, np.ndarray]], *args: Any) -> None:
        self._gather, self._args = gather, args
        self._claim = threading.Lock()
        self._done = threading.Event()
        self._result: dict[str, np.ndarray] | None = None
        self._error: BaseException | None = None

    @property
    def taken(self) -> bool:
        """Whether some thread has started (or made) the copy."""
        return self._claim.locked()

    @property
    def done(self) -> bool:
        return self._done.is_set()

    def take(self) -> dict[str, np.ndarray]:
        """The batch: copied now by this thread, or waited for if another one is copying it."""
        if self._claim.acquire(blocking=False):
            try:
                self._result = self._gather(*self._args)
            except BaseException as exc:  # raised in whichever thread takes the batch
                self._error = exc
            finally:
                self._args = ()
                self._done.set()
        else:
            self._done.wait()
        if self._error is not None:
            raise self._error
        return self._result

    def take_quietly(self) -> None:
        """Make the copy here if nobody has started it; an error waits for whoever takes it."""
        with contextlib.suppress(BaseException):  # (kept: raised again where it is taken)
            self.take()

    def wait(self) -> None:
        self._done.wait()

    def cancel(self) -> None:
        """Nobody will take it (the epoch was abandoned): claim it unmade, or wait for the copy
        in progress (it reads chunks about to be let go)."""
        if self._claim.acquire(blocking=False):
            self._args = ()
            self._error = RuntimeError("the epoch was abandoned before this batch was taken")
            self._done.set()
        else:
            self._done.wait()


class Orders:
    """The orders queued and not yet known to be done, oldest first."""

    def __init__(self) -> None:
        self._pending: deque[tuple[int, CopyOrder]] = deque()

    def add(self, batch: int, order: CopyOrder) -> None:
        self._pending.append((batch, order))

    def take_one(self) -> bool:
        """Make the newest copy nobody has started (the training loop takes the oldest: see
        the module's docstring); False if there is none."""
        for _, order in reversed(self._pending):
            if not order.taken:
                order.take_quietly()
                return True
        return False

    def finished(self, everything: bool = False) -> list[int]:
        """The batches whose copies are made, in order; with ``everything``, all of them (the
        copies nobody has started are made here)."""
        done = []
        while self._pending and (everything or self._pending[0][1].done):
            batch, order = self._pending.popleft()
            order.take_quietly()  # (made already, or being made: waits; else makes it)
            done.append(batch)
        return done

    def cancel(self) -> None:
        """The epoch was abandoned: nobody will take the orders left (see `CopyOrder.cancel`)."""
        for _, order in self._pending:
            order.cancel()
        self._pending.clear()


def put(q: queue.Queue, item, stop: threading.Event) -> None:
    """Queue ``item`` unless ``stop`` is set first."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return
        except queue.Full:
            continue


def get(q: queue.Queue, producer: threading.Thread):
    """The next item; if the producer died without saying why, an error instead of a hang."""
    while True:
        try:
            return q.get(timeout=1.0)
        except queue.Empty:
            if not producer.is_alive() and q.empty():
                raise RuntimeError("lakeio's batch producer stopped unexpectedly") from None


def drain(q: queue.Queue) -> None:
    while True:
        try:
            q.get_nowait()
        except queue.Empty:
            return
