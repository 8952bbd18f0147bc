# SPDX-License-Identifier: Apache-2.0
"""Weights: canonical tensor names and shapes, seeded init, and the safetensors file format.

One file per model (SPEC §6): every tensor of the model plus the ``ModelConfig`` as JSON in the
safetensors metadata, so a file alone is enough to build the model. Linear weights are stored
PyTorch-style as (out_features, in_features); routers as (num_tasks, dim, num_experts) because the
router is ``logits = x @ W_task`` (M3ViT's ``w_gate``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import LIGHT_HEADS, PYRAMID_COORDS, ConfigError, ModelConfig
from .safetensors_reader import (
    SafetensorsFormatError,
    SafetensorsHeader,
    read_header,
    read_tensors,
)

#: Metadata keys inside the safetensors header.
META_CONFIG = "edgemoe.config"
META_FORMAT = "edgemoe.format"
FORMAT_VERSION = "1"
#: Storage dtypes: float16 halves the file; compute is always float32.
SAVE_DTYPES = ("float32", "float16")
#: safetensors dtype codes accepted on load (converted to float32).
LOAD_DTYPES = ("F16", "F32", "F64")
#: The model shipped with the package (trained on the procedural scenes), under
#: ``edgemoe_ros/data``.
SHIPPED_WEIGHTS_NAME = "edgemoe_synth.safetensors"

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
    if cfg.head in LIGHT_HEADS:
        # LayerNorm is the backbone's final norm; per token: fc1 -> GELU -> fc2 to a p*p*c patch.
        shapes = {
            p + "fc1.weight": (cfg.light_hidden, d),
            p + "fc1.bias": (cfg.light_hidden,),
            p + "fc2.weight": (cfg.patch * cfg.patch * c, cfg.light_hidden),
            p + "fc2.bias": (cfg.patch * cfg.patch * c,),
        }
        if cfg.head == "guided":
            # 3x3 conv on the image, then per pixel: [light output, guide] -> fuse -> GELU ->
            # refine.
            g, h = cfg.guide_channels, cfg.refine_hidden
            shapes.update({
                p + "guide.weight": (g, cfg.in_chans, 3, 3), p + "guide.bias": (g,),
                p + "fuse.weight": (h, c + g), p + "fuse.bias": (h,),
                p + "refine.weight": (c, h), p + "refine.bias": (c,),
            })
        return shapes
    if cfg.head == "pyramid":
        return _pyramid_shapes(cfg, p, c)
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


def _pyramid_shapes(cfg: ModelConfig, p: str, c: int) -> dict[str, Shape]:
    """The pyramid head (``model/pyramid_head.py``): 3x3 convs as PyTorch (out, in, 3, 3),
    depthwise (ch, 1, 3, 3), 1x1 convs as linears (out, in) over ``[coarser map, pixel features,
    coords]``."""
    e1, e2 = cfg.pyramid_enc
    d4, d2, d1 = cfg.pyramid_dec
    t, g, i, k = cfg.pyramid_token, cfg.pyramid_guide, cfg.in_chans, PYRAMID_COORDS
    layers: dict[str, tuple[int, ...]] = {
        "tok": (t, cfg.dim), "enc2": (e1, i, 3, 3), "enc4": (e2, e1, 3, 3), "enc1": (g, i, 3, 3),
        "fuse4": (d4, t + e2 + k), "fuse2": (d2, d4 + e1 + k), "fuse1": (d1, d2 + g + k),
        "out": (c, d1),
    }
    for scale, width, blocks in (("4", d4, cfg.pyramid_mix[0]), ("2", d2, cfg.pyramid_mix[1])):
        for b in range(blocks):
            layers[f"mix{scale}.{b}.dw"] = (width, 1, 3, 3)
            layers[f"mix{scale}.{b}.pw"] = (width, width)
    shapes: dict[str, Shape] = {}
    for name, shape in layers.items():
        shapes[f"{p}{name}.weight"] = shape
        shapes[f"{p}{name}.bias"] = (shape[0],)
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
    return sum(int(np.prod(s))
               for k, s in expected_shapes(cfg).items() if not k.startswith("heads."))


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
        """Check names, shapes and values against the config; raise ``WeightsError`` naming the
        tensor."""
        expected = expected_shapes(self.config)
        for name in expected:
            if name not in self.tensors:
                raise WeightsError(self.source, "missing tensor", name)
        for name, arr in self.tensors.items():
            if name not in expected:
                raise WeightsError(self.source, "unexpected tensor (not in the model config)",
                                   name)
            if tuple(arr.shape) != expected[name]:
                raise WeightsError(self.source,
                                   f"shape {tuple(arr.shape)} != expected {expected[name]}", name)
            if arr.dtype.kind != "f":
                raise WeightsError(self.source, f"dtype {arr.dtype} is not floating point", name)
            if not np.all(np.isfinite(arr)):
                raise WeightsError(self.source, "contains NaN or Inf", name)

    def astype(self, dtype: np.dtype | type) -> ModelWeights:
        return ModelWeights(self.config, {k: v.astype(dtype) for k, v in self.tensors.items()},
                            self.source)


def random_init(cfg: ModelConfig, seed: int = 0) -> ModelWeights:
    """Seeded random weights with sensible scales (ViT-style truncated-normal-ish init).

    Deterministic for a given (config, seed): tests and the CLI use it to build models whose
    outputs are reproducible without shipping a trained file.
    """
    rng = np.random.default_rng(seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in expected_shapes(cfg).items():
        leaf = name.rsplit(".", 1)[-1]
        if leaf in ("running_var",) or (leaf == "weight" and len(shape) == 1):
            arr = 1.0 + 0.05 * rng.standard_normal(shape)  # LayerNorm / BN scale
        elif leaf in ("bias", "running_mean"):
            arr = 0.02 * rng.standard_normal(shape)
        else:
            if name.endswith("router.weight"):
                fan_in = shape[1]  # (tasks, dim, experts): each router is dim -> experts
            elif name.endswith(("moe.fc1.weight", "moe.fc2.weight")):
                fan_in = shape[-1]  # (experts, out, in)
            else:
                fan_in = int(np.prod(shape[1:]))
            std = 0.02 if name in ("cls_token", "pos_embed") else 1.0 / np.sqrt(max(fan_in, 1))
            arr = std * np.clip(rng.standard_normal(shape), -2.0, 2.0)
        tensors[name] = arr.astype(np.float32)
    return ModelWeights(cfg, tensors, source=f"random_init(seed={seed})")


def save_weights(weights: ModelWeights, path: str | os.PathLike, dtype: str = "float32") -> None:
    """Write a safetensors file with the config in its metadata. ``dtype``: float32 or float16.

    The model is validated first, so a file written here always loads. The file is written
    under a temporary name and renamed, so a crash never leaves a half-written file under the
    real name (a node reloading weights could otherwise pick it up).
    """
    from safetensors.numpy import save_file

    if dtype not in SAVE_DTYPES:
        raise ValueError(f"dtype must be one of {SAVE_DTYPES}, not {dtype!r}")
    weights.validate()
    with np.errstate(over="ignore"):  # overflow is reported below, naming the tensor
        arrays = {k: np.ascontiguousarray(v.astype(dtype)) for k, v in weights.tensors.items()}
    if dtype == "float16":
        for name, arr in arrays.items():
            if not np.all(np.isfinite(arr)):
                raise WeightsError(path, "value out of float16 range (would be stored as Inf)",
                                   name)
    meta = {META_CONFIG: weights.config.to_json(), META_FORMAT: FORMAT_VERSION}
    tmp = Path(str(path) + ".tmp")
    try:
        save_file(arrays, str(tmp), metadata=meta)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WeightsError(path, f"cannot write weights file: {exc.strerror or exc}") from None


def resolve_weights_path(path: str | os.PathLike | None) -> Path:
    """``path``, or the shipped model when ``path`` is None; a clear error if neither exists."""
    if path is not None:
        return Path(path)
    shipped = shipped_weights_path()
    if shipped is None:
        raise WeightsError(SHIPPED_WEIGHTS_NAME,
                           "no weights file given and the shipped model is not "
                           "installed; pass a .safetensors file (--weights FILE / weights_path)")
    return shipped


def shipped_weights_path() -> Path | None:
    """The packaged default model file, or ``None`` if this install does not include it.

    CLIs and the node fall back to it when no weights file is given, so "it just runs" after
    install; callers turn ``None`` into an error that tells the user to pass a file.
    """
    path = Path(__file__).resolve().parent.parent / "data" / SHIPPED_WEIGHTS_NAME
    return path if path.is_file() else None


def _read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """The validated safetensors header (numpy reader, no ``safetensors`` package needed)."""
    p = Path(path)
    if not p.exists():
        raise WeightsError(p, "file not found")
    if not p.is_file():
        raise WeightsError(p, "not a regular file")
    try:
        return read_header(p)
    except SafetensorsFormatError as exc:
        raise WeightsError(p, exc.message, exc.tensor) from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The safetensors header metadata, with clear errors for files that are not safetensors."""
    return dict(_read_header(path).metadata)


