# SPDX-License-Identifier: Apache-2.0
"""The ROS side of task switching: SetBool services, the ``task_request`` topic, the mirror into
parameters (SPEC §5). The state machine itself is :mod:`task_switch` (no rclpy).

Why a class of its own: the single-camera node controls one :class:`TaskSwitch`; the
multi-camera node controls one per camera (``~/<camera>/enable_depth``) and all of them at once
(``~/enable_depth``). Both are the same handlers over a list of :class:`TaskTarget`, so every
path behaves the same whichever node and however many cameras it addresses.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rclpy.parameter import Parameter
from std_msgs.msg import String
from std_srvs.srv import SetBool

from .task_switch import TaskRequestError, TaskSwitch, parse_task_request

#: Service names under a controls' prefix, per task.
SRV_ENABLE = {"semseg": "enable_segmentation", "depth": "enable_depth"}
TOPIC_TASK_REQUEST = "task_request"
TASK_REQUEST_QOS_DEPTH = 10


@dataclass(frozen=True)
class TaskTarget:
    """One task switch a command applies to, and the parameter that mirrors its state.

    ``subscribed``: which tasks have a listener right now, so SetBool leaving ``auto`` starts
    from what runs. ``label``: how messages name it ('' for the single node's only switch).
    """

    switch: TaskSwitch
    parameter: str
    subscribed: Callable[[], Mapping[str, bool]]
    label: str = ""


class TaskControls:
    """``<prefix>enable_segmentation`` / ``<prefix>enable_depth`` (SetBool) and
    ``<prefix>task_request`` (String) applying each command to every target, then writing each
    target's state back into its parameter so ``param get`` tells what runs."""

    def __init__(
        self,
        node: Any,
        prefix: str,
        targets: Sequence[TaskTarget],
        on_bad_request: Callable[[TaskRequestError], None],
        callback_group: Any,
    ) -> None:
        self._node = node
        self._prefix = prefix
        self._targets = tuple(targets)
        self._on_bad_request = on_bad_request
        self._mirroring = threading.local()
        for task, name in SRV_ENABLE.items():
            node.create_service(
                SetBool, prefix + name, self._enable_handler(task), callback_group=callback_group
            )
        node.create_subscription(
            String,
            prefix + TOPIC_TASK_REQUEST,
            self.on_task_request,
            TASK_REQUEST_QOS_DEPTH,
            callback_group=callback_group,
        )

    @property
    def mirroring(self) -> bool:
        """True inside this thread's parameter write-back: the node's post-set callback then
        sees a mirror of a state already applied, not a new command to fan out."""
        return getattr(self._mirroring, "active", False)

    def enable(self, task: str, on: bool) -> str:
        """Switch ``task`` on or off on every target; the message says what now runs."""
        changed = False
        for target in self._targets:
            changed |= target.switch.enable(task, on, subscribed=target.subscribed())
        self.mirror()
        return (
            f"{task} {'enabled' if on else 'disabled'}; tasks now {self.describe()}"
            + ("" if changed else " (unchanged)")
        )

    def on_task_request(self, msg: String) -> None:
        """``task_request``: validated once, then applied to every target (all or none)."""
        try:
            parse_task_request(msg.data)
        except TaskRequestError as exc:
            self._on_bad_request(exc)
            return
        changed = False
        for target in self._targets:
            changed |= target.switch.request(msg.data)
        self.mirror()
        if changed:
            self._node.get_logger().info(
                f"tasks set by {self._prefix}{TOPIC_TASK_REQUEST}: {self.describe()}"
            )

    def mirror(self) -> None:
        """Write every target's state into its parameter (one write, as a user's would be)."""
        values = [
            Parameter(t.parameter, Parameter.Type.STRING_ARRAY, t.switch.as_parameter())
            for t in self._targets
        ]
        self._mirroring.active = True
        try:
            results = self._node.set_parameters(values)
        finally:
            self._mirroring.active = False
        for value, result in zip(values, results, strict=True):
            if not result.successful:
                self._node.get_logger().error(
                    f"could not mirror {value.name} = {value.value} into the parameter: "
                    f"{result.reason}"
                )

    def describe(self) -> str:
        """``['semseg']`` for one unlabelled target, ``front ['semseg'], rear [...]`` for more."""
        return ", ".join(
            f"{t.label} {t.switch.as_parameter()}" if t.label else str(t.switch.as_parameter())
            for t in self._targets
        )

    def _enable_handler(self, task: str) -> Callable[[SetBool.Request, SetBool.Response], Any]:
        def handle(request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
            response.message = self.enable(task, bool(request.data))
            response.success = True
            self._node.get_logger().info(response.message)
            return response

        return handle
