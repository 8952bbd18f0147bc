# SPDX-License-Identifier: Apache-2.0
"""The PYNQ driver end to end against the simulated PYNQ device whose hardware is the C-simulation.

The driver code path is the one a ZCU102 runs: ``pynq.Overlay`` parses the ``.hwh``, ``ip.write``/
``ip.read`` reach the device's registers, buffers come from ``pynq.allocate`` and only reach the
"accelerator" through ``sync_to_device`` (the simulated memory is non-coherent).
"""

from __future__ import annotations

import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("pynq")

from edgemoe_ros.accel import hwh, sim_device  # noqa: E402
from edgemoe_ros.accel import interface as itf  # noqa: E402
from edgemoe_ros.accel.pynq_driver import (  # noqa: E402
    AcceleratorBusy,
    AcceleratorError,
    AcceleratorTimeout,
    EdgeMoeDriver,
    describe_ctrl,
)
from edgemoe_ros.backends import BackendError, create_backend  # noqa: E402
from edgemoe_ros.backends.csim import build_library  # noqa: E402
from edgemoe_ros.model.config import ModelConfig, tiny_config  # noqa: E402
from edgemoe_ros.model.weights import random_init  # noqa: E402

CFG = tiny_config()
BATCH = 3


@pytest.fixture(scope="module")
def overlay(tmp_path_factory) -> str:
    return str(hwh.write_overlay(tmp_path_factory.mktemp("overlay")))


@pytest.fixture(scope="module")
def csim_lib(tiny_csim_library):
    return tiny_csim_library


