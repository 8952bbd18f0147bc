# SPDX-License-Identifier: Apache-2.0
"""Every parameter of ``edgemoe_node`` in one place: default, descriptor, validator.

The same validator runs at declare time (a bad override from a launch/params file stops the
node with an error naming the parameter and value) and in the node's set-parameters callback (a
bad ``ros2 param set`` is rejected with that same reason and the old value stays).

Parameters that shape the ROS graph (QoS, which subscriptions exist, queue length, timer period)
are read-only: changing them would need subscriptions rebuilt mid-flight. Model/backend choices
are writable and take effect on the next configure or ``~/reload_model``; task and output choices
take effect on the next frame.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter

from ..backends import BACKENDS, BackendError, parse_backend_options
from ..backends.options import check_options, check_options_any_backend
from ..model.config import RESIZE_MODES, TASKS
from .conversions import DEFAULT_MAX_IMAGE_PIXELS, OUTPUT_CODECS
from .diagnostics import (
    DEFAULT_EXPECTED_RATE_HZ,
    DEFAULT_INPUT_TIMEOUT_S,
    DEFAULT_RATE_TOLERANCE,
    DEFAULT_RATE_WINDOW_S,
    StreamLimits,
)
from .qos import DEFAULT_OUTPUT_DEPTH, INPUT_QOS_CHOICES, OUTPUT_DEPTH_RANGE, OUTPUT_QOS_CHOICES
from .task_switch import TaskRequestError, parse_task_list
from .topic_names import TRANSPORTS

OUTPUT_RESOLUTIONS = ("input", "model")
#: Frames waiting for the worker. 1 = latest frame wins, the right choice for live cameras.
QUEUE_SIZE_RANGE = (1, 100)
MAX_IMAGE_PIXELS_RANGE = (1, 1 << 28)
DIAGNOSTICS_PERIOD_RANGE = (0.1, 60.0)
#: Seconds one frame's inference may take before the backend counts as hung (watchdog.py).
#: Far above a frame's time on the backends (cpu: tens of ms; C-simulation: ~0.55 s per task).
DEFAULT_INFERENCE_TIMEOUT_S = 10.0
INFERENCE_TIMEOUT_RANGE = (0.1, 3600.0)
#: Input stream diagnostics (diagnostics.InputMonitor): expected rate (0 = learn it), tolerance
#: (a fraction below it, as diagnostic_updater's FrequencyStatusParam), window, timeout.
EXPECTED_RATE_RANGE = (0.0, 1000.0)
RATE_TOLERANCE_RANGE = (0.0, 0.99)
RATE_WINDOW_RANGE = (0.1, 3600.0)
INPUT_TIMEOUT_RANGE = (0.1, 3600.0)


class ParameterValueError(ValueError):
    """A parameter value that fails validation; the message names the parameter and the value."""

    def __init__(self, name: str, value: Any, reason: str) -> None:
        super().__init__(f"parameter '{name}' = {value!r}: {reason}")
        self.name, self.value, self.reason = name, value, reason


Validator = Callable[[Any], str | None]  # returns the reason a value is invalid, or None


def _one_of(choices: Sequence[str]) -> Validator:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(repr(c) for c in choices)}"
        return None
    return check


def _int_in(lo: int, hi: int) -> Validator:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            return f"must be an integer in [{lo}, {hi}]"
        return None
    return check


def _float_in(lo: float, hi: float, unit: str = "seconds") -> Validator:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            return f"must be a number in [{lo:g}, {hi:g}]" + (f" {unit}" if unit else "")
        return None
    return check


def _is_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def _use_compressed(value: Any) -> str | None:
    """The parameter ``image_transport`` replaced: only its old default passes."""
    if value is False:
        return None
    return ("was removed: it subscribed to image/compressed on top of image, so every frame was "
            "inferred and published twice; set image_transport: compressed instead (one input)")


def _weights_path(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if value and not value.endswith(".safetensors"):
        return "must be '' (the shipped model) or a path to a .safetensors file"
    if "\x00" in value:
        return "contains a NUL character"
    return None


def _fallback_backend(value: Any) -> str | None:
    if value == "":
        return None
    return _one_of(tuple(BACKENDS))(value)


def _backend_options(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string holding a JSON object"
    try:
        check_options_any_backend(parse_backend_options(value))
    except (ValueError, json.JSONDecodeError) as exc:
        return f"must be a JSON object like '{{\"timeout_s\": 2.0}}' ({exc})"
    except BackendError as exc:
        return str(exc)
    return None


def options_for_backend(backend: str, options_text: str) -> str | None:
    """Why ``options_text`` does not suit ``backend`` (unknown option, out of bounds), or None."""
    try:
        check_options(backend, parse_backend_options(options_text))
    except (ValueError, json.JSONDecodeError, BackendError) as exc:
        return str(exc)
    return None


def _tasks(value: Any) -> str | None:
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        return "must be a string array"
    try:
        parse_task_list(value)
    except TaskRequestError as exc:
        return str(exc)
    return None


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, default, human description, validator and range for the descriptor."""

    name: str
    default: Any
    description: str
    validate: Validator
    read_only: bool = False
    constraints: str = ""
    int_range: tuple[int, int] | None = None
    float_range: tuple[float, float] | None = None

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(description=self.description, read_only=self.read_only,
                                additional_constraints=self.constraints)
        if self.int_range:
            d.integer_range = [IntegerRange(from_value=self.int_range[0], to_value=self.int_range[1], step=1)]
        if self.float_range:
            d.floating_point_range = [FloatingPointRange(from_value=self.float_range[0],
                                                         to_value=self.float_range[1], step=0.0)]
        return d


