# SPDX-License-Identifier: Apache-2.0
"""The launch-file interpreter the launch tests rely on (test/launch_xml.py) reads what ros2 launch
reads: document order, group scoping, conditions, launch_ros's parameter typing and order, and
the quirks our launch files must avoid (an empty quoted comparison, an unquoted ``null``)."""

from pathlib import Path

import pytest
from launch_xml import LaunchError, launch_description, launch_nodes, substitute

NODE = '<node pkg="edgemoe_ros" exec="edgemoe_node" name="{name}"/>'


def _launch(tmp_path: Path, body: str, name: str = "t") -> Path:
    path = tmp_path / f"{name}.launch.xml"
    path.write_text(f"<launch>\n{body}\n</launch>\n")
    return path


def test_global_parameters_are_scoped_by_group_and_precede_node_params(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("/**:\n  ros__parameters:\n    a: 1\n")
    path = _launch(tmp_path, f"""
      <arg name="x" default="7" description="x"/>
      <group>
        <set_parameter name="a" value="$(var x)"/>
        <set_parameters_from_file filename="{params}"/>
        <node pkg="edgemoe_ros" exec="edgemoe_node" name="inner">
          <param name="b" value="'null'"/>
        </node>
      </group>
      {NODE.format(name="outer")}""")
    inner, outer = launch_nodes(path, {"x": "3"})
    assert inner.parameters == [("param", "a", 3, "global"), ("file", str(params)),
                                ("param", "b", "null", "node")]
    assert inner.effective_parameters() == {"a": 1, "b": "null"}  # the file came later than a
    assert inner.command("exe")[-6:] == ["-p", "a:=3", "--params-file", str(params),
                                         "-p", "b:='null'"]
    assert outer.parameters == []  # nothing set inside the group leaks out of it


@pytest.mark.parametrize("text,want", [
    ("$(not-equals $(var v) from_file)", "false"),
    ("$(not-equals '$(var v)' 'from_file')", "false"),
    ("$(equals $(var t) 1)", "true"),  # booleans compare by value
    ("$(equals 2.0 2)", "true"),  # numbers too
    # launch turns an empty quoted argument into the text "[]": never equal to an empty value
    ("$(equals '$(var e)' '')", "false"),
    ("a-$(var v)/b", "a-from_file/b"),
])
def test_substitutions(text, want):
    assert substitute(text, {"v": "from_file", "t": "true", "e": ""}) == want


@pytest.mark.parametrize("body,match", [
    ('<set_parameter name="backend" value="null"/>', "launch_ros refuses it"),
    ('<set_parameter name="a" value="1" if="yes"/>', "not true/false/1/0"),
    ('<set_parameters_from_file filename="/no/such.yaml"/>', "does not exist"),
    ('<include file="x.launch.xml"/>', r"unsupported launch action <include>"),
    ('<arg name="a" default="1"/>', "has no description"),
    ('<let name="a" value="$(eval 1)"/>', r"unsupported substitution \$\(eval"),
])
def test_what_ros2_launch_refuses_is_refused(tmp_path, body, match):
    with pytest.raises(LaunchError, match=match):
        launch_nodes(_launch(tmp_path, body + NODE.format(name="n")))


def test_undeclared_argument_and_missing_node_params_file(tmp_path):
    path = _launch(tmp_path, """
      <node pkg="edgemoe_ros" exec="edgemoe_node" name="n"><param from="/no/such.yaml"/></node>""")
    with pytest.raises(LaunchError, match="undeclared args"):
        launch_nodes(_launch(tmp_path, NODE.format(name="n"), "plain"), {"typo": "1"})
    with pytest.warns(UserWarning, match="not a file"):  # launch_ros skips it with a warning
        assert launch_description(path).parameters == []