@pytest.fixture(scope="module")
def weights():
    return random_init(CFG, seed=11)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.integers(0, 256, (BATCH, CFG.img_h, CFG.img_w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def csim_reference(weights, images):
    """Raw outputs of the csim backend per task id (the bit-exact expectation)."""
    backend = create_backend("csim")
    backend.load(weights)
    try:
        return {tid: backend.run_raw(images, tid) for tid in range(len(CFG.tasks))}
    finally:
        backend.close()


@pytest.fixture
def device(csim_lib):
    return sim_device.SimulatedDevice(CFG, sim_device.CsimHardware(csim_lib))


@pytest.fixture
def driver(overlay, device):
    drv = EdgeMoeDriver(overlay, CFG, max_images=BATCH, download=False, device=device,
                        timeout_s=2.0)
    yield drv
    drv.close()


# ------------------------------------------------------------------ overlay metadata
def test_overlay_exposes_our_ip_and_register_map(overlay):
    import pynq

    dev = sim_device.SimulatedDevice(CFG)
    ov = pynq.Overlay(overlay, download=False, device=dev)
    desc = ov.ip_dict[hwh.BLOCK_DESIGN.ip_instance]
    assert desc["type"] == hwh.BLOCK_DESIGN.ip_vlnv
    assert desc["phys_addr"] == hwh.BLOCK_DESIGN.control_base
    regs = {name: r["address_offset"] for name, r in desc["registers"].items()}
    assert regs["CTRL"] == itf.REG_AP_CTRL
    for arg in itf.KERNEL_ARGS:
        if arg.kind == "pointer":
            assert (regs[f"{arg.name}_1"], regs[f"{arg.name}_2"]) == (arg.offset, arg.offset + 4)
        else:
            assert regs[arg.name] == arg.offset
    ctrl_fields = desc["registers"]["CTRL"]["fields"]
    assert [ctrl_fields[f]["bit_offset"]
            for f in ("AP_START", "AP_DONE", "AP_IDLE", "AP_READY", "AUTO_RESTART")] \
        == [m.bit_length() - 1
            for m in (itf.AP_START, itf.AP_DONE, itf.AP_IDLE, itf.AP_READY, itf.AP_AUTO_RESTART)]
    ip = getattr(ov, hwh.BLOCK_DESIGN.ip_instance)
    # pynq's own register map reads the simulated block
    assert int(ip.register_map.CTRL.AP_IDLE) == 1
    assert (ov.clock_dict[0]["enable"] == 1
            and ov.clock_dict[0]["frequency"] == pytest.approx(itf.CLOCK_MHZ))
    assert "PSDDR" in ov.mem_dict  # from our generated .xclbin memory topology


def test_placeholder_bitstream_parses_as_a_bit_file():
    from pynq.pl_server.embedded_device import parse_bit_header

    info = parse_bit_header(hwh.placeholder_bitstream())
    assert info["design"] == hwh.BLOCK_DESIGN.name
    assert itf.FPGA_PART.startswith(info["part"])


def test_simulated_device_is_probed_only_once_installed():
    import pynq
    from pynq.pl_server.device import Device

    dev = sim_device.SimulatedDevice(CFG)
    assert dev not in sim_device.SimulatedDevice._probe_()
    sim_device.install(dev)
    try:
        assert sim_device.SimulatedDevice._probe_() == [dev]
        assert Device.active_device is dev
        # pynq's default target is now the simulation
        assert pynq.allocate((4,), np.int16).device is dev
    finally:
        sim_device.uninstall(dev)
    assert dev not in sim_device.SimulatedDevice._probe_()


# ------------------------------------------------------------------ bit-exact end to end
@pytest.mark.parametrize("task_id", range(len(CFG.tasks)))
def test_outputs_equal_the_csim_backend_bit_for_bit(driver, weights, images, csim_reference,
                                                    task_id):
    driver.load_weights(weights)
    features, routing = driver.run(images, task_id)
    want_f, want_r = csim_reference[task_id]
    assert (features.dtype == np.int32
            and features.shape == itf.buffer_shapes(CFG, BATCH)["features_out"][0])
    np.testing.assert_array_equal(features, want_f)
    np.testing.assert_array_equal(routing, want_r)


def test_partial_batch_uses_the_front_of_the_buffers(driver, weights, images, csim_reference):
    driver.load_weights(weights)
    features, routing = driver.run(images[1:2], 0)
    np.testing.assert_array_equal(features, csim_reference[0][0][1:2])
    np.testing.assert_array_equal(routing, csim_reference[0][1][1:2])


_FULL_SIZE_REFERENCE = """
import sys
import numpy as np
from edgemoe_ros.backends import create_backend
from edgemoe_ros.model.config import ModelConfig
from edgemoe_ros.model.weights import random_init
cfg = ModelConfig()
img = np.random.default_rng(1).integers(0, 256, (1, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)
backend = create_backend("csim")
backend.load(random_init(cfg, seed=3))
features, routing = backend.run_raw(img, 1)
np.savez(sys.argv[1], features=features, routing=routing)
"""


def test_full_size_model_matches_csim(overlay, tmp_path):
    """The SPEC model (real buffer sizes, 16 experts): one image, one task, every bit.

    The csim backend runs in its own process: it loads its library with a plain dlopen, and a
    process that already loaded the tiny model's build cannot also load the full one that way
    (g++ merges the kernels' static buffers across builds; see sim_device._load_isolated).
    """
    cfg = ModelConfig()
    try:
        lib = build_library(cfg)
    except BackendError as exc:
        pytest.skip(f"C-simulation library unavailable: {exc}")
    out = tmp_path / "reference.npz"
    proc = subprocess.run([sys.executable, "-c", _FULL_SIZE_REFERENCE, str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    want = np.load(out)
    img = np.random.default_rng(1).integers(0, 256, (1, cfg.img_h, cfg.img_w, 3), dtype=np.uint8)
    dev = sim_device.SimulatedDevice(cfg, sim_device.CsimHardware(lib))
    with EdgeMoeDriver(overlay, cfg, download=False, device=dev, timeout_s=60) as drv:
        drv.load_weights(random_init(cfg, seed=3))
        features, routing = drv.run(img, 1)
    np.testing.assert_array_equal(features, want["features"])
    np.testing.assert_array_equal(routing, want["routing"])


# ------------------------------------------------------------------ weights reload policy
def test_parameters_reload_only_when_the_model_changes(driver, device, weights, images,
                                                       csim_reference):
    assert driver.load_weights(weights) is True
    driver.run(images, 0)
    driver.run(images, 1)  # task switch: no reload
    driver.run(images, 0)
    assert [r.reload_one_time_weights for r in device.runs] == [1, 0, 0]
    assert [r.task_id for r in device.runs] == [0, 1, 0]

    # same model again: nothing to do
    assert driver.load_weights(random_init(CFG, seed=11)) is False
    driver.run(images, 0)
    assert device.runs[-1].reload_one_time_weights == 0

    other = random_init(CFG, seed=12)
    assert driver.load_weights(other) is True
    features, _ = driver.run(images, 0)
    assert device.runs[-1].reload_one_time_weights == 1
    assert not np.array_equal(features, csim_reference[0][0])  # the new model is really in use
    ref = create_backend("csim")
    ref.load(other)
    np.testing.assert_array_equal(features, ref.run_raw(images, 0)[0])
    ref.close()


def test_weights_reach_the_device_only_through_sync(driver, device, weights, images):
    """The simulated memory is non-coherent: a host write without sync is invisible to the
    kernel."""
    driver.load_weights(weights)
    syncs = device.syncs_to_device
    driver.run(images, 0)
    assert device.syncs_to_device == syncs + 1  # the images, and nothing else, per frame
    assert device.syncs_from_device >= 2  # features and routing


def test_weights_for_another_model_are_refused(driver):
    with pytest.raises(AcceleratorError, match="another model.*dim 48 .built for 24."):
        driver.load_weights(random_init(tiny_config(dim=48), seed=0))


def test_weights_with_another_host_head_load(driver, weights, images):
    """The head runs on the host: a guided-head model uses the same bitstream and the same
    backbone."""
    driver.load_weights(weights)
    plain_features, plain_routing = driver.run(images, 0)
    # same backbone tensors (same seed, heads last)
    guided = random_init(CFG.replace(head="guided"), seed=11)
    np.testing.assert_array_equal(guided["blocks.0.attn.qkv.weight"],
                                  weights["blocks.0.attn.qkv.weight"])
    driver.load_weights(guided)
    features, routing = driver.run(images, 0)
    np.testing.assert_array_equal(features, plain_features)
    np.testing.assert_array_equal(routing, plain_routing)


# ------------------------------------------------------------------ faults
def test_hung_accelerator_times_out_quickly_with_register_state(overlay, device, weights, images):
    drv = EdgeMoeDriver(overlay, CFG, max_images=BATCH, download=False, device=device,
                        timeout_s=0.05)
    drv.load_weights(weights)
    device.fault = sim_device.Fault.HANG
    start = time.monotonic()
    with pytest.raises(AcceleratorTimeout,
                       match=r"ap_ctrl=0x01 \(ap_start=1 ap_done=0 ap_idle=0") as err:
        drv.run(images, 1)
    assert time.monotonic() - start < 1.0
    assert "task_id=1" in str(err.value) and "0.05 s" in str(err.value)
    # the kernel is still busy: a new start is refused instead of corrupting the running call
    with pytest.raises(AcceleratorBusy, match="not idle"):
        drv.run(images, 0)
    # re-programming resets it; the next run reloads the parameter cache and works again
    device.fault = sim_device.Fault.NONE
    drv.recover()
    drv.run(images, 0)
    assert device.runs[-1].reload_one_time_weights == 1
    drv.close()


def test_device_error_is_reported(driver, device, weights, images):
    driver.load_weights(weights)
    device.fault = sim_device.Fault.ERROR
    with pytest.raises(AcceleratorError,
                       match="device error during write register 0x00.*returned -2"):
        driver.run(images, 0)


def test_corrupt_results_are_detected(driver, device, weights, images):
    driver.load_weights(weights)
    device.fault = sim_device.Fault.CORRUPT
    with pytest.raises(AcceleratorError, match="invalid routing_out: expert id -1"):
        driver.run(images, 0)


def test_polling_waits_for_a_slow_accelerator(overlay, csim_lib, weights, images, csim_reference):
    dev = sim_device.SimulatedDevice(CFG, sim_device.CsimHardware(csim_lib),
                                     completion_delay_s=0.05)
    with EdgeMoeDriver(overlay, CFG, max_images=BATCH, download=False, device=dev,
                       timeout_s=2.0) as drv:
        drv.load_weights(weights)
        start = time.monotonic()
        features, _ = drv.run(images, 0)
        assert time.monotonic() - start >= 0.05
    np.testing.assert_array_equal(features, csim_reference[0][0])


# ------------------------------------------------------------------ buffers and lifecycle
def test_buffers_are_allocated_once(driver, device, weights, images):
    assert device.allocations == len(itf.POINTER_ARGS)
    driver.load_weights(weights)
    driver.load_weights(random_init(CFG, seed=99))
    for tid in (0, 1, 0):
        driver.run(images, tid)
    assert device.allocations == len(itf.POINTER_ARGS)


def test_close_frees_buffers_and_is_idempotent(overlay, device, weights, images):
    drv = EdgeMoeDriver(overlay, CFG, max_images=BATCH, download=False, device=device)
    drv.load_weights(weights)
    assert device.live_buffers == len(itf.POINTER_ARGS)
    drv.close()
    assert device.live_buffers == 0 and drv.closed
    drv.close()
    with pytest.raises(AcceleratorError, match="closed"):
        drv.run(images, 0)


@pytest.mark.parametrize("bad, match", [
    (lambda imgs: imgs.astype(np.float32), "uint8"),
    (lambda imgs: imgs[:, :-1], "uint8"),
    (lambda imgs: np.concatenate([imgs, imgs]), "batch of 6"),
])
def test_bad_images_are_refused(driver, weights, images, bad, match):
    driver.load_weights(weights)
    with pytest.raises(AcceleratorError, match=match):
        driver.run(bad(images), 0)


def test_bad_task_and_unloaded_weights_are_refused(driver, weights, images):
    with pytest.raises(AcceleratorError, match="before load_weights"):
        driver.run(images, 0)
    driver.load_weights(weights)
    with pytest.raises(AcceleratorError, match="task_id 2"):
        driver.run(images, 2)


def test_missing_ip_is_named(tmp_path, device):
    bit = hwh.write_overlay(tmp_path, hwh.BlockDesign(name="other"))
    with pytest.raises(AcceleratorError, match="IP 'nope' not in the overlay"):
        EdgeMoeDriver(bit, CFG, download=False, device=device, ip_name="nope")


def test_describe_ctrl_decodes_every_bit():
    assert describe_ctrl(itf.AP_DONE | itf.AP_IDLE) == (
        "0x06 (ap_start=0 ap_done=1 ap_idle=1 ap_ready=0 auto_restart=0)")


# ------------------------------------------------------------------ the fpga backend
def test_fpga_backend_simulated_equals_csim_and_recovers(csim_lib, weights, images):
    backend = create_backend("fpga", simulate=True, max_images=2, csim_library=csim_lib,
                             timeout_s=0.1)
    reference = create_backend("csim")
    try:
        backend.load(weights)
        reference.load(weights)
        got = backend.run(images, ["semseg", "depth"])  # batch of 3 in chunks of 2
        want = reference.run(images, ["semseg", "depth"])
        for task in CFG.tasks:
            assert got.features[task].dtype == np.float32
            np.testing.assert_array_equal(got.features[task], want.features[task])
            np.testing.assert_array_equal(got.routing[task], want.routing[task])
            np.testing.assert_array_equal(got.expert_counts[task], want.expert_counts[task])
        backend.sim_device.fault = sim_device.Fault.HANG
        with pytest.raises(BackendError, match="did not assert ap_done"):
            backend.run(images[:1], ["depth"])
        backend.sim_device.fault = sim_device.Fault.NONE
        again = backend.run(images[:1], ["depth"])  # re-programmed, parameters reloaded
        np.testing.assert_array_equal(again.features["depth"], want.features["depth"][:1])
    finally:
        backend.close()
        backend.close()
        reference.close()


@pytest.mark.parametrize("opts, match", [
    ({}, "bitstream"),
    ({"bitstream": "/nonexistent/edgemoe.bit"}, "does not exist"),
    ({"simulate": True, "timeout_s": 0}, "timeout_s"),
    ({"simulate": True, "max_images": 0}, "max_images"),
])
def test_fpga_backend_rejects_bad_options(opts, match):
    with pytest.raises(BackendError, match=match):
        create_backend("fpga", **opts)


def test_fpga_backend_without_pynq_board_gives_a_clear_error(overlay, weights):
    """On a machine with no PYNQ device, opening a real (non-simulated) overlay fails cleanly."""
    backend = create_backend("fpga", bitstream=overlay, download=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pynq: "No devices found, is XRT sourced?"
        with pytest.raises(BackendError, match="cannot open the accelerator"):
            backend.load(weights)
    backend.close()


# ------------------------------------------------------------------ the simulated device itself
class _RecordingHardware:
    """Stands in for the C-simulation to observe what the device hands to the kernel."""

    def __init__(self) -> None:
        self.images: np.ndarray | None = None

    def __call__(self, images, one_time, experts, features, routing, num_images, task_id,
                 reload) -> int:
        self.images = images.copy()
        routing[...] = 0
        return itf.CSIM_OK


def _program(dev: sim_device.SimulatedDevice, buffers: dict, num_images: int = 1) -> None:
    base = dev.base_address
    for name, offset in itf.POINTER_ARGS.items():
        address = buffers[name].device_address if name in buffers else 0xDEAD_0000
        dev.write_registers(base + offset, (address & 0xFFFF_FFFF).to_bytes(4, "little"))
        dev.write_registers(base + offset + 4, (address >> 32).to_bytes(4, "little"))
    for name, value in (("num_images", num_images), ("task_id", 0),
                        ("reload_one_time_weights", 1)):
        dev.write_registers(base + itf.SCALAR_ARGS[name], value.to_bytes(4, "little"))


def _sim_buffers(dev: sim_device.SimulatedDevice) -> dict:
    layout = itf.weight_layout(CFG)
    shapes = dict(itf.buffer_shapes(CFG, 1))
    shapes["weights_one_time"] = ((layout.one_time_words,), np.int16)
    shapes["weights_experts"] = ((layout.experts_words,), np.int16)
    return {name: dev.allocate(*shapes[name]) for name in itf.POINTER_ARGS}


def test_simulated_memory_is_not_coherent():
    hw = _RecordingHardware()
    dev = sim_device.SimulatedDevice(CFG, hw)
    bufs = _sim_buffers(dev)
    bufs["images"][:] = 7
    _program(dev, bufs)
    dev.write_registers(dev.base_address + itf.REG_AP_CTRL, itf.AP_START.to_bytes(4, "little"))
    assert hw.images is not None and not hw.images.any()  # never synced: the kernel saw zeros
    bufs["images"].sync_to_device()
    dev.write_registers(dev.base_address + itf.REG_AP_CTRL, itf.AP_START.to_bytes(4, "little"))
    assert (hw.images == 7).all()
    ctrl = int.from_bytes(dev.read_registers(dev.base_address + itf.REG_AP_CTRL, 4), "little")
    assert ctrl & itf.AP_DONE and ctrl & itf.AP_IDLE
    again = int.from_bytes(dev.read_registers(dev.base_address + itf.REG_AP_CTRL, 4), "little")
    assert not again & itf.AP_DONE  # clear on read


def test_a_closed_driver_leaves_no_memory_on_the_board(overlay, device, weights, images):
    """A board outlives the backends that use it (the process shares one per kernel): the
    buffers a closed driver freed must go, not stay behind as the device's copies."""
    import gc
    import weakref

    drv = EdgeMoeDriver(overlay, CFG, max_images=BATCH, download=False, device=device)
    drv.load_weights(weights)
    drv.run(images, 0)
    buffers = [weakref.ref(b) for b in drv._buffers.values()]
    images_at = int(drv._buffers["images"].device_address)
    drv.close()
    del drv
    gc.collect()
    assert [b() for b in buffers] == [None] * len(buffers)
    assert sum(a.device.nbytes for a in device._allocs.values()) == 0
    # the old addresses are still known: a kernel reading there is told it is a use after free
    device.write_registers(device.base_address + itf.POINTER_ARGS["images"],
                           images_at.to_bytes(4, "little"))
    with pytest.raises(sim_device.SimulatedDeviceError,
                       match="images = .* points into a freed buffer"):
        device._resolve("images", 1)


def test_the_device_remembers_a_bounded_number_of_runs():
    """A board that runs for days (the soak, a vehicle) must not grow by one record per frame."""
    dev = sim_device.SimulatedDevice(CFG, _RecordingHardware())
    _program(dev, _sim_buffers(dev))
    start = itf.AP_START.to_bytes(4, "little")
    for _ in range(sim_device.RUNS_KEPT + 5):
        dev.write_registers(dev.base_address + itf.REG_AP_CTRL, start)
        dev.read_registers(dev.base_address + itf.REG_AP_CTRL, 4)
    assert len(dev.runs) == sim_device.RUNS_KEPT
    assert dev.runs[-1] == sim_device.SimRun(1, 0, 1)


def test_pointer_to_unallocated_memory_is_a_bus_error():
    dev = sim_device.SimulatedDevice(CFG, _RecordingHardware())
    bufs = _sim_buffers(dev)
    del bufs["weights_experts"]
    _program(dev, bufs)
    with pytest.raises(sim_device.SimulatedDeviceError,
                       match="weights_experts = 0xDEAD0000 is not an allocated"):
        dev.write_registers(dev.base_address + itf.REG_AP_CTRL, itf.AP_START.to_bytes(4, "little"))


def test_buffer_too_small_for_the_batch_is_a_bus_error():
    dev = sim_device.SimulatedDevice(CFG, _RecordingHardware())
    _program(dev, _sim_buffers(dev), num_images=2)  # buffers hold one image
    with pytest.raises(sim_device.SimulatedDeviceError, match="images = .* the kernel accesses"):
        dev.write_registers(dev.base_address + itf.REG_AP_CTRL, itf.AP_START.to_bytes(4, "little"))


def test_register_access_outside_the_control_block_is_refused():
    dev = sim_device.SimulatedDevice(CFG, _RecordingHardware())
    with pytest.raises(sim_device.SimulatedDeviceError,
                       match="outside edgemoe_top's control registers"):
        dev.read_registers(dev.base_address + itf.CONTROL_RANGE_BYTES, 4)


def test_two_simulated_boards_keep_their_own_parameters(overlay, csim_lib, weights, images,
                                                        csim_reference):
    """Two devices on one C-simulation build share the kernel's static cache in this process;
    A, then B (other weights), then A again must run on A's parameters, as two boards would."""
    other = random_init(CFG, seed=12)
    dev_a = sim_device.SimulatedDevice(CFG, sim_device.CsimHardware(csim_lib))
    dev_b = sim_device.SimulatedDevice(CFG, sim_device.CsimHardware(csim_lib))
    drv_a = EdgeMoeDriver(overlay, CFG, max_images=BATCH, download=False, device=dev_a,
                          timeout_s=2.0)
    drv_b = EdgeMoeDriver(overlay, CFG, max_images=BATCH, download=False, device=dev_b,
                          timeout_s=2.0)
    try:
        drv_a.load_weights(weights)
        drv_b.load_weights(other)
        first = drv_a.run(images, 0)
        drv_b.run(images, 0)  # B's parameters now fill the shared cache
        again = drv_a.run(images, 0)
        # the driver rightly asked for no reload
        assert dev_a.runs[-1].reload_one_time_weights == 0
        for got in (first, again):
            np.testing.assert_array_equal(got[0], csim_reference[0][0])
            np.testing.assert_array_equal(got[1], csim_reference[0][1])
    finally:
        drv_a.close()
        drv_b.close()


def _one_image_call(weights) -> tuple[itf.PackedWeights, np.ndarray, np.ndarray, np.ndarray]:
    """Packed weights and zeroed images / features / routing buffers for a one-image kernel
    call."""
    shapes = itf.buffer_shapes(CFG, 1)
    return (itf.pack_weights(weights), np.zeros(shapes["images"][0], np.uint8),
            np.zeros(shapes["features_out"][0], np.int32),
            np.zeros(shapes["routing_out"][0], np.int32))


def test_a_board_that_never_loaded_parameters_reports_it(csim_lib, weights):
    """The kernel's own 'no parameters' error, even after another board filled the shared cache."""
    packed, imgs, feats, rout = _one_image_call(weights)
    loaded, fresh = sim_device.CsimHardware(csim_lib), sim_device.CsimHardware(csim_lib)
    assert loaded(imgs, packed.one_time, packed.experts, feats, rout, 1, 0, 1) == itf.CSIM_OK
    assert (fresh(imgs, packed.one_time, packed.experts, feats, rout, 1, 0, 0)
            == itf.CSIM_ERR_NO_ONE_TIME_WEIGHTS)
    assert loaded(imgs, packed.one_time, packed.experts, feats, rout, 1, 0, 0) == itf.CSIM_OK


def test_csim_hardware_refuses_buffers_it_would_misuse(csim_lib, weights):
    """The C-simulation trusts its pointers: wrong dtypes, too few images or read-only outputs are
    refused."""
    packed, imgs, feats, rout = _one_image_call(weights)
    hw = sim_device.CsimHardware(csim_lib)
    frozen = np.frombuffer(bytes(rout.nbytes), np.int32).reshape(rout.shape)
    for args, match in (((imgs.astype(np.float32), packed.one_time, packed.experts, feats, rout,
                          1), "images"),
                        ((imgs, packed.one_time.astype(np.int32), packed.experts, feats, rout, 1),
                         "one_time"),
                        ((imgs, packed.one_time, packed.experts, feats, rout, 2), "needs 2"),
                        ((imgs, packed.one_time, packed.experts, feats, frozen, 1), "read-only")):
        with pytest.raises(sim_device.SimulatedDeviceError, match=match):
            hw(*args, task_id=0, reload_one_time_weights=1)
    assert hw(imgs, packed.one_time, packed.experts, feats, rout, 1, 0, 1) == itf.CSIM_OK
