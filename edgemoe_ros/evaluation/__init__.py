# SPDX-License-Identifier: Apache-2.0
"""Evaluate a model on a labelled dataset (``edgemoe-eval``): scores, pictures, per-frame records.

    with Engine(weights, backend="cpu") as engine:
        summary = evaluate(engine, ManifestDataset("manifest.json"), save_dir=Path("out"))

No ROS here; the engine does all pre-processing (fit to the model, restore to the image size).
"""

from .meter import EVAL_MAX_DEPTH, EVAL_MIN_DEPTH, DatasetMeter
from .run import evaluate

__all__ = ["EVAL_MAX_DEPTH", "EVAL_MIN_DEPTH", "DatasetMeter", "evaluate"]
