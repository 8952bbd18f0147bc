# SPDX-License-Identifier: Apache-2.0
"""PYNQ driver of the ``edgemoe_top`` accelerator: overlay, buffers, registers, start, poll, read
back.

One driver per loaded overlay. Device buffers are allocated once, at construction, for the model
the bitstream was synthesised for (``buffer_shapes``/``weight_layout`` of ``accel/interface.py``),
because contiguous memory is scarce and allocation is slow on the board. A frame is then: copy the
images in, ``sync_to_device``, program the registers by offset (HLS argument registers are
write-only in pynq's ``register_map``, so the offsets come from ``interface.py``), set ap_start,
poll ap_done with a deadline, ``sync_from_device``, and copy the results out.

The kernel caches its small parameters (biases, LayerNorm, embeddings) on chip; the
``reload_one_time_weights`` register asks it to refresh that cache. The driver sets it only on the
first run after the weights actually changed (and after a failed run, when the cache state is
unknown), so switching task or running the next frame costs no reload.

Safety on open, before anything is programmed or allocated:

* one process owns the device (``device_lock``): a driver in another process fails with a message
  naming the owner; a second driver in the same process attaches to the programmed overlay without
  re-programming it and shares the kernel (calls serialised, parameter cache reloaded on handover);
* the IP's registers in the ``.hwh`` must be ``interface.py``'s (names and offsets; the first
  difference is named), or the bitstream is refused;
* the contiguous (CMA) memory the buffers need must be free (``cma``).

A hung kernel is recovered by a PL reset from the PS; re-programming is the last resort
(:meth:`EdgeMoeDriver.recover`).

pynq is imported lazily so the package works on machines without it.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from ..model.config import ModelConfig
from ..model.weights import ModelWeights
from . import cma, device_lock, hwh
from . import interface as itf
from .pl_reset import PsGpioPlReset

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Default limit for one kernel call. The board needs ~59 ms per image and task (SPEC §3); a full
#: batch of MAX_IMAGES takes ~4 s. Beyond this the accelerator is considered hung.
DEFAULT_TIMEOUT_S = 10.0
#: Sleep between two reads of ap_ctrl while waiting; short against a ~59 ms frame.
DEFAULT_POLL_INTERVAL_S = 2e-4

_CTRL_BITS = (("ap_start", itf.AP_START), ("ap_done", itf.AP_DONE), ("ap_idle", itf.AP_IDLE),
              ("ap_ready", itf.AP_READY), ("auto_restart", itf.AP_AUTO_RESTART))


class AcceleratorError(RuntimeError):
    """The accelerator or its overlay cannot be used, or it returned unusable results."""


class AcceleratorTimeout(AcceleratorError):
    """ap_done did not rise within the timeout; the message carries the register state."""


class AcceleratorBusy(AcceleratorError):
    """A start was requested while the kernel is not idle (typically after a timeout)."""


def describe_ctrl(value: int) -> str:
    """``ap_ctrl`` decoded, e.g. ``0x01 (ap_start=1 ap_done=0 ap_idle=0 ap_ready=0
    auto_restart=0)``."""
    bits = " ".join(f"{name}={int(bool(value & mask))}" for name, mask in _CTRL_BITS)
    return f"0x{value:02X} ({bits})"


def _serialised(method: Callable[..., T]) -> Callable[..., T]:
    """One caller at a time: the kernel, its registers and the shared buffers are one resource
    (a weight upload from a service callback must not interleave with a frame)."""

    @functools.wraps(method)
    def wrapper(self: EdgeMoeDriver, *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def _active_device(pynq: Any) -> Any:
    try:
        return pynq.Device.active_device
    except Exception as exc:  # pynq raises RuntimeError("No Devices Found") off the board
        raise AcceleratorError(f"no PYNQ device: {exc}") from None


def device_pl_reset(device: Any) -> Callable[[], None]:
    """How to reset ``device``'s PL from the PS: its own ``pl_reset()`` when it models one (the
    simulated device), else a pulse of the block design's reset pin through the PS GPIO."""
    own = getattr(device, "pl_reset", None)
    return own if callable(own) else PsGpioPlReset(hwh.BLOCK_DESIGN.pl_reset_pin)


