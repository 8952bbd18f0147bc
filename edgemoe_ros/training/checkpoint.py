# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-train`` checkpoints: only tensors and plain metadata, read back with
``torch.load(weights_only=True)`` (no pickled objects: a checkpoint cannot run code when loaded).

A checkpoint holds the model, the optimiser (moments and step counts), the step reached and the
schedule's length, the class weights, and what defines the run: the model config, the class
scheme and the data mixture. Resuming refuses a *foreign* checkpoint (another tool's, another
model's or another class scheme's) with an error that says which, instead of loading
mismatched tensors or continuing a different run.

The older trainers (``train.py``, ``train_heads.py``) write theirs with ``save_checkpoint_file``
(numpy values made plain) and read them with ``load_checkpoint_file``: the same restricted
unpickler, so a copied run cannot run code either.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: ``kind`` of every checkpoint this module writes, and the layout version.
CHECKPOINT_KIND = "edgemoe-train"
CHECKPOINT_VERSION = 1
#: Metadata that must match the resuming run (config JSON without notes, class scheme).
IDENTITY_KEYS = ("config", "scheme")


class ForeignCheckpointError(ValueError):
    """A checkpoint that is not this run's to resume."""


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, state dicts and plain values) atomically under ``path``."""
    payload = {"kind": CHECKPOINT_KIND, "version": CHECKPOINT_VERSION, **state}
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    """Read ``path`` safely and check it belongs to the run described by ``identity``
    (``IDENTITY_KEYS`` values); ``ForeignCheckpointError`` otherwise."""
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ForeignCheckpointError(
            f"{path}: not an {CHECKPOINT_KIND} checkpoint (it holds objects that "
            f"weights_only loading refuses, or is damaged): {first}"
        ) from None
    if not isinstance(ck, dict) or ck.get("kind") != CHECKPOINT_KIND:
        raise ForeignCheckpointError(
            f"{path}: not an {CHECKPOINT_KIND} checkpoint (another tool's?)"
        )
    if ck.get("version") != CHECKPOINT_VERSION:
        raise ForeignCheckpointError(
            f"{path}: checkpoint layout version {ck.get('version')!r}, this build "
            f"reads {CHECKPOINT_VERSION}"
        )
    for key in IDENTITY_KEYS:
        if ck.get(key) != identity[key]:
            raise ForeignCheckpointError(
                f"{path}: checkpoint of another run: its {key} is {_short(ck.get(key))}, "
                f"this run's is {_short(identity[key])}; resume with the same model and "
                "--classes, or start in a new --out"
            )
    return ck


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


# ----- the older trainers' checkpoints (train.py, train_heads.py)
class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read safely (foreign objects, corrupt, not a checkpoint)."""


def plain(value: Any) -> Any:
    """``value`` with numpy arrays/scalars turned into tensors/Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    if isinstance(value, np.generic):
        return value.item()
    return value


def save_checkpoint_file(path: Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` (made ``plain``) under a temporary name, then rename: never half
    a file."""
    tmp = path.with_suffix(".tmp")
    torch.save(plain(payload), tmp)
    os.replace(tmp, path)


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """Read a checkpoint with the restricted unpickler (tensors and plain data only)."""
    try:
        ck = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - pickle/zip/torch errors all mean "not usable"
        raise CheckpointError(
            f"{path}: not a checkpoint this trainer can read safely "
            f"(only tensors and plain data are loaded): {exc}"
        ) from None
    if not isinstance(ck, dict):
        raise CheckpointError(
            f"{path}: not a checkpoint (top level is {type(ck).__name__}, not a dict)"
        )
    return ck
