# SPDX-License-Identifier: Apache-2.0
"""The bag tools read every encoding the node reads (YUV 4:2:2, Bayer 8/16, 16-bit colour/mono),
with the node's own conversion: a frame read from a bag is the node's RGB of the same CDR bytes,
and ``edgemoe-bag process`` on such a bag writes what the engine gives for that RGB. Writing
(``write_image_bag``) produces each encoding as a camera would, so the round trip is checked
against the source frame too."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemoe_ros import engine as engine_mod
from edgemoe_ros.bag import BagWriter, read_image_frames, write_image_bag
from edgemoe_ros.bag import messages as m
from edgemoe_ros.bag.cli import EXIT_OK, main
from edgemoe_ros.bag.io import BagReader
from edgemoe_ros.image_encodings import SCALE_8_TO_16
from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.model.weights import random_init, save_weights
from edgemoe_ros.ros import conversions as conv
from edgemoe_ros.ros.cdr_image import parse_image

TOPIC = "/cam/image_raw"
H, W = 32, 48
STAMPS = [1_700_000_000_950_000_000 + i * 100_000_000 for i in range(2)]
#: One encoding of each family the node converts (docs/ros_conventions.md "Input encodings").
FAMILIES = ["uyvy", "yuv422_yuy2", "bayer_grbg8", "bayer_rggb16", "rgb16", "bgra16", "mono16"]


#: Frames are flat BLOCK x BLOCK patches: 4:2:2 keeps a patch's colour, and so does demosaicing
#: inside a patch (bilinear Bayer interpolation reads the 3x3 neighbourhood).
BLOCK = 8


def _frames() -> list[tuple[int, np.ndarray]]:
    rng = np.random.default_rng(3)
    small = rng.integers(0, 256, (len(STAMPS), H // BLOCK, W // BLOCK, 3), dtype=np.uint8)
    return [(s, np.repeat(np.repeat(f, BLOCK, axis=0), BLOCK, axis=1))
            for s, f in zip(STAMPS, small, strict=True)]


def _inside_patches() -> np.ndarray:
    """Pixels whose 3x3 neighbourhood lies in their own patch."""
    y, x = np.mgrid[0:H, 0:W]
    return (y % BLOCK > 0) & (y % BLOCK < BLOCK - 1) & (x % BLOCK > 0) & (x % BLOCK < BLOCK - 1)


def _node_rgb(raw: bytes) -> np.ndarray:
    """What the node makes of these CDR bytes: a zero-copy view, then its conversion."""
    return conv.image_to_rgb(parse_image(raw), conv.DEFAULT_MAX_IMAGE_PIXELS)


@pytest.mark.parametrize("encoding", FAMILIES)
def test_bag_frames_are_the_nodes_rgb_and_close_to_the_source(tmp_path: Path, encoding: str):
    frames = _frames()
    write_image_bag(tmp_path / "b", frames, TOPIC, "cam", encoding=encoding)
    with BagReader(tmp_path / "b") as reader:
        raws = [raw for _, _, raw in reader.raw_messages([TOPIC])]
        msg = reader.deserialize(TOPIC, raws[0])
    assert (msg.encoding, msg.is_bigendian) == (encoding, 0)
    got = list(read_image_frames(tmp_path / "b"))
    assert [g.encoding for g in got] == [encoding] * len(frames)
    for (_, rgb), frame, raw in zip(frames, got, raws, strict=True):
        np.testing.assert_array_equal(frame.rgb, _node_rgb(raw))  # one implementation
        err = np.abs(frame.rgb.astype(int) - rgb)
        if encoding.startswith("mono"):
            grey = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            assert np.abs(frame.rgb[..., 0] - grey).max() <= 1.0
        elif encoding.startswith("bayer"):
            assert err[_inside_patches()].max() == 0, err[_inside_patches()].max()
        else:  # 16-bit is exact; 4:2:2 of pair-constant colour loses only rounding
            assert err.max() <= (0 if encoding.endswith("16") else 3), err.max()


def test_big_endian_16_bit_frame_in_a_bag(tmp_path: Path):
    rgb = _frames()[0][1]
    samples = (rgb.astype(np.uint16) * SCALE_8_TO_16).astype(">u2")
    msg = m.array_to_image(samples, "rgb16", 5, "cam")
    assert msg.is_bigendian == 1
    with BagWriter(tmp_path / "b") as writer:
        writer.write(TOPIC, 5, msg)
    [frame] = read_image_frames(tmp_path / "b")
    np.testing.assert_array_equal(frame.rgb, rgb)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(random_init(tiny_config(), seed=4), path)
    return path


@pytest.mark.parametrize("encoding", FAMILIES)
def test_process_gives_the_engines_outputs_for_the_nodes_rgb(tmp_path: Path, weights_file: Path,
                                                             encoding: str):
    write_image_bag(tmp_path / "in", _frames(), TOPIC, "cam", encoding=encoding)
    out = tmp_path / "out"
    assert main(["process", str(tmp_path / "in"), str(out), "--weights", str(weights_file),
                 "--tasks", "semseg", "--no-progress"]) == EXIT_OK
    with BagReader(tmp_path / "in") as reader:
        rgbs = [_node_rgb(raw) for _, _, raw in reader.raw_messages([TOPIC])]
    with BagReader(out) as reader:
        segs = [reader.deserialize(t, raw)
                for t, _, raw in reader.raw_messages(["/cam/segmentation/image"])]
    assert [m.stamp_ns(s) for s in segs] == STAMPS
    engine = engine_mod.Engine(random_init(tiny_config(), seed=4), "cpu")
    try:
        for rgb, seg in zip(rgbs, segs, strict=True):
            want = engine.infer(rgb, tasks=("semseg",)).semseg_at_input()
            np.testing.assert_array_equal(seg.data.reshape(seg.height, seg.width), want)
    finally:
        engine.close()