def _import_pynq() -> Any:
    try:
        import pynq
    except ImportError as exc:
        raise AcceleratorError(f"pynq is not importable ({exc}); "
                               "install pynq 4.x on the board") from None
    return pynq


class EdgeMoeDriver:
    """Drive ``edgemoe_top`` in a PYNQ overlay.

    ``bitfile``: the ``.bit`` with its ``.hwh`` (and ``.xclbin``) beside it; ``download`` is passed
    to ``pynq.Overlay`` (False when the PL is already programmed, or on the simulated device);
    ``device``: a pynq ``Device`` (default: pynq's active device); ``max_images``: the largest
    batch one call takes (buffers are sized for it); ``ip_name``: the IP instance, when the design
    holds more than one ``edgemoe_top``. Public methods are serialised, so a weight upload from
    another thread waits for the frame in flight.
    """

    def __init__(self, bitfile: str | Path, config: ModelConfig, *, max_images: int = 1,
                 download: bool = True, device: Any = None, timeout_s: float = DEFAULT_TIMEOUT_S,
                 poll_interval_s: float = DEFAULT_POLL_INTERVAL_S, ip_name: str | None = None,
                 lock_path: str | Path | None = None, pl_reset: Callable[[], None] | None = None):
        if not 1 <= max_images <= itf.MAX_IMAGES:
            raise AcceleratorError(f"max_images {max_images} outside 1..{itf.MAX_IMAGES}")
        if timeout_s <= 0:
            raise AcceleratorError(f"timeout_s must be > 0, got {timeout_s}")
        self.config = config
        self.max_images = max_images
        self.timeout_s = float(timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self._buffers: dict[str, Any] = {}
        self._lock: threading.RLock = threading.RLock()  # the device claim's lock once claimed
        self._claim: device_lock.DeviceClaim | None = None
        self._closed = False
        self._weights_digest: bytes | None = None
        self._reload_pending = True
        self.bitfile = Path(bitfile)
        if not self.bitfile.is_file():
            raise AcceleratorError(f"bitstream {self.bitfile} not found")
        pynq = _import_pynq()
        self.device = device if device is not None else _active_device(pynq)
        self._pl_reset = pl_reset if pl_reset is not None else device_pl_reset(self.device)
        self.attached = self._claim_device(lock_path)
        try:
            self._open_overlay(pynq, download and not self.attached, ip_name)
            self._allocate(pynq)
        except BaseException:
            self.close()
            raise
        log.info("opened %s%s: %s at 0x%X, buffers for %d image(s), %.1f MB", self.bitfile,
                 " (attached: another driver of this process programmed it)" if self.attached
                 else "",
                 self.ip_name, self.overlay.ip_dict.get(self.ip_name, {}).get("phys_addr", 0),
                 max_images, sum(b.nbytes for b in self._buffers.values()) / 1e6)

    # ------------------------------------------------------------------ setup
    def _claim_device(self, lock_path: str | Path | None) -> bool:
        """Own the device (or join this process's owner); True when joining, i.e. no
        re-programming."""
        try:
            path = (Path(lock_path) if lock_path is not None
                    else device_lock.default_lock_path(self.device.tag))
            self._claim, attached = device_lock.claim(path, self.bitfile)
        except (device_lock.DeviceLockError, OSError) as exc:
            raise AcceleratorError(f"{self.bitfile}: {exc}") from None
        self._lock = self._claim.kernel_lock
        return attached

    def _open_overlay(self, pynq: Any, download: bool, ip_name: str | None) -> None:
        try:
            self.overlay = pynq.Overlay(str(self.bitfile), download=download, device=self.device)
        except Exception as exc:
            raise AcceleratorError(f"cannot open overlay {self.bitfile}: {exc}") from exc
        self.ip_name = ip_name or self._find_ip()
        try:
            self.ip = functools.reduce(getattr, self.ip_name.split("/"), self.overlay)
        except AttributeError as exc:
            raise AcceleratorError(f"{self.bitfile}: IP {self.ip_name!r} "
                                   f"not in the overlay: {exc}") from None
        self._check_registers()

    def _find_ip(self) -> str:
        found = [name for name, desc in self.overlay.ip_dict.items()
                 if str(desc.get("type") or "").split(":")[2:3] == [itf.TOP_FUNCTION]]
        if len(found) != 1:
            listing = ", ".join(f"{k} ({v.get('type')})" for k, v in self.overlay.ip_dict.items())
            what = "no" if not found else f"{len(found)} ({', '.join(found)}):"
            raise AcceleratorError(f"{self.bitfile}: {what} {itf.TOP_FUNCTION} IP found; pass "
                                   f"ip_name. IPs in the overlay: {listing}")
        return found[0]

    def _check_registers(self) -> None:
        """Refuse an IP whose ``.hwh`` register map is not ``interface.py``'s: every argument would
        land in the wrong register (a bitstream built from other sources or another ABI)."""
        registers = self.overlay.ip_dict.get(self.ip_name, {}).get("registers")
        if not registers:
            raise AcceleratorError(f"{self.bitfile}: the .hwh lists no registers for "
                                   f"{self.ip_name}; cannot check it is the accelerator this "
                                   "driver was written for")
        found = {name: int(reg["address_offset"]) for name, reg in registers.items()}
        problem = hwh.register_map_mismatch(found)
        if problem is not None:
            raise AcceleratorError(
                f"{self.bitfile}: {self.ip_name} does not have the register map of interface.py "
                f"(ABI {itf.ABI_VERSION}): {problem}. Rebuild the overlay from this checkout's "
                "hls_accel/ (docs/fpga.md) or use the edgemoe_ros it was built with")

    def _buffer_specs(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        layout = itf.weight_layout(self.config)
        wanted = dict(itf.buffer_shapes(self.config, self.max_images))
        wanted["weights_one_time"] = ((layout.one_time_words,), np.dtype(np.int16))
        wanted["weights_experts"] = ((layout.experts_words,), np.dtype(np.int16))
        return {name: wanted[name] for name in itf.POINTER_ARGS}

    def _allocate(self, pynq: Any) -> None:
        specs = self._buffer_specs()
        sizes = {name: int(np.prod(shape)) * dtype.itemsize
                 for name, (shape, dtype) in specs.items()}
        report = getattr(self.device, "cma_status", None)  # a device that models its own pool
        try:
            cma.check_cma(sizes, report() if report is not None else cma.read_cma())
        except cma.CmaError as exc:
            raise AcceleratorError(str(exc)) from None
        for name, (shape, dtype) in specs.items():
            try:
                self._buffers[name] = pynq.allocate(shape, dtype, target=self.device)
            except Exception as exc:
                raise AcceleratorError(f"cannot allocate device buffer {name} "
                                       f"{shape} {dtype}: {exc}") from exc

    # ------------------------------------------------------------------ weights
    @_serialised
    def load_weights(self, weights: ModelWeights) -> bool:
        """Pack and upload ``weights``; returns False (and uploads nothing) if they are already
        loaded."""
        self._check_open()
        built, given = itf.model_dims(self.config), itf.model_dims(weights.config)
        if given != built:  # only what the kernel bakes in: host-side head settings may differ
            diffs = [f"{k.lower()} {given[k]} (built for {v})"
                     for k, v in built.items() if given[k] != v]
            raise AcceleratorError(f"weights {weights.source} are for another model than the "
                                   f"accelerator in {self.bitfile} was built for (differs in: "
                                   f"{', '.join(diffs)})")
        packed = itf.pack_weights(weights)
        digest = hashlib.blake2b(packed.one_time.tobytes() + packed.experts.tobytes(),
                                 digest_size=16).digest()
        if digest == self._weights_digest:
            log.info("weights %s already on the accelerator; nothing uploaded", weights.source)
            return False
        for name, data in (("weights_one_time", packed.one_time),
                           ("weights_experts", packed.experts)):
            buf = self._buffers[name]
            buf[:] = data
            self._device_call(f"sync {name} to device", buf.sync_to_device)
        self._weights_digest = digest
        self._reload_pending = True
        log.info("uploaded weights %s (%.1f MB); parameters reload on the next run",
                 weights.source, (packed.one_time.nbytes + packed.experts.nbytes) / 1e6)
        return True

    @property
    def weights_loaded(self) -> bool:
        return self._weights_digest is not None

    # ------------------------------------------------------------------ run
    @_serialised
    def run(self, images: np.ndarray, task_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Run the backbone on ``images`` (B, img_h, img_w, 3) uint8 for one task.

        Returns ``(features_raw, routing)``: (B, num_patches, dim) int32 in the ``act`` format and
        (B, num_moe_layers, num_tokens, top_k) int32 expert ids, both fresh arrays.
        """
        self._check_open()
        if not self.weights_loaded:
            raise AcceleratorError("run() before load_weights()")
        cfg = self.config
        want = (cfg.img_h, cfg.img_w, cfg.in_chans)
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != want:
            raise AcceleratorError(f"images must be uint8 (B, {want[0]}, {want[1]}, {want[2]}), "
                                   f"got {images.dtype} {images.shape}")
        b = images.shape[0]
        if not 1 <= b <= self.max_images:
            raise AcceleratorError(f"batch of {b} images; this driver holds buffers for "
                                   f"1..{self.max_images}")
        if not 0 <= task_id < len(cfg.tasks):
            raise AcceleratorError(f"task_id {task_id} outside 0..{len(cfg.tasks) - 1} "
                                   f"(tasks {cfg.tasks})")

        img = self._buffers["images"]
        img[:b] = images
        self._device_call("sync images to device", img[:b].sync_to_device)
        ctrl = self._read(itf.REG_AP_CTRL)
        if not ctrl & itf.AP_IDLE:
            self._reload_pending = True
            raise AcceleratorBusy(f"{self.ip_name} is not idle before start, "
                                  f"ap_ctrl={describe_ctrl(ctrl)}; a previous run did not finish: "
                                  "reload the overlay")
        claim = self._claim
        reload = int(self._reload_pending or claim is None or claim.cache_owner is not self)
        for name, offset in itf.POINTER_ARGS.items():
            address = int(self._buffers[name].device_address)
            self._write(offset, address & 0xFFFF_FFFF)
            self._write(offset + 4, address >> 32)
        scalars = {"num_images": b, "task_id": task_id, "reload_one_time_weights": reload}
        for name, offset in itf.SCALAR_ARGS.items():
            self._write(offset, scalars[name])
        started = time.monotonic()
        self._write(itf.REG_AP_CTRL, itf.AP_START)
        # Until it finished, the on-chip parameter cache is in an unknown state.
        self._reload_pending = True
        if claim is not None:
            claim.cache_owner = None
        self._wait_done(started, scalars)
        self._reload_pending = False
        if claim is not None:
            claim.cache_owner = self
        log.debug("%s: %d image(s), task %d, reload %d in %.2f ms", self.ip_name, b, task_id,
                  reload, (time.monotonic() - started) * 1e3)

        feats, routing = self._buffers["features_out"][:b], self._buffers["routing_out"][:b]
        self._device_call("sync features_out from device", feats.sync_from_device)
        self._device_call("sync routing_out from device", routing.sync_from_device)
        features_raw = np.array(feats, dtype=np.int32, copy=True)
        routing_ids = np.array(routing, dtype=np.int32, copy=True)
        self._check_routing(routing_ids)
        return features_raw, routing_ids

    def _wait_done(self, started: float, scalars: dict[str, int]) -> None:
        deadline = started + self.timeout_s
        while True:
            ctrl = self._read(itf.REG_AP_CTRL)
            # ap_done is clear-on-read; idle without start pending also means the call finished.
            if ctrl & itf.AP_DONE or (ctrl & itf.AP_IDLE and not ctrl & itf.AP_START):
                return
            if time.monotonic() >= deadline:
                args = ", ".join(f"{k}={v}" for k, v in scalars.items())
                raise AcceleratorTimeout(
                    f"{self.ip_name} did not assert ap_done within {self.timeout_s:g} s; "
                    f"ap_ctrl={describe_ctrl(ctrl)}, {args}; the accelerator is "
                    "hung: reload the overlay")
            time.sleep(self.poll_interval_s)

    def _check_routing(self, routing: np.ndarray) -> None:
        """Expert ids outside 0..E-1 mean the kernel did not (completely) write its outputs."""
        e = self.config.num_experts
        bad = (routing < 0) | (routing >= e)
        if bad.any():
            self._reload_pending = True  # the kernel misbehaved: trust nothing it cached
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise AcceleratorError(
                f"{self.ip_name} returned invalid routing_out: expert id {int(routing[where])} at "
                f"(image, moe_layer, token, k)={where} is outside 0..{e - 1} "
                f"({int(bad.sum())} bad entries)")

    @_serialised
    def recover(self) -> str:
        """Bring a hung kernel back; returns how: ``"pl_reset"`` or ``"download"``.

        First a PL reset from the PS (``pl_reset``): it resets the kernel and its interconnect in
        place. Re-programming the bitstream is the last resort, taken only when the kernel is still
        not idle after the reset: tearing the PL down while the kernel holds AXI transactions can
        hang a Zynq UltraScale+ (``accel/pl_reset.py``). Buffers and weights in DDR survive both;
        the on-chip parameter cache does not, so the next run reloads it.
        """
        self._check_open()
        self._forget_cache()
        log.warning("resetting %s through a PL reset from the PS", self.ip_name)
        try:
            self._pl_reset()
        except Exception as exc:  # no GPIO access, no reset line: fall through to re-programming
            log.warning("PL reset failed (%s: %s)", type(exc).__name__, exc)
        ctrl = self._read(itf.REG_AP_CTRL)
        if ctrl & itf.AP_IDLE:
            log.warning("%s is idle again after the PL reset", self.ip_name)
            return "pl_reset"
        log.warning("%s still not idle after the PL reset (ap_ctrl=%s): re-programming %s as a "
                    "last resort", self.ip_name, describe_ctrl(ctrl), self.bitfile)
        self._device_call("re-programming the PL", self.device.download, self.overlay,
                          self.overlay.parser)
        ctrl = self._read(itf.REG_AP_CTRL)
        if not ctrl & itf.AP_IDLE:
            raise AcceleratorBusy(f"{self.ip_name} still not idle after a PL reset and "
                                  f"re-programming, ap_ctrl={describe_ctrl(ctrl)}: "
                                  "power-cycle the board")
        return "download"

    def _forget_cache(self) -> None:
        self._reload_pending = True
        if self._claim is not None:
            self._claim.cache_owner = None

    # ------------------------------------------------------------------ register access
    def _read(self, offset: int) -> int:
        return int(self._device_call(f"read register 0x{offset:02X}", self.ip.read, offset))

    def _write(self, offset: int, value: int) -> None:
        self._device_call(f"write register 0x{offset:02X}", self.ip.write, offset, int(value))

    def _device_call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except AcceleratorError:
            raise
        except Exception as exc:
            self._forget_cache()
            raise AcceleratorError(f"{getattr(self, 'ip_name', self.bitfile)}: device error "
                                   f"during {what}: {exc}") from exc

    # ------------------------------------------------------------------ teardown
    def _check_open(self) -> None:
        if self._closed:
            raise AcceleratorError(f"driver for {self.bitfile} is closed")

    @property
    def closed(self) -> bool:
        return self._closed

    @_serialised
    def close(self) -> None:
        """Free the device buffers and give up the device claim. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        for name, buf in self._buffers.items():
            try:
                buf.freebuffer()
            except Exception as exc:  # a failing free must not hide the others
                log.warning("freeing device buffer %s failed: %s", name, exc)
        self._buffers.clear()
        self._weights_digest = None
        if self._claim is not None:
            if self._claim.cache_owner is self:
                self._claim.cache_owner = None
            device_lock.release(self._claim)
            self._claim = None

    def __enter__(self) -> EdgeMoeDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
