"""A time limit on backend calls: a hung accelerator must not hang the node (issue 22).

Python cannot stop a thread, so each call runs on a short-lived thread of its own and the caller
waits at most ``timeout_s`` for it. A call that overruns is abandoned: the caller gets
:class:`BackendHung` (the node counts a fault and moves to its fallback backend), and until the
abandoned call returns every further call through the same watchdog fails at once instead of
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
    """Runs calls with a time limit; remembers a call that overran until it returns."""

    def __init__(self, name: str, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._hung_since: float | None = None
        self._hung_timeout = 0.0
        self._deferred: list[Callable[[], None]] = []

    def call(self, timeout_s: float, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
        """``fn(*args, **kwargs)``, or :class:`BackendHung` after ``timeout_s`` seconds."""
        with self._lock:
            if self._hung_since is not None:
                raise BackendHung(f"backend '{self.name}' still has not returned from a call that "
                                  f"started {self._clock() - self._hung_since:.1f} s ago")
        done = threading.Event()
        outcome: dict[str, Any] = {}

        def run() -> None:
            try:
                outcome["value"] = fn(*args, **kwargs)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller below
                outcome["error"] = exc
            finally:
                done.set()
                self._returned(started)

        started = self._clock()
        thread = threading.Thread(target=run, name=f"edgemoe-call-{self.name}", daemon=True)
        thread.start()
        if not done.wait(timeout_s):
            with self._lock:
                if not done.is_set():  # still running: abandon it
                    self._hung_since, self._hung_timeout = started, timeout_s
                    raise BackendHung(f"backend '{self.name}' did not return within {timeout_s:g} s")
        if "error" in outcome:
            raise outcome["error"]
        return outcome["value"]

    def hung_for(self) -> float | None:
        """Seconds the abandoned call has been running, or None if no call is hung."""
        with self._lock:
            return None if self._hung_since is None else self._clock() - self._hung_since

    def when_idle(self, action: Callable[[], None]) -> bool:
        """Run ``action`` now if no abandoned call is inside the backend, else when it returns.

        Returns True if it ran now. Used to close a backend: closing one a thread is still
        computing in would free memory under it.
        """
        with self._lock:
            if self._hung_since is not None:
                self._deferred.append(action)
                return False
        action()
        return True

    def _returned(self, started: float) -> None:
        with self._lock:
            if self._hung_since != started:
                return
            self._hung_since = None
            deferred, self._deferred = self._deferred, []
        for action in deferred:
            action()
