# SPDX-License-Identifier: Apache-2.0
"""``fpga`` backend: the backbone on our ``edgemoe_top`` accelerator through PYNQ.

On a ZCU102 running PYNQ, ``bitstream`` is the Vivado output of ``hls_accel/vitis/`` (``.bit`` with
its ``.hwh`` beside it). With ``simulate=True`` the very same driver runs against
:class:`~edgemoe_ros.accel.sim_device.SimulatedDevice`, whose hardware is the HLS C-simulation
library, and the overlay files (``.bit``/``.hwh``/``.xclbin``) are generated from
``accel/interface.py`` when no bitstream is given. That is how the driver is tested without a
board.

The accelerator computes one task per call (the router is a kernel argument), so a frame with two
tasks is two calls; the shared prefix of SPEC §2 is a CPU-backend optimisation the hardware does
not make (Edge-MoE alternates tasks too). Features come back in the ``act`` fixed-point format and
are converted to float32 as the csim backend does (``act_to_float32``).

A hung accelerator (timeout) fails that frame with ``BackendError``; the next ``run`` first resets
the kernel (a PL reset from the PS; re-programming only if that does not bring it back), so the
node recovers without a restart (SPEC §7).

One process owns the board (``accel/device_lock.py``): an ``fpga`` backend in a second process
fails to load with a message naming the owner; a second one in the same process (a node reload
with new backend options) attaches to the programmed overlay without re-programming it. With
``simulate=True`` the backends of one process share one simulated board per kernel, as they would
share the ZCU102.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..accel import interface as itf
from ..accel.pynq_driver import (
    DEFAULT_TIMEOUT_S,
    AcceleratorBusy,
    AcceleratorError,
    AcceleratorTimeout,
)
from ..fixedpoint.quant import act_to_float32
from ..model.config import ModelConfig
from ..model.weights import ModelWeights
from .base import BackboneResult, Backend, BackendError

log = logging.getLogger(__name__)


class FpgaBackend(Backend):
    """Registry name ``fpga``.

    Options: ``bitstream`` (path of the ``.bit``; required on a board, generated when simulating),
    ``timeout_s`` (per kernel call), ``simulate`` (use the simulated PYNQ device with the
    C-simulation as hardware), ``max_images`` (largest batch per kernel call; bigger batches are
    split), ``csim_library`` (C-simulation library for ``simulate``; default: the one built for the
    model), ``download`` (program the PL when opening; default True on a board, False simulated).
    """

    name = "fpga"

    def __init__(self, bitstream: str | Path | None = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 simulate: bool = False, max_images: int = 1,
                 csim_library: str | Path | None = None, download: bool | None = None) -> None:
        super().__init__()
        if timeout_s <= 0:
            raise BackendError(f"fpga: timeout_s must be > 0, got {timeout_s!r}")
        if not 1 <= int(max_images) <= itf.MAX_IMAGES:
            raise BackendError(f"fpga: max_images must be in 1..{itf.MAX_IMAGES}, got "
                               f"{max_images!r}")
        if not simulate and bitstream is None:
            raise BackendError("fpga: option 'bitstream' (path of the overlay .bit) is required "
                               "on a board; use simulate=True to run on the simulated device")
        if bitstream is not None and not Path(bitstream).is_file():
            raise BackendError(f"fpga: bitstream {bitstream} does not exist")
        self.bitstream = Path(bitstream) if bitstream is not None else None
        self.timeout_s = float(timeout_s)
        self.simulate = bool(simulate)
        self.max_images = int(max_images)
        self.csim_library = Path(csim_library) if csim_library is not None else None
        self.download = (not simulate) if download is None else bool(download)
        self.driver: Any = None
        self.sim_device: Any = None
        self._overlay_dir: Path | None = None
        self._needs_recovery = False

    # ------------------------------------------------------------------ lifecycle
    def load(self, weights: ModelWeights) -> None:
        cfg = weights.config
        if self.driver is None or not itf.same_kernel(self.driver.config, cfg):
            self._close_driver()
            self._open(cfg)
        try:
            self.driver.load_weights(weights)
        except AcceleratorError as exc:
            raise BackendError(f"fpga: loading weights {weights.source}: {exc}") from exc
        self.config = cfg

    def _open(self, cfg: ModelConfig) -> None:
        from ..accel.pynq_driver import EdgeMoeDriver

        device = None
        bitstream = self.bitstream
        try:
            if self.simulate:
                from ..accel import hwh

                device = self.sim_device = self._acquire_simulated_board(cfg)
                if bitstream is None:
                    self._overlay_dir = Path(tempfile.mkdtemp(prefix="edgemoe_overlay_"))
                    bitstream = hwh.write_overlay(self._overlay_dir)
            self.driver = EdgeMoeDriver(bitstream, cfg, max_images=self.max_images,
                                        download=self.download, device=device,
                                        timeout_s=self.timeout_s)
        except (AcceleratorError, RuntimeError, OSError) as exc:
            self._close_driver()
            raise BackendError(f"fpga: cannot open the accelerator ({bitstream}): {exc}") from exc
        self._needs_recovery = False

    def _acquire_simulated_board(self, cfg: ModelConfig) -> Any:
        """The simulated board to drive with ``simulate=True``: the process's shared board whose
        hardware is the C-simulation (a test subclass puts another hardware model behind the same
        registers). Paired with :meth:`_release_simulated_board`."""
        from ..accel import sim_device

        return sim_device.acquire_board(cfg, self._csim_library(cfg))

    def _release_simulated_board(self, board: Any) -> None:
        from ..accel import sim_device

        sim_device.release_board(board)

    def _csim_library(self, cfg: ModelConfig) -> Path:
        if self.csim_library is not None:
            return self.csim_library
        from . import csim

        return csim.build_library(cfg)

    def close(self) -> None:
        self._close_driver()
        self.config = None

    def _close_driver(self) -> None:
        if self.driver is not None:
            self.driver.close()
            self.driver = None
        if self.sim_device is not None:
            self._release_simulated_board(self.sim_device)
            self.sim_device = None
        if self._overlay_dir is not None:
            shutil.rmtree(self._overlay_dir, ignore_errors=True)
            self._overlay_dir = None

    # ------------------------------------------------------------------ inference
    def run(self, images: np.ndarray, tasks: Sequence[str]) -> BackboneResult:
        self.check_input(images, tasks)
        cfg = self.config
        if cfg is None or self.driver is None:
            raise BackendError("backend 'fpga': run() before load()")
        if self._needs_recovery:
            try:
                self.driver.recover()
            except AcceleratorError as exc:
                raise BackendError(
                    f"fpga: accelerator still unusable after a reset: {exc}") from exc
            self._needs_recovery = False
        features: dict[str, np.ndarray] = {}
        routing: dict[str, np.ndarray] = {}
        for task in tasks:
            feats, routes = [], []
            for start in range(0, images.shape[0], self.max_images):
                chunk = np.ascontiguousarray(images[start:start + self.max_images])
                try:
                    raw, ids = self.driver.run(chunk, cfg.task_id(task))
                except (AcceleratorTimeout, AcceleratorBusy) as exc:
                    self._needs_recovery = True
                    raise BackendError(f"fpga: {exc}") from exc
                except AcceleratorError as exc:
                    raise BackendError(f"fpga: {exc}") from exc
                feats.append(act_to_float32(raw))
                routes.append(ids)
            features[task] = np.concatenate(feats) if len(feats) > 1 else feats[0]
            routing[task] = np.concatenate(routes) if len(routes) > 1 else routes[0]
        counts = {t: _expert_counts(r, cfg.num_experts) for t, r in routing.items()}
        return BackboneResult(features, routing, counts)


def _expert_counts(routing: np.ndarray, num_experts: int) -> np.ndarray:
    layers = routing.shape[1]
    out = np.zeros((layers, num_experts), np.int64)
    for layer in range(layers):
        out[layer] = np.bincount(routing[:, layer].ravel(), minlength=num_experts)[:num_experts]
    return out
