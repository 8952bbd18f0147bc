# SPDX-License-Identifier: Apache-2.0
"""Train the task heads alone on a frozen backbone, from cached backbone features, on CPU.

    python -m edgemoe_ros.training.train_heads --init MODEL.safetensors --out runs/pyramid \\
        --frames 8000 --minutes 60 --export runs/pyramid/export.safetensors [--resume]

Why: the backbone is nearly all of a full training step (forward and backward through 12 blocks
and 6 MoE layers, for two tasks), so a new head trained end to end learns at the backbone's pace.
With the backbone frozen, its features are a function of the image alone: they are computed once
per frame by the fast ``cpu`` backend (the very features the node's heads get) and cached beside
the frame. A step is then the head's forward and backward only, on random crops aligned to the
token grid; a crop's tokens come from the whole image, so they still carry its context.

Frames are the full trainer's: rendered from training seeds, augmented once when cached (flip,
photometric jitter, blur: ``train.augment``), scored with its losses (``train.task_losses``).
The exported file is the ``--init`` model with new heads; the backbone tensors are copied
unchanged (float16 when the init's are exactly float16, else float32: ``export_dtype``), so
everything measured of the backbone (fixed-point agreement, accelerator) holds.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
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

from ..blas_threads import limit_blas_threads
from ..model.config import ModelConfig
from ..model.heads import decode_depth
from ..model.layers import PIXEL_DIVISOR
from ..model.weights import ModelWeights, load_weights, save_weights
from ..scenes.randomise import PROFILES
from . import data
from .augment import photometric as photometric_augment
from .checkpoint import CheckpointError, load_checkpoint_file, save_checkpoint_file
from .metrics import SegDepthMeter
from .torch_model import DEPTH_INIT_LOG_METRES, PyramidHead, depth_output_layer
from .train import SHIPPED_WEIGHTS, Hyper, augment, class_weights, task_losses

log = logging.getLogger("edgemoe_ros.training.heads")

CHECKPOINT_NAME = "last_heads.pt"
#: Sub-stream of a frame's seed that draws its photometric augmentation.
PHOTOMETRIC_STREAM = 11
#: Frames per feature-cache shard.
SHARD_FRAMES = 250
#: Head types this trainer builds (they accept crops of the image and its token grid).
TRAINABLE_HEADS = ("pyramid",)
#: Training frames come from their own seed range (disjoint from the full trainer's cache, so
#: the two caches never hold the same scene twice with different augmentations).
FIRST_SEED = data.TRAIN_SEED_START + 1_000_000
#: Steps between progress lines; minutes between checkpoints; frames per validation forward.
LOG_EVERY_STEPS = 50
CHECKPOINT_MINUTES = 5.0
VAL_BATCH = 20
#: Optimiser settings of the shipped head run that differ from the full trainer's
#: (``train.Hyper``): heads alone on cached features take a short warm-up and lighter weight decay.
HEAD_WARMUP_STEPS = 50
HEAD_WEIGHT_DECAY = 0.01


#: Config fields that only the heads read (left out of the backbone's digest).
HEAD_FIELD_PREFIXES = ("head", "light_", "guide_", "refine_", "pyramid_", "up_", "notes")


def backbone_digest(weights: ModelWeights) -> str:
    """Hash of the backbone tensors and config (heads excluded): cached features are keyed by
    it."""
    fields = {k: v for k, v in weights.config.to_dict().items()
              if not k.startswith(HEAD_FIELD_PREFIXES)}
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode())
    for name in sorted(weights.tensors):
        if not name.startswith("heads."):
            digest.update(name.encode())
            digest.update(np.ascontiguousarray(weights[name], dtype=np.float32).tobytes())
    return digest.hexdigest()[:16]


# ----- feature cache -----
_worker_backend = None


def _init_worker(weights_path: str) -> None:
    global _worker_backend
    # One thread per worker, workers side by side: numpy is loaded already, so its BLAS is told at
    # run time (an environment variable would be read too late).
    limit_blas_threads(1)
    torch.set_num_threads(1)
    from ..backends import create_backend

    _worker_backend = create_backend("cpu")
    _worker_backend.load(load_weights(weights_path))


def randomised_seed(seed: int, share: float) -> bool:
    """Whether training frame ``seed`` is domain-randomised when a ``share`` of them is (a fixed,
    well-mixed choice per seed, so a cache is the same whichever worker renders it)."""
    return (seed * 2654435761) % 1000 < round(share * 1000)


def render_shard(first_seed: int, count: int, augmented: bool, width: int, height: int,
                 # ANN001: backend is a Backend, or the worker's
                 backend=None, randomise: str | None = None,  # noqa: ANN001
                 share: float = 1.0, photometric: float = 0.0) -> dict[str, np.ndarray]:
    """Render ``count`` frames from ``first_seed``, augment each once (seeded by its seed), and run
    the backbone on them: rgb, labels, depth (float16, sky +inf) and ``feat_<task>`` (float16).
    ``randomise``: profile for a ``share`` of the frames (``randomised_seed``), None = none;
    ``photometric``: strength of the sensor augmentation (``augment.photometric``) of augmented
    frames."""
    backend = backend or _worker_backend
    if backend is None:
        raise RuntimeError("render_shard needs a loaded backend (or a cache worker started by "
                           "build_cache)")
    cfg = backend.config
    out: dict[str, list[np.ndarray]] = {"rgb": [], "labels": [], "depth": []}
    for seed in range(first_seed, first_seed + count):
        profile = randomise if randomise is not None and randomised_seed(seed, share) else None
        frame = data.render_set([seed], width, height, randomise=profile)
        rgb, labels, depth = frame["rgb"], frame["labels"], frame["depth"]
        if augmented:
            x, lab, dep = augment(
                torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / PIXEL_DIVISOR,
                torch.from_numpy(labels.astype(np.int64)), torch.from_numpy(depth),
                torch.Generator().manual_seed(seed))
            rgb = (np.floor(x.permute(0, 2, 3, 1).numpy() * PIXEL_DIVISOR)
                   .clip(0, 255).astype(np.uint8))
            labels, depth = lab.numpy().astype(np.uint8), dep.numpy()
            if photometric > 0:
                rgb = photometric_augment(rgb[0],
                                          np.random.default_rng([seed, PHOTOMETRIC_STREAM]),
                                          strength=photometric)[None]
        feats = backend.run(rgb, cfg.tasks).features
        for task in cfg.tasks:
            out.setdefault(f"feat_{task}", []).append(feats[task].astype(np.float16))
        out["rgb"].append(rgb)
        out["labels"].append(labels)
        out["depth"].append(np.where(np.isfinite(depth), np.minimum(depth, data.FLOAT16_DEPTH_CAP),
                                     depth).astype(np.float16))
    return {k: np.concatenate(v) for k, v in out.items()}


def _write_shard(job: tuple[str, int, int, bool, int, int, str | None, float, float]) -> str:
    path, first, count, augmented, width, height, randomise, share, photometric = job
    arrays = render_shard(first, count, augmented, width, height, randomise=randomise, share=share,
                          photometric=photometric)
    tmp = path + ".tmp.npz"
    np.savez(tmp, **arrays)
    os.replace(tmp, path)  # readers never see a half-written shard
    return path


def build_cache(weights_path: Path, cache_dir: Path, frames: int, val_frames: int, workers: int,
                randomise: str | None = None, share: float = 1.0,
                photometric: float = 0.0) -> None:
    """Make sure ``cache_dir`` holds ``frames`` training frames and ``val_frames`` validation
    frames (held-out validation seeds, not augmented, never randomised: they measure the default
    scenes); renders only what is missing, ``workers`` at a time. ``randomise``/``share``: see
    ``render_shard``."""
    cfg = load_weights(weights_path).config
    cache_dir.mkdir(parents=True, exist_ok=True)
    jobs = []
    for kind, first, total, augmented in (("val", data.VAL_SEED_START, val_frames, False),
                                          ("train", FIRST_SEED, frames, True)):
        for start in range(0, total, SHARD_FRAMES):
            path = cache_dir / f"{kind}_{first + start:09d}_{min(SHARD_FRAMES, total - start)}.npz"
            if not path.exists():
                jobs.append((str(path), first + start, min(SHARD_FRAMES, total - start), augmented,
                             cfg.img_w, cfg.img_h, randomise if kind == "train" else None, share,
                             photometric))
    if not jobs:
        return
    log.info("feature cache %s: rendering %d shards on %d workers", cache_dir, len(jobs), workers)
    t0 = time.time()
    # spawn, not fork: the caller may hold threads (DDS, Ray's gRPC, our kernels' pool), and a
    # forked child of a threaded process can die or deadlock; a Pool whose worker dies waits
    # forever for its task (seen: a make test hung here after the fleet tests' Ray).
    with mp.get_context("spawn").Pool(workers, _init_worker, (str(weights_path),)) as pool:
        for i, path in enumerate(pool.imap_unordered(_write_shard, jobs), 1):
            log.info("cached %s (%d/%d, %.1f min)", Path(path).name, i, len(jobs),
                     (time.time() - t0) / 60)


def load_cache(cache_dir: Path, kind: str, frames: int, first: int) -> dict[str, np.ndarray]:
    """The first ``frames`` cached frames of ``kind`` ("train" or "val") in memory, depth as
    float32."""
    parts: dict[str, list[np.ndarray]] = {}
    for start in range(0, frames, SHARD_FRAMES):
        count = min(SHARD_FRAMES, frames - start)
        with np.load(cache_dir / f"{kind}_{first + start:09d}_{count}.npz") as z:
            for key in z.files:
                parts.setdefault(key, []).append(z[key])
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    arrays["depth"] = arrays["depth"].astype(np.float32)
    return arrays


# ----- training -----
def head_config(init: ModelConfig, head: str) -> ModelConfig:
    """The init model's config with the head to train. The head's widths (``pyramid_*``) are the
    init file's own fields: a model exported with other heads carries the defaults of its day."""
    return init.replace(head=head, notes={})


