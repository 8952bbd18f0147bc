# SPDX-License-Identifier: Apache-2.0
"""The float64 reference forward as a backend: slow, but the yardstick the others are tested
against.

Selecting it in the node or a CLI runs the exact model math on real images, which is how a
suspicious output of a fast or fixed-point backend is checked in the field.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..model.reference import forward
from ..model.weights import ModelWeights
from .base import BackboneResult, Backend, count_experts


class ReferenceBackend(Backend):
    """Registry name ``reference``. Weights are cast to float64 once, at ``load``."""

    name = "reference"

    def __init__(self) -> None:
        super().__init__()
        self._weights: ModelWeights | None = None

    def load(self, weights: ModelWeights) -> None:
        weights.validate()
        self._weights = weights.astype(np.float64)
        self.config = weights.config

    def run(self, images: np.ndarray, tasks: Sequence[str]) -> BackboneResult:
        self.check_input(images, tasks)
        assert self._weights is not None and self.config is not None  # check_input ran
        features, routing, counts = {}, {}, {}
        for task in dict.fromkeys(tasks):
            out = forward(self._weights, images, task)
            features[task] = out.features.astype(np.float32)
            routing[task] = out.routing
            counts[task] = count_experts(out.routing, self.config.num_experts)
        return BackboneResult(features, routing, counts)

    def close(self) -> None:
        self._weights = None
