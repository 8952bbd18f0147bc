# SPDX-License-Identifier: Apache-2.0
"""Training data: a disk cache of rendered scenes, refreshed with new seeds while training runs.

Rendering (~0.1 s a frame) is cheap next to a training step but not free on a 2-core machine, so
frames are rendered into shards once, kept on disk under ``data_cache/`` and reused; a low-priority
renderer process keeps adding shards with fresh seeds (and retiring the oldest) so the model sees
new scenes over a long run instead of memorising a fixed set.

Seeds are partitioned: everything below ``TRAIN_SEED_START`` is held out for validation and
evaluation, so no evaluated scene was ever trained on.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

from ..scenes import DEFAULT_HFOV_DEG, intrinsics, render_frame

log = logging.getLogger(__name__)

#: Seeds below this are never trained on (held out for validation and bench/eval_model.py).
TRAIN_SEED_START = 1_000_000
#: Domain-randomised training frames (``edgemoe-train --randomise``) start here, so their scene
#: layouts are others than the plain cache's (seeds from ``TRAIN_SEED_START``).
RANDOMISED_SEED_START = 50_000_000
#: Quick validation during training uses these held-out seeds.
VAL_SEED_START = 900_000
#: bench/eval_model.py's held-out evaluation set starts here (disjoint from the validation seeds).
EVAL_SEED_START = 0
#: Largest finite depth stored in the float16 cache (metres; far beyond any model's max_depth).
FLOAT16_DEPTH_CAP = 60000.0
#: Frames per cache shard file.
SHARD_FRAMES = 32


def render_set(seeds: range | list[int], width: int, height: int, randomise: str | None = None,
               canonical_hfov_deg: float = DEFAULT_HFOV_DEG) -> dict[str, np.ndarray]:
    """Render frames into stacked arrays: rgb (N,H,W,3) u8, labels (N,H,W) u8, depth (N,H,W) f32
    (+inf = sky).

    ``randomise``: a domain-randomisation profile (``scenes.randomise.PROFILES``). Its frames have
    random lenses, so their depth is returned as the depth target of the canonical camera
    (``canonical_depth``); ignored overlays have label ``IGNORE_INDEX`` and NaN depth."""
    frames = [render_frame(s, width, height, randomise=randomise) for s in seeds]
    depth = [f.depth if randomise is None
             else canonical_depth(f.depth, f.K, width, height, canonical_hfov_deg)
             for f in frames]
    return {
        "rgb": np.stack([f.rgb for f in frames]),
        "labels": np.stack([f.labels for f in frames]),
        "depth": np.stack(depth),
    }


def canonical_depth(depth: np.ndarray, K: np.ndarray, width: int, height: int,
                    canonical_hfov_deg: float = DEFAULT_HFOV_DEG) -> np.ndarray:
    """Metric depth of an image the model sees unscaled (``width`` x ``height``, intrinsics ``K``)
    as the canonical camera's depth target: ``Z_c = Z f_c / f_eff`` (model/canonical_camera.py,
    with ``f_eff = fy``), the inverse of what the engine applies to the prediction."""
    f_c = intrinsics(width, height, canonical_hfov_deg)[1, 1]
    return (depth * np.float32(f_c / float(K[1, 1]))).astype(np.float32)


def shard_path(cache_dir: Path, first_seed: int) -> Path:
    return cache_dir / f"shard_{first_seed:09d}.npz"


def write_shard(cache_dir: Path, first_seed: int, width: int, height: int,
                randomise: str | None = None) -> Path:
    """Render ``SHARD_FRAMES`` frames from ``first_seed`` and store them (depth as float16; sky
    stays inf).

    ``randomise``: a domain-randomisation profile; its frames' depth is stored as the canonical
    camera's target (``render_set``), so a randomised cache needs no per-frame K to train on."""
    data = render_set(range(first_seed, first_seed + SHARD_FRAMES), width, height,
                      randomise=randomise)
    # float16 tops out at 65504 m: clamp finite distances (the horizon) so only sky stays +inf
    depth = data["depth"]
    data["depth"] = np.where(np.isfinite(depth), np.minimum(depth, FLOAT16_DEPTH_CAP),
                             depth).astype(np.float16)
    path = shard_path(cache_dir, first_seed)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **data)
    os.replace(tmp, path)  # readers never see a half-written shard
    return path


