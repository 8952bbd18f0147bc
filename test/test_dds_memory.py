# SPDX-License-Identifier: Apache-2.0
"""edgemoe_ros/dds_memory.py: the executables' DDS endpoints give large samples' memory back.

The two-process test is the finding itself: with rmw_fastrtps's default memory policy a
subscription that once held 24 messages of 4 MB keeps ~96 MB after taking them; with the profile
``configure_dds_memory`` selects, it keeps none. The untuned run is the control that shows the
check can fail."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from edgemoe_ros import dds_memory
from edgemoe_ros.dds_memory import configure_dds_memory

HERE = Path(__file__).resolve().parent
NS = {"f": "http://www.eprosima.com"}


def test_applied_on_a_plain_environment(tmp_path):
    env: dict[str, str] = {}
    assert configure_dds_memory(env, cwd=tmp_path) == dds_memory.APPLIED
    assert env == {
        "FASTDDS_DEFAULT_PROFILES_FILE": str(dds_memory.PROFILE_PATH),
        "RMW_FASTRTPS_USE_QOS_FROM_XML": "1",
    }
    env = {"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"}
    assert configure_dds_memory(env, cwd=tmp_path) == dds_memory.APPLIED


@pytest.mark.parametrize("env", [
    {"FASTDDS_DEFAULT_PROFILES_FILE": "/robot/dds.xml"},
    {"FASTRTPS_DEFAULT_PROFILES_FILE": "/robot/dds.xml"},
    {"RMW_FASTRTPS_USE_QOS_FROM_XML": "0"},
])
def test_the_users_fast_dds_configuration_is_left_alone(env, tmp_path):
    before = dict(env)
    assert configure_dds_memory(env, cwd=tmp_path) == dds_memory.USER_PROFILE
    assert env == before


def test_a_profile_file_in_the_working_directory_is_the_users(tmp_path):
    (tmp_path / "DEFAULT_FASTDDS_PROFILES.xml").write_text("<dds/>")
    env: dict[str, str] = {}
    assert configure_dds_memory(env, cwd=tmp_path) == dds_memory.USER_PROFILE
    assert env == {}


@pytest.mark.parametrize("env, word", [
    ({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}, dds_memory.OTHER_RMW),
    ({"EDGEMOE_DDS_TUNING": "0"}, dds_memory.OFF),
])
def test_other_rmw_or_switched_off_changes_nothing(env, word, tmp_path):
    before = dict(env)
    assert configure_dds_memory(env, cwd=tmp_path) == word
    assert env == before


def test_the_profile_changes_only_the_memory_policy():
    root = ET.parse(dds_memory.PROFILE_PATH).getroot()
    profiles = root.find("f:profiles", NS)
    assert [child.tag.split("}")[1] for child in profiles] == ["publisher", "subscriber"]
    for child in profiles:
        assert child.get("is_default_profile") == "true"
        assert child.find("f:historyMemoryPolicy", NS).text == "DYNAMIC"
    kind = profiles.find("f:publisher/f:qos/f:publishMode/f:kind", NS)
    assert kind.text == "ASYNCHRONOUS"  # what rmw_fastrtps sets when it chooses


def _probe(tuned: bool, tmp_path: Path, **extra_env: str) -> dict[str, float]:
    from ros_testing import ros_env

    env = ros_env(tmp_path)
    for var in (*dds_memory.PROFILE_VARS, dds_memory.USE_QOS_FROM_XML, dds_memory.ENV_SWITCH):
        env.pop(var, None)
    env.update(extra_env)
    out = tmp_path / f"probe_{int(tuned)}.json"
    script = str(HERE / "dds_pool_probe.py")
    sub = subprocess.Popen([sys.executable, script, "sub", str(int(tuned)), str(out)], env=env,
                           cwd=tmp_path)
    pub = subprocess.Popen([sys.executable, script, "pub"], env=env, cwd=tmp_path)
    try:
        assert sub.wait(timeout=60) == 0 and pub.wait(timeout=60) == 0
    finally:
        for proc in (sub, pub):
            proc.kill()
    return json.loads(out.read_text())


@pytest.mark.ros
def test_a_subscription_gives_back_the_messages_it_held(tmp_path):
    from dds_pool_probe import MESSAGE_BYTES, MESSAGES

    held_mb = MESSAGES * MESSAGE_BYTES / 2**20
    default = _probe(False, tmp_path)
    tuned = _probe(True, tmp_path)
    for run in (default, tuned):
        assert run["taken"] == MESSAGES and run["held_mb"] - run["start_mb"] > 0.8 * held_mb, run
    # rmw_fastrtps's default keeps the payloads in the reader's pool; the profile frees them
    assert default["after_mb"] - default["start_mb"] > 0.8 * held_mb, default
    assert tuned["after_mb"] - tuned["start_mb"] < 0.1 * held_mb, tuned


@pytest.mark.ros
def test_the_shipped_large_frames_profile_gives_memory_back_too(tmp_path):
    """config/fastdds_large_frames.xml, set for every process with the variable its comment
    names: the subscriber (not tuned itself: it is the user's profile) frees what it held."""
    from dds_pool_probe import MESSAGE_BYTES, MESSAGES

    profile = HERE.parent / "config" / "fastdds_large_frames.xml"
    run = _probe(False, tmp_path, FASTDDS_DEFAULT_PROFILES_FILE=str(profile),
                 RMW_FASTRTPS_USE_QOS_FROM_XML="1")
    held_mb = MESSAGES * MESSAGE_BYTES / 2**20
    assert run["taken"] == MESSAGES and run["held_mb"] - run["start_mb"] > 0.8 * held_mb, run
    assert run["after_mb"] - run["start_mb"] < 0.1 * held_mb, run
