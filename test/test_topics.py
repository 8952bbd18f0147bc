# SPDX-License-Identifier: Apache-2.0
"""Issue 19, ROS conventions: one input transport, camera_info beside every output image, and the
optional compressed colour output, for both nodes.

The nodes run in this process with a client node on the same rclpy context (its own domain), so
the graph, subscriptions and messages are real DDS ones without starting processes.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from ros_testing import (
    Collector,
    image_array,
    make_camera_info,
    make_compressed,
    make_image,
    reliable_qos,
    wait_until,
    write_tiny_weights,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.ros import topic_names as names
from edgemoe_ros.ros.multi_camera_node import MultiCameraNode
from edgemoe_ros.ros.node import EdgeMoeNode
from edgemoe_ros.ros.params import ParameterValueError

os.environ.setdefault("ROS_LOG_DIR", "/tmp/edgemoe_test_ros_log")

H, W = 96, 160
TIMEOUT_S = 30.0
#: Every output image of a camera, and the encoding it has.
OUTPUT_IMAGES = {
    names.SEGMENTATION_IMAGE: "mono8",
    names.SEGMENTATION_COLOR: "rgb8",
    names.DEPTH_IMAGE: "32FC1",
}


def get_camera_info_topic(base_topic: str) -> str:
    """image_transport's ``getCameraInfoTopic`` (camera_common.cpp) step by step: ``split`` keeps
    the non-empty tokens before each '/' plus whatever follows the last one; every token but
    the last is appended as '/' + token, then '/camera_info'. Written apart from
    topic_names.camera_info_topic so the test does not check the node's rule against itself."""
    tokens, rest = [], base_topic
    while (pos := rest.find("/")) != -1:
        if rest[:pos]:
            tokens.append(rest[:pos])
        rest = rest[pos + 1:]
    tokens.append(rest)
    return "".join("/" + t for t in tokens[:-1]) + "/camera_info"


def expand(name: str, namespace: str) -> str:
    """rclcpp::expand_topic_or_service_name for the plain relative/absolute names used here:
    what CameraSubscriber feeds to getCameraInfoTopic."""
    return name if name.startswith("/") else f"{namespace.rstrip('/')}/{name}"


@pytest.mark.parametrize("topic", [
    "/ns/depth/image", "/depth/image", "/image", "image", "/a//b/image", "/a/b/", "a/b/c",
    "/perception/front/segmentation/color",
])
def test_camera_info_rule_is_image_transports(topic):
    assert names.camera_info_topic(topic) == get_camera_info_topic(topic)


def test_every_output_image_has_its_camera_info_as_sibling():
    infos = {t: get_camera_info_topic(expand(t, "/ns")) for t in OUTPUT_IMAGES}
    assert infos == {names.SEGMENTATION_IMAGE: "/ns/segmentation/camera_info",
                     names.SEGMENTATION_COLOR: "/ns/segmentation/camera_info",
                     names.DEPTH_IMAGE: "/ns/depth/camera_info"}
    assert {expand(names.SEGMENTATION_INFO, "/ns"), expand(names.DEPTH_INFO, "/ns")} == set(
        infos.values())


def test_transport_topic():
    assert names.transport_topic("/cam/image_raw", "compressed") == "/cam/image_raw/compressed"
    assert names.transport_topic("/cam/image_raw", "raw") == "/cam/image_raw"


# ----------------------------------------------------------------------------- in-process graph
@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return write_tiny_weights(tmp_path_factory.mktemp("w") / "tiny.safetensors")


class Graph:
    """The node under test and a client node on one context, spun in a background thread."""

    def __init__(self, ctx, node: Node) -> None:
        self.node = node
        self.client = Node(f"client_{uuid.uuid4().hex[:8]}", context=ctx)
        self.executor = MultiThreadedExecutor(num_threads=4, context=ctx)
        self.executor.add_node(node)
        self.executor.add_node(self.client)
        self._thread = threading.Thread(target=self.executor.spin, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=5.0)
        self.node.destroy_node()
        self.client.destroy_node()
        self._thread.join(5.0)

    def collect(self, topic: str, msg_type: type) -> Collector:
        col = Collector()
        col.subscription = self.client.create_subscription(msg_type, topic, col, reliable_qos())
        return col

    def publisher(self, topic: str, msg_type: type):
        return self.client.create_publisher(msg_type, topic, reliable_qos())

    def subscribers(self, topic: str) -> int:
        return self.client.count_subscribers(topic)

    def wait_matched(self, *things) -> None:
        for x in things:
            if isinstance(x, Collector):
                wait_until(lambda x=x: x.subscription.get_publisher_count() >= 1, TIMEOUT_S,
                           f"a publisher on {x.subscription.topic_name}")
            else:
                wait_until(lambda x=x: x.get_subscription_count() >= 1, TIMEOUT_S,
                           f"a subscriber on {x.topic_name}")


