# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-train``: train the model on rendered scenes and real datasets, on one machine or many.

    edgemoe-train --out runs/cs --data synth:0.3 --data cityscapes:/data/cityscapes:0.7 \\
        --classes cityscapes19 --steps 20000 --batch 16
    torchrun --nproc_per_node 4 -m edgemoe_ros.training.edgemoe_train --out runs/cs ...   # DDP

One step: a global batch of ``--batch`` frames is drawn from the ``--data`` mixture (sources.py:
deterministic in seed and step), split into shards of ``batch / (world x accum)`` frames; each
process runs its shards (forward, both task losses and the MoE load-balancing loss, backward;
bf16 autocast on CUDA, ``--precision``), DDP averages the gradients across processes, and AdamW
steps with a warmup and a cosine decay over ``--steps``. The objective of a step is the mean of
its shards' losses, so ``--accum`` on one process and N processes of DistributedDataParallel
reach the same parameters (the tests hold them to it). After every step the backbone is clamped
to the accelerator's fixed-point ranges (as the original trainer does).

Depth is learnt for the model's canonical camera: each frame's metric depth is converted with its
own K (sources.py, model/canonical_camera.py), so frames of every lens and crop agree.

Outputs under ``--out``: ``checkpoint.pt`` (every ``--checkpoint-every`` steps and at the end;
``--resume`` continues from it, refusing another run's), ``model.safetensors`` (the engine's
format, with the class names and palette of ``--classes`` in its config), ``accuracy.md`` and
``accuracy.json`` (fixed point vs float on training frames: weight saturation, routing and pixel
agreement, so a user knows the FPGA sees the same model), ``run.json`` and, when tensorboard is
installed, ``tensorboard/`` scalars. docs/training.md has the recipes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..datasets import SCHEMES, ClassScheme, get_scheme
from ..model.config import HEAD_TYPES, RESIZE_MODES, ModelConfig, tiny_config
from ..model.weights import ModelWeights, load_weights, save_weights
from ..scenes.randomise import PROFILES
from . import distributed as dd
from .augment import photometric as photometric_augment
from .checkpoint import ForeignCheckpointError, load_checkpoint, save_checkpoint
from .sources import DataSpec, Mixture, open_source, parse_data_spec, shard_seed
from .torch_model import EdgeMoEViT, build_torch_model, images_to_tensor, to_model_weights
from .train import (
    Hyper,
    apply_update,
    augment,
    class_weights,
    copy_matching,
    fixed_point_ranges,
    make_optimizer,
    scheduled_lr,
    task_losses,
)

log = logging.getLogger("edgemoe_ros.training.edgemoe_train")

CHECKPOINT_NAME = "checkpoint.pt"
EXPORT_NAME = "model.safetensors"
MODELS = ("spec", "tiny")
PRECISIONS = ("auto", "bf16", "fp32")
#: Frames drawn (deterministically) to estimate the class weights of a new run.
CLASS_WEIGHT_FRAMES = 64
#: ``Mixture.picks`` streams of frames drawn besides the batches.
STREAM_CLASS_WEIGHTS, STREAM_REPORT = 1, 2
#: Sub-stream of a shard's seed that draws its sensor (photometric) augmentation.
PHOTOMETRIC_STREAM = 1


class TaskLoss(nn.Module):
    """The per-shard objective as one module, so DistributedDataParallel wraps its forward."""

    def __init__(self, model: EdgeMoEViT, hyper: Hyper, class_w: torch.Tensor):
        super().__init__()
        self.model, self.hyper = model, hyper
        self.register_buffer("class_w", class_w.clone(), persistent=False)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor, depth: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        cfg = self.model.cfg
        outs, aux = self.model.forward_tasks(x, cfg.tasks)
        outs = {k: v.float() for k, v in outs.items()}  # losses in float32 under autocast
        parts = task_losses(outs, labels, depth, cfg, self.hyper, self.class_w)
        total = parts["total"] + self.hyper.aux_coef * aux.float()
        return total, {
            "aux": aux.detach(),
            **{k: v.detach() for k, v in parts.items() if torch.is_tensor(v)},
        }


