# SPDX-License-Identifier: Apache-2.0
"""Which tasks run on the next frame: the node's task state machine (pure Python, no rclpy).

Four inputs change the state (SPEC §5): the ``tasks`` parameter, the ``~/enable_<task>`` SetBool
services, the ``~/task_request`` topic and ``auto``. They all funnel through this class so they
cannot disagree, and the worker takes ONE immutable :class:`TaskState` per frame, so a frame never
mixes two states even when a switch arrives while it is being processed.

State = (mode, enabled set):

* ``explicit``: exactly the enabled tasks run.
* ``auto`` (lazy): every task runs only while one of its outputs has a subscriber.

An explicit command (SetBool, a task list) leaves ``auto``; SetBool then starts from what was
*running* at that moment, which is what the user saw and expects to edit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..model.config import TASKS

#: The word that selects lazy mode in the ``tasks`` parameter and on ``~/task_request``.
AUTO = "auto"
MODE_EXPLICIT = "explicit"
MODE_AUTO = "auto"


class TaskRequestError(ValueError):
    """A task list or request string that names unknown tasks or is malformed."""


@dataclass(frozen=True)
class TaskState:
    """One immutable view of the task state, taken once per frame.

    ``active``: tasks to run on this frame, in task-id order. ``version`` increases on every change
    of mode/enabled set, so tests and diagnostics can tell a switch took effect.
    """

    mode: str
    enabled: tuple[str, ...]
    active: tuple[str, ...]
    version: int


def parse_task_list(values: Sequence[str], known: Sequence[str] = TASKS) -> tuple[str, ...] | None:
    """Validate a task list: ``["auto"]`` → ``None`` (lazy mode), else a tuple in task-id order.

    Rejects unknown names, duplicates and ``auto`` mixed with task names, naming the offender.
    An empty list is valid: nothing runs (the same as disabling every task by service).
    """
    names = [str(v).strip() for v in values]
    if AUTO in names:
        if len(names) != 1:
            raise TaskRequestError(f"'{AUTO}' must be the only entry, got {list(values)!r}")
        return None
    unknown = [n for n in names if n not in known]
    if unknown:
        raise TaskRequestError(
            f"unknown task name(s) {unknown!r}; valid: {', '.join(known)} or '{AUTO}'")
    if len(set(names)) != len(names):
        raise TaskRequestError(f"duplicate task names in {list(values)!r}")
    return tuple(t for t in known if t in names)


def parse_task_request(text: str, known: Sequence[str] = TASKS) -> tuple[str, ...] | None:
    """Parse a ``~/task_request`` string: ``semseg``, ``depth``, ``semseg,depth`` or ``auto``.

    ``none`` is not accepted on purpose: disabling everything is an explicit SetBool action.
    """
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise TaskRequestError(f"malformed task request {text!r}; expected e.g. 'semseg', "
                               f"'semseg,depth' or '{AUTO}'")
    return parse_task_list(parts, known)


class TaskSwitch:
    """Thread-safe task state shared by ROS callbacks (writers) and the worker (reader)."""

    def __init__(self, initial: Sequence[str] = TASKS, known: Sequence[str] = TASKS) -> None:
        self._known = tuple(known)
        self._lock = threading.Lock()
        self._mode = MODE_EXPLICIT
        self._enabled: tuple[str, ...] = self._known
        self._version = 0
        #: What the last snapshot ran, used as the starting point when SetBool leaves auto mode.
        self._last_active: tuple[str, ...] = ()
        self.set_tasks(initial)

    @property
    def known(self) -> tuple[str, ...]:
        return self._known

    def set_tasks(self, values: Sequence[str]) -> bool:
        """Set from a task list (parameter). Returns True if the state changed."""
        parsed = parse_task_list(values, self._known)
        if parsed is None:
            return self._update(MODE_AUTO, self._known)
        return self._update(MODE_EXPLICIT, parsed)

    def request(self, text: str) -> bool:
        """Apply a ``~/task_request`` string. Raises :class:`TaskRequestError`; state then
        unchanged."""
        parsed = parse_task_request(text, self._known)
        if parsed is None:
            return self._update(MODE_AUTO, self._known)
        return self._update(MODE_EXPLICIT, parsed)

    def enable(self, task: str, on: bool, subscribed: Mapping[str, bool] | None = None) -> bool:
        """SetBool path: switch one task on or off; leaves auto mode (see module docstring).

        ``subscribed``: who listens right now, so leaving auto starts from what is running even
        before the next frame; without it the last frame's active set is used.
        """
        if task not in self._known:
            raise TaskRequestError(f"unknown task {task!r}; valid: {', '.join(self._known)}")
        with self._lock:
            if self._mode == MODE_AUTO:
                base = (tuple(t for t in self._enabled if subscribed.get(t))
                        if subscribed is not None
                        else self._last_active)
            else:
                base = self._enabled
            wanted = set(base) | {task} if on else set(base) - {task}
            enabled = tuple(t for t in self._known if t in wanted)
            return self._update_locked(MODE_EXPLICIT, enabled)

    def as_parameter(self) -> list[str]:
        """The state written back to the ``tasks`` parameter so ``param get`` tells the truth."""
        with self._lock:
            return [AUTO] if self._mode == MODE_AUTO else list(self._enabled)

    def snapshot(self,
                 subscribed: Mapping[str, bool] | Iterable[str]
                 | Callable[[], Mapping[str, bool]] = ()
                 ) -> TaskState:
        """The state for one frame. ``subscribed``: tasks whose outputs have subscribers (auto
        mode), or a function returning them, called under the lock only when the mode is auto.

        Pass the function: reading the mode first and asking for subscribers only if it was auto
        lost a frame (``skipped_no_task``) whenever a switch to auto landed between the two.
        """
        with self._lock:
            if self._mode == MODE_AUTO:
                listened = _listened(subscribed() if callable(subscribed) else subscribed)
                active = tuple(t for t in self._enabled if t in listened)
            else:
                active = self._enabled
            self._last_active = active
            return TaskState(self._mode, self._enabled, active, self._version)

    @property
    def mode(self) -> str:
        with self._lock:
            return self._mode

    def _update(self, mode: str, enabled: tuple[str, ...]) -> bool:
        with self._lock:
            return self._update_locked(mode, enabled)

    def _update_locked(self, mode: str, enabled: tuple[str, ...]) -> bool:
        if (mode, enabled) == (self._mode, self._enabled):
            return False
        self._mode, self._enabled = mode, enabled
        self._version += 1
        return True


def _listened(subscribed: Mapping[str, bool] | Iterable[str]) -> set[str]:
    """The tasks with a subscriber, from a {task: has_subscriber} mapping or an iterable of
    names."""
    if isinstance(subscribed, Mapping):
        return {t for t, has in subscribed.items() if has}
    return set(subscribed)
