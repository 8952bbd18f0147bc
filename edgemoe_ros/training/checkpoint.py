"""Training checkpoints: written atomically, read back with ``torch.load(weights_only=True)``.

Why: a checkpoint is a pickle, and users are told to copy runs between machines; loading one with
``weights_only=False`` runs whatever code the file names. A checkpoint therefore holds only
tensors and plain data (numbers, strings, lists, dicts): numpy values are converted on save, so
the restricted unpickler reads it, and a file holding anything else is refused with a clear error.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch


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
    """Write ``payload`` (made ``plain``) under a temporary name, then rename: never half a file."""
    tmp = path.with_suffix(".tmp")
    torch.save(plain(payload), tmp)
    os.replace(tmp, path)


def load_checkpoint_file(path: Path) -> dict[str, Any]:
    """Read a checkpoint with the restricted unpickler (tensors and plain data only)."""
    try:
        ck = torch.load(path, weights_only=True, map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - pickle/zip/torch errors all mean "not usable"
        raise CheckpointError(f"{path}: not a checkpoint this trainer can read safely "
                              f"(only tensors and plain data are loaded): {exc}") from None
    if not isinstance(ck, dict):
        raise CheckpointError(f"{path}: not a checkpoint (top level is {type(ck).__name__}, not a dict)")
    return ck