_backend_names = ", ".join(BACKENDS)

PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("weights_path", "", "Model file (.safetensors with config metadata); '' = shipped "
              "edgemoe_ros/data/edgemoe_synth.safetensors. Applied on configure / ~/reload_model.",
              _weights_path, constraints="'' or a path ending in .safetensors"),
    ParamSpec("backend", "cpu", "Backbone backend. Applied on configure / ~/reload_model.",
              _one_of(tuple(BACKENDS)), constraints=_backend_names),
    ParamSpec("fallback_backend", "", "Backend used after the primary faults at run time; '' = none.",
              _fallback_backend, constraints="'' or " + _backend_names),
    ParamSpec("backend_options", "{}", "JSON object of keyword arguments for the backend, e.g. "
              "'{\"bitstream\": \"/path/edgemoe.bit\", \"timeout_s\": 2.0}'.",
              _backend_options, constraints="JSON object"),
    ParamSpec("tasks", list(TASKS), "Tasks to run: any of semseg, depth; or ['auto'] = a task runs only "
              "while its outputs have subscribers. Takes effect on the next frame.",
              _tasks, constraints="subset of [semseg, depth], or [auto]"),
    ParamSpec("output_resolution", "input", "'input': outputs at the camera resolution; 'model': at "
              "the model resolution (camera_info relays scaled to match).",
              _one_of(OUTPUT_RESOLUTIONS), constraints=", ".join(OUTPUT_RESOLUTIONS)),
    ParamSpec("resize_mode", "", "How frames are fitted to the model input: stretch, crop (centre "
              "crop to the model aspect), or '' = the model file's default. Applied on configure / "
              "~/reload_model.",
              _one_of(("",) + RESIZE_MODES), constraints="'', " + ", ".join(RESIZE_MODES)),
    ParamSpec("input_qos", "auto", "QoS of the image/camera_info subscriptions: auto = reliable "
              "from reliable publishers, best effort from best-effort ones (docs/qos.md).",
              _one_of(INPUT_QOS_CHOICES), read_only=True, constraints=", ".join(INPUT_QOS_CHOICES)),
    ParamSpec("output_qos", "reliable", "QoS of the output publishers.",
              _one_of(OUTPUT_QOS_CHOICES), read_only=True, constraints=", ".join(OUTPUT_QOS_CHOICES)),
    ParamSpec("output_depth", DEFAULT_OUTPUT_DEPTH, "History depth of the output publishers: messages "
              "a slow reliable subscriber may lag behind before the oldest is dropped for it.",
              _int_in(*OUTPUT_DEPTH_RANGE), read_only=True, int_range=OUTPUT_DEPTH_RANGE),
    ParamSpec("queue_size", 1, "Frames waiting for inference; when full the oldest is dropped "
              "(latest frame wins) and counted.", _int_in(*QUEUE_SIZE_RANGE), read_only=True,
              int_range=QUEUE_SIZE_RANGE),
    ParamSpec("image_transport", "raw", "Input transport, exactly one subscription: raw = "
              "sensor_msgs/Image on 'image'; compressed = sensor_msgs/CompressedImage (jpeg/png) on "
              "'<resolved image topic>/compressed', so remapping 'image' moves both.",
              _one_of(TRANSPORTS), read_only=True, constraints=", ".join(TRANSPORTS)),
    ParamSpec("use_compressed", False, "Removed: use image_transport. Only false is accepted.",
              _use_compressed, read_only=True, constraints="false (use image_transport)"),
    ParamSpec("publish_color", True, "Publish segmentation/color (rgb8 palette) for RViz.", _is_bool),
    ParamSpec("color_compression", "", "Also publish the colour segmentation as "
              "segmentation/color/compressed (sensor_msgs/CompressedImage, as image_transport's "
              "compressed plugin): '' = off, png (lossless) or jpeg.",
              _one_of(("",) + OUTPUT_CODECS), read_only=True,
              constraints="'', " + ", ".join(OUTPUT_CODECS)),
    ParamSpec("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS, "Larger input frames are rejected as "
              "'too_large' before any pixel is touched.", _int_in(*MAX_IMAGE_PIXELS_RANGE),
              int_range=MAX_IMAGE_PIXELS_RANGE),
    ParamSpec("inference_timeout", DEFAULT_INFERENCE_TIMEOUT_S, "Seconds one frame's inference may take; "
              "a backend that overruns counts as hung: /diagnostics ERROR, the frame is dropped and the "
              "node moves to fallback_backend.", _float_in(*INFERENCE_TIMEOUT_RANGE),
              float_range=INFERENCE_TIMEOUT_RANGE),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.",
              _float_in(*DIAGNOSTICS_PERIOD_RANGE), read_only=True, float_range=DIAGNOSTICS_PERIOD_RANGE),
    ParamSpec("autostart", True, "Configure and activate on start, so a plain launch (no lifecycle "
              "manager) produces output.", _is_bool, read_only=True),
    ParamSpec("expected_input_rate", DEFAULT_EXPECTED_RATE_HZ, "Frames per second the camera sends; "
              "/diagnostics WARN below expected_input_rate * (1 - input_rate_tolerance) over "
              "input_rate_window. 0 = unknown: learned from the stream.",
              _float_in(*EXPECTED_RATE_RANGE, unit="Hz"), float_range=EXPECTED_RATE_RANGE),
    ParamSpec("input_rate_tolerance", DEFAULT_RATE_TOLERANCE, "Fraction the input rate may fall below "
              "the expected (or learned) rate before /diagnostics turns WARN.",
              _float_in(*RATE_TOLERANCE_RANGE, unit=""), float_range=RATE_TOLERANCE_RANGE),
    ParamSpec("input_rate_window", DEFAULT_RATE_WINDOW_S, "Seconds over which the input rate is "
              "measured for /diagnostics.", _float_in(*RATE_WINDOW_RANGE), float_range=RATE_WINDOW_RANGE),
    ParamSpec("input_timeout", DEFAULT_INPUT_TIMEOUT_S, "Seconds without an input frame before "
              "/diagnostics turns ERROR (longer than input_rate_window, so a stopped camera is WARN "
              "first).", _float_in(*INPUT_TIMEOUT_RANGE), float_range=INPUT_TIMEOUT_RANGE),
    ParamSpec("diagnostics_use_fqn", False, "Name /diagnostics statuses after the node's fully "
              "qualified name without the leading slash ('front/edgemoe_node: inference') instead "
              "of its name ('edgemoe_node: inference'): for several nodes of one name in different "
              "namespaces.", _is_bool),
)

