# SPDX-License-Identifier: Apache-2.0
"""The package as ROS 2 tooling sees it: package.xml, console scripts, and a real ``colcon build``.

colcon from PyPI builds an ament_python package without a ROS install (SPEC §4), so the build a
user runs in a workspace is exercised here, on a copy of the package in a temporary workspace.
"""

from __future__ import annotations

import ast
import importlib
import os
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "edgemoe_ros"
#: Run dependencies package.xml must declare (test_rosdep.py derives them from the imports; cv_bridge
#: is not among them: conversions.py converts with OpenCV directly, see its docstring).
REQUIRED_DEPENDS = {"rclpy", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs", "lifecycle_msgs",
                    "builtin_interfaces", "python3-numpy", "python3-opencv", "ros2launch"}
#: What a colcon workspace needs from the repository to build the package.
PACKAGE_FILES = ("package.xml", "setup.py", "setup.cfg", "resource", "launch", "config", PACKAGE)
#: Share files the launch instructions (SPEC §5) rely on.
SHARE_FILES = ("package.xml", "launch/edgemoe.launch.xml", "config/edgemoe.yaml")


def console_scripts() -> dict[str, str]:
    """``name -> module:function`` from setup.py, read without running setup()."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "entry_points":
            entry_points = ast.literal_eval(node.value)
            return dict(s.replace(" ", "").split("=", 1) for s in entry_points["console_scripts"])
    raise AssertionError("setup.py declares no entry_points")


def test_package_xml_format3_ament_python_with_dependencies():
    root = ET.parse(REPO / "package.xml").getroot()
    assert root.tag == "package" and root.get("format") == "3"
    assert root.findtext("name") == PACKAGE
    assert root.findtext("export/build_type") == "ament_python"
    depends = {e.text for tag in ("depend", "exec_depend") for e in root.findall(tag)}
    assert REQUIRED_DEPENDS <= depends, f"missing: {sorted(REQUIRED_DEPENDS - depends)}"
    for tag in ("version", "description", "license"):
        assert (root.findtext(tag) or "").strip(), f"package.xml has no <{tag}>"
    maintainer = root.find("maintainer")
    assert maintainer is not None and maintainer.get("email")
    # version agrees with setup.py: colcon and pip must install the same release
    assert f'version="{root.findtext("version")}"' in (REPO / "setup.py").read_text()


def test_resource_marker_and_setup_cfg_script_dir():
    assert (REPO / "resource" / PACKAGE).is_file()
    cfg = (REPO / "setup.cfg").read_text()
    # ros2 run / launch look for executables in lib/<package>, not bin/
    assert f"script_dir=$base/lib/{PACKAGE}" in cfg and f"install_scripts=$base/lib/{PACKAGE}" in cfg


@pytest.mark.parametrize("name,target", sorted(console_scripts().items()))
def test_console_script_resolves_to_callable(name, target):
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    assert callable(getattr(module, attr, None)), f"{name}: {target} is not a callable"


def test_colcon_build_installs_package_launch_config_and_node(tmp_path):
    colcon = Path(sys.executable).parent / "colcon"
    if not colcon.exists():
        pytest.fail(f"colcon not found at {colcon} (colcon-common-extensions belongs in the venv)")
    src = tmp_path / "src" / PACKAGE
    src.mkdir(parents=True)
    for item in PACKAGE_FILES:
        path = REPO / item
        if path.is_dir():
            shutil.copytree(path, src / item, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(path, src / item)
    env = dict(os.environ, COLCON_HOME=str(tmp_path / "colcon_home"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run(
        [str(colcon), "build", "--packages-select", PACKAGE, "--base-paths", "src", "--build-base", "build",
         "--install-base", "install", "--event-handlers", "console_cohesion+"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    prefix = tmp_path / "install" / PACKAGE
    share = prefix / "share" / PACKAGE
    for rel in SHARE_FILES:
        assert (share / rel).is_file(), f"{rel} not installed under share/{PACKAGE}"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()
    node = prefix / "lib" / PACKAGE / "edgemoe_node"
    assert node.is_file() and os.access(node, os.X_OK)
    for script in console_scripts():
        assert (prefix / "lib" / PACKAGE / script).is_file(), script
    # The installed tree (not the source checkout) is importable and is what a sourced workspace uses.
    site = next((prefix / "lib").glob("python3*/site-packages"))
    probe = subprocess.run(
        [sys.executable, "-c", f"import {PACKAGE}.cli.infer, {PACKAGE}.model.weights as w; print(w.__file__)"],
        cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(site)), capture_output=True, text=True, timeout=60)
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).is_relative_to(site)
