# SPDX-License-Identifier: Apache-2.0
"""Driver safety on the simulated PYNQ device: the .hwh register check (on our generated .hwh and
on a real Vivado one), one process per device, PL reset before re-programming, the CMA check."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pynq")

from edgemoe_ros.accel import cma, device_lock, hwh, sim_device  # noqa: E402
from edgemoe_ros.accel import interface as itf  # noqa: E402
from edgemoe_ros.accel.pl_reset import PL_RESETN_EMIO, PsGpioPlReset  # noqa: E402
from edgemoe_ros.accel.pynq_driver import AcceleratorBusy, AcceleratorError, EdgeMoeDriver  # noqa: E402
from edgemoe_ros.backends import create_backend  # noqa: E402
from edgemoe_ros.model.config import ModelConfig, tiny_config  # noqa: E402
from edgemoe_ros.model.weights import random_init  # noqa: E402

CFG = tiny_config()
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "vivado_hwh"
REAL_HWH = FIXTURES / "bnn_lfcW1A1_ultra96.hwh.gz"
REAL_HWH_SHA256 = "eea800a1189499719db7f550e77c0e8008ced5ca25e0a7ca87de3cf0900ed85d"
MIB = 1 << 20


@pytest.fixture(scope="module")
def overlay(tmp_path_factory) -> Path:
    return hwh.write_overlay(tmp_path_factory.mktemp("overlay"))


@pytest.fixture(scope="module")
def csim_lib(tiny_csim_library):
    return tiny_csim_library


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, (1, CFG.img_h, CFG.img_w, 3), dtype=np.uint8)


@pytest.fixture
def device(csim_lib):
    return sim_device.SimulatedDevice(CFG, sim_device.CsimHardware(csim_lib))


@pytest.fixture(scope="module")
def real_overlay(tmp_path_factory) -> Path:
    """The real Vivado .hwh beside a placeholder .bit and our .xclbin (pynq wants all three)."""
    text = gzip.decompress(REAL_HWH.read_bytes())
    assert hashlib.sha256(text).hexdigest() == REAL_HWH_SHA256, \
        "fixture differs from the published file"
    directory = tmp_path_factory.mktemp("real_hwh")
    bit = directory / "bnn.bit"
    bit.write_bytes(hwh.placeholder_bitstream())
    bit.with_suffix(".hwh").write_bytes(text)
    bit.with_suffix(".xclbin").write_bytes(hwh.generate_xclbin())
    return bit


def _csim_outputs(weights, images, task_id):
    backend = create_backend("csim")
    backend.load(weights)
    try:
        return backend.run_raw(images, task_id)
    finally:
        backend.close()


def _lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


# ------------------------------------------------------------------ register map check
def test_generated_hwh_passes_the_register_check():
    assert hwh.register_map_mismatch(hwh.expected_registers()) is None
    assert hwh.expected_registers()["task_id"] == itf.REGISTER_MAP["task_id"]
    assert hwh.expected_registers()["CTRL"] == itf.REG_AP_CTRL


def test_checked_registers_are_interface_register_map_in_hls_naming():
    """What the driver checks is REGISTER_MAP as Vitis HLS names it: control registers by their
    .hwh names, pointers as <arg>_1 (REGISTER_MAP's low word) plus <arg>_2, scalars as they are."""
    hls_name = {"ap_ctrl": "CTRL", "gie": "GIER", "ier": "IP_IER", "isr": "IP_ISR",
                **{name: f"{name}_1" for name in itf.POINTER_ARGS}}
    expected = hwh.expected_registers()
    assert {hls_name.get(name, name): offset for name, offset in itf.REGISTER_MAP.items()} == {
        name: offset for name, offset in expected.items() if not name.endswith("_2")}
    assert {name: offset for name, offset in expected.items() if name.endswith("_2")} == {
        f"{name}_2": offset + 4 for name, offset in itf.POINTER_ARGS.items()}


@pytest.mark.parametrize("change, message", [
    (lambda r: r.update(task_id=0x50),
     "register 'task_id' is at 0x50 in the .hwh but at 0x54 in interface.py"),
    (lambda r: r.pop("weights_experts_2"),
     r"register 'weights_experts_2' \(0x2C in interface.py\) is missing: the .hwh has no "
     r"register there"),
    (lambda r: r.update(imgs_1=r.pop("images_1")),
     r"register 'images_1' \(0x10 in interface.py\) is missing: the .hwh has 'imgs_1' there"),
    (lambda r: r.update(debug=0x64),
     "the .hwh has register 'debug' at 0x64, which interface.py does not know"),
])
def test_register_mismatch_names_the_first_difference(change, message):
    registers = hwh.expected_registers()
    change(registers)
    assert re.fullmatch(message, hwh.register_map_mismatch(registers))


def test_first_difference_is_the_lowest_offset():
    registers = hwh.expected_registers()
    registers["reload_one_time_weights"] = 0x60
    registers["num_images"] = 0x48
    assert "'num_images'" in hwh.register_map_mismatch(registers)


def test_driver_refuses_an_overlay_whose_register_moved(tmp_path, device):
    bit = hwh.write_overlay(tmp_path)
    text = bit.with_suffix(".hwh").read_text()
    moved, n = re.subn(r'(<REGISTER NAME="task_id">.*?ADDRESS_OFFSET" VALUE=")84(")', r"\g<1>80\2",
                       text)
    assert n == 1
    bit.with_suffix(".hwh").write_text(moved)
    with pytest.raises(AcceleratorError,
                       match=r"register 'task_id' is at 0x50 in the .hwh but at 0x54 in "
                             r"interface.py.*Rebuild the overlay"):
        EdgeMoeDriver(bit, CFG, download=False, device=device)
    assert device.allocations == 0  # refused before any buffer was taken
    EdgeMoeDriver(hwh.write_overlay(tmp_path / "good"), CFG, download=False, device=device).close()


def test_real_vivado_hwh_is_parsed_and_refused(real_overlay, device):
    """pynq parses the real Vivado .hwh; the driver finds no edgemoe_top in it, and pointed at its
    HLS IP it refuses it naming the first register that differs."""
    with pytest.raises(AcceleratorError, match=r"no edgemoe_top IP found.*BlackBoxJam_0 "
                                               r"\(xilinx.com:hls:BlackBoxJam:1.0\)"):
        EdgeMoeDriver(real_overlay, CFG, download=False, device=device)
    with pytest.raises(AcceleratorError,
                       match=r"BlackBoxJam_0 does not have the register map of interface.py "
                             r".*register 'images_1' \(0x10 in interface.py\) is missing: "
                             r"the .hwh has 'in_V_1' there"):
        EdgeMoeDriver(real_overlay, CFG, download=False, device=device, ip_name="BlackBoxJam_0")
    assert device.allocations == 0
    # every failed open gave the device back
    EdgeMoeDriver(hwh.write_overlay(real_overlay.parent / "ours"), CFG, download=False,
                  device=device).close()


def test_our_generated_hwh_follows_the_real_vivado_conventions(real_overlay):
    """What hwh.py copies from Vitis HLS exports holds in a real one: control registers, CTRL bits,
    pointer arguments as <arg>_1/<arg>_2 (low word first, 12 bytes per pointer), 8 per scalar."""
    import pynq

    real = pynq.Overlay(str(real_overlay), download=False, device=sim_device.SimulatedDevice(CFG))
    desc = real.ip_dict["BlackBoxJam_0"]
    regs = {name: r["address_offset"] for name, r in desc["registers"].items()}
    ours = hwh.expected_registers()
    for control in ("CTRL", "GIER", "IP_IER", "IP_ISR"):
        assert regs[control] == ours[control], control
    ctrl = desc["registers"]["CTRL"]["fields"]
    ours_ctrl = {name: bit for name, bit, _, _
                 in next(r for r in hwh.hwh_registers() if r.name == "CTRL").fields}
    assert {f: ctrl[f]["bit_offset"] for f in ours_ctrl} == ours_ctrl
    assert (regs["in_V_2"] - regs["in_V_1"], regs["out_V_1"] - regs["in_V_1"]) == (4, 12)
    assert regs["doInit"] - regs["out_V_1"] == 12 and regs["targetLayer"] - regs["doInit"] == 8
    assert regs["in_V_1"] == min(itf.POINTER_ARGS.values())  # arguments start at 0x10 in both


# ------------------------------------------------------------------ one process per device
_HOLD_LOCK = """
import sys
from pathlib import Path
from edgemoe_ros.accel import device_lock
device_lock.claim(Path(sys.argv[1]), Path(sys.argv[2]))
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_driver_in_another_process_fails_naming_the_owner(tmp_path, overlay, device):
    lock = tmp_path / "board.lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(lock), str(overlay)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(AcceleratorError,
                           match=rf"in use by another process \(pid {holder.pid}, .*one process "
                                 "drives it"):
            EdgeMoeDriver(overlay, CFG, download=True, device=device, lock_path=lock)
        assert device.downloads == 0  # refused before touching the PL
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    # the owner exited: the kernel dropped its lock
    with EdgeMoeDriver(overlay, CFG, download=False, device=device, lock_path=lock) as drv:
        assert not drv.attached and not _lock_is_free(lock)
    assert _lock_is_free(lock)


def test_a_second_driver_in_the_process_attaches_without_reprogramming(tmp_path, overlay, device,
                                                                       images):
    lock = tmp_path / "board.lock"
    a_weights, b_weights = random_init(CFG, seed=11), random_init(CFG, seed=12)
    first = EdgeMoeDriver(overlay, CFG, download=False, device=device, lock_path=lock)
    # download=True would program the PL (pynq sets the PL clocks, which the simulation cannot):
    # it opens only because attaching skips the download
    second = EdgeMoeDriver(overlay, CFG, download=True, device=device, lock_path=lock)
    try:
        assert (first.attached, second.attached, device.downloads) == (False, True, 0)
        first.load_weights(a_weights)
        second.load_weights(b_weights)
        got = [first.run(images, 0), second.run(images, 0), first.run(images, 0),
               first.run(images, 0)]
        # each handover reloads the parameter cache; the same driver again does not
        assert [r.reload_one_time_weights for r in device.runs] == [1, 1, 1, 0]
        for (features, routing), weights in zip(got, (a_weights, b_weights, a_weights, a_weights),
                                                strict=True):
            want_f, want_r = _csim_outputs(weights, images, 0)
            np.testing.assert_array_equal(features, want_f)
            np.testing.assert_array_equal(routing, want_r)
        first.close()
        assert not _lock_is_free(lock)  # the second driver still owns the device
    finally:
        first.close()
        second.close()
    assert _lock_is_free(lock)


def test_another_bitstream_in_the_same_process_is_refused(tmp_path, overlay, device):
    lock = tmp_path / "board.lock"
    other = tmp_path / "other" / "edgemoe.bit"
    other.parent.mkdir()
    other.write_bytes(hwh.placeholder_bitstream(hwh.BlockDesign(name="other")))
    with EdgeMoeDriver(overlay, CFG, download=False, device=device, lock_path=lock):
        with pytest.raises(AcceleratorError,
                           match="already drives the device .* another bitstream"):
            EdgeMoeDriver(other, CFG, download=True, device=device, lock_path=lock)
    assert _lock_is_free(lock)


def test_lock_path_is_per_device():
    a, b = sim_device.SimulatedDevice(CFG), sim_device.SimulatedDevice(CFG)
    assert device_lock.default_lock_path(a.tag) != device_lock.default_lock_path(b.tag)
    assert device_lock.default_lock_path("embedded_xrt0").name == "edgemoe-fpga-embedded_xrt0.lock"


def test_two_fpga_backends_of_one_process_share_the_board(csim_lib, images):
    weights = random_init(CFG, seed=11)
    want = create_backend("csim")
    want.load(weights)
    first = create_backend("fpga", simulate=True, csim_library=csim_lib)
    second = create_backend("fpga", simulate=True, csim_library=csim_lib, download=True)
    try:
        first.load(weights)
        second.load(weights)
        assert second.sim_device is first.sim_device and second.driver.attached
        # simulated default: no download, and the second one skipped it
        assert first.sim_device.downloads == 0
        expected = want.run(images, ["depth"]).features["depth"]
        for backend in (first, second, first):
            np.testing.assert_array_equal(backend.run(images, ["depth"]).features["depth"],
                                          expected)
    finally:
        first.close()
        second.close()
        want.close()


# ------------------------------------------------------------------ recovery
def _hang(driver: EdgeMoeDriver, device, images, fault) -> None:
    device.fault = fault
    with pytest.raises(AcceleratorError, match="did not assert ap_done"):
        driver.run(images, 0)
    device.fault = sim_device.Fault.NONE


def test_hung_kernel_recovers_by_pl_reset_without_reprogramming(overlay, device, images):
    with EdgeMoeDriver(overlay, CFG, download=False, device=device, timeout_s=0.05) as drv:
        drv.load_weights(random_init(CFG, seed=1))
        drv.run(images, 0)
        _hang(drv, device, images, sim_device.Fault.HANG)
        assert drv.recover() == "pl_reset"
        assert (device.pl_resets, device.downloads) == (1, 0)
        drv.run(images, 0)
        assert device.runs[-1].reload_one_time_weights == 1


def test_reprogramming_is_the_last_resort(overlay, device, images):
    with EdgeMoeDriver(overlay, CFG, download=False, device=device, timeout_s=0.05) as drv:
        drv.load_weights(random_init(CFG, seed=1))
        _hang(drv, device, images, sim_device.Fault.WEDGED)
        assert drv.recover() == "download"
        assert (device.pl_resets, device.downloads) == (1, 1)
        features, _ = drv.run(images, 0)
        np.testing.assert_array_equal(features,
                                      _csim_outputs(random_init(CFG, seed=1), images, 0)[0])


def test_failing_pl_reset_falls_back_to_reprogramming(overlay, device, images, caplog):
    def no_gpio() -> None:
        raise PermissionError("/sys/class/gpio/export")

    with EdgeMoeDriver(overlay, CFG, download=False, device=device, timeout_s=0.05,
                       pl_reset=no_gpio) as drv:
        drv.load_weights(random_init(CFG, seed=1))
        _hang(drv, device, images, sim_device.Fault.HANG)
        assert drv.recover() == "download"
    assert "PL reset failed (PermissionError" in caplog.text


def test_kernel_that_survives_everything_is_reported(overlay, device, images, monkeypatch):
    with EdgeMoeDriver(overlay, CFG, download=False, device=device, timeout_s=0.05) as drv:
        drv.load_weights(random_init(CFG, seed=1))
        _hang(drv, device, images, sim_device.Fault.WEDGED)
        monkeypatch.setattr(device, "download", lambda *args: None)
        with pytest.raises(AcceleratorBusy,
                           match="still not idle after a PL reset and re-programming"
                                 ".*power-cycle"):

            drv.recover()


def test_ps_gpio_reset_pulses_pl_resetn0_low_then_high(monkeypatch):
    import pynq

    writes: list[tuple[int, int]] = []

    class FakeGpio:
        @staticmethod
        def get_gpio_pin(index: int) -> int:
            return 1000 + 78 + index  # base + MIO pins + EMIO index, as pynq computes it

        def __init__(self, index: int, direction: str):
            assert direction == "out"
            self.index = index

        def write(self, value: int) -> None:
            writes.append((self.index, value))

    monkeypatch.setattr(pynq, "GPIO", FakeGpio)
    PsGpioPlReset(hwh.BLOCK_DESIGN.pl_reset_pin, pulse_s=0)()
    assert writes == [(1000 + 78 + 95, 0), (1000 + 78 + 95, 1)]
    assert PL_RESETN_EMIO["pl_resetn0"] == 95
    with pytest.raises(ValueError, match="unknown PL reset"):
        PsGpioPlReset("pl_resetn7")


# ------------------------------------------------------------------ CMA
def test_read_cma_parses_meminfo(tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        4050000 kB\nCmaTotal:         524288 kB\n"
                       "CmaFree:          100000 kB\n")
    assert cma.read_cma(meminfo) == cma.CmaStatus(524288 * 1024, 100000 * 1024)
    meminfo.write_text("MemTotal:        4050000 kB\n")
    assert cma.read_cma(meminfo) is None  # no CMA pool reported (this x86 VM): nothing to check
    assert cma.read_cma(tmp_path / "missing") is None


def test_spec_model_needs_about_36_mb_of_cma(overlay):
    spec = ModelConfig()
    with EdgeMoeDriver(overlay, spec, download=False,
                       device=sim_device.SimulatedDevice(spec, cma_bytes=35 * MIB)):
        pass
    with pytest.raises(AcceleratorError,
                       match=r"need 34\.5 MiB of contiguous \(CMA\) memory \(largest: "
                             r"weights_experts, 27\.1 MiB\) but only 34\.0 MiB of 34\.0 MiB "
                             r"CMA is free.*cma="):
        EdgeMoeDriver(overlay, spec, download=False,
                      device=sim_device.SimulatedDevice(spec, cma_bytes=34 * MIB))


def test_cma_check_counts_what_is_already_taken(tmp_path, overlay):
    dev = sim_device.SimulatedDevice(CFG, cma_bytes=2 * MIB)  # the tiny model needs 112 KiB
    held = dev.allocate((2 * MIB - 64 * 1024,), np.uint8)  # another program's buffer
    with pytest.raises(AcceleratorError,
                       match=r"need 0\.1 MiB .* only 0\.1 MiB of 2\.0 MiB CMA is free"):

        EdgeMoeDriver(overlay, CFG, download=False, device=dev, lock_path=tmp_path / "l")
    assert dev.allocations == 1  # the driver allocated nothing
    held.freebuffer()
    EdgeMoeDriver(overlay, CFG, download=False, device=dev, lock_path=tmp_path / "l").close()