SPECS: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
#: Parameters still declared only to refuse an old params file that sets them (not in the config).
REMOVED_PARAMS = ("use_compressed",)


def validate(name: str, value: Any) -> None:
    """Raise :class:`ParameterValueError` if ``value`` is not valid for parameter ``name``."""
    try:
        spec = SPECS[name]
    except KeyError:
        raise ParameterValueError(name, value, "unknown parameter") from None
    reason = spec.validate(value)
    if reason:
        raise ParameterValueError(name, value, reason)


@dataclass(frozen=True)
class NodeParams:
    """A typed snapshot of every parameter (read once per configure / per frame, never mid-frame)."""

    weights_path: str
    backend: str
    fallback_backend: str
    backend_options: str
    tasks: tuple[str, ...]
    output_resolution: str
    resize_mode: str
    input_qos: str
    output_qos: str
    output_depth: int
    queue_size: int
    image_transport: str
    use_compressed: bool
    publish_color: bool
    color_compression: str
    max_image_pixels: int
    inference_timeout: float
    diagnostics_period: float
    autostart: bool
    expected_input_rate: float
    input_rate_tolerance: float
    input_rate_window: float
    input_timeout: float
    diagnostics_use_fqn: bool

    @property
    def backend_kwargs(self) -> dict[str, Any]:
        return parse_backend_options(self.backend_options)

    @property
    def stream_limits(self) -> StreamLimits:
        """The input stream diagnostics' limits (diagnostics.InputMonitor)."""
        return StreamLimits(float(self.expected_input_rate), float(self.input_rate_tolerance),
                            float(self.input_rate_window), float(self.input_timeout))


