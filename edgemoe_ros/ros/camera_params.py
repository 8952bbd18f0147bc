# SPDX-License-Identifier: Apache-2.0
"""The multi-camera node's parameters beyond ``params.py``: the camera list, per-camera choices.

``cameras`` (read-only) names the cameras; for each, ``<name>.tasks``,
``<name>.output_resolution`` and ``<name>.image_transport`` are declared at start with the
node-wide ``tasks`` / ``output_resolution`` / ``image_transport`` as defaults, and validated by the
same validators as the single node's (a bad value in a params file stops the node naming the
parameter; a bad ``param set`` is refused; ``image_transport`` is read-only, like the
node-wide one).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
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
PER_CAMERA = ("tasks", "output_resolution", "image_transport")
#: Cameras served per backbone call at most (the accelerator's register map takes MAX_IMAGES).
MAX_BATCH_RANGE = (1, MAX_IMAGES)
DEFAULT_MAX_BATCH = 8
#: A camera whose last frame is older than this many seconds is WARN; 3x older, ERROR.
STALE_TIMEOUT_RANGE = (0.05, 3600.0)
DEFAULT_STALE_TIMEOUT_S = 1.0
STALE_ERROR_FACTOR = 3.0


@dataclass(frozen=True)
class CameraParams:
    """One camera's choices (a snapshot, read per frame)."""

    name: str
    tasks: tuple[str, ...]
    output_resolution: str
    image_transport: str


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


def declare_cameras(node: Node, defaults: NodeParams) -> tuple[tuple[str, ...], int, float]:
    """Declare ``cameras``, ``max_batch``, ``stale_timeout``, every ``<camera>.<param>``; validate.

    Returns (cameras, max_batch, stale_timeout). Raises :class:`ParameterValueError`.
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
    node.declare_parameter(
        "stale_timeout",
        DEFAULT_STALE_TIMEOUT_S,
        ParameterDescriptor(
            description=f"Seconds without a frame before a camera's diagnostics turn WARN "
            f"({STALE_ERROR_FACTOR:g}x: ERROR).",
            read_only=True,
            floating_point_range=[
                FloatingPointRange(
                    from_value=STALE_TIMEOUT_RANGE[0], to_value=STALE_TIMEOUT_RANGE[1], step=0.0
                )
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
    return (
        tuple(cameras),
        int(node.get_parameter("max_batch").value),
        float(node.get_parameter("stale_timeout").value),
    )


def read_camera(node: Node, camera: str) -> CameraParams:
    tasks = node.get_parameter(f"{camera}.tasks").value
    return CameraParams(
        camera,
        tuple(v.strip() for v in tasks),
        node.get_parameter(f"{camera}.output_resolution").value,
        node.get_parameter(f"{camera}.image_transport").value,
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
