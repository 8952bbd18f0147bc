# SPDX-License-Identifier: Apache-2.0
"""A simulated PYNQ device whose "hardware" is the C-simulation of ``hls_accel/``.

pynq 4.0.0 installs on x86 but finds no device. To run the *real* driver code path
(``pynq.Overlay`` -> ``DefaultIP.write/read`` -> ``pynq.allocate`` -> ``sync_to_device`` -> start
-> poll -> ``sync_from_device``) without a board, this module registers a
``pynq.pl_server.device.Device`` subclass with capability ``REGISTER_RW``: pynq then routes every
``ip.write``/``ip.read`` of the overlay to
:meth:`SimulatedDevice.write_registers`/:meth:`read_registers`, which model the Vitis HLS AXI-lite
control block of ``edgemoe_top`` (register offsets from ``accel/interface.py``): a write of
ap_start resolves the pointer registers to the buffers the driver allocated and runs the hardware
model on them, then raises ap_done/ap_idle/ap_ready (ap_done and ap_ready clear on read, as in
HLS).

Memory is modelled as non-coherent, like the Zynq PS DDR seen through the HP ports: each buffer
has a host copy (the ``PynqBuffer`` the driver sees) and a device copy (what the accelerator
reads and writes); only ``sync_to_device``/``sync_from_device`` copy between them. A driver that
forgets a sync therefore gets stale data here exactly as it would on the board.

A PL reset (:meth:`SimulatedDevice.pl_reset`, what the driver pulses to recover a hung kernel)
returns the control block to idle as ``download`` does; ``cma_bytes`` models a CMA pool that
allocations draw from.

Fault injection (:class:`Fault`) makes the device hang (never finish: the driver must time out;
``WEDGED``: and a PL reset does not help, only re-programming), fail (the hardware model reports an
error; modelled as a bus error on the start write), or finish with corrupted outputs (the driver
must notice).

The simulated device is only probed by pynq after :func:`install` (so importing this module on a
real board changes nothing); the driver can also be handed a :class:`SimulatedDevice` directly.
"""

from __future__ import annotations

import ctypes
import enum
import itertools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pynq.buffer import PynqBuffer
from pynq.pl_server.device import Device

from ..model.config import ModelConfig
from . import interface as itf
from .cma import CmaStatus, pages
from .hwh import BLOCK_DESIGN

log = logging.getLogger(__name__)

#: pynq picks the device with the lowest priority value; real devices use 40..200. Only devices
#: created by :func:`install` are ever probed, so this low value never shadows a real board.
PROBE_PRIORITY = 7
#: Where simulated DDR allocations start (each is page-aligned, like CMA allocations).
SIM_DDR_BASE = 0x1000_0000
_BOARD_IDS = itertools.count()
#: Accepted starts a device remembers (:attr:`SimulatedDevice.runs`).
RUNS_KEPT = 1024

#: hardware(images, weights_one_time, weights_experts, features_out, routing_out,
#:          num_images, task_id, reload_one_time_weights) -> return code (0 = ok, see CSIM_ERRORS)
Hardware = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int, int, int],
                    int]


class SimulatedDeviceError(RuntimeError):
    """The simulated hardware failed (bad pointer, hardware model error): a bus error on a
    board."""


class Fault(enum.Enum):
    """Injected misbehaviour of the simulated accelerator."""

    NONE = "none"
    #: ap_start is accepted but ap_done never rises; a PL reset brings the kernel back.
    HANG = "hang"
    #: like HANG, but the PL reset does not help (the kernel stays busy): only re-programming does.
    WEDGED = "wedged"
    #: the hardware model returns an error code: the start write raises ``SimulatedDeviceError``.
    ERROR = "error"
    #: the run completes but routing_out holds out-of-range expert ids (a DMA gone wrong).
    CORRUPT = "corrupt"


