# SPDX-License-Identifier: Apache-2.0
"""``edgemoe-bag process``: outputs match the engine frame by frame, stamps kept, errors map to exit codes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemoe_ros import engine as engine_mod
from edgemoe_ros import postprocess as pp
from edgemoe_ros.bag import BagWriter, CameraInfoParams, bag_info, write_image_bag
from edgemoe_ros.bag import messages as m
from edgemoe_ros.bag.cli import EXIT_BAG, EXIT_MODEL, EXIT_OK, main
from edgemoe_ros.bag.io import BagReader
from edgemoe_ros.bag.process import output_topics, process_bag
from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import random_init, save_weights

H, W = 40, 72
STAMPS = [1_600_000_000_950_000_000 + i * 100_000_000 for i in range(3)]
INFO = CameraInfoParams.pinhole(W, H, 60.0)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(random_init(tiny_config(), seed=11), path)
    return path


def _frames() -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(5)
    return [(s, rng.integers(0, 256, (H, W, 3), dtype=np.uint8)) for s in STAMPS]


@pytest.fixture(params=["mcap", "sqlite3"])
def in_bag(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    path = tmp_path / f"in_{request.param}"
    write_image_bag(path, _frames(), "/cam/image_raw", "cam_optical", request.param, INFO, "bgr8")
    return path


def _read_all(path: Path) -> dict[str, list[tuple[int, object, bytes]]]:
    out: dict[str, list[tuple[int, object, bytes]]] = {}
    with BagReader(path) as reader:
        topics = [t.topic for t in reader.info().topics]
        for t, log_time, raw in reader.raw_messages(topics):
            out.setdefault(t, []).append((log_time, reader.deserialize(t, raw), raw))
    return out


def _image(msg: object) -> np.ndarray:
    dtype = np.float32 if msg.encoding == "32FC1" else np.uint8
    ch = 3 if msg.encoding == "rgb8" else 1
    arr = msg.data.view(dtype).reshape(msg.height, msg.width, ch)
    return arr[..., 0] if ch == 1 else arr


def test_process_writes_inputs_and_outputs_with_input_stamps(in_bag: Path, weights_file: Path,
                                                             tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert main(["process", str(in_bag), str(out), "--weights", str(weights_file), "--no-progress"]) == EXIT_OK
    assert bag_info(out).storage == "mcap"
    got, src = _read_all(out), _read_all(in_bag)
    assert set(got) == {"/cam/image_raw", "/cam/camera_info", "/cam/segmentation/image", "/cam/segmentation/color",
                        "/cam/depth/image", "/cam/segmentation/camera_info", "/cam/depth/camera_info"}
    for topic in ("/cam/image_raw", "/cam/camera_info"):  # inputs copied byte for byte
        assert [(t, raw) for t, _, raw in got[topic]] == [(t, raw) for t, _, raw in src[topic]]
    engine = engine_mod.Engine(random_init(tiny_config(), seed=11), "cpu")
    for i, (stamp, rgb) in enumerate(_frames()):
        res = engine.infer(rgb, tasks=("semseg", "depth"), camera_k=np.reshape(INFO.k, (3, 3)))
        assert res.depth_scale != pytest.approx(1.0)  # the recorded lens is not the canonical camera
        for topic, enc in (("/cam/segmentation/image", "mono8"), ("/cam/segmentation/color", "rgb8"),
                           ("/cam/depth/image", "32FC1")):
            log_time, msg, _ = got[topic][i]
            assert (log_time, m.stamp_ns(msg), msg.header.frame_id) == (stamp, stamp, "cam_optical")
            assert (msg.encoding, msg.height, msg.width) == (enc, H, W)
        np.testing.assert_array_equal(_image(got["/cam/segmentation/image"][i][1]), res.semseg_at_input())
        np.testing.assert_array_equal(_image(got["/cam/segmentation/color"][i][1]),
                                      pp.colorize_semseg(res.semseg_at_input()))
        np.testing.assert_array_equal(_image(got["/cam/depth/image"][i][1]), res.depth_at_input())
        for topic in ("/cam/segmentation/camera_info", "/cam/depth/camera_info"):
            info = got[topic][i][1]
            assert m.stamp_ns(info) == stamp and CameraInfoParams.from_msg(info) == INFO  # same size: unchanged
    engine.close()


def test_model_resolution_scales_camera_info(in_bag: Path, weights_file: Path, tmp_path: Path) -> None:
    cfg = tiny_config()
    out = tmp_path / "out"
    assert main(["process", str(in_bag), str(out), "--weights", str(weights_file), "--tasks", "depth",
                 "--output-resolution", "model", "--no-progress"]) == EXIT_OK
    got = _read_all(out)
    assert "/cam/segmentation/image" not in got and "/cam/segmentation/camera_info" not in got
    depth = got["/cam/depth/image"]
    assert len(depth) == len(STAMPS)
    assert all((msg.height, msg.width) == (cfg.img_h, cfg.img_w) for _, msg, _ in depth)
    assert all(np.isfinite(_image(msg)).all() for _, msg, _ in depth)
    info = CameraInfoParams.from_msg(got["/cam/depth/camera_info"][0][1])
    k, _, w, h = pp.scale_camera_info_params(np.array(INFO.k), np.array(INFO.p), W, H,
                                             pp.compute_fit(H, W, cfg))
    assert (info.width, info.height) == (w, h) == (cfg.img_w, cfg.img_h)
    np.testing.assert_allclose(info.k, k.ravel())
    assert info.k[0] == pytest.approx(INFO.k[0] * cfg.img_w / W)


def test_undecodable_frames_are_skipped_and_counted(weights_file: Path, tmp_path: Path) -> None:
    bag = tmp_path / "in"
    good = m.rgb_to_image(_frames()[0][1], 1, "cam")
    bad = m.rgb_to_image(_frames()[1][1], 2, "cam")
    bad.encoding = "nv12"  # no camera encoding the node reads
    with BagWriter(bag) as writer:
        for i, msg in enumerate((good, bad, good)):
            writer.write("/cam/image", 10 + i, msg)
    from edgemoe_ros.model.weights import load_weights
    summary = process_bag(bag, tmp_path / "out", load_weights(weights_file))
    assert (summary.frames, summary.skipped) == (2, 1)
    assert summary.written["/cam/image"] == 3 and summary.written["/cam/depth/image"] == 2
    assert [t for t, _, _ in _read_all(tmp_path / "out")["/cam/segmentation/image"]] == [10, 12]


@pytest.mark.parametrize("damage", ["truncate", "no_metadata"])
def test_corrupt_input_exit_code_and_no_output(in_bag: Path, weights_file: Path, tmp_path: Path,
                                               damage: str, caplog: pytest.LogCaptureFixture) -> None:
    data = next(p for p in in_bag.iterdir() if p.suffix in (".mcap", ".db3"))
    if damage == "truncate":
        data.write_bytes(data.read_bytes()[:300])
    else:
        (in_bag / "metadata.yaml").unlink()
    out = tmp_path / "out"
    assert main(["process", str(in_bag), str(out), "--weights", str(weights_file)]) == EXIT_BAG
    assert not out.exists()
    assert str(in_bag) in caplog.text and "not a readable rosbag2 bag" in caplog.text


def test_missing_topic_exit_code(in_bag: Path, weights_file: Path, tmp_path: Path,
                                 caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "out"
    assert main(["process", str(in_bag), str(out), "--weights", str(weights_file),
                 "--topic", "/front/image"]) == EXIT_BAG
    assert "[topic /front/image]: topic not in bag" in caplog.text
    assert not out.exists()


def test_existing_output_exit_code(in_bag: Path, weights_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    assert main(["process", str(in_bag), str(out), "--weights", str(weights_file)]) == EXIT_BAG


@pytest.mark.parametrize("args,message", [
    (["--tasks", "semseg,flow"], "unknown task 'flow'"),
    (["--backend", "gpu"], "unknown backend 'gpu'"),
    (["--weights", "/nonexistent/w.safetensors"], "file not found"),
])
def test_model_errors_exit_code(in_bag: Path, weights_file: Path, tmp_path: Path, args: list[str],
                                message: str, caplog: pytest.LogCaptureFixture) -> None:
    argv = ["process", str(in_bag), str(tmp_path / "out"), "--weights", str(weights_file), *args]
    assert main(argv) == EXIT_MODEL
    assert message in caplog.text
    assert not (tmp_path / "out").exists()


def test_bad_command_line_is_usage_error(in_bag: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["process", str(in_bag), str(tmp_path / "o"), "--weights", "w", "--output-resolution", "native"])
    assert exc.value.code == 2


def test_console_script_prints_summary(weights_file: Path, tmp_path: Path) -> None:
    """The installed entry point, as a user runs it: exit code 0, summary on stdout, then exit 3."""
    bag = tmp_path / "in"
    write_image_bag(bag, _frames()[:2], "/cam/image/compressed", "cam", "sqlite3", encoding="png")
    exe = shutil.which("edgemoe-bag", path=str(Path(sys.executable).parent))
    assert exe, "edgemoe-bag console script not installed in the venv"
    run = subprocess.run([exe, "process", str(bag), str(tmp_path / "out"), "--weights", str(weights_file)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == EXIT_OK, run.stderr
    assert "processed 2 frames of /cam/image/compressed" in run.stdout
    assert "/cam/depth/image: 2 messages" in run.stdout
    again = subprocess.run([exe, "process", str(bag), str(tmp_path / "out"), "--weights", str(weights_file)],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == EXIT_BAG and "already exists" in again.stderr


def test_calibration_at_another_size_is_rescaled_to_the_outputs(weights_file: Path, tmp_path: Path) -> None:
    """A camera_info calibrated at 2x the image size (binning upstream) is relayed at the image size."""
    from edgemoe_ros.model.weights import load_weights

    bag = tmp_path / "in"
    full = CameraInfoParams.pinhole(2 * W, 2 * H, 120.0)
    with BagWriter(bag) as writer:
        for stamp, rgb in _frames()[:1]:
            writer.write("/cam/camera_info", stamp, full.to_msg(stamp, "cam"))
            writer.write("/cam/image_raw", stamp, m.rgb_to_image(rgb, stamp, "cam"))
    process_bag(bag, tmp_path / "out", load_weights(weights_file), tasks=["depth"])
    info = CameraInfoParams.from_msg(_read_all(tmp_path / "out")["/cam/depth/camera_info"][0][1])
    assert (info.width, info.height) == (W, H)
    assert info.k[0] == pytest.approx(60.0) and info.k[2] == pytest.approx((W - 1) / 2)
    # Depth used the same calibration, at the image's size: focal 60, not the file's 120.
    depth = _image(_read_all(tmp_path / "out")["/cam/depth/image"][0][1])
    with engine_mod.Engine(load_weights(weights_file), "cpu") as engine:
        want = engine.infer(_frames()[0][1], ("depth",), camera_k=np.reshape(INFO.k, (3, 3)))
    np.testing.assert_allclose(depth, want.depth_at_input(), rtol=1e-6)


def test_unusable_calibration_falls_back_to_the_canonical_camera(weights_file: Path, tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A camera_info K with a negative focal length cannot scale depth: it is refused as the node
    refuses it (counted, logged), and every frame is still processed with the canonical camera's
    depth."""
    from edgemoe_ros.model.weights import load_weights

    bag = tmp_path / "in"
    with BagWriter(bag) as writer:
        for stamp, rgb in _frames():
            writer.write("/cam/camera_info", stamp, CameraInfoParams.pinhole(W, H, -60.0).to_msg(stamp, "cam"))
            writer.write("/cam/image_raw", stamp, m.rgb_to_image(rgb, stamp, "cam"))
    with caplog.at_level("WARNING", logger="edgemoe_ros.bag.process"):
        summary = process_bag(bag, tmp_path / "out", load_weights(weights_file), tasks=["depth"])
    assert (summary.frames, summary.skipped, summary.bad_camera_info) == (3, 0, 3)
    assert any("focal lengths must be positive" in r.message for r in caplog.records)
    depth = _image(_read_all(tmp_path / "out")["/cam/depth/image"][0][1])
    with engine_mod.Engine(load_weights(weights_file), "cpu") as engine:
        np.testing.assert_allclose(depth, engine.infer(_frames()[0][1], ("depth",)).depth_at_input(), rtol=1e-6)


