# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag process IN OUT``: run the engine over a camera topic and write a new mcap bag.

The output bag holds the input image topic and its camera_info copied byte for byte, plus the
outputs the node would publish, under the camera's namespace with the node's layout
(``/cam/image_raw`` -> ``/cam/segmentation/image``, ``/cam/segmentation/color``,
``/cam/segmentation/camera_info``, ``/cam/depth/image``, ``/cam/depth/camera_info``).
Every output keeps its input's header stamp, frame_id and bag timestamp, so the result lines up
with the original recording in Foxglove/RViz and can be compared frame by frame. Depth is metric
for the recorded camera: each frame is inferred with the K of the latest camera_info before it
(model/canonical_camera.py); without one (or with an uncalibrated or unusable K, logged once) it
is the model's canonical camera's.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import postprocess as pp
from ..model.canonical_camera import IntrinsicsError
from ..model.config import ModelConfig
from ..model.weights import ModelWeights
from ..ros import topic_names as names
from . import messages as m
from .io import BagError, BagImage, BagReader, BagWriter

log = logging.getLogger(__name__)

#: Keys of ``output_topics``, each the node's output of that name relative to the camera namespace.
SEGMENTATION = "segmentation"
DEPTH = "depth"
OUTPUT_RESOLUTIONS = ("input", "model")
#: Undecodable frames logged one by one before the log goes quiet (all are counted in the summary).
MAX_SKIP_WARNINGS = 5


@dataclass
class ProcessSummary:
    """What ``process_bag`` did, for the CLI's closing line and for tests."""

    input_topic: str
    frames: int = 0
    skipped: int = 0
    #: camera_info messages refused (non-finite calibration: SPEC §7), not used for any output.
    bad_camera_info: int = 0
    written: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    infer_ms: list[float] = field(default_factory=list)

    def count(self, topic: str) -> None:
        self.written[topic] = self.written.get(topic, 0) + 1

    def lines(self) -> list[str]:
        ms = np.asarray(self.infer_ms) if self.infer_ms else np.zeros(1)
        fps = self.frames / self.seconds if self.seconds > 0 else 0.0
        out = [f"processed {self.frames} frames of {self.input_topic} in {self.seconds:.1f} s "
               f"({fps:.1f} frames/s; inference p50 {np.percentile(ms, 50):.1f} ms, "
               f"p90 {np.percentile(ms, 90):.1f} ms), skipped {self.skipped}"
               + (f", bad camera_info {self.bad_camera_info}" if self.bad_camera_info else "")]
        out += [f"  {topic}: {n} messages" for topic, n in sorted(self.written.items())]
        return out


def output_topics(namespace: str) -> dict[str, str]:
    """Absolute output topic names for a camera namespace ("" for the root)."""
    relative = {SEGMENTATION: names.SEGMENTATION_IMAGE, "color": names.SEGMENTATION_COLOR,
                DEPTH: names.DEPTH_IMAGE, "segmentation_info": names.SEGMENTATION_INFO,
                "depth_info": names.DEPTH_INFO}
    return {k: f"{namespace.rstrip('/')}/{v}" for k, v in relative.items()}


def _output_info(info_msg: Any, fit: pp.FitInfo, resolution: str, stamp: int, frame_id: str) -> Any:
    """The camera_info that describes the output images, as the node relays it.

    At model resolution the intrinsics follow the fit (scale, and crop in crop mode). At input
    resolution the identity fit still rescales a calibration made at another size (binning
    upstream), so width/height always match the output images. A width/height of 0 means "same
    as the image" (as ``scale_camera_info_params`` reads it).
    """
    if resolution == "input":
        h, w = fit.input_h, fit.input_w
        fit = pp.FitInfo("stretch", h, w, h, w, 0, 0, w, h)
    k, p, w, h = pp.scale_camera_info_params(np.asarray(info_msg.k, np.float64), np.asarray(info_msg.p, np.float64),
                                             int(info_msg.width), int(info_msg.height), fit)
    params = m.CameraInfoParams(int(w), int(h), tuple(float(v) for v in k.ravel()),
                                tuple(float(v) for v in info_msg.d), tuple(float(v) for v in info_msg.r),
                                tuple(float(v) for v in p.ravel()), info_msg.distortion_model)
    return params.to_msg(stamp, frame_id)