@dataclass(frozen=True)
class SimRun:
    """One accepted ap_start: the scalar arguments the driver programmed."""

    num_images: int
    task_id: int
    reload_one_time_weights: int


@dataclass
class _Allocation:
    handle: int
    address: int
    nbytes: int
    host: PynqBuffer | None  # None once freed: a freed buffer's memory goes back
    device: np.ndarray  # uint8 copy seen by the accelerator (empty once freed)
    freed: bool = False

    @property
    def host_bytes(self) -> np.ndarray:
        assert self.host is not None, "host bytes of a freed buffer"
        return self.host.view(np.uint8).reshape(-1)


_RTLD_NOW = 2
_LM_ID_NEWLM = -1
_RUN_SIGNATURE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                                  ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32,
                                  ctypes.c_int32)
_INT_FUNCTION = ctypes.CFUNCTYPE(ctypes.c_int32)
#: (library path, mtime, size) -> (private copy directory, dlmopen handle); one namespace per
#: build.
_LOADED: dict[tuple[str, int, int], tuple[tempfile.TemporaryDirectory, int]] = {}
_LOAD_LOCK = threading.Lock()


class _SharedKernel:
    """What the devices sharing one loaded library share: the kernel's static memory.

    ``lock`` serialises their runs (the kernel's scratch buffers are static); ``cache_owner`` is
    the :class:`CsimHardware` whose parameters the static parameter cache holds right now.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cache_owner: object | None = None


#: dlmopen handle -> its shared kernel state.
_KERNELS: dict[int, _SharedKernel] = {}


def _load_isolated(path: Path) -> int:
    """``dlmopen`` a private copy of ``path`` into a new link-map namespace; returns the handle.

    Why not ``ctypes.CDLL``: the kernel's scratch buffers are static locals of templates, which g++
    exports as ``STB_GNU_UNIQUE`` symbols, and the dynamic linker merges those across every library
    of a namespace. Two C-simulation builds for different model sizes loaded by one process (the
    csim backend's and this device's, or a tiny and a full model) would then share buffers sized
    for whichever came first, and overflow them. A namespace of its own makes this simulated
    accelerator's memory its own, as a separate board's BRAM would be. The copy keeps a running
    simulation safe from a rebuild of the file underneath it.
    """
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _LOAD_LOCK:
        if key not in _LOADED:
            tmp = tempfile.TemporaryDirectory(prefix="edgemoe_csim_")
            private = Path(tmp.name) / path.name
            shutil.copyfile(path, private)
            libc = ctypes.CDLL(None)
            libc.dlmopen.restype = ctypes.c_void_p
            libc.dlmopen.argtypes = [ctypes.c_long, ctypes.c_char_p, ctypes.c_int]
            libc.dlerror.restype = ctypes.c_char_p
            handle = libc.dlmopen(_LM_ID_NEWLM, str(private).encode(), _RTLD_NOW)
            if not handle:
                raise SimulatedDeviceError(f"cannot load C-simulation library {path}: "
                                           f"{(libc.dlerror() or b'dlmopen failed').decode()}")
            _LOADED[key] = (tmp, handle)
        return _LOADED[key][1]


def _symbol(handle: int, name: str, path: Path) -> int:
    libc = ctypes.CDLL(None)
    libc.dlsym.restype = ctypes.c_void_p
    libc.dlsym.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    address = libc.dlsym(handle, name.encode())
    if not address:
        raise SimulatedDeviceError(f"{path}: symbol {name} missing; not an edgemoe C-simulation "
                                   "library")
    return address


class CsimHardware:
    """The C-simulation shared library (ABI of docs/ARCHITECTURE.md) as a :data:`Hardware`
    callable.

    One instance is one board's accelerator. The library is loaded in a link-map namespace of its
    own (see :func:`_load_isolated`), shared by every instance using the same build, so their
    kernels share one static parameter cache, where separate boards would each have their BRAM.
    Each instance therefore keeps the one-time weights of its last reload, and a run without
    reload after another instance refilled the cache restores them first: device A, B, A runs
    on A's parameters, and a device that never loaded gets the kernel's "no parameters" error.
    """

    def __init__(self, library: str | Path):
        path = Path(library)
        if not path.is_file():
            raise SimulatedDeviceError(f"C-simulation library {path} not found (build it with "
                                       "`make hls`)")
        self.path = path
        handle = _load_isolated(path)
        version = int(_INT_FUNCTION(_symbol(handle, "edgemoe_csim_abi_version", path))())
        if version != itf.ABI_VERSION:
            raise SimulatedDeviceError(
                f"{path}: ABI version {version}, interface.py expects {itf.ABI_VERSION}; rebuild "
                "hls_accel")
        self._signature = _INT_FUNCTION(_symbol(handle, "edgemoe_csim_model_signature", path))
        self._run = _RUN_SIGNATURE(_symbol(handle, "edgemoe_csim_run", path))
        with _LOAD_LOCK:
            self._kernel = _KERNELS.setdefault(handle, _SharedKernel())
        #: This board's parameter cache: the one-time weights as of its last reload.
        self._cached_one_time: np.ndarray | None = None

    def check_model(self, cfg: ModelConfig) -> None:
        """Refuse a library compiled for another model."""
        got, want = int(self._signature()), itf.model_signature(cfg)
        if got != want:
            raise SimulatedDeviceError(f"{self.path} was built for another model "
                                       f"(signature {got}, model needs {want}); rebuild it for "
                                       "this config")

    def __call__(self, images: np.ndarray, weights_one_time: np.ndarray,
                 weights_experts: np.ndarray, features_out: np.ndarray, routing_out: np.ndarray,
                 num_images: int, task_id: int, reload_one_time_weights: int) -> int:
        _check_buffers(images, weights_one_time, weights_experts, features_out, routing_out,
                       num_images)

        def ptr(a: np.ndarray) -> int:
            return a.ctypes.data
        kernel = self._kernel
        with kernel.lock:
            one_time, reload = weights_one_time, reload_one_time_weights
            if not reload and kernel.cache_owner is not self:
                if self._cached_one_time is None:
                    return itf.CSIM_ERR_NO_ONE_TIME_WEIGHTS  # this board never loaded any
                # Refill the cache with what this board had. For this one run the snapshot also
                # supplies the streamed linear weights, which equal the device buffer's unless a
                # driver rewrote that buffer without asking for a reload.
                one_time, reload = self._cached_one_time, 1
            code = int(self._run(ptr(images), ptr(one_time), ptr(weights_experts),
                                 ptr(features_out), ptr(routing_out), num_images, task_id, reload))
            if code == itf.CSIM_OK:
                if reload_one_time_weights:
                    self._cached_one_time = np.array(weights_one_time, copy=True)
                kernel.cache_owner = self
            return code


def _check_buffers(images: np.ndarray, one_time: np.ndarray, experts: np.ndarray,
                   features: np.ndarray, routing: np.ndarray, num_images: int) -> None:
    """What the C-simulation needs of its buffers before it gets their pointers (it trusts them):
    the right dtypes, C-contiguous, outputs writeable, and ``num_images`` images present. The
    sizes the model fixes are checked by ``check_model`` and the device's pointer decoding."""
    wants = (("images", images, np.uint8, False), ("weights_one_time", one_time, np.int16, False),
             ("weights_experts", experts, np.int16, False),
             ("features_out", features, np.int32, True), ("routing_out", routing, np.int32, True))
    for name, arr, dtype, written in wants:
        if not isinstance(arr, np.ndarray) or arr.dtype != dtype or not arr.flags.c_contiguous:
            got = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
            raise SimulatedDeviceError(f"{name} must be a C-contiguous {np.dtype(dtype).name} "
                                       f"array, got {got}")
        if written and not arr.flags.writeable:
            raise SimulatedDeviceError(f"{name} is written by the accelerator but is read-only")
    for name, arr in (("images", images), ("features_out", features), ("routing_out", routing)):
        if arr.ndim < 1 or arr.shape[0] < num_images:
            raise SimulatedDeviceError(f"{name} holds {arr.shape[0] if arr.ndim else 0} images, "
                                       f"the run needs {num_images}")


