# SPDX-License-Identifier: Apache-2.0
"""Proof of life (Isaac ROS style): the real node with the real Engine on a tiny random model in its
own process; one image in, segmentation / colour / depth / camera_info out, every field checked."""

import time

import numpy as np
import pytest
from ros_testing import NodeHarness, image_array, make_camera_info, make_image
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from edgemoe_ros.engine import Engine
from edgemoe_ros.model.config import IGNORE_INDEX
from edgemoe_ros.model.weights import load_weights
from edgemoe_ros.postprocess import PALETTE, colorize_semseg

pytestmark = pytest.mark.ros

H, W = 96, 160
FOCAL = 100.0
#: camera_info and image travel on different topics; give the node time to store the calibration.
INFO_SETTLE_S = 0.3


@pytest.fixture(scope="module")
def harness():
    with NodeHarness() as h:
        yield h


@pytest.fixture(scope="module")
def io(harness):
    c = harness.client
    cols = {name: c.collect(name, typ) for name, typ in (
        ("segmentation/image", Image), ("segmentation/color", Image), ("depth/image", Image),
        ("segmentation/camera_info", CameraInfo), ("depth/camera_info", CameraInfo))}
    image_pub = c.publisher("image", Image)
    info_pub = c.publisher("camera_info", CameraInfo)
    c.wait_for_subscribers(image_pub)
    c.wait_for_subscribers(info_pub)
    for col in cols.values():
        c.wait_for_matched(col)
    return cols, image_pub, info_pub


#: The K the node must hand the engine: the published camera_info's (metric depth of that lens).
CAMERA_K = np.reshape(make_camera_info(H, W, focal=FOCAL).k, (3, 3))


def _expected(harness, image_msg):
    engine = Engine(load_weights(harness.weights_path), "cpu")
    try:
        rgb = np.frombuffer(bytes(image_msg.data), np.uint8).reshape(H, W, 3)
        return engine.infer(rgb, tasks=("semseg", "depth"), camera_k=CAMERA_K)
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
    assert out["segmentation/image"].encoding == "mono8"
    assert out["segmentation/color"].encoding == "rgb8"
    assert out["depth/image"].encoding == "32FC1"

    expected = _expected(harness, msg)
    seg = image_array(out["segmentation/image"])
    np.testing.assert_array_equal(seg, expected.semseg_at_input())
    color = image_array(out["segmentation/color"])
    np.testing.assert_array_equal(color, PALETTE[seg])
    depth = image_array(out["depth/image"])
    # The node scaled depth with the camera_info K (this lens is not the canonical camera).
    assert expected.depth_scale != pytest.approx(1.0)
    np.testing.assert_allclose(depth, expected.depth_at_input(), rtol=1e-6)
    cfg = load_weights(harness.weights_path).config
    scale = expected.depth_scale
    assert np.all((depth >= cfg.min_depth * scale * 0.999) & (depth <= cfg.max_depth * scale * 1.001))

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
        np.testing.assert_array_equal(image_array(out["segmentation/image"]), expected.semseg)
        info = out["segmentation/camera_info"]
        sx, sy = cfg.img_w / W, cfg.img_h / H
        assert info.k[0] == pytest.approx(FOCAL * sx) and info.k[4] == pytest.approx(FOCAL * sy)
        # principal point at the image centre stays at the centre of the model grid (pixel centres)
        assert info.k[2] == pytest.approx((cfg.img_w - 1) / 2) and info.k[5] == pytest.approx((cfg.img_h - 1) / 2)
        assert info.p[0] == pytest.approx(FOCAL * sx)
    finally:
        harness.client.set_parameters(harness.node_name, {"output_resolution": "input"})


def test_crop_mode_marks_outside_as_nan_and_ignore(harness, io):
    c = harness.client
    [res] = c.set_parameters(harness.node_name, {"resize_mode": "crop"})
    assert res.successful
    assert c.call(Trigger, harness.srv("reload_model"), Trigger.Request()).success
    try:
        msg, out = _send(io, (1_700_000_002, 9), seed=5)
        engine = Engine(load_weights(harness.weights_path), "cpu", resize_mode="crop")
        rgb = np.frombuffer(bytes(msg.data), np.uint8).reshape(H, W, 3)
        want = engine.infer(rgb, camera_k=CAMERA_K)
        engine.close()
        depth = image_array(out["depth/image"])
        seg = image_array(out["segmentation/image"])
        np.testing.assert_array_equal(seg, want.semseg_at_input())
        np.testing.assert_array_equal(np.isnan(depth), np.isnan(want.depth_at_input()))
        assert np.isnan(depth[0]).all() and (seg[0] == IGNORE_INDEX).all()  # 96x160 -> rows cropped
        np.testing.assert_array_equal(image_array(out["segmentation/color"]), colorize_semseg(seg))
        assert np.isfinite(depth[H // 2]).all()
    finally:
        c.set_parameters(harness.node_name, {"resize_mode": ""})
        c.call(Trigger, harness.srv("reload_model"), Trigger.Request())


@pytest.mark.parametrize("mode", ["stretch", "crop"])
@pytest.mark.parametrize("in_h,in_w", [(96, 160), (720, 1280), (480, 640), (33, 301)])
def test_color_at_input_equals_colorizing_the_restored_ids(mode, in_h, in_w):
    """The node colourises at model resolution and upsamples; it must equal the slow way exactly."""
    from edgemoe_ros.model.config import tiny_config
    from edgemoe_ros.postprocess import compute_fit, restore_to_input
    from edgemoe_ros.ros.outputs import color_at_input

    cfg = tiny_config()
    ids = np.random.default_rng(in_w).integers(0, cfg.num_classes, (cfg.img_h, cfg.img_w), dtype=np.uint8)
    fit = compute_fit(in_h, in_w, cfg, mode)
    slow = colorize_semseg(restore_to_input(ids, fit, IGNORE_INDEX, "nearest"))
    np.testing.assert_array_equal(color_at_input(colorize_semseg(ids), fit), slow)
