# SPDX-License-Identifier: Apache-2.0
"""scripts/add_spdx.py: the SPDX line lands where each language allows a comment first, a second
run changes nothing, and ``--check`` reports what lacks it."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "add_spdx.py"
_spec = importlib.util.spec_from_file_location("add_spdx", SCRIPT)
add_spdx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(add_spdx)

LINE = "SPDX-License-Identifier: Apache-2.0"


@pytest.mark.parametrize("suffix,before,after", [
    (".py", '"""Doc."""\nx = 1\n', f'# {LINE}\n"""Doc."""\nx = 1\n'),
    (".py", '#!/usr/bin/env python3\n"""Doc."""\n',
     f'#!/usr/bin/env python3\n# {LINE}\n"""Doc."""\n'),
    (".py", "#!/usr/bin/python\n# -*- coding: utf-8 -*-\nx = 1\n",
     f"#!/usr/bin/python\n# -*- coding: utf-8 -*-\n# {LINE}\nx = 1\n"),
    (".py", "", f"# {LINE}\n"),
    (".cpp", "// Kernels.\n#include <x>\n", f"// {LINE}\n// Kernels.\n#include <x>\n"),
    (".h", "#ifndef A_H_\n#endif", f"// {LINE}\n#ifndef A_H_\n#endif\n"),  # no final newline
    (".tcl", "# Build.\nopen_project p\n", f"# {LINE}\n# Build.\nopen_project p\n"),
    (".xml", "<!-- launch -->\n<launch/>\n", f"<!-- {LINE} -->\n<!-- launch -->\n<launch/>\n"),
    (".xml", '<?xml version="1.0"?>\n<?xml-model href="x"\n  y="z"?>\n<launch/>\n',
     f'<?xml version="1.0"?>\n<?xml-model href="x"\n  y="z"?>\n<!-- {LINE} -->\n<launch/>\n'),
    (".py", "x = 1\r\ny = 2\r\n", f"# {LINE}\r\nx = 1\r\ny = 2\r\n"),
])
def test_line_goes_where_a_comment_may_come_first(suffix, before, after):
    assert add_spdx.with_header(before, suffix) == after
    assert add_spdx.with_header(after, suffix) == after  # idempotent


def test_a_mention_in_text_is_not_a_header():
    src = '"""Adds ``SPDX-License-Identifier: Apache-2.0`` lines."""\n'
    assert not add_spdx.has_header(src)
    assert add_spdx.has_header(add_spdx.with_header(src, ".py"))


def test_python_docstring_survives():
    src = '#!/usr/bin/env python3\n"""Module doc."""\n\nimport os\n'
    tree = ast.parse(add_spdx.with_header(src, ".py"))
    assert ast.get_docstring(tree) == "Module doc."


def test_which_files_are_stamped():
    wants = add_spdx.wants_header
    assert wants(Path("edgemoe_ros/ros/node.py")) and wants(Path("hls_accel/src/x.cpp"))
    assert wants(Path("hls_accel/vitis/run_hls.tcl")) and wants(Path("launch/a.launch.xml"))
    assert not wants(Path("package.xml"))  # <license> says it there
    assert not wants(Path("config/edgemoe.yaml")) and not wants(Path("README.md"))


def _repo(tmp_path: Path) -> Path:
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text("ignored/\n")
    (tmp_path / "a.py").write_text('"""A."""\n')
    (tmp_path / "launch").mkdir()
    (tmp_path / "launch" / "n.launch.xml").write_text("<launch/>\n")
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "venv.py").write_text("x = 1\n")
    (tmp_path / "done.h").write_text(f"// {LINE}\n")
    return tmp_path


def _run(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=60)


def test_cli_check_then_stamp_then_clean(tmp_path):
    root = _repo(tmp_path)
    check = _run(root, "--check")
    assert check.returncode == 1
    assert "a.py" in check.stdout and "n.launch.xml" in check.stdout
    assert "venv.py" not in check.stdout and "done.h" not in check.stdout
    assert (root / "a.py").read_text() == '"""A."""\n'  # --check writes nothing
    assert _run(root).returncode == 0
    assert (root / "a.py").read_text() == f'# {LINE}\n"""A."""\n'
    assert (root / "ignored" / "venv.py").read_text() == "x = 1\n"  # git-ignored: untouched
    snapshot = {p: p.read_bytes() for p in root.rglob("*")
                if p.is_file() and ".git" not in p.parts}
    again = _run(root)
    assert again.returncode == 0 and again.stdout == ""
    assert snapshot == {p: p.read_bytes() for p in snapshot}
    assert _run(root, "--check").returncode == 0