def _params(weights: Path, **params) -> list[Parameter]:
    values = {"weights_path": str(weights), "autostart": False, "input_qos": "reliable",
              "output_qos": "reliable", **params}
    return [Parameter(k, value=v) for k, v in values.items()]


@pytest.fixture
def activate(ros_context) -> Iterator:
    """``activate(node)``: configure, activate and spin ``node`` in a Graph, closed at teardown."""
    graphs: list[Graph] = []

    def start(node: Node) -> Graph:
        node.trigger_configure()
        node.trigger_activate()
        graphs.append(Graph(ros_context, node))
        return graphs[-1]

    yield start
    for g in graphs:
        g.close()


@pytest.fixture
def single(ros_context, weights, activate):
    """``single(namespace=..., cli_args=..., **params)``: an active edgemoe_node in a Graph."""
    def start(namespace: str = "/cam", cli_args: list[str] | None = None, **params) -> Graph:
        return activate(EdgeMoeNode(
            f"edgemoe_node_{uuid.uuid4().hex[:8]}", namespace=namespace, context=ros_context,
            parameter_overrides=_params(weights, **params), cli_args=cli_args))
    return start


def _stamp_of(msg) -> tuple[int, int]:
    return msg.header.stamp.sec, msg.header.stamp.nanosec


def _published(node) -> int:
    return node._stats.snapshot_counts()[1].get("published", 0)


# ----------------------------------------------------------------------------- one transport
#: transport -> (the topic it reads, the one it must not read, message type, frame factory)
TRANSPORT_CASES = {
    "raw": ("/cam/image", "/cam/image/compressed", Image, make_image),
    "compressed": ("/cam/image/compressed", "/cam/image", CompressedImage, make_compressed),
}


@pytest.mark.parametrize("transport", list(TRANSPORT_CASES))
def test_one_transport_is_one_subscription_and_each_frame_is_inferred_once(single, transport):
    topic, other, msg_type, make_frame = TRANSPORT_CASES[transport]
    g = single(image_transport=transport)
    assert g.subscribers(topic) == 1
    assert g.subscribers(other) == 0
    seg = g.collect("/cam/segmentation/image", Image)
    pub = g.publisher(topic, msg_type)
    g.wait_matched(seg, pub)
    stamps = [(5, i) for i in range(1, 4)]
    for s in stamps:
        pub.publish(make_frame(H, W, stamp=s, seed=s[1]))
        out = seg.wait_for(lambda m, s=s: _stamp_of(m) == s, TIMEOUT_S)  # one at a time: no drop
        assert (out.height, out.width) == (H, W)
    assert sorted(_stamp_of(m) for m in seg.messages) == stamps  # each once
    assert _published(g.node) == len(stamps)


def test_remapping_image_moves_the_compressed_subscription(single):
    g = single(image_transport="compressed",
               cli_args=["--ros-args", "-r", "image:=/sensors/front/image_raw"])
    assert g.subscribers("/sensors/front/image_raw/compressed") == 1
    assert g.subscribers("/cam/image/compressed") == 0 and g.subscribers("/cam/image") == 0
    seg = g.collect("/cam/segmentation/image", Image)
    pub = g.publisher("/sensors/front/image_raw/compressed", CompressedImage)
    g.wait_matched(seg, pub)
    pub.publish(make_compressed(H, W, stamp=(7, 1)))
    seg.wait_for(lambda m: _stamp_of(m) == (7, 1), TIMEOUT_S)


