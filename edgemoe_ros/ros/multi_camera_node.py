# SPDX-License-Identifier: Apache-2.0
"""``edgemoe_multi_node``: one lifecycle node, one engine, one backend/accelerator for N cameras.

Why one process: N ``edgemoe_node`` processes hold N copies of the model and, with
``backend: fpga``, N processes would program one device. Here the ``cameras`` parameter names
the cameras; camera ``c`` is read from ``c/image`` (or, with ``c.image_transport: compressed``,
``<resolved c/image>/compressed``) + ``c/camera_info`` and published under ``c/`` with the single
node's layout (outputs.py). Each camera has its own ``c.tasks``, ``c.output_resolution`` and
``c.image_transport``.

Threads: DDS callbacks validate metadata and leave the frame in its camera's one-frame slot
(camera_scheduler.py: latest frame wins, round-robin, no camera starves). One inference thread
takes a round (the newest frame of up to ``max_batch`` cameras), groups it by task set and runs
each group's backbone as ONE call (``Engine.run_backbone``): the backend sees a (B, H, W, 3)
batch, so each expert's weights are read once per batch instead of once per camera
(docs/multi_camera.md). A heads stage finishes the batch (``Engine.finish_batch``) while the
backbone runs the next one, and a publish stage publishes (stage.py: FIFO, bounded).

Diagnostics: one status per camera (rate, latency, drops, bad input, stale or absent stream and
missing camera_info as the single node judges them: diagnostics.InputMonitor, per camera) and
one for the backend/accelerator.

Run-time controls (docs/multi_camera.md): the single node's task switches per camera
(``~/<c>/enable_depth``, ``~/<c>/task_request``, ``<c>.tasks``, ``auto`` by who subscribes to
camera c's outputs) and for all cameras at once (``~/enable_depth``, ``~/task_request``,
``tasks``); ``~/reload_model`` swaps the one model all cameras run on.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.task import Future
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from ..engine import BackboneBatch, Engine, FrameResult
from ..postprocess import camera_k_from_info, model_palette
from . import conversions as conv
from . import topic_names
from .camera_params import (
    CameraParams,
    check_camera_request,
    declare_cameras,
    read_camera,
)
from .camera_scheduler import LatestFrameScheduler, group_by
from .cdr_image import ImageView, read_image
from .diagnostics import (
    KeyedThrottle,
    LatencyWindow,
    NodeStats,
    RollingRate,
    build_status,
    status_prefix,
    with_stream,
)
from .guards import serialised
from .label_info import TOPIC_LABEL_INFO, LabelInfoPublisher
from .lifecycle_common import (
    SRV_RELOAD,
    STATE_ACTIVE,
    STATE_INACTIVE,
    LifecycleCommon,
)
from .model_loader import LoadedModel, load_weights_for
from .outputs import TASK_TOPICS, CameraOutputs
from .params import (
    check_set_request,
    declare_all,
    normalize_request,
    read_all,
)
from .qos import INPUT_DEPTH
from .qos import profile as qos_profile
from .spin import spin_lifecycle_node
from .stage import Stage
from .task_controls import TaskControls, TaskTarget
from .task_switch import TaskRequestError, TaskSwitch
from .watchdog import BackendHung

NODE_NAME = "edgemoe_multi_node"
TOPIC_IMAGE = topic_names.IMAGE
TOPIC_CAMERA_INFO = topic_names.CAMERA_INFO
TOPIC_DIAGNOSTICS = "/diagnostics"
DIAGNOSTICS_QOS_DEPTH = 10
#: How long the inference thread waits for a frame before checking whether it must stop.
POLL_S = 0.1
STOP_TIMEOUT_S = 10.0
#: Name of the backend/accelerator status (after the node's name).
ACCELERATOR_STATUS = "accelerator"
#: Batches waiting for the heads stage: one, so the backbone runs at most one batch ahead.
HEADS_DEPTH = 1
#: Batches of frames waiting for the publish stage (as the publisher's queue before the stages).
PUBLISH_DEPTH_BATCHES = 2
#: Batches whose sizes the accelerator status averages.
BATCH_HISTORY = 100


@dataclass
class Camera:
    """Everything the node keeps per camera; counters are cumulative over lifecycle cycles."""

    name: str
    tasks: TaskSwitch
    stats: NodeStats = field(default_factory=NodeStats)
    info: CameraInfo | None = None
    outputs: CameraOutputs | None = None
    label_info: LabelInfoPublisher | None = None
    warned_no_k: bool = False
    seen: dict[str, int] = field(default_factory=dict)  # counts at the last diagnostics report

    def topic(self, name: str) -> str:
        return f"{self.name}/{name}"

    def subscribed(self) -> dict[str, bool]:
        """Per task: does any of this camera's outputs have a subscriber (``auto`` mode)."""
        outputs = self.outputs
        return outputs.subscribed() if outputs is not None else dict.fromkeys(TASK_TOPICS, False)

    def task_target(self) -> TaskTarget:
        return TaskTarget(self.tasks, f"{self.name}.tasks", self.subscribed, self.name)


