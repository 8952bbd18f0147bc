# SPDX-License-Identifier: Apache-2.0
"""``fixed`` backend: the bit-exact numpy emulator of our accelerator (``fixedpoint/``).

Runs without a compiler or a board and gives exactly the numbers the FPGA would (the C-simulation
test holds it to that), so it is the way to see fixed-point effects on the node's outputs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..accel import interface as itf
from ..fixedpoint.emulator import FixedPointEmulator
from ..fixedpoint.quant import act_to_float32
from ..model.weights import ModelWeights
from .base import BackboneResult, Backend, BackendError, count_experts


class FixedPointBackend(Backend):
    """Backbone in the accelerator's integer arithmetic; both tasks share the common prefix."""

    name = "fixed"

    def __init__(self) -> None:
        super().__init__()
        self._emulator: FixedPointEmulator | None = None
        self.packed: itf.PackedWeights | None = None

    def load(self, weights: ModelWeights) -> None:
        packed = itf.pack_weights(weights)
        self._emulator = FixedPointEmulator(packed, weights.config)
        self.packed, self.config = packed, weights.config

    def run(self, images: np.ndarray, tasks: Sequence[str]) -> BackboneResult:
        self.check_input(images, tasks)
        if self._emulator is None or self.config is None:
            raise BackendError("backend 'fixed': run() before load()")
        cfg = self.config
        ids = [cfg.task_id(t) for t in tasks]
        out = self._emulator.run(images, ids)
        features = {t: act_to_float32(out[i].features) for t, i in zip(tasks, ids, strict=True)}
        routing = {t: out[i].routing for t, i in zip(tasks, ids, strict=True)}
        counts = {t: count_experts(r, cfg.num_experts) for t, r in routing.items()}
        return BackboneResult(features, routing, counts)

    def close(self) -> None:
        self._emulator, self.packed = None, None
