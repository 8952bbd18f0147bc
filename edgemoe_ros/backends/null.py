# SPDX-License-Identifier: Apache-2.0
"""A backend that does no work: zero features and a fixed, evenly spread routing.

It exists to measure what the node costs *around* inference (decode, resize, heads on zeros,
colourise, publish) and to drive ROS plumbing tests at rates no real backbone sustains. The output
has exactly the shapes and dtypes a real backend returns, so nothing downstream can tell the
difference except by the values. The routing template is built once per batch size and copied;
features come from ``np.zeros`` (lazily zeroed pages), so a call costs microseconds and the
"backend that does nothing" does not show up in the overhead it is meant to isolate. Results are
fresh arrays, as from a real backend, so callers may modify them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..model.config import ModelConfig
from ..model.weights import ModelWeights
from .base import BackboneResult, Backend


def uniform_routing(cfg: ModelConfig, batch: int) -> np.ndarray:
    """(batch, num_moe_layers, num_tokens, top_k) expert ids spread round-robin over all experts.

    Token t picks experts (t*k + j) mod E for j < k: every expert gets the same share of tokens
    (±1) and the k picks of one token are distinct, like a real top-k, so per-expert usage counters
    downstream see a flat, valid histogram.
    """
    layers, n, k, e = len(cfg.moe_layers), cfg.num_tokens, cfg.top_k, cfg.num_experts
    ids = (np.arange(n)[:, None] * k + np.arange(k)[None, :]) % e
    return np.ascontiguousarray(np.broadcast_to(ids.astype(np.int32), (batch, layers, n, k)))


class NullBackend(Backend):
    """Backbone stand-in with zero compute; registry name ``null``. Takes no options."""

    name = "null"

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def load(self, weights: ModelWeights) -> None:
        """Only the config matters; the tensors are ignored (nothing is computed from them)."""
        self.config = weights.config
        self._cache.clear()

    def run(self, images: np.ndarray, tasks: Sequence[str]) -> BackboneResult:
        self.check_input(images, tasks)
        cfg = self.config
        assert cfg is not None  # check_input ran
        batch = images.shape[0]
        routing, counts = self._routing(batch)
        shape = (batch, cfg.num_patches, cfg.dim)
        return BackboneResult(features={t: np.zeros(shape, np.float32) for t in tasks},
                              routing={t: routing.copy() for t in tasks},
                              expert_counts={t: counts.copy() for t in tasks})

    def _routing(self, batch: int) -> tuple[np.ndarray, np.ndarray]:
        if batch not in self._cache:
            cfg = self.config
            assert cfg is not None
            routing = uniform_routing(cfg, batch)
            counts = np.zeros((len(cfg.moe_layers), cfg.num_experts), np.int64)
            for layer in range(counts.shape[0]):
                counts[layer] = np.bincount(routing[:, layer].ravel(), minlength=cfg.num_experts)
            self._cache[batch] = (routing, counts)
        return self._cache[batch]

    def close(self) -> None:
        self._cache.clear()