@dataclass(frozen=True)
class Pending:
    """A frame waiting in its camera's slot."""

    msg: Image | ImageView | CompressedImage
    compressed: bool = False


@dataclass(frozen=True)
class HeadsJob:
    """A group whose backbone has run, on its way to the heads stage."""

    model: LoadedModel
    engine: Engine  # primary or fallback: the one the backbone ran on
    group: list[Outbound]
    state: BackboneBatch
    palette: np.ndarray | None
    backbone_ms: float  # fit + backbone, through the watchdog


@dataclass(frozen=True)
class Outbound:
    """A frame past the backbone: what heads and publishing need, without its pixels (at 720p
    the decoded input is 2.7 MB; the stages would otherwise hold up to 3 batches of them)."""

    camera: Camera
    params: CameraParams
    header: Header
    input_size: tuple[int, int]  # (height, width) of the camera image

    @classmethod
    def of(cls, frame: Decoded) -> Outbound:
        h, w = frame.rgb.shape[:2]
        return cls(frame.camera, frame.params, frame.header, (h, w))


@dataclass(frozen=True)
class Decoded:
    """A frame taken from its slot and decoded, with the camera choices it is processed with."""

    camera: Camera
    params: CameraParams
    header: Header
    rgb: np.ndarray
    tasks: tuple[str, ...]


