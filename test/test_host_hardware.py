# SPDX-License-Identifier: Apache-2.0
"""The soak's fast simulated FPGA (test/host_hardware.py), in process, through the real driver:
it computes what the uploaded weights compute, and a fault named in a file by another party
reaches the driver at the next ap_start, once, as a hang, a bad status or corrupt output."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pynq")

from host_hardware import (  # noqa: E402
    FaultFileDevice,
    HostFpgaBackend,
    HostHardware,
    inject_fault,
    weights_from_device,
)

from edgemoe_ros.accel import interface as itf  # noqa: E402
from edgemoe_ros.accel import sim_device  # noqa: E402
from edgemoe_ros.backends import BackendError, create_backend  # noqa: E402
from edgemoe_ros.fixedpoint.quant import act_to_float32  # noqa: E402
from edgemoe_ros.model.config import tiny_config  # noqa: E402
from edgemoe_ros.model.weights import random_init  # noqa: E402

CFG = tiny_config()
TASKS = list(CFG.tasks)


@pytest.fixture(scope="module")
def weights():
    return random_init(CFG, seed=21)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(8).integers(0, 256, (2, CFG.img_h, CFG.img_w, 3), dtype=np.uint8)


@pytest.fixture
def backend(tmp_path, weights):
    b = HostFpgaBackend(fault_file=str(tmp_path / "fault"), timeout_s=0.2)
    b.load(weights)
    yield b
    b.close()


def test_weights_read_back_from_the_packed_buffers_are_the_model(weights):
    packed = itf.pack_weights(weights)
    back = weights_from_device(CFG, packed.one_time, packed.experts)
    for name in weights:
        if name.startswith("heads."):
            assert not back[name].any(), name  # the accelerator never holds the heads
            continue
        fmt = next(e.fmt for e in packed.layout.entries if e.tensor == name)
        # each value within half an LSB of its format: nothing transposed, shifted or mixed up
        np.testing.assert_allclose(
            back[name], weights[name], rtol=0, atol=itf.FORMATS[fmt].lsb / 2 + 1e-7, err_msg=name
        )


def test_the_fpga_path_computes_the_uploaded_model(backend, weights, images):
    """Driver, registers, buffers and syncs carry the host model's answer: exactly the cpu
    backend on the weights as stored, rounded to ``act``; and close to the float model."""
    stored = create_backend("cpu")
    original = create_backend("cpu")
    stored.load(weights_from_device(CFG, *_packed(weights)))
    original.load(weights)
    try:
        got = backend.run(images, TASKS)
        want = stored.run(images, TASKS)
        floats = original.run(images, TASKS)
    finally:
        stored.close()
        original.close()
    for task in TASKS:
        raw, _ = itf.quantize(want.features[task], "act")
        np.testing.assert_array_equal(got.features[task], act_to_float32(raw.astype(np.int32)))
        np.testing.assert_array_equal(got.routing[task], want.routing[task])
        assert np.abs(got.features[task] - floats.features[task]).max() < 0.1
    # one model read back, though the driver asked for a reload on the first call of each task
    assert backend.sim_device.hardware.models_loaded == 1


def test_a_run_before_any_parameters_is_refused():
    hw = HostHardware(CFG)
    shapes = itf.buffer_shapes(CFG, 1)
    bufs = {name: np.zeros(shape, dtype) for name, (shape, dtype) in shapes.items()}
    code = hw(
        bufs["images"],
        np.zeros(1, np.int16),
        np.zeros(1, np.int16),
        bufs["features_out"],
        bufs["routing_out"],
        1,
        0,
        0,
    )
    assert code == itf.CSIM_ERR_NO_ONE_TIME_WEIGHTS
    hw.close()


@pytest.mark.parametrize(
    "fault, message",
    [
        ("hang", "did not assert ap_done within 0.2 s"),
        ("error", "device error during write register 0x00.*returned -2"),
        ("corrupt", "invalid routing_out: expert id -1"),
    ],
)
def test_a_fault_in_the_file_fails_exactly_the_next_call(backend, images, fault, message):
    device = backend.sim_device
    assert isinstance(device, FaultFileDevice)
    before = backend.run(images[:1], ["depth"])
    inject_fault(device.fault_file, fault)
    with pytest.raises(BackendError, match=message):
        backend.run(images[:1], ["depth"])
    assert not device.fault_file.exists()  # consumed by that ap_start
    assert device.injected == {fault: 1}
    after = backend.run(images[:1], ["depth"])  # the next call is healthy again
    np.testing.assert_array_equal(after.features["depth"], before.features["depth"])
    assert device.pl_resets == (
        1 if fault == "hang" else 0
    )  # a hung kernel was reset, not re-programmed
    assert device.runs[-1].reload_one_time_weights == 1  # the parameter cache was not trusted


def test_a_file_naming_no_fault_is_a_clear_device_error(backend, images):
    backend.sim_device.fault_file.write_text("meltdown")
    with pytest.raises(BackendError, match="names no fault: 'meltdown'"):
        backend.run(images[:1], ["semseg"])
    backend.run(images[:1], ["semseg"])


def test_a_wedged_kernel_is_re_programmed(backend, images):
    inject_fault(backend.sim_device.fault_file, sim_device.Fault.WEDGED)
    with pytest.raises(BackendError, match="did not assert ap_done"):
        backend.run(images[:1], ["semseg"])
    backend.run(images[:1], ["semseg"])
    assert backend.sim_device.pl_resets == 1 and backend.sim_device.downloads == 1


def _packed(weights) -> tuple[np.ndarray, np.ndarray]:
    packed = itf.pack_weights(weights)
    return packed.one_time, packed.experts
