# SPDX-License-Identifier: Apache-2.0
"""Inference engine: one camera image in, class-id and metric-depth maps out. No ROS, no torch.

    engine = Engine(load_weights("model.safetensors"), backend="cpu")
    res = engine.infer(image_rgb_u8, tasks=("semseg", "depth"), camera_k=K)  # K: 3x3, optional
    res.semseg, res.depth                          # model resolution (img_h, img_w)
    res.semseg_at_input(), res.depth_at_input()    # back on the camera's pixel grid

The node, the CLIs, the bag tools and the demo all go through here, so fitting, heads, decoding,
timings and expert-usage statistics behave the same everywhere.

Depth is metric for the camera whose intrinsics ``camera_k`` describe the image passed in: the
head predicts depth for the model's canonical camera and the engine rescales it by the effective
focal length after the fit (model/canonical_camera.py). Without ``camera_k`` (or with ROS's
all-zero "uncalibrated" K) the depth is the canonical camera's, as if the image had been taken
with it, and the engine logs that once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .backends import BackboneResult, Backend, create_backend
from .backends.native import fastops
from .model.canonical_camera import camera_matrix, canonical_focal, depth_scale
from .model.config import IGNORE_INDEX, PIXEL_HEADS, RESIZE_MODES, ConfigError, ModelConfig
from .model.heads import decode_depth, decode_semseg, run_head
from .model.weights import ModelWeights
from .postprocess import FitInfo, fit_to_model, restore_to_input

log = logging.getLogger(__name__)

#: Keys of ``FrameResult.timings_ms``.
TIMING_KEYS = ("preprocess", "backbone", "heads", "total")
#: Head types with native kernels (the pixel heads' per-pixel work, every head's per-token MLP);
#: M3ViT's up-head stays numpy.
NATIVE_HEADS = ("light", *PIXEL_HEADS)


@dataclass
class FrameResult:
    """Outputs of one ``Engine.infer`` call. Maps are at model resolution; ``*_at_input`` restores."""

    semseg: np.ndarray | None
    depth: np.ndarray | None
    routing: dict[str, np.ndarray]
    timings_ms: dict[str, float]
    fit: FitInfo
    tasks: tuple[str, ...] = field(default=())
    #: Metric / canonical depth factor applied to ``depth`` (1.0 when no camera K was given).
    depth_scale: float = 1.0

    def semseg_at_input(self) -> np.ndarray | None:
        """(input_h, input_w) uint8 class ids; ``IGNORE_INDEX`` outside the crop. None if not run."""
        if self.semseg is None:
            return None
        return restore_to_input(self.semseg, self.fit, IGNORE_INDEX, "nearest")

    def depth_at_input(self) -> np.ndarray | None:
        """(input_h, input_w) float32 metres; NaN outside the crop. None if not run."""
        if self.depth is None:
            return None
        return restore_to_input(self.depth, self.fit, np.nan, "linear")


@dataclass
class BackboneBatch:
    """A batch between ``Engine.run_backbone`` and ``Engine.finish_batch``: the backbone's output
    and what the heads and decoding need, with the model and head kernels it started with."""

    weights: ModelWeights
    head_ops: fastops.PooledHeads | None
    tasks: tuple[str, ...]
    batch: np.ndarray  # (B, img_h, img_w, 3) uint8 model images (the guided heads read pixels)
    fits: list[FitInfo]
    scales: list[float]
    out: BackboneResult
    preprocess_ms: float
    backbone_ms: float


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """Accept (H, W, 3) RGB or grayscale (H, W) / (H, W, 1) uint8; replicate gray to RGB."""
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image must be a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got dtype {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W) grayscale, got shape {image.shape} "
                         "(convert RGBA/BGR before calling the engine)")
    return image


class Engine:
    """Image → fit → backbone backend → task heads → decoded maps, plus expert-usage counters.

    ``backend``: a ``Backend`` instance (the engine takes ownership and closes it) or a registry
    name. ``resize_mode``: "stretch" or "crop"; ``None`` uses the model config's choice.
    ``native_heads``: "auto" | "on" | "off", whether the guided and pyramid heads' per-pixel work runs
    in the native kernels (built with g++ on first use, like the cpu backend's; "auto" falls back
    to numpy with one warning); it runs on as many threads as the backend reports (``threads``).
    Thread safety: ``infer`` must not run concurrently with itself or ``reload``; the usage
    counters may be read from any thread (diagnostics timers do).
    """

    def __init__(self, weights: ModelWeights, backend: Backend | str = "cpu",
                 resize_mode: str | None = None, backend_options: dict[str, Any] | None = None,
                 native_heads: str = "auto") -> None:
        if resize_mode is not None and resize_mode not in RESIZE_MODES:
            raise ValueError(f"resize_mode {resize_mode!r} is not one of {RESIZE_MODES}")
        if native_heads not in fastops.MODES:
            raise ValueError(f"native_heads {native_heads!r} is not one of {fastops.MODES}")
        self._resize_mode = resize_mode
        self._native_heads = native_heads
        self._head_ops: fastops.PooledHeads | None = None
        self._head_pool: fastops.ThreadPool | None = None
        if isinstance(backend, str):
            self.backend: Backend = create_backend(backend, **(backend_options or {}))
        elif backend_options:
            raise ValueError("backend_options only apply when the backend is given by name")
        else:
            self.backend = backend
        self._lock = threading.Lock()
        self._warned_no_k = False
        self._weights: ModelWeights | None = None
        self._usage: dict[str, np.ndarray] = {}
        try:
            self.reload(weights)
        except Exception:
            self.backend.close()  # never leak a device or library handle on a failed start
            raise

    # ----- model -----
    @property
    def weights(self) -> ModelWeights:
        """The loaded model (heads run from it on the host)."""
        assert self._weights is not None
        return self._weights

    @property
    def config(self) -> ModelConfig:
        return self.weights.config

    @property
    def resize_mode(self) -> str:
        return self._resize_mode or self.config.resize_mode

    def reload(self, weights: ModelWeights) -> None:
        """Swap the model without re-creating the backend. Usage counters restart at zero.

        If the backend rejects the weights, the exception propagates and (for backends that
        prepare before committing, like cpu) the previous model stays loaded and usable.
        """
        weights.validate()
        ops = fastops.native_ops(self._native_heads) if weights.config.head in NATIVE_HEADS else None
        self.backend.load(weights)
        head_ops = None
        if ops is not None:
            if self.backend.threads > 1:
                if self._head_pool is None or self._head_pool.threads != self.backend.threads:
                    self._close_head_pool()
                    self._head_pool = ops.pool(self.backend.threads)
            else:
                self._close_head_pool()
            # One per load: it keeps this model's packed head weights.
            head_ops = fastops.PooledHeads(ops, self._head_pool)
        with self._lock:
            self._head_ops = head_ops
            self._weights = weights
            self._usage = self._zero_usage(weights.config)
        log.info("engine: loaded %s on backend %r", weights.source or "<weights>", self.backend.name)

    def close(self) -> None:
        """Release the backend and the heads' threads. Safe to call twice."""
        self.backend.close()
        with self._lock:
            self._head_ops = None
            self._close_head_pool()

    def _close_head_pool(self) -> None:
        if self._head_pool is not None:
            self._head_pool.close()
            self._head_pool = None

    # ----- expert usage -----
    @staticmethod
    def _zero_usage(cfg: ModelConfig) -> dict[str, np.ndarray]:
        return {t: np.zeros((len(cfg.moe_layers), cfg.num_experts), np.int64) for t in cfg.tasks}

    @property
    def expert_usage(self) -> dict[str, np.ndarray]:
        """{task: (num_moe_layers, num_experts) int64} tokens routed per expert since load/reset (copies)."""
        with self._lock:
            return {t: u.copy() for t, u in self._usage.items()}

    def reset_expert_usage(self) -> None:
        with self._lock:
            self._usage = self._zero_usage(self.config)

    # ----- inference -----
    def _check_tasks(self, tasks: Sequence[str] | str) -> tuple[str, ...]:
        if isinstance(tasks, str):
            tasks = (tasks,)
        tasks = tuple(dict.fromkeys(tasks))
        if not tasks:
            raise ConfigError(f"no task requested; known tasks: {', '.join(self.config.tasks)}")
        for t in tasks:
            self.config.task_id(t)  # ConfigError naming the unknown task
        return tasks

    def _warn_no_intrinsics(self, cfg: ModelConfig) -> None:
        if self._warned_no_k:
            return
        self._warned_no_k = True
        log.warning("engine: depth without camera intrinsics (no K, or an uncalibrated all-zero K): "
                    "metres are right only for a camera of %.0f deg horizontal field of view across "
                    "the fitted image (the model's canonical camera, f = %.1f model px); give the "
                    "camera's K for metric depth of other lenses", cfg.canonical_hfov_deg,
                    canonical_focal(cfg))

    def infer(self, image: np.ndarray, tasks: Sequence[str] | str = ("semseg", "depth"),
              camera_k: np.ndarray | Sequence[float] | None = None) -> FrameResult:
        """Run the requested tasks on one uint8 RGB (or grayscale) image of any size.

        ``camera_k``: 3x3 (or 9 values) intrinsics of ``image`` at its own resolution, for metric
        depth of that lens; None or all zeros: the canonical camera (see the module docstring).
        A degenerate K (NaN, focal <= 0, wrong size) raises ``IntrinsicsError`` before any work.
        """
        return self.infer_batch([image], tasks, [camera_k])[0]

    def infer_batch(self, images: Sequence[np.ndarray], tasks: Sequence[str] | str = ("semseg", "depth"),
                    camera_ks: Sequence[np.ndarray | Sequence[float] | None] | None = None
                    ) -> list[FrameResult]:
        """Run the same tasks on B images (of any sizes) in ONE backbone call; one result each.

        Why: the backend sees a (B, H, W, 3) batch, so every weight it reads (on the cpu backend
        each expert's, grouped over all images' tokens; on the accelerator the ``num_images``
        register) serves B images instead of one. The result of image i equals ``infer(images[i],
        tasks, camera_ks[i])`` up to float32 rounding of batch-size-dependent matmul blocking
        (test_engine_batch.py). ``camera_ks``: one K (or None) per image; None = no K for any.
        Timings are of the whole batch (every result carries the same numbers).

        The same as ``finish_batch(run_backbone(images, tasks, camera_ks))``.
        """
        return self.finish_batch(self.run_backbone(images, tasks, camera_ks))

    def run_backbone(self, images: Sequence[np.ndarray], tasks: Sequence[str] | str = ("semseg", "depth"),
                     camera_ks: Sequence[np.ndarray | Sequence[float] | None] | None = None
                     ) -> BackboneBatch:
        """First half of ``infer_batch``: check, fit and stack the images, run the backbone.

        Why split: a caller with a stream of batches (the multi-camera node) runs the heads of
        batch n (``finish_batch``, host code) on another thread while the backend runs the
        backbone of batch n+1, so the backbone's device or cores do not wait for the host. Both
        halves may run at the same time for DIFFERENT batches; the weights and head kernels a
        batch started with are the ones it finishes with.
        """
        t0 = time.perf_counter()
        weights, head_ops = self.weights, self._head_ops
        cfg = weights.config
        tasks = self._check_tasks(tasks)
        if not len(images):
            raise ValueError("infer_batch: no image given")
        ks = list(camera_ks) if camera_ks is not None else [None] * len(images)
        if len(ks) != len(images):
            raise ValueError(f"infer_batch: {len(images)} images but {len(ks)} camera_ks")
        matrices = [camera_matrix(k) for k in ks]  # every K checked before any work
        fitted = [fit_to_model(_as_rgb(image), cfg, self.resize_mode) for image in images]
        scales = [self._depth_scale(k, fit, cfg, tasks) for k, (_, fit) in zip(matrices, fitted, strict=True)]
        batch = np.stack([model_image for model_image, _ in fitted])
        t1 = time.perf_counter()
        out = self.backend.run(batch, tasks)
        t2 = time.perf_counter()
        return BackboneBatch(weights=weights, head_ops=head_ops, tasks=tasks, batch=batch,
                             fits=[fit for _, fit in fitted], scales=scales, out=out,
                             preprocess_ms=(t1 - t0) * 1e3, backbone_ms=(t2 - t1) * 1e3)

    def finish_batch(self, state: BackboneBatch) -> list[FrameResult]:
        """Second half of ``infer_batch``: task heads, decoding, depth scale, usage counters.

        ``timings_ms["total"]`` is preprocess + backbone + heads: the time the batch was worked
        on, without any wait between the two halves.
        """
        t2 = time.perf_counter()
        tasks, weights, out = state.tasks, state.weights, state.out
        cfg = weights.config
        semseg: np.ndarray | None = None
        depth: np.ndarray | None = None
        for task in tasks:
            pred = run_head(weights, cfg, task, out.features[task], state.batch, state.head_ops)
            if task == "semseg":
                semseg = decode_semseg(pred)
            else:
                depth = decode_depth(pred, cfg)
        t3 = time.perf_counter()
        self._count_usage(tasks, out.expert_counts)
        heads_ms = (t3 - t2) * 1e3
        timings = dict(zip(TIMING_KEYS, (state.preprocess_ms, state.backbone_ms, heads_ms,
                                         state.preprocess_ms + state.backbone_ms + heads_ms), strict=True))
        results = []
        for i, (fit, scale) in enumerate(zip(state.fits, state.scales, strict=True)):
            d = None
            if depth is not None:
                d = depth[i]
                if scale != 1.0:
                    d *= np.float32(scale)
            results.append(FrameResult(semseg=None if semseg is None else semseg[i], depth=d,
                                       routing={t: out.routing[t][i] for t in tasks}, timings_ms=dict(timings),
                                       fit=fit, tasks=tasks, depth_scale=scale))
        return results

    def _depth_scale(self, k: np.ndarray | None, fit: FitInfo, cfg: ModelConfig, tasks: tuple[str, ...]) -> float:
        """Metric / canonical depth factor of one image (1.0 without depth or without K)."""
        if "depth" not in tasks:
            return 1.0
        if k is None:
            self._warn_no_intrinsics(cfg)
            return 1.0
        return depth_scale(k, fit.scale_x, fit.scale_y, cfg)

    def _count_usage(self, tasks: tuple[str, ...], expert_counts: dict[str, np.ndarray]) -> None:
        with self._lock:
            for task in tasks:
                counts = expert_counts[task]
                if self._usage[task].shape == counts.shape:
                    self._usage[task] += counts
                else:
                    log.warning("engine: backend %r returned expert counts of shape %s, expected %s; "
                                "usage not updated", self.backend.name, counts.shape, self._usage[task].shape)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