class MultiCameraNode(LifecycleCommon, LifecycleNode):
    """Lifecycle node: N cameras in, per-camera segmentation / depth / camera_info out."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._steady_clock = Clock(clock_type=ClockType.STEADY_TIME)
        self._params = self._declare_parameters(lambda: declare_all(self))
        names, self._max_batch = self._declare_parameters(
            lambda: declare_cameras(self, self._params)
        )
        self._cameras = {n: Camera(n, TaskSwitch(read_camera(self, n).tasks)) for n in names}
        self._default_tasks = TaskSwitch(self._params.tasks)  # see _create_task_controls
        self.add_pre_set_parameters_callback(normalize_request)
        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._on_parameters_set)

        self._scheduler: LatestFrameScheduler[Pending] = LatestFrameScheduler(
            names, self._max_batch
        )
        self._throttle = KeyedThrottle()
        self._group = ReentrantCallbackGroup()
        self._init_model_state()
        self._subs: list[Any] = []
        self._thread: threading.Thread | None = None
        # The frame pipeline (stage.py): the inference thread fits and runs the backbone of a
        # round; the heads stage runs heads and decoding of that round while the backbone runs
        # the next one; the publish stage restores, colourises and publishes. Each stage is one
        # thread (the backbone and the heads' kernels release the GIL), FIFO, so every camera's
        # frames leave in the order they came.
        self._heads: Stage[HeadsJob] | None = None
        self._publisher: Stage[tuple[Outbound, FrameResult, np.ndarray | None]] | None = None
        self._stopping = threading.Event()
        # Accelerator-wide figures: batches, images per batch, backbone call time.
        self._batch_rate = RollingRate()
        self._batch_sizes: list[int] = []
        self._batch_ms = LatencyWindow()
        self._faults = 0
        self._faults_seen = 0
        self.finished = Future()

        self._diag_pub = self.create_publisher(
            DiagnosticArray, TOPIC_DIAGNOSTICS, DIAGNOSTICS_QOS_DEPTH
        )
        for cam in self._cameras.values():
            cam.label_info = LabelInfoPublisher(self, cam.topic(TOPIC_LABEL_INFO))
        self._create_task_controls()
        self.create_service(Trigger, SRV_RELOAD, self._on_reload, callback_group=self._group)
        self._diag_timer = self._steady_timer(
            self._params.diagnostics_period, self._publish_diagnostics
        )
        self._autostart_timer = (
            self._steady_timer(0.0, self._autostart) if self._params.autostart else None
        )

    @property
    def cameras(self) -> tuple[str, ...]:
        return tuple(self._cameras)

    def _create_task_controls(self) -> None:
        """Task switches per camera under ``~/<camera>/`` and for all cameras under ``~/``.

        The node-wide controls also drive ``_default_tasks``, the state a camera would have if
        only node-wide commands had reached it: mirrored into ``tasks``, so ``param get tasks``
        answers what the node-wide commands set, while ``<camera>.tasks`` answers what runs.
        """
        cams = list(self._cameras.values())
        self._camera_task_controls = {}
        for cam in cams:
            self._camera_task_controls[cam.name] = TaskControls(
                self,
                f"~/{cam.name}/",
                [cam.task_target()],
                self._bad_task_request([cam], f"~/{cam.name}/"),
                self._group,
            )
        every_task = dict.fromkeys(TASK_TOPICS, True)  # a default has no outputs: "all listened"
        default = TaskTarget(self._default_tasks, "tasks", lambda: every_task, "default")
        self._all_task_controls = TaskControls(
            self,
            "~/",
            [default, *(cam.task_target() for cam in cams)],
            self._bad_task_request(cams, "~/"),
            self._group,
        )

    def _bad_task_request(self, cams: Sequence[Camera], prefix: str) -> Any:
        def on_bad(exc: TaskRequestError) -> None:
            for cam in cams:  # counted by every camera the request was addressed to
                cam.stats.count("bad_task_requests")
            self._log_throttled(
                "warning", f"{prefix}task_request", f"ignored {prefix}task_request: {exc}"
            )

        return on_bad

    def _publish_label_info(self, class_names: tuple[str, ...]) -> None:
        for cam in self._cameras.values():
            assert cam.label_info is not None
            cam.label_info.publish(class_names)

    # ------------------------------------------------------------------ lifecycle
    @serialised("_transition_lock")
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load the weights and ONE backend for all cameras; create every camera's publishers."""
        params = read_all(self)
        model = self._configure_model(params, load_weights_for)
        if model is None:
            return TransitionCallbackReturn.FAILURE
        qos = qos_profile(params.output_qos, params.output_depth)
        for cam in self._cameras.values():
            cam.outputs = CameraOutputs(self, cam.name, qos, params.color_compression)
        self._lifecycle = STATE_INACTIVE
        self.get_logger().info(
            f"configured: {len(self._cameras)} cameras {list(self._cameras)} on backend "
            f"{model.backend}, batches of up to {self._max_batch}"
        )
        return super().on_configure(state)

    @serialised("_transition_lock")
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the inference thread, then the subscriptions."""
        self._stopping.clear()
        self._scheduler.reopen()
        self._publisher = Stage(
            "edgemoe-multi-publish",
            lambda item: self._publish(*item),
            lambda exc: self._stage_failed("publish", exc),
            PUBLISH_DEPTH_BATCHES * self._max_batch,
        )
        self._heads = Stage(
            "edgemoe-multi-heads",
            self._finish_group,
            lambda exc: self._stage_failed("heads", exc),
            HEADS_DEPTH,
        )
        self._thread = threading.Thread(target=self._run, name="edgemoe-multi", daemon=True)
        self._thread.start()
        qos = qos_profile(self._params.input_qos, INPUT_DEPTH)
        for cam in self._cameras.values():
            self._subs.append(self._subscribe_image(cam, qos))
            self._subs.append(
                self.create_subscription(
                    CameraInfo,
                    cam.topic(TOPIC_CAMERA_INFO),
                    self._info_callback(cam),
                    qos,
                    callback_group=self._group,
                )
            )
        self._lifecycle = STATE_ACTIVE
        self.get_logger().info("activated")
        return super().on_activate(state)

    @serialised("_transition_lock")
    def _on_reload(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """One model for every camera: new weights (or backend) for all, or the old one kept."""
        return self._reload_model(response, load_weights_for)

    def _subscribe_image(self, cam: Camera, qos: Any) -> Any:
        """The camera's ONE image subscription, over its ``<camera>.image_transport``."""
        transport = read_camera(self, cam.name).image_transport
        if transport == topic_names.TRANSPORT_COMPRESSED:
            return self.create_subscription(
                CompressedImage,
                topic_names.input_topic(self, cam.topic(TOPIC_IMAGE), transport),
                self._compressed_callback(cam),
                qos,
                callback_group=self._group,
            )
        return self.create_subscription(
            Image,
            cam.topic(TOPIC_IMAGE),
            self._image_callback(cam),
            qos,
            callback_group=self._group,
            raw=True,
        )

    def _stop_processing(self) -> None:
        self._destroy_input_subscriptions()
        self._stopping.set()
        self._scheduler.close()
        if self._thread is not None:
            self._thread.join(STOP_TIMEOUT_S)
            if self._thread.is_alive():
                self.get_logger().error("inference thread did not stop in time")
            self._thread = None
        # After the inference thread: nothing is put behind the last item; each stage finishes
        # what it holds before the next one is stopped.
        for name, stage in (("heads", self._heads), ("publish", self._publisher)):
            if stage is not None and not stage.stop(STOP_TIMEOUT_S):
                self.get_logger().error(f"{name} stage did not stop in time")
        self._heads = self._publisher = None
        self._scheduler.clear()

    def _drain_in_flight(self) -> None:
        """A reload swapped the model: batches whose backbone ran on the old one finish their
        heads on its engine (``BackboneBatch``), so it is closed only after they are done."""
        heads = self._heads
        if heads is not None and not heads.drain(self._params.inference_timeout):
            self.get_logger().error(
                "heads stage did not finish the old model's batches in time; closing it anyway"
            )

    def _release_model(self) -> None:
        for cam in self._cameras.values():
            if cam.outputs is not None:
                cam.outputs.destroy()
                cam.outputs = None
        self._close_model()

    # ------------------------------------------------------------------ parameters
    def _check_parameters(self, parameters: list[Parameter]) -> Any:
        result = check_set_request(parameters, lambda name: self.get_parameter(name).value)
        return result if not result.successful else check_camera_request(parameters, self.cameras)

    def _on_parameters_set(self, parameters: list[Parameter]) -> None:
        """``tasks`` is a command to every camera; ``<camera>.tasks`` to that camera alone. A
        node-wide switch's write-back into ``tasks`` is not a new command (the cameras already
        have their states, which may differ)."""
        self._params = read_all(self)
        named = {p.name for p in parameters}
        for p in parameters:
            camera, _, suffix = p.name.rpartition(".")
            if p.name == "tasks":
                self._default_tasks.set_tasks(list(p.value))
                if not self._all_task_controls.mirroring:  # a camera set in the same request
                    cams = [c for c in self._cameras.values() if f"{c.name}.tasks" not in named]
                    self._set_tasks(cams, list(p.value))  # keeps the value given to it
                    self._mirror_camera_tasks(cams, list(p.value))
            elif suffix == "tasks" and camera in self._cameras:
                self._set_tasks([self._cameras[camera]], list(p.value))

    def _set_tasks(self, cams: list[Camera], tasks: list[str]) -> None:
        """The parameter path: the cameras' switches."""
        changed = [cam.name for cam in cams if cam.tasks.set_tasks(tasks)]
        if changed:
            self.get_logger().info(f"tasks of {changed} set by parameter: {tasks}")

    def _mirror_camera_tasks(self, cams: list[Camera], tasks: list[str]) -> None:
        """After ``tasks`` fanned out: every ``<camera>.tasks`` tells what runs too."""
        if cams:
            self.set_parameters(
                [
                    Parameter(f"{cam.name}.tasks", Parameter.Type.STRING_ARRAY, tasks)
                    for cam in cams
                ]
            )

    # ------------------------------------------------------------------ input callbacks
    def _image_callback(self, cam: Camera) -> Any:
        def on_image(raw: bytes) -> None:
            cam.stats.input_rate.tick()
            try:
                msg = read_image(raw)
                conv.check_image(msg, self._params.max_image_pixels)
            except conv.BadInputError as exc:
                self._bad_input(cam, exc, None)
                return
            except Exception as exc:  # noqa: BLE001 - the deserialiser's error types are not public
                self._bad_input(
                    cam,
                    conv.BadInputError(conv.KIND_TRUNCATED, f"undecodable Image bytes: {exc}"),
                    None,
                )
                return
            self._offer(cam, Pending(msg))

        return on_image

    def _compressed_callback(self, cam: Camera) -> Any:
        def on_compressed(msg: CompressedImage) -> None:
            cam.stats.input_rate.tick()
            try:
                conv.check_compressed(msg, self._params.max_image_pixels)
            except conv.BadInputError as exc:
                self._bad_input(cam, exc, msg)
                return
            self._offer(cam, Pending(msg, compressed=True))

        return on_compressed

    def _offer(self, cam: Camera, pending: Pending) -> None:
        """A checked frame into its camera's slot (replacing an older one)."""
        stamp = pending.msg.header.stamp
        cam.stats.reception.add(stamp.sec * 1_000_000_000 + stamp.nanosec)
        self._scheduler.offer(cam.name, pending)

    def _info_callback(self, cam: Camera) -> Any:
        def on_info(msg: CameraInfo) -> None:
            try:
                conv.check_camera_info(msg, self._params.max_image_pixels)
            except conv.BadInputError as exc:
                cam.info = None  # relay nothing rather than the previous calibration, restamped
                self._bad_input(cam, exc, msg)
                return
            cam.info = msg

        return on_info

    def _bad_input(self, cam: Camera, exc: conv.BadInputError, msg: Any) -> None:
        cam.stats.count_bad(exc.kind)
        frame_id = getattr(getattr(msg, "header", None), "frame_id", "")
        self._log_throttled(
            "warning",
            f"{cam.name}.bad_input.{exc.kind}",
            f"{cam.name}: dropped bad {type(msg).__name__ if msg is not None else 'Image'} "
            f"(frame_id '{frame_id}', {exc.kind}): {exc}",
        )

    # ------------------------------------------------------------------ inference thread
    def _run(self) -> None:
        while not self._stopping.is_set():
            items = self._scheduler.take_round(POLL_S)
            if not items:
                continue
            try:
                self._process_round(items)
            except Exception as exc:  # noqa: BLE001 - a bug in one round must not end the thread
                if not self.context.ok():
                    return
                self._log_throttled(
                    "error", "round", f"frame round failed: {type(exc).__name__}: {exc}"
                )

    def _process_round(self, items: list[tuple[str, Pending]]) -> None:
        """Decode each camera's frame, then one batched inference per task set, then publish."""
        params = self._params
        ready: list[tuple[str, Decoded]] = []
        for name, pending in items:
            cam = self._cameras[name]
            # The function, not its value: asked under the switch's lock only in auto mode, so a
            # switch to auto between reading the mode and the snapshot cannot skip this frame.
            active = cam.tasks.snapshot(cam.subscribed).active
            if not active:
                cam.stats.count("skipped_no_task")
                continue
            try:
                if pending.compressed:
                    rgb = conv.compressed_to_rgb(pending.msg, params.max_image_pixels)
                else:
                    rgb = conv.image_to_rgb(pending.msg, params.max_image_pixels)
            except conv.BadInputError as exc:
                self._bad_input(cam, exc, pending.msg if pending.compressed else None)
                continue
            ready.append(
                (name, Decoded(cam, read_camera(self, name), pending.msg.header, rgb, active))
            )
        for tasks, group in group_by(ready, lambda _name, frame: frame.tasks).items():
            self._infer_group(tasks, [frame for _, frame in group])

    def _infer_group(self, tasks: tuple[str, ...], group: list[Decoded]) -> None:
        """The backbone half of one ``infer_batch`` for the cameras of one task set, through the
        backend's watchdog; the heads stage finishes it (``_finish_group``)."""
        rgbs = [f.rgb for f in group]
        ks = [self._camera_k(f.camera, f.rgb, tasks) for f in group]
        with self._model_lock:
            model = self._model
            if model is None:
                return
            engine, watchdog = (
                (model.fallback, model.fallback_watchdog)
                if self._on_fallback
                else (model.engine, model.watchdog)
            )
            t0 = time.perf_counter()
            try:
                state = watchdog.call(
                    self._params.inference_timeout, engine.run_backbone, rgbs, tasks, ks
                )
            except Exception as exc:  # noqa: BLE001 - BackendError, device timeout: drop the group's frames
                self._backend_fault(model, exc, [f.camera for f in group])
                return
            ms = (time.perf_counter() - t0) * 1e3
            palette = model_palette(model.config)
        heads = self._heads
        if heads is not None:  # blocks while the heads stage is a batch behind
            heads.put(HeadsJob(model, engine, [Outbound.of(f) for f in group], state, palette, ms))

    def _finish_group(self, job: HeadsJob) -> None:
        """Heads and decoding of one group (heads stage), then its frames to the publish stage.

        Runs on the engine the backbone ran on, with the model the batch started with; the model
        is released only after the stages have stopped (``_stop_processing``)."""
        t0 = time.perf_counter()
        try:
            results = job.engine.finish_batch(job.state)
        except Exception as exc:  # noqa: BLE001 - as a failed backbone call: drop the group's frames
            self._backend_fault(job.model, exc, [f.camera for f in job.group])
            return
        ms = job.backbone_ms + (time.perf_counter() - t0) * 1e3
        self._batch_rate.tick()
        self._batch_sizes = (self._batch_sizes + [len(job.group)])[-BATCH_HISTORY:]
        self._batch_ms.add(ms)
        publisher = self._publisher
        for frame, result in zip(job.group, results, strict=True):
            frame.camera.stats.inference_ms.add(ms)
            if publisher is not None:  # blocks while the publish stage is behind
                publisher.put((frame, result, job.palette))

    def _stage_failed(self, stage: str, exc: Exception) -> None:
        """A stage's item failed (a bug, or publishers gone at shutdown): log it, go on."""
        if self.context.ok():
            self._log_throttled(
                "error", stage, f"{stage} stage failed: {type(exc).__name__}: {exc}"
            )

    def _camera_k(self, cam: Camera, rgb: np.ndarray, tasks: tuple[str, ...]) -> np.ndarray | None:
        info = cam.info
        if info is not None and not conv.calibration_fits(info, rgb.shape[0], rgb.shape[1]):
            info = None
        k = camera_k_from_info(info, rgb.shape[0], rgb.shape[1])
        if k is None and "depth" in tasks and not cam.warned_no_k:
            cam.warned_no_k = True
            self.get_logger().warning(
                f"{cam.name}: no calibrated camera_info: depth in metres of the model's "
                "canonical camera until one arrives"
            )
        return k

    def _publish(self, frame: Outbound, result: Any, palette: np.ndarray | None) -> None:
        cam, header = frame.camera, frame.header
        in_h, in_w = frame.input_size
        info = cam.info
        if info is not None and not conv.calibration_fits(info, in_h, in_w):
            cam.stats.count("camera_info_mismatch")
            info = None
        outputs = cam.outputs
        if outputs is None or not outputs.publish(
            header,
            in_h,
            in_w,
            result,
            at_input=frame.params.output_resolution == "input",
            publish_color=self._params.publish_color,
            palette=palette,
            info=info,
        ):
            return
        cam.stats.count("published")
        cam.stats.output_rate.tick()
        stamp = Time.from_msg(header.stamp)
        if stamp.nanoseconds > 0:
            cam.stats.stamp_to_publish_ms.add((self.get_clock().now() - stamp).nanoseconds / 1e6)

    def _backend_fault(self, model: LoadedModel, exc: Exception, cams: list[Camera]) -> None:
        name = model.fallback_backend if self._on_fallback else model.backend
        self._log_throttled(
            "error",
            f"fault.{name}",
            f"backend '{name}' failed, frames of "
            f"{[c.name for c in cams]} dropped: {type(exc).__name__}: {exc}",
        )
        for cam in cams:
            cam.stats.count("backend_faults")
            if isinstance(exc, BackendHung):
                cam.stats.count("backend_timeouts")
        if model.fallback is not None and not self._on_fallback:
            self._on_fallback = True
            self.get_logger().warning(f"switching to fallback backend '{model.fallback_backend}'")
        self._faults += 1

    # ------------------------------------------------------------------ diagnostics
    def _log_throttled(self, level: str, key: str, message: str) -> None:
        self._throttle.log(self.get_logger(), level, key, message)

    def _camera_health(
        self, cam: Camera, bad: dict[str, int], counters: dict[str, int]
    ) -> tuple[bytes, str]:
        """Level and message of one camera: faults, bad input since last report (the stream's
        own health: _publish_diagnostics)."""
        seen = {
            "faults": counters.get("backend_faults", 0),
            "bad": sum(bad.values()),
            "info": counters.get("camera_info_mismatch", 0),
        }
        new = {k: v - cam.seen.get(k, 0) for k, v in seen.items()}
        cam.seen = seen
        if self._lifecycle != "active":
            return DiagnosticStatus.OK, self._lifecycle
        if new["faults"]:
            return DiagnosticStatus.ERROR, f"{new['faults']} backend fault(s) since last report"
        if new["bad"]:
            return DiagnosticStatus.WARN, f"{new['bad']} bad input(s) since last report"
        if new["info"]:
            return (
                DiagnosticStatus.WARN,
                f"{new['info']} frame(s) without camera_info: its size does not match",
            )
        shortfall = cam.stats.reception.shortfall()
        if shortfall:
            return DiagnosticStatus.WARN, shortfall
        return DiagnosticStatus.OK, "active"

    def _accelerator_status(self, node_name: str) -> DiagnosticStatus:
        model = self._model
        faults, self._faults_seen = self._faults - self._faults_seen, self._faults
        backend, hardware = "none", ""
        level, message = DiagnosticStatus.OK, self._lifecycle
        values: list[KeyValue] = []
        if self._config_error:
            level, message = DiagnosticStatus.ERROR, f"configure failed: {self._config_error}"
        elif model is None:
            level, message = DiagnosticStatus.WARN, f"{self._lifecycle}: no model loaded"
        else:
            backend = model.fallback_backend if self._on_fallback else model.backend
            hardware = model.hardware_of(self._on_fallback)
            hung = (model.fallback_watchdog if self._on_fallback else model.watchdog).hung_for()
            if hung is not None:
                level, message = (
                    DiagnosticStatus.ERROR,
                    f"backend hung: no result for {hung:.0f} s",
                )
            elif self._on_fallback:
                level, message = (
                    DiagnosticStatus.WARN,
                    f"running on fallback backend '{model.fallback_backend}'",
                )
            elif self._reload_error:
                level, message = DiagnosticStatus.WARN, self._reload_error
            elif faults:
                level, message = (
                    DiagnosticStatus.ERROR,
                    f"{faults} backend fault(s) since last report",
                )
        sizes = self._batch_sizes
        values += [
            KeyValue(key="backend", value=backend),
            KeyValue(key="cameras", value=",".join(self._cameras)),
            KeyValue(key="max batch", value=str(self._max_batch)),
            KeyValue(key="batches per s", value=f"{self._batch_rate.rate():.2f}"),
            KeyValue(
                key="mean images per batch", value=f"{np.mean(sizes):.2f}" if sizes else "n/a"
            ),
            KeyValue(key="backend faults", value=str(self._faults)),
            KeyValue(key="model reloads", value=str(self._reloads["succeeded"])),
            KeyValue(key="failed model reloads", value=str(self._reloads["failed"])),
        ]
        p = self._batch_ms.percentiles()
        values.append(
            KeyValue(
                key="latency batch ms",
                value="n/a" if p is None else " ".join(f"p{q}={v:.1f}" for q, v in p.items()),
            )
        )
        return DiagnosticStatus(
            level=level,
            name=f"{node_name}: {ACCELERATOR_STATUS}",
            message=message,
            hardware_id=hardware or backend,
            values=values,
        )

    def _publish_diagnostics(self) -> None:
        self._decay_free_memory()
        node_name = status_prefix(
            self.get_name(), self.get_fully_qualified_name(), self._params.diagnostics_use_fqn
        )
        model = self._model
        backend = (
            "none"
            if model is None
            else (model.fallback_backend if self._on_fallback else model.backend)
        )
        hardware = "" if model is None else model.hardware_of(self._on_fallback)
        statuses = [self._accelerator_status(node_name)]
        limits = self._params.stream_limits
        for cam in self._cameras.values():
            counts = cam.stats.snapshot_counts()
            level, message = self._camera_health(cam, *counts)
            tasks = cam.tasks.snapshot(cam.outputs.subscribed() if cam.outputs is not None else ())
            expected = read_camera(self, cam.name).expected_input_rate
            cam.stats.input_rate.set_limits(dataclasses.replace(limits, expected_hz=expected))
            stream = cam.stats.input_rate.check(
                watching=self._lifecycle == STATE_ACTIVE and bool(tasks.active),
                has_camera_info=cam.info is not None,
                depth_active="depth" in tasks.active,
            )
            level, message = with_stream(level, message, stream)
            worker = {
                "submitted": self._scheduler.offered[cam.name],
                "dropped": self._scheduler.replaced[cam.name],
            }
            status = build_status(
                node_name,
                level,
                message,
                backend,
                tasks.active,
                tasks.mode,
                cam.stats,
                worker,
                counts=counts,
                stream=stream,
                hardware_id=hardware,
            )
            status.name = f"{node_name}: camera {cam.name}"
            statuses.append(status)
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = statuses
        self._diag_pub.publish(arr)


def main(args: list[str] | None = None) -> int:
    """Console script ``edgemoe_multi_node``."""
    return spin_lifecycle_node(MultiCameraNode, NODE_NAME, args)


if __name__ == "__main__":
    raise SystemExit(main())
