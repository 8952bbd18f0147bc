# SPDX-License-Identifier: Apache-2.0
"""Every bad input of SPEC §7 sent to a running node: it is counted by kind on /diagnostics, the
node keeps running, and the next good frame still gives the correct output. Also every accepted
encoding (raw and compressed) gives the same result as rgb8, and run-time backend faults are
counted, dropped, and fall back to the configured backend."""

import itertools
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from ros_testing import (
    NodeHarness,
    image_array,
    make_camera_info,
    make_compressed,
    make_image,
    wait_diag,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from edgemoe_ros.engine import Engine
from edgemoe_ros.model.weights import load_weights

pytestmark = pytest.mark.ros

H, W = 64, 128
MAX_PIXELS = 200_000
GOOD_PIXELS = np.random.default_rng(7).integers(0, 256, (H, W, 3), dtype=np.uint8)
_stamps = itertools.count(1)


def _env(transport: str):
    """A node reading ``transport`` (one input subscription: raw 'image' or 'image/compressed')."""
    h = NodeHarness(params={"image_transport": transport, "max_image_pixels": MAX_PIXELS, "queue_size": 4})
    try:
        c = h.client
        seg, depth = c.collect("segmentation/image", Image), c.collect("depth/image", Image)
        image = (("image", c.publisher("image", Image)) if transport == "raw"
                 else ("compressed", c.publisher("image/compressed", CompressedImage)))
        pubs = dict([image], info=c.publisher("camera_info", CameraInfo),
                    request=c.publisher(h.srv("task_request"), String))
        for p in pubs.values():
            c.wait_for_subscribers(p)
        c.wait_for_matched(seg)
        c.wait_for_matched(depth)
        engine = Engine(load_weights(h.weights_path), "cpu")
        expected = engine.infer(GOOD_PIXELS, tasks=("semseg", "depth"))
        engine.close()
        yield h, pubs, {"seg": seg, "depth": depth}, expected, c.diagnostics()
    finally:
        h.close()


@pytest.fixture(scope="module")
def env():
    yield from _env("raw")


@pytest.fixture(scope="module")
def env_compressed():
    yield from _env("compressed")


def _stamp():
    return (200, next(_stamps))


def _outputs_for(outs, stamp):
    match = lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == stamp  # noqa: E731
    return outs["seg"].wait_for(match), outs["depth"].wait_for(match)


def _check_good_frame(env, msg_factory=None):
    """A good frame right after a bad one: outputs exactly equal the in-process engine's."""
    h, pubs, outs, expected, _ = env
    stamp = _stamp()
    if "image" in pubs:
        pubs["image"].publish(make_image(stamp=stamp, pixels=GOOD_PIXELS))
    else:  # png: lossless, so the same pixels
        pubs["compressed"].publish(make_compressed(stamp=stamp, pixels=GOOD_PIXELS))
    seg, depth = _outputs_for(outs, stamp)
    np.testing.assert_array_equal(image_array(seg), expected.semseg_at_input())
    np.testing.assert_allclose(image_array(depth), expected.depth_at_input(), rtol=1e-6)
    assert h.node.alive()


def _raw(encoding="rgb8", width=W, height=H, step=None, data=None):
    msg = make_image(stamp=_stamp(), pixels=GOOD_PIXELS)
    msg.encoding, msg.width, msg.height = encoding, width, height
    msg.step = step if step is not None else width * 3
    if data is not None:
        msg.data = data
    return msg


def _jpeg_bytes():
    ok, buf = cv2.imencode(".jpg", GOOD_PIXELS[..., ::-1])
    assert ok
    return buf.tobytes()


def _compressed(data, fmt="jpeg"):
    msg = CompressedImage(format=fmt)
    msg.header.stamp.sec, msg.header.stamp.nanosec = _stamp()
    msg.data = data
    return msg


def _bad_camera_info():
    info = make_camera_info(H, W)
    info.k[0] = float("nan")
    return info


def _negative_focal_camera_info():
    info = make_camera_info(H, W)
    info.k[4] = -info.k[4]
    return info


GOOD_BYTES = GOOD_PIXELS.tobytes()
BIG_W, BIG_H = 600, 400  # 240k pixels > MAX_PIXELS, a real frame with real data

BAD_INPUTS = {
    "encoding nv12": ("image", lambda: _raw("nv12", step=W * 2, data=GOOD_BYTES[: W * 2 * H]), "encoding"),
    "encoding 32FC1": ("image", lambda: _raw("32FC1", step=W * 4, data=GOOD_BYTES[: W * 4 * H] + b"\0" * 8192),
                       "encoding"),
    "zero size": ("image", lambda: _raw(width=0, height=0, step=0, data=b""), "empty"),
    "odd size 4x1000": ("image", lambda: _raw(width=1000, height=4, step=3000, data=b"\x01" * 12000), "odd_size"),
    "step too small": ("image", lambda: _raw(step=W * 3 - 3), "step_mismatch"),
    "data longer than step*height": ("image", lambda: _raw(data=GOOD_BYTES + b"\0" * 77), "step_mismatch"),
    "truncated data": ("image", lambda: _raw(data=GOOD_BYTES[:-1000]), "truncated"),
    "huge header, no data": ("image", lambda: _raw(width=100_000, height=100_000, step=300_000, data=b""),
                             "too_large"),
    "huge real frame": ("image", lambda: _raw(width=BIG_W, height=BIG_H, step=BIG_W * 3,
                                              data=b"\x80" * (BIG_W * BIG_H * 3)), "too_large"),
    "camera_info NaN": ("info", _bad_camera_info, "non_finite"),
    "camera_info negative focal": ("info", _negative_focal_camera_info, "bad_calibration"),
    "corrupt jpeg": ("compressed", lambda: _compressed(_jpeg_bytes()[:2] + b"\x00" * 64 + b"\xff\xd9"),
                     "corrupt_compressed"),
    "not an image": ("compressed", lambda: _compressed(b"GIF89a garbage bytes"), "corrupt_compressed"),
    "truncated jpeg": ("compressed", lambda: _compressed(_jpeg_bytes()[:300]), "truncated"),
    "unsupported compressed format": ("compressed", lambda: _compressed(_jpeg_bytes(), "16UC1; compressedDepth"),
                                      "encoding"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_counted_by_kind_then_good_frame_correct(request, case):
    topic, factory, kind = BAD_INPUTS[case]
    env = request.getfixturevalue("env_compressed" if topic == "compressed" else "env")
    h, pubs, outs, expected, diag = env
    key = f"bad input {kind}"
    before = wait_diag(diag, lambda v: True)
    pubs[topic].publish(factory())
    after = wait_diag(diag, lambda v: int(v.get(key, 0)) > int(before.get(key, 0)))
    assert int(after.get(key, 0)) == int(before.get(key, 0)) + 1
    assert int(after["bad inputs"]) == int(before["bad inputs"]) + 1
    assert after["__level__"] == "1" and "bad input" in after["__message__"]  # WARN for that report
    _check_good_frame(env)
    assert f"{kind}" in h.node.output()


def test_unknown_task_request_counted_and_ignored(env):
    h, pubs, outs, expected, diag = env
    before = wait_diag(diag, lambda v: True)
    pubs["request"].publish(String(data="semseg,optical_flow"))
    after = wait_diag(diag, lambda v: int(v["bad task requests"]) > int(before["bad task requests"]))
    assert after["active tasks"] == "semseg,depth"
    _check_good_frame(env)


@pytest.mark.parametrize("encoding", ["bgr8", "rgba8", "bgra8"])
def test_every_color_encoding_gives_the_rgb8_result(env, encoding):
    h, pubs, outs, expected, _ = env
    px = {"bgr8": GOOD_PIXELS[..., ::-1],
          "rgba8": np.dstack([GOOD_PIXELS, np.zeros((H, W), np.uint8)]),
          "bgra8": np.dstack([GOOD_PIXELS[..., ::-1], np.zeros((H, W), np.uint8)])}[encoding]
    stamp = _stamp()
    pubs["image"].publish(make_image(encoding=encoding, stamp=stamp, pixels=np.ascontiguousarray(px)))
    seg, _ = _outputs_for(outs, stamp)
    np.testing.assert_array_equal(image_array(seg), expected.semseg_at_input())


def test_mono8_and_compressed_png_accepted(env, env_compressed):
    h, pubs, outs, expected, _ = env
    gray = GOOD_PIXELS[..., 1].copy()
    engine = Engine(load_weights(h.weights_path), "cpu")
    want_gray = engine.infer(np.dstack([gray] * 3), tasks=("semseg",)).semseg_at_input()
    engine.close()
    stamp = _stamp()
    pubs["image"].publish(make_image(encoding="mono8", stamp=stamp, pixels=gray))
    seg, _ = _outputs_for(outs, stamp)
    np.testing.assert_array_equal(image_array(seg), want_gray)

    h, pubs, outs, expected, _ = env_compressed
    ok, png = cv2.imencode(".png", GOOD_PIXELS[..., ::-1])
    msg = _compressed(png.tobytes(), "rgb8; png compressed bgr8")
    pubs["compressed"].publish(msg)
    seg, depth = _outputs_for(outs, (msg.header.stamp.sec, msg.header.stamp.nanosec))
    np.testing.assert_array_equal(image_array(seg), expected.semseg_at_input())


# ----- backend faults -----
FAULT_EXE = [sys.executable, str(Path(__file__).with_name("fault_injection.py"))]


@pytest.mark.parametrize("fallback", ["cpu", ""])
def test_backend_fault_dropped_counted_and_fallback_or_recovery(fallback, tmp_path):
    trigger = tmp_path / "fault_now"
    h = NodeHarness(params={"backend": "faulty", "backend_options": f'{{"trigger_file": "{trigger}"}}',
                            "fallback_backend": fallback}, executable=FAULT_EXE)
    try:
        c = h.client
        diag = c.diagnostics()
        seg = c.collect("segmentation/image", Image)
        image_pub = c.publisher("image", Image)
        c.wait_for_subscribers(image_pub)
        c.wait_for_matched(seg)
        match = lambda s: (lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) == s)  # noqa: E731

        image_pub.publish(make_image(stamp=(300, 1), pixels=GOOD_PIXELS))
        first = seg.wait_for(match((300, 1)))

        trigger.write_text("fail")
        image_pub.publish(make_image(stamp=(300, 2), pixels=GOOD_PIXELS))
        values = wait_diag(diag, lambda v: int(v["backend faults"]) >= 1)
        assert "simulated device timeout" in h.node.output()
        assert h.node.alive()
        if fallback:
            assert values["fallbacks"] == "1" and values["backend"] == "cpu" and values["__level__"] == "1"
        else:
            assert values["__level__"] == "2" and "backend fault" in values["__message__"]
            trigger.unlink()  # the device comes back: the primary recovers by itself
        image_pub.publish(make_image(stamp=(300, 3), pixels=GOOD_PIXELS))
        third = seg.wait_for(match((300, 3)))
        assert not any((m.header.stamp.sec, m.header.stamp.nanosec) == (300, 2) for m in seg.messages)
        assert bytes(third.data) == bytes(first.data)
    finally:
        h.close()