@pytest.mark.parametrize("bad, match", [
    ({"image_transport": "theora"},
     "'image_transport' = 'theora': must be one of 'raw', 'compressed'"),
    ({"image_transport": "Compressed"}, "image_transport"),
    ({"use_compressed": True},
     "'use_compressed' = True: was removed.*image_transport: compressed"),
    ({"color_compression": "webp"}, "color_compression"),
])
def test_bad_transport_parameters_refused_at_start(ros_context, weights, bad, match):
    with pytest.raises(ParameterValueError, match=match):
        EdgeMoeNode(f"edgemoe_node_{uuid.uuid4().hex[:8]}", context=ros_context,
                    parameter_overrides=_params(weights, **bad))


def test_transport_cannot_change_at_run_time(single):
    g = single()
    [result] = g.node.set_parameters([Parameter("image_transport", value="compressed")])
    assert not result.successful
    assert g.node.get_parameter("image_transport").value == "raw"


# ---------------------------------------------------------------------------- camera_info siblings
def _check_info_beside_every_image(g: Graph, namespace: str, image_topic: str,
                                   out_hw: tuple[int, int], stamp: tuple[int, int]) -> None:
    """Subscribe as CameraSubscriber does (the info topic derived from each output image's
    expanded name) and check each image's camera_info: same stamp, the image's size, K scaled."""
    images = {t: g.collect(expand(t, namespace), Image) for t in OUTPUT_IMAGES}
    infos = {t: g.collect(get_camera_info_topic(expand(t, namespace)), CameraInfo)
             for t in OUTPUT_IMAGES}
    image_pub = g.publisher(image_topic, Image)
    info_pub = g.publisher(names.camera_info_topic(image_topic), CameraInfo)
    g.wait_matched(*images.values(), *infos.values(), image_pub, info_pub)
    focal = 100.0
    info_pub.publish(make_camera_info(H, W, stamp=stamp, focal=focal))
    wait_until(lambda: _received_info(g.node) is not None, TIMEOUT_S, "the camera_info")
    image_pub.publish(make_image(H, W, stamp=stamp))
    out_h, out_w = out_hw
    for topic, encoding in OUTPUT_IMAGES.items():
        img = images[topic].wait_for(lambda m: _stamp_of(m) == stamp, TIMEOUT_S)
        info = infos[topic].wait_for(lambda m: _stamp_of(m) == stamp, TIMEOUT_S)
        assert img.encoding == encoding and image_array(img).shape[:2] == (out_h, out_w)
        assert (info.height, info.width) == (img.height, img.width), topic
        np.testing.assert_allclose([info.k[0], info.k[4]], [focal * out_w / W, focal * out_h / H],
                                   rtol=1e-6)


def _received_info(node):
    if isinstance(node, EdgeMoeNode):
        return node._latest_info
    return next(iter(node._cameras.values())).info


@pytest.mark.parametrize("resolution, out_hw", [("model", None), ("input", (H, W))])
def test_each_output_image_has_its_scaled_camera_info_as_sibling(single, resolution, out_hw):
    g = single(output_resolution=resolution)
    cfg = tiny_config()
    _check_info_beside_every_image(g, "/cam", "/cam/image", out_hw or (cfg.img_h, cfg.img_w),
                                   (8, 1))


