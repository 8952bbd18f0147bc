# SPDX-License-Identifier: Apache-2.0
"""launch/edgemoe.launch.xml and config/edgemoe.yaml, without the (uninstallable) launch package:
parse the launch file, resolve its args, remaps and params file exactly as ros2 launch would, start
the same executable with the same ``--ros-args``, and check outputs appear on the remapped names."""

import time
from pathlib import Path

import pytest
import yaml
from ros_testing import (
    NODE_SCRIPT,
    PACKAGE,
    TEST_PARAMS,
    NodeProcess,
    RosClient,
    launch_description,
    make_camera_info,
    make_compressed,
    ros_env,
    write_tiny_weights,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool

from edgemoe_ros.ros import params as P

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "edgemoe.launch.xml"
CONFIG = ROOT / "config" / "edgemoe.yaml"


def command_for(desc: dict) -> list[str]:
    """What launch_ros runs for the node: exe --ros-args <ros_args> -r __node -r __ns -r ... --params-file -p."""
    assert desc["pkg"] == PACKAGE
    exe = NODE_SCRIPT.with_name(desc["exec"])
    assert exe.exists(), f"console script {desc['exec']} not installed at {exe}"
    cmd = [str(exe), "--ros-args", *desc["ros_args"], "-r", f"__node:={desc['name']}"]
    if desc["namespace"]:
        cmd += ["-r", f"__ns:={desc['namespace']}"]
    for src, dst in desc["remaps"]:
        cmd += ["-r", f"{src}:={dst}"]
    for f in desc["params_files"]:
        cmd += ["--params-file", f]
    for name, value in desc["params"].items():
        cmd += ["-p", f"{name}:={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}"]
    return cmd


def test_exec_is_the_declared_console_script():
    desc = launch_description(LAUNCH)
    assert f"{desc['exec']} = edgemoe_ros.ros.node:main" in (ROOT / "setup.py").read_text()


def test_default_args_resolve_to_package_config():
    desc = launch_description(LAUNCH)
    assert desc["params_files"] == [str(ROOT / "config" / "edgemoe.yaml")]
    assert Path(desc["params_files"][0]).is_file()
    assert desc["params"] == {"autostart": True}
    assert ("image", "image") in desc["remaps"] and ("camera_info", "camera_info") in desc["remaps"]


def test_config_lists_every_parameter_valid_and_commented():
    data = yaml.safe_load(CONFIG.read_text())
    [(key, body)] = data.items()
    values = body["ros__parameters"]
    documented = set(P.SPECS) - set(P.REMOVED_PARAMS)
    assert set(values) == documented, set(values) ^ documented
    for name, value in values.items():
        P.validate(name, value)
    lines = CONFIG.read_text().splitlines()
    for name in values:
        i = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        assert lines[i - 1].strip().startswith("#"), f"{name} has no comment above it"


@pytest.mark.ros
def test_launch_runs_node_with_remapped_names(tmp_path):
    weights = write_tiny_weights(tmp_path / "tiny.safetensors")
    params = yaml.safe_load(CONFIG.read_text())
    body = next(iter(params.values()))["ros__parameters"]
    body.update(TEST_PARAMS, weights_path=str(weights), image_transport="compressed")
    params_file = tmp_path / "edgemoe.yaml"
    params_file.write_text(yaml.safe_dump(params))
    ns = "/perception/front"
    desc = launch_description(LAUNCH, {"namespace": ns, "image": "/sensors/cam/image_raw",
                                       "camera_info": "/sensors/cam/camera_info", "params_file": str(params_file)})
    cmd = command_for(desc)
    env = ros_env(tmp_path)
    node = NodeProcess(tmp_path, env, command=cmd)
    client = None
    try:
        client = RosClient(env)
        client.wait_for_state(f"{ns}/edgemoe_node", "active")
        outs = {t: client.collect(f"{ns}/{t}", typ) for t, typ in (
            ("segmentation/image", Image), ("segmentation/color", Image), ("depth/image", Image),
            ("depth/camera_info", CameraInfo))}
        image_pub = client.publisher("/sensors/cam/image_raw/compressed", CompressedImage)
        info_pub = client.publisher("/sensors/cam/camera_info", CameraInfo)
        client.wait_for_subscribers(image_pub)
        client.wait_for_subscribers(info_pub)
        # remapping image alone moved the compressed subscription, and there is only that one
        assert client.node.count_subscribers("/sensors/cam/image_raw") == 0
        for col in outs.values():
            client.wait_for_matched(col)
        info_pub.publish(make_camera_info(96, 160, stamp=(7, 0)))
        time.sleep(0.3)  # let the calibration arrive before the image it is relayed with
        image_pub.publish(make_compressed(96, 160, stamp=(7, 0)))
        for topic, col in outs.items():
            m = col.wait_for(lambda m: m.header.stamp.sec == 7)
            assert (m.width, m.height) == (160, 96), topic
        resp = client.call(SetBool, f"{ns}/edgemoe_node/enable_depth", SetBool.Request(data=True))
        assert resp.success
    finally:
        if client is not None:
            client.close()
        node.stop()
    assert "--params-file" in node.command and f"__ns:={ns}" in node.command
