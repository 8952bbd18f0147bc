# SPDX-License-Identifier: Apache-2.0
"""The commands a newcomer copies out of README.md, as data a test can check.

Why: issue 19 asks that every command shown in the README is exercised by a test or the demo. A
README drifts silently (an option renamed, a launch argument dropped, a test deleted); parsing its
shell blocks and checking each command against the tools and the tests makes that drift a test
failure that names the README line.

A command is identified by its *signature*: the tool, the words that select what it does (a
project tool's subcommand; for ``ros2`` the verb and its package/file or service/topic/node name;
``make``'s target; the first word after ``colcon``/``rosdep``/``git``/``pip``) and the names of the
options it uses, in README order, values dropped (``--out DIR`` -> ``--out``, ``image:=/x`` ->
``image:=``). Paths and other values are placeholders a reader replaces, so they are not part
of it.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import io
import re
import shlex
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

#: Info strings of the fenced blocks whose lines are shell commands.
SHELL_LANGS = frozenset({"bash", "sh", "shell", "console", "shell-session", "zsh"})
#: Prompt prefix stripped from a command line (``console`` blocks also show output lines, which
#: have no prompt and are skipped there). ``# `` is not one: in a bash block it starts a comment.
PROMPT = "$ "
#: Words that select what a non-project tool does: tool -> how many leading positional words
#: (the tool's own name included) identify the command. ``ros2`` is keyed by its verb.
IDENTITY_WORDS: dict[str, int] = {
    "make": 2,
    "colcon": 2,
    "rosdep": 2,
    "git": 2,
    "pip": 2,
    "pip3": 2,
}
ROS2_IDENTITY_WORDS: dict[str, int] = {
    "launch": 4,
    "run": 4,
    "service": 4,
    "topic": 4,
    "param": 5,
    "bag": 3,
    "lifecycle": 4,
}
#: ``--ros-args`` flags rclpy accepts (design/ros2 command line arguments); their values follow.
ROS_ARGS_FLAGS = frozenset(
    {
        "--ros-args",
        "-r",
        "--remap",
        "-p",
        "--param",
        "--params-file",
        "--log-level",
        "-e",
        "--enclave",
        "--disable-stdout-logs",
        "--disable-rosout-logs",
        "--disable-external-lib-logs",
        "--enable-rosout-logs",
        "--",
    }
)
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SEPARATORS = frozenset({"&&", "||", ";", "|", "&"})


@dataclass(frozen=True)
class ReadmeCommand:
    """One command of a README shell block."""

    line: int  # 1-based README line the command starts on
    text: str  # the command as written (continuations joined, comment dropped)
    argv: tuple[str, ...]  # shell words without leading VAR=value assignments
    env: tuple[tuple[str, str], ...]  # the leading VAR=value assignments

    @property
    def tool(self) -> str:
        """The program: ``.venv/bin/edgemoe-eval`` and ``edgemoe-eval`` are the same tool."""
        return Path(self.argv[0]).name

    def where(self) -> str:
        return f"README.md:{self.line}: `{self.text}`"


def fenced_shell_blocks(markdown: str) -> Iterator[tuple[int, str, list[str]]]:
    """(first line number, info string, lines) of each fenced block with a shell info string."""
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^\s*(`{3,}|~{3,})\s*([\w-]*)", lines[i])
        if not m:
            i += 1
            continue
        fence, lang = m.group(1), m.group(2).lower()
        body, start = [], i + 2
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        i += 1
        if lang in SHELL_LANGS:
            yield start, lang, body


def _logical_lines(start: int, lang: str, body: list[str]) -> Iterator[tuple[int, str]]:
    """Join ``\\`` continuations and strip prompts; yield (line number, text) of each
    command line."""
    pending, first = "", start
    for offset, raw in enumerate(body):
        line = raw.rstrip()
        if not pending:
            first = start + offset
            stripped = line.lstrip()
            if stripped.startswith(PROMPT):
                line = stripped[len(PROMPT) :]
            elif lang in ("console", "shell-session"):
                continue  # output shown under a prompt line
        if line.endswith("\\") and not line.lstrip().startswith("#"):
            pending += line[:-1] + " "
            continue
        yield first, pending + line
        pending = ""
    if pending:
        yield first, pending


def _shell_words(text: str) -> list[str]:
    """Shell words of one line, comments dropped, ``&&``/``;``/``|`` kept as separate words."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    return list(lexer)