# ----------------------------------------------------------------------------- compressed colour
@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_compressed_colour_output_decodes_to_the_colour_image(single, codec):
    g = single(color_compression=codec)
    color = g.collect("/cam/segmentation/color", Image)
    packed = g.collect("/cam/segmentation/color/compressed", CompressedImage)
    image_pub = g.publisher("/cam/image", Image)
    g.wait_matched(color, packed, image_pub)
    image_pub.publish(make_image(H, W, stamp=(9, 1)))
    want = image_array(color.wait_for(lambda m: _stamp_of(m) == (9, 1), TIMEOUT_S))
    msg = packed.wait_for(lambda m: _stamp_of(m) == (9, 1), TIMEOUT_S)
    assert msg.format == f"rgb8; {codec} compressed bgr8"
    bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), np.uint8), cv2.IMREAD_COLOR)
    got = bgr[..., ::-1]
    if codec == "png":
        np.testing.assert_array_equal(got, want)
    else:  # lossy (and chroma-subsampled: class edges blur), but the same bytes libjpeg makes
        # at image_transport's default quality, and far closer than with red and blue swapped
        ok, ref = cv2.imencode(".jpg", want[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok and bytes(msg.data) == ref.tobytes()
        err = np.abs(got.astype(int) - want.astype(int)).mean()
        assert err < 0.5 * np.abs(got.astype(int) - want[..., ::-1].astype(int)).mean()


def test_compressed_colour_output_off_by_default(single):
    g = single()
    assert g.client.count_publishers("/cam/segmentation/color/compressed") == 0
    assert g.client.count_publishers("/cam/segmentation/color") == 1


# ----------------------------------------------------------------------------- multi-camera node
@pytest.fixture
def multi(ros_context, weights, activate):
    """``multi({camera: image_transport}, **params)``: an active edgemoe_multi_node under /rig."""
    def start(cameras: dict[str, str], **params) -> Graph:
        overrides = _params(weights, cameras=list(cameras), **params)
        overrides += [Parameter(f"{c}.image_transport", value=t) for c, t in cameras.items()]
        return activate(MultiCameraNode(f"edgemoe_multi_{uuid.uuid4().hex[:8]}", namespace="/rig",
                                        context=ros_context, parameter_overrides=overrides))
    return start


def test_multi_camera_node_one_transport_per_camera(multi):
    g = multi({"front": "compressed", "rear": "raw"})
    assert g.subscribers("/rig/front/image/compressed") == 1
    assert g.subscribers("/rig/front/image") == 0
    assert g.subscribers("/rig/rear/image") == 1
    assert g.subscribers("/rig/rear/image/compressed") == 0
    front = g.collect("/rig/front/segmentation/image", Image)
    rear = g.collect("/rig/rear/segmentation/image", Image)
    front_pub = g.publisher("/rig/front/image/compressed", CompressedImage)
    rear_pub = g.publisher("/rig/rear/image", Image)
    g.wait_matched(front, rear, front_pub, rear_pub)
    pixels = np.random.default_rng(2).integers(0, 256, (H, W, 3), dtype=np.uint8)
    front_pub.publish(make_compressed(H, W, stamp=(10, 1), pixels=pixels))
    rear_pub.publish(make_image(H, W, stamp=(10, 2), pixels=pixels))
    got_front = front.wait_for(lambda m: _stamp_of(m) == (10, 1), TIMEOUT_S)
    got_rear = rear.wait_for(lambda m: _stamp_of(m) == (10, 2), TIMEOUT_S)
    # lossless PNG of the same pixels: the same classes as the raw frame
    np.testing.assert_array_equal(image_array(got_front), image_array(got_rear))
    assert [_stamp_of(m) for m in front.messages] == [(10, 1)]


def test_multi_camera_node_refuses_a_bad_camera_transport(ros_context, weights):
    overrides = _params(weights, cameras=["front"])
    overrides.append(Parameter("front.image_transport", value="h264"))
    with pytest.raises(ParameterValueError, match="front.image_transport"):
        MultiCameraNode(f"edgemoe_multi_{uuid.uuid4().hex[:8]}", context=ros_context,
                        parameter_overrides=overrides)


def test_multi_camera_outputs_have_camera_info_siblings_and_compressed_colour(multi):
    g = multi({"front": "raw"}, output_resolution="input", color_compression="png")
    assert g.client.count_publishers("/rig/front/segmentation/color/compressed") == 1
    _check_info_beside_every_image(g, "/rig/front", "/rig/front/image", (H, W), (11, 1))


def test_rgb_to_compressed_refuses_what_it_cannot_encode():
    from std_msgs.msg import Header

    from edgemoe_ros.ros.conversions import rgb_to_compressed
    with pytest.raises(ValueError, match="codec 'webp'"):
        rgb_to_compressed(np.zeros((4, 4, 3), np.uint8), "webp", Header())
    with pytest.raises(ValueError, match="not an rgb8 image"):
        rgb_to_compressed(np.zeros((4, 4), np.uint8), "png", Header())
    with pytest.raises(ValueError, match="not an rgb8 image"):
        rgb_to_compressed(np.zeros((4, 4, 3), np.float32), "png", Header())
