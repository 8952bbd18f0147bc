# SPDX-License-Identifier: Apache-2.0
"""Races between the node's concurrent callbacks, driven in-process so each interleaving is forced.

The executor runs ``~/reload_model``, lifecycle transitions, the diagnostics timer and the worker
on different threads; these tests call the callbacks from threads in the one order that used to
break, instead of hoping a live node hits it. The model's configure/reload/release code is shared
(lifecycle_common.py), so those tests run on both nodes.
"""

from __future__ import annotations

import threading

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.task import Future
from ros_testing import make_image, write_tiny_weights
from std_srvs.srv import Trigger

from edgemoe_ros.ros import guards, lifecycle_common
from edgemoe_ros.ros import multi_camera_node as multi_mod
from edgemoe_ros.ros import node as node_mod
from edgemoe_ros.ros.multi_camera_node import MultiCameraNode, Pending
from edgemoe_ros.ros.node import EdgeMoeNode

#: (node class, its module, parameters it needs beyond the common ones)
NODES = {
    "single": (EdgeMoeNode, node_mod, []),
    "multi": (MultiCameraNode, multi_mod, [Parameter("cameras", value=["a", "b"])]),
}


def _make_node(ros_context, tmp_path, kind: str):
    cls, _, extra = NODES[kind]
    weights = write_tiny_weights(tmp_path / "tiny.safetensors")
    return cls(
        context=ros_context,
        parameter_overrides=[
            Parameter("autostart", value=False),
            Parameter("backend", value="reference"),
            Parameter("weights_path", value=str(weights)),
            *extra,
        ],
    )


@pytest.fixture
def node(ros_context, tmp_path):
    n = _make_node(ros_context, tmp_path, "single")
    yield n
    n.destroy_node()


@pytest.fixture(params=sorted(NODES))
def any_node(request, ros_context, tmp_path):
    """Each node in turn, with the module whose ``load_weights_for`` it calls."""
    n = _make_node(ros_context, tmp_path, request.param)
    yield n, NODES[request.param][1]
    n.destroy_node()


def test_reload_never_installs_a_model_into_a_node_cleaned_up_meanwhile(any_node, monkeypatch):
    """Reload loads the file (slow, outside the model lock) while cleanup runs: the node must end
    unconfigured with no model, not holding a model nobody will ever close."""
    node, module = any_node
    assert node.trigger_configure() == node_mod.TransitionCallbackReturn.SUCCESS
    loading, release = threading.Event(), threading.Event()
    real_load = module.load_weights_for

    def slow_load(params):
        loading.set()
        assert release.wait(10.0)
        return real_load(params)

    monkeypatch.setattr(module, "load_weights_for", slow_load)
    closed = []
    monkeypatch.setattr(lifecycle_common.LoadedModel, "close", lambda self: closed.append(self))
    response: list[Trigger.Response] = []
    reload = threading.Thread(
        target=lambda: response.append(node._on_reload(Trigger.Request(), Trigger.Response()))
    )
    reload.start()
    assert loading.wait(10.0)
    cleanup = threading.Thread(target=node.trigger_cleanup)
    cleanup.start()
    cleanup.join(0.3)  # cleanup must wait for the reload in progress (it cannot interleave)
    release.set()
    reload.join(10.0)
    cleanup.join(10.0)
    assert not reload.is_alive() and not cleanup.is_alive()
    assert response and response[0].success, response
    assert node._lifecycle == lifecycle_common.STATE_UNCONFIGURED
    assert node._model is None, "a model was installed into a cleaned-up node and leaked"
    assert len(closed) == 1  # same setup: reloaded in place, then closed once by the cleanup