def test_info_command_lists_topics(in_bag: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["info", str(in_bag), "--json"]) == EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert doc["message_count"] == 2 * len(STAMPS)
    assert {(t["topic"], t["count"]) for t in doc["topics"]} == {("/cam/image_raw", 3), ("/cam/camera_info", 3)}
    assert doc["duration_ns"] == STAMPS[-1] - STAMPS[0]
    assert main(["info", str(in_bag)]) == EXIT_OK
    assert "/cam/image_raw" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["play", "{missing}"], "no such file or directory"),
    (["play", "{bag}", "--topic", "/cam/camera_info"], "is not one of sensor_msgs/msg/Image"),
    (["play", "{bag}", "--topic", "/front/image"], "topic not in bag"),
    (["info", "{missing}"], "no such file or directory"),
])
def test_play_and_info_bag_errors_exit_code(in_bag: Path, tmp_path: Path, argv: list[str], message: str,
                                            caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROS_LOG_DIR", str(tmp_path / "ros_log"))
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    args = [a.format(bag=in_bag, missing=tmp_path / "nope") for a in argv]
    assert main(args) == EXIT_BAG
    assert message in caplog.text


def test_cli_backend_options_must_be_a_json_object(tmp_path) -> None:
    """A malformed --backend-options is a model/backend problem (exit 4), reported before any work."""
    from edgemoe_ros.bag.cli import main
    from edgemoe_ros.model.config import tiny_config
    from edgemoe_ros.model.weights import random_init, save_weights

    weights = tmp_path / "tiny.safetensors"
    save_weights(random_init(tiny_config(), seed=1), weights)
    rc = main(["process", str(tmp_path / "missing_in"), str(tmp_path / "out"), "--weights", str(weights),
               "--backend-options", "[1, 2]"])
    assert rc == 4
    assert not (tmp_path / "out").exists()


def _process(bag: Path, out: Path, weights_file: Path, **kwargs: object):
    from edgemoe_ros.model.weights import load_weights

    return process_bag(bag, out, load_weights(weights_file), **kwargs)


def _png_claiming(width: int, height: int) -> bytes:
    """A small valid PNG whose IHDR is rewritten to claim ``width`` x ``height`` (a decompression bomb's header)."""
    import struct
    import zlib

    data = bytearray(m.rgb_to_compressed(_frames()[0][1], 1, "cam", "png").data.tobytes())
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


def test_compressed_frames_are_size_checked_before_decoding(weights_file: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Like the node: the header says how big the frame decodes; a bomb is never handed to the decoder."""
    bag = tmp_path / "in"
    good = m.rgb_to_compressed(_frames()[0][1], 1, "cam", "png")
    bomb = m.rgb_to_compressed(_frames()[0][1], 2, "cam", "png")
    bomb.data = np.frombuffer(_png_claiming(30000, 30000), np.uint8)
    with BagWriter(bag) as writer:
        for i, msg in enumerate((good, bomb, good)):
            writer.write("/cam/image/compressed", 10 + i, msg)
    decoded = []
    real = m.cv2.imdecode
    monkeypatch.setattr(m.cv2, "imdecode", lambda buf, flags: decoded.append(buf.size) or real(buf, flags))
    summary = _process(bag, tmp_path / "out", weights_file)
    assert (summary.frames, summary.skipped) == (2, 1)
    assert len(decoded) == 2, "the oversized frame reached the decoder"


def test_non_finite_camera_info_is_counted_and_not_used(weights_file: Path, tmp_path: Path) -> None:
    bag = tmp_path / "in"
    bad = INFO.to_msg(STAMPS[0], "cam")
    bad.k[0] = float("nan")
    with BagWriter(bag) as writer:
        (s0, f0), (s1, f1) = _frames()[:2]
        writer.write("/cam/camera_info", s0, bad)
        writer.write("/cam/image_raw", s0, m.rgb_to_image(f0, s0, "cam"))
        writer.write("/cam/camera_info", s1, INFO.to_msg(s1, "cam"))
        writer.write("/cam/image_raw", s1, m.rgb_to_image(f1, s1, "cam"))
    summary = _process(bag, tmp_path / "out", weights_file, tasks=["depth"])
    assert (summary.frames, summary.skipped, summary.bad_camera_info) == (2, 0, 1)
    infos = _read_all(tmp_path / "out")["/cam/depth/camera_info"]
    assert [t for t, _, _ in infos] == [s1]  # the NaN calibration was never relayed
    assert np.all(np.isfinite(infos[0][1].k))


def test_zero_size_camera_info_means_same_as_image(weights_file: Path, tmp_path: Path) -> None:
    """0x0 in camera_info means "the image's size": outputs and their camera_info, nothing skipped."""
    bag = tmp_path / "in"
    info = INFO.to_msg(STAMPS[0], "cam")
    info.width = info.height = 0
    with BagWriter(bag) as writer:
        stamp, rgb = _frames()[0]
        writer.write("/cam/camera_info", stamp, info)
        writer.write("/cam/image_raw", stamp, m.rgb_to_image(rgb, stamp, "cam"))
    summary = _process(bag, tmp_path / "out", weights_file, tasks=["depth"])
    assert (summary.frames, summary.skipped) == (1, 0)
    got = _read_all(tmp_path / "out")
    assert len(got["/cam/depth/image"]) == 1
    relayed = CameraInfoParams.from_msg(got["/cam/depth/camera_info"][0][1])
    assert (relayed.width, relayed.height) == (W, H) and relayed.k[0] == pytest.approx(INFO.k[0])


def test_a_frame_that_fails_writes_no_output(weights_file: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A skipped frame is skipped whole: never counted as skipped with some outputs written."""
    from edgemoe_ros.bag import process as process_mod

    def broken_info(*args: object) -> object:
        raise ValueError("calibration the fit cannot use")

    monkeypatch.setattr(process_mod, "_output_info", broken_info)
    bag = tmp_path / "in"
    write_image_bag(bag, _frames()[:1], "/cam/image_raw", "cam", "mcap", INFO)
    summary = _process(bag, tmp_path / "out", weights_file)
    assert (summary.frames, summary.skipped) == (0, 1)
    got = _read_all(tmp_path / "out")
    assert not any(topic in got for topic in output_topics("/cam").values())
