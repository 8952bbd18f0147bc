# SPDX-License-Identifier: Apache-2.0
"""Every command README.md shows is exercised (issue 19): run here on generated inputs, or by the
tests readme_command_registry.py names; and every option it shows is one the tool accepts.

The commands run here are taken from the README itself (looked up by their signature), with only
placeholder inputs replaced by fixtures rendered with the project's own tools, in a temporary
working directory, so a changed README line is what runs.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import runpy
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from readme_command_registry import EXERCISED, SHELL_STEPS, Exercised
from readme_commands import (
    README,
    REPO,
    ROS_ARGS_FLAGS,
    ReadmeCommand,
    ToolHelp,
    coverage_problems,
    evidence_problems,
    identity_words,
    inline_commands,
    options_in_help,
    options_of,
    parse_commands,
    positionals,
    registry_key,
    run_entry_point,
    signature,
    unknown_options,
)
from ros_testing import launch_description
from test_package import console_scripts

from edgemoe_ros.ros import params as node_params

SCRIPTS = console_scripts()
#: Packages the README tells to pip install must be listed where `make venv` installs from.
REQUIREMENTS = sorted(REPO.glob("requirements*.txt"))


@pytest.fixture(scope="module")
def helps() -> ToolHelp:
    return ToolHelp(SCRIPTS)


@functools.cache
def project_subcommands() -> dict[str, frozenset[str]]:
    return ToolHelp(SCRIPTS).subcommands()


@pytest.fixture(scope="module")
def subcommands() -> dict[str, frozenset[str]]:
    return project_subcommands()


@pytest.fixture(scope="module")
def readme() -> list[ReadmeCommand]:
    commands = parse_commands(README.read_text())
    assert len(commands) >= 10, "README.md shows almost no shell commands: is the parser broken?"
    return commands


def readme_command(key: str) -> ReadmeCommand:
    """The README line with this signature (what a run test below runs)."""
    found = [
        c
        for c in parse_commands(README.read_text())
        if registry_key(c, {key: None}, project_subcommands()) is not None
    ]
    assert found, f"README.md shows no `{key}` any more: update {__name__} and the registry"
    return found[0]


def with_values(argv: tuple[str, ...], **values: str) -> list[str]:
    """``argv`` with the values of some options replaced (``out_dir=`` for ``--out-dir``)."""
    words = list(argv)
    for name, value in values.items():
        opt = "--" + name.replace("_", "-")
        assert opt in words, f"the README command `{' '.join(argv)}` has no {opt} any more"
        words[words.index(opt) + 1] = value
    return words


def tool_markers(tool: str) -> list[str]:
    """What in a test's code shows it runs ``tool``: its name, or its console script's module."""
    return [tool, SCRIPTS[tool].partition(":")[0]] if tool in SCRIPTS else [tool]


def registry_evidence(
    key: str, entry: Exercised, subcommands: dict[str, frozenset[str]]
) -> list[str]:
    """Problems with the tests an entry names: gone, or not spelling the command (see the
    registry's docstring). A test of this file runs the README line itself, looked up by its
    key, so its code must name that key."""
    words = key.split()
    here = [t for t in entry.tests if t.startswith(f"test/{Path(__file__).name}::")]
    others = [t for t in entry.tests if t not in here]
    if entry.evidence is not None:  # said explicitly: the same for every named test
        here, others = [], list(entry.tests)
    problems = evidence_problems(key, here, [], [key]) if here else []
    if others:
        tool = words[0] if entry.tool == "" else entry.tool
        evidence = words[1:] if entry.evidence is None else list(entry.evidence)
        problems += evidence_problems(key, others, tool_markers(tool) if tool else [], evidence)
    return problems


# ----------------------------------------------------------------------------- coverage
def test_every_readme_command_is_exercised(readme, subcommands):
    problems = coverage_problems(readme, EXERCISED, SHELL_STEPS, subcommands)
    assert not problems, "\n".join(problems)


def test_registered_tests_exist_and_spell_the_command(subcommands):
    problems = []
    for key, entry in EXERCISED.items():
        assert entry.tests, f"'{key}' names no test"
        if (entry.tool != "" or entry.evidence is not None) and entry.evidence != (key,):
            assert entry.why, (
                f"'{key}' is exercised another way than by running it: say why in `why`"
            )
        problems += registry_evidence(key, entry, subcommands)
    assert not problems, "\n".join(problems)


def test_make_targets_run_the_registered_recipe(readme, subcommands):
    for cmd in (c for c in readme if c.tool == "make"):
        target = identity_words(cmd, subcommands)[1]
        proc = subprocess.run(
            ["make", "-n", target], cwd=REPO, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, f"{cmd.where()}: `make -n {target}` fails: {proc.stderr}"
        entry = EXERCISED[registry_key(cmd, EXERCISED, subcommands)]
        assert entry.recipe and entry.recipe in proc.stdout, (
            f"{cmd.where()}: `make {target}` no longer runs `{entry.recipe}`:\n{proc.stdout}"
        )


# ----------------------------------------------------------------------------- options accepted
def ros_args_problems(cmd: ReadmeCommand) -> list[str]:
    """``edgemoe_node --ros-args ...``: known flags, declared parameters, params files that
    exist."""
    problems = [
        f"{cmd.where()}: {opt} is not a --ros-args flag"
        for opt in options_of(cmd)
        if not opt.endswith(":=") and opt not in ROS_ARGS_FLAGS
    ]
    argv = list(cmd.argv)
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag in ("-p", "--param") and cmd.tool == "edgemoe_node":
            name = value.split(":=", 1)[0]
            if name not in node_params.SPECS:
                problems.append(f"{cmd.where()}: edgemoe_node has no parameter {name!r}")
        if flag == "--params-file" and not (REPO / value).is_file():
            problems.append(f"{cmd.where()}: params file {value} does not exist")
    return problems


def ros2_problems(cmd: ReadmeCommand) -> list[str]:
    """What can be checked of a ``ros2`` line without the ros2 CLI: launch files and their
    arguments, executables, parameter, service and topic names of this package."""
    words = positionals(cmd.argv[1:])
    verb = words[0]
    if verb == "launch":
        pkg, name = words[1:3]
        launch = REPO / "launch" / name
        if pkg != "edgemoe_ros" or not launch.is_file():
            return [f"{cmd.where()}: no launch file launch/{name} in this package"]
        overrides = {w.split(":=", 1)[0]: w.split(":=", 1)[1] for w in cmd.argv if ":=" in w}
        try:
            launch_description(launch, overrides)
        except AssertionError as exc:
            return [f"{cmd.where()}: {exc}"]
    elif verb == "run" and words[2] not in SCRIPTS:
        return [f"{cmd.where()}: edgemoe_ros installs no executable {words[2]}"]
    elif (
        verb == "param"
        and words[2].endswith("/edgemoe_node")
        and words[3] not in node_params.SPECS
    ):
        return [f"{cmd.where()}: edgemoe_node has no parameter {words[3]!r}"]
    elif verb in ("service", "topic"):
        name = words[2].rsplit("/", 1)[-1]
        sources = "".join(p.read_text() for p in (REPO / "edgemoe_ros" / "ros").glob("*.py"))
        if (
            f'"{name}"' not in sources
            and f"'{name}'" not in sources
            and f"~/{name}" not in sources
        ):
            return [f"{cmd.where()}: the node declares no {verb} {name!r}"]
    return []


def option_problems(
    cmd: ReadmeCommand, helps: ToolHelp, subcommands: dict[str, frozenset[str]]
) -> list[str]:
    if cmd.tool in SCRIPTS:
        return (
            ros_args_problems(cmd)
            if helps.is_ros_node(cmd.tool)
            else unknown_options(cmd, helps, subcommands)
        )
    if cmd.tool == "ros2":
        return ros2_problems(cmd)
    if cmd.tool == "torchrun":  # its own options, then the module's after -m
        argv = list(cmd.argv)
        module = argv[argv.index("-m") + 1]
        tool = next(t for t, target in SCRIPTS.items() if target.startswith(module + ":"))
        with (
            warnings.catch_warnings()
        ):  # its fault handler cannot use the captured stderr: harmless
            warnings.simplefilter("ignore", UserWarning)
            code, text = run_entry_point("torch.distributed.run:main", ["--help"])
        assert code == 0, text
        own = ReadmeCommand(cmd.line, cmd.text, tuple(argv[: argv.index("-m")]), cmd.env)
        problems = [
            f"{cmd.where()}: torchrun has no option {o}" for o in options_of(own) if o not in text
        ]
        rest = ReadmeCommand(cmd.line, cmd.text, (tool, *argv[argv.index("-m") + 2 :]), cmd.env)
        return problems + unknown_options(rest, helps, subcommands)
    if cmd.tool == "colcon":
        colcon = Path(sys.executable).with_name("colcon")
        verb = identity_words(cmd, subcommands)[1]
        text = subprocess.run(
            [str(colcon), verb, "--help"], capture_output=True, text=True, timeout=120
        ).stdout
        return [
            f"{cmd.where()}: colcon {verb} has no option {o}"
            for o in options_of(cmd)
            if o not in text
        ]
    if cmd.tool in ("pip", "pip3"):
        listed = "\n".join(p.read_text().lower() for p in REQUIREMENTS)
        return [
            f"{cmd.where()}: {pkg} is not in requirements*.txt (what `make venv` installs)"
            for pkg in positionals(cmd.argv[2:])
            if not pkg.startswith((".", "-"))
            and not re.search(
                rf"^{re.escape(pkg.lower())}\s*([=<>!~\[;@]|$)", listed, re.MULTILINE
            )
        ]
    return []  # make (test_make_targets_...), rosdep (not installed here), shell steps


def test_every_readme_option_is_one_the_tool_accepts(readme, helps, subcommands):
    problems = []
    for cmd in readme:
        problems += option_problems(cmd, helps, subcommands)
    assert not problems, "\n".join(problems)


def script_help(script: str) -> str:
    """``python bench/x.py --help``, run in this process (its directory first on sys.path, as
    python puts it there)."""
    saved, saved_path = sys.argv, list(sys.path)
    sys.argv = [script, "--help"]
    sys.path.insert(0, str((REPO / script).parent))
    out = io.StringIO()
    try:
        with (
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(out),
            pytest.raises(SystemExit) as done,
        ):
            runpy.run_path(str(REPO / script), run_name="__main__")
    finally:
        sys.argv, sys.path[:] = saved, saved_path
    assert done.value.code in (0, None), (
        f"{script} --help exits {done.value.code}:\n{out.getvalue()[-2000:]}"
    )
    return out.getvalue()


def inline_option_problems(
    markdown: str, helps: ToolHelp, subcommands: dict[str, frozenset[str]]
) -> list[str]:
    problems = []
    for cmd in inline_commands(markdown, SCRIPTS):
        if cmd.tool.endswith(".py"):
            known = options_in_help(script_help(cmd.argv[0]))
            problems += [
                f"{cmd.where()}: {cmd.argv[0]} has no option {o}"
                for o in options_of(cmd)
                if o not in known
            ]
        elif not helps.is_ros_node(cmd.tool):
            problems += unknown_options(cmd, helps, subcommands)
    return problems


def test_inline_readme_commands_use_options_the_tools_accept(helps, subcommands):
    """Commands quoted in the prose and tables (a benchmark's arguments, `--randomise domain`)."""
    problems = inline_option_problems(README.read_text(), helps, subcommands)
    assert not problems, "\n".join(problems)


def test_repository_paths_in_readme_commands_exist(readme):
    top = {p.name for p in REPO.iterdir() if not p.name.startswith(".")}
    missing = [
        f"{cmd.where()}: {word} does not exist"
        for cmd in readme
        for word in cmd.argv[1:]
        if "/" in word and word.split("/", 1)[0] in top and not (REPO / word).exists()
    ]
    assert not missing, "\n".join(missing)


# ----------------------------------------------------------------------------- the checker fails
SYNTHETIC = """\
# A README

```bash
$ edgemoe-infer frame.png --tasks semseg --no-such-flag 3   # prompt, comment, unknown option
FOO=1 edgemoe-bag play drive.mcap \\
    --rate 2 && make demo   # an env prefix, a continuation, two commands
ros2 launch edgemoe_ros edgemoe.launch.xml namespace:=/a no_such_arg:=1
```

```python
edgemoe-infer not.a.command --tasks x
```

Measured by `bench/bench_engine.py --runs 5 --no-such-bench-flag`;
`edgemoe-bag play --rate 2` paces.
"""


def test_parser_handles_prompts_comments_continuations_env_and_several_commands():
    cmds = parse_commands(SYNTHETIC)
    assert [(c.line, c.tool) for c in cmds] == [
        (4, "edgemoe-infer"),
        (5, "edgemoe-bag"),
        (5, "make"),
        (7, "ros2"),
    ]
    assert cmds[0].argv == (
        "edgemoe-infer",
        "frame.png",
        "--tasks",
        "semseg",
        "--no-such-flag",
        "3",
    )
    assert cmds[1].env == (("FOO", "1"),) and cmds[1].argv[-2:] == ("--rate", "2")
    subs = {"edgemoe-bag": frozenset({"play", "process"})}
    assert [signature(c, subs) for c in cmds] == [
        "edgemoe-infer --tasks --no-such-flag",
        "edgemoe-bag play --rate",
        "make demo",
        "ros2 launch edgemoe_ros edgemoe.launch.xml namespace:= no_such_arg:=",
    ]


def test_checker_names_the_line_of_an_unknown_option_and_an_undeclared_launch_arg(
    helps, subcommands
):
    cmds = parse_commands(SYNTHETIC)
    problems = option_problems(cmds[0], helps, subcommands) + option_problems(
        cmds[3], helps, subcommands
    )
    assert len(problems) == 2, problems
    assert problems[0].startswith("README.md:4:") and "--no-such-flag" in problems[0]
    assert problems[1].startswith("README.md:7:") and "no_such_arg" in problems[1]
    assert option_problems(cmds[1], helps, subcommands) == []
    [inline] = inline_option_problems(SYNTHETIC, helps, subcommands)
    assert inline.startswith("README.md:14:") and "--no-such-bench-flag" in inline


def test_checker_names_an_unregistered_command_and_a_stale_entry(subcommands):
    cmds = parse_commands(SYNTHETIC)
    registry = {"make demo": None, "edgemoe-bag play --rate --loop": None}
    problems = coverage_problems(
        cmds, registry, {"ros2 launch edgemoe_ros edgemoe.launch.xml": ""}, subcommands
    )
    assert len(problems) == 3, problems
    assert (
        problems[0].startswith("README.md:4:")
        and "'edgemoe-infer --tasks --no-such-flag'" in problems[0]
    )
    assert problems[1].startswith("README.md:5:") and "'edgemoe-bag play --rate'" in problems[1]
    assert (
        "'edgemoe-bag play --rate --loop' is registered but the README shows no such command"
        in problems[2]
    )


def test_checker_names_a_missing_test_and_a_test_that_does_not_spell_the_command():
    gone = evidence_problems(
        "edgemoe-eval --manifest",
        ["test/test_eval.py::test_no_longer_here"],
        tool_markers("edgemoe-eval"),
        ["--manifest"],
    )
    assert gone == [
        "'edgemoe-eval --manifest' -> test/test_eval.py::test_no_longer_here: no such test "
        "(renamed or removed?)"
    ]
    wrong = evidence_problems(
        "edgemoe-eval --manifest --verbose",
        ["test/test_eval.py::test_cli_end_to_end"],
        tool_markers("edgemoe-eval"),
        ["--manifest", "--verbose"],
    )
    assert len(wrong) == 1 and "spells '--verbose'" in wrong[0]
    no_tool = evidence_problems(
        "edgemoe-bag record",
        ["test/test_eval.py::test_cli_end_to_end"],
        tool_markers("edgemoe-bag"),
        [],
    )
    assert len(no_tool) == 1 and "never runs edgemoe-bag" in no_tool[0]


# ----------------------------------------------------------------------------- run here
def render_png(path: Path, seed: int = 3, width: int = 256, height: int = 128) -> Path:
    """A rendered street scene as the image a reader passes to edgemoe-infer."""
    from edgemoe_ros.scenes.render import render_frame

    frame = render_frame(seed, width, height)
    assert cv2.imwrite(str(path), cv2.cvtColor(frame.rgb, cv2.COLOR_RGB2BGR))
    return path


def write_drive(path: Path, topic: str, frames: int = 2) -> Path:
    """A short recorded drive: rendered frames 0.1 s apart on ``topic`` with its camera_info."""
    from edgemoe_ros.bag import CameraInfoParams, write_image_bag
    from edgemoe_ros.scenes.render import render_frame

    rendered = [render_frame(seed, 256, 128) for seed in range(frames)]
    k = tuple(float(v) for v in rendered[0].K.ravel())
    write_image_bag(
        path,
        [(10**9 + i * 10**8, f.rgb) for i, f in enumerate(rendered)],
        topic,
        "cam",
        camera_info=CameraInfoParams(256, 128, k),
    )
    return path


def run_readme_line(cmd: ReadmeCommand, argv: list[str]) -> str:
    """Run a project tool's README line in this process, as its console script would."""
    code, out = run_entry_point(SCRIPTS[cmd.tool], argv)
    assert code == 0, f"{cmd.where()} exits {code}:\n{out[-3000:]}"
    return out


def test_readme_infer_line(tmp_path, monkeypatch):
    cmd = readme_command("edgemoe-infer --tasks --out --fx")
    monkeypatch.chdir(tmp_path)
    images = [w for w in positionals(cmd.argv[1:]) if w.endswith((".png", ".jpg"))]
    for name in images:
        render_png(tmp_path / name)
    run_readme_line(cmd, list(cmd.argv[1:]))
    out = tmp_path / cmd.argv[cmd.argv.index("--out") + 1]
    tasks = cmd.argv[cmd.argv.index("--tasks") + 1].split(",")
    for name in images:
        stem = Path(name).stem
        if "semseg" in tasks:
            ids = cv2.imread(str(out / f"{stem}_semseg_ids.png"), cv2.IMREAD_UNCHANGED)
            assert ids is not None and ids.shape == (128, 256), f"{cmd.where()}: no class-id image"
        if "depth" in tasks:
            depth = np.load(out / f"{stem}_depth.npy")
            assert depth.shape == (128, 256) and np.isfinite(depth).mean() > 0.5, (
                f"{cmd.where()}: bad depth"
            )


def test_readme_bag_process_line(tmp_path, monkeypatch):
    from edgemoe_ros.bag import bag_info

    cmd = readme_command("edgemoe-bag process --topic")
    monkeypatch.chdir(tmp_path)
    src, dst = positionals(cmd.argv[2:])[:2]
    write_drive(tmp_path / src, cmd.argv[cmd.argv.index("--topic") + 1])
    run_readme_line(cmd, list(cmd.argv[1:]))
    topics = {t.topic: t.count for t in bag_info(tmp_path / dst).topics}
    assert any(t.endswith("/segmentation/image") for t in topics) and any(
        t.endswith("/depth/image") for t in topics
    ), topics
    assert all(n == 2 for n in topics.values()), topics


@pytest.mark.ros
def test_readme_bag_play_line(tmp_path):
    from ros_testing import ros_env

    cmd = readme_command("edgemoe-bag play --rate")
    bag = positionals(cmd.argv[2:])[0]
    write_drive(tmp_path / bag, "/cam/image")
    exe = Path(sys.executable).with_name(cmd.tool)
    proc = subprocess.run(
        [str(exe), *cmd.argv[1:]],
        cwd=tmp_path,
        env=ros_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, f"{cmd.where()} exits {proc.returncode}:\n{proc.stderr[-3000:]}"
    assert "published 4 messages" in proc.stderr, proc.stderr  # 2 images + their camera_info


def test_readme_dataset_and_eval_lines(tmp_path, monkeypatch):
    from edgemoe_ros.datasets import CityscapesDataset

    export = readme_command("edgemoe-dataset export --format --out --frames")
    monkeypatch.chdir(tmp_path)
    run_readme_line(export, with_values(export.argv[1:], frames="2") + ["--no-progress"])
    out = tmp_path / export.argv[export.argv.index("--out") + 1]
    assert len(CityscapesDataset(out, "train")) == 2

    evaluate = readme_command("edgemoe-eval --cityscapes --split")
    split = evaluate.argv[evaluate.argv.index("--split") + 1]
    data = tmp_path / "cityscapes"  # the reader's own Cityscapes copy, rendered small
    run_readme_line(
        export,
        [
            "export",
            "--format",
            "cityscapes",
            "--out",
            str(data),
            "--frames",
            "2",
            "--width",
            "256",
            "--height",
            "128",
            "--split",
            split,
            "--no-progress",
        ],
    )
    text = run_readme_line(
        evaluate, with_values(evaluate.argv[1:], cityscapes=str(data)) + ["--no-progress"]
    )
    assert "mIoU" in text or "miou" in text.lower(), text[-2000:]


@pytest.mark.slow
def test_readme_training_line_with_init_and_val(tmp_path, monkeypatch):
    """The README's fine-tuning line as one run (its options are otherwise exercised by two
    tests): the shipped model as --init, 19 classes, a data mix, --val; one step on 2 frames
    (about 45 s and 1.2 GB here)."""
    cmd = readme_command("edgemoe-train --out --data --classes --init --steps --val")
    monkeypatch.chdir(tmp_path)
    data_root = cmd.argv[cmd.argv.index("--val") + 1].split(":", 1)[1]
    data = tmp_path / "cityscapes"
    for split in ("train", "val"):
        run_readme_line(
            readme_command("edgemoe-dataset export --format --out --frames"),
            ["export", "--format", "cityscapes", "--out", str(data), "--frames", "2",
             "--width", "256", "--height", "128", "--split", split, "--no-progress"],
        )  # fmt: skip
    argv = [w.replace(data_root, str(data)) for w in cmd.argv[1:]]
    argv = [str(REPO / w) if "/" in w and (REPO / w).is_file() else w for w in argv]
    fast = ["--batch", "2", "--threads", "1", "--no-progress", "--accuracy-images", "0",
            "--synth-frames", "2", "--val-frames", "2"]  # fmt: skip
    run_readme_line(cmd, with_values(tuple(argv), steps="1") + fast)
    out = tmp_path / cmd.argv[cmd.argv.index("--out") + 1]
    run = json.loads((out / "run.json").read_text())
    assert run["steps"] == 1 and run["val"]["frames"] == 2, run
    assert 0.0 <= run["val"]["miou"] <= 1.0
    from edgemoe_ros.model.weights import load_weights

    classes = cmd.argv[cmd.argv.index("--classes") + 1]
    names = load_weights(out / "model.safetensors").config.class_names
    assert classes != "cityscapes19" or len(names) == 19, names


@pytest.mark.ros
def test_readme_node_command_lines_bring_the_node_up(tmp_path, monkeypatch):
    """Both `edgemoe_node --ros-args ...` lines, from the repository root as the README runs them,
    on one private graph: each node activates with the README's namespace, remap and parameter."""
    from ros_testing import NodeProcess, RosClient, ros_env, wait_until

    remapped = readme_command("edgemoe_node --ros-args -r __ns:= image:= --params-file")
    threads = readme_command("edgemoe_node --ros-args --params-file -p backend_options:=")
    env = ros_env(tmp_path)
    monkeypatch.chdir(REPO)  # the README's relative config/edgemoe.yaml
    exe = str(Path(sys.executable).with_name("edgemoe_node"))
    nodes = [NodeProcess(tmp_path, env, command=[exe, *c.argv[1:]]) for c in (remapped, threads)]
    client = None
    try:
        client = RosClient(env)
        ns = next(w for w in remapped.argv if w.startswith("__ns:=")).split(":=", 1)[1]
        image = next(w for w in remapped.argv if w.startswith("image:=")).split(":=", 1)[1]
        client.wait_for_state(f"{ns}/edgemoe_node", "active")
        wait_until(
            lambda: client.node.count_subscribers(image) >= 1, 30.0, f"a subscriber on {image}"
        )
        client.wait_for_state("/edgemoe_node", "active")
        value = next(w for w in threads.argv if w.startswith("backend_options:=")).split(":=", 1)[
            1
        ]
        got = client.get_parameters("/edgemoe_node", ["backend_options"])["backend_options"]
        assert json.loads(got) == json.loads(yaml.safe_load(value)), got
    finally:
        if client is not None:
            client.close()
        for node in nodes:
            node.stop()
    for node, cmd in zip(nodes, (remapped, threads), strict=True):
        assert "Traceback" not in node.output(), f"{cmd.where()}:\n{node.output()[-3000:]}"


def test_shell_steps_are_only_shell_steps():
    """SHELL_STEPS never hides a project command (a console script or ros2)."""
    for key in SHELL_STEPS:
        assert key.split()[0] not in SCRIPTS and key.split()[0] not in ("ros2", "make", "colcon")
    assert shutil.which("make"), "make is needed for the README's two commands"