@dataclasses.dataclass
class RunSetup:
    """What one process trains: model config, class scheme, hyper-parameters, the schedule."""

    cfg: ModelConfig
    scheme: ClassScheme
    hyper: Hyper
    steps: int
    accum: int
    seed: int
    #: Forward under bf16 autocast (losses in float32).
    bf16: bool = False
    #: The patch embedding and this many first blocks stay as initialised (``--freeze-blocks``).
    freeze_blocks: int = 0


class MixTrainer:
    """Model, optimiser and the step of ``edgemoe-train``; no file I/O (tests drive it)."""

    def __init__(
        self,
        setup: RunSetup,
        info: dd.DistInfo,
        class_w: torch.Tensor,
        init: dict[str, np.ndarray] | None = None,
        fresh: set[str] | None = None,
    ):
        """``init``: tensors to start from (those it lacks learn faster); ``fresh``: when resuming,
        the parameters that learn faster (the checkpoint's optimiser groups)."""
        self.setup, self.info = setup, info
        self.cfg, self.hyper = setup.cfg, setup.hyper
        torch.manual_seed(setup.seed)
        self.model = build_torch_model(self.cfg)
        fresh = set(fresh or ())
        if init is not None:
            fresh = copy_matching(self.model, _same_shapes(self.model, init))
        frozen = freeze_prefix(self.model, setup.freeze_blocks)
        fresh -= frozen
        self.model.to(info.device)
        self.fresh = fresh
        self.opt = make_optimizer(self.model, self.hyper, fresh, NEW_LR_MULT)
        self.class_w = class_w.float()
        self.loss = TaskLoss(self.model, self.hyper, self.class_w.to(info.device))
        self.ddp: nn.Module = self.loss
        if info.distributed:
            from torch.nn.parallel import DistributedDataParallel

            # MoE: experts no token chose this step get no gradient on this rank.
            self.ddp = DistributedDataParallel(
                self.loss,
                device_ids=[info.device.index] if info.device.type == "cuda" else None,
                find_unused_parameters=True,
            )
        self.ranges = fixed_point_ranges(self.model)
        self.step_count = 0

    def lr_at(self, step: int) -> float:
        """Linear warmup, then cosine from ``lr`` to ``min_lr_frac * lr`` at ``steps``."""
        return scheduled_lr(self.hyper, step, step / max(self.setup.steps, 1))

    def my_shards(self) -> range:
        """Indices of the global batch's shards this process runs."""
        a = self.setup.accum
        return range(self.info.rank * a, (self.info.rank + 1) * a)

    def step(
        self, shards: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray, int]]
    ) -> dict[str, float]:
        """One optimiser step over this process's shards: (rgb, labels, depth, augment seed)."""
        self.model.train()
        lr = self.lr_at(self.step_count)
        for g in self.opt.param_groups:
            g["lr"] = lr * g.get("lr_mult", 1.0)
        self.opt.zero_grad(set_to_none=True)
        dev = self.info.device
        sums: dict[str, float] = {}
        for j, (rgb, lab, dep, seed) in enumerate(shards):
            gen = torch.Generator().manual_seed(seed)
            x, labels, depth = augment(
                images_to_tensor(rgb),
                torch.from_numpy(lab.astype(np.int64)),
                torch.from_numpy(dep.astype(np.float32)),
                gen,
            )
            last = j == len(shards) - 1
            sync = (
                contextlib.nullcontext()
                if last or not self.info.distributed
                else self.ddp.no_sync()
            )
            with (
                sync,
                torch.autocast(
                    device_type=dev.type, dtype=torch.bfloat16, enabled=self.setup.bf16
                ),
            ):
                total, parts = self.ddp(x.to(dev), labels.to(dev), depth.to(dev))
                (total / len(shards)).backward()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v) / len(shards)
        apply_update(self.model, self.opt, self.hyper, self.ranges)
        self.step_count += 1
        return {**{k: dd.mean_over_ranks(v, self.info) for k, v in sums.items()}, "lr": lr}

    # ----- checkpoints -----
    def identity(self) -> dict[str, Any]:
        return {"config": self.cfg.replace(notes={}).to_json(), "scheme": self.setup.scheme.name}

    def state(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            **self.identity(),
            "step": self.step_count,
            "steps": self.setup.steps,
            "seed": self.setup.seed,
            "accum": self.setup.accum,
            "hyper": json.dumps(dataclasses.asdict(self.hyper)),
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "opt": self.opt.state_dict(),
            "class_w": self.class_w.cpu(),
            "fresh": sorted(self.fresh),
            **extra,
        }

    def restore(self, ck: dict[str, Any]) -> None:
        self.model.load_state_dict(ck["model"])
        self.opt.load_state_dict(ck["opt"])
        self.step_count = int(ck["step"])

    def export(self, notes: dict[str, Any]) -> ModelWeights:
        return to_model_weights(self.model, self.cfg.replace(notes=notes))