@dataclass
class _Job:
    """Everything fixed for one run, so the per-frame step takes only the frame."""

    writer: BagWriter
    engine: Any
    cfg: ModelConfig
    tasks: tuple[str, ...]
    outs: dict[str, str]
    resolution: str
    resize_mode: str | None
    summary: ProcessSummary
    warned_k: bool = False

    def camera_k(self, info_msg: Any, image_h: int, image_w: int) -> np.ndarray | None:
        """The recorded camera's K at this image's size; None (warned once) when it is unusable."""
        try:
            return pp.camera_k_from_info(info_msg, image_h, image_w)
        except IntrinsicsError as exc:
            if not self.warned_k:
                self.warned_k = True
                log.warning("camera_info K unusable (%s): depth of the model's canonical camera", exc)
            return None

    def frame(self, frame: BagImage, info_msg: Any, log_time: int) -> None:
        """Infer one frame and write its outputs (and their camera_info when the input has one).

        Everything is built before the first write, so a frame that fails (a camera_info the
        fit cannot use) is skipped with no output at all, never counted as skipped with some."""
        camera_k = self.camera_k(info_msg, *frame.rgb.shape[:2])
        res = self.engine.infer(frame.rgb, tasks=self.tasks, camera_k=camera_k)
        stamp, fid = frame.stamp_ns, frame.frame_id
        at_input = self.resolution == "input"
        outputs: list[tuple[str, Any]] = []
        infos: list[str] = []
        if res.semseg is not None:
            sem = res.semseg_at_input() if at_input else res.semseg
            outputs.append((SEGMENTATION, m.array_to_image(sem, m.MONO8, stamp, fid)))
            color = pp.colorize_semseg(sem, pp.model_palette(self.cfg))
            outputs.append(("color", m.array_to_image(color, m.RGB8, stamp, fid)))
            infos.append("segmentation_info")
        if res.depth is not None:
            depth = (res.depth_at_input() if at_input else res.depth).astype(np.float32, copy=False)
            outputs.append((DEPTH, m.array_to_image(depth, m.DEPTH_32FC1, stamp, fid)))
            infos.append("depth_info")
        if info_msg is not None and infos:
            h, w = frame.rgb.shape[:2]
            fit = pp.compute_fit(h, w, self.cfg, self.resize_mode)
            info = _output_info(info_msg, fit, self.resolution, stamp, fid)
            outputs += [(key, info) for key in infos]
        for key, msg in outputs:
            self._write(key, log_time, msg)
        self.summary.frames += 1
        self.summary.infer_ms.append(float(res.timings_ms.get("total", 0.0)))

    def _write(self, key: str, log_time: int, msg: Any) -> None:
        self.writer.write(self.outs[key], log_time, msg)
        self.summary.count(self.outs[key])


