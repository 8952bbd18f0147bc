# SPDX-License-Identifier: Apache-2.0
"""Our XML launch files, interpreted the way ``ros2 launch`` runs them, without the launch package.

The ``launch``/``launch_ros`` packages cannot be installed here (and the PyPI package named
``launch`` is something else), so the launch tests interpret the XML themselves. This module
follows launch and launch_ros (Kilted) for the subset our launch files use, and fails loudly on
anything else, so a launch file can never use a feature the tests would silently misread:

* actions in document order: ``<arg>`` (DeclareLaunchArgument: a value given on the command line
  wins over ``default``), ``<let>``, ``<group>`` (scoped by default: launch configurations and
  global parameters set inside do not leak out), ``<set_parameter>``,
  ``<set_parameters_from_file>`` and ``<node>``; ``if``/``unless`` on any of them, whose
  expression must expand to true/1/false/0 (launch's ``evaluate_condition_expression``);
* substitutions ``$(var NAME)``, ``$(find-pkg-share PKG)``, ``$(equals A B)`` and
  ``$(not-equals A B)``, with arguments unquoted or in single/double quotes, nested as launch's
  frontend grammar allows;
* parameter values typed as launch_ros types them (``evaluate_parameter_dict``): YAML of the
  expanded text, an empty text being the empty string; YAML null (e.g. an unquoted ``null``, the
  name of our null backend) is refused, as launch_ros refuses it, so such values are quoted;
* the command line launch_ros builds (``launch_ros/actions/node.py``): ``exe --ros-args
  <ros_args> --ros-args -r __node:=NAME [-r __ns:=NS]``, then the *global* parameters in the
  order they were set (``-p name:=value`` for ``set_parameter``, the value written by Python's
  ``str``; ``--params-file`` for ``set_parameters_from_file``), then the node's own ``<param>``
  entries in document order (a ``from`` file that does not exist is skipped, with launch_ros's
  warning), then remaps. rcl applies ``--params-file`` and ``-p`` in command-line order, so a
  later entry wins.
"""

from __future__ import annotations

import shlex
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

#: The package our launch files live in; in the source tree its share directory is the repo root.
PACKAGE = "edgemoe_ros"
REPO_ROOT = Path(__file__).resolve().parents[1]


class LaunchError(AssertionError):
    """The launch file does something ros2 launch would refuse, or this interpreter cannot read."""


def find_pkg_share(pkg: str) -> Path:
    """The installed share dir's equivalent in the source tree (setup.py installs launch/ and
    config/ there)."""
    if pkg != PACKAGE:
        raise LaunchError(f"launch file refers to unknown package {pkg}")
    return REPO_ROOT


# ----------------------------------------------------------------------------- substitutions
@dataclass
class _Subst:
    kind: str
    args: list[list[Any]]  # each argument: a list of str / _Subst fragments


