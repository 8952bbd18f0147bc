# SPDX-License-Identifier: Apache-2.0
"""Lifecycle plumbing that ``edgemoe_node`` and ``edgemoe_multi_node`` share.

Both nodes own subscriptions (``self._subs``), a model to load, reload and release, and an
optional autostart timer; how each stops its threads and frees its outputs differs, so each node
keeps its own ``_stop_processing``, ``_release_model`` and ``_publish_label_info`` and this mixin
only calls them. Put it before ``LifecycleNode`` in the bases so its ``destroy_node`` runs first.

Loading the model (configure) and ``~/reload_model`` live here once for both nodes. The weights
loader is passed in by the node at each call, so a test that replaces a node module's
``load_weights_for`` changes what that node loads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from std_srvs.srv import Trigger

from ..allocator import FreeMemoryDecay, release_free_memory
from ..model.weights import ModelWeights
from .guards import serialised
from .model_loader import LoadedModel, load_model
from .params import NodeParams, ParameterValueError, read_all
from .spin import finish_after_shutdown

T = TypeVar("T")
#: Reads and validates the weights file the parameters name (``model_loader.load_weights_for``).
WeightsLoader = Callable[[NodeParams], tuple[Path, ModelWeights]]

STATE_UNCONFIGURED = "unconfigured"
STATE_INACTIVE = "inactive"
STATE_ACTIVE = "active"
STATE_FINALIZED = "finalized"
#: What a model is built from (applied on configure / ~/reload_model; set back after a failed
#: reload).
MODEL_PARAMETERS = (
    "weights_path",
    "backend",
    "fallback_backend",
    "backend_options",
    "resize_mode",
)
SRV_RELOAD = "~/reload_model"


class LifecycleCommon:
    """Steady timers, autostart, the model (configure, reload, release), input subscription
    teardown and destroy_node for the nodes."""

    # Provided by the node (rclpy.lifecycle.LifecycleNode and the node's constructor).
    _subs: list[Any]
    _autostart_timer: Any
    _group: Any
    _steady_clock: Any
    finished: Any  # rclpy.task.Future: done once the shutdown transition ran (spin.py)

    def _stop_processing(self) -> None:  # pragma: no cover - each node defines it
        raise NotImplementedError

    def _release_model(self) -> None:  # pragma: no cover - each node defines it
        raise NotImplementedError

    def _publish_label_info(self, class_names: tuple[str, ...]) -> None:  # pragma: no cover
        """Latch the loaded model's class names on the node's label_info topic(s)."""
        raise NotImplementedError

    def _init_model_state(self) -> None:
        """The constructor's model bookkeeping, the same in both nodes."""
        self._model_lock = threading.Lock()
        # Lifecycle transitions and ~/reload_model run one at a time (guards.serialised).
        self._transition_lock = threading.RLock()
        self._model: LoadedModel | None = None
        self._on_fallback = False
        self._lifecycle = STATE_UNCONFIGURED
        self._config_error = ""
        self._reload_error = ""  # the last ~/reload_model failure, until a reload succeeds
        self._reloads = {"succeeded": 0, "failed": 0}

    # ------------------------------------------------------------------ transitions
    # configure and activate differ per node; these four are the same for both. Each holds the
    # transition lock, as ~/reload_model does (guards.serialised).
    @serialised("_transition_lock")
    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop_processing()
        self._lifecycle = STATE_INACTIVE
        self.get_logger().info("deactivated")  # type: ignore[attr-defined]
        return super().on_deactivate(state)  # type: ignore[misc]

    @serialised("_transition_lock")
    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._release_model()
        self._lifecycle = STATE_UNCONFIGURED
        self.get_logger().info("cleaned up")  # type: ignore[attr-defined]
        return super().on_cleanup(state)  # type: ignore[misc]

    @serialised("_transition_lock")
    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything from whatever state we are in, then let ``main`` exit."""
        self._release_all()
        self._lifecycle = STATE_FINALIZED
        self.get_logger().info("shut down")  # type: ignore[attr-defined]
        finish_after_shutdown(self.finished, self._steady_timer)
        return super().on_shutdown(state)  # type: ignore[misc]

    @serialised("_transition_lock")
    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.get_logger().error("error transition: releasing resources")  # type: ignore[attr-defined]
        self._release_all()
        self._lifecycle = STATE_UNCONFIGURED
        return TransitionCallbackReturn.SUCCESS

    # ------------------------------------------------------------------ model
    def _configure_model(
        self, params: NodeParams, load_weights: WeightsLoader
    ) -> LoadedModel | None:
        """on_configure's model step: load weights and backend(s) and install them; on any error
        log it, keep it for diagnostics and return None (the node stays unconfigured)."""
        try:
            _, weights = load_weights(params)
            model = load_model(params, weights)
        except Exception as exc:  # noqa: BLE001 - every load error must leave the node alive
            self._config_error = f"{type(exc).__name__}: {exc}"
            self.get_logger().error(  # type: ignore[attr-defined]
                f"configure failed, staying unconfigured: {self._config_error}"
            )
            return None
        self._install_model(model)
        self._config_error = self._reload_error = ""
        self._publish_label_info(model.config.class_names)
        return model

    def _install_model(self, model: LoadedModel) -> None:
        """Make ``model`` the one frames run on; close the one it replaces (never leak a backend:
        threads, device buffers)."""
        with self._model_lock:
            old, self._model, self._on_fallback = self._model, model, model.engine is None
        if old is not None:
            self._drain_in_flight()
            old.close()

    def _drain_in_flight(self) -> None:
        """Wait for work that took the old model before a swap and still runs on it outside the
        model lock (the multi-camera node's heads stage); the single node has none."""

    def _close_model(self) -> None:
        """Close the model (cleanup, shutdown) and give its memory back to the system."""
        with self._model_lock:
            model, self._model = self._model, None
        if model is not None:
            model.close()
            del model
            release_free_memory()

    def _reload_model(
        self, response: Trigger.Response, load_weights: WeightsLoader
    ) -> Trigger.Response:
        """``~/reload_model``: new weights (and backend if its parameters changed) without a
        restart. A file that fails to load is refused and the running model keeps serving.

        The node's service handler calls this holding the transition lock (guards.serialised),
        so a reload never lands between the steps of a configure or cleanup.
        """
        if self._lifecycle not in (STATE_INACTIVE, STATE_ACTIVE):
            response.success = False
            response.message = f"node is {self._lifecycle}; configure it before reloading"
            return response
        try:
            response.message = self._swap_model(read_all(self), load_weights)  # type: ignore[arg-type]
            response.success = True
            self._reload_error = ""
            self._reloads["succeeded"] += 1
            assert self._model is not None
            self._publish_label_info(self._model.config.class_names)
            self.get_logger().info(response.message)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a failed reload keeps the old model running
            response.success = False
            response.message = f"reload failed, previous model kept: {type(exc).__name__}: {exc}"
            reverted = self._revert_model_parameters()
            if reverted:
                response.message += (
                    f"; parameters {', '.join(reverted)} set back to the running model's"
                )
            self._reload_error = response.message
            self._reloads["failed"] += 1
            self.get_logger().error(response.message)  # type: ignore[attr-defined]
        release_free_memory()  # the replaced (or refused) model's memory back to the system
        return response

    def _swap_model(self, params: NodeParams, load_weights: WeightsLoader) -> str:
        path, weights = load_weights(params)  # slow part outside the lock: frames keep flowing
        with self._model_lock:
            current = self._model
            if current is not None and current.same_setup(params, weights.config):
                current.reload(weights, params)
                self._on_fallback = False
                return f"reloaded weights {path} on backend {current.backend}"
        model = load_model(params, weights)
        self._install_model(model)
        return f"reloaded {path} on new backend {model.backend}"

    def _revert_model_parameters(self) -> list[str]:
        """After a failed reload: the model parameters back to what the running model was built
        from, so ``param get`` tells what runs. Returns the names changed."""
        model = self._model
        if model is None or model.source is None:
            return []
        get = self.get_parameter  # type: ignore[attr-defined]
        changes = [
            Parameter(name, value=getattr(model.source, name))
            for name in MODEL_PARAMETERS
            if get(name).value != getattr(model.source, name)
        ]
        for result in self.set_parameters(changes) if changes else ():  # type: ignore[attr-defined]
            if not result.successful:
                self.get_logger().error(  # type: ignore[attr-defined]
                    f"could not set back the model parameters: {result.reason}"
                )
        return [p.name for p in changes]

    # ------------------------------------------------------------------ parameters and timers
    def _declare_parameters(self, declare: Callable[[], T]) -> T:
        """``declare()`` (the constructor's parameter declaration); on a bad value release the
        half-built node and re-raise. The context would otherwise destroy it at shutdown through
        our destroy_node, whose state was never set up (main logs FATAL, exits 2)."""
        try:
            return declare()
        except ParameterValueError:
            LifecycleNode.destroy_node(self)  # type: ignore[arg-type]
            raise

    def _steady_timer(self, period_s: float, callback: Any) -> Any:
        """A timer on the steady clock, whatever ``use_sim_time`` says.

        A timer on ROS time under ``use_sim_time`` is woken by every /clock message (rcl wakes
        the wait set on each forward time jump): at 100 Hz that kept the executor thread busy
        enough to starve the worker (issue 22: 9.9 -> 1.1 Hz), and with /clock paused the
        diagnostics stopped and shutdown never finished. Outputs keep their input stamps, so
        nothing the node publishes depends on which clock its timers use.
        """
        return self.create_timer(  # type: ignore[attr-defined]
            period_s, callback, callback_group=self._group, clock=self._steady_clock)

    def _decay_free_memory(self) -> None:
        """From the diagnostics timer: hand a burst's freed buffers back to the kernel once
        they stay unused (``allocator.FreeMemoryDecay``; nothing happens in steady state)."""
        decay = getattr(self, "_memory_decay", None)
        if decay is None:
            decay = self._memory_decay = FreeMemoryDecay()
        decay.tick(time.monotonic())

    def _autostart(self) -> None:
        """One-shot timer callback: configure, then activate if configure succeeded."""
        self.destroy_timer(self._autostart_timer)  # type: ignore[attr-defined]
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:  # type: ignore[attr-defined]
            return  # configure logged why; the node stays up for a later configure/reload
        self.trigger_activate()  # type: ignore[attr-defined]

    def _destroy_input_subscriptions(self) -> None:
        """Stop the inputs first, so no frame arrives while the processing threads stop."""
        for sub in self._subs:
            self.destroy_subscription(sub)  # type: ignore[attr-defined]
        self._subs = []
        # rclpy's callback group keeps a weak reference to every entity ever added to it and never
        # drops one: without this, each activation (subscriptions, their event handlers) would
        # leave ~7 dead entries behind for the life of the node.
        entities = self._group.entities
        entities.difference_update([ref for ref in list(entities) if ref() is None])

    def _release_all(self) -> None:
        """Stop processing, then free the model: on_error, on_shutdown and destroy_node."""
        self._stop_processing()
        self._release_model()

    def destroy_node(self) -> None:
        """Stop the worker and free the backend even when the process exits without transitions."""
        self._release_all()
        super().destroy_node()  # type: ignore[misc]
