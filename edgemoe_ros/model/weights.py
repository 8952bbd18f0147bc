"""Weights: canonical tensor names and shapes, seeded init, and the safetensors file format.

One file per model (SPEC §6): every tensor of the model plus the ``ModelConfig`` as JSON in the
safetensors metadata, so a file alone is enough to build the model. Linear weights are stored
PyTorch-style as (out_features, in_features); routers as (num_tasks, dim, num_experts) because the
router is ``logits = x @ W_task`` (M3ViT's ``w_gate``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from .config import ConfigError, ModelConfig

#: Metadata keys inside the safetensors header.
META_CONFIG = "edgemoe.config"
META_FORMAT = "edgemoe.format"
FORMAT_VERSION = "1"

Shape = tuple[int, ...]


class WeightsError(ValueError):
    """A weights file that cannot be used; the message names the file and, if any, the tensor."""

    def __init__(self, path: str | os.PathLike | None, message: str, tensor: str | None = None):
        self.path = None if path is None else str(path)
        self.tensor = tensor
        where = f"{self.path}" if self.path else "<weights>"
        if tensor:
            where += f" [tensor {tensor!r}]"
        super().__init__(f"{where}: {message}")


def head_shapes(cfg: ModelConfig, task: str) -> dict[str, Shape]:
    """Tensors of one task head (``heads.<task>.*``)."""
    c = cfg.head_out_channels(task)
    p = f"heads.{task}."
    d = cfg.dim
    if cfg.head == "light":
        # LayerNorm is the backbone's final norm; per token: fc1 -> GELU -> fc2 to a p*p*c patch.
        return {
            p + "fc1.weight": (cfg.light_hidden, d),
            p + "fc1.bias": (cfg.light_hidden,),
            p + "fc2.weight": (cfg.patch * cfg.patch * c, cfg.light_hidden),
            p + "fc2.bias": (cfg.patch * cfg.patch * c,),
        }
    # M3ViT VisionTransformerUpHead: norm, then up_stages x (3x3 conv, BN, ReLU, 2x up), 1x1 conv.
    shapes: dict[str, Shape] = {p + "norm.weight": (d,), p + "norm.bias": (d,)}
    cin = d
    for s in range(cfg.up_stages):
        ch = cfg.up_channels
        shapes[f"{p}conv_{s}.weight"] = (ch, cin, 3, 3)
        shapes[f"{p}conv_{s}.bias"] = (ch,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{p}bn_{s}.{name}"] = (ch,)
        cin = ch
    shapes[f"{p}conv_{cfg.up_stages}.weight"] = (c, cin, 1, 1)
    shapes[f"{p}conv_{cfg.up_stages}.bias"] = (c,)
    return shapes


def expected_shapes(cfg: ModelConfig) -> dict[str, Shape]:
    """Every tensor name of the model and its shape, in a stable order."""
    d, n = cfg.dim, cfg.num_tokens
    shapes: dict[str, Shape] = {
        "patch_embed.weight": (d, cfg.in_chans, cfg.patch, cfg.patch),
        "patch_embed.bias": (d,),
        "cls_token": (1, d),
        "pos_embed": (n, d),
    }
    for b in range(cfg.depth):
        p = f"blocks.{b}."
        shapes.update({
            p + "norm1.weight": (d,), p + "norm1.bias": (d,),
            p + "attn.qkv.weight": (3 * d, d), p + "attn.qkv.bias": (3 * d,),
            p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,),
            p + "norm2.weight": (d,), p + "norm2.bias": (d,),
        })
        if cfg.is_moe(b):
            e, h = cfg.num_experts, cfg.expert_hidden
            shapes.update({
                p + "moe.router.weight": (len(cfg.tasks), d, e),
                p + "moe.fc1.weight": (e, h, d), p + "moe.fc1.bias": (e, h),
                p + "moe.fc2.weight": (e, d, h), p + "moe.fc2.bias": (e, d),
            })
        else:
            shapes.update({
                p + "mlp.fc1.weight": (cfg.mlp_hidden, d), p + "mlp.fc1.bias": (cfg.mlp_hidden,),
                p + "mlp.fc2.weight": (d, cfg.mlp_hidden), p + "mlp.fc2.bias": (d,),
            })
    shapes["norm.weight"] = (d,)
    shapes["norm.bias"] = (d,)
    for task in cfg.tasks:
        shapes.update(head_shapes(cfg, task))
    return shapes


def backbone_param_count(cfg: ModelConfig) -> int:
    return sum(int(np.prod(s)) for k, s in expected_shapes(cfg).items() if not k.startswith("heads."))


@dataclass
class ModelWeights:
    """A model: its config and float32 tensors keyed by canonical name."""

    config: ModelConfig
    tensors: dict[str, np.ndarray]
    source: str | None = None

    def __getitem__(self, name: str) -> np.ndarray:
        return self.tensors[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def validate(self) -> None:
        """Check names, shapes and values against the config; raise ``WeightsError`` naming the tensor."""
        expected = expected_shapes(self.config)
        for name in expected:
            if name not in self.tensors:
                raise WeightsError(self.source, "missing tensor", name)
        for name, arr in self.tensors.items():
            if name not in expected:
                raise WeightsError(self.source, "unexpected tensor (not in the model config)", name)
            if tuple(arr.shape) != expected[name]:
                raise WeightsError(self.source, f"shape {tuple(arr.shape)} != expected {expected[name]}", name)
            if arr.dtype.kind != "f":
                raise WeightsError(self.source, f"dtype {arr.dtype} is not floating point", name)
            if not np.all(np.isfinite(arr)):
                raise WeightsError(self.source, "contains NaN or Inf", name)

    def astype(self, dtype: np.dtype | type) -> "ModelWeights":
        return ModelWeights(self.config, {k: v.astype(dtype) for k, v in self.tensors.items()}, self.source)


def random_init(cfg: ModelConfig, seed: int = 0) -> ModelWeights:
    """Seeded random weights with sensible scales (ViT-style truncated-normal-ish init)."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in expected_shapes(cfg).items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("running_var",) or (leaf == "weight" and len(shape) == 1):
            arr = 1.0 + 0.05 * rng.standard_normal(shape)  # LayerNorm / BN scale
        elif leaf in ("bias", "running_mean"):
            arr = 0.02 * rng.standard_normal(shape)
        else:
            fan_in = int(np.prod(shape[1:])) if name.endswith("router.weight") is False else shape[1]
            if name.endswith(("moe.fc1.weight", "moe.fc2.weight")):
                fan_in = shape[-1]
            std = 0.02 if name in ("cls_token", "pos_embed") else 1.0 / np.sqrt(max(fan_in, 1))
            arr = std * np.clip(rng.standard_normal(shape), -2.0, 2.0)
        tensors[name] = arr.astype(np.float32)
    return ModelWeights(cfg, tensors, source=f"random_init(seed={seed})")


