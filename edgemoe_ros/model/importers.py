# SPDX-License-Identifier: Apache-2.0
"""Importers: upstream M³ViT / Edge-MoE weights → our canonical ``ModelWeights`` (SPEC §6).

Neither upstream publishes trained weights, but anyone who trains M³ViT or has an Edge-MoE weights
dump must be able to run it here. Both importers map names and layouts onto ``expected_shapes``
and fail with a ``WeightsError`` naming the source file and tensor on anything missing, extra or
mis-shaped: a silently half-loaded model would still produce plausible-looking garbage.

M³ViT (VITA-Group/M3ViT, ``models/vision_transformer_moe.py``, ``custom_moe_layer.py``,
``vit_up_head.py``, ``models.py``), as read from its code:

* The checkpoint is a ``MultiTaskModel`` state_dict: ``backbone.*`` (``VisionTransformerMoE``) and
  ``decoders.<task>.*`` (one ``VisionTransformerUpHead`` per task, ``nn.ModuleDict`` in task
  order), possibly ``module.``-prefixed (DataParallel/DDP) and wrapped in ``{'state_dict': ..}`` or
  ``{'model': ..}``. A bare backbone state_dict (no ``backbone.`` prefix) is accepted too.
* ``patch_embed.proj.weight (D,3,p,p)``/``.bias``; ``cls_token (1,1,D)``; ``pos_embed (1,N,D)``.
* ``blocks.i.{norm1,norm2}``, ``blocks.i.attn.{qkv,proj}`` (timm layout, same as ours).
* Dense blocks (even i): ``blocks.i.mlp.{fc1,fc2}``.
* MoE blocks (odd i, ``FMoETransformerMLP``): experts ``blocks.i.mlp.experts.htoh4.weight
  (E, hidden, D)``/``.bias (E, hidden)`` and ``h4toh.weight (E, D, hidden)``/``.bias (E, D)``
  (fastmoe ``FMoELinear`` is (experts, out, in), like ours); one ``NoisyGate`` per task with
  ``multi_gate``: ``blocks.i.mlp.gate.<t>.w_gate (D, E)``, logits = x @ w_gate. A single shared
  ``mlp.gate.w_gate (D, E)`` is replicated for every task, as M³ViT itself does when it converts
  to multi-gate; a gate whose input has the task one-hot appended ``(D+T, E)`` has a per-task
  logit bias our router cannot express and is rejected.
* Up head: ``norm`` (LayerNorm, per task), ``conv_0..3`` (3x3, 256 ch) with ``syncbn_fc_0..3``
  (BatchNorm) and ``conv_4`` (1x1). M³ViT upsamples *after* ``conv_4`` while ours upsamples before
  the 1x1 conv; bilinear resampling and a 1x1 conv are both linear per pixel and the bilinear
  weights sum to one, so the two orders are equal.
* The backbone has no final LayerNorm (the head's ``norm`` is it), so our shared ``norm`` is
  imported as identity (weight 1, bias 0). LN(identity-LN(x)) differs from LN(x) only by the
  eps term (relative ~1e-6 / feature variance).
* Dropped as training-only: ``w_noise``, ``*_aux`` gate copies, BatchNorm ``num_batches_tracked``,
  ``tam_model*`` (TAM distillation), ``decoders.*.output_level_*`` (deep supervision).
* Pixels: M³ViT normalises ``u8/255`` with ImageNet mean/std; we scale ``u8/256`` (SPEC §3), so
  ``pixel_mean``/``pixel_std`` are imported as ``m * 255/256``, ``s * 255/256`` (exactly
  equivalent). M³ViT's depth head regresses metres with an L1 loss (no log); the imported config
  says so with ``depth_output="linear"``, which ``heads.decode_depth`` honours.

Edge-MoE (sharc-lab/Edge-MoE, ``testbench/e2e.cpp`` and
``weights/scripts/prepare_for_onboard.py``): a directory of raw little-endian float32 files, C
order, no header, named

* ``patch_embed_weight (D,3,p,p)``, ``patch_embed_bias (D)``, ``pos_embed (N,D)`` — no class-token
  file: the kernel writes ``pos_embed[0]`` as token 0, so row 0 is the class token *plus* its
  position embedding; we import it as ``cls_token = 0`` and ``pos_embed`` as stored (same sum).
* per layer ``l{i}_``: ``norm1_weight``, ``norm1_bias``, ``norm2_*``, ``qkv_weight (3D,D)``,
  ``qkv_bias (3D)`` (read as consecutive q, k, v blocks), ``attn_proj_weight (D,D)``,
  ``attn_proj_bias``; dense layers ``fc1_weight (H,D)``, ``fc1_bias``, ``fc2_weight (D,H)``,
  ``fc2_bias``; MoE layers ``htoh4_weight (E,h,D)``, ``htoh4_bias (E,h)``, ``h4toh_weight
  (E,D,h)``, ``h4toh_bias (E,D)`` and ``w_gate_T_task{t} (E,D)`` (the transposed gate of task id
  t = index in ``TASKS``).
* each name with the suffix ``.float32.bin``. ``image.float32.bin`` (the test-bench input) and
  ``l{i}_x_post_*.float32.bin`` (reference activations) are not weights and are skipped.
* No final LayerNorm and no heads (the accelerator stops after the last block): those come from
  ``complete_from`` (another weights file), or, for backbone-only work, identity norm and seeded
  random heads with ``random_heads_seed``.

CLI: ``python -m edgemoe_ros.model.importers {m3vit,edgemoe} SRC OUT.safetensors
[--config-json JSON] [--complete-from FILE] [--random-heads SEED] [--float16]``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .config import TASKS, ConfigError, ModelConfig
from .weights import ModelWeights, WeightsError, expected_shapes, random_init, save_weights

LOG = logging.getLogger(__name__)

#: torchvision ``ToTensor`` divides by 255, we by 256 (ap_ufixed<8,0>): rescale mean/std by this.
TORCH_TO_U8_256 = 255.0 / 256.0
#: M³ViT's image normalisation (``utils/common_config.py``: ``tr.Normalize``).
M3VIT_PIXEL_MEAN = (0.485, 0.456, 0.406)
M3VIT_PIXEL_STD = (0.229, 0.224, 0.225)

#: State-dict keys of M³ViT that only matter during training.
M3VIT_TRAINING_ONLY = re.compile(
    r"(\.w_noise$|_aux$|\.num_batches_tracked$|^tam_model\d+\.|"
    r"^decoders\.[^.]+\.output_level_\d+\.)")
#: State-dict wrappers used by M³ViT's and common training scripts.
CHECKPOINT_WRAPPERS = ("state_dict", "model", "model_state_dict")

EDGEMOE_SUFFIX = ".float32.bin"
#: Files in an Edge-MoE weights directory that are not weights (test input, reference activations).
EDGEMOE_NOT_WEIGHTS = re.compile(r"^(image|l\d+_x_post_\w+)\.float32\.bin$")


# ----------------------------------------------------------------------------------------------
# shared helpers
# ----------------------------------------------------------------------------------------------
def _config_with(base: ModelConfig, inferred: Mapping[str, Any], explicit: Mapping[str, Any],
                 source: str) -> ModelConfig:
    """``base`` with sizes read off the checkpoint; an explicit user value that disagrees fails."""
    for key, value in inferred.items():
        if key in explicit and _norm(explicit[key]) != _norm(value):
            raise WeightsError(source, f"checkpoint has {key}={value!r} but the given config says "
                                       f"{key}={explicit[key]!r}")
    try:
        return base.replace(**inferred)
    except (ConfigError, TypeError) as exc:
        raise WeightsError(source, f"checkpoint describes an invalid model: {exc}") from None


def _norm(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


def _base_config(overrides: Mapping[str, Any] | None, source: str, **defaults: Any) -> ModelConfig:
    merged = dict(defaults)
    merged.update(overrides or {})
    try:
        return ModelConfig.from_dict(merged)
    except (ConfigError, TypeError) as exc:
        raise WeightsError(source, f"invalid --config-json / config overrides: {exc}") from None


def _take(src: Mapping[str, np.ndarray], key: str, shape: tuple[int, ...], source: str,
          canonical: str) -> np.ndarray:
    """One source tensor, shape-checked, as float32. Errors name the upstream and canonical
    name."""
    if key not in src:
        raise WeightsError(source, f"missing tensor (needed for {canonical!r})", key)
    arr = np.asarray(src[key])
    if arr.dtype.kind != "f":
        raise WeightsError(source, f"dtype {arr.dtype} is not floating point", key)
    if tuple(arr.shape) != tuple(shape):
        raise WeightsError(source, f"shape {tuple(arr.shape)} != expected {tuple(shape)} "
                                   f"(for {canonical!r})", key)
    return arr.astype(np.float32)


def _complete(tensors: dict[str, np.ndarray], cfg: ModelConfig, source: str,
              complete_from: ModelWeights | None, random_heads_seed: int | None) -> None:
    """Fill the final norm and heads an upstream format lacks, from a donor model or a seed."""
    expected = expected_shapes(cfg)
    missing = [n for n in expected if n not in tensors]
    if not missing:
        return
    if complete_from is not None:
        for name in missing:
            if name not in complete_from.tensors:
                raise WeightsError(complete_from.source,
                                   "missing tensor needed to complete the import", name)
            arr = complete_from.tensors[name]
            if tuple(arr.shape) != expected[name]:
                raise WeightsError(complete_from.source,
                                   f"shape {tuple(arr.shape)} != expected {expected[name]} for "
                                   "the imported model", name)
            tensors[name] = arr.astype(np.float32)
        return
    if "norm.weight" in missing:
        tensors["norm.weight"] = np.ones(expected["norm.weight"], np.float32)
        tensors["norm.bias"] = np.zeros(expected["norm.bias"], np.float32)
    still = [n for n in expected if n not in tensors]
    if still and random_heads_seed is not None:
        donor = random_init(cfg, seed=random_heads_seed)
        LOG.warning("%s: %d head tensors are not in the source; using seeded "
                    "random heads (seed %d)", source, len(still), random_heads_seed)
        for name in still:
            tensors[name] = donor.tensors[name]
        cfg.notes["random_heads_seed"] = random_heads_seed
        return
    if still:
        raise WeightsError(source, "missing tensor (not in this format; pass complete_from / "
                                   "--complete-from FILE or --random-heads SEED)", still[0])


def _finish(tensors: dict[str, np.ndarray], cfg: ModelConfig, source: str) -> ModelWeights:
    weights = ModelWeights(cfg, tensors, source=source)
    weights.validate()
    return weights


# ----------------------------------------------------------------------------------------------
# M³ViT PyTorch checkpoint
# ----------------------------------------------------------------------------------------------
def load_torch_state_dict(path: str | os.PathLike,
                          allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """Read a PyTorch checkpoint into numpy arrays: unwrap, strip ``module.``, keep tensors only.

    ``allow_pickle`` lets torch unpickle arbitrary objects (only for files you trust); by default
    ``weights_only=True`` refuses code execution from a checkpoint.
    """
    try:
        import torch
    except ImportError:
        raise WeightsError(path, "importing an M3ViT checkpoint needs PyTorch "
                                 "(pip install torch, CPU build is enough)") from None
    p = Path(path)
    if not p.is_file():
        raise WeightsError(p, "file not found")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=not allow_pickle)
    except Exception as exc:
        # torch raises many types (UnpicklingError, RuntimeError, EOFError...)
        hint = ("" if allow_pickle
                else " (if you trust the file and it holds Python objects, use --allow-pickle)")
        raise WeightsError(p,
                           "cannot read PyTorch checkpoint: "
                           f"{type(exc).__name__}: {exc}{hint}") from None
    for _ in range(3):  # {'state_dict': {...}} / {'model': {...}}, possibly nested once more
        if isinstance(obj, Mapping):
            inner = next((obj[k] for k in CHECKPOINT_WRAPPERS if isinstance(obj.get(k), Mapping)),
                         None)
            if inner is not None and not any(torch.is_tensor(v) for v in obj.values()):
                obj = inner
                continue
        break
    if not isinstance(obj, Mapping):
        raise WeightsError(p, f"checkpoint is a {type(obj).__name__}, not a state_dict")
    out: dict[str, np.ndarray] = {}
    for key, value in obj.items():
        name = str(key)
        while name.startswith("module."):
            name = name[len("module."):]
        if not torch.is_tensor(value):
            raise WeightsError(p, f"state_dict entry is a {type(value).__name__}, not a tensor",
                               name)
        if name in out:
            raise WeightsError(p, "duplicate tensor after stripping 'module.' prefixes", name)
        if value.dtype == torch.bfloat16:
            value = value.float()
        out[name] = value.detach().cpu().numpy()
    if not out:
        raise WeightsError(p, "checkpoint holds no tensors")
    return out


def _m3vit_infer(sd: Mapping[str, np.ndarray],
                 source: str) -> tuple[dict[str, Any], list[int], list[str]]:
    """Model sizes, MoE block indices and task order read off an (unprefixed) M³ViT state_dict."""
    for key in ("backbone.pos_embed", "backbone.patch_embed.proj.weight"):
        if key not in sd:
            raise WeightsError(source,
                               "missing tensor (not an M3ViT VisionTransformerMoE checkpoint?)",
                               key)
    pos, pw = sd["backbone.pos_embed"], sd["backbone.patch_embed.proj.weight"]
    if pos.ndim != 3 or pw.ndim != 4:
        raise WeightsError(source,
                           f"unexpected shapes pos_embed {pos.shape}, patch_embed {pw.shape}")
    blocks = sorted({int(m.group(1)) for k in sd
                     if (m := re.match(r"backbone\.blocks\.(\d+)\.", k))})
    if not blocks or blocks != list(range(len(blocks))):
        raise WeightsError(source, f"transformer blocks are not numbered 0..N-1: {blocks}")
    moe = [b for b in blocks if f"backbone.blocks.{b}.mlp.experts.htoh4.weight" in sd]
    dense = [b for b in blocks if f"backbone.blocks.{b}.mlp.fc1.weight" in sd]
    if not moe:
        raise WeightsError(source, "no MoE block found (no blocks.*.mlp.experts.htoh4.weight)")
    every = moe[0] + 1
    if [b for b in blocks if b % every == every - 1] != moe or sorted(moe + dense) != blocks:
        raise WeightsError(source,
                           f"MoE blocks {moe} do not follow the every-{every}th-block pattern")
    inferred: dict[str, Any] = {
        "dim": int(pos.shape[2]), "patch": int(pw.shape[3]), "in_chans": int(pw.shape[1]),
        "depth": len(blocks), "moe_every": every,
        "num_experts": int(sd[f"backbone.blocks.{moe[0]}.mlp.experts.htoh4.weight"].shape[0]),
        "expert_hidden": int(sd[f"backbone.blocks.{moe[0]}.mlp.experts.htoh4.weight"].shape[1]),
    }
    if dense:
        inferred["mlp_hidden"] = int(sd[f"backbone.blocks.{dense[0]}.mlp.fc1.weight"].shape[0])
    tasks: list[str] = []
    for k in sd:
        m = re.match(r"decoders\.([^.]+)\.", k)
        if m and m.group(1) not in tasks:
            tasks.append(m.group(1))
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise WeightsError(source, f"decoder for unknown task(s) {unknown}; supported: {TASKS}")
    if tasks:
        inferred["tasks"] = tuple(t for t in TASKS if t in tasks)  # canonical task-id order
        head = f"decoders.{tasks[0]}."
        convs = sorted(int(m.group(1)) for k in sd
                       if (m := re.match(re.escape(head) + r"conv_(\d+)\.weight$", k)))
        if not convs:
            raise WeightsError(source,
                               f"decoder {tasks[0]!r} is not a "
                               "VisionTransformerUpHead (no conv_*)")
        inferred.update(head="up", up_stages=len(convs) - 1,
                        up_channels=int(sd[head + "conv_0.weight"].shape[0]))
    return inferred, moe, tasks


def _input_size_for(num_patches: int, patch: int, base: ModelConfig) -> dict[str, int]:
    """Input size with ``num_patches`` patches and the base config's aspect ratio, if one exists.

    A state_dict does not say the input size, only the patch count; M³ViT's Cityscapes configs
    keep the 1:2 aspect ratio of SPEC §2, so that is the natural guess. No exact fit: leave it to
    the explicit check (which tells the user to pass img_h/img_w).
    """
    ratio = base.grid_w / base.grid_h
    grid_h = round((num_patches / ratio) ** 0.5)
    grid_w = round(grid_h * ratio)
    if grid_h > 0 and grid_h * grid_w == num_patches:
        return {"img_h": grid_h * patch, "img_w": grid_w * patch}
    return {}


def m3vit_state_dict_to_weights(state_dict: Mapping[str, np.ndarray], source: str,
                                config_overrides: Mapping[str, Any] | None = None,
                                complete_from: ModelWeights | None = None,
                                random_heads_seed: int | None = None) -> ModelWeights:
    """Map an M³ViT ``MultiTaskModel`` (or bare backbone) state_dict onto our canonical model."""
    sd: dict[str, np.ndarray] = {}
    has_backbone_prefix = any(k.startswith("backbone.") for k in state_dict)
    for key, arr in state_dict.items():
        if M3VIT_TRAINING_ONLY.search(key):
            continue
        sd[key if has_backbone_prefix or key.startswith("decoders.") else "backbone." + key] = arr
    inferred, moe_blocks, ckpt_tasks = _m3vit_infer(sd, source)
    defaults: dict[str, Any] = {
        "pixel_mean": tuple(m * TORCH_TO_U8_256 for m in M3VIT_PIXEL_MEAN),
        "pixel_std": tuple(s * TORCH_TO_U8_256 for s in M3VIT_PIXEL_STD),
    }
    if complete_from is not None:
        defaults.update({k: v for k, v in complete_from.config.to_dict().items()
                         if k not in ("pixel_mean", "pixel_std", "notes")})
    else:
        defaults["head"] = "up"
    base = _base_config(config_overrides, source, **defaults)
    explicit = config_overrides or {}
    if not {"img_h", "img_w"} & set(explicit):
        inferred.update(_input_size_for(sd["backbone.pos_embed"].shape[1] - 1, inferred["patch"],
                                        base))
    cfg = _config_with(base, inferred, explicit, source)
    if cfg.num_tokens != sd["backbone.pos_embed"].shape[1]:
        raise WeightsError(source,
                           f"pos_embed has {sd['backbone.pos_embed'].shape[1]} tokens but a "
                           f"{cfg.img_h}x{cfg.img_w} input with patch {cfg.patch} gives "
                           f"{cfg.num_tokens}; set img_h/img_w with --config-json",
                           "backbone.pos_embed")
    cfg = cfg.replace(depth_output="linear",
                      notes={**cfg.notes, "importer": "m3vit",
                             "imported_from": os.path.basename(source)})
    exp = expected_shapes(cfg)
    used: set[str] = set()

    def take(key: str, canonical: str, shape: tuple[int, ...] | None = None) -> np.ndarray:
        used.add(key)
        return _take(sd, key, shape or exp[canonical], source, canonical)

    d, t = cfg.dim, {}
    t["patch_embed.weight"] = take("backbone.patch_embed.proj.weight", "patch_embed.weight")
    t["patch_embed.bias"] = take("backbone.patch_embed.proj.bias", "patch_embed.bias")
    t["cls_token"] = take("backbone.cls_token", "cls_token", (1, 1, d)).reshape(1, d)
    t["pos_embed"] = take("backbone.pos_embed", "pos_embed",
                          (1, cfg.num_tokens, d)).reshape(cfg.num_tokens, d)
    for b in range(cfg.depth):
        src, dst = f"backbone.blocks.{b}.", f"blocks.{b}."
        for leaf in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                     "attn.proj.weight", "attn.proj.bias", "norm2.weight", "norm2.bias"):
            t[dst + leaf] = take(src + leaf, dst + leaf)
        if b not in moe_blocks:
            for leaf in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"):
                t[f"{dst}mlp.{leaf}"] = take(f"{src}mlp.{leaf}", f"{dst}mlp.{leaf}")
            continue
        for ours, theirs in (("fc1", "htoh4"), ("fc2", "h4toh")):
            for leaf in ("weight", "bias"):
                t[f"{dst}moe.{ours}.{leaf}"] = take(f"{src}mlp.experts.{theirs}.{leaf}",
                                                    f"{dst}moe.{ours}.{leaf}")
        t[f"{dst}moe.router.weight"] = _m3vit_router(sd, src, cfg, ckpt_tasks, source, used)
    if "backbone.norm.weight" in sd:
        t["norm.weight"] = take("backbone.norm.weight", "norm.weight")
        t["norm.bias"] = take("backbone.norm.bias", "norm.bias")
    for task in ckpt_tasks:
        src, dst = f"decoders.{task}.", f"heads.{task}."
        for leaf in ("norm.weight", "norm.bias"):
            t[dst + leaf] = take(src + leaf, dst + leaf)
        for s in range(cfg.up_stages + 1):
            for leaf in ("weight", "bias"):
                t[f"{dst}conv_{s}.{leaf}"] = take(f"{src}conv_{s}.{leaf}", f"{dst}conv_{s}.{leaf}")
        for s in range(cfg.up_stages):
            for leaf in ("weight", "bias", "running_mean", "running_var"):
                t[f"{dst}bn_{s}.{leaf}"] = take(f"{src}syncbn_fc_{s}.{leaf}",
                                                f"{dst}bn_{s}.{leaf}")
    if ckpt_tasks and "norm.weight" not in t:
        # M3ViT's own heads normalise (decoders.<task>.norm): our shared final norm is identity,
        # also when a donor supplies other tensors (its norm belongs to its heads, not these).
        t["norm.weight"] = np.ones(d, np.float32)
        t["norm.bias"] = np.zeros(d, np.float32)
    extra = [k for k in sd if k not in used]
    if extra:
        raise WeightsError(source, "unexpected tensor (no place for it in the model; "
                                   f"{len(extra)} unused in all)", extra[0])
    _complete(t, cfg, source, complete_from, random_heads_seed)
    return _finish(t, cfg, source)


def _m3vit_router(sd: Mapping[str, np.ndarray], src: str, cfg: ModelConfig,
                  ckpt_tasks: Sequence[str], source: str, used: set[str]) -> np.ndarray:
    """Stack per-task ``w_gate (D, E)`` into our ``(num_tasks, D, E)`` router."""
    d, e = cfg.dim, cfg.num_experts
    canonical = src[len("backbone."):] + "moe.router.weight"
    per_task = sorted(int(m.group(1)) for k in sd
                      if (m := re.match(re.escape(src) + r"mlp\.gate\.(\d+)\.w_gate$", k)))
    if per_task:
        order = list(ckpt_tasks) or list(cfg.tasks)
        if len(per_task) != len(order) or per_task != list(range(len(order))):
            raise WeightsError(source,
                               f"{len(per_task)} per-task gates but {len(order)} task(s) {order}",
                               f"{src}mlp.gate.0.w_gate")
        gates = {}
        for i, task in enumerate(order):
            key = f"{src}mlp.gate.{i}.w_gate"
            used.add(key)
            gates[task] = _take(sd, key, (d, e), source, canonical)
        return np.stack([gates[task] for task in cfg.tasks])
    key = f"{src}mlp.gate.w_gate"
    if key in sd and sd[key].ndim == 2 and sd[key].shape[0] != d:
        raise WeightsError(source,
                           f"gate input width {sd[key].shape[0]} != dim {d}: a task-conditioned "
                           "gate (task one-hot / task embedding appended) is not supported",
                           key)
    used.add(key)
    shared = _take(sd, key, (d, e), source, canonical)
    LOG.warning("%s: %s is one gate shared by all tasks; replicating it per task", source, key)
    return np.stack([shared] * len(cfg.tasks))


def import_m3vit(path: str | os.PathLike, config_overrides: Mapping[str, Any] | None = None,
                 complete_from: ModelWeights | None = None, random_heads_seed: int | None = None,
                 allow_pickle: bool = False) -> ModelWeights:
    """Import an M³ViT PyTorch checkpoint file (``torch.save`` of its state_dict or a wrapper)."""
    state_dict = load_torch_state_dict(path, allow_pickle=allow_pickle)
    return m3vit_state_dict_to_weights(state_dict, str(path), config_overrides, complete_from,
                                       random_heads_seed)


# ----------------------------------------------------------------------------------------------
# Edge-MoE weights directory
# ----------------------------------------------------------------------------------------------
def edgemoe_file_map(cfg: ModelConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Edge-MoE file stem → (canonical tensor, stored shape). Routers map to
    ``router.weight[t]``."""
    d, e = cfg.dim, cfg.num_experts
    exp = expected_shapes(cfg)
    files: dict[str, tuple[str, tuple[int, ...]]] = {
        "patch_embed_weight": ("patch_embed.weight", exp["patch_embed.weight"]),
        "patch_embed_bias": ("patch_embed.bias", exp["patch_embed.bias"]),
        "pos_embed": ("pos_embed", exp["pos_embed"]),
    }
    for b in range(cfg.depth):
        dst = f"blocks.{b}."
        pairs = {"norm1_weight": "norm1.weight", "norm1_bias": "norm1.bias",
                 "norm2_weight": "norm2.weight",
                 "norm2_bias": "norm2.bias", "qkv_weight": "attn.qkv.weight",
                 "qkv_bias": "attn.qkv.bias",
                 "attn_proj_weight": "attn.proj.weight", "attn_proj_bias": "attn.proj.bias"}
        if cfg.is_moe(b):
            pairs.update({"htoh4_weight": "moe.fc1.weight", "htoh4_bias": "moe.fc1.bias",
                          "h4toh_weight": "moe.fc2.weight", "h4toh_bias": "moe.fc2.bias"})
            for task in cfg.tasks:
                files[f"l{b}_w_gate_T_task{TASKS.index(task)}"] = (
                    f"{dst}moe.router.weight[{task}]", (e, d))
        else:
            pairs.update({"fc1_weight": "mlp.fc1.weight", "fc1_bias": "mlp.fc1.bias",
                          "fc2_weight": "mlp.fc2.weight", "fc2_bias": "mlp.fc2.bias"})
        for stem, leaf in pairs.items():
            files[f"l{b}_{stem}"] = (dst + leaf, exp[dst + leaf])
    return files


