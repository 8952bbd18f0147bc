#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Add ``SPDX-License-Identifier: Apache-2.0`` to every source file that lacks it.

    python3 scripts/add_spdx.py            # stamp the repository's files (idempotent)
    python3 scripts/add_spdx.py --check    # list files without it; exit 1 if any
    python3 scripts/add_spdx.py FILE ...   # only these files

Files: Python, C++ (.cpp/.cc/.h/.hpp), Tcl and launch XML (``launch/*.xml``), as git lists them
(tracked, plus untracked files that are not ignored), so virtual environments and build trees are
never touched. The line goes where the language allows a comment first: after a ``#!`` line and
a PEP 263 coding line in Python and Tcl, after ``<?...?>`` declarations in XML, at the top of C++.
A file that already names a licence in an SPDX line within its first lines is left alone.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

LICENSE_ID = "Apache-2.0"
TAG = "SPDX-License-Identifier:"
#: A header this far down is still "at the top" (after shebang, coding line, XML declaration).
HEADER_LINES = 5
#: Suffix -> comment template for the line.
COMMENTS: dict[str, str] = {
    ".py": "# {}",
    ".tcl": "# {}",
    ".cpp": "// {}",
    ".cc": "// {}",
    ".h": "// {}",
    ".hpp": "// {}",
    ".xml": "<!-- {} -->",
}
#: XML is stamped only in these folders (launch files); package.xml carries <license> instead.
XML_DIRS = ("launch",)
_CODING = re.compile(r"^[ \t\f]*#.*?coding[:=]")


def wants_header(path: Path) -> bool:
    """True for the file kinds this script stamps (``path`` relative to the repository)."""
    if path.suffix not in COMMENTS:
        return False
    return path.suffix != ".xml" or (len(path.parts) > 1 and path.parts[0] in XML_DIRS)


#: An SPDX line in a comment of any of the languages (text that merely mentions it does not count).
_SPDX_LINE = re.compile(r"^\s*(#|//|<!--)\s*" + re.escape(TAG) + r"\s*\S")


def has_header(text: str) -> bool:
    return any(_SPDX_LINE.match(line) for line in text.splitlines()[:HEADER_LINES])


def _insert_at(lines: list[str], suffix: str) -> int:
    """Index of the first line a comment may take in a file of this kind."""
    i = 0
    if suffix in (".py", ".tcl"):
        if lines and lines[0].startswith("#!"):
            i = 1
        if suffix == ".py" and i < len(lines) and i < 2 and _CODING.match(lines[i]):
            i += 1
    elif suffix == ".xml":
        while i < len(lines) and lines[i].lstrip().startswith("<?"):
            while i < len(lines) and "?>" not in lines[i]:
                i += 1  # a declaration spread over several lines
            i += 1
    return i


def with_header(text: str, suffix: str) -> str:
    """``text`` with the SPDX line added (unchanged if it has one)."""
    if has_header(text):
        return text
    newline = "\r\n" if "\r\n" in text else "\n"
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith(("\n", "\r")):
        lines[-1] += newline
    i = _insert_at(lines, suffix)
    lines.insert(i, COMMENTS[suffix].format(f"{TAG} {LICENSE_ID}") + newline)
    return "".join(lines)


def repository_files(root: Path) -> list[Path]:
    """Files git knows of (tracked, or untracked and not ignored), relative to ``root``."""
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, text=True, check=True).stdout
    return sorted({Path(p) for p in out.splitlines() if (root / p).is_file()})


def _read(path: Path) -> str:
    """The file's text with its line endings as they are (CRLF files stay CRLF)."""
    with open(path, encoding="utf-8", newline="") as fh:
        return fh.read()


def missing(root: Path, files: list[Path]) -> list[Path]:
    return [f for f in files if wants_header(f) and not has_header(_read(root / f))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("files", nargs="*", type=Path, help="files (default: the whole repository)")
    ap.add_argument("--check", action="store_true", help="only list files without the line")
    ap.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1],
                    help="repository root (default: this script's repository)")
    args = ap.parse_args(argv)
    root = args.root.resolve()
    files = [f.resolve().relative_to(root) for f in args.files] or repository_files(root)
    todo = missing(root, files)
    for rel in todo:
        if args.check:
            print(f"missing SPDX line: {rel}")
            continue
        path = root / rel
        path.write_text(with_header(_read(path), rel.suffix), encoding="utf-8", newline="")
        print(f"added SPDX line: {rel}")
    return 1 if args.check and todo else 0


if __name__ == "__main__":
    sys.exit(main())