def parse_commands(markdown: str) -> list[ReadmeCommand]:
    """Every command in the shell blocks of ``markdown``, in order, with its README line."""
    commands = []
    for start, lang, body in fenced_shell_blocks(markdown):
        for line_no, text in _logical_lines(start, lang, body):
            try:
                words = _shell_words(text)
            except ValueError as exc:  # unbalanced quotes: a README typo worth failing on
                raise ValueError(
                    f"README.md:{line_no}: cannot split `{text.strip()}`: {exc}"
                ) from exc
            group: list[str] = []
            for word in [*words, ";"]:
                if word not in _SEPARATORS:
                    group.append(word)
                    continue
                env = []
                while group and _ASSIGNMENT.match(group[0]):
                    name, _, value = group.pop(0).partition("=")
                    env.append((name, value))
                if group:
                    shown = shlex.join([f"{k}={v}" for k, v in env] + group)
                    commands.append(ReadmeCommand(line_no, shown, tuple(group), tuple(env)))
                group = []
    return commands


def inline_commands(markdown: str, programs: Iterable[str]) -> list[ReadmeCommand]:
    """Commands quoted inline in the prose (`` `edgemoe-fpga check --bitstream x.bit` ``) whose
    first word is one of ``programs`` or a ``bench/*.py`` script: their options are checked too."""
    programs = set(programs)
    commands, fence = [], None
    for line_no, line in enumerate(markdown.splitlines(), 1):
        m = re.match(r"^\s*(`{3,}|~{3,})", line)
        if m:
            fence = None if fence and line.strip().startswith(fence) else (fence or m.group(1))
            continue
        if fence:
            continue
        for span in re.findall(r"(?<!`)`([^`]+)`(?!`)", line):
            try:
                words = shlex.split(span)
            except ValueError:
                continue
            if words and (words[0] in programs or re.fullmatch(r"bench/\w+\.py", words[0])):
                commands.append(ReadmeCommand(line_no, span, tuple(words), ()))
    return commands


def option_name(word: str) -> str | None:
    """``--out=x`` -> ``--out``, ``-r`` -> ``-r``, ``image:=/x`` -> ``image:=``; None for a
    value."""
    if word.startswith("-") and len(word) > 1 and not re.match(r"^-\d", word):
        return word.split("=", 1)[0]
    if ":=" in word and not word.startswith(("'", '"', "{")):
        return word.split(":=", 1)[0] + ":="
    return None


def positionals(argv: Iterable[str]) -> list[str]:
    """Words that are neither an option nor a ``name:=value``, in order (option values included:
    without the tool's parser a value cannot be told from a positional, so callers only ever use
    the words before the first option)."""
    return [w for w in argv if option_name(w) is None]


def identity_words(
    cmd: ReadmeCommand, subcommands: Mapping[str, frozenset[str]]
) -> tuple[str, ...]:
    """The tool plus the words that select what it does (see the module docstring)."""
    argv = list(cmd.argv)
    head: list[str] = []
    for word in argv[1:]:  # the positional words before the first option
        if option_name(word) is not None:
            break
        head.append(word)
    tool = cmd.tool
    if tool == "ros2":
        n = ROS2_IDENTITY_WORDS.get(head[0], 2) - 1 if head else 0
        words = positionals(argv[1:])[:n]  # ros2 topic pub --once NAME: the name follows an option
        return (tool, *words)
    if tool in subcommands:
        return (tool, head[0]) if head and head[0] in subcommands[tool] else (tool,)
    return (tool, *head[: IDENTITY_WORDS.get(tool, 1) - 1])


def options_of(cmd: ReadmeCommand) -> tuple[str, ...]:
    """Option names in README order, each once."""
    seen: dict[str, None] = {}
    for word in cmd.argv[1:]:
        name = option_name(word)
        if name is not None:
            seen.setdefault(name, None)
    return tuple(seen)


def signature(cmd: ReadmeCommand, subcommands: Mapping[str, frozenset[str]]) -> str:
    """``edgemoe-eval --manifest --json --save``: the key the registry is written in."""
    return " ".join((*identity_words(cmd, subcommands), *options_of(cmd)))


def split_signature(key: str) -> tuple[tuple[str, ...], frozenset[str]]:
    """A registry key back into (identity words, option set): option order does not matter."""
    words = key.split()
    opts = [w for w in words if option_name(w) is not None]
    return tuple(w for w in words if option_name(w) is None), frozenset(opts)


