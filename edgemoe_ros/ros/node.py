# SPDX-License-Identifier: Apache-2.0
"""``edgemoe_node``: the lifecycle node publishing segmentation and metric depth (SPEC §5, §7).

Reads top to bottom like image_pipeline's nodes: constants, then the constructor (parameters,
always-on interfaces), then the lifecycle callbacks (configure loads the model, activate starts
subscriptions and the worker), then the per-frame path (validate -> infer -> publish), then
diagnostics and ``main``.

Threads: DDS callbacks only validate metadata and enqueue; one worker thread (``worker.py``) runs
inference and publishes. A MultiThreadedExecutor keeps services answering during inference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock, ClockType
from rclpy.event_handler import (
    QoSMessageLostInfo,
    QoSRequestedIncompatibleQoSInfo,
    SubscriptionEventCallbacks,
)
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.task import Future
from rclpy.time import Time
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header
from std_srvs.srv import Trigger

from ..engine import FrameResult
from ..postprocess import camera_k_from_info, model_palette
from . import conversions as conv
from . import topic_names
from .cdr_image import ImageView, read_image
from .diagnostics import KeyedThrottle, NodeStats, build_status, status_prefix, with_stream
from .guards import InvalidHandle, serialised
from .label_info import LabelInfoPublisher
from .lifecycle_common import (
    SRV_RELOAD,
    STATE_ACTIVE,
    STATE_INACTIVE,
    LifecycleCommon,
)
from .model_loader import LoadedModel, load_weights_for
from .outputs import TASK_TOPICS, CameraOutputs
from .params import (
    NodeParams,
    check_set_request,
    declare_all,
    normalize_request,
    read_all,
)
from .qos import AUTO, INPUT_DEPTH, is_reliability_mismatch
from .qos import profile as qos_profile
from .spin import spin_lifecycle_node
from .task_controls import TaskControls, TaskTarget
from .task_switch import TaskRequestError, TaskState, TaskSwitch
from .watchdog import BackendHung
from .worker import FrameWorker

NODE_NAME = "edgemoe_node"

# ----- topics (relative, so launch files can namespace and remap them) -----
TOPIC_IMAGE = topic_names.IMAGE  # its compressed transport: <resolved image>/compressed
TOPIC_CAMERA_INFO = topic_names.CAMERA_INFO
# Output topics (segmentation, depth and their camera_info): outputs.py, shared with the
# multi-camera node.
TOPIC_DIAGNOSTICS = "/diagnostics"
# ~/enable_segmentation, ~/enable_depth, ~/task_request: task_controls.py; ~/reload_model:
# lifecycle_common.py (both shared with the multi-camera node).

DIAGNOSTICS_QOS_DEPTH = 10


@dataclass(frozen=True)
class Frame:
    """One received input: the message and whether it is a CompressedImage."""

    msg: Image | ImageView | CompressedImage
    compressed: bool


@dataclass(frozen=True)
class FrameState:
    """Everything a frame is processed with, taken once so a frame never mixes two states."""

    tasks: TaskState
    params: NodeParams


class EdgeMoeNode(LifecycleCommon, LifecycleNode):
    """Lifecycle node: image in; segmentation, colour segmentation, depth and camera_info out."""

    def __init__(self, node_name: str = NODE_NAME, **kwargs: Any) -> None:
        super().__init__(node_name, **kwargs)
        self._steady_clock = Clock(clock_type=ClockType.STEADY_TIME)
        self._params = self._declare_parameters(lambda: declare_all(self))
        self.add_pre_set_parameters_callback(normalize_request)
        self.add_on_set_parameters_callback(
            lambda request: check_set_request(request,
                                              lambda name: self.get_parameter(name).value))
        self.add_post_set_parameters_callback(self._on_parameters_set)

        self._tasks = TaskSwitch(self._params.tasks)
        self._stats = NodeStats()
        self._throttle = KeyedThrottle()
        self._group = ReentrantCallbackGroup()
        self._init_model_state()
        self._latest_info: CameraInfo | None = None
        self._warned_no_k = False
        # One worker for the node's life (started on activate, stopped on deactivate) so its
        # received/dropped counters are cumulative across lifecycle cycles.
        self._worker: FrameWorker[Frame, FrameState] = FrameWorker(
            self._process_frame, self._frame_state, self._params.queue_size)
        self._processing = False
        self._diag_seen = {"faults": 0, "bad": 0}
        self._outputs: CameraOutputs | None = None
        self._subs: list[Any] = []
        self._input_best_effort = False  # input_qos auto: a best-effort publisher was met
        self.finished = Future()

        # Always available, whatever the lifecycle state: diagnostics explain a failed configure,
        # and task switches made before activation apply to the first frame.
        self._diag_pub = self.create_publisher(DiagnosticArray, TOPIC_DIAGNOSTICS,
                                               DIAGNOSTICS_QOS_DEPTH)
        self._label_info = LabelInfoPublisher(self)  # latched class names, once per loaded model
        self._diag_timer = self._steady_timer(self._params.diagnostics_period,
                                              self._publish_diagnostics)
        self._task_controls = TaskControls(
            self, "~/", [TaskTarget(self._tasks, "tasks", self._subscribed)],
            self._bad_task_request, self._group)
        self.create_service(Trigger, SRV_RELOAD, self._on_reload, callback_group=self._group)
        self._autostart_timer = None
        if self._params.autostart:
            self._autostart_timer = self._steady_timer(0.0, self._autostart)

    # ------------------------------------------------------------------ lifecycle
    @serialised("_transition_lock")
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load weights and backend(s); on any error stay unconfigured with a clear log."""
        params = read_all(self)
        model = self._configure_model(params, load_weights_for)
        if model is None:
            return TransitionCallbackReturn.FAILURE
        self._outputs = CameraOutputs(self, "",
                                      qos_profile(params.output_qos, params.output_depth),
                                      params.color_compression)
        self._lifecycle = STATE_INACTIVE
        self.get_logger().info(
            f"configured: backend {model.backend}"
            + (f" (fallback {model.fallback_backend})" if model.fallback else "")
            + f", model {model.config.img_h}x{model.config.img_w}, tasks "
              f"{self._tasks.as_parameter()}")
        return super().on_configure(state)

    @serialised("_transition_lock")
    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Start the worker, then the subscriptions (so no frame arrives before it can be
        queued)."""
        self._worker.start()
        self._processing = True
        self._input_best_effort = False
        self._subscribe_inputs(self._params.input_qos)
        self._lifecycle = STATE_ACTIVE
        self.get_logger().info("activated")
        return super().on_activate(state)

    def _subscribe_inputs(self, qos_word: str) -> None:
        """ONE image subscription (the ``image_transport`` parameter's) and camera_info, with the
        QoS ``qos_word`` names."""
        qos = qos_profile(qos_word, INPUT_DEPTH)
        events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_input)
        image_events = SubscriptionEventCallbacks(incompatible_qos=self._on_incompatible_input,
                                                  message_lost=self._on_frames_lost)
        transport = self._params.image_transport
        if transport == topic_names.TRANSPORT_COMPRESSED:
            image_sub = self.create_subscription(
                CompressedImage, topic_names.input_topic(self, TOPIC_IMAGE, transport),
                self._on_compressed, qos, callback_group=self._group, event_callbacks=image_events)
        else:  # raw bytes: read_image views the pixels in place instead of rclpy copying them
            image_sub = self.create_subscription(Image, TOPIC_IMAGE, self._on_image, qos,
                                                 callback_group=self._group, raw=True,
                                                 event_callbacks=image_events)
        self._subs = [
            image_sub,
            self.create_subscription(CameraInfo, TOPIC_CAMERA_INFO, self._on_camera_info, qos,
                                     callback_group=self._group, event_callbacks=events),
        ]

    def _on_frames_lost(self, info: QoSMessageLostInfo) -> None:
        """DDS saw a gap in the image publisher's sequence numbers: frames lost in transport."""
        self._stats.count("lost_in_transport", info.total_count_change)

    def _on_incompatible_input(self, info: QoSRequestedIncompatibleQoSInfo) -> None:
        """``input_qos: auto`` met a best-effort publisher after subscribing reliable: follow it.

        Best available reliability is resolved when the subscription is created; a camera that
        starts later with best effort would otherwise never be heard.
        """
        if self._params.input_qos != AUTO or not is_reliability_mismatch(info.last_policy_kind):
            self._log_throttled("warning", "input_qos",
                                f"an input publisher's QoS is incompatible with "
                                f"input_qos '{self._params.input_qos}' (policy "
                                f"{info.last_policy_kind})")
            return
        if self._input_best_effort:
            return
        self._input_best_effort = True
        self.get_logger().warning(
            "a best-effort publisher appeared on an input topic: input subscriptions now best "
            "effort (large frames over best effort can be lost in transport; see docs/qos.md)")
        timer = None

        def resubscribe() -> None:
            self.destroy_timer(timer)
            if self._lifecycle == STATE_ACTIVE and self._subs:
                self._destroy_input_subscriptions()
                self._subscribe_inputs("best_effort")

        timer = self._steady_timer(0.0, resubscribe)

    def _stop_processing(self) -> None:
        self._destroy_input_subscriptions()
        self._processing = False
        self._worker.stop()

    def _release_model(self) -> None:
        # Unpublish before destroying: callbacks that read self._outputs from now on see none; one
        # that took the old outputs sees no publishers or gets InvalidHandle, which it handles.
        outputs, self._outputs = self._outputs, None
        if outputs is not None:
            outputs.destroy()
        self._close_model()

    def _publish_label_info(self, class_names: tuple[str, ...]) -> None:
        self._label_info.publish(class_names)

    # ------------------------------------------------------------------ parameters and switching
    def _on_parameters_set(self, parameters: list[Parameter]) -> None:
        self._params = read_all(self)
        for p in parameters:
            if p.name == "tasks" and self._tasks.set_tasks(list(p.value)):
                self.get_logger().info(f"tasks set by parameter: {list(p.value)}")

    def _bad_task_request(self, exc: TaskRequestError) -> None:
        self._stats.count("bad_task_requests")
        self._log_throttled("warning", "task_request", f"ignored ~/task_request: {exc}")

    def _subscribed(self) -> dict[str, bool]:
        """Per task: does any of its outputs have a subscriber (auto mode)."""
        outputs = self._outputs
        return outputs.subscribed() if outputs is not None else dict.fromkeys(TASK_TOPICS, False)

    @serialised("_transition_lock")
    def _on_reload(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        """Reload weights (and the backend if its parameters changed) without restarting."""
        return self._reload_model(response, load_weights_for)

    # ------------------------------------------------------------------ per frame
    def _on_image(self, raw: bytes) -> None:
        try:
            msg = read_image(raw)
        except Exception as exc:  # noqa: BLE001 - the deserialiser's error types are not public
            self._stats.input_rate.tick()
            self._bad_input(conv.BadInputError(conv.KIND_TRUNCATED,
                                               f"undecodable Image bytes: {exc}"), None)
            return
        self._enqueue(msg, compressed=False)

    def _on_compressed(self, msg: CompressedImage) -> None:
        self._enqueue(msg, compressed=True)

    def _enqueue(self, msg: Image | ImageView | CompressedImage, compressed: bool) -> None:
        self._stats.input_rate.tick()
        try:
            # metadata checks here, so every bad frame is counted even if the queue drops it later
            if compressed:
                conv.check_compressed(msg, self._params.max_image_pixels)
            else:
                conv.check_image(msg, self._params.max_image_pixels)
        except conv.BadInputError as exc:
            self._bad_input(exc, msg)
            return
        stamp = msg.header.stamp
        self._stats.reception.add(stamp.sec * 1_000_000_000 + stamp.nanosec)
        if self._processing and not self._worker.submit(Frame(msg, compressed)):
            self._log_throttled("debug", "queue_drop",
                                "worker busy: dropped the oldest queued frame")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            conv.check_camera_info(msg, self._params.max_image_pixels)
        except conv.BadInputError as exc:
            # relay nothing rather than the previous calibration, restamped
            self._latest_info = None
            self._bad_input(exc, msg)
            return
        self._latest_info = msg

    def _bad_input(self, exc: conv.BadInputError, msg: Any) -> None:
        self._stats.count_bad(exc.kind)
        frame_id = getattr(getattr(msg, "header", None), "frame_id", "")
        what = "Image" if msg is None or isinstance(msg, ImageView) else type(msg).__name__
        self._log_throttled("warning", f"bad_input.{exc.kind}",
                            f"dropped bad {what} (frame_id '{frame_id}', {exc.kind}): {exc}")

    def _frame_state(self) -> FrameState:
        # asked only in auto mode, under the switch's lock
        tasks = self._tasks.snapshot(self._subscribed)
        return FrameState(tasks, self._params)

    def _process_frame(self, frame: Frame, state: FrameState) -> None:
        """Worker thread: decode, infer with exactly ``state``, publish with the input header."""
        active = state.tasks.active
        if not active:
            self._stats.count("skipped_no_task")
            return
        params = state.params
        try:
            if frame.compressed:
                rgb = conv.compressed_to_rgb(frame.msg, params.max_image_pixels)
            else:
                rgb = conv.image_to_rgb(frame.msg, params.max_image_pixels)
        except conv.BadInputError as exc:
            self._bad_input(exc, frame.msg)
            return
        camera_k = self._camera_k(rgb.shape[0], rgb.shape[1], active)
        with self._model_lock:
            model = self._model
            if model is None:
                return
            engine, watchdog = ((model.fallback, model.fallback_watchdog) if self._on_fallback
                                else (model.engine, model.watchdog))
            t0 = time.perf_counter()
            try:
                # Time-limited (watchdog.py): a hung backend costs at most inference_timeout, then
                # the node moves on (fallback), and the lock reload/cleanup wait for is released.
                result = watchdog.call(params.inference_timeout, engine.infer, rgb, tasks=active,
                                       camera_k=camera_k)
            except Exception as exc:  # noqa: BLE001
                # BackendError, device timeout, or a bug: drop frame
                self._backend_fault(model, exc)
                return
            self._stats.inference_ms.add((time.perf_counter() - t0) * 1e3)
            # the class colours of the model that ran this frame
            palette = model_palette(model.config)
        try:
            self._publish(frame.msg.header, rgb.shape[0], rgb.shape[1], result, params, palette)
        except Exception:
            if not self.context.ok():
                # Ctrl-C: rclpy shut the context down under the frame in flight; drop it quietly
                return
            raise

    def _camera_k(self, image_h: int, image_w: int, tasks: tuple[str, ...]) -> Any:
        """K of the latest camera_info at this image's size, for metric depth of the real lens
        (model/canonical_camera.py); None, logged once, while there is no calibrated camera_info.
        _on_camera_info admits only usable K, so this cannot raise."""
        camera_k = camera_k_from_info(self._latest_info, image_h, image_w)
        if camera_k is None and "depth" in tasks and not self._warned_no_k:
            self._warned_no_k = True
            self.get_logger().warning(
                f"no calibrated '{TOPIC_CAMERA_INFO}' (none received, or K all zero): depth is in "
                "metres of the model's canonical camera, not of this lens, until one arrives")
        return camera_k

    def _backend_fault(self, model: LoadedModel, exc: Exception) -> None:
        name = model.fallback_backend if self._on_fallback else model.backend
        self._log_throttled("error", f"fault.{name}",
                            f"backend '{name}' failed, frame dropped: {type(exc).__name__}: {exc}")
        if isinstance(exc, BackendHung):
            self._stats.count("backend_timeouts")
        # Switch before counting the fault: diagnostics (another thread) that see the fault
        # must also see where the node went.
        if model.fallback is not None and not self._on_fallback:
            self._on_fallback = True
            self._stats.count("fallbacks")
            self.get_logger().warning(f"switching to fallback backend '{model.fallback_backend}' "
                                      f"until the next ~/reload_model or configure")
        self._stats.count("backend_faults")

    def _publish(self, header: Header, in_h: int, in_w: int, result: FrameResult,
                 params: NodeParams, palette: np.ndarray | None) -> None:
        try:
            self._publish_outputs(header, in_h, in_w, result, params, palette)
        except InvalidHandle:
            # publishers destroyed while this frame was out
            self._stats.count("dropped_in_cleanup")

    def _publish_outputs(self, header: Header, in_h: int, in_w: int, result: FrameResult,
                         params: NodeParams, palette: np.ndarray | None) -> None:
        info = self._latest_info
        if info is not None and not conv.calibration_fits(info, in_h, in_w):
            self._stats.count("camera_info_mismatch")
            self._log_throttled("warning", "camera_info_size",
                                f"camera_info is {info.width}x{info.height} but the image "
                                f"{in_w}x{in_h} (another aspect ratio): camera_info not relayed "
                                "until a matching one arrives")
            info = None
        outputs = self._outputs
        if outputs is None or not outputs.publish(
                header, in_h, in_w, result, at_input=params.output_resolution == "input",
                publish_color=params.publish_color, palette=palette, info=info):
            return  # cleaned up while this frame was in flight
        self._stats.count("published")
        self._stats.output_rate.tick()
        stamp = Time.from_msg(header.stamp)
        if stamp.nanoseconds > 0:
            self._stats.stamp_to_publish_ms.add((self.get_clock().now() - stamp).nanoseconds / 1e6)

    # ------------------------------------------------------------------ diagnostics and logging
    def _log_throttled(self, level: str, key: str, message: str) -> None:
        self._throttle.log(self.get_logger(), level, key, message)

    def _health(self, model: LoadedModel | None, bad: dict[str, int],
                counters: dict[str, int]) -> tuple[bytes, str]:
        """Level and message: the worst of configure error, fallback, and faults / bad inputs since
        the last report (so one old bad frame does not keep the node WARN forever)."""
        seen = {"faults": counters.get("backend_faults", 0), "bad": sum(bad.values()),
                "lost": counters.get("lost_in_transport", 0),
                "info": counters.get("camera_info_mismatch", 0)}
        new = {k: v - self._diag_seen.get(k, 0) for k, v in seen.items()}
        new_faults, new_bad = new["faults"], new["bad"]
        self._diag_seen = seen
        state = self._lifecycle
        if self._config_error:
            return DiagnosticStatus.ERROR, f"{state}: configure failed: {self._config_error}"
        if model is None:
            return DiagnosticStatus.WARN, f"{state}: no model loaded"
        hung = (model.fallback_watchdog if self._on_fallback else model.watchdog).hung_for()
        if hung is not None:
            return DiagnosticStatus.ERROR, f"{state}: backend hung: no result for {hung:.0f} s"
        if self._on_fallback:
            why = (f"backend '{model.backend}' failed at configure: {model.primary_error}"
                   if model.primary_error
                   else f"backend '{model.backend}' faulted")
            return DiagnosticStatus.WARN, (f"{state}: running on fallback backend "
                                           f"'{model.fallback_backend}' ({why})")
        if self._reload_error:
            return DiagnosticStatus.WARN, f"{state}: {self._reload_error}"
        if new_faults:
            return DiagnosticStatus.ERROR, (f"{state}: {new_faults} backend "
                                            "fault(s) since last report")
        if new_bad:
            return DiagnosticStatus.WARN, f"{state}: {new_bad} bad input(s) since last report"
        if new["info"]:
            return DiagnosticStatus.WARN, (f"{state}: {new['info']} frame(s) published without "
                                           "camera_info: its size does not match the image's")
        if new["lost"]:
            return DiagnosticStatus.WARN, (f"{state}: {new['lost']} frame(s) lost in transport "
                                           "since last report")
        shortfall = self._stats.reception.shortfall()
        if shortfall:
            return DiagnosticStatus.WARN, f"{state}: {shortfall}"
        return DiagnosticStatus.OK, state

    def _publish_diagnostics(self) -> None:
        self._decay_free_memory()
        tasks = self._frame_state().tasks
        model = self._model
        counts = self._stats.snapshot_counts()
        level, message = self._health(model, *counts)
        # The input stream is judged only while frames are wanted: active, with a task enabled.
        self._stats.input_rate.set_limits(self._params.stream_limits)
        stream = self._stats.input_rate.check(
            watching=self._lifecycle == STATE_ACTIVE and bool(tasks.active),
            has_camera_info=self._latest_info is not None, depth_active="depth" in tasks.active)
        level, message = with_stream(level, message, stream)
        backend, hardware = "none", ""
        usage = None
        moe_layers: tuple[int, ...] = ()
        if model is not None:
            backend = model.fallback_backend if self._on_fallback else model.backend
            hardware = model.hardware_of(self._on_fallback)
            engine = model.fallback if self._on_fallback else model.engine
            usage = {t: np.array(u) for t, u in getattr(engine, "expert_usage", {}).items()}
            moe_layers = model.config.moe_layers
        worker_counts = self._worker.counters()
        prefix = status_prefix(self.get_name(), self.get_fully_qualified_name(),
                               self._params.diagnostics_use_fqn)
        status = build_status(prefix, level, message, backend, tasks.active, tasks.mode,
                              self._stats,
                              worker_counts, usage, moe_layers, counts, stream, hardware)
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status]
        self._diag_pub.publish(arr)


def main(args: list[str] | None = None) -> int:
    """Console script ``edgemoe_node``: spin until Ctrl-C, external shutdown or the shutdown
    transition."""
    return spin_lifecycle_node(EdgeMoeNode, NODE_NAME, args)


if __name__ == "__main__":
    raise SystemExit(main())