#: Learning-rate multiplier of the parameters ``--init`` does not provide (a new head).
NEW_LR_MULT = 10.0


def freeze_prefix(model: EdgeMoEViT, blocks: int) -> set[str]:
    """Stop training the patch embedding, the class token, the position embedding and the first
    ``blocks`` blocks; returns their names. Why: fine-tuning a trained model's later blocks and
    heads costs a fraction of a full step (no backward through the prefix), which is what a CPU
    budget allows, and the early blocks' low-level features transfer best."""
    if not 0 <= blocks <= model.cfg.depth:
        raise ValueError(f"--freeze-blocks must lie in 0..{model.cfg.depth}, got {blocks}")
    if blocks == 0:
        return set()
    prefix = ("patch_embed.", "cls_token", "pos_embed") + tuple(
        f"blocks.{i}." for i in range(blocks)
    )
    frozen = set()
    for name, p in model.named_parameters():
        if name.startswith(prefix):
            p.requires_grad_(False)
            frozen.add(name)
    return frozen


def _same_shapes(model: EdgeMoEViT, tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``--init`` tensors the model can take; another shape (a head resized for new classes)
    stays fresh."""
    params = dict(model.named_parameters())
    keep = {
        k: v
        for k, v in tensors.items()
        if k in params and tuple(params[k].shape) == tuple(v.shape)
    }
    skipped = sorted(k for k in tensors if k in params and k not in keep)
    if skipped:
        log.info("--init: %d tensors of another shape start fresh: %s", len(skipped), skipped)
    return keep


# ----- model and data set-up -----
def model_config(
    args: argparse.Namespace, scheme: ClassScheme, init: ModelWeights | None
) -> ModelConfig:
    """The model to train: ``--init``'s, else ``--model``'s, with the scheme's classes/palette."""
    cfg = (
        init.config.replace(notes={})
        if init is not None
        else (tiny_config() if args.model == "tiny" else ModelConfig())
    )
    changes: dict[str, Any] = {
        "class_names": scheme.class_names,
        "palette": tuple(int(c) for c in scheme.palette.ravel()),
    }
    if args.head:
        changes["head"] = args.head
    if args.resize:
        changes["resize_mode"] = args.resize
    return cfg.replace(**changes)


def build_mixture(
    specs: Sequence[DataSpec],
    cfg: ModelConfig,
    scheme: ClassScheme,
    args: argparse.Namespace,
    info: dd.DistInfo,
) -> Mixture:
    """The data mixture; rank 0 renders missing synth shards while the others wait."""

    def build(render: bool) -> Mixture:
        sources = [
            open_source(
                s,
                cfg,
                scheme,
                cache_root=args.cache,
                synth_frames=args.synth_frames,
                split=args.split,
                render=render,
                randomise=args.randomise,
                randomise_share=args.randomise_share,
            )
            for s in specs
        ]
        return Mixture(sources, [s.weight for s in specs])

    mixture = build(True) if info.is_main else None
    dd.barrier(info)
    return mixture if mixture is not None else build(False)


def estimate_class_weights(
    mixture: Mixture, cfg: ModelConfig, hyper: Hyper, seed: int
) -> torch.Tensor:
    """Soft inverse-frequency class weights from a deterministic draw of frames (every rank's
    the same)."""
    picks = mixture.picks(seed, 0, CLASS_WEIGHT_FRAMES, stream=STREAM_CLASS_WEIGHTS)
    _, labels, _ = mixture.stack(picks)
    counts = np.bincount(labels.ravel(), minlength=256)[: cfg.num_classes].astype(np.float64)
    if counts.sum() == 0:
        return torch.ones(cfg.num_classes)
    return class_weights(counts / counts.sum(), hyper.class_weight_power)


def global_batch(
    mixture: Mixture, trainer: MixTrainer, micro: int, photometric: float = 0.0
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, int]]:
    """This process's shards of the current step's global batch; ``photometric`` > 0: each image
    through the sensor augmentation (``augment.photometric``, seeded by its shard: labels and
    depth unchanged), on every source."""
    s = trainer.setup
    shards_total = trainer.info.world * s.accum
    picks = mixture.picks(s.seed, trainer.step_count, shards_total * micro)
    out = []
    for shard in trainer.my_shards():
        rgb, lab, dep = mixture.stack(picks[shard * micro : (shard + 1) * micro])
        seed = shard_seed(s.seed, trainer.step_count, shard)
        if photometric > 0:
            rng = np.random.default_rng([seed, PHOTOMETRIC_STREAM])
            rgb = np.stack([photometric_augment(im, rng, strength=photometric) for im in rgb])
        out.append((rgb, lab, dep, seed))
    return out


