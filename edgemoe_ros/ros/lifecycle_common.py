# SPDX-License-Identifier: Apache-2.0
"""Lifecycle plumbing that ``edgemoe_node`` and ``edgemoe_multi_node`` share.

Both nodes own subscriptions (``self._subs``), a model to release and an optional autostart
timer; how each stops its threads and frees its model differs, so each node keeps its own
``_stop_processing`` and ``_release_model`` and this mixin only calls them. Put it before
``LifecycleNode`` in the bases so its ``destroy_node`` runs first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn

from .params import ParameterValueError

T = TypeVar("T")


class LifecycleCommon:
    """Steady timers, autostart, input subscription teardown and destroy_node for the nodes."""

    # Provided by the node (rclpy.lifecycle.LifecycleNode and the node's constructor).
    _subs: list[Any]
    _autostart_timer: Any
    _group: Any
    _steady_clock: Any

    def _stop_processing(self) -> None:  # pragma: no cover - each node defines it
        raise NotImplementedError

    def _release_model(self) -> None:  # pragma: no cover - each node defines it
        raise NotImplementedError

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