def save_weights(weights: ModelWeights, path: str | os.PathLike, dtype: str = "float32") -> None:
    """Write a safetensors file with the config in its metadata. ``dtype``: float32 or float16."""
    from safetensors.numpy import save_file

    if dtype not in ("float32", "float16"):
        raise ValueError(f"dtype must be float32 or float16, not {dtype!r}")
    weights.validate()
    arrays = {k: np.ascontiguousarray(v.astype(dtype)) for k, v in weights.tensors.items()}
    meta = {META_CONFIG: weights.config.to_json(), META_FORMAT: FORMAT_VERSION}
    tmp = Path(str(path) + ".tmp")
    save_file(arrays, str(tmp), metadata=meta)
    os.replace(tmp, path)  # never leave a half-written weights file under the real name


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors header metadata, with clear errors for files that are not safetensors."""
    p = Path(path)
    if not p.is_file():
        raise WeightsError(p, "file not found")
    size = p.stat().st_size
    with open(p, "rb") as fh:
        raw = fh.read(8)
        if len(raw) < 8:
            raise WeightsError(p, "truncated file (no safetensors header)")
        hlen = int.from_bytes(raw, "little")
        if hlen <= 0 or 8 + hlen > size:
            raise WeightsError(p, f"truncated or not a safetensors file (header length {hlen}, file {size} bytes)")
        try:
            header = json.loads(fh.read(hlen))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise WeightsError(p, "corrupt safetensors header") from None
    if not isinstance(header, dict):
        raise WeightsError(p, "corrupt safetensors header")
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if ends and 8 + hlen + max(ends) > size:
        raise WeightsError(p, f"truncated file: data ends at {8 + hlen + max(ends)} bytes, file has {size}")
    return dict(header.get("__metadata__") or {})


def load_weights(path: str | os.PathLike, expect: ModelConfig | None = None) -> ModelWeights:
    """Load and validate a weights file. ``expect``: fail if the file's config differs from it."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    meta = read_metadata(path)
    if META_CONFIG not in meta:
        raise WeightsError(path, f"no model config in metadata (key {META_CONFIG!r}); not an edgemoe weights file")
    try:
        cfg = ModelConfig.from_json(meta[META_CONFIG])
    except (ConfigError, TypeError) as exc:
        raise WeightsError(path, f"bad model config in metadata: {exc}") from None
    if expect is not None and cfg != expect:
        diffs = [k for k, v in expect.to_dict().items() if k != "notes" and cfg.to_dict().get(k) != v]
        raise WeightsError(path, f"config mismatch with the expected model in: {', '.join(diffs)}")
    try:
        arrays = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(path, f"cannot read tensors: {exc}") from None
    tensors = {}
    for k, v in arrays.items():
        if v.dtype.kind != "f":
            raise WeightsError(path, f"dtype {v.dtype} is not floating point", k)
        tensors[k] = v.astype(np.float32)
    weights = ModelWeights(cfg, tensors, source=str(path))
    weights.validate()
    return weights
