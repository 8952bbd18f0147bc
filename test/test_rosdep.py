# SPDX-License-Identifier: Apache-2.0
"""Install by rosdep works: every module the node imports at run time is a ``package.xml`` key
that exists in the rosdep database, and nothing is declared that the node does not use.

The node's code is walked statically (every ``import``, also the lazy ones inside functions), from
the packages it runs: ``ros``, ``engine``, ``backends`` (every backend, since the registry imports
them by name), ``model`` and ``postprocess``, following imports inside ``edgemoe_ros``.
"""

from __future__ import annotations

import ast
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "edgemoe_ros"
#: What the node runs: every module under these is walked, then what they import in the package.
NODE_ROOTS = ("ros", "engine.py", "backends", "model", "postprocess.py")

#: Top-level Python module -> the rosdep key that installs it.
MODULE_TO_ROSDEP: dict[str, str] = {
    "numpy": "python3-numpy",
    "cv2": "python3-opencv",
    "rclpy": "rclpy",
    "builtin_interfaces": "builtin_interfaces",
    "sensor_msgs": "sensor_msgs",
    "std_msgs": "std_msgs",
    "std_srvs": "std_srvs",
    "diagnostic_msgs": "diagnostic_msgs",
    "lifecycle_msgs": "lifecycle_msgs",
    "rcl_interfaces": "rcl_interfaces",
}
#: Keys declared for something other than a Python import, and why.
NON_IMPORT_KEYS: dict[str, str] = {
    "ros2launch": "`ros2 launch` of launch/*.launch.xml (brings launch_ros and launch_xml)",
    "lifecycle_msgs": "types of the lifecycle services the node serves through rclpy.lifecycle",
}
#: Third-party modules in the walked code that the node's run time does not need: module ->
#: (the only modules allowed to import it, why). Each has no rosdep key.
NOT_NODE_RUNTIME: dict[str, tuple[frozenset[str], str]] = {
    "safetensors": (frozenset({"edgemoe_ros.model.weights"}),
                    "save_weights only (training and import tools); loading reads the format with "
                    "numpy (model/safetensors_reader.py), which test_safetensors_reader checks "
                    "with the package blocked"),
    "torch": (frozenset({"edgemoe_ros.model.importers"}),
              "the checkpoint-import CLI (requirements-optional.txt); never imported by the node"),
    "pynq": (frozenset({"edgemoe_ros.accel.pynq_driver", "edgemoe_ros.accel.sim_device",
                        "edgemoe_ros.accel.pl_reset"}),
             "backend 'fpga' only, on a PYNQ board image that ships it; imported lazily by "
             "backends/fpga.py"),
}
#: Keys verified to exist in the rosdep database (ros/rosdistro, checked 2026-12-03 at commit
#: 8468e88): python3-* in rosdep/python.yaml, the others released in kilted/distribution.yaml.
#: python3-safetensors is in neither, which is why loading must not need safetensors.
ROSDEP_KEYS = frozenset({
    "python3-numpy", "python3-opencv", "python3-pytest",
    "rclpy", "builtin_interfaces", "sensor_msgs", "std_msgs", "std_srvs", "diagnostic_msgs",
    "lifecycle_msgs", "rcl_interfaces", "ros2launch",
})
DEPEND_TAGS = ("depend", "exec_depend", "build_depend", "test_depend")


def _module_file(name: str) -> Path | None:
    path = REPO.joinpath(*name.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return path.with_suffix(".py") if path.with_suffix(".py").is_file() else None


def _imports(name: str) -> list[str]:
    """Absolute names of everything ``name`` imports, anywhere in the file."""
    path = _module_file(name)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module
            found.append(target)
            found += [f"{target}.{a.name}" for a in node.names
                      if _module_file(f"{target}.{a.name}")]
    return found


def node_third_party_imports() -> dict[str, set[str]]:
    """Top-level third-party module -> the package modules importing it, over the node's code."""
    stack = [".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
             for root in NODE_ROOTS
             for p in ([REPO / PACKAGE / root] if root.endswith(".py")
                       else sorted((REPO / PACKAGE / root).rglob("*.py")))]
    seen: set[str] = set()
    third_party: dict[str, set[str]] = {}
    while stack:
        name = stack.pop()
        if name in seen or _module_file(name) is None:
            continue
        seen.add(name)
        for target in _imports(name):
            top = target.split(".")[0]
            if top == PACKAGE:
                parts = target.split(".")
                stack += [".".join(parts[:i]) for i in range(2, len(parts) + 1)]
            elif top != "__future__" and top not in sys.stdlib_module_names:
                third_party.setdefault(top, set()).add(name)
    return third_party


def declared(*tags: str) -> set[str]:
    root = ET.parse(REPO / "package.xml").getroot()
    return {(e.text or "").strip() for tag in tags for e in root.findall(tag)}


def test_walk_finds_the_node_imports():
    # Guards the walker itself: it must see a top-level, a relative and a lazy import.
    found = node_third_party_imports()
    assert "edgemoe_ros.ros.node" in found["rclpy"]
    assert "edgemoe_ros.ros.cdr_image" in found["builtin_interfaces"]
    assert "edgemoe_ros.accel.pynq_driver" in found["pynq"]  # via backends/fpga.py, lazily


def test_every_runtime_import_maps_to_a_declared_rosdep_key():
    runtime = declared("depend", "exec_depend")
    unknown, undeclared, misplaced = [], [], []
    for module, importers in sorted(node_third_party_imports().items()):
        if module in NOT_NODE_RUNTIME:
            allowed, _why = NOT_NODE_RUNTIME[module]
            misplaced += [f"{module} imported by {m}" for m in sorted(importers - allowed)]
        elif module not in MODULE_TO_ROSDEP:
            unknown.append(f"{module} (imported by {', '.join(sorted(importers))})")
        elif MODULE_TO_ROSDEP[module] not in runtime:
            undeclared.append(f"{module} -> <exec_depend>{MODULE_TO_ROSDEP[module]}</exec_depend>")
    assert not unknown, f"map these imports to a rosdep key in MODULE_TO_ROSDEP: {unknown}"
    assert not undeclared, f"package.xml lacks: {undeclared}"
    assert not misplaced, f"not available to a rosdep install: {misplaced}"


def test_every_declared_key_exists_in_rosdep():
    missing = sorted(declared(*DEPEND_TAGS) - ROSDEP_KEYS)
    assert not missing, f"not verified as rosdep keys: {missing}"


def test_no_declared_run_dependency_goes_unused():
    used = {MODULE_TO_ROSDEP[m] for m in node_third_party_imports() if m in MODULE_TO_ROSDEP}
    stale = sorted(declared("depend", "exec_depend") - used - set(NON_IMPORT_KEYS))
    assert not stale, f"declared in package.xml but never imported by the node: {stale}"