@dataclass
class Crop:
    """A crop in token units: rows [row, row + rows), columns [col, col + cols) of the token
    grid."""

    row: int
    col: int
    rows: int
    cols: int

    def pixels(self, patch: int) -> tuple[slice, slice]:
        """The crop's rows and columns in pixels."""
        return (slice(self.row * patch, (self.row + self.rows) * patch),
                slice(self.col * patch, (self.col + self.cols) * patch))


class HeadTrainer:
    """The task heads, their optimiser and one step on a batch of cached frames; no I/O."""

    def __init__(self, cfg: ModelConfig, hyper: Hyper, class_w: torch.Tensor, seed: int = 0,
                 init: dict[str, np.ndarray] | None = None):
        """``init``: tensors of a model with the same head to continue from (else a fresh head)."""
        torch.manual_seed(seed)
        self.cfg, self.hyper, self.class_w = cfg, hyper, class_w
        self.heads = torch.nn.ModuleDict({t: PyramidHead(cfg, cfg.head_out_channels(t))
                                          for t in cfg.tasks})
        torch.nn.init.constant_(depth_output_layer(self.heads["depth"], cfg).bias,
                                DEPTH_INIT_LOG_METRES)
        if init is not None:
            state = {k[len("heads."):]: torch.from_numpy(np.asarray(v, dtype=np.float32))
                     for k, v in init.items() if k.startswith("heads.")}
            self.heads.load_state_dict(state, strict=True)
        self.opt = torch.optim.AdamW(self.heads.parameters(), lr=hyper.lr,
                                     weight_decay=hyper.weight_decay)
        self.step_count = 0
        mean = torch.tensor(cfg.pixel_mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.tensor(cfg.pixel_std, dtype=torch.float32).view(1, -1, 1, 1)
        self._pixel_norm = (mean, std)

    def lr_at(self, progress: float) -> float:
        h = self.hyper
        warm = min(1.0, (self.step_count + 1) / max(h.warmup_steps, 1))
        cos = 0.5 * (1.0 + math.cos(math.pi * min(max(progress, 0.0), 1.0)))
        return h.lr * warm * (h.min_lr_frac + (1.0 - h.min_lr_frac) * cos)

    def outputs(self, batch: dict[str, np.ndarray],
                crop: Crop | None = None) -> dict[str, torch.Tensor]:
        """Head outputs (B, C, h, w) for the frames of ``batch`` (or the ``crop`` of each)."""
        cfg, k = self.cfg, self.cfg.patch
        mean, std = self._pixel_norm
        rgb = batch["rgb"]
        crop = crop or Crop(0, 0, cfg.grid_h, cfg.grid_w)
        rows, cols = crop.pixels(k)
        pixels = (torch.from_numpy(np.ascontiguousarray(rgb[:, rows, cols]))
                  .permute(0, 3, 1, 2).float()
                  / PIXEL_DIVISOR - mean) / std
        outs = {}
        for task in cfg.tasks:
            grid = batch[f"feat_{task}"].reshape(-1, cfg.grid_h, cfg.grid_w, cfg.dim)
            tokens = grid[:, crop.row:crop.row + crop.rows, crop.col:crop.col + crop.cols]
            feats = torch.from_numpy(tokens.reshape(len(rgb), -1, cfg.dim).astype(np.float32))
            outs[task] = self.heads[task](feats, pixels, (rows.start, cols.start))
        return outs

    def losses(self, batch: dict[str, np.ndarray], crop: Crop | None = None
               ) -> dict[str, torch.Tensor]:
        outs = self.outputs(batch, crop)
        rows, cols = (crop.pixels(self.cfg.patch) if crop is not None
                      else (slice(None), slice(None)))
        labels = torch.from_numpy(batch["labels"][:, rows, cols].astype(np.int64))
        depth = torch.from_numpy(np.ascontiguousarray(batch["depth"][:, rows, cols],
                                                      dtype=np.float32))
        return task_losses(outs, labels, depth, self.cfg, self.hyper, self.class_w)

    def step(self, batch: dict[str, np.ndarray], crop: Crop | None,
             progress: float) -> dict[str, float]:
        self.heads.train()
        lr = self.lr_at(progress)
        for g in self.opt.param_groups:
            g["lr"] = lr
        parts = self.losses(batch, crop)
        self.opt.zero_grad(set_to_none=True)
        parts["total"].backward()
        torch.nn.utils.clip_grad_norm_(self.heads.parameters(), self.hyper.grad_clip)
        self.opt.step()
        self.step_count += 1
        return {k: float(v.detach()) for k, v in parts.items()} | {"lr": lr}

    @torch.no_grad()
    def validate(self, val: dict[str, np.ndarray], batch: int = VAL_BATCH) -> dict[str, float]:
        """mIoU, pixel accuracy, AbsRel, RMSE and δ1 on full frames, decoded as the engine
        decodes."""
        self.heads.eval()
        cfg = self.cfg
        meter = SegDepthMeter(cfg.num_classes, cfg.max_depth)
        for i in range(0, len(val["rgb"]), batch):
            part = {k: v[i:i + batch] for k, v in val.items()}
            outs = self.outputs(part)
            meter.add_semseg(outs["semseg"].argmax(1).numpy().astype(np.uint8), part["labels"])
            depth = decode_depth(outs["depth"].numpy(), cfg)
            meter.add_depth(depth, part["depth"], part["labels"])
        return meter.summary()

    def export_weights(self, init: ModelWeights, notes: dict) -> ModelWeights:
        """The init model's backbone with these heads, as a model of this trainer's config."""
        tensors = {k: v for k, v in init.tensors.items() if not k.startswith("heads.")}
        for name, value in self.heads.state_dict().items():
            tensors[f"heads.{name}"] = value.detach().cpu().numpy().astype(np.float32)
        weights = ModelWeights(self.cfg.replace(notes=notes), tensors, source="train_heads")
        weights.validate()
        return weights


def random_crop(cfg: ModelConfig, rng: np.random.Generator, rows: int, cols: int) -> Crop:
    rows, cols = min(rows, cfg.grid_h), min(cols, cfg.grid_w)
    return Crop(int(rng.integers(0, cfg.grid_h - rows + 1)),
                int(rng.integers(0, cfg.grid_w - cols + 1)), rows, cols)


def save_checkpoint(path: Path, trainer: HeadTrainer, state: dict) -> None:
    """Heads, optimiser and step, plus ``state`` (the run's clock, rng, history, backbone
    digest)."""
    save_checkpoint_file(path, {
        "heads": trainer.heads.state_dict(), "opt": trainer.opt.state_dict(),
        "step": trainer.step_count, "class_w": trainer.class_w, "config": trainer.cfg.to_json(),
        **state})


def export_dtype(init: ModelWeights) -> str:
    """"float16" when every backbone tensor of ``init`` is exactly a float16 (the shipped model's
    are), else "float32": the export must carry the backbone bit for bit, since the cached
    features, the fixed-point agreement and the accelerator's figures were measured on it."""
    for name, value in init.tensors.items():
        if name.startswith("heads."):
            continue
        v = np.asarray(value, dtype=np.float32)
        if not np.array_equal(v.astype(np.float16).astype(np.float32), v, equal_nan=True):
            return "float32"
    return "float16"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m edgemoe_ros.training.train_heads",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("--init", type=Path, default=SHIPPED_WEIGHTS,
                    help="model whose backbone is kept")
    ap.add_argument("--head", choices=TRAINABLE_HEADS, default="pyramid")
    ap.add_argument("--out", type=Path, required=True, help="run directory (checkpoint)")
    ap.add_argument("--export", type=Path, default=None,
                    help="weights file to write (default OUT/export.safetensors)")
    ap.add_argument("--cache", type=Path, default=Path("data_cache"), help="feature-cache root")
    ap.add_argument("--frames", type=int, default=8000,
                    help="training frames to cache and train on")
    ap.add_argument("--val-frames", type=int, default=100)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes that build the cache")
    ap.add_argument("--minutes", type=float, default=60.0,
                    help="wall-clock training budget (total, across resumes)")
    ap.add_argument("--steps", type=int, default=0,
                    help="stop after this many steps (0 = only the time budget)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, nargs=2, default=(4, 8), metavar=("ROWS", "COLS"),
                    help="training crop in tokens (0 0 = whole frames)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--lovasz", type=float, default=1.0,
                    help="weight of the Lovász-softmax (IoU) term")
    ap.add_argument("--continue-heads", action="store_true",
                    help="start from the --init file's heads (it must have this head type) "
                         "instead of fresh ones")
    ap.add_argument("--resume", action="store_true", help=f"continue from OUT/{CHECKPOINT_NAME}")
    ap.add_argument("--val-every", type=float, default=10.0, help="minutes between validations")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--randomise", choices=[k for k in PROFILES if k != "off"], default=None,
                    help="domain-randomisation profile of the training frames "
                         "(scenes/randomise.py)")
    ap.add_argument("--randomise-share", type=float, default=1.0,
                    help="fraction of training frames randomised (the rest are default scenes)")
    ap.add_argument("--photometric", type=float, default=0.0,
                    help="strength of the sensor augmentation of training frames "
                         "(training/augment.py; 0 = off)")
    args = ap.parse_args(argv)
    for name in ("frames", "val_frames", "workers", "batch", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.minutes <= 0 or args.val_every <= 0 or args.steps < 0:
        ap.error("--minutes and --val-every must be positive, --steps not negative")
    rows, cols = args.crop
    if rows < 0 or cols < 0 or (rows == 0) != (cols == 0):
        ap.error(f"--crop takes two positive token counts, or 0 0 for whole frames; got {rows} "
                 f"{cols}")
    return args


def run(args: argparse.Namespace, command: str) -> dict[str, float]:
    """Cache, train and export per ``args``; ``command`` is recorded in the exported file's
    notes."""
    torch.set_num_threads(args.threads)
    init = load_weights(args.init)
    cfg = head_config(init.config, args.head)
    if args.continue_heads and init.config.head != cfg.head:
        raise SystemExit(f"--continue-heads: {args.init} has a {init.config.head!r} head, not "
                         f"this run's {cfg.head!r}")
    export_path = args.export or args.out / "export.safetensors"
    digest = backbone_digest(init)
    cache = args.cache / f"heads_{cfg.img_h}x{cfg.img_w}_{digest}"
    if args.randomise is not None:
        cache = cache.with_name(f"{cache.name}_{args.randomise}{args.randomise_share:g}")
    if args.photometric > 0:
        cache = cache.with_name(f"{cache.name}_photo{args.photometric:g}")
    build_cache(args.init, cache, args.frames, args.val_frames, args.workers, args.randomise,
                args.randomise_share, args.photometric)
    train = load_cache(cache, "train", args.frames, FIRST_SEED)
    val = load_cache(cache, "val", args.val_frames, data.VAL_SEED_START)
    log.info("training frames %d, validation frames %d", len(train["rgb"]), len(val["rgb"]))

    hyper = Hyper(batch=args.batch, lr=args.lr, lovasz_weight=args.lovasz,
                  warmup_steps=HEAD_WARMUP_STEPS, weight_decay=HEAD_WEIGHT_DECAY)
    args.out.mkdir(parents=True, exist_ok=True)
    ckpt_path = args.out / CHECKPOINT_NAME
    rng = np.random.default_rng(args.seed)
    elapsed, frames_seen, history = 0.0, 0, []
    if args.resume and ckpt_path.exists():
        try:
            ck = load_checkpoint_file(ckpt_path)
        except CheckpointError as exc:
            raise SystemExit(f"--resume: {exc}") from None
        if ModelConfig.from_json(ck["config"]) != cfg:
            raise SystemExit(f"--resume: {ckpt_path} trains another head config than this run")
        if ck.get("backbone_digest") != digest:
            # Same config, other tensors: the heads learnt another backbone's features.
            raise SystemExit(f"--resume: {ckpt_path} trained heads on backbone "
                             f"{ck.get('backbone_digest')}, but {args.init} is backbone {digest}")
        trainer = HeadTrainer(cfg, hyper, ck["class_w"], args.seed)
        trainer.heads.load_state_dict(ck["heads"])
        trainer.opt.load_state_dict(ck["opt"])
        trainer.step_count = ck["step"]
        rng.bit_generator.state = ck["np_rng"]
        elapsed, frames_seen, history = ck["elapsed_s"], ck["frames_seen"], ck["history"]
        log.info("resumed from %s at step %d (%.1f min trained)", ckpt_path, trainer.step_count,
                 elapsed / 60)
    else:
        freq = data.class_frequencies(train["labels"], cfg.num_classes)
        trainer = HeadTrainer(cfg, hyper, class_weights(freq, hyper.class_weight_power), args.seed,
                              init=init.tensors if args.continue_heads else None)

    def state() -> dict:
        return {"elapsed_s": elapsed, "frames_seen": frames_seen,
                "np_rng": rng.bit_generator.state, "history": history, "backbone_digest": digest}

    budget = args.minutes * 60.0
    rows, cols = args.crop
    t_start = time.time() - elapsed
    last_val = last_ckpt = window_t = time.time()
    window_step = trainer.step_count
    while elapsed < budget and not (args.steps and trainer.step_count >= args.steps):
        idx = np.sort(rng.integers(0, len(train["rgb"]), hyper.batch))
        batch = {k: v[idx] for k, v in train.items()}
        crop = random_crop(cfg, rng, rows, cols) if rows > 0 and cols > 0 else None
        parts = trainer.step(batch, crop, elapsed / budget)
        frames_seen += hyper.batch
        elapsed = time.time() - t_start
        now = time.time()
        if trainer.step_count % LOG_EVERY_STEPS == 0 or trainer.step_count == window_step + 1:
            log.info("step %d | seg %.3f depth %.3f | lr %.2e | %.2f s/step | %.1f/%.0f min",
                     trainer.step_count, parts.get("seg", 0.0), parts.get("depth", 0.0),
                     parts["lr"], (now - window_t) / (trainer.step_count - window_step),
                     elapsed / 60, budget / 60)
            window_t, window_step = now, trainer.step_count
        if now - last_val > args.val_every * 60:
            metrics = trainer.validate(val)
            history.append({"step": trainer.step_count, "minutes": round(elapsed / 60, 1),
                            **metrics})
            log.info("val step %d: %s", trainer.step_count,
                     {k: round(v, 4) for k, v in metrics.items()})
            last_val = time.time()
        if now - last_ckpt > CHECKPOINT_MINUTES * 60:
            save_checkpoint(ckpt_path, trainer, state())
            last_ckpt = time.time()
    metrics = trainer.validate(val)
    history.append({"step": trainer.step_count, "minutes": round(elapsed / 60, 1), **metrics})
    log.info("final val step %d: %s", trainer.step_count,
             {k: round(v, 4) for k, v in metrics.items()})
    save_checkpoint(ckpt_path, trainer, state())
    # The full trainer's keys (steps, images_seen, ...) describe the head training here; the
    # backbone's own training record is kept under "backbone".
    notes = {"trained_by": "edgemoe_ros.training.train_heads", "command": command,
             "steps": trainer.step_count, "images_seen": frames_seen,
             "train_minutes": round(elapsed / 60, 1), "batch": hyper.batch,
             "crop_tokens": [rows, cols],
             "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
             "data": f"{args.frames} frames, render_frame seeds {FIRST_SEED}.., augmented once"
                     + (f", {args.randomise_share:g} randomised ({args.randomise})"
                        if args.randomise else "")
                     + (f", photometric {args.photometric:g}" if args.photometric > 0 else ""),
             "val": {k: round(v, 4) for k, v in metrics.items()}, "backbone": init.config.notes}
    export_path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(trainer.export_weights(init, notes), export_path, dtype=export_dtype(init))
    os.chmod(export_path, 0o644)
    log.info("exported %s (%.1f MB)", export_path, export_path.stat().st_size / 1e6)
    return metrics | {"steps": trainer.step_count}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stdout)
    argv = sys.argv[1:] if argv is None else argv
    run(parse_args(argv), "python -m edgemoe_ros.training.train_heads " + shlex.join(argv))
    return 0


if __name__ == "__main__":
    sys.exit(main())
