# SPDX-License-Identifier: Apache-2.0
"""Train the SPEC §2 model on procedural driving scenes, on CPU, within a wall-clock budget.

    python -m edgemoe_ros.training.train --out runs/synth --minutes 70 [--resume] [--batch 32]
    python -m edgemoe_ros.training.train --out runs/guided --init MODEL.safetensors
        --head guided ...

Both tasks are trained every step: the shared prefix (patch embedding, block 0, block 1 attention)
runs once, then each task's routers pick its experts, and the losses are summed: cross-entropy for
segmentation (class-weighted, ignore 255; optionally plus a Lovász-softmax IoU term, ``--lovasz``,
and with pixels near label edges weighted up, ``--edge-weight``), L1 on log-depth (scale-aware: a
10 % error costs the same near and far), and the M3ViT load-balancing loss. AdamW with a short
warmup and a cosine decay over the *time* budget, so a run of any length ends annealed. The run is
resumable from ``OUT/last.pt`` (model, optimiser, step, elapsed time, RNG state), and the shipped
weights file is re-exported periodically so a usable model exists even if the run stops. ``--init``
starts a new run from an exported model instead of random weights: every tensor whose name and
shape match is copied, the rest (e.g. the refinement of a ``guided`` head added to a light-head
model) keeps its initialisation and learns ``--new-lr-mult`` times faster.

After every optimiser step the backbone weights are clamped to the range of the fixed-point
format the accelerator stores them in (``accel/interface.py``), so the exported model never
saturates on the fixed-point backends.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import math
import multiprocessing as mp
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..model.config import HEAD_TYPES, IGNORE_INDEX, ModelConfig, tiny_config
from ..model.weights import load_weights, save_weights
from . import data
from .checkpoint import CheckpointError, load_checkpoint_file, save_checkpoint_file
from .metrics import SegDepthMeter
from .torch_model import EdgeMoEViT, build_torch_model, images_to_tensor, to_model_weights

log = logging.getLogger("edgemoe_ros.training")

#: Where the shipped model lives (package data).
SHIPPED_WEIGHTS = Path(__file__).resolve().parent.parent / "data" / "edgemoe_synth.safetensors"
CHECKPOINT_NAME = "last.pt"


@dataclass
class Hyper:
    """Optimisation settings (defaults are the shipped run's)."""

    batch: int = 8
    lr: float = 6e-4
    weight_decay: float = 0.05
    warmup_steps: int = 40
    min_lr_frac: float = 0.02
    #: M3ViT's load-balancing loss coefficient.
    aux_coef: float = 1e-2
    depth_weight: float = 1.0
    #: Sky is trained towards max_depth with this weight (keeps the demo's depth map sane; not
    #: evaluated).
    sky_depth_weight: float = 0.1
    grad_clip: float = 1.0
    #: Exponent of the inverse-frequency class weights (0 = unweighted, 1 = fully balanced).
    class_weight_power: float = 0.5
    #: Weight of the Lovász-softmax term added to the segmentation cross-entropy (0 = off).
    lovasz_weight: float = 0.0
    #: Extra cross-entropy weight of pixels within ``edge_radius`` px of a label edge (0 = off).
    edge_weight: float = 0.0
    edge_radius: int = 2


def class_weights(freq: np.ndarray, power: float) -> torch.Tensor:
    """Soft inverse-frequency weights: rare classes (people, poles) count more, bounded to [0.5,
    5]."""
    f = np.maximum(freq, 1e-6)
    w = (np.median(f) / f) ** power
    return torch.tensor(np.clip(w, 0.5, 5.0), dtype=torch.float32)


def lovasz_softmax(logits: torch.Tensor, labels: torch.Tensor,
                   ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Lovász-softmax loss (Berman et al., CVPR 2018): a convex surrogate of 1 - IoU, averaged over
    the classes present in the batch.

    Cross-entropy rewards every pixel alike, so thin classes (people, poles) that are a few percent
    of the pixels move mIoU far more than they move the loss; this term optimises the per-class IoU
    directly. For hard (one-hot) probabilities it equals 1 - mean IoU over those classes exactly,
    which is how the tests pin it down. ``logits`` (B, C, H, W), ``labels`` (B, H, W) int64.
    """
    c = logits.shape[1]
    probs = logits.softmax(1).permute(0, 2, 3, 1).reshape(-1, c)
    lab = labels.reshape(-1)
    valid = lab != ignore_index
    probs, lab = probs[valid], lab[valid]
    losses = []
    for k in torch.unique(lab).tolist():
        fg = (lab == k).to(probs.dtype)
        errors = (fg - probs[:, k]).abs()
        errors, order = errors.sort(descending=True)
        fg = fg[order]
        # Gradient of the Lovász extension of the Jaccard loss at the sorted errors.
        gts = fg.sum()
        jaccard = 1.0 - (gts - fg.cumsum(0)) / (gts + (1.0 - fg).cumsum(0))
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
        losses.append(torch.dot(errors, jaccard))
    return torch.stack(losses).mean() if losses else logits.sum() * 0.0


def edge_band(labels: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, H, W) bool: pixels within ``radius`` (Chebyshev distance) of a pixel of another label,
    the ignore label included; the same band as ``metrics.boundary_band`` scores separately."""
    if radius <= 0:
        return torch.zeros(labels.shape, dtype=torch.bool)
    lab = labels[:, None].float()
    k = 2 * radius + 1
    hi = F.max_pool2d(lab, k, stride=1, padding=radius)  # pads with -inf: borders are no edge
    lo = -F.max_pool2d(-lab, k, stride=1, padding=radius)
    return (hi != lo)[:, 0]


def weighted_cross_entropy(logits: torch.Tensor, labels: torch.Tensor,
                           class_w: torch.Tensor | None, pixel_w: torch.Tensor | None,
                           ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Cross-entropy with class weights and optional per-pixel weights, normalised like PyTorch's
    weighted mean (by the summed weights of the pixels that count), so ``pixel_w`` of all ones is
    exactly ``F.cross_entropy(..., weight=class_w)``.

    71 % of the shipped model's wrong pixels lie within 2 px of a label edge (eval_model
    --breakdown): weighting those pixels up asks the guided head for sharper edges.
    """
    if pixel_w is None:
        return F.cross_entropy(logits, labels, weight=class_w, ignore_index=ignore_index)
    ce = F.cross_entropy(logits, labels, weight=class_w, ignore_index=ignore_index,
                         reduction="none")
    valid = labels != ignore_index
    w = pixel_w * valid
    if class_w is not None:
        w = w * class_w[torch.where(valid, labels, torch.zeros_like(labels))]
    return (ce * pixel_w).sum() / w.sum().clamp_min(1e-12)


def augment(x: torch.Tensor, labels: torch.Tensor, depth: torch.Tensor, gen: torch.Generator
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Horizontal flip, photometric jitter and occasional blur (demo frames are downscaled
    renders)."""
    b = x.shape[0]
    flip = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    labels = torch.where(flip[:, None, None], labels.flip(-1), labels)
    depth = torch.where(flip[:, None, None], depth.flip(-1), depth)
    u = torch.rand(b, 5, generator=gen)
    bright = 0.75 + 0.5 * u[:, 0]
    contrast = 0.75 + 0.5 * u[:, 1]
    sat = 0.7 + 0.6 * u[:, 2]
    gray = x.mean(1, keepdim=True)
    x = gray + (x - gray) * sat[:, None, None, None]
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (mean + (x - mean) * contrast[:, None, None, None]) * bright[:, None, None, None]
    x = x * (0.92 + 0.16 * torch.rand(b, 3, 1, 1, generator=gen))
    blur = (u[:, 3] < 0.3)[:, None, None, None]
    x = torch.where(blur, 0.5 * x + 0.5 * F.avg_pool2d(x, 3, 1, 1, count_include_pad=False), x)
    return x.clamp(0.0, 255.0 / 256.0), labels, depth


def depth_targets(depth: torch.Tensor, labels: torch.Tensor, cfg: ModelConfig, sky_weight: float
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-depth targets and per-pixel weights: 1 on surfaces, ``sky_weight`` on sky (target
    max_depth), 0 where the depth is unknown (NaN, +inf off the sky). Sky is the class named "sky"
    of the model's classes (both schemes have one); a model without it trains no sky prior."""
    sky_class = cfg.class_names.index("sky") if "sky" in cfg.class_names else -1
    sky = labels == sky_class
    finite = torch.isfinite(depth)
    d = torch.where(finite & ~sky, depth, torch.full_like(depth, cfg.max_depth))
    target = torch.log(d.clamp(cfg.min_depth, cfg.max_depth))
    weight = torch.where(sky, torch.full_like(depth, sky_weight), finite.float())
    return target, weight


def task_losses(outs: dict[str, torch.Tensor], labels: torch.Tensor, depth: torch.Tensor,
                cfg: ModelConfig, hyper: Hyper,
                class_w: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The task losses of head outputs (B, C, H, W) against labels and depth (B, H, W); ``total``
    is their weighted sum. Shared by the full trainer and the heads-only one (train_heads.py)."""
    result: dict[str, torch.Tensor] = {}
    if "semseg" in outs and not bool((labels != IGNORE_INDEX).any()):
        # Frames without labels (KITTI depth, a depth-only manifest): no segmentation signal, and
        # cross-entropy over zero pixels would be NaN and poison the step.
        result["seg"] = outs["semseg"].sum() * 0.0
    elif "semseg" in outs:
        pixel_w = None
        if hyper.edge_weight > 0:
            pixel_w = 1.0 + hyper.edge_weight * edge_band(labels, hyper.edge_radius).float()
        result["seg"] = weighted_cross_entropy(outs["semseg"], labels, class_w, pixel_w)
        if hyper.lovasz_weight > 0:
            result["lovasz"] = lovasz_softmax(outs["semseg"], labels)
            result["seg"] = result["seg"] + hyper.lovasz_weight * result["lovasz"]
    if "depth" in outs:
        target, w = depth_targets(depth, labels, cfg, hyper.sky_depth_weight)
        err = (outs["depth"][:, 0] - target).abs() * w
        result["depth"] = err.sum() / w.sum().clamp_min(1.0)
    result["total"] = result.get("seg", 0.0) + hyper.depth_weight * result.get("depth", 0.0)
    return result


def make_optimizer(model: EdgeMoEViT, hyper: Hyper, fresh: set[str],
                   new_lr_mult: float) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not embeddings, norms, biases); parameters in
    ``fresh`` (not given by an init file) learn ``new_lr_mult`` x faster (group key
    ``lr_mult``)."""
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for n, p in model.named_parameters():
        decays = p.dim() > 1 and n not in ("cls_token", "pos_embed")
        groups.setdefault((decays, n in fresh), []).append(p)
    # Decaying group first: the order of checkpoints written before fresh groups existed.
    order = sorted(groups, key=lambda k: (not k[0], k[1]))
    return torch.optim.AdamW(
        [{"params": groups[k], "weight_decay": hyper.weight_decay if k[0] else 0.0,
          "lr_mult": new_lr_mult if k[1] else 1.0} for k in order], lr=hyper.lr)


def scheduled_lr(hyper: Hyper, step: int, progress: float) -> float:
    """Linear warmup over ``warmup_steps``, then a cosine from ``lr`` to ``min_lr_frac * lr`` as
    ``progress`` (fraction of the run: time or steps) goes from 0 to 1."""
    warm = min(1.0, (step + 1) / max(hyper.warmup_steps, 1))
    cos = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
    return hyper.lr * warm * (hyper.min_lr_frac + (1.0 - hyper.min_lr_frac) * cos)


def apply_update(model: EdgeMoEViT, opt: torch.optim.Optimizer, hyper: Hyper,
                 ranges: list[tuple[torch.nn.Parameter, float, float]]) -> None:
    """Clip the gradient norm, step, and clamp the backbone to the accelerator's fixed-point
    ranges."""
    torch.nn.utils.clip_grad_norm_(model.parameters(), hyper.grad_clip)
    opt.step()
    with torch.no_grad():
        for p, lo, hi in ranges:
            p.clamp_(lo, hi)


class Trainer:
    """Model, optimiser and the loss of one step; no I/O (so tests can drive it directly)."""

    def __init__(self, cfg: ModelConfig, hyper: Hyper, weights: torch.Tensor | None = None,
                 seed: int = 0, init: dict[str, np.ndarray] | None = None,
                 new_lr_mult: float = 1.0, fresh: set[str] | None = None):
        """``init``: tensors to start from; the parameters it lacks (or, when resuming, ``fresh``)
        learn ``new_lr_mult`` x faster."""
        torch.manual_seed(seed)
        self.cfg, self.hyper = cfg, hyper
        self.model: EdgeMoEViT = build_torch_model(cfg)
        self.fresh = copy_matching(self.model, init) if init is not None else set(fresh or ())
        self.new_lr_mult = new_lr_mult
        self.opt = make_optimizer(self.model, hyper, self.fresh, new_lr_mult)
        self.class_w = weights if weights is not None else torch.ones(cfg.num_classes)
        self.step_count = 0
        self.gen = torch.Generator().manual_seed(seed)
        self._ranges = fixed_point_ranges(self.model)

    def lr_at(self, progress: float) -> float:
        return scheduled_lr(self.hyper, self.step_count, progress)

    def losses(self, rgb: np.ndarray, labels: np.ndarray, depth: np.ndarray, train: bool = True
               ) -> dict[str, torch.Tensor]:
        x = images_to_tensor(rgb)
        lab = torch.from_numpy(labels.astype(np.int64))
        dep = torch.from_numpy(depth.astype(np.float32))
        if train:
            x, lab, dep = augment(x, lab, dep, self.gen)
        outs, aux = self.model.forward_tasks(x, self.cfg.tasks)
        result = {"aux": aux, **task_losses(outs, lab, dep, self.cfg, self.hyper, self.class_w)}
        result["total"] = result["total"] + self.hyper.aux_coef * aux
        return result

    def step(self, rgb: np.ndarray, labels: np.ndarray, depth: np.ndarray,
             progress: float) -> dict[str, float]:
        self.model.train()
        lr = self.lr_at(progress)
        for g in self.opt.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        parts = self.losses(rgb, labels, depth)
        self.opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        apply_update(self.model, self.opt, self.hyper, self._ranges)
        self.step_count += 1
        return {k: float(v.detach()) if torch.is_tensor(v) else float(v)
                for k, v in parts.items()} | {"lr": lr}

    @torch.no_grad()
    def predict(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class ids (B,H,W) u8, depth metres (B,H,W) f32) with the engine's head
        post-processing."""
        self.model.eval()
        outs, _ = self.model.forward_tasks(images_to_tensor(rgb), self.cfg.tasks)
        seg = outs["semseg"].argmax(1).numpy().astype(np.uint8)
        dep = torch.exp(outs["depth"][:, 0]).clamp(self.cfg.min_depth, self.cfg.max_depth).numpy()
        return seg, dep


def copy_matching(model: EdgeMoEViT, tensors: dict[str, np.ndarray]) -> set[str]:
    """Copy every tensor whose name and shape match a parameter; returns the names left as
    initialised.

    A tensor of the right name but another shape is an error (a different model, not a new head).
    """
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in tensors.items():
            if name not in params:
                continue
            if tuple(params[name].shape) != tuple(value.shape):
                raise ValueError(f"--init tensor {name!r} has shape {tuple(value.shape)}, "
                                 f"the model wants {tuple(params[name].shape)}")
            params[name].copy_(torch.from_numpy(np.asarray(value, dtype=np.float32)))
    fresh = set(params) - set(tensors)
    log.info("initialised from file: %d tensors; new (learning x faster): %s",
             len(params) - len(fresh), sorted(fresh) or "none")
    return fresh


def fixed_point_ranges(model: EdgeMoEViT) -> list[tuple[torch.nn.Parameter, float, float]]:
    """(parameter, min, max) of every backbone tensor the accelerator stores in a fixed-point
    format."""
    try:
        from ..accel.interface import FORMATS, weight_layout
    except ImportError:  # the accelerator interface is optional for training
        log.warning("accel.interface not importable: training without fixed-point range "
                    "constraints")
        return []
    params = dict(model.named_parameters())
    ranges: dict[str, tuple[float, float]] = {}
    for entry in weight_layout(model.cfg).entries:
        if entry.tensor in params:
            f = FORMATS[entry.fmt]
            ranges[entry.tensor] = (f.min_raw * f.lsb, f.max_raw * f.lsb)
    return [(params[n], lo, hi) for n, (lo, hi) in ranges.items()]


def validate(trainer: Trainer, val: dict[str, np.ndarray], batch: int = 8) -> dict[str, float]:
    meter = SegDepthMeter(trainer.cfg.num_classes, trainer.cfg.max_depth)
    for i in range(0, len(val["rgb"]), batch):
        seg, dep = trainer.predict(val["rgb"][i:i + batch])
        meter.add_semseg(seg, val["labels"][i:i + batch])
        meter.add_depth(dep, val["depth"][i:i + batch], val["labels"][i:i + batch])
    return meter.summary()


def save_checkpoint(path: Path, trainer: Trainer, state: dict) -> None:
    save_checkpoint_file(path, {
        "model": trainer.model.state_dict(), "opt": trainer.opt.state_dict(),
        "step": trainer.step_count, "class_w": trainer.class_w,
        "torch_gen": trainer.gen.get_state(), "fresh": sorted(trainer.fresh),
        "new_lr_mult": trainer.new_lr_mult, **state})


def export(trainer: Trainer, path: Path, notes: dict) -> None:
    cfg = trainer.cfg.replace(notes=notes)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(to_model_weights(trainer.model, cfg), path, dtype="float16")
    os.chmod(path, 0o644)  # package data: readable by whoever installs it
    log.info("exported %s (%.1f MB, step %d)", path, path.stat().st_size / 1e6, trainer.step_count)


# ANN001 below: ``fn`` is any multiprocessing target.
def _watch_parent(ppid: int, niceness: int, fn, *args) -> None:  # noqa: ANN001
    """Run ``fn`` in a thread at lower priority; exit when the trainer that started us is gone
    (even if it was killed, so no orphan keeps rendering)."""
    import threading

    try:
        os.nice(niceness)  # before the thread starts, so it inherits the priority
    except OSError:
        pass
    threading.Thread(target=fn, args=args, daemon=True).start()
    while os.getppid() == ppid:
        time.sleep(5)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m edgemoe_ros.training.train",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="run directory (checkpoint, log)")
    ap.add_argument("--minutes", type=float, default=60.0,
                    help="wall-clock training budget (total, across resumes)")
    ap.add_argument("--steps", type=int, default=0,
                    help="stop after this many steps (0 = only the time budget)")
    ap.add_argument("--batch", type=int, default=Hyper.batch)
    ap.add_argument("--lr", type=float, default=Hyper.lr)
    ap.add_argument("--lovasz", type=float, default=Hyper.lovasz_weight,
                    help="weight of a Lovász-softmax (IoU) term added to the segmentation loss")
    ap.add_argument("--edge-weight", type=float, default=Hyper.edge_weight,
                    help="extra cross-entropy weight of pixels near a label edge (0 = off)")
    ap.add_argument("--edge-radius", type=int, default=Hyper.edge_radius,
                    help="edge band half-width in pixels")
    ap.add_argument("--resume", action="store_true", help=f"continue from OUT/{CHECKPOINT_NAME}")
    ap.add_argument("--cache", type=Path, default=Path("data_cache"),
                    help="rendered-frame cache root")
    ap.add_argument("--initial-shards", type=int, default=16,
                    help=f"shards of {data.SHARD_FRAMES} frames before step 1")
    ap.add_argument("--max-shards", type=int, default=150,
                    help="cache size kept by the background renderer")
    ap.add_argument("--no-refresh", action="store_true",
                    help="no background renderer (fixed cache)")
    ap.add_argument("--val-frames", type=int, default=24)
    ap.add_argument("--val-every", type=float, default=10.0,
                    help="minutes between quick validations")
    ap.add_argument("--export-every", type=float, default=15.0,
                    help="minutes between exports of the weights")
    ap.add_argument("--export", type=Path, default=SHIPPED_WEIGHTS, help="weights file to write")
    ap.add_argument("--tiny", action="store_true", help="tiny model (tests)")
    ap.add_argument("--head", choices=HEAD_TYPES, default=None,
                    help="task head type (default: the --init file's, else the config default)")
    ap.add_argument("--init", type=Path, default=None,
                    help="start a new run from this weights file (tensors matched by name and "
                         "shape)")
    ap.add_argument("--new-lr-mult", type=float, default=10.0,
                    help="learning-rate multiplier of parameters --init does not provide")
    # 1 thread: on a shared, oversubscribed 2-core machine 2 OpenMP threads measured 7x slower
    # (each parallel region waits for a descheduled worker); more threads only help on an idle
    # machine.
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args(argv)


def run(args: argparse.Namespace, command: str) -> dict[str, float]:
    """Train per ``args``; ``command`` (the command line) is recorded in the exported file's
    notes."""
    torch.set_num_threads(args.threads)
    cfg = tiny_config() if args.tiny else ModelConfig()
    init = None
    if args.init is not None and not (args.resume and (args.out / CHECKPOINT_NAME).exists()):
        start = load_weights(args.init)
        cfg, init = start.config.replace(notes={}), start.tensors
    if args.head is not None:
        cfg = cfg.replace(head=args.head)
    hyper = Hyper(batch=args.batch, lr=args.lr, lovasz_weight=args.lovasz,
                  edge_weight=args.edge_weight, edge_radius=args.edge_radius)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.cache / f"synth_{cfg.img_h}x{cfg.img_w}"
    data.ensure_shards(cache, args.initial_shards, cfg.img_w, cfg.img_h)
    pool = data.FramePool(cache)
    pool.reload()
    val = data.render_set(range(data.VAL_SEED_START, data.VAL_SEED_START + args.val_frames),
                          cfg.img_w, cfg.img_h)

    ckpt_path = args.out / CHECKPOINT_NAME
    elapsed, images_seen, history = 0.0, 0, []
    rng = np.random.default_rng(args.seed)
    if args.resume and ckpt_path.exists():
        try:
            ck = load_checkpoint_file(ckpt_path)
        except CheckpointError as exc:
            raise SystemExit(f"--resume: {exc}") from None
        if "config" in ck:
            cfg = ModelConfig.from_json(ck["config"])
        if args.head is not None and args.head != cfg.head:
            raise SystemExit(f"--head {args.head}: the run in {args.out} trains a {cfg.head!r} "
                             f"head; start a new run (another --out) to change it")
        trainer = Trainer(cfg, hyper, ck["class_w"], args.seed, fresh=set(ck.get("fresh", ())),
                          new_lr_mult=ck.get("new_lr_mult", 1.0))
        trainer.model.load_state_dict(ck["model"])
        trainer.opt.load_state_dict(ck["opt"])
        trainer.step_count = ck["step"]
        trainer.gen.set_state(ck["torch_gen"])
        rng.bit_generator.state = ck["np_rng"]
        elapsed, images_seen, history = ck["elapsed_s"], ck["images_seen"], ck.get("history", [])
        log.info("resumed from %s at step %d (%.1f min trained)", ckpt_path, trainer.step_count,
                 elapsed / 60)
    else:
        freq = data.class_frequencies(pool.labels, cfg.num_classes)
        trainer = Trainer(cfg, hyper, class_weights(freq, hyper.class_weight_power), args.seed,
                          init=init, new_lr_mult=args.new_lr_mult)
        log.info("class frequencies %s -> weights %s", np.round(freq, 4).tolist(),
                 np.round(trainer.class_w.numpy(), 2).tolist())

    refresher = None
    if not args.no_refresh:
        ctx = mp.get_context("spawn")  # see train_heads.build_cache: never fork a threaded process
        refresher = ctx.Process(target=_watch_parent, daemon=True,
                                args=(os.getpid(), 10, data.refresh_worker, str(cache), cfg.img_w,
                                      cfg.img_h, args.max_shards))
        refresher.start()

    budget = args.minutes * 60.0

    def notes(metrics: dict[str, float]) -> dict:
        return {"trained_by": "edgemoe_ros.training.train", "command": command,
                "steps": trainer.step_count, "images_seen": images_seen,
                "train_minutes": round(elapsed / 60, 1), "batch": hyper.batch,
                "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "data": f"edgemoe_ros.scenes render_frame seeds >= {data.TRAIN_SEED_START}",
                "val": {k: round(v, 4) for k, v in metrics.items()}}

    def state() -> dict:
        return {"elapsed_s": elapsed, "images_seen": images_seen,
                "np_rng": rng.bit_generator.state, "history": history, "config": cfg.to_json()}

    t_start = time.time() - elapsed
    last_val = last_export = last_ckpt = time.time()
    window_t, window_n = time.time(), 0
    metrics: dict[str, float] = {}
    try:
        while elapsed < budget and not (args.steps and trainer.step_count >= args.steps):
            rgb, lab, dep = pool.sample(rng, hyper.batch)
            parts = trainer.step(rgb, lab, dep, elapsed / budget)
            images_seen += hyper.batch
            window_n += hyper.batch
            elapsed = time.time() - t_start
            now = time.time()
            if trainer.step_count % 10 == 0 or trainer.step_count == 1:
                rate = window_n / max(now - window_t, 1e-9)
                log.info("step %d | seg %.3f depth %.3f aux %.3f | lr %.2e | %.1f img/s | "
                         "%.1f/%.0f min | ETA %.1f min",
                         trainer.step_count, parts.get("seg", 0), parts.get("depth", 0),
                         parts["aux"], parts["lr"], rate, elapsed / 60, budget / 60,
                         max(budget - elapsed, 0) / 60)
                window_t, window_n = now, 0
            if trainer.step_count % 100 == 0 and refresher is not None and pool.reload():
                log.info("frame pool reloaded: %d frames", len(pool))
            if now - last_val > args.val_every * 60:
                metrics = validate(trainer, val)
                history.append({"step": trainer.step_count, "minutes": round(elapsed / 60, 1),
                                **metrics})
                log.info("val step %d: %s", trainer.step_count,
                         {k: round(v, 4) for k, v in metrics.items()})
                last_val = time.time()
            if now - last_ckpt > 5 * 60:
                save_checkpoint(ckpt_path, trainer, state())
                last_ckpt = time.time()
            if now - last_export > args.export_every * 60:
                export(trainer, args.export, notes(metrics))
                last_export = time.time()
    finally:
        if refresher is not None:
            refresher.terminate()
    metrics = validate(trainer, val)
    history.append({"step": trainer.step_count, "minutes": round(elapsed / 60, 1), **metrics})
    log.info("final val step %d: %s", trainer.step_count,
             {k: round(v, 4) for k, v in metrics.items()})
    save_checkpoint(ckpt_path, trainer, state())
    export(trainer, args.export, notes(metrics))
    return metrics | {"steps": trainer.step_count}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout)
    argv = sys.argv[1:] if argv is None else argv
    run(parse_args(argv), "python -m edgemoe_ros.training.train " + shlex.join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