def _read_bin(path: Path, shape: tuple[int, ...], canonical: str) -> np.ndarray:
    want = int(np.prod(shape)) * 4
    have = path.stat().st_size
    if have != want:
        raise WeightsError(path,
                           f"{have} bytes, expected {want} (float32 {shape}); truncated file or "
                           "a model config that does not match", canonical)
    arr = np.fromfile(path, dtype="<f4").reshape(shape)
    if not np.all(np.isfinite(arr)):
        raise WeightsError(path, "contains NaN or Inf", canonical)
    return arr.astype(np.float32)


def import_edgemoe(directory: str | os.PathLike, config_overrides: Mapping[str, Any] | None = None,
                   complete_from: ModelWeights | None = None,
                   random_heads_seed: int | None = None) -> ModelWeights:
    """Import an Edge-MoE weights directory (float32 ``.bin`` files, layout in the module
    docstring)."""
    root = Path(directory)
    if not root.is_dir():
        raise WeightsError(root, "not a directory (expected an Edge-MoE weights/ directory)")
    source = str(root)
    defaults = {} if complete_from is None else {
        k: v for k, v in complete_from.config.to_dict().items() if k != "notes"}
    cfg = _base_config(config_overrides, source, **defaults)
    cfg = cfg.replace(notes={**cfg.notes, "importer": "edgemoe", "imported_from": root.name})
    files = edgemoe_file_map(cfg)
    present = {p.name[:-len(EDGEMOE_SUFFIX)]: p for p in root.iterdir()
               if p.is_file() and p.name.endswith(EDGEMOE_SUFFIX)
               and not EDGEMOE_NOT_WEIGHTS.match(p.name)}
    extra = sorted(set(present) - set(files))
    if extra:
        raise WeightsError(present[extra[0]],
                           "unexpected weights file (not part of the configured model: "
                           "check depth / tasks in --config-json)", extra[0])
    t: dict[str, np.ndarray] = {}
    routers: dict[str, dict[str, np.ndarray]] = {}
    for stem, (canonical, shape) in files.items():
        if stem not in present:
            raise WeightsError(root / (stem + EDGEMOE_SUFFIX), "missing weights file", canonical)
        arr = _read_bin(present[stem], shape, canonical)
        m = re.match(r"(.+)\[(\w+)\]$", canonical)
        if m:
            routers.setdefault(m.group(1), {})[m.group(2)] = arr.T
        else:
            t[canonical] = arr
    for name, per_task in routers.items():
        t[name] = np.ascontiguousarray(np.stack([per_task[task] for task in cfg.tasks]))
    t["cls_token"] = np.zeros((1, cfg.dim), np.float32)  # folded into pos_embed[0] by Edge-MoE
    _complete(t, cfg, source, complete_from, random_heads_seed)
    return _finish(t, cfg, source)


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m edgemoe_ros.model.importers",
                                 description="Convert M3ViT / Edge-MoE weights to an edgemoe "
                                             "safetensors file.")
    ap.add_argument("format", choices=("m3vit", "edgemoe"), help="source format")
    ap.add_argument("src", help="M3ViT checkpoint file, or Edge-MoE weights directory")
    ap.add_argument("out", help="output .safetensors file")
    ap.add_argument("--config-json", default=None,
                    help="model config overrides as a JSON object or @file.json (e.g. "
                         "'{\"img_h\": 128}')")
    ap.add_argument("--complete-from", default=None, metavar="FILE",
                    help="edgemoe weights file supplying tensors the source "
                         "lacks (final norm, heads)")
    ap.add_argument("--random-heads", type=int, default=None, metavar="SEED",
                    help="use seeded random heads when the source has none (backbone-only use)")
    ap.add_argument("--allow-pickle", action="store_true",
                    help="let torch unpickle Python objects in the "
                         "checkpoint (trusted files only)")
    ap.add_argument("--float16", action="store_true", help="store tensors as float16")
    return ap.parse_args(argv)


def _load_overrides(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError("--config-json must be a JSON object")
    return data


def main(argv: Sequence[str] | None = None) -> int:
    """Convert and save; errors print one line naming the file and tensor and exit with status
    2."""
    from .weights import load_weights

    args = _parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    importer: Callable[..., ModelWeights] = (import_m3vit if args.format == "m3vit"
                                             else import_edgemoe)
    try:
        overrides = _load_overrides(args.config_json)
        donor = load_weights(args.complete_from) if args.complete_from else None
        kwargs: dict[str, Any] = {"config_overrides": overrides, "complete_from": donor,
                                  "random_heads_seed": args.random_heads}
        if args.format == "m3vit":
            kwargs["allow_pickle"] = args.allow_pickle
        weights = importer(args.src, **kwargs)
        save_weights(weights, args.out, dtype="float16" if args.float16 else "float32")
    except (WeightsError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n = sum(v.size for v in weights.tensors.values())
    print(f"wrote {args.out}: {len(weights.tensors)} tensors, {n / 1e6:.2f} M parameters, "
          f"head={weights.config.head}, tasks={','.join(weights.config.tasks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
