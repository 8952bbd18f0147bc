# SPDX-License-Identifier: Apache-2.0
"""Case directories for the standalone C++ testbench (``hls_accel/tb/testbench.cpp``).

A case is the kernel's inputs plus the outputs it must produce, as raw little-endian binaries:
``case.txt`` ("num_images task_id model_signature"), ``images.bin`` (uint8), the two packed weight
buffers (int16), ``expected_features.bin`` and ``expected_routing.bin`` (int32). The expected
outputs normally come from the numpy emulator, so the testbench checks C++ against Python.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..accel import interface as itf
from ..model.config import ModelConfig

CASE_FILES = ("case.txt", "images.bin", "weights_one_time.bin", "weights_experts.bin",
              "expected_features.bin", "expected_routing.bin")


def write_case(directory: str | Path, cfg: ModelConfig, packed: itf.PackedWeights,
               images: np.ndarray,
               task_id: int, features: np.ndarray, routing: np.ndarray) -> Path:
    """Write one testbench case; shapes are checked against ``buffer_shapes`` first."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    shapes = itf.buffer_shapes(cfg, images.shape[0])
    for name, arr in (("images", images), ("features_out", features), ("routing_out", routing)):
        shape, dtype = shapes[name]
        if tuple(arr.shape) != shape:
            raise ValueError(f"testbench case: {name} has shape {arr.shape}, expected {shape}")
    (d / "case.txt").write_text(f"{images.shape[0]} {task_id} {itf.model_signature(cfg)}\n")
    np.ascontiguousarray(images, np.uint8).tofile(d / "images.bin")
    np.ascontiguousarray(packed.one_time, "<i2").tofile(d / "weights_one_time.bin")
    np.ascontiguousarray(packed.experts, "<i2").tofile(d / "weights_experts.bin")
    np.ascontiguousarray(features, "<i4").tofile(d / "expected_features.bin")
    np.ascontiguousarray(routing, "<i4").tofile(d / "expected_routing.bin")
    return d
