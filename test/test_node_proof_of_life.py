"""Proof of life (Isaac ROS style): the real node with the real Engine on a tiny random model in its
own process; one image in, segmentation / colour / depth / camera_info out, every field checked."""

import time

import numpy as np
import pytest
from ros_testing import NodeHarness, image_array, make_camera_info, make_image
from sensor_msgs.msg import CameraInfo, Image

from edgemoe_ros.engine import Engine
from edgemoe_ros.model.weights import load_weights
from edgemoe_ros.postprocess import PALETTE

pytestmark = pytest.mark.ros

H, W = 96, 160
FOCAL = 100.0
#: camera_info and image travel on different topics; give the node time to store the calibration.
INFO_SETTLE_S = 0.3


@pytest.fixture(scope="module")
def harness():
    h = NodeHarness()
    try:
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def io(harness):
    c = harness.client
    cols = {name: c.collect(name, typ) for name, typ in (
        ("segmentation", Image), ("segmentation/color", Image), ("depth", Image),
        ("segmentation/camera_info", CameraInfo), ("depth/camera_info", CameraInfo))}
    image_pub = c.publisher("image", Image)
    info_pub = c.publisher("camera_info", CameraInfo)
    c.wait_for_subscribers(image_pub)
    c.wait_for_subscribers(info_pub)
    for col in cols.values():
        c.wait_for_matched(col)
    return cols, image_pub, info_pub


def _expected(harness, image_msg):
    engine = Engine(load_weights(harness.weights_path), "cpu")
    try:
        rgb = np.frombuffer(bytes(image_msg.data), np.uint8).reshape(H, W, 3)
        return engine.infer(rgb, tasks=("semseg", "depth"))
    finally:
        engine.close()


def _send(io, stamp, seed=3):
    """camera_info, then (once it has had time to arrive) one image; returns the image and outputs."""
    cols, image_pub, info_pub = io
    for col in cols.values():
        col.clear()
    info_pub.publish(make_camera_info(H, W, stamp=stamp, focal=FOCAL))
    time.sleep(INFO_SETTLE_S)
    msg = make_image(H, W, "rgb8", stamp=stamp, frame_id="front_camera", seed=seed)
    image_pub.publish(msg)
    out = {name: col.wait_for(lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == stamp)
           for name, col in cols.items()}
    return msg, out


def test_one_image_gives_every_output_with_copied_header(harness, io):
    stamp = (1_700_000_000, 123_456_789)
    msg, out = _send(io, stamp)
    for name, m in out.items():
        assert m.header.frame_id == "front_camera", name
        assert (m.header.stamp.sec, m.header.stamp.nanosec) == stamp, name
        assert (m.width, m.height) == (W, H), name
    assert out["segmentation"].encoding == "mono8"
    assert out["segmentation/color"].encoding == "rgb8"
    assert out["depth"].encoding == "32FC1"

    expected = _expected(harness, msg)
    seg = image_array(out["segmentation"])
    np.testing.assert_array_equal(seg, expected.semseg_at_input())
    color = image_array(out["segmentation/color"])
    np.testing.assert_array_equal(color, PALETTE[seg])
    depth = image_array(out["depth"])
    np.testing.assert_allclose(depth, expected.depth_at_input(), rtol=1e-6)
    cfg = load_weights(harness.weights_path).config
    assert np.all((depth >= cfg.min_depth) & (depth <= cfg.max_depth))

    info = out["depth/camera_info"]
    np.testing.assert_allclose(info.k, make_camera_info(H, W, focal=FOCAL).k)


def test_model_resolution_outputs_and_scaled_camera_info(harness, io):
    [res] = harness.client.set_parameters(harness.node_name, {"output_resolution": "model"})
    try:
        assert res.successful, res.reason
        cfg = load_weights(harness.weights_path).config
        stamp = (1_700_000_001, 5)
        msg, out = _send(io, stamp, seed=4)
        for name, m in out.items():
            assert (m.width, m.height) == (cfg.img_w, cfg.img_h), name
        expected = _expected(harness, msg)
        np.testing.assert_array_equal(image_array(out["segmentation"]), expected.semseg)
        info = out["segmentation/camera_info"]
        sx, sy = cfg.img_w / W, cfg.img_h / H
        assert info.k[0] == pytest.approx(FOCAL * sx) and info.k[4] == pytest.approx(FOCAL * sy)
        # principal point at the image centre stays at the centre of the model grid (pixel centres)
        assert info.k[2] == pytest.approx((cfg.img_w - 1) / 2) and info.k[5] == pytest.approx((cfg.img_h - 1) / 2)
        assert info.p[0] == pytest.approx(FOCAL * sx)
    finally:
        harness.client.set_parameters(harness.node_name, {"output_resolution": "input"})
