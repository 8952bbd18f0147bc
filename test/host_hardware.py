# SPDX-License-Identifier: Apache-2.0
"""A fast hardware model for the simulated FPGA, and device faults injected from another process.

Why: the ``fpga`` backend with ``simulate=True`` runs the real driver path (register map, device
buffers and their syncs, ap_start / ap_done polling, timeout, PL-reset recovery) against
``accel/sim_device.py``'s ``SimulatedDevice``, whose hardware is the bit-exact C-simulation:
~100x too slow for a soak at camera rate. :class:`HostHardware` is a ``sim_device.Hardware`` that
computes the backbone with the cpu backend instead, from the weights the driver uploaded into
device memory (dequantised from the int16 buffers, so a driver that uploads nothing or the wrong
thing gets wrong answers here too), and writes ``features_out`` in the ``act`` fixed-point format
and ``routing_out`` as expert ids, as the kernel does. It is NOT bit-exact with the accelerator
(float32 arithmetic on dequantised weights, not the fixed-point datapath), and it refreshes its
whole model when the driver asks for a parameter reload, where the kernel caches only the small
parameters and streams the linear weights every call. It is test-only for that reason.

:class:`FaultFileDevice` takes its faults from a file: at each accepted ap_start, if
``fault_file`` exists, its content names the ``sim_device.Fault`` of that run (``hang``,
``wedged``, ``error``: a bad status, ``corrupt``) and the file is consumed, so one
:func:`inject_fault` is one faulted kernel call, whichever process writes it (bench/soak.py).

:class:`HostFpgaBackend` (registry name ``fpga_host``, registered by test/fault_injection.py) is
the ``fpga`` backend with such a board behind it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from collections import Counter
from pathlib import Path

import numpy as np
from fault_injection import FPGA_HOST

from edgemoe_ros.accel import interface as itf
from edgemoe_ros.accel import sim_device
from edgemoe_ros.accel.pynq_driver import DEFAULT_TIMEOUT_S
from edgemoe_ros.backends import create_backend
from edgemoe_ros.backends.fpga import FpgaBackend
from edgemoe_ros.model.config import ModelConfig
from edgemoe_ros.model.weights import ModelWeights, expected_shapes

log = logging.getLogger(__name__)


def weights_from_device(
    cfg: ModelConfig, one_time: np.ndarray, experts: np.ndarray
) -> ModelWeights:
    """The backbone the two packed weight buffers hold, as float32 tensors (the inverse of
    ``interface.pack_weights`` up to its rounding). Task-head tensors are zero: the accelerator
    never sees them, and a backbone backend never reads them."""
    layout = itf.weight_layout(cfg)
    values = itf.unpack_weights(
        itf.PackedWeights(np.asarray(one_time), np.asarray(experts), layout)
    )
    tensors = {name: np.zeros(shape, np.float32) for name, shape in expected_shapes(cfg).items()}
    for entry in layout.entries:
        if entry.tensor.startswith("config."):
            continue
        value = values[entry.name]
        if entry.transform == "router_t":
            value = np.transpose(value, (0, 2, 1))
        target = (
            tensors[entry.tensor] if entry.index is None else tensors[entry.tensor][entry.index]
        )
        target[...] = value.reshape(target.shape)
    # Pixel normalisation is a kernel parameter too: take it from the buffer, not the host config.
    mean = tuple(float(v) for v in values["pixel_mean"])
    std = tuple(float(1.0 / v) for v in values["pixel_inv_std"])
    device_cfg = dataclasses.replace(cfg, pixel_mean=mean, pixel_std=std)
    return ModelWeights(device_cfg, tensors, source="weights read back from device memory")


class HostHardware:
    """``sim_device.Hardware`` computing the backbone on the host with the cpu backend.

    Return codes follow the C-simulation's (``interface.CSIM_*``): a run without
    ``reload_one_time_weights`` before any reload gets ``CSIM_ERR_NO_ONE_TIME_WEIGHTS``.
    """

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._cpu = create_backend("cpu")
        self._digest: bytes | None = None
        #: Models read back from device memory (a reload of unchanged buffers reads nothing).
        self.models_loaded = 0

    def __call__(
        self,
        images: np.ndarray,
        weights_one_time: np.ndarray,
        weights_experts: np.ndarray,
        features_out: np.ndarray,
        routing_out: np.ndarray,
        num_images: int,
        task_id: int,
        reload_one_time_weights: int,
    ) -> int:
        cfg = self.config
        if not 1 <= num_images <= itf.MAX_IMAGES:
            return itf.CSIM_ERR_NUM_IMAGES
        if not 0 <= task_id < len(cfg.tasks):
            return itf.CSIM_ERR_TASK_ID
        if reload_one_time_weights:
            self._load(weights_one_time, weights_experts)
        elif self._digest is None:
            return itf.CSIM_ERR_NO_ONE_TIME_WEIGHTS
        task = cfg.tasks[task_id]
        result = self._cpu.run(images[:num_images], [task])
        raw, _ = itf.quantize(result.features[task], "act")
        features_out[:num_images] = raw
        routing_out[:num_images] = result.routing[task]
        return itf.CSIM_OK

    def _load(self, one_time: np.ndarray, experts: np.ndarray) -> None:
        digest = hashlib.blake2b(one_time.data, digest_size=16)
        digest.update(experts.data)
        if digest.digest() == self._digest:
            return
        self._cpu.load(weights_from_device(self.config, one_time, experts))
        self._digest = digest.digest()
        self.models_loaded += 1

    def close(self) -> None:
        self._cpu.close()
        self._digest = None


class FaultFileDevice(sim_device.SimulatedDevice):
    """A simulated board whose faults come from ``fault_file`` (read and removed at ap_start)."""

    def __init__(
        self,
        config: ModelConfig,
        hardware: sim_device.Hardware,
        fault_file: str | Path,
        **kwargs: object,
    ) -> None:
        super().__init__(config, hardware, **kwargs)
        self.fault_file = Path(fault_file)
        #: Faults taken from the file, by name.
        self.injected: Counter[str] = Counter()

    def next_fault(self) -> sim_device.Fault:
        try:
            text = self.fault_file.read_text()
        except FileNotFoundError:
            return self.fault
        self.fault_file.unlink(missing_ok=True)
        try:
            fault = sim_device.Fault(text.strip())
        except ValueError:
            names = ", ".join(f.value for f in sim_device.Fault)
            raise sim_device.SimulatedDeviceError(
                f"{self.fault_file} names no fault: {text.strip()!r} (one of {names})"
            ) from None
        self.injected[fault.value] += 1
        log.warning(
            "simulated device: injecting %s at this ap_start (from %s)",
            fault.value,
            self.fault_file,
        )
        return fault


def inject_fault(fault_file: str | Path, fault: sim_device.Fault | str) -> None:
    """Make the next ap_start of the :class:`FaultFileDevice` watching ``fault_file`` fail with
    ``fault``. Written atomically, so the device never reads a half-written name."""
    path = Path(fault_file)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(sim_device.Fault(fault).value)
    os.replace(tmp, path)


class HostFpgaBackend(FpgaBackend):
    """The ``fpga`` backend (driver, registers, recovery) on a simulated board with
    :class:`HostHardware`; with ``fault_file``, the board is a :class:`FaultFileDevice`."""

    name = FPGA_HOST

    def __init__(
        self,
        fault_file: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_images: int = 1,
    ) -> None:
        super().__init__(timeout_s=timeout_s, simulate=True, max_images=max_images)
        self.fault_file = Path(fault_file) if fault_file else None

    def _acquire_simulated_board(self, cfg: ModelConfig) -> sim_device.SimulatedDevice:
        hardware = HostHardware(cfg)
        if self.fault_file is None:
            return sim_device.SimulatedDevice(cfg, hardware)
        return FaultFileDevice(cfg, hardware, self.fault_file)

    def _release_simulated_board(self, board: sim_device.SimulatedDevice) -> None:
        hardware = board.hardware
        if isinstance(hardware, HostHardware):
            hardware.close()
