# SPDX-License-Identifier: Apache-2.0
"""What the node runs frames on: weights + primary engine + optional fallback engine.

Kept out of ``node.py`` so the lifecycle code reads as ROS wiring; everything here is plain
Python over the engine contract (docs/ARCHITECTURE.md), no rclpy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model.config import ModelConfig
from ..model.weights import ModelWeights, load_weights
from .hardware_id import hardware_id
from .params import NodeParams
from .watchdog import Watchdog

_log = logging.getLogger(__name__)

#: The model shipped in the package, used when ``weights_path`` is ''.
SHIPPED_WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "edgemoe_synth.safetensors"


def resolve_weights_path(param: str) -> Path:
    """'' -> the shipped model; otherwise the given path (``~`` expanded)."""
    return SHIPPED_WEIGHTS if not param else Path(param).expanduser()


def make_engine(weights: ModelWeights, backend: str, options: dict[str, Any], resize_mode: str) -> Any:
    """An ``Engine`` on a new backend instance; the backend is closed again if the engine fails."""
    # Imported here so the node starts (parameters, services, diagnostics) before the model
    # stack is imported; a broken optional backend then shows up as a configure failure.
    from ..backends import create_backend
    from ..engine import Engine

    backend_obj = create_backend(backend, **options)
    try:
        return Engine(weights, backend_obj, resize_mode=resize_mode or None)
    except Exception:
        backend_obj.close()
        raise


@dataclass
class LoadedModel:
    """The primary engine, an optional fallback engine, and the parameters they were built from.

    ``engine`` is None when the primary failed to build and the fallback runs instead
    (``primary_error`` says why). Each engine has a :class:`Watchdog` its frames run through.
    """

    engine: Any | None
    fallback: Any | None
    config: ModelConfig
    backend: str
    fallback_backend: str
    options: dict[str, Any]
    resize_mode: str
    #: The parameters this model was built from: what a failed reload puts back.
    source: NodeParams | None = None
    #: Why the primary backend could not be built ('' = it runs).
    primary_error: str = ""
    watchdog: Watchdog = field(default_factory=lambda: Watchdog("primary"))
    fallback_watchdog: Watchdog = field(default_factory=lambda: Watchdog("fallback"))
    #: /diagnostics ``hardware_id`` of the primary and of the fallback (hardware_id.py), taken
    #: once here: a reload on the same backends keeps the device.
    hardware: str = ""
    fallback_hardware: str = ""

    def __post_init__(self) -> None:
        self.watchdog.name, self.fallback_watchdog.name = self.backend, self.fallback_backend or "none"
        if not self.hardware and self.engine is not None:
            self.hardware = hardware_id(self.backend, getattr(self.engine, "backend", None))
        if not self.fallback_hardware and self.fallback is not None:
            self.fallback_hardware = hardware_id(self.fallback_backend, getattr(self.fallback, "backend", None))

    def hardware_of(self, on_fallback: bool) -> str:
        """The device the frames run on now."""
        return self.fallback_hardware if on_fallback else self.hardware

    def same_setup(self, params: NodeParams, config: ModelConfig) -> bool:
        """True if ``params``/``config`` need the same backends, so only the weights change.

        Never while a primary call is hung: that backend is replaced, not reloaded under it."""
        fb = "" if params.fallback_backend == params.backend else params.fallback_backend
        return (self.engine is not None and self.watchdog.hung_for() is None and self.backend == params.backend and self.options == params.backend_kwargs
                and self.resize_mode == params.resize_mode and self.fallback_backend == fb
                and self.config == config)

    def reload(self, weights: ModelWeights, params: NodeParams) -> None:
        """New weights on the same backends (an FPGA cannot be opened twice, so reuse it)."""
        assert self.engine is not None  # same_setup() is False without a primary engine
        self.engine.reload(weights)
        if self.fallback is not None:
            self.fallback.reload(weights)
        self.config = weights.config
        self.source = params

    def close(self) -> None:
        """Close both engines; one a hung call is still inside is closed when that call returns."""
        for eng, dog in ((self.engine, self.watchdog), (self.fallback, self.fallback_watchdog)):
            if eng is not None and not dog.when_idle(eng.close):
                _log.warning("backend '%s' is still inside a hung call: closing it when the call returns",
                             dog.name)
            dog.close()


def load_weights_for(params: NodeParams) -> tuple[Path, ModelWeights]:
    """The weights file the parameters name, loaded and validated (``WeightsError`` names file/tensor)."""
    path = resolve_weights_path(params.weights_path)
    return path, load_weights(path)


def load_model(params: NodeParams, weights: ModelWeights) -> LoadedModel:
    """Build the primary engine and, if configured, the fallback engine, on ``weights``.

    A primary that fails to build (missing bitstream, corrupt csim library, no device) leaves the
    fallback running alone when there is one; without a fallback the error propagates.
    """
    options = params.backend_kwargs
    fb = params.fallback_backend
    if fb == params.backend:
        _log.warning("fallback_backend '%s' equals backend: no fallback", fb)
        fb = ""
    primary_error = ""
    try:
        engine = make_engine(weights, params.backend, options, params.resize_mode)
    except Exception as exc:
        if not fb:
            raise
        engine, primary_error = None, f"{type(exc).__name__}: {exc}"
        _log.error("backend '%s' failed to start (%s); running on fallback '%s'", params.backend, primary_error, fb)
    fallback = None
    if fb:
        try:
            # The fallback is a host backend: the primary's device options do not apply to it.
            fallback = make_engine(weights, fb, {}, params.resize_mode)
        except Exception:
            if engine is not None:
                engine.close()
            raise
    return LoadedModel(engine, fallback, weights.config, params.backend, fb, options, params.resize_mode, params,
                       primary_error)