# ----- export and the fixed-point report -----
def accuracy_report(weights: ModelWeights, images: np.ndarray, out_dir: Path) -> dict[str, Any]:
    """Fixed point vs float on ``images``: weight saturation (values the accelerator's formats
    clip), routing agreement, segmentation pixel agreement and depth error; writes
    ``accuracy.md``/``accuracy.json`` and returns the summary."""
    from ..accel.interface import pack_weights
    from ..fixedpoint.accuracy import compare, to_markdown

    packed = pack_weights(weights)
    saturated = dict(sorted(packed.saturated.items(), key=lambda kv: -kv[1]))
    reports = compare(weights, images)
    summary = {
        "images": int(images.shape[0]),
        "saturated_values": int(sum(saturated.values())),
        "saturated_tensors": saturated,
        "tasks": [r.to_dict() for r in reports],
    }
    where = " in " + ", ".join(f"{k} ({v})" for k, v in saturated.items()) if saturated else ""
    md = (
        f"# Fixed point vs float: {out_dir.name}, {images.shape[0]} training frames\n\n"
        f"Weights saturated by the accelerator's formats: {summary['saturated_values']} values"
        f"{where}\n\n" + to_markdown(reports)
    )
    (out_dir / "accuracy.md").write_text(md)
    (out_dir / "accuracy.json").write_text(json.dumps(summary, indent=2))
    return summary


def _accuracy_line(summary: dict[str, Any]) -> str:
    parts = [f"saturated weights {summary['saturated_values']}"]
    for t in summary["tasks"]:
        routing = float(np.mean(t["routing_set_agreement"])) if t["routing_set_agreement"] else 1.0
        head = (
            f"pixel agreement {t['seg_pixel_agreement']:.4f}"
            if t["seg_pixel_agreement"] is not None
            else f"depth abs rel {t['depth_abs_rel']:.2e}"
        )
        parts.append(f"{t['task']}: routing {routing:.4f}, {head}")
    return "; ".join(parts)


