# SPDX-License-Identifier: Apache-2.0
"""``hardware_id`` of the node's /diagnostics: the device a backend computes on, in words.

A monitor groups and tracks statuses by ``hardware_id``, so it must name the device, not the
software: the CPU model and its cores for the host backends (cpu, reference, fixed, null), the
C-simulation library for csim ("simulated"), the bitstream and the identity its ``.hwh`` gives
(design, board, part, IP, build time) for fpga. Plain Python (no rclpy); computed once per
configure (``model_loader.load_model``), never per report: reading ``/proc/cpuinfo`` or parsing
an ``.hwh`` of several MB is not free.
"""

from __future__ import annotations

import os
import platform
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from ..accel.interface import TOP_FUNCTION

CPUINFO = Path("/proc/cpuinfo")
#: /proc/cpuinfo keys naming the processor, by preference: x86 ("model name"), then what ARM
#: kernels give (a board "Model" on a Raspberry Pi / Jetson, else the SoC "Hardware").
CPU_MODEL_KEYS = ("model name", "Model", "Hardware", "cpu model")
#: Host backends: they compute on the CPU.
HOST_BACKENDS = ("cpu", "reference", "fixed", "null")
#: What hwh_identity reports of an ``.hwh`` (Vivado's hardware handoff): key, label.
_HWH_LABELS = (("name", "design"), ("board", "board"), ("device", "part"), ("ip", "ip"),
               ("built", "built"))


def cpu_model(cpuinfo: str) -> str:
    """The processor's name from the text of ``/proc/cpuinfo``; ``platform`` when it has none."""
    found: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if sep and value and key in CPU_MODEL_KEYS and key not in found:
            found[key] = value
    for key in CPU_MODEL_KEYS:
        if key in found:
            return found[key]
    return platform.processor() or platform.machine() or "unknown CPU"


def usable_cores() -> int:
    """Cores this process may run on (its affinity), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def host_cpu(cpuinfo_path: Path = CPUINFO) -> str:
    """``<CPU model>, <n> cores``."""
    try:
        text = cpuinfo_path.read_text(errors="replace")
    except OSError:
        text = ""
    cores = usable_cores()
    return f"{cpu_model(text)}, {cores} core{'s' if cores != 1 else ''}"


def hwh_identity(hwh: Path) -> str:
    """What an ``.hwh`` says the bitstream is: design, board, part, our IP's VLNV, build time.

    Read with iterparse up to our IP's module, so a multi-MB handoff costs little; '' when the
    file is absent or unreadable (the caller says so)."""
    info: dict[str, str] = {}
    try:
        for _event, elem in ET.iterparse(hwh, events=("start",)):
            if elem.tag == "EDKSYSTEM":
                info["built"] = elem.get("TIMESTAMP", "")
            elif elem.tag == "SYSTEMINFO":
                info.update({k: elem.get(k.upper(), "") for k in ("name", "board", "device")})
            elif elem.tag == "MODULE" and elem.get("MODTYPE") == TOP_FUNCTION:
                info["ip"] = f"{elem.get('INSTANCE', '')} {elem.get('VLNV', '')}".strip()
                break
    except (OSError, ET.ParseError):
        return ""
    return ", ".join(f"{label} {info[key]}" for key, label in _HWH_LABELS if info.get(key))


def fpga_hardware(bitstream: Path | None, simulate: bool, csim_library: Path | None) -> str:
    """The fpga backend's device: the bitstream and its ``.hwh`` identity, or the simulated
    board."""
    if simulate:
        lib = f"csim library {csim_library}" if csim_library else "csim library"
        return f"fpga simulated ({lib})"
    if bitstream is None:
        return "fpga (no bitstream)"
    identity = hwh_identity(bitstream.with_suffix(".hwh"))
    return f"fpga {bitstream} ({identity or 'no readable .hwh beside it'})"


def hardware_id(backend_name: str, backend: Any) -> str:
    """``hardware_id`` for a loaded backend object (``Engine.backend``)."""
    if backend_name == "fpga":
        device = getattr(backend, "sim_device", None)  # the simulated board runs this library
        library = (getattr(getattr(device, "hardware", None), "path", None)
                   or getattr(backend, "csim_library", None))
        simulate = bool(getattr(backend, "simulate", False))
        return fpga_hardware(getattr(backend, "bitstream", None), simulate,
                             Path(library) if library else None)
    if backend_name == "csim":
        lib = getattr(backend, "library_path", None)
        return f"csim simulated (library {lib})" if lib else "csim simulated"
    threads = getattr(backend, "threads", 1)
    on = f" on {threads} threads" if isinstance(threads, int) and threads > 1 else ""
    return f"{backend_name}{on}: {host_cpu()}"