def test_configure_closes_a_model_it_replaces(any_node, monkeypatch):
    node, _ = any_node
    closed = []
    monkeypatch.setattr(lifecycle_common.LoadedModel, "close", lambda self: closed.append(self))
    assert node.trigger_configure() == node_mod.TransitionCallbackReturn.SUCCESS
    first = node._model
    # A model still held when configure runs again (e.g. after an error transition's partial
    # release) must be closed, not overwritten.
    node._lifecycle = lifecycle_common.STATE_UNCONFIGURED
    assert node.on_configure(None) == node_mod.TransitionCallbackReturn.SUCCESS
    assert closed == [first] and node._model is not first


def test_publishers_are_unpublished_before_they_are_destroyed(node, monkeypatch):
    """A diagnostics tick or SetBool handler between two publisher destructions must not touch a
    destroyed handle (it raised InvalidHandle in the executor, which ended the process)."""
    assert node.trigger_configure() == node_mod.TransitionCallbackReturn.SUCCESS
    real_destroy = node.destroy_lifecycle_publisher
    seen = []

    def destroy_then_callbacks_run(pub):
        real_destroy(pub)
        seen.append(node._subscribed())  # what the diagnostics timer / SetBool handlers call
        node._publish_diagnostics()

    monkeypatch.setattr(node, "destroy_lifecycle_publisher", destroy_then_callbacks_run)
    assert node.trigger_cleanup() == node_mod.TransitionCallbackReturn.SUCCESS
    assert seen and all(s == {"semseg": False, "depth": False} for s in seen)


def test_subscription_count_of_a_destroyed_publisher_is_zero(node):
    from std_msgs.msg import String

    pub = node.create_publisher(String, "guard_probe", 1)
    assert guards.subscription_count(pub) == 0
    node.destroy_publisher(pub)
    assert guards.subscription_count(pub) == 0  # no InvalidHandle out of a callback


def test_an_exception_in_a_callback_does_not_end_spinning(ros_context):
    """rclpy's executor re-raises a callback's exception in the spinning thread (``main``)."""
    n = rclpy.create_node("guard_spin_probe", context=ros_context)
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(n)
    done, ticks, errors = Future(), [], []

    def tick():
        ticks.append(1)
        if len(ticks) == 1:
            raise RuntimeError("boom in a callback")
        if len(ticks) == 3:
            done.set_result(True)

    n.create_timer(0.01, tick)
    try:
        survived = guards.spin_until_done(executor, done, errors.append)
    finally:
        executor.shutdown()
        n.destroy_node()
    assert done.done() and len(ticks) >= 3
    assert survived == 1 and "boom in a callback" in errors[0]


class _SwitchesToAutoWhenAsked(node_mod.TaskSwitch):
    """A task switch to ``auto`` landing right after a caller read the mode (another thread's)."""

    @property
    def mode(self) -> str:
        seen = super().mode
        self.request("auto")
        return seen


def test_a_switch_to_auto_between_mode_and_snapshot_loses_no_frame(node, monkeypatch):
    node._tasks = _SwitchesToAutoWhenAsked(["semseg"])
    monkeypatch.setattr(node, "_subscribed", lambda: {"semseg": True, "depth": False})
    state = node._frame_state()
    assert state.tasks.active, "the frame would be dropped as skipped_no_task"
    node._tasks.request("auto")
    assert node._frame_state().tasks.active == ("semseg",)  # auto: whoever listens


def test_a_switch_to_auto_between_mode_and_snapshot_loses_no_frame_of_a_camera(
    ros_context, tmp_path, monkeypatch
):
    """The multi-camera node read a camera's mode, then snapshot its tasks with the subscribers
    asked only if the mode had been auto: a switch to auto in between skipped the frame."""
    node = _make_node(ros_context, tmp_path, "multi")
    try:
        assert node.trigger_configure() == node_mod.TransitionCallbackReturn.SUCCESS
        cam = node._cameras["a"]
        cam.tasks = _SwitchesToAutoWhenAsked(["semseg"])
        monkeypatch.setattr(cam, "subscribed", lambda: {"semseg": True, "depth": False})
        ran: list[tuple[str, ...]] = []
        monkeypatch.setattr(node, "_infer_group", lambda tasks, group: ran.append(tasks))
        frame = make_image(48, 64, frame_id="a")
        node._process_round([("a", Pending(frame))])
        assert ran == [("semseg",)], "the frame was skipped as skipped_no_task"
        assert cam.stats.snapshot_counts()[1].get("skipped_no_task", 0) == 0
    finally:
        node.destroy_node()


