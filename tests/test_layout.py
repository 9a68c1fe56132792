"""The layout the architecture document describes: two layers, tests that mirror the package."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "lightning_vae"

#: Packages of the model layer: none may import the training layer or the entry points.
MODEL_LAYER = ("models", "objective", "distributions", "functional", "metrics", "nets")


def _modules() -> list[Path]:
    return sorted(p for p in PACKAGE.rglob("*.py") if p.name not in ("__init__.py", "__main__.py"))


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    names |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return names


def test_the_model_layer_never_imports_the_training_layer() -> None:
    offenders = []
    for sub in MODEL_LAYER:
        for path in (PACKAGE / sub).rglob("*.py"):
            bad = [n for n in _imports(path) if n.startswith(("lightning_vae.training", "lightning_vae.cli"))]
            if bad:
                offenders.append(f"{path.relative_to(ROOT)}: {bad}")
    assert not offenders, offenders


def test_rendering_calls_no_model() -> None:
    for path in (PACKAGE / "viz").rglob("*.py"):
        text = path.read_text()
        assert ".inference(" not in text and ".generative(" not in text, path


def test_at_least_four_fifths_of_the_modules_have_a_mirrored_test_file() -> None:
    modules = _modules()
    mirrored = [p for p in modules if (ROOT / "tests" / p.relative_to(PACKAGE).parent / f"test_{p.stem}.py").is_file()]
    missing = sorted(str(p.relative_to(PACKAGE)) for p in modules if p not in mirrored)
    assert len(mirrored) >= 0.8 * len(modules), f"{len(mirrored)} of {len(modules)} mirrored; missing: {missing}"
