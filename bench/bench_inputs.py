# SPDX-License-Identifier: Apache-2.0
"""Inputs shared by the accelerator bench scripts: which model, which images.

A weights file when given, else seeded random weights of the SPEC (or tiny) model; rendered
driving scenes by default, uniform noise on request. One place, so bench_fixed and
accuracy_report always measure the same thing for the same flags.
"""

from __future__ import annotations

import numpy as np

from edgemoe_ros.model.config import ModelConfig, tiny_config
from edgemoe_ros.model.weights import ModelWeights, load_weights, random_init


def bench_weights(path: str | None, config: str, seed: int) -> tuple[ModelWeights, str]:
    """(weights, a description of where they came from) for ``--weights`` / ``--config`` /
    ``--seed``."""
    if path:
        return load_weights(path), path
    cfg = ModelConfig() if config == "spec" else tiny_config()
    return random_init(cfg, seed=seed), f"random_init(seed={seed}, config={config})"


def bench_images(cfg: ModelConfig, n: int, seed: int, random: bool) -> np.ndarray:
    """(n, img_h, img_w, 3) uint8: rendered scenes seed..seed+n-1, or uniform noise."""
    if random:
        return np.random.default_rng(seed).integers(
            0, 256, (n, cfg.img_h, cfg.img_w, 3), dtype=np.uint8
        )
    from edgemoe_ros.scenes import render_frame

    return np.stack([render_frame(seed + i, cfg.img_w, cfg.img_h).rgb for i in range(n)])
