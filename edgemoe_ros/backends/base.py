# SPDX-License-Identifier: Apache-2.0
"""The one small interface every backbone backend implements (cpu, reference, fixed, csim, fpga,
null).

A backend runs the *backbone* only (Edge-MoE accelerates the backbone; heads run on the host):
uint8 RGB images at model resolution in, final-LayerNorm patch features out, per task.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..model.config import ModelConfig
from ..model.weights import ModelWeights


class BackendError(RuntimeError):
    """A backend could not run (device timeout, library missing, bad state). The frame is
    dropped."""


@dataclass
class BackboneResult:
    """What a backend returns for a batch of B images and a set of tasks.

    features[task]: (B, num_patches, dim) float32, after the final LayerNorm, class token dropped.
    routing[task]:  (B, num_moe_layers, num_tokens, top_k) int32 expert ids (all tokens, cls
    first). expert_counts[task]: (num_moe_layers, num_experts) int64 tokens routed to each expert
    in this call.
    """

    features: dict[str, np.ndarray]
    routing: dict[str, np.ndarray]
    expert_counts: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.expert_counts:
            self.expert_counts = {t: count_experts(r) for t, r in self.routing.items()}


def count_experts(routing: np.ndarray, num_experts: int | None = None) -> np.ndarray:
    """Tokens routed to each expert per MoE layer: (B, layers, tokens, k) ids -> (layers, E)
    counts."""
    layers = routing.shape[1]
    e = int(num_experts or (routing.max() + 1 if routing.size else 0))
    counts = np.zeros((layers, e), dtype=np.int64)
    for layer in range(layers):
        counts[layer] = np.bincount(routing[:, layer].ravel(), minlength=e)[:e]
    return counts


class Backend(ABC):
    """Backbone runner. Lifecycle: ``load`` (may be called again to swap models) → ``run``* →
    ``close``."""

    #: Registry name, e.g. "cpu".
    name: str = "abstract"

    def __init__(self) -> None:
        self.config: ModelConfig | None = None

    @abstractmethod
    def load(self, weights: ModelWeights) -> None:
        """Prepare the weights (pack, quantise, upload). Called once per model, not per frame."""

    @abstractmethod
    def run(self, images: np.ndarray, tasks: Sequence[str]) -> BackboneResult:
        """Run the backbone. ``images``: (B, img_h, img_w, 3) uint8 RGB; ``tasks``: names from the
        config."""

    def close(self) -> None:  # noqa: B027 - optional hook: most backends hold nothing to release
        """Release resources (buffers, devices). Safe to call twice."""

    @property
    def threads(self) -> int:
        """Host threads this backend computes on (after ``load``); the engine runs the host-side
        task heads on as many. 1 unless a backend option says otherwise."""
        return 1

    def check_input(self, images: np.ndarray, tasks: Sequence[str]) -> None:
        """Shared argument checks so every backend fails the same way on a bad call."""
        if self.config is None:
            raise BackendError(f"backend {self.name!r}: run() before load()")
        cfg = self.config
        want = (cfg.img_h, cfg.img_w, 3)
        if images.ndim != 4 or images.shape[1:] != want or images.dtype != np.uint8:
            raise BackendError(
                f"backend {self.name!r}: images must be uint8 (B, {want[0]}, {want[1]}, 3), "
                f"got {images.dtype} {images.shape}")
        if not tasks:
            raise BackendError(f"backend {self.name!r}: no task requested")
        for t in tasks:
            cfg.task_id(t)  # raises ConfigError naming the task

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
