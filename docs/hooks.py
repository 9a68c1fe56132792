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
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mkdocs.structure.files import Files

ROOT = Path(__file__).resolve().parent.parent
_LINKS = [
    (re.compile(r"\]\((?:\.\./)?docs/"), "]("),
    (re.compile(r"\]\(benchmarks/RESULTS\.md(#[^)]*)?\)"), "](results.md)"),
    (re.compile(r"\]\(benchmarks/figures/"), "](figures/"),
    (re.compile(r"\]\(benchmarks/(?P<name>[\w-]+)\.png\)"), r"](figures/\g<name>.png)"),
]


_ANCHORS: dict[str, str] = {}  # the site's headings and their pages, found once per build (on_files)


def on_files(files: Files, config: Any) -> Files:
    from mkdocs.structure.files import File  # mkdocs only here: the helpers above are tested without it

    _ANCHORS.clear()
    _ANCHORS.update(anchors_by_page(Path(config["docs_dir"])))
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


_HEADING = re.compile(r"^#{1,6} +(?P<title>.+?) *#*$", re.MULTILINE)
_ANCHOR_LINK = re.compile(r"\]\(#(?P<anchor>[\w-]+)\)")


def slugify(title: str) -> str:
    """The anchor Python-Markdown's ``toc`` gives a heading: lower case, word characters and hyphens, spaces as ``-``.

    Example::

        >>> slugify("After training: samples, reconstructions, latents")
        'after-training-samples-reconstructions-latents'
    """
    text = re.sub(r"[`*_]", "", title)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading: its text
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors_by_page(docs: Path) -> dict[str, str]:
    """Which page of the site holds each heading's anchor (the first page, in file order, for a repeated one)."""
    found: dict[str, str] = {}
    for page in sorted(docs.rglob("*.md")):
        text = _INCLUDE.sub(_section, page.read_text())
        for match in _HEADING.finditer(text):
            found.setdefault(slugify(match["title"]), page.relative_to(docs).as_posix())
    return found


def _page_links(markdown: str, page_path: str, anchors: dict[str, str]) -> str:
    """A README link to one of its own headings (``](#any-logger)``) that this page lacks points to the page that
    has it (``](callbacks.md#any-logger)``), relative to this page's folder."""
    own = {slugify(m["title"]) for m in _HEADING.finditer(markdown)}
    depth = page_path.count("/")

    def target(match: re.Match) -> str:
        anchor = match["anchor"]
        where = anchors.get(anchor)
        if anchor in own or where is None or where == page_path:
            return match[0]
        return f"]({'../' * depth}{where}#{anchor})"

    return _ANCHOR_LINK.sub(target, markdown)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    markdown = _INCLUDE.sub(_section, markdown)
    for pattern, replacement in _LINKS:
        markdown = pattern.sub(replacement, markdown)
    return _page_links(markdown, page.file.src_uri, _ANCHORS)