def read_config(path: str | os.PathLike) -> ModelConfig:
    """The ``ModelConfig`` stored in a weights file, without reading any tensor data."""
    meta = read_metadata(path)
    fmt = meta.get(META_FORMAT)
    if fmt is not None and fmt != FORMAT_VERSION:
        raise WeightsError(path,
                           f"weights format version {fmt!r}; this build reads version "
                           f"{FORMAT_VERSION!r}")
    if META_CONFIG not in meta:
        raise WeightsError(path,
                           f"no model config in metadata (key {META_CONFIG!r}); not "
                           "an edgemoe weights file")
    try:
        return ModelConfig.from_json(meta[META_CONFIG])
    except (ConfigError, TypeError) as exc:
        raise WeightsError(path, f"bad model config in metadata: {exc}") from None


def load_weights(path: str | os.PathLike, expect: ModelConfig | None = None) -> ModelWeights:
    """Load and validate a weights file. ``expect``: fail if the file's config differs from it.

    Names, dtypes and shapes are checked against the config from the header *before* any
    tensor data is read, so a wrong file fails fast and the error names the offending tensor.
    """
    header = _read_header(path)
    cfg = read_config(path)
    if expect is not None and cfg != expect:
        mine = cfg.to_dict()
        diffs = [f"{k}={mine.get(k)!r} (expected {v!r})"
                 for k, v in expect.to_dict().items() if k != "notes" and mine.get(k) != v]
        raise WeightsError(path, f"config mismatch with the expected model: {'; '.join(diffs)}")
    expected = expected_shapes(cfg)
    entries = header.entries
    for name in expected:
        if name not in entries:
            raise WeightsError(path, "missing tensor", name)
    for name, entry in entries.items():
        if name not in expected:
            raise WeightsError(path, "unexpected tensor (not in the model config)", name)
        if entry.dtype_code not in LOAD_DTYPES:
            raise WeightsError(path, f"dtype {entry.dtype_code} is not floating point "
                               f"({'/'.join(LOAD_DTYPES)})", name)
        if entry.shape != expected[name]:
            raise WeightsError(path, f"shape {entry.shape} != expected {expected[name]}", name)
    try:
        arrays = read_tensors(path, header)
    except SafetensorsFormatError as exc:
        raise WeightsError(path, exc.message, exc.tensor) from None
    except OSError as exc:
        raise WeightsError(path, f"cannot read tensors: {exc.strerror or exc}") from None
    tensors = {k: v.astype(np.float32, copy=False) for k, v in arrays.items()}
    weights = ModelWeights(cfg, tensors, source=str(path))
    weights.validate()
    return weights