class _Parser:
    """Recursive descent over launch's frontend grammar (share/launch/frontend/grammar.lark)."""

    def __init__(self, text: str) -> None:
        self.text, self.i = text, 0

    def peek(self, s: str) -> bool:
        return self.text.startswith(s, self.i)

    def fail(self, why: str) -> LaunchError:
        return LaunchError(f"{why} at column {self.i} of {self.text!r}")

    def template(self) -> list[Any]:
        """Top level: substitutions and any other text."""
        out: list[Any] = []
        while self.i < len(self.text):
            if self.peek("$("):
                out.append(self.substitution())
            else:
                j = self.text.find("$(", self.i)
                j = len(self.text) if j < 0 else j
                out.append(self.text[self.i:j])
                self.i = j
        return out

    def substitution(self) -> _Subst:
        self.i += 2
        start = self.i
        while self.i < len(self.text) and (self.text[self.i].isalnum()
                                           or self.text[self.i] in "_-"):
            self.i += 1
        kind = self.text[start:self.i]
        if not kind:
            raise self.fail("substitution without a name")
        args: list[list[Any]] = []
        while self.peek(" "):
            self.i += 1
            args.append(self.value())
        if not self.peek(")"):
            raise self.fail("expected ')'")
        self.i += 1
        return _Subst(kind, args)

    def value(self) -> list[Any]:
        """One argument: a quoted template, or unquoted parts up to a space or ')'."""
        if self.peek("'") or self.peek('"'):
            return self.quoted(self.text[self.i])
        parts: list[Any] = []
        while self.i < len(self.text) and not (self.peek(" ") or self.peek(")")):
            c = self.text[self.i]
            if self.peek("$("):
                parts.append(self.substitution())
            elif c in "'\"\\(":
                raise self.fail(f"unsupported character {c!r} in an unquoted argument")
            else:
                parts.append(c)
                self.i += 1
        if not parts:
            raise self.fail("empty unquoted argument")
        return parts

    def quoted(self, quote: str) -> list[Any]:
        self.i += 1
        parts: list[Any] = []
        while not self.peek(quote):
            if self.i >= len(self.text):
                raise self.fail(f"unterminated {quote} string")
            if self.peek("$("):
                parts.append(self.substitution())
            elif self.peek("\\"):
                raise self.fail("escapes in quoted arguments are not supported here")
            else:
                parts.append(self.text[self.i])
                self.i += 1
        self.i += 1
        return parts


def _is_bool(s: str) -> bool:
    return s.lower() in ("true", "false", "1", "0")


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _equals(left: str, right: str) -> bool:
    """launch's EqualsSubstitution: booleans and numbers compare by value, the rest as text."""
    if _is_bool(left) and _is_bool(right):
        return (left.lower() in ("true", "1")) == (right.lower() in ("true", "1"))
    if _is_float(left) and _is_float(right):
        return abs(float(left) - float(right)) <= 1e-9 * max(abs(float(left)), abs(float(right)))
    return left == right


def _perform(parts: list[Any], config: dict[str, str], source: str) -> str:
    out = []
    for p in parts:
        if isinstance(p, str):
            out.append(p)
            continue
        # launch's EqualsSubstitution takes an argument that is no substitution as text, and an
        # empty quoted one ('') parses to an empty list, whose text is "[]": kept, so that a
        # comparison with '' misbehaves here exactly as under ros2 launch.
        compare = p.kind in ("equals", "not-equals")
        args = ["[]" if compare and not a else _perform(a, config, source) for a in p.args]
        if p.kind == "var":
            if len(args) != 1 or args[0] not in config:
                raise LaunchError(f"$(var {' '.join(args)}) in {source} names no launch "
                                  "configuration")
            out.append(config[args[0]])
        elif p.kind == "find-pkg-share":
            out.append(str(find_pkg_share(*args)))
        elif p.kind in ("equals", "not-equals"):
            if len(args) != 2:
                raise LaunchError(f"$({p.kind}) takes 2 arguments, got {args} in {source}")
            out.append(str(_equals(*args) == (p.kind == "equals")).lower())
        else:
            raise LaunchError(f"unsupported substitution $({p.kind} ...) in {source}")
    return "".join(out)


def substitute(text: str | None, config: dict[str, str], source: str = "launch file") -> str:
    """Expand the substitutions of an attribute value (None: the empty string)."""
    return _perform(_Parser(text or "").template(), config, source)


def parameter_value(text: str) -> Any:
    """How launch_ros types an expanded parameter value: YAML, with '' the empty string; anything
    but a scalar or a list of one type (YAML null, a mapping) is launch_ros's TypeError."""
    value = yaml.safe_load(text if text else "''")
    if isinstance(value, list) and value and len({type(v) for v in value}) == 1:
        return value
    if not isinstance(value, (bool, int, float, str)):
        raise LaunchError(f"parameter value {text!r} is {type(value).__name__}: launch_ros "
                          "refuses it (quote a string such as 'null')")
    return value


