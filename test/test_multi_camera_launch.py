# SPDX-License-Identifier: Apache-2.0
"""launch/edgemoe_multi.launch.xml and config/edgemoe_6cam.yaml, without the launch package: the
launch file parses, names the declared console script and the 6-camera params file; the config is
valid parameter by parameter; and the command the launch file resolves to starts a node that
serves every camera of the rig."""

import time
from pathlib import Path

import pytest
import yaml
from lifecycle_msgs.srv import GetState
from ros_testing import (
    PACKAGE,
    TEST_PARAMS,
    NodeProcess,
    RosClient,
    image_array,
    launch_command,
    launch_description,
    make_image,
    ros_env,
    write_tiny_weights,
)
from sensor_msgs.msg import Image

from edgemoe_ros.model.config import tiny_config
from edgemoe_ros.ros import params as P
from edgemoe_ros.ros.camera_params import PER_CAMERA, check_camera_names

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "edgemoe_multi.launch.xml"
CONFIG = ROOT / "config" / "edgemoe_6cam.yaml"
#: Parameters the multi-camera node adds to the single node's (camera_params.py).
MULTI_PARAMS = {"cameras", "max_batch"}


def _config() -> dict:
    [(_, body)] = yaml.safe_load(CONFIG.read_text()).items()
    return body["ros__parameters"]


def test_launch_names_the_multi_camera_console_script_and_6cam_config():
    desc = launch_description(LAUNCH)
    assert desc["pkg"] == PACKAGE and desc["exec"] == "edgemoe_multi_node"
    assert (
        "edgemoe_multi_node = edgemoe_ros.ros.executables:edgemoe_multi_node"
        in (ROOT / "setup.py").read_text()
    )
    assert desc["params_files"] == [str(CONFIG)] and CONFIG.is_file()
    assert desc["params"] == {}  # the file decides: autostart, backend, use_sim_time
    assert desc["ros_args"] == ["--log-level", "info"]


def test_explicit_args_override_the_params_file_and_nothing_else(tmp_path):
    user = tmp_path / "rig.yaml"
    params = yaml.safe_load(CONFIG.read_text())
    next(iter(params.values()))["ros__parameters"].update(autostart=False, backend="fixed")
    user.write_text(yaml.safe_dump(params))
    kept = launch_description(LAUNCH, {"params_file": str(user)}).effective_parameters()
    assert (kept["autostart"], kept["backend"]) == (False, "fixed")  # a lifecycle manager's file
    args = {"params_file": str(user), "autostart": "true", "backend": "null",
            "use_sim_time": "true"}
    got = launch_description(LAUNCH, args).effective_parameters()
    assert (got["autostart"], got["backend"], got["use_sim_time"]) == (True, "null", True)
    assert got["cameras"] == kept["cameras"]


def test_6cam_config_is_valid_for_every_parameter_and_camera():
    values = _config()
    cameras = values["cameras"]
    assert len(cameras) == 6 and check_camera_names(cameras) is None
    assert 1 <= values["max_batch"] <= 64
    assert values["input_timeout"] > values["input_rate_window"]  # a stopped camera is WARN first
    for name, value in values.items():
        if name in cameras:
            assert set(value) == set(PER_CAMERA), name
            for suffix, v in value.items():
                P.validate(suffix, v)
        elif name not in MULTI_PARAMS:
            P.validate(name, value)
    assert set(cameras) <= set(values)  # every camera's tasks and resolution are spelled out
    assert P.options_for_backend(values["backend"], values["backend_options"]) is None


def _test_rig_file(tmp_path: Path) -> tuple[Path, dict]:
    """The 6-camera config on a tiny random model with the test QoS: its path and its values."""
    weights = write_tiny_weights(tmp_path / "tiny.safetensors")
    params = yaml.safe_load(CONFIG.read_text())
    body = next(iter(params.values()))["ros__parameters"]
    body.update(TEST_PARAMS, weights_path=str(weights), backend_options="{}")
    params_file = tmp_path / "edgemoe_6cam.yaml"
    params_file.write_text(yaml.safe_dump(params))
    return params_file, body


@pytest.mark.ros
def test_launch_command_serves_all_six_cameras(tmp_path):
    params_file, body = _test_rig_file(tmp_path)
    ns = "/perception"
    desc = launch_description(LAUNCH, {"namespace": ns, "params_file": str(params_file)})
    cmd = launch_command(desc)
    env = ros_env(tmp_path)
    node = NodeProcess(tmp_path, env, command=cmd)
    client = None
    cameras = body["cameras"]
    cfg = tiny_config()
    try:
        client = RosClient(env)
        client.wait_for_state(f"{ns}/edgemoe_multi_node", "active")
        outs = {c: client.collect(f"{ns}/{c}/segmentation/image", Image) for c in cameras}
        pubs = {c: client.publisher(f"{ns}/{c}/image", Image) for c in cameras}
        for c in cameras:
            client.wait_for_subscribers(pubs[c])
            client.wait_for_matched(outs[c])
        for i, c in enumerate(cameras):
            pubs[c].publish(make_image(96, 160, stamp=(10 + i, 0), frame_id=c))
        for i, c in enumerate(cameras):
            m = outs[c].wait_for(lambda m, i=i: m.header.stamp.sec == 10 + i)
            want = (96, 160) if body[c]["output_resolution"] == "input" else (cfg.img_h, cfg.img_w)
            assert m.header.frame_id == c and image_array(m).shape == want, (
                c
            )  # per-camera resolution
    finally:
        if client is not None:
            client.close()
        node.stop()


@pytest.mark.ros
def test_autostart_false_waits_for_a_lifecycle_manager_with_the_args_values(tmp_path):
    params_file, _ = _test_rig_file(tmp_path)
    desc = launch_description(LAUNCH, {"params_file": str(params_file), "autostart": "false",
                                       "use_sim_time": "true", "backend": "null"})
    env = ros_env(tmp_path)
    node = NodeProcess(tmp_path, env, command=launch_command(desc))
    client = None
    name = "/edgemoe_multi_node"
    try:
        client = RosClient(env)
        client.wait_for_service(GetState, f"{name}/get_state")
        time.sleep(3.0)  # an autostarting node would have left "unconfigured" by now
        assert client.get_state(name) == "unconfigured"
        got = client.get_parameters(name, ["autostart", "use_sim_time", "backend"])
        assert got == {"autostart": False, "use_sim_time": True, "backend": "null"}
    finally:
        if client is not None:
            client.close()
        node.stop()
