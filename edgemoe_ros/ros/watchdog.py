# SPDX-License-Identifier: Apache-2.0
"""A time limit on backend calls: a hung accelerator must not hang the node (issue 22).

Python cannot stop a thread, so the calls run on a runner thread of the watchdog's own (one per
engine, reused for every frame: a new thread per frame would also spread frame buffers over new
malloc arenas) and the caller waits at most ``timeout_s`` for each. A call that overruns is
abandoned: the caller gets :class:`BackendHung` (the node counts a fault and moves to its fallback
backend), and until the abandoned call returns every further call fails at once instead of
queueing behind it. Whatever must not run while the abandoned call is still inside the backend
(closing it after a reload or cleanup) goes through :meth:`Watchdog.when_idle`.

Plain Python, no rclpy: the node owns one watchdog per engine it runs frames on.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

R = TypeVar("R")


class BackendHung(RuntimeError):
    """A backend call did not return within its time limit, or an earlier one still has not."""


class Watchdog:
    """Runs calls on its runner thread with a time limit; remembers a call that overran until it
    returns."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._job: tuple[Callable[[], Any], dict[str, Any], threading.Event] | None = None
        self._thread: threading.Thread | None = None
        self._closing = False
        self._busy_since: float | None = None  # the running call's start
        self._hung = False  # the running call overran and was abandoned
        self._deferred: list[Callable[[], None]] = []

    def call(self, timeout_s: float, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)`` on the runner thread, or :class:`BackendHung` after
        ``timeout_s``."""
        done, outcome = threading.Event(), {}
        with self._cond:
            if self._hung:
                raise BackendHung(f"backend '{self.name}' still has not returned from a call that "
                                  f"started {self._clock() - self._busy_since:.1f} s ago")
            if self._closing:
                raise BackendHung(f"backend '{self.name}' is closed")
            self._ensure_runner()
            self._job = (lambda: fn(*args, **kwargs), outcome, done)
            self._cond.notify_all()
        if not done.wait(timeout_s):
            with self._cond:
                if not done.is_set():  # still running: abandon it
                    self._hung = True
                    raise BackendHung(f"backend '{self.name}' did not return within "
                                      f"{timeout_s:g} s")
        error = outcome.pop("error", None)
        if error is not None:
            # Raised from a local cleared on the way out: an exception kept in this frame (or in
            # ``outcome``) is a reference cycle through its own traceback, which holds the call's
            # frames and the model they ran until a full collection (after a reload's trim).
            try:
                raise error
            finally:
                error = None
        return outcome.pop("value")

    def hung_for(self) -> float | None:
        """Seconds the abandoned call has been running, or None if no call is hung."""
        with self._cond:
            return (self._clock() - self._busy_since
                    if self._hung and self._busy_since is not None else None)

    def when_idle(self, action: Callable[[], None]) -> bool:
        """Run ``action`` now if no abandoned call is inside the backend, else when it returns.

        Returns True if it ran now. Used to close a backend: closing one a thread is still
        computing in would free memory under it.
        """
        with self._cond:
            if self._hung:
                self._deferred.append(action)
                return False
        action()
        return True

    def close(self) -> None:
        """End the runner thread (after a hung call returns, if one is inside); no more calls."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()

    def _ensure_runner(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"edgemoe-{self.name}",
                                            daemon=True)

            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._closing)
                if self._job is None:
                    return
                (fn, outcome, done), self._job = self._job, None
                self._busy_since = self._clock()
            try:
                outcome["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                outcome["error"] = exc
            with self._cond:
                done.set()
                self._busy_since, self._hung = None, False
                deferred, self._deferred = self._deferred, []
            # Forget the call before waiting for the next: its arguments (a frame, the model it
            # ran on) must not outlive it, e.g. on a primary idle after a fault until a reload.
            fn = outcome = done = None
            for action in deferred:
                action()
            deferred = []
