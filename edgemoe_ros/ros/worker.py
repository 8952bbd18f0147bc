# SPDX-License-Identifier: Apache-2.0
"""Inference off the subscription callback: a bounded latest-frame-wins queue and one worker
thread.

Why: a DDS callback that runs a 60 ms backbone backs up the middleware, and queued camera frames
only add latency. The callback only enqueues; when the queue is full the *oldest* frame is
dropped and counted, so the worker always processes the freshest frame.

Each frame is processed with exactly one state snapshot (``state_fn()`` is called once per frame,
right before processing), so a task switch arriving mid-frame applies to the next frame only.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

_log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S")

#: How long ``stop`` waits for the frame in progress before giving up on the thread.
STOP_TIMEOUT_S = 10.0


class FrameWorker(Generic[T, S]):
    """One thread that calls ``process(item, state)`` for the newest queued items.

    ``state_fn`` is called once per item, in the worker thread, just before ``process``.
    Exceptions from ``process`` are logged and counted in ``failed``; the worker keeps going.
    """

    def __init__(self, process: Callable[[T, S], None], state_fn: Callable[[], S], queue_size: int,
                 name: str = "edgemoe-worker") -> None:
        if queue_size < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        self._process = process
        self._state_fn = state_fn
        self._queue: collections.deque[T] = collections.deque()
        self._queue_size = queue_size
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = False
        self._thread: threading.Thread | None = None
        self._name = name
        self.submitted = 0
        self.dropped = 0
        self.processed = 0
        self.failed = 0

    def start(self) -> None:
        """Start the worker thread, or keep the one there is.

        A thread that outlived ``stop``'s join timeout (a hung backend) still holds the frame it
        was given; starting a second one beside it would let two threads process and publish
        concurrently, out of order. So that thread is told to carry on instead: it takes the
        next frame once its stuck one returns. Only a thread that has left its loop is replaced.
        """
        with self._cond:
            self._stopping = False
            if self._thread is not None:
                if self._thread.is_alive():
                    return
            self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
            self._thread.start()

    def submit(self, item: T) -> bool:
        """Enqueue; returns False if an older frame had to be dropped to make room."""
        with self._cond:
            self.submitted += 1
            kept = True
            while len(self._queue) >= self._queue_size:
                self._queue.popleft()
                self.dropped += 1
                kept = False
            self._queue.append(item)
            self._cond.notify()
            return kept

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> bool:
        """Stop after the frame in progress; queued frames are discarded (counted as dropped).

        Returns False if the thread did not finish within ``timeout`` (a hung backend).
        """
        with self._cond:
            thread = self._thread
            self._stopping = True
            self.dropped += len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
        if thread is None:
            return True
        thread.join(timeout)
        alive = thread.is_alive()
        if alive:
            # Keep the handle: ``start`` must know this thread still exists (see there).
            _log.error("worker thread %s still running after %.1f s", self._name, timeout)
        return not alive

    @property
    def running(self) -> bool:
        """True while a thread is there to process frames (not stopping, not stopped)."""
        with self._cond:
            return self._thread is not None and not self._stopping

    @property
    def threads_alive(self) -> int:
        """Worker threads of this object still alive (0 or 1; tests and diagnostics)."""
        with self._cond:
            return int(self._thread is not None and self._thread.is_alive())

    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    def wait_idle(self, timeout: float) -> bool:
        """Block until the queue is empty and nothing is being processed (tests, shutdown)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and not self._busy, timeout)

    def counters(self) -> dict[str, int]:
        with self._cond:
            return {"submitted": self.submitted, "dropped": self.dropped,
                    "processed": self.processed,
                    "failed": self.failed, "pending": len(self._queue)}

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    # Decided under the lock, so ``start`` either saw the flag cleared before
                    # this (and the thread carries on) or sees no thread and starts a new one.
                    if self._thread is threading.current_thread():
                        self._thread = None
                    return
                item = self._queue.popleft()
                self._busy = True
            ok = False
            try:
                state: Any = self._state_fn()
                self._process(item, state)
                ok = True
            except Exception:  # noqa: BLE001 - one bad frame must not kill the worker
                _log.exception("frame processing failed")
            finally:
                with self._cond:
                    self._busy = False
                    if ok:
                        self.processed += 1
                    else:
                        self.failed += 1
                    self._cond.notify_all()
