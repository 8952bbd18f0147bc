# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-fpga check`` (board bring-up) run against the simulated PYNQ device."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

pytest.importorskip("pynq")

from edgemoe_ros.accel import hwh, sim_device  # noqa: E402
from edgemoe_ros.cli import fpga  # noqa: E402
from edgemoe_ros.model.config import tiny_config  # noqa: E402
from edgemoe_ros.model.weights import random_init, save_weights  # noqa: E402

CFG = tiny_config()


@pytest.fixture(scope="module")
def csim_lib(tiny_csim_library):
    return tiny_csim_library


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(random_init(CFG, seed=4), path)
    return path


def _check(*args: str) -> list[str]:
    return ["check", "--simulate", *args]


def test_check_passes_bit_for_bit_and_prints_latency(weights_file, csim_lib, capsys):
    code = fpga.main(_check("--weights", str(weights_file), "--csim-library", str(csim_lib),
                            "--repeat", "2"))
    out = capsys.readouterr().out
    assert code == fpga.EXIT_OK, out
    assert re.search(r"\[ok\] overlay .*edgemoe\.bit \(not re-programmed\): "
                     r"edgemoe_top_0 at 0xA0000000", out)
    assert f"[ok] {len(hwh.expected_registers())} registers match interface.py" in out
    first, second = CFG.tasks
    assert re.search(rf"\[ok\] task {first}: features and routing equal the fixed backend bit "
                     r"for bit; first call \d+\.\d\d ms \(parameter reload\), then median "
                     r"\d+\.\d\d ms of 2", out), out
    assert re.search(rf"\[ok\] task {second}: .* bit for bit; first call \d+\.\d\d ms, "
                     r"then median", out), out
    assert out.rstrip().splitlines()[-1].startswith("result: PASS")


class _OneWrongFeature:
    """The C-simulation with one feature word off by one LSB: a datapath bug the check must
    catch."""

    def __init__(self, hardware):
        self.hardware = hardware

    def __call__(self, images, one_time, experts, features, routing, *scalars):
        code = self.hardware(images, one_time, experts, features, routing, *scalars)
        features[0, 2, 5] += 1
        return code


def test_check_reports_the_first_differing_value(weights_file, csim_lib, capsys):
    board = sim_device.acquire_board(CFG, csim_lib)  # the board the check will share
    board.hardware = _OneWrongFeature(board.hardware)
    try:
        code = fpga.main(_check("--weights", str(weights_file), "--csim-library", str(csim_lib),
                                "--repeat", "0"))
    finally:
        sim_device.release_board(board)
    out = capsys.readouterr().out
    assert code == fpga.EXIT_MISMATCH
    assert re.search(r"\[FAIL\] task semseg: 1 feature and 0 routing values differ from the fixed "
                     r"backend \(first: features\[0, 2, 5\]: accelerator (-?\d+), "
                     r"fixed (-?\d+)\)", out), out
    got, want = map(int, re.search(r"accelerator (-?\d+), fixed (-?\d+)", out).groups())
    assert got == want + 1
    assert "result: FAIL" in out


def test_check_refuses_a_bitstream_with_another_register_map(tmp_path, weights_file, csim_lib,
                                                             capsys):
    bit = hwh.write_overlay(tmp_path)
    text = bit.with_suffix(".hwh").read_text()
    bit.with_suffix(".hwh").write_text(text.replace('<REGISTER NAME="num_images">',
                                                    '<REGISTER NAME="n_images">'))
    code = fpga.main(_check("--bitstream", str(bit), "--weights", str(weights_file),
                            "--csim-library", str(csim_lib)))
    out = capsys.readouterr().out
    assert code == fpga.EXIT_CANNOT_RUN
    assert "[FAIL] open the overlay:" in out and "register 'num_images' (0x4C in interface.py) " \
        "is missing: the .hwh has 'n_images' there" in out


def test_check_without_a_board_says_so(tmp_path, weights_file, capsys):
    bit = hwh.write_overlay(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # pynq: "No devices found, is XRT sourced?"
        code = fpga.main(["check", "--bitstream", str(bit), "--weights", str(weights_file)])
    assert code == fpga.EXIT_CANNOT_RUN
    assert re.search(r"\[FAIL\] open the overlay: .*no PYNQ device", capsys.readouterr().out)


@pytest.mark.parametrize("argv, message", [
    (["check"], "--bitstream is required"),
    (["check", "--simulate", "--repeat", "-1"], "--repeat must be >= 0"),
])
def test_bad_arguments_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        fpga.main(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_missing_files_exit_2(tmp_path, weights_file, capsys):
    assert fpga.main(["check", "--bitstream", str(tmp_path / "none.bit"),
                      "--weights", str(weights_file)]) == 2
    assert "none.bit does not exist" in capsys.readouterr().out
    assert fpga.main(_check("--weights", str(weights_file), "--image",
                            str(tmp_path / "none.png"))) == 2

    assert "cannot read image" in capsys.readouterr().err


def test_image_is_fitted_to_the_model(tmp_path):
    import cv2

    path = tmp_path / "frame.png"
    cv2.imwrite(str(path), np.full((300, 500, 3), (10, 20, 30), np.uint8))  # BGR
    frame = fpga._load_frame(path, CFG)
    assert frame.shape == (1, CFG.img_h, CFG.img_w, 3) and frame.dtype == np.uint8
    assert tuple(frame[0, 0, 0]) == (30, 20, 10)  # RGB, as the node feeds the backbone
