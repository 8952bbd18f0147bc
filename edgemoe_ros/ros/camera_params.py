# SPDX-License-Identifier: Apache-2.0
"""The multi-camera node's parameters beyond ``params.py``: the camera list, per-camera choices.

``cameras`` (read-only) names the cameras; for each, ``<name>.tasks``,
``<name>.output_resolution``, ``<name>.image_transport`` and ``<name>.expected_input_rate`` are
declared at start with the node-wide parameter of that name as default, and validated by the same
validators as the single node's (a bad value in a params file stops the node naming the
parameter; a bad ``param set`` is refused; ``image_transport`` is read-only, like the node-wide
one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..accel.interface import MAX_IMAGES
from .params import SPECS, NodeParams, ParameterValueError

#: One ROS name token: the camera's namespace for its topics and the prefix of its parameters.
CAMERA_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
#: Per-camera parameters: suffix -> the node-wide parameter it defaults to and is validated like.
PER_CAMERA = ("tasks", "output_resolution", "image_transport", "expected_input_rate")
#: Cameras served per backbone call at most (the accelerator's register map takes MAX_IMAGES).
MAX_BATCH_RANGE = (1, MAX_IMAGES)
DEFAULT_MAX_BATCH = 8


@dataclass(frozen=True)
class CameraParams:
    """One camera's choices (a snapshot, read per frame)."""

    name: str
    tasks: tuple[str, ...]
    output_resolution: str
    image_transport: str
    #: Frames/s this camera sends (0 = unknown: learned from its stream), for its diagnostics.
    expected_input_rate: float


def check_camera_names(value: Any) -> str | None:
    """Why ``value`` is not a usable camera list, or None."""
    if (
        not isinstance(value, list | tuple)
        or not value
        or not all(isinstance(v, str) for v in value)
    ):
        return "must be a non-empty string array"
    bad = [v for v in value if not CAMERA_NAME.match(v)]
    if bad:
        return f"camera names must be ROS name tokens (letter, then letters/digits/_), got {bad!r}"
    if len(set(value)) != len(value):
        return f"camera names must be unique, got {list(value)!r}"
    return None


def declare_cameras(node: Node, defaults: NodeParams) -> tuple[tuple[str, ...], int]:
    """Declare ``cameras``, ``max_batch``, every ``<camera>.<param>``; validate.

    A camera's stream is judged by its ``<camera>.expected_input_rate`` and the node-wide
    ``input_rate_*`` and ``input_timeout`` (params.py), each camera on its own (with an unknown
    rate, each camera's is learned from its own stream). Returns (cameras, max_batch). Raises
    :class:`ParameterValueError`.
    """
    node.declare_parameter(
        "cameras",
        Parameter.Type.STRING_ARRAY,
        ParameterDescriptor(
            description="Camera names; each camera's topics are <name>/image (or its "
            "<name>.image_transport), <name>/camera_info and its outputs under <name>/.",
            read_only=True,
        ),
    )
    node.declare_parameter(
        "max_batch",
        DEFAULT_MAX_BATCH,
        ParameterDescriptor(
            description="Cameras' frames per backbone call at most.",
            read_only=True,
            integer_range=[
                IntegerRange(from_value=MAX_BATCH_RANGE[0], to_value=MAX_BATCH_RANGE[1], step=1)
            ],
        ),
    )
    cameras = node.get_parameter("cameras").value
    reason = check_camera_names(cameras)
    if reason:
        raise ParameterValueError("cameras", cameras, reason)
    for camera in cameras:
        for suffix in PER_CAMERA:
            name = f"{camera}.{suffix}"
            spec = SPECS[suffix]
            default = getattr(defaults, suffix)
            node.declare_parameter(
                name,
                list(default) if isinstance(default, tuple) else default,
                ParameterDescriptor(
                    description=f"{camera}: {spec.description}",
                    additional_constraints=spec.constraints,
                    read_only=spec.read_only,
                ),
            )
            value = node.get_parameter(name).value
            reason = spec.validate(value)
            if reason:
                raise ParameterValueError(name, value, reason)
    return tuple(cameras), int(node.get_parameter("max_batch").value)


def read_camera(node: Node, camera: str) -> CameraParams:
    tasks = node.get_parameter(f"{camera}.tasks").value
    return CameraParams(
        camera,
        tuple(v.strip() for v in tasks),
        node.get_parameter(f"{camera}.output_resolution").value,
        node.get_parameter(f"{camera}.image_transport").value,
        float(node.get_parameter(f"{camera}.expected_input_rate").value),
    )


def check_camera_request(
    parameters: Sequence[Parameter], cameras: Sequence[str]
) -> SetParametersResult:
    """For ``add_on_set_parameters_callback``: per-camera values checked like node-wide ones."""
    for p in parameters:
        camera, _, suffix = p.name.rpartition(".")
        if camera in cameras and suffix in PER_CAMERA:
            reason = SPECS[suffix].validate(p.value)
            if reason:
                return SetParametersResult(
                    successful=False, reason=str(ParameterValueError(p.name, p.value, reason))
                )
    return SetParametersResult(successful=True)
