"""``edgemoe-train`` checkpoints: only tensors and plain metadata, read back with
``torch.load(weights_only=True)`` (no pickled objects: a checkpoint cannot run code when loaded).

A checkpoint holds the model, the optimiser (moments and step counts), the step reached and the
schedule's length, the class weights, and what defines the run: the model config, the class
scheme and the data mixture. Resuming refuses a *foreign* checkpoint (another tool's, another
model's or another class scheme's) with an error that says which, instead of loading
mismatched tensors or continuing a different run.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

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
