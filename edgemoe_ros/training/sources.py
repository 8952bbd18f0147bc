# SPDX-License-Identifier: Apache-2.0
"""Training data for ``edgemoe-train``: a weighted mixture of rendered scenes and real datasets,
every frame brought to what the model sees and what it must predict.

``--data`` specs name the sources: ``synth[:W]``, ``cityscapes:ROOT[:W]``, ``kitti:ROOT[:W]``,
``manifest:FILE[:W]``; ``W`` (default 1) is the source's share of every batch. The folder readers
are ``edgemoe_ros.datasets`` (one place for the layouts and the label maps).

Each frame becomes a ``Sample`` at the model resolution, exactly as the engine would fit it
(``postprocess.fit_to_model``, the model's resize mode): the image, class ids of the training
scheme (nearest), and **canonical-camera depth**: the frame's metric depth divided by the depth
scale of its K under that fit (model/canonical_camera.py), so frames from every lens teach the
model one camera and the engine converts back with the user's K. Depth is resampled by nearest
neighbour where that hits a measurement, else by the mean of the valid measurements under the
model pixel (sparse LiDAR keeps its points; dense maps keep sharp edges).

Batches are deterministic functions of ``(seed, step)``: which source and which frame fills each
slot, and the augmentation of each shard (one rank's or one accumulation step's slice). So a
resumed run continues the same sequence, and N processes on slices of a global batch see exactly
what one process accumulating the same slices sees (the DDP equivalence the tests check).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..datasets import KINDS, ClassScheme, FrameDataset, LabelledFrame, open_dataset
from ..datasets.labels import categories_to_label_ids
from ..model.canonical_camera import depth_scale
from ..model.config import IGNORE_INDEX, ModelConfig
from ..postprocess import fit_to_model, resize_nearest
from ..scenes import DEFAULT_HFOV_DEG, intrinsics
from . import data

log = logging.getLogger(__name__)

#: Source kinds of ``--data``: our renderer, plus the dataset readers' kinds.
SOURCE_KINDS = ("synth", *KINDS)
#: Frames kept in memory per real-data source once fitted (~0.2 MB each at 256x128).
DEFAULT_CACHE_FRAMES = 4096


@dataclass(frozen=True)
class DataSpec:
    """One ``--data`` argument: kind, location (None for synth) and weight in the mixture."""

    kind: str
    location: str | None
    weight: float

    def __str__(self) -> str:
        where = f":{self.location}" if self.location else ""
        return f"{self.kind}{where}:{self.weight:g}"


def parse_data_spec(text: str) -> DataSpec:
    """``synth``, ``synth:0.5``, ``cityscapes:/data/cs``, ``cityscapes:/data/cs:0.5``, ...:
    the ``DataSpec``.

    A trailing ``:NUMBER`` is the weight (so a path may itself contain colons).
    """
    kind, _, rest = text.partition(":")
    if kind not in SOURCE_KINDS:
        raise ValueError(f"--data {text!r}: kind must be one of {', '.join(SOURCE_KINDS)}")
    location, weight = rest, "1"
    if kind == "synth":
        location, weight = "", rest or "1"
    else:
        head, sep, tail = rest.rpartition(":")
        if sep and _is_number(tail):
            location, weight = head, tail
    if not _is_number(weight) or not float(weight) > 0 or not np.isfinite(float(weight)):
        raise ValueError(f"--data {text!r}: the weight must be a positive number, got {weight!r}")
    if kind != "synth" and not location:
        raise ValueError(f"--data {text!r}: {kind} needs a location ({kind}:PATH[:WEIGHT])")
    return DataSpec(kind, location or None, float(weight))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Sample:
    """One training frame at model resolution: rgb (H, W, 3) u8, labels (H, W) u8 (``IGNORE_INDEX``
    = unlabelled), depth (H, W) f32 canonical-camera metres (NaN = unknown, +inf = sky)."""

    rgb: np.ndarray
    labels: np.ndarray
    depth: np.ndarray


def resize_depth(depth: np.ndarray, width: int, height: int) -> np.ndarray:
    """Depth (NaN = unknown) to ``width x height``: nearest where it hits a measurement, else the
    mean of the valid measurements under the pixel (sparse LiDAR), else NaN."""
    near = resize_nearest(depth, width, height).astype(np.float32)
    valid = np.isfinite(depth) & (depth > 0)
    if valid.all():
        return near
    num = cv2.resize(
        np.where(valid, depth, 0.0).astype(np.float32),
        (width, height),
        interpolation=cv2.INTER_AREA,
    )
    den = cv2.resize(valid.astype(np.float32), (width, height), interpolation=cv2.INTER_AREA)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(den > 0, num / den, np.nan).astype(np.float32)
    return np.where(np.isfinite(near) & (near > 0), near, mean)


def fit_frame(frame: LabelledFrame, cfg: ModelConfig, resize_mode: str | None = None) -> Sample:
    """A dataset frame as the model sees it, with canonical-camera depth (module docstring)."""
    rgb, fit = fit_to_model(frame.image, cfg, resize_mode)
    roi = (slice(fit.roi_y, fit.roi_y + fit.roi_h), slice(fit.roi_x, fit.roi_x + fit.roi_w))
    if frame.semseg is not None:
        labels = resize_nearest(np.ascontiguousarray(frame.semseg[roi]), fit.model_w, fit.model_h)
    else:
        labels = np.full((fit.model_h, fit.model_w), IGNORE_INDEX, np.uint8)
    if frame.depth is not None:
        metric = resize_depth(np.ascontiguousarray(frame.depth[roi]), fit.model_w, fit.model_h)
        depth = metric / np.float32(depth_scale(frame.K, fit.scale_x, fit.scale_y, cfg))
    else:
        depth = np.full((fit.model_h, fit.model_w), np.nan, np.float32)
    return Sample(rgb, labels.astype(np.uint8), depth.astype(np.float32))


class Source:
    """Random access to fitted ``Sample``s of one kind of data."""

    name: str

    def __len__(self) -> int:
        raise NotImplementedError

    def sample(self, index: int) -> Sample:
        raise NotImplementedError


class DatasetSource(Source):
    """A real-data reader; frames fitted on first use and kept (LRU, ``cache_frames``)."""

    def __init__(
        self,
        dataset: FrameDataset,
        cfg: ModelConfig,
        name: str,
        resize_mode: str | None = None,
        cache_frames: int = DEFAULT_CACHE_FRAMES,
    ):
        if len(dataset) == 0:
            raise ValueError(f"{name}: the dataset has no frames")
        self.dataset, self.cfg, self.name, self.resize_mode = dataset, cfg, name, resize_mode
        self.cache_frames = cache_frames
        self._cache: OrderedDict[int, Sample] = OrderedDict()

    def __len__(self) -> int:
        return len(self.dataset)

    def sample(self, index: int) -> Sample:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        s = fit_frame(self.dataset[index], self.cfg, self.resize_mode)
        self._cache[index] = s
        if len(self._cache) > self.cache_frames:
            self._cache.popitem(last=False)
        return s


class SynthSource(Source):
    """Rendered scenes from the shard cache (``training/data.py``), rendered at the model size,
    labels mapped from the 7 categories to the training scheme.

    ``randomise``: a domain-randomisation profile (``scenes.randomise.PROFILES``) for a ``share``
    of the ``frames``; those come from their own cache folder (``synth_cache_dir``) and their depth
    is already the canonical camera's target (each frame's own random lens,
    ``data.render_set``), while the plain frames are the renderer's camera, converted here.
    Randomised frames have their own seeds (``data.RANDOMISED_SEED_START``): other scene layouts
    than the plain ones. Frames ``0..plain-1`` are plain and the rest randomised, so the
    mixture's uniform draw gives the share."""

    def __init__(
        self,
        cache_root: Path,
        cfg: ModelConfig,
        scheme: ClassScheme,
        frames: int,
        render: bool = True,
        randomise: str | None = None,
        share: float = 1.0,
    ):
        if randomise is not None and not 0.0 <= share <= 1.0:
            raise ValueError(f"the randomised share must lie in [0, 1], got {share}")
        randomised = 0 if randomise is None else round(frames * share)
        self.name = "synth" if not randomised else f"synth ({share:g} {randomise})"
        self.scheme = scheme
        parts = []
        k = intrinsics(cfg.img_w, cfg.img_h, DEFAULT_HFOV_DEG)
        plain_scale = np.float32(depth_scale(k, 1.0, 1.0, cfg))
        for count, profile, scale in ((frames - randomised, None, plain_scale),
                                      (randomised, randomise, np.float32(1.0))):
            if count > 0:
                rgb, labels, depth = self._pool(synth_cache_dir(cache_root, cfg, profile), cfg,
                                                count, render, profile)
                parts.append((rgb, labels, depth, scale))
        self.rgb = np.concatenate([p[0] for p in parts])
        self.labels = np.concatenate([p[1] for p in parts])
        self.depth = np.concatenate([p[2] for p in parts])
        #: Divisor of each frame's stored depth to the canonical camera's.
        self.scale = np.concatenate([np.full(len(p[0]), p[3], np.float32) for p in parts])
        #: Frames from index ``plain`` on are randomised.
        self.plain = int(len(parts[0][0])) if frames > randomised else 0

    def _pool(self, cache_dir: Path, cfg: ModelConfig, frames: int, render: bool,
              randomise: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        shards = -(-frames // data.SHARD_FRAMES)
        first = data.TRAIN_SEED_START if randomise is None else data.RANDOMISED_SEED_START
        if render:
            data.ensure_shards(cache_dir, shards, cfg.img_w, cfg.img_h, first, randomise)
        pool = data.FramePool(cache_dir)
        pool.reload()
        n = min(len(pool), frames)
        labels = self.scheme.from_label_ids(categories_to_label_ids(pool.labels[:n]))
        return pool.rgb[:n], labels, pool.depth[:n]

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def is_randomised(self, index: int) -> bool:
        """Whether frame ``index`` is a domain-randomised render."""
        return self.plain <= index < len(self)

    def sample(self, index: int) -> Sample:
        return Sample(self.rgb[index], self.labels[index], self.depth[index] / self.scale[index])


def synth_cache_dir(cache_root: Path, cfg: ModelConfig, randomise: str | None = None) -> Path:
    """Cache folder of rendered frames at the model size; one per randomisation profile."""
    suffix = f"_{randomise}" if randomise is not None else ""
    return cache_root / f"synth_{cfg.img_h}x{cfg.img_w}{suffix}"


def open_source(
    spec: DataSpec,
    cfg: ModelConfig,
    scheme: ClassScheme,
    *,
    cache_root: Path,
    synth_frames: int,
    split: str | None = None,
    render: bool = True,
    resize_mode: str | None = None,
    randomise: str | None = None,
    randomise_share: float = 1.0,
) -> Source:
    """The ``Source`` of one spec. ``render``: may render missing synth shards (rank 0 only);
    ``randomise``, ``randomise_share``: domain randomisation of the synth frames
    (``SynthSource``)."""
    if spec.kind == "synth":
        return SynthSource(
            cache_root, cfg, scheme, synth_frames, render, randomise, randomise_share
        )
    split = None if spec.kind == "manifest" else split
    return DatasetSource(
        open_dataset(f"{spec.kind}:{spec.location}", split, scheme), cfg, str(spec), resize_mode
    )


class Mixture:
    """Weighted sources; ``batch(seed, step, slots)`` is deterministic (module docstring)."""

    def __init__(self, sources: Sequence[Source], weights: Sequence[float]):
        if not sources or len(sources) != len(weights):
            raise ValueError("a mixture needs one weight per source and at least one source")
        self.sources = list(sources)
        w = np.asarray(weights, dtype=np.float64)
        self.p = w / w.sum()

    def picks(self, seed: int, step: int, n: int, stream: int = 0) -> list[tuple[int, int]]:
        """(source, frame) of each of the ``n`` slots of global batch ``step``; ``stream`` > 0
        draws
        frames for another purpose (class statistics, reports) independent of the batches."""
        rng = np.random.default_rng([seed, stream, step])
        which = rng.choice(len(self.sources), size=n, p=self.p)
        return [(int(s), int(rng.integers(0, len(self.sources[s])))) for s in which]

    def stack(self, picks: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rgb (B,H,W,3) u8, labels (B,H,W) u8, canonical depth (B,H,W) f32) of the picks."""
        samples = [self.sources[s].sample(i) for s, i in picks]
        return (
            np.stack([x.rgb for x in samples]),
            np.stack([x.labels for x in samples]),
            np.stack([x.depth for x in samples]),
        )


def shard_seed(seed: int, step: int, shard: int) -> int:
    """Seed of one shard's augmentation: the same whichever process runs the shard."""
    return int(np.random.SeedSequence([seed, step, shard]).generate_state(1, np.uint64)[0]) >> 1