def same_command(key: str, other: str) -> bool:
    return split_signature(key) == split_signature(other)


# ----------------------------------------------------------------------------- project tools
def run_entry_point(target: str, args: list[str]) -> tuple[int, str]:
    """Call a console script's function in this process with ``args`` as its command line, as the
    installed script would (``sys.argv`` patched; its exit code returned, stdout+stderr
    captured)."""
    module_name, _, attr = target.partition(":")
    func = getattr(importlib.import_module(module_name), attr)
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [module_name, *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
            try:
                code = func()
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = saved
    return int(code or 0), out.getvalue()


_SUBPARSERS = re.compile(r"^positional arguments:\n  \{([\w.,-]+)\}", re.MULTILINE)


def subcommands_in_help(help_text: str) -> frozenset[str]:
    """Subcommand names of an argparse help: a ``{a,b,c}`` first under "positional arguments"
    (an option's choices are listed after the option, never there)."""
    m = _SUBPARSERS.search(help_text)
    return frozenset(m.group(1).split(",")) if m else frozenset()


def options_in_help(help_text: str) -> frozenset[str]:
    """Every ``-x``/``--xyz`` an argparse help lists."""
    return frozenset(re.findall(r"(?<![\w-])(--?[A-Za-z][\w-]*)", help_text))


# ----------------------------------------------------------------------------- tests as evidence
def _defined_names(tree: ast.Module) -> dict[str, ast.AST]:
    """Module-level functions, classes and assignments by name."""
    found: dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            found[node.name] = node
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    found[t.id] = node
    return found


def find_test(tree: ast.Module, parts: list[str]) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    """The test function ``Class::test`` or ``test`` (a parametrize id ``[..]`` ignored)."""
    scope: list[ast.stmt] = tree.body
    for i, name in enumerate(parts):
        name = name.split("[", 1)[0]
        last = i == len(parts) - 1
        match = next((n for n in scope if getattr(n, "name", None) == name), None)
        if match is None:
            return None
        if last:
            return match if isinstance(match, ast.FunctionDef | ast.AsyncFunctionDef) else None
        if not isinstance(match, ast.ClassDef):
            return None
        scope = match.body
    return None


def code_of_test(tree: ast.Module, func: ast.AST) -> list[ast.AST]:
    """The test and every module-level function, fixture or constant it uses, transitively: the
    code that runs the command may sit in a helper or a fixture of the same module."""
    defined = _defined_names(tree)
    seen: dict[int, ast.AST] = {id(func): func}
    todo = [func]
    while todo:
        node = todo.pop()
        names = {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
        names |= {
            a.arg
            for n in ast.walk(node)
            if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
            for a in n.args.args
        }  # fixtures by parameter name
        for name in names:
            target = defined.get(name)
            if target is not None and id(target) not in seen:
                seen[id(target)] = target
                todo.append(target)
    return list(seen.values())


def strings_in(nodes: Iterable[ast.AST]) -> set[str]:
    """String constants (f-string parts included) in the nodes."""
    return {
        n.value
        for node in nodes
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }


def modules_imported(tree: ast.Module) -> set[str]:
    """Dotted names of every module the test module imports (also inside functions)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def evidence_missing(strings: set[str], wanted: str) -> bool:
    """Whether no string constant spells ``wanted`` (an option, ``name:=`` or a plain word)."""
    if wanted.endswith(":="):  # a launch/ROS argument: passed as "name:=v", or a {"name": v} key
        name = wanted[:-2]
        return not any(s == name or f"{name}:=" in s for s in strings)
    if wanted.startswith("-"):
        return not any(s == wanted or s.startswith(wanted + "=") for s in strings)
    return not any(wanted in s for s in strings)


# ----------------------------------------------------------------------------- the checks
def registry_key(
    cmd: ReadmeCommand, registry: Mapping[str, object], subcommands: Mapping[str, frozenset[str]]
) -> str | None:
    """The registry key that names the same command as ``cmd``, if any."""
    sig = signature(cmd, subcommands)
    return next((key for key in registry if same_command(key, sig)), None)


def coverage_problems(
    commands: Iterable[ReadmeCommand],
    registry: Mapping[str, object],
    shell_steps: Mapping[str, str],
    subcommands: Mapping[str, frozenset[str]],
    registry_file: str = "test/readme_command_registry.py",
) -> list[str]:
    """README commands neither registered nor a shell step, and registry keys the README lost."""
    problems, used = [], set()
    for cmd in commands:
        if " ".join(identity_words(cmd, subcommands)) in shell_steps:
            continue
        key = registry_key(cmd, registry, subcommands)
        if key is None:
            problems.append(
                f"{cmd.where()} is neither run by a test nor registered: add "
                f"'{signature(cmd, subcommands)}': Exercised((<test node ids>,)) to "
                f"{registry_file} (how: its docstring)"
            )
        used.add(key)
    problems += [
        f"{registry_file}: '{key}' is registered but the README shows no such command "
        f"(renamed or an option changed?)"
        for key in registry
        if key not in used
    ]
    return problems


def evidence_problems(
    key: str,
    node_ids: Iterable[str],
    tool_markers: Iterable[str],
    evidence: Iterable[str],
    repo: Path = REPO,
) -> list[str]:
    """Whether ``node_ids`` name tests that exist, each of whose code runs the tool (one of
    ``tool_markers``: its name in a string or its console-script module imported; empty = no tool
    check), and which together spell every ``evidence`` string (an option, ``name:=``, a word)."""
    problems: list[str] = []
    spelled: set[str] = set()
    node_ids, markers, evidence = list(node_ids), list(tool_markers), list(evidence)
    for node_id in node_ids:
        path, *parts = node_id.split("::")
        where = f"'{key}' -> {node_id}"
        if not (repo / path).is_file():
            problems.append(f"{where}: no such test file")
            continue
        tree = ast.parse((repo / path).read_text())
        func = find_test(tree, parts)
        if func is None or not parts or not parts[-1].startswith("test"):
            problems.append(f"{where}: no such test (renamed or removed?)")
            continue
        nodes = code_of_test(tree, func)
        strings = strings_in(nodes)
        names = {n.id for node in nodes for n in ast.walk(node) if isinstance(n, ast.Name)}
        names |= {n.attr for node in nodes for n in ast.walk(node) if isinstance(n, ast.Attribute)}
        if (
            markers
            and not any(m in s for m in markers for s in strings)
            and not set(markers) & modules_imported(tree)
        ):
            problems.append(
                f"{where}: the test never runs {markers[0]} (no string naming it, no "
                f"import of {' or '.join(markers[1:]) or 'its module'})"
            )
        spelled |= {w for w in evidence if w in names or not evidence_missing(strings, w)}
    if not problems:
        problems += [
            f"'{key}' -> {', '.join(node_ids)}: no named test's code spells {w!r}"
            for w in evidence
            if w not in spelled
        ]
    return problems


class ToolHelp:
    """The ``--help`` text of the project's console scripts, run in this process and cached."""

    def __init__(self, scripts: Mapping[str, str]) -> None:
        self.scripts = dict(scripts)
        self._cache: dict[tuple[str, ...], str] = {}

    def text(self, tool: str, *words: str) -> str:
        key = (tool, *words)
        if key not in self._cache:
            code, out = run_entry_point(self.scripts[tool], [*words, "--help"])
            if code != 0:
                raise AssertionError(
                    f"`{tool} {' '.join(words)} --help` exits {code}:\n{out[-2000:]}"
                )
            self._cache[key] = out
        return self._cache[key]

    def subcommands(self) -> dict[str, frozenset[str]]:
        """Tool -> its subcommand names, for the argparse tools that have some."""
        found = {}
        for tool in self.scripts:
            if not self.is_ros_node(tool):
                subs = subcommands_in_help(self.text(tool))
                if subs:
                    found[tool] = subs
        return found

    def is_ros_node(self, tool: str) -> bool:
        """ROS nodes take ``--ros-args``, not an argparse command line."""
        return self.scripts[tool].startswith("edgemoe_ros.ros.")


def unknown_options(
    cmd: ReadmeCommand, helps: ToolHelp, subcommands: Mapping[str, frozenset[str]]
) -> list[str]:
    """Options of a project argparse tool that its (sub)command's ``--help`` does not list."""
    words = identity_words(cmd, subcommands)
    known = options_in_help(helps.text(cmd.tool))
    if len(words) > 1:
        known |= options_in_help(helps.text(cmd.tool, *words[1:]))
    return [
        f"{cmd.where()}: {' '.join(words)} has no option {opt} (not in its --help)"
        for opt in options_of(cmd)
        if opt not in known
    ]