def test_reload_frees_the_old_model_and_returns_its_memory(any_node, monkeypatch):
    """Each ~/reload_model of the same file grew the node by a model (~150 MB) that was never
    given back: the old weights must be freed and the heap trimmed after every reload."""
    import gc
    import weakref

    node, _ = any_node
    assert node.trigger_configure() == node_mod.TransitionCallbackReturn.SUCCESS
    trims = []
    monkeypatch.setattr(lifecycle_common, "release_free_memory", lambda: trims.append(1) or True)
    old = []
    for _ in range(3):
        old.append(weakref.ref(node._model.engine.weights))
        assert node._on_reload(Trigger.Request(), Trigger.Response()).success
    gc.collect()
    assert [r() is None for r in old] == [True, True, True]
    assert len(trims) == 3


def test_throttled_logging_at_several_levels_never_raises(node):
    """rclpy binds a severity to each logging call site: the node's one throttled-log helper,
    used at warning (bad input) then error (backend fault), raised ValueError out of the frame."""
    node._log_throttled("warning", "bad_input.truncated", "a bad frame")
    node._log_throttled("error", "fault.cpu", "a backend fault")
    node._log_throttled("debug", "queue_drop", "a queue drop")
    node._log_throttled("info", "other", "something")


def test_a_backend_fault_keeps_no_old_model_alive_after_the_reload(ros_context, tmp_path,
                                                                   monkeypatch):
    """A frame the primary failed on left its exception in a reference cycle (watchdog.py) whose
    traceback held the engine's frame with the model it ran: after the reload that brings the
    primary back, the old model stayed alive until a full collection, after the reload's trim,
    so the node's RSS grew per fault (bench/soak.py). Reference counting alone must free it."""
    import gc
    import weakref

    from edgemoe_ros.backends import BackendError

    weights = write_tiny_weights(tmp_path / "tiny.safetensors")
    n = EdgeMoeNode(context=ros_context, parameter_overrides=[
        Parameter("autostart", value=False), Parameter("backend", value="cpu"),
        Parameter("fallback_backend", value="reference"),
        Parameter("weights_path", value=str(weights))])
    # no collection there: reference counting alone must free the old model
    monkeypatch.setattr(lifecycle_common, "release_free_memory", lambda: True)
    gc.disable()
    try:
        assert n.trigger_configure() == node_mod.TransitionCallbackReturn.SUCCESS

        def device_error(*args, **kwargs):
            raise BackendError("simulated device error")

        for _ in range(3):
            primary = n._model.engine
            old = weakref.ref(primary.weights)
            primary.backend.run = device_error
            n._process_frame(node_mod.Frame(make_image(), False), n._frame_state())
            assert n._on_fallback and n._stats.snapshot_counts()[1]["backend_faults"] >= 1
            del primary.backend.run
            assert n._on_reload(Trigger.Request(), Trigger.Response()).success
            assert not n._on_fallback
            del primary
            assert old() is None, "the old model outlived its reload"
    finally:
        gc.enable()
        n.destroy_node()


def test_lifecycle_cycles_leave_nothing_behind_in_the_callback_group(node):
    """rclpy's callback group keeps a weak reference per entity ever added: each
    deactivate/activate left its destroyed subscriptions' and event handlers' behind."""
    assert node.trigger_configure() == node_mod.TransitionCallbackReturn.SUCCESS
    node.trigger_activate()
    node.trigger_deactivate()
    node.trigger_activate()
    size = len(node._group.entities)
    for _ in range(5):
        node.trigger_deactivate()
        node.trigger_activate()
    assert len(node._group.entities) == size
    node.trigger_deactivate()