# ----- command line -----
def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="edgemoe-train",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="run directory (checkpoint, model, reports)",
    )
    ap.add_argument(
        "--data",
        action="append",
        metavar="KIND[:PATH][:WEIGHT]",
        help="a training source, repeatable: synth, cityscapes:ROOT, kitti:ROOT, manifest:FILE, "
        "each "
        "with an optional :WEIGHT (share of every batch, default 1). Default: synth",
    )
    ap.add_argument(
        "--classes",
        default="categories",
        choices=sorted(SCHEMES),
        help="class scheme: the 7 categories or the 19 Cityscapes train ids (head sized to match)",
    )
    ap.add_argument(
        "--split", default="train", help="split of the cityscapes/kitti folders (default train)"
    )
    ap.add_argument(
        "--steps",
        type=int,
        required=True,
        help="optimiser steps of the whole run (the schedule's length)",
    )
    ap.add_argument(
        "--batch",
        type=int,
        default=Hyper.batch,
        help="global batch: frames per step over all processes",
    )
    ap.add_argument(
        "--accum",
        type=int,
        default=1,
        help="gradient accumulation: shards per process and step (batch = world x accum x shard)",
    )
    ap.add_argument("--lr", type=float, default=Hyper.lr)
    ap.add_argument("--warmup", type=int, default=Hyper.warmup_steps, help="warmup steps")
    ap.add_argument(
        "--lovasz", type=float, default=Hyper.lovasz_weight, help="Lovász-softmax weight (0 = off)"
    )
    ap.add_argument(
        "--device", default="auto", choices=dd.DEVICES, help="auto: CUDA when available"
    )
    ap.add_argument(
        "--precision",
        default="auto",
        choices=PRECISIONS,
        help="auto: bf16 autocast on CUDA, float32 on CPU; bf16 or fp32 to force either",
    )
    ap.add_argument(
        "--model", default="spec", choices=MODELS, help="model size for a new run (tiny: tests)"
    )
    ap.add_argument(
        "--head", default=None, choices=HEAD_TYPES, help="task head type (default: the model's)"
    )
    ap.add_argument(
        "--resize",
        default=None,
        choices=RESIZE_MODES,
        help="how frames are fitted to the model input, stored with the model "
        "(default: the model's)",
    )
    ap.add_argument(
        "--init",
        type=Path,
        default=None,
        metavar="FILE",
        help="start from these weights (tensors of matching name and shape; a resized head "
        "starts fresh)",
    )
    ap.add_argument("--resume", action="store_true", help=f"continue from OUT/{CHECKPOINT_NAME}")
    ap.add_argument(
        "--stop-after",
        type=int,
        default=0,
        metavar="STEPS",
        help="end this invocation after STEPS steps (checkpointed; --resume continues): "
        "time-sliced "
        "or preemptible jobs",
    )
    ap.add_argument("--checkpoint-every", type=int, default=500, metavar="STEPS")
    ap.add_argument(
        "--export",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"weights file (default OUT/{EXPORT_NAME})",
    )
    ap.add_argument(
        "--accuracy-images",
        type=int,
        default=2,
        help="training frames of the fixed-point accuracy report after export (0 = skip)",
    )
    ap.add_argument(
        "--val",
        default=None,
        metavar="KIND:PATH",
        help="after export, score the exported model on this dataset with edgemoe-eval's loop "
        "(cityscapes:ROOT, kitti:ROOT or manifest:FILE); figures go to run.json",
    )
    ap.add_argument(
        "--val-split", default="val", help="split of a --val folder layout (default val)"
    )
    ap.add_argument(
        "--val-frames", type=int, default=200, help="frames of --val scored (default 200)"
    )
    ap.add_argument(
        "--cache", type=Path, default=Path("data_cache"), help="rendered-frame cache root (synth)"
    )
    ap.add_argument(
        "--synth-frames", type=int, default=1024, help="rendered frames in the synth pool"
    )
    ap.add_argument(
        "--randomise",
        default=None,
        choices=[k for k in PROFILES if k != "off"],
        help="domain-randomisation profile of a share of the synth frames (scenes/randomise.py; "
        "docs/domain_randomisation.md); their depth targets are the canonical camera's",
    )
    ap.add_argument(
        "--randomise-share",
        type=float,
        default=0.5,
        help="fraction of the synth pool that is randomised (default 0.5; the rest are the "
        "default scenes)",
    )
    ap.add_argument(
        "--photometric",
        type=float,
        default=0.0,
        help="strength of the sensor augmentation of every training image (augment.photometric: "
        "exposure, white balance, gamma, noise, blur, JPEG); 0 = off",
    )
    ap.add_argument(
        "--freeze-blocks",
        type=int,
        default=0,
        metavar="N",
        help="keep the patch embedding and the first N blocks as initialised (fine-tune the "
        "rest; a step then skips their backward)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch CPU threads per process (0 = torch's default)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = ap.parse_args(argv)
    if args.steps < 1 or args.batch < 1 or args.accum < 1:
        ap.error("--steps, --batch and --accum must be >= 1")
    if not 0.0 <= args.randomise_share <= 1.0:
        ap.error("--randomise-share must lie in [0, 1]")
    if args.photometric < 0 or args.freeze_blocks < 0:
        ap.error("--photometric and --freeze-blocks must be >= 0")
    return args


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.info("tensorboard not installed: no scalars (pip install -r requirements-train.txt)")
        return None
    return SummaryWriter(str(out / "tensorboard"))


def _progress(args: argparse.Namespace, info: dd.DistInfo, start: int, total: int) -> Any:
    if not info.is_main or args.no_progress:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, initial=start, unit="step", file=sys.stderr, disable=None, dynamic_ncols=True
    )


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Train per ``args`` in this process (one rank of a torchrun job, or alone)."""
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    info = dd.setup(args.device)
    try:
        return _run(args, command, info)
    finally:
        dd.teardown(info)


def _run(args: argparse.Namespace, command: str, info: dd.DistInfo) -> dict[str, Any]:
    specs = [parse_data_spec(t) for t in (args.data or ["synth"])]
    scheme = get_scheme(args.classes)
    shards_total = info.world * args.accum
    if args.batch % shards_total:
        raise ValueError(
            f"--batch {args.batch} must be a multiple of world size x --accum = {shards_total}"
        )
    micro = args.batch // shards_total
    ckpt_path = args.out / CHECKPOINT_NAME
    resuming = args.resume and ckpt_path.exists()
    # A resumed run still takes its model config from --init (the checkpoint holds the tensors):
    # without it, a run started from a file whose config is not the default could not resume.
    init_file = load_weights(args.init) if args.init is not None else None
    init = None if resuming else init_file
    cfg = model_config(args, scheme, init_file)
    hyper = Hyper(
        batch=args.batch, lr=args.lr, warmup_steps=args.warmup, lovasz_weight=args.lovasz
    )
    bf16 = args.precision == "bf16" or (args.precision == "auto" and info.device.type == "cuda")
    setup = RunSetup(
        cfg, scheme, hyper, args.steps, args.accum, args.seed, bf16, args.freeze_blocks
    )
    if info.is_main:
        args.out.mkdir(parents=True, exist_ok=True)
    mixture = build_mixture(specs, cfg, scheme, args, info)

    ck = None
    if args.resume:
        if not ckpt_path.exists():
            raise ValueError(f"--resume: no checkpoint at {ckpt_path}")
        ck = load_checkpoint(
            ckpt_path, {"config": cfg.replace(notes={}).to_json(), "scheme": scheme.name}
        )
        class_w = ck["class_w"]
    else:
        class_w = estimate_class_weights(mixture, cfg, hyper, args.seed)
    trainer = MixTrainer(
        setup,
        info,
        class_w,
        init.tensors if init is not None else None,
        fresh=set(ck["fresh"]) if ck is not None else None,
    )
    if ck is not None:
        trainer.restore(ck)
        log.info("resumed %s at step %d of %d", ckpt_path, trainer.step_count, args.steps)
    if info.is_main:
        log.info(
            "training %s (%s head, %d classes: %s) on %s; %d process(es) on %s (%s), "
            "global batch %d = "
            "%d x %d x %d",
            "tiny" if args.model == "tiny" and init_file is None else "model",
            cfg.head,
            cfg.num_classes,
            scheme.name,
            ", ".join(map(str, specs)),
            info.world,
            info.device,
            "bf16 autocast" if bf16 else "float32",
            args.batch,
            info.world,
            args.accum,
            micro,
        )
    tb = _tensorboard(args.out) if info.is_main else None
    bar = _progress(args, info, trainer.step_count, args.steps)
    t0, start_step, last = time.time(), trainer.step_count, {}

    def save() -> None:
        if info.is_main:
            save_checkpoint(
                ckpt_path, trainer.state({"data": [str(s) for s in specs], "world": info.world})
            )

    try:
        while trainer.step_count < args.steps and not (
            args.stop_after and trainer.step_count - start_step >= args.stop_after
        ):
            last = trainer.step(global_batch(mixture, trainer, micro, args.photometric))
            if info.is_main:
                if tb is not None:
                    for k, v in last.items():
                        tb.add_scalar(f"train/{k}", v, trainer.step_count)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(
                        {k: f"{last[k]:.3f}" for k in ("seg", "depth", "aux") if k in last}
                    )
                elif trainer.step_count % 50 == 0 or trainer.step_count == args.steps:
                    log.info(
                        "step %d/%d %s",
                        trainer.step_count,
                        args.steps,
                        " ".join(f"{k} {v:.4g}" for k, v in last.items()),
                    )
            if trainer.step_count % args.checkpoint_every == 0:
                save()
    finally:
        if bar is not None:
            bar.close()
        if tb is not None:
            tb.close()
    save()
    elapsed = time.time() - t0
    result: dict[str, Any] = {
        "steps": trainer.step_count,
        "loss": last,
        "world": info.world,
        "images_per_s": (trainer.step_count - start_step) * args.batch / max(elapsed, 1e-9),
    }
    if info.is_main:
        result.update(_export(args, trainer, mixture, specs, command, info))
        (args.out / "run.json").write_text(json.dumps(result, indent=2, default=str))
    dd.barrier(info)
    return result


def _export(
    args: argparse.Namespace,
    trainer: MixTrainer,
    mixture: Mixture,
    specs: Sequence[DataSpec],
    command: str,
    info: dd.DistInfo,
) -> dict[str, Any]:
    notes = {
        "trained_by": "edgemoe-train",
        "command": command,
        "steps": trainer.step_count,
        "global_batch": args.batch,
        "processes": info.world,
        "classes": trainer.setup.scheme.name,
        "data": [str(s) for s in specs],
        "synth_randomise": (
            f"{args.randomise} ({args.randomise_share:g} of the frames)"
            if args.randomise
            else "off"
        ),
        "photometric": args.photometric,
        "frozen_blocks": args.freeze_blocks,
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    weights = trainer.export(notes)
    path = args.export or args.out / EXPORT_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    save_weights(weights, path, dtype="float16")
    log.info("exported %s (%.1f MB)", path, path.stat().st_size / 1e6)
    out: dict[str, Any] = {"export": str(path)}
    if args.accuracy_images > 0:
        exported = load_weights(
            path
        )  # the file the engine and the accelerator will load (float16)
        images, _, _ = mixture.stack(
            mixture.picks(args.seed, 0, args.accuracy_images, stream=STREAM_REPORT)
        )
        summary = accuracy_report(exported, images, args.out)
        log.info(
            "fixed point vs float (%s): %s", args.out / "accuracy.md", _accuracy_line(summary)
        )
        out["accuracy"] = {
            "saturated_values": summary["saturated_values"],
            "line": _accuracy_line(summary),
        }
    if args.val:
        out["val"] = validate(path, args.val, args.val_split, args.val_frames)
    return out


def validate(weights_path: Path, spec: str, split: str, frames: int) -> dict[str, Any]:
    """The exported file through the engine on ``spec`` (edgemoe-eval's loop, each frame's K)."""
    from ..datasets import open_dataset, scheme_for_classes
    from ..engine import Engine
    from ..evaluation.run import evaluate

    weights = load_weights(weights_path)
    dataset = open_dataset(
        spec,
        None if spec.startswith("manifest:") else split,
        scheme_for_classes(weights.config.class_names),
    )
    with Engine(weights, "cpu") as engine:
        summary = evaluate(engine, dataset, limit=frames)
    val = {
        "data": spec,
        "frames": summary["frames"],
        "miou": summary["semseg"]["miou"],
        "pixel_acc": summary["semseg"]["pixel_acc"],
        "delta1": summary["depth"]["delta1"],
        "absrel": summary["depth"]["absrel"],
    }
    log.info(
        "validation on %s (%d frames): %s",
        spec,
        val["frames"],
        ", ".join(f"{k} {v:.4f}" for k, v in val.items() if isinstance(v, float)),
    )
    return val


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point (``edgemoe-train``); under torchrun:
    ``torchrun ... -m edgemoe_ros.training.edgemoe_train``."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stdout
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    try:
        run(args, "edgemoe-train " + shlex.join(argv))
    except (
        ForeignCheckpointError,
        ValueError,
        OSError,
    ) as exc:  # DatasetError, WeightsError, ConfigError too
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
