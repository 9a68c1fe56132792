"""The API reference site (mkdocs.yml, docs/): every page exists, every README/RESULTS section a page takes exists,
and the API pages name public subpackages (CI runs `mkdocs build --strict` itself, which renders them)."""

from __future__ import annotations

import importlib
import re

import pytest
import yaml
from support.paths import ROOT

DOCS = ROOT / "docs"
INCLUDE = re.compile(r'^--8<-- "(?P<file>[^":]+)(?::(?P<section>[\w-]+))?"$', re.MULTILINE)


def _nav_pages(nav) -> list[str]:
    pages: list[str] = []
    for entry in nav:
        for value in entry.values():
            pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def _config() -> dict:
    # mkdocs.yml has no custom YAML tags, so a safe load reads it.
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())


def test_every_page_of_the_navigation_exists_and_every_page_is_in_it() -> None:
    pages = _nav_pages(_config()["nav"])
    assert {"index.md", "walkthrough.md", "architecture.md", "callbacks.md", "metrics.md", "reliability.md"} <= set(
        pages
    )
    for page in pages:
        assert (DOCS / page).is_file(), page
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk == set(pages)


@pytest.mark.parametrize("page", sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")))
def test_every_section_a_page_takes_exists(page: str) -> None:
    for match in INCLUDE.finditer((DOCS / page).read_text()):
        text = (ROOT / match["file"]).read_text()
        if match["section"]:
            name = match["section"]
            start, end = f"<!-- --8<-- [start:{name}] -->", f"<!-- --8<-- [end:{name}] -->"
            assert text.count(start) == 1 and text.count(end) == 1 and text.index(start) < text.index(end), name


def test_api_pages_name_public_objects_only() -> None:
    # The site must survive moves of internal modules: API pages name public subpackages and top-level names.
    for page in sorted((DOCS / "api").glob("*.md")):
        for target in re.findall(r"^::: ([\w.]+)$", page.read_text(), re.MULTILINE):
            parts = target.split(".")
            assert len(parts) == 2 and parts[0] == "lightning_vae", (page.name, target)
            module = importlib.import_module("lightning_vae")
            assert parts[1] in module.__all__ or importlib.import_module(target), target


def test_every_link_to_a_readme_heading_finds_its_page() -> None:
    # A README link such as [Any logger](#any-logger) lands on a site page that may not hold that heading; the hook
    # points it to the page that does, so every such link of every page must name a heading of the site.
    import sys

    sys.path.insert(0, str(DOCS))
    try:
        import hooks
    finally:
        sys.path.remove(str(DOCS))
    assert hooks.slugify("After training: samples, reconstructions, latents") == (
        "after-training-samples-reconstructions-latents"
    )
    anchors = hooks.anchors_by_page(DOCS)
    assert anchors["any-logger"] == "callbacks.md"
    for page in sorted(DOCS.rglob("*.md")):
        text = INCLUDE.sub(hooks._section, page.read_text())
        for anchor in re.findall(r"\]\(#([\w-]+)\)", text):
            assert anchor in anchors, (page.name, anchor)
        rewritten = hooks._page_links(text, page.relative_to(DOCS).as_posix(), anchors)
        assert "](#any-logger)" not in rewritten or page.name == "callbacks.md"
