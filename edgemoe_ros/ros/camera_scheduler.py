# SPDX-License-Identifier: Apache-2.0
"""Latest-frame-per-camera scheduling for the multi-camera node (no ROS; unit tested alone).

Why this shape: a live camera only ever wants its newest frame processed, so each camera holds
one pending slot (a newer frame replaces the older one, counted as a drop for that camera). The
inference thread takes one *round*: the newest pending frame of up to ``max_batch`` cameras,
starting after the camera served last, so a camera publishing at 30 Hz cannot starve one at
2 Hz (every camera with a pending frame is served within ceil(cameras / max_batch) rounds).
Frames of a round are grouped by task set so each group is one batched backbone call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Generic, TypeVar

F = TypeVar("F")
K = TypeVar("K", bound=Hashable)


class LatestFrameScheduler(Generic[F]):
    """One pending frame per camera; rounds of up to ``max_batch`` cameras in round-robin order."""

    def __init__(self, cameras: Sequence[str], max_batch: int) -> None:
        if not cameras:
            raise ValueError("no camera")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self._cameras = tuple(cameras)
        self._max_batch = max_batch
        self._pending: dict[str, F] = {}
        self._next = 0  # index of the camera the next round starts from
        self._cond = threading.Condition()
        self._closed = False
        self.offered = dict.fromkeys(self._cameras, 0)
        self.replaced = dict.fromkeys(self._cameras, 0)

    @property
    def cameras(self) -> tuple[str, ...]:
        return self._cameras

    def offer(self, camera: str, frame: F) -> bool:
        """Make ``frame`` the camera's pending frame; False if it replaced an untaken one."""
        with self._cond:
            self.offered[camera] += 1
            replaced = camera in self._pending
            if replaced:
                self.replaced[camera] += 1
            self._pending[camera] = frame
            self._cond.notify()
            return not replaced

    def take_round(self, timeout: float | None = None) -> list[tuple[str, F]]:
        """Wait up to ``timeout`` for a pending frame, then take the next round (may be empty on
        timeout or after ``close``)."""
        with self._cond:
            if not self._pending and not self._closed:
                self._cond.wait(timeout)
            n = len(self._cameras)
            order = [self._cameras[(self._next + i) % n] for i in range(n)]
            chosen = [c for c in order if c in self._pending][: self._max_batch]
            if chosen:
                self._next = (self._cameras.index(chosen[-1]) + 1) % n
            return [(c, self._pending.pop(c)) for c in chosen]

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def clear(self) -> None:
        """Forget pending frames (deactivate): they are counted as drops of their camera."""
        with self._cond:
            for camera in self._pending:
                self.replaced[camera] += 1
            self._pending.clear()

    def close(self) -> None:
        """Wake a waiting ``take_round`` (the inference thread is stopping)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def reopen(self) -> None:
        with self._cond:
            self._closed = False


def group_by(
    items: Sequence[tuple[str, F]], key: Callable[[str, F], K]
) -> dict[K, list[tuple[str, F]]]:
    """Items grouped by ``key(camera, frame)`` (e.g. the task set), in first-seen order."""
    groups: dict[K, list[tuple[str, F]]] = {}
    for camera, frame in items:
        groups.setdefault(key(camera, frame), []).append((camera, frame))
    return groups
