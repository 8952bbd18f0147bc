# SPDX-License-Identifier: Apache-2.0
"""One stage of the multi-camera node's frame pipeline: a thread working a bounded FIFO queue.

Why stages: one thread doing backbone, heads and publishing for every camera in turn leaves the
second core (or the accelerator) idle while the host works. The node chains three stages, each
on its own thread: backbone (the backend), heads + decoding (host), publishing; a batch's heads
run while the next batch's backbone runs. FIFO queues keep every camera's frames in the order
they were taken, and a bounded queue makes a slow stage hold back the one before it instead of
piling frames up. No ROS here (unit tested alone: test_frame_stage.py).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

_STOP = object()


class _Barrier:
    """Queued by ``drain``: set when every item put before it has been handled."""

    def __init__(self) -> None:
        self.reached = threading.Event()


class Stage(Generic[T]):
    """``handle(item)`` for every item ``put``, in order, on the stage's own thread.

    An exception from ``handle`` goes to ``on_error`` and the stage takes the next item: one bad
    frame must not end the pipeline. ``stop`` lets every item already put finish first.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[T], None],
        on_error: Callable[[Exception], None],
        depth: int,
    ) -> None:
        if depth < 1:
            raise ValueError(f"stage depth must be >= 1, got {depth}")
        self._handle = handle
        self._on_error = on_error
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def put(self, item: T) -> None:
        """Queue ``item``; blocks while ``depth`` items wait (the stage is behind)."""
        self._queue.put(item)

    def drain(self, timeout: float) -> bool:
        """Wait until every item put so far has been handled (items put meanwhile may still
        wait); False if that took longer than ``timeout``. Why: a model swap must not close the
        engine an item in flight still runs on."""
        barrier = _Barrier()
        deadline = time.monotonic() + timeout
        try:
            self._queue.put(barrier, timeout=timeout)
        except queue.Full:
            return False
        return barrier.reached.wait(max(0.0, deadline - time.monotonic()))

    def stop(self, timeout: float) -> bool:
        """Finish the items already put, then end the thread; False if it did not end in time."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not _STOP:
            if isinstance(item, _Barrier):
                item.reached.set()
                continue
            try:
                self._handle(item)  # type: ignore[arg-type]
            except Exception as exc:  # noqa: BLE001 - reported, and the next item goes on
                self._on_error(exc)