def process_bag(in_path: str | Path, out_path: str | Path, weights: ModelWeights, *,
                topic: str | None = None, tasks: Sequence[str] | None = None, backend: str = "cpu",
                backend_options: dict[str, Any] | None = None, output_resolution: str = "input", resize_mode: str | None = None,
                namespace: str | None = None,
                progress: Callable[[int], Any] | None = None,
                max_image_pixels: int | None = None, engine: Any | None = None,
                start_ns: int | None = None, stop_ns: int | None = None) -> ProcessSummary:
    """Run the engine over every frame of ``topic`` in ``in_path`` and write ``out_path`` (mcap).

    Frames that cannot be decoded (unsupported encoding, corrupt compressed data) are skipped, logged
    and counted; a damaged bag or a missing topic raises ``BagError`` and removes the partial output;
    so does a backend failure (``BackendError``), since every later frame would fail the same way.
    ``progress(total)`` is called once with the frame count and must return an object with
    ``update(n)`` and ``close()`` (a tqdm bar), or is None for no progress display.
    Inputs get the node's checks (SPEC §7): a compressed frame's header is read before it is
    decoded, so one that would decode to more than ``max_image_pixels`` (default: the node's
    parameter default) is skipped without being decoded; a camera_info the node refuses (NaN/Inf,
    a bad K, a bad size) is counted in ``bad_camera_info`` and, as in the node, clears the
    calibration until a good one arrives.
    ``engine``: an ``Engine`` built from ``weights`` with this ``backend`` and ``resize_mode`` to
    reuse (the caller keeps and closes it), so a worker loads the model once for many bags.
    ``start_ns``/``stop_ns``: only the input's log times in [start, stop) (a chunk of a long bag,
    see ``fleet``); frames at the start use the camera_info last logged before ``start_ns``.
    """
    # The model stack loads only for `process`, not for play/record/info.
    from ..engine import Engine
    from ..ros import conversions as conv  # the node's input checks, so both paths refuse the same
    from ..ros.params import DEFAULT_MAX_IMAGE_PIXELS

    max_pixels = DEFAULT_MAX_IMAGE_PIXELS if max_image_pixels is None else int(max_image_pixels)

    if output_resolution not in OUTPUT_RESOLUTIONS:
        raise ValueError(f"output_resolution {output_resolution!r} not one of {OUTPUT_RESOLUTIONS}")
    cfg = weights.config
    tasks = tuple(tasks) if tasks else tuple(cfg.tasks)
    for t in tasks:
        cfg.task_id(t)  # ConfigError naming the unknown task before any work
    with BagReader(in_path) as reader:
        topic = reader.pick_image_topic(topic)
        info_topic = m.camera_info_topic(topic)
        copy = [topic] + ([info_topic] if reader.has(info_topic) else [])
        outs = output_topics(m.topic_namespace(topic) if namespace is None else namespace)
        total = next(t.count for t in reader.info().topics if t.topic == topic)
        summary = ProcessSummary(topic)
        owned = engine is None
        if owned:
            engine = Engine(weights, backend, resize_mode, backend_options=backend_options)
        bar = progress(total) if progress else None
        start = time.perf_counter()
        try:
            with BagWriter(out_path, "mcap") as writer:
                job = _Job(writer, engine, cfg, tasks, outs, output_resolution, resize_mode, summary)
                latest_info = _info_before(reader, copy[1:], start_ns)
                for t, log_time, raw in reader.raw_messages(copy, start_ns, stop_ns):
                    writer.write_raw(t, reader.msgtype(t), log_time, raw, reader.msgdef(t))
                    summary.count(t)
                    if t == info_topic:
                        info = reader.deserialize(t, raw)
                        try:
                            conv.check_camera_info(info)
                            latest_info = info
                        except conv.BadInputError as exc:
                            summary.bad_camera_info += 1
                            latest_info = None  # as the node: a bad calibration clears the old one
                            if summary.bad_camera_info <= MAX_SKIP_WARNINGS:
                                log.warning("ignoring camera_info at %d ns: %s", log_time, exc)
                        continue
                    try:
                        msg = reader.deserialize(t, raw)
                        if reader.msgtype(t) == m.COMPRESSED_MSG:
                            conv.check_compressed(msg, max_pixels)  # header only: no decompression bomb
                        job.frame(reader.image_from_message(t, log_time, msg, max_pixels), latest_info,
                                  log_time)
                    except (BagError, ValueError) as exc:  # undecodable, or a size the model cannot fit
                        summary.skipped += 1
                        if summary.skipped <= MAX_SKIP_WARNINGS:
                            log.warning("skipping frame: %s", exc)
                        if summary.skipped == MAX_SKIP_WARNINGS:
                            log.warning("further undecodable frames are counted but not logged")
                    if bar is not None:
                        bar.update(1)
        finally:
            if owned:
                engine.close()
            if bar is not None:
                bar.close()
        summary.seconds = time.perf_counter() - start
    return summary


def _info_before(reader: BagReader, info_topics: Sequence[str], start_ns: int | None) -> Any:
    """The camera_info in effect at ``start_ns``: the last one before it, or None at the bag's
    start, without one, or when that one is refused (a bad one clears the calibration)."""
    from ..ros import conversions as conv

    if start_ns is None or not info_topics:
        return None
    raw = reader.last_before(info_topics[0], start_ns)
    if raw is None:
        return None
    info = reader.deserialize(info_topics[0], raw)
    try:
        conv.check_camera_info(info)
    except conv.BadInputError:
        return None
    return info


def tqdm_progress(total: int) -> Any:
    """A tqdm bar on stderr (hidden when stderr is not a terminal)."""
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", file=sys.stderr, disable=None, dynamic_ncols=True)