def _plain(value: Any) -> Any:
    return tuple(value) if isinstance(value, list | tuple) else value


def declare_all(node: Node) -> NodeParams:
    """Declare every parameter with its descriptor, then validate what was actually set.

    Raises :class:`ParameterValueError` on the first bad override so the process exits with a
    message naming it, instead of running with a half-valid configuration.
    """
    try:
        node.declare_parameters("", [(p.name, p.default, p.descriptor()) for p in PARAMS])
    except (InvalidParameterTypeException, InvalidParameterValueException) as exc:
        # rclpy's own checks (type from the default, descriptor ranges): same error, same exit.
        name = str(exc).rsplit(": ", 1)[-1]  # rclpy appends the parameter name to the message
        override = getattr(node, "_parameter_overrides", {}).get(name)
        spec = SPECS.get(name)
        if spec is None or override is None:
            raise ParameterValueError(name, None, str(exc)) from None
        reason = spec.validate(override.value) or str(exc)
        raise ParameterValueError(name, override.value, reason) from None
    params = read_all(node)
    for p in PARAMS:
        value = getattr(params, p.name)
        validate(p.name, list(value) if isinstance(value, tuple) else value)
    reason = options_for_backend(params.backend, params.backend_options)
    if reason:
        raise ParameterValueError("backend_options", params.backend_options, reason)
    stripped = normalize_request([Parameter("tasks", value=list(params.tasks))])
    if list(stripped[0].value) != list(params.tasks):
        node.set_parameters(stripped)
        params = read_all(node)
    return params


def normalize_request(parameters: Sequence[Parameter]) -> list[Parameter]:
    """For ``add_pre_set_parameters_callback``: task names stored without surrounding spaces, so
    ``param get tasks`` (and the multi-camera node's ``<camera>.tasks``) shows what runs
    (``' semseg '`` is accepted as ``semseg``)."""
    out = []
    for p in parameters:
        is_tasks = p.name == "tasks" or p.name.endswith(".tasks")
        if is_tasks and isinstance(p.value, list | tuple) and all(isinstance(v, str) for v in p.value):
            p = Parameter(p.name, Parameter.Type.STRING_ARRAY, [v.strip() for v in p.value])
        out.append(p)
    return out


def read_all(node: Node) -> NodeParams:
    """The current values as a :class:`NodeParams` snapshot."""
    return NodeParams(**{p.name: _plain(node.get_parameter(p.name).value) for p in PARAMS})


def check_set_request(parameters: Sequence[Parameter],
                      current: Callable[[str], Any] | None = None) -> SetParametersResult:
    """For ``add_on_set_parameters_callback``: reject the whole request at the first bad value.

    ``current(name)`` gives a parameter's present value: with it, ``backend_options`` is also
    checked against the backend it will run with (the request's, else the present one), so
    ``{"threads": 100000}`` or an option the backend does not take is refused here, not at the
    next reload.
    """
    for param in parameters:
        if param.name not in SPECS:
            continue  # e.g. use_sim_time: rclpy's own parameters
        try:
            validate(param.name, param.value)
        except ParameterValueError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
    requested = {p.name: p.value for p in parameters}
    if current is not None and ("backend" in requested or "backend_options" in requested):
        backend = requested.get("backend", current("backend"))
        options = requested.get("backend_options", current("backend_options"))
        reason = options_for_backend(backend, options)
        if reason:
            name = "backend_options" if "backend_options" in requested else "backend"
            return SetParametersResult(successful=False, reason=str(ParameterValueError(
                name, requested[name], f"{reason} (backend_options {options!r} with backend {backend!r}; "
                "set both atomically, or clear backend_options first)")))
    return SetParametersResult(successful=True)
