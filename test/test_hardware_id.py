# SPDX-License-Identifier: Apache-2.0
"""/diagnostics ``hardware_id`` names the device: CPU model and cores for the host backends, the
simulated board and its C-simulation library, or the bitstream and its ``.hwh`` identity."""

from pathlib import Path

import pytest

from edgemoe_ros.accel import hwh
from edgemoe_ros.backends import create_backend
from edgemoe_ros.backends.csim import CSimBackend
from edgemoe_ros.backends.fpga import FpgaBackend
from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import random_init
from edgemoe_ros.ros import hardware_id as H
from edgemoe_ros.ros import model_loader as ml
from edgemoe_ros.ros import params as P

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
flags\t\t: fpu vme

processor\t: 1
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
"""
#: A ZCU102's Cortex-A53 under PetaLinux: no "model name", a SoC "Hardware" line at most.
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 200.00
CPU implementer\t: 0x41
CPU part\t: 0xd03

Hardware\t: ZynqMP ZCU102 Rev1.0
"""


def test_cpu_model_from_cpuinfo_x86_arm_and_nothing():
    assert H.cpu_model(X86_CPUINFO) == "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"
    assert H.cpu_model(ARM_CPUINFO) == "ZynqMP ZCU102 Rev1.0"
    assert H.cpu_model("") != ""  # platform's answer, never an empty id


def test_host_cpu_reads_the_file_and_counts_usable_cores(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(X86_CPUINFO)
    cores = H.usable_cores()
    unit = "cores" if cores != 1 else "core"
    assert H.host_cpu(info) == f"Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz, {cores} {unit}"
    assert H.host_cpu(tmp_path / "missing").endswith(f", {cores} {unit}")


def test_hwh_identity_of_our_overlay_and_of_a_bad_file(tmp_path):
    bit = hwh.write_overlay(tmp_path)
    ident = H.hwh_identity(bit.with_suffix(".hwh"))
    bd = hwh.BLOCK_DESIGN
    assert ident.startswith(f"design {bd.name}, board {bd.board}, part xczu9eg, ")
    assert f"ip {bd.ip_instance} {bd.ip_vlnv}" in ident and ", built " in ident
    assert H.hwh_identity(tmp_path / "none.hwh") == ""
    bad = tmp_path / "bad.hwh"
    bad.write_text("<EDKSYSTEM><unclosed")
    assert H.hwh_identity(bad) == ""


def test_fpga_names_bitstream_and_hwh_or_the_simulated_board(tmp_path):
    bit = hwh.write_overlay(tmp_path)
    identity = H.hwh_identity(bit.with_suffix(".hwh"))
    assert H.fpga_hardware(bit, False, None) == f"fpga {bit} ({identity})"
    bit.with_suffix(".hwh").unlink()
    assert H.fpga_hardware(bit, False, None) == f"fpga {bit} (no readable .hwh beside it)"
    lib = tmp_path / "libedgemoe_csim.so"
    sim = FpgaBackend(simulate=True, csim_library=lib)  # not opened: naming it costs nothing
    assert H.hardware_id("fpga", sim) == f"fpga simulated (csim library {lib})"


def test_host_and_csim_backends():
    cpu = create_backend("cpu", threads=2)
    try:
        cpu.load(random_init(tiny_config(), seed=0))  # its thread pool exists once loaded
        on = " on 2 threads" if cpu.threads == 2 else ""  # the numpy path runs on one
        assert H.hardware_id("cpu", cpu) == f"cpu{on}: {H.host_cpu()}"
    finally:
        cpu.close()
    assert H.hardware_id("reference", create_backend("reference")) == f"reference: {H.host_cpu()}"
    assert H.hardware_id("csim", CSimBackend()) == "csim simulated"  # before load: no library yet


def test_loaded_model_names_primary_and_fallback_once(monkeypatch):
    base = {p.name: tuple(p.default) if isinstance(p.default, list) else p.default
            for p in P.PARAMS}
    params = P.NodeParams(**{**base, "backend": "reference", "fallback_backend": "cpu"})
    model = ml.load_model(params, random_init(tiny_config(), seed=0))
    try:
        assert model.hardware_of(False) == f"reference: {H.host_cpu()}"
        assert model.hardware_of(True) == f"cpu: {H.host_cpu()}"
        reads = []
        monkeypatch.setattr(H, "host_cpu", lambda *a: reads.append(a) or "changed")
        model.hardware_of(False)
        assert reads == []  # computed at configure, not per report
    finally:
        model.close()


@pytest.mark.parametrize("path", [Path("/proc/cpuinfo")])
def test_this_machine_has_a_cpu_name(path):
    if not path.exists():
        pytest.skip("no /proc/cpuinfo here")
    assert H.cpu_model(path.read_text()) not in ("", "unknown CPU")