# ----------------------------------------------------------------------------- actions
@dataclass
class NodeDescription:
    """One ``<node>`` as ros2 launch would start it."""

    args: dict[str, str]
    pkg: str
    exec: str
    name: str
    namespace: str
    ros_args: list[str]
    #: ("file", path) or ("param", name, value, origin), in the order they reach the command
    #: line; origin "global" (``set_parameter``) or "node" (the node's own ``<param>``).
    parameters: list[tuple[Any, ...]] = field(default_factory=list)
    remaps: list[tuple[str, str]] = field(default_factory=list)

    @property
    def params_files(self) -> list[str]:
        return [p[1] for p in self.parameters if p[0] == "file"]

    @property
    def params(self) -> dict[str, Any]:
        """The name/value parameters, a later one replacing an earlier one of the same name."""
        return {p[1]: p[2] for p in self.parameters if p[0] == "param"}

    def __getitem__(self, key: str) -> Any:  # the dict-style access the older tests use
        return getattr(self, key)

    def effective_parameters(self) -> dict[str, Any]:
        """What the node ends up with: every file and value applied in command-line order
        (files' ``/**`` and node-name sections; what rcl does with ``--params-file``/``-p``)."""
        out: dict[str, Any] = {}
        full = f"{self.namespace.rstrip('/')}/{self.name}" if self.namespace else f"/{self.name}"
        for p in self.parameters:
            if p[0] == "param":
                out[p[1]] = p[2]
                continue
            for key, body in (yaml.safe_load(Path(p[1]).read_text()) or {}).items():
                if key in ("/**", self.name, full, full.lstrip("/")):
                    out.update(body.get("ros__parameters", {}))
        return out

    def command(self, exe: str | Path) -> list[str]:
        """The command line launch_ros builds for this node, with ``exe`` as the executable."""
        cmd = [str(exe)]
        if self.ros_args:
            cmd += ["--ros-args", *self.ros_args]
        cmd += ["--ros-args", "-r", f"__node:={self.name}"]
        if self.namespace:
            cmd += ["-r", f"__ns:={self.namespace}"]
        for p in self.parameters:
            if p[0] == "file":
                cmd += ["--params-file", p[1]]
            elif p[3] == "global":
                cmd += ["-p", f"{p[1]}:={p[2]}"]  # launch_ros: f'{name}:={value}'
            else:
                cmd += ["-p", f"{p[1]}:={_cli_value(p[2])}"]
        for src, dst in self.remaps:
            cmd += ["-r", f"{src}:={dst}"]
        return cmd