class SimulatedDevice(Device):
    """A pynq ``Device`` with one ``edgemoe_top`` accelerator behind a register interface.

    ``config`` is the model the simulated hardware was "synthesised" for (buffer sizes are checked
    against it); ``hardware`` computes a run (default: none until set; tests and the fpga backend
    pass a :class:`CsimHardware`); ``completion_delay_s`` delays ap_done after a start, so polling
    is exercised as on the board.
    """

    _probe_priority_ = PROBE_PRIORITY
    _installed: list[SimulatedDevice] = []

    @classmethod
    def _probe_(cls) -> list[SimulatedDevice]:
        return list(cls._installed)

    def __init__(self, config: ModelConfig, hardware: Hardware | None = None, *,
                 tag: str | None = None, base_address: int = BLOCK_DESIGN.control_base,
                 completion_delay_s: float = 0.0, cma_bytes: int | None = None):
        # Each simulated board is a device of its own (the driver's device lock is per tag).
        super().__init__(tag or f"edgemoe_sim_{os.getpid()}_{next(_BOARD_IDS)}")
        self.name = "edgemoe-simulated-zcu102"
        self.capabilities = {"REGISTER_RW": True}
        self.config = config
        self.hardware = hardware
        self.fault = Fault.NONE
        self.base_address = base_address
        self.completion_delay_s = completion_delay_s
        #: Simulated CMA pool (None: not modelled, the driver's check passes).
        self.cma_bytes = cma_bytes
        self.timestamp = ""
        self.bitfile_name = None
        self._lock = threading.Lock()
        self._regs: dict[int, int] = {}
        self._ctrl = itf.AP_IDLE
        self._done_at: float | None = None
        self._wedged = False
        self._allocs: dict[int, _Allocation] = {}
        self._next_address = SIM_DDR_BASE
        self._layout: itf.WeightLayout | None = None
        #: The last ``RUNS_KEPT`` accepted starts, in order, and register writes per offset (for
        #: tests and debugging; bounded, so a device that runs for days does not grow).
        self.runs: deque[SimRun] = deque(maxlen=RUNS_KEPT)
        self.register_writes: Counter[int] = Counter()
        self.allocations = 0
        self.downloads = 0
        self.pl_resets = 0
        self.syncs_to_device = 0
        self.syncs_from_device = 0

    # ------------------------------------------------------------------ pynq Device API
    def get_bitfile_metadata(self, bitfile_name: str, partial: bool = False) -> Any:
        """Parse the ``.hwh``/``.xclbin`` beside the bitstream with pynq's own handler."""
        from pynq.pl_server.embedded_device import _get_bitstream_handler

        parser = _get_bitstream_handler(bitfile_name).get_parser(partial=partial)
        if parser is None:
            raise SimulatedDeviceError(f"no .hwh or .xclbin metadata beside {bitfile_name}")
        return parser

    def download(self, bitstream: Any, parser: Any = None) -> None:
        """'Program' the PL: reset the accelerator and record the bitstream as loaded."""
        self._reset_control_block(clear_wedge=True)
        self.downloads += 1
        self.post_download(bitstream, parser, self.name)

    def pl_reset(self) -> None:
        """A PS-to-PL reset pulse (pl_resetn0 -> proc_sys_reset -> ap_rst_n): the control block
        returns to idle, unless a :attr:`Fault.WEDGED` run holds it."""
        self.pl_resets += 1
        self._reset_control_block(clear_wedge=False)

    def _reset_control_block(self, clear_wedge: bool) -> None:
        with self._lock:
            if clear_wedge:
                self._wedged = False
            if self._wedged:
                return
            self._regs.clear()
            self._ctrl = itf.AP_IDLE
            self._done_at = None

    def cma_status(self) -> CmaStatus | None:
        """The simulated CMA pool: ``cma_bytes`` less what live buffers hold (page-rounded)."""
        if self.cma_bytes is None:
            return None
        used = sum(pages(a.nbytes) for a in self._allocs.values() if not a.freed)
        return CmaStatus(self.cma_bytes, max(self.cma_bytes - used, 0))

    def allocate(self, shape: tuple[int, ...] | int, dtype: np.dtype | str,
                 **kwargs: object) -> PynqBuffer:
        """A host buffer plus its device-side copy at a fresh page-aligned simulated DDR
        address."""
        handle = len(self._allocs) + 1
        status = self.cma_status()
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        if status is not None and pages(nbytes) > status.free_bytes:
            raise SimulatedDeviceError(f"CMA exhausted: {nbytes} bytes wanted, "
                                       f"{status.free_bytes} free")
        buf = PynqBuffer(shape, dtype, device_address=self._next_address, device=self, bo=handle)
        buf[...] = 0
        # pynq's freebuffer() hands ``pointer`` back to ``return_to`` when ``memory`` is set:
        # that is how this device learns a buffer was freed.
        buf.memory = self
        buf.pointer = handle
        buf.return_to = self
        alloc = _Allocation(handle, self._next_address, buf.nbytes, buf,
                            np.zeros(buf.nbytes, np.uint8))
        self._allocs[handle] = alloc
        self._next_address += pages(buf.nbytes)
        self.allocations += 1
        return buf

    def return_pointer(self, handle: int) -> None:
        alloc = self._allocs.get(handle)
        if alloc is not None:
            alloc.freed = True
            if alloc.host is not None:
                alloc.host.freed = True  # pynq would otherwise munmap() memory it did not map
            # Keep the address range (a later access is reported as use after free), not the
            # memory: a board shared by backends that come and go must not grow.
            alloc.host, alloc.device = None, np.empty(0, np.uint8)

    def flush(self, bo: int, offset: int, vaddr: int, nbytes: int) -> None:
        """Host -> device copy (``sync_to_device``)."""
        alloc = self._live(bo)
        alloc.device[offset:offset + nbytes] = alloc.host_bytes[offset:offset + nbytes]
        self.syncs_to_device += 1

    def invalidate(self, bo: int, offset: int, vaddr: int, nbytes: int) -> None:
        """Device -> host copy (``sync_from_device``)."""
        alloc = self._live(bo)
        alloc.host_bytes[offset:offset + nbytes] = alloc.device[offset:offset + nbytes]
        self.syncs_from_device += 1

    @property
    def live_buffers(self) -> int:
        return sum(not a.freed for a in self._allocs.values())

    def read_registers(self, address: int, length: int) -> bytes:
        offset = self._reg_offset(address, length)
        with self._lock:
            if offset == itf.REG_AP_CTRL:
                self._maybe_complete()
                value = self._ctrl
                self._ctrl &= ~(itf.AP_DONE | itf.AP_READY)  # clear on read
            else:
                value = self._regs.get(offset, 0)
        return int(value).to_bytes(4, "little")[:length]

    def write_registers(self, address: int, data: bytes) -> None:
        offset = self._reg_offset(address, len(data))
        for i in range(0, len(data), 4):
            self._write_word(offset + i, int.from_bytes(data[i:i + 4], "little"))

    # ------------------------------------------------------------------ control block model
    def _reg_offset(self, address: int, length: int) -> int:
        offset = address - self.base_address
        if offset < 0 or offset + max(length, 4) > itf.CONTROL_RANGE_BYTES or offset % 4:
            raise SimulatedDeviceError(
                f"AXI-lite access at 0x{address:X} ({length} bytes) outside "
                f"{itf.TOP_FUNCTION}'s control registers "
                f"0x{self.base_address:X}..0x{self.base_address + itf.CONTROL_RANGE_BYTES - 1:X}")
        return offset

    def _write_word(self, offset: int, value: int) -> None:
        self.register_writes[offset] += 1
        with self._lock:
            if offset == itf.REG_AP_CTRL:
                self._maybe_complete()  # the kernel finishes whether or not anyone polled
                self._ctrl = (self._ctrl & ~itf.AP_AUTO_RESTART) | (value & itf.AP_AUTO_RESTART)
                if value & itf.AP_START and self._ctrl & itf.AP_IDLE:
                    self._start()
            elif offset == itf.REG_ISR:
                # ap_done / ap_ready interrupt status bits: toggle on write, as in Vitis HLS
                self._regs[offset] = self._regs.get(offset, 0) ^ (value & 0x3)
            else:
                self._regs[offset] = value & 0xFFFF_FFFF

    def _maybe_complete(self) -> None:
        if self._done_at is not None and time.monotonic() >= self._done_at:
            self._done_at = None
            self._ctrl = (self._ctrl & ~itf.AP_START) | itf.AP_DONE | itf.AP_IDLE | itf.AP_READY
            if self._regs.get(itf.REG_IER, 0) & 0x1:
                self._regs[itf.REG_ISR] = self._regs.get(itf.REG_ISR, 0) | 0x1

    def _pointer(self, name: str) -> int:
        off = itf.POINTER_ARGS[name]
        return self._regs.get(off, 0) | (self._regs.get(off + 4, 0) << 32)

    def _resolve(self, name: str, nbytes: int) -> np.ndarray:
        """The device memory a pointer register points at, checked to hold ``nbytes``."""
        address = self._pointer(name)
        for alloc in self._allocs.values():
            if alloc.address <= address < alloc.address + alloc.nbytes:
                if alloc.freed:
                    raise SimulatedDeviceError(f"{name} = 0x{address:X} points into a freed "
                                               "buffer")
                start = address - alloc.address
                if start + nbytes > len(alloc.device):
                    raise SimulatedDeviceError(
                        f"{name} = 0x{address:X}: buffer has {len(alloc.device) - start} bytes "
                        f"from there, the kernel accesses {nbytes}")
                return alloc.device[start:start + nbytes]
        raise SimulatedDeviceError(f"{name} = 0x{address:X} is not an allocated buffer (DMA "
                                   "decode error)")

    def _start(self) -> None:
        # before the control block changes: a failing source refuses the start
        fault = self.next_fault()
        args = {name: self._regs.get(off, 0) for name, off in itf.SCALAR_ARGS.items()}
        run = SimRun(args["num_images"], args["task_id"], args["reload_one_time_weights"])
        self.runs.append(run)
        self._ctrl = (self._ctrl | itf.AP_START) & ~(itf.AP_IDLE | itf.AP_DONE | itf.AP_READY)
        log.debug("simulated %s start: %s", itf.TOP_FUNCTION, run)
        if fault in (Fault.HANG, Fault.WEDGED):
            self._wedged = fault is Fault.WEDGED
            return
        try:
            code = self._execute(run, fault)
        except Exception:
            self._ctrl = (self._ctrl & ~itf.AP_START) | itf.AP_IDLE
            raise
        if code != itf.CSIM_OK:
            self._ctrl = (self._ctrl & ~itf.AP_START) | itf.AP_IDLE
            raise SimulatedDeviceError(f"{itf.TOP_FUNCTION} hardware model returned {code}: "
                                       f"{itf.CSIM_ERRORS.get(code, 'unknown error')} ({run})")
        self._done_at = time.monotonic() + self.completion_delay_s

    def next_fault(self) -> Fault:
        """The fault of the run being started (called at each accepted ap_start): :attr:`fault`.

        The one place a fault enters a run, so a subclass can take it from elsewhere (the soak's
        device reads a file another process writes: test/host_hardware.py)."""
        return self.fault

    def _execute(self, run: SimRun, fault: Fault) -> int:
        if fault is Fault.ERROR:
            return itf.CSIM_ERR_NUM_IMAGES if run.num_images <= 0 else itf.CSIM_ERR_TASK_ID
        if self.hardware is None:
            raise SimulatedDeviceError("simulated device has no hardware model attached")
        if not 1 <= run.num_images <= itf.MAX_IMAGES:
            return itf.CSIM_ERR_NUM_IMAGES
        cfg = self.config
        if self._layout is None:  # the model is fixed per board; laying it out costs ~8 ms a run
            self._layout = itf.weight_layout(cfg)
        layout = self._layout
        shapes = itf.buffer_shapes(cfg, run.num_images)

        def view(name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
            nbytes = int(np.prod(shape)) * dtype.itemsize
            return self._resolve(name, nbytes).view(dtype).reshape(shape)

        images = view("images", *shapes["images"])
        one_time = view("weights_one_time", (layout.one_time_words,), np.dtype(np.int16))
        experts = view("weights_experts", (layout.experts_words,), np.dtype(np.int16))
        features = view("features_out", *shapes["features_out"])
        routing = view("routing_out", *shapes["routing_out"])
        code = self.hardware(images, one_time, experts, features, routing, run.num_images,
                             run.task_id, run.reload_one_time_weights)
        if code == itf.CSIM_OK and fault is Fault.CORRUPT:
            routing[...] = -1
        return code

    def _live(self, handle: int) -> _Allocation:
        alloc = self._allocs.get(handle)
        if alloc is None or alloc.freed:
            raise SimulatedDeviceError(f"sync of buffer handle {handle}, which is not allocated")
        return alloc


def install(device: SimulatedDevice) -> SimulatedDevice:
    """Make ``device`` what pynq probes and uses by default (``Device.active_device``)."""
    if device not in SimulatedDevice._installed:
        SimulatedDevice._installed.append(device)
    Device.active_device = device
    return device


def uninstall(device: SimulatedDevice) -> None:
    """Undo :func:`install` (the next ``Device.active_device`` falls back to what pynq probes)."""
    if device in SimulatedDevice._installed:
        SimulatedDevice._installed.remove(device)
    if getattr(Device, "_active_device", None) is device:
        del Device._active_device
    probed = getattr(Device, "_devices", None)  # pynq caches its first probe
    if probed is not None and device in probed:
        probed.remove(device)


#: model signature -> (the process's simulated board for that kernel, number of users)
_SHARED_BOARDS: dict[int, tuple[SimulatedDevice, int]] = {}
_SHARED_LOCK = threading.Lock()


def acquire_board(config: ModelConfig, library: str | Path) -> SimulatedDevice:
    """The process's simulated board for ``config``'s kernel, created on first use.

    A board carries one bitstream, so two ``fpga`` backends of one process that simulate the same
    kernel share one board, as they would share the ZCU102: the second attaches to it (see
    ``device_lock``). Pair with :func:`release_board`; the last release drops the board.
    """
    key = itf.model_signature(config)
    with _SHARED_LOCK:
        board, users = _SHARED_BOARDS.get(key, (None, 0))
        if board is None:
            hardware = CsimHardware(library)
            hardware.check_model(config)
            board = SimulatedDevice(config, hardware)
        _SHARED_BOARDS[key] = (board, users + 1)
        return board


def release_board(board: SimulatedDevice) -> None:
    with _SHARED_LOCK:
        for key, (held, users) in list(_SHARED_BOARDS.items()):
            if held is board:
                if users > 1:
                    _SHARED_BOARDS[key] = (held, users - 1)
                else:
                    del _SHARED_BOARDS[key]
                return
