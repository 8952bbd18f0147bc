# SPDX-License-Identifier: Apache-2.0
"""launch/edgemoe.launch.xml and config/edgemoe.yaml, without the (uninstallable) launch package:
parse the launch file, resolve its args, remaps and params file exactly as ros2 launch would, start
the same executable with the same ``--ros-args``, and check outputs appear on the remapped
names."""

import time
from pathlib import Path

import pytest
import yaml
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import GetState
from ros_testing import (
    TEST_PARAMS,
    NodeProcess,
    RosClient,
    launch_command,
    launch_description,
    make_camera_info,
    make_compressed,
    ros_env,
    wait_diag,
    write_tiny_weights,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_srvs.srv import SetBool

from edgemoe_ros.ros import params as P

ROOT = Path(__file__).resolve().parents[1]
LAUNCH = ROOT / "launch" / "edgemoe.launch.xml"
CONFIG = ROOT / "config" / "edgemoe.yaml"


def test_exec_is_the_declared_console_script():
    desc = launch_description(LAUNCH)
    assert (
        f"{desc['exec']} = edgemoe_ros.ros.executables:edgemoe_node"
        in (ROOT / "setup.py").read_text()
    )


def test_default_args_resolve_to_package_config():
    desc = launch_description(LAUNCH)
    assert desc["params_files"] == [str(ROOT / "config" / "edgemoe.yaml")]
    assert Path(desc["params_files"][0]).is_file()
    # Nothing on top of the file: its autostart/backend/use_sim_time are what the node gets.
    assert desc["params"] == {}
    assert desc.effective_parameters()["autostart"] is True
    assert (
        ("image", "image") in desc["remaps"]
        and ("camera_info", "camera_info") in desc["remaps"]
    )


def _user_file(tmp_path: Path, **values) -> Path:
    """config/edgemoe.yaml with some values changed, as a user copies and edits it."""
    params = yaml.safe_load(CONFIG.read_text())
    next(iter(params.values()))["ros__parameters"].update(values)
    path = tmp_path / "user.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def test_params_file_is_not_overridden_by_launch_defaults(tmp_path):
    """A lifecycle manager's set-up: autostart false in the user's file stays false."""
    user = _user_file(tmp_path, autostart=False, backend="reference", use_sim_time=True)
    desc = launch_description(LAUNCH, {"params_file": str(user)})
    got = desc.effective_parameters()
    assert (got["autostart"], got["backend"], got["use_sim_time"]) == (False, "reference", True)


@pytest.mark.parametrize("args,want", [
    ({"autostart": "false"}, {"autostart": False}),
    ({"autostart": "true"}, {"autostart": True}),
    ({"backend": "null"}, {"backend": "null"}),
    ({"backend": "fixed", "use_sim_time": "true"}, {"backend": "fixed", "use_sim_time": True}),
])
def test_explicit_args_override_the_params_file(tmp_path, args, want):
    user = _user_file(tmp_path, autostart=not want.get("autostart", True), backend="reference",
                      use_sim_time=False)
    desc = launch_description(LAUNCH, {"params_file": str(user), **args})
    got = desc.effective_parameters()
    assert {k: got[k] for k in want} == want
    untouched = {"autostart", "backend", "use_sim_time"} - set(want)
    file_values = yaml.safe_load(user.read_text())["/**"]["ros__parameters"]
    assert {k: got[k] for k in untouched} == {k: file_values[k] for k in untouched}
    # On the command line rcl reads, the overrides come after the file (a later entry wins).
    cmd = desc.command("edgemoe_node")
    file_at = cmd.index(str(user.absolute()))
    for name in want:
        assert cmd.index(next(a for a in cmd if a.startswith(f"{name}:="))) > file_at


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
    desc = launch_description(
        LAUNCH,
        {
            "namespace": ns,
            "image": "/sensors/cam/image_raw",
            "camera_info": "/sensors/cam/camera_info",
            "params_file": str(params_file),
        },
    )
    cmd = launch_command(desc)
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


def _start(
    tmp_path: Path, args: dict[str, str], **file_values
) -> tuple[NodeProcess, RosClient, str]:
    """The node as the launch file starts it, with a test copy of the package config."""
    weights = write_tiny_weights(tmp_path / "tiny.safetensors")
    user = _user_file(tmp_path, **TEST_PARAMS, weights_path=str(weights), **file_values)
    desc = launch_description(LAUNCH, {"params_file": str(user), **args})
    env = ros_env(tmp_path)
    node = NodeProcess(tmp_path, env, command=launch_command(desc))
    try:
        client = RosClient(env)
    except BaseException:
        node.stop()
        raise
    return node, client, "/edgemoe_node"


def _stays_unconfigured(client: RosClient, name: str) -> None:
    client.wait_for_service(GetState, f"{name}/get_state")
    time.sleep(UNCONFIGURED_WAIT_S)  # autostart would have configured it by now
    assert client.get_state(name) == "unconfigured"


#: How long a node that autostarts would take to leave "unconfigured" at most once its services
#: are up (its autostart timer fires at the first spin; the model loads in well under this).
UNCONFIGURED_WAIT_S = 3.0


@pytest.mark.ros
def test_lifecycle_manager_owns_node_whose_file_says_autostart_false(tmp_path):
    """autostart: false in the file, use_sim_time and backend from the command line: the node
    waits unconfigured with the args' values, and a lifecycle manager brings it up on them."""
    node, client, name = _start(tmp_path, {"use_sim_time": "true", "backend": "null"},
                                autostart=False, backend="cpu")
    try:
        _stays_unconfigured(client, name)
        got = client.get_parameters(name, ["autostart", "use_sim_time", "backend"])
        assert got == {"autostart": False, "use_sim_time": True, "backend": "null"}
        assert client.change_state(name, Transition.TRANSITION_CONFIGURE)
        assert client.change_state(name, Transition.TRANSITION_ACTIVATE)
        diag = client.diagnostics()
        values = wait_diag(diag, lambda v: v.get("backend") is not None)
        assert values["backend"] == "null", values
        # Stamped in the node's ROS time: on sim time with no /clock yet, that is zero.
        assert diag.wait_for(lambda m: bool(m.status)).header.stamp.sec == 0
    finally:
        client.close()
        node.stop()


@pytest.mark.ros
def test_autostart_arg_false_leaves_node_unconfigured(tmp_path):
    node, client, name = _start(tmp_path, {"autostart": "false"}, autostart=True)
    try:
        _stays_unconfigured(client, name)
    finally:
        client.close()
        node.stop()