def _cli_value(value: Any) -> str:
    """A value as YAML on one line (what a params file written by launch_ros would hold)."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


class _Scope:
    def __init__(self, config: dict[str, str], global_params: list[tuple[Any, ...]]) -> None:
        self.config, self.global_params = config, global_params

    def child(self) -> _Scope:
        return _Scope(dict(self.config), list(self.global_params))


class _Interpreter:
    ACTIONS = ("arg", "let", "group", "set_parameter", "set_parameters_from_file", "node")

    def __init__(self, launch: Path, overrides: dict[str, str]) -> None:
        self.launch, self.overrides = launch, dict(overrides)
        self.declared: dict[str, str] = {}
        self.nodes: list[NodeDescription] = []

    def sub(self, text: str | None, scope: _Scope) -> str:
        return substitute(text, scope.config, self.launch.name)

    def condition(self, el: ET.Element, scope: _Scope) -> bool:
        if el.get("if") is not None and el.get("unless") is not None:
            raise LaunchError(f"<{el.tag}> has both if and unless")
        for attr, want in (("if", True), ("unless", False)):
            if el.get(attr) is not None:
                value = self.sub(el.get(attr), scope).strip().lower()
                if value not in ("true", "1", "false", "0"):
                    raise LaunchError(f"<{el.tag} {attr}=...> expands to {value!r}, not "
                                      "true/false/1/0")
                return (value in ("true", "1")) == want
        return True

    def run(self, parent: ET.Element, scope: _Scope) -> None:
        for el in parent:
            if el.tag not in self.ACTIONS:
                raise LaunchError(f"unsupported launch action <{el.tag}> in {self.launch.name}")
            if not self.condition(el, scope):
                continue
            getattr(self, f"do_{el.tag}")(el, scope)

    def do_arg(self, el: ET.Element, scope: _Scope) -> None:
        name = el.get("name")
        if not el.get("description"):
            raise LaunchError(f"arg {name} has no description")
        if name in self.overrides:
            value = self.overrides[name]
        elif el.get("default") is not None:
            value = self.sub(el.get("default"), scope)
        else:
            raise LaunchError(f"arg {name} has no default and was not given")
        self.declared[name] = value
        scope.config[name] = value

    def do_let(self, el: ET.Element, scope: _Scope) -> None:
        scope.config[el.get("name")] = self.sub(el.get("value"), scope)

    def do_group(self, el: ET.Element, scope: _Scope) -> None:
        scoped = el.get("scoped", "true").lower() in ("true", "1")
        self.run(el, scope.child() if scoped else scope)

    def do_set_parameter(self, el: ET.Element, scope: _Scope) -> None:
        value = parameter_value(self.sub(el.get("value"), scope))
        if isinstance(value, list):
            raise LaunchError("a list in <set_parameter> reaches rcl as Python's tuple text")
        scope.global_params.append(("param", self.sub(el.get("name"), scope), value, "global"))

    def do_set_parameters_from_file(self, el: ET.Element, scope: _Scope) -> None:
        path = self.sub(el.get("filename"), scope)
        if not Path(path).is_file():  # launch_ros asserts os.path.isfile on global params files
            raise LaunchError(f"parameters file {path} does not exist")
        scope.global_params.append(("file", str(Path(path).absolute())))

    def do_node(self, el: ET.Element, scope: _Scope) -> None:
        params = list(scope.global_params)
        for p in el:
            if p.tag == "param":
                if p.get("from") is not None:
                    path = self.sub(p.get("from"), scope)
                    if Path(path).is_file():
                        params.append(("file", path))
                    else:
                        warnings.warn(f"Parameter file path is not a file: {path}", stacklevel=2)
                else:
                    params.append(("param", self.sub(p.get("name"), scope),
                                   parameter_value(self.sub(p.get("value"), scope)), "node"))
            elif p.tag != "remap":
                raise LaunchError(f"unsupported <{p.tag}> in <node>")
        self.nodes.append(NodeDescription(
            args={}, pkg=el.get("pkg"), exec=el.get("exec"), name=el.get("name"),
            namespace=self.sub(el.get("namespace"), scope),
            ros_args=shlex.split(self.sub(el.get("ros_args"), scope)), parameters=params,
            remaps=[(self.sub(r.get("from"), scope), self.sub(r.get("to"), scope))
                    for r in el.findall("remap")]))


def launch_nodes(launch: Path, overrides: dict[str, str] | None = None) -> list[NodeDescription]:
    """Every node the launch file starts with these ``name:=value`` arguments."""
    root = ET.parse(launch).getroot()
    if root.tag != "launch":
        raise LaunchError(f"{launch.name}: root element is <{root.tag}>, not <launch>")
    interp = _Interpreter(launch, overrides or {})
    interp.run(root, _Scope({}, []))
    unknown = set(overrides or {}) - set(interp.declared)
    if unknown:
        raise LaunchError(f"arguments given for undeclared args {sorted(unknown)}")
    for node in interp.nodes:
        node.args = dict(interp.declared)
    return interp.nodes


def launch_description(launch: Path, overrides: dict[str, str] | None = None) -> NodeDescription:
    """The one node a one-node launch file starts."""
    nodes = launch_nodes(launch, overrides)
    if len(nodes) != 1:
        raise LaunchError(f"{launch.name} starts {len(nodes)} nodes, expected 1")
    return nodes[0]
