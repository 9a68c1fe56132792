"""mkdocs hook: pages take sections of README.md and benchmarks/RESULTS.md, with their links made the site's own.

A line ``--8<-- "README.md:walkthrough"`` in a page is replaced by the lines of README.md between
``<!-- --8<-- [start:walkthrough] -->`` and ``<!-- --8<-- [end:walkthrough] -->`` (``--8<-- "FILE"``: the whole
file), so the site shows the README's text and keeps no copy of it. Their links are relative to the repository root
(``docs/schedules.png``, ``benchmarks/RESULTS.md``, ``benchmarks/figures/...``); on a page in ``docs/`` they are
rewritten to the site's own files, and the figures of ``benchmarks/figures`` are added to the site. A missing file or
section stops the build.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent.parent
_LINKS = [
    (re.compile(r"\]\((?:\.\./)?docs/"), "]("),
    (re.compile(r"\]\(benchmarks/RESULTS\.md(#[^)]*)?\)"), "](results.md)"),
    (re.compile(r"\]\(benchmarks/figures/"), "](figures/"),
    (re.compile(r"\]\(benchmarks/(?P<name>[\w-]+)\.png\)"), r"](figures/\g<name>.png)"),
]


def on_files(files: Files, config: Any) -> Files:
    benchmarks = ROOT / "benchmarks"
    for figure in sorted(benchmarks.joinpath("figures").glob("*.png")) + sorted(benchmarks.glob("*.png")):
        files.append(File.generated(config, f"figures/{figure.name}", abs_src_path=str(figure)))
    return files


_INCLUDE = re.compile(r'^--8<-- "(?P<file>[^":]+)(?::(?P<section>[\w-]+))?"$', re.MULTILINE)


def _section(match: re.Match) -> str:
    path = ROOT / match["file"]
    if not path.is_file():
        raise ValueError(f"docs: {match[0]!r} names no file {path}")
    text = path.read_text()
    name = match["section"]
    if name is None:
        return text
    start, end = f"<!-- --8<-- [start:{name}] -->", f"<!-- --8<-- [end:{name}] -->"
    if start not in text or end not in text:
        raise ValueError(f"docs: {match[0]!r}: {path.name} has no section {name!r} ({start} ... {end})")
    return text[text.index(start) + len(start) : text.index(end)].strip("\n") + "\n"


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    markdown = _INCLUDE.sub(_section, markdown)
    for pattern, replacement in _LINKS:
        markdown = pattern.sub(replacement, markdown)
    return markdown