def list_shards(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.glob("shard_*.npz") if not p.name.endswith(".tmp.npz"))


def ensure_shards(cache_dir: Path, count: int, width: int, height: int,
                  first_seed: int = TRAIN_SEED_START, randomise: str | None = None) -> None:
    """Make sure at least ``count`` shards exist (rendered synchronously; used before training
    starts).

    ``randomise``: profile of the frames (``write_shard``); keep one cache folder per profile."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    have = list_shards(cache_dir)
    seed = next_seed(cache_dir, first_seed)
    for i in range(len(have), count):
        t0 = time.time()
        write_shard(cache_dir, seed, width, height, randomise)
        log.info("rendered cache shard %d/%d (seeds %d..%d) in %.1f s", i + 1, count, seed,
                 seed + SHARD_FRAMES - 1, time.time() - t0)
        seed += SHARD_FRAMES


def next_seed(cache_dir: Path, first_seed: int = TRAIN_SEED_START) -> int:
    """First seed not yet used by any shard in the cache (shards are named by their first seed)."""
    seeds = [int(p.stem.split("_")[1]) for p in list_shards(cache_dir)]
    return max([first_seed - SHARD_FRAMES, *seeds]) + SHARD_FRAMES


def refresh_worker(cache_dir: str, width: int, height: int, max_shards: int) -> None:
    """Render new shards forever (run in a low-priority child process); beyond ``max_shards``
    retire the oldest seeds."""
    root = Path(cache_dir)
    while True:
        seed = next_seed(root)
        write_shard(root, seed, width, height)
        shards = list_shards(root)
        for old in shards[: max(0, len(shards) - max_shards)]:
            old.unlink(missing_ok=True)


class FramePool:
    """All cached frames in memory, reloaded from disk on demand to pick up refreshed shards."""

    def __init__(self, cache_dir: Path):
        self.cache_dir = cache_dir
        self.rgb = np.zeros((0,), np.uint8)
        self.labels = np.zeros((0,), np.uint8)
        self.depth = np.zeros((0,), np.float32)
        self.loaded: list[str] = []

    def __len__(self) -> int:
        return int(self.rgb.shape[0])

    def reload(self) -> bool:
        """Load the current shard set if it changed; returns True when it did."""
        names = [p.name for p in list_shards(self.cache_dir)]
        if names == self.loaded:
            return False
        parts: dict[str, list[np.ndarray]] = {"rgb": [], "labels": [], "depth": []}
        loaded = []
        for name in names:
            try:
                with np.load(self.cache_dir / name) as z:
                    for key in parts:
                        parts[key].append(z[key])
                loaded.append(name)
            # retired or still being replaced: skip it
            except (OSError, ValueError, KeyError) as exc:
                log.warning("skipping cache shard %s: %s", name, exc)
                for key in parts:
                    del parts[key][len(loaded):]
        if not loaded:
            raise RuntimeError(f"no readable training shards in {self.cache_dir}")
        self.rgb = np.concatenate(parts["rgb"])
        self.labels = np.concatenate(parts["labels"])
        self.depth = np.concatenate(parts["depth"]).astype(np.float32)
        self.loaded = loaded
        return True

    def sample(self, rng: np.random.Generator,
               batch: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        idx = rng.integers(0, len(self), batch)
        return self.rgb[idx], self.labels[idx], self.depth[idx]


def class_frequencies(labels: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(labels.ravel(), minlength=256)[:num_classes].astype(np.float64)
    return counts / max(counts.sum(), 1.0)
