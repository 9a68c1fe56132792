"""README.md is executed: every ```bash and ```python block runs, so a README that drifts from the code fails.

How it works (the conventions for anyone writing README sections; also in the README's own markers):

- **Which blocks.** Fences whose info string is exactly ``bash`` or ``python``, also indented ones (in a list).
  Other fences (``text``, ``yaml``, ...) do not run. Each block is one test, named ``<kind>-L<line>-<section>``.
- **Skipping.** ``<!-- readme-test: skip (reason) -->`` on the line(s) just before the fence (blank lines between
  are allowed) skips that block with the reason, reported as a pytest skip; a marker without a reason is an error.
- **Setup.** ``<!-- readme-test: setup`` ... ``-->`` just before a python block holds code that runs first, in the
  same namespace: names the reader is meant to supply (``x``, ``dm``).
- **One folder, one namespace.** All blocks run in one temporary folder in which ``configs`` links to the
  repository's configs; python blocks share one namespace in README order (an earlier block's ``vae`` is there).
- **Sizes.** In python blocks ``lightning.pytorch.Trainer`` is a subclass that sets ``max_epochs`` to 1, turns off
  the sanity check and caps ``max_steps`` at 2 and ``limit_{train,val,test,predict}_batches`` at 2/1/1/1 (one
  epoch of two batches, then one validation batch). ``lightning-vae fit|validate|test|predict`` commands get
  ``--trainer.max_steps=2``, the batch limits, no sanity check and a small data set appended (``n_train``/``n_val``
  for shapes, ``train_subset``/``val_size`` for MNIST, batches of 32; nothing for ``--print_config``, no data for
  another data class); ``lightning-vae-hydra`` the same as Hydra overrides (``++trainer.limit_...``) put before
  the README's arguments, plus ``hydra/job_logging=none hydra/hydra_logging=none``.
- **In one process.** ``lightning-vae ...`` and ``lightning-vae-hydra ...`` run in the test's own process
  (``lightning_vae.cli.main``, ``lightning_vae.cli.hydra.main``; the same code as the console scripts, whose
  installation the packaging and CLI tests check), which saves starting Python and importing torch per command;
  a non-zero ``SystemExit`` fails the block. Any other command runs as a subprocess.
- **Placeholders.** ``/path/to/mnist`` and ``path/to/mnist`` become the real MNIST folder (also exported as
  ``LIGHTNING_VAE_MNIST_DIR``); ``path/to/last.ckpt`` and ``path/to/checkpoint.ckpt`` a checkpoint of
  ``configs/cli/shapes.yaml`` trained (tiny) before the blocks run.
- **Install lines** (``python3 -m venv``, ``. .venv/bin/activate``, ``pip install``) and the test command
  ``pytest -m "not slow"`` are not run: the test checks that ``.ci/run`` runs the same commands (it is what
  runs them in CI). Every other shell command runs and must exit 0.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.cli import SHAPES_TWO_STEPS
from support.paths import MNIST_DIR, ROOT, require_mnist

README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^`\s]*)\s*$")
SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*(?:\((?P<reason>[^)]*)\))?\s*-->")
SETUP = re.compile(r"<!--\s*readme-test:\s*setup\s*\n(?P<code>.*?)-->\s*$", re.S)
CAPS = {"limit_train_batches": 2, "limit_val_batches": 1, "limit_test_batches": 1, "limit_predict_batches": 1}


@dataclass
class Block:
    kind: str
    line: int  # line of the opening fence, 1-based
    section: str
    code: str
    skip: str | None = None
    setup: str = ""
    errors: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-")[:40]
        return f"{self.kind}-L{self.line}-{slug}"


def extract(text: str) -> list[Block]:
    """Every bash/python block of ``text`` with its section, skip reason and hidden setup."""
    lines = text.splitlines()
    blocks: list[Block] = []
    section, i = "top", 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#") and not line.startswith("#!"):
            section = line.lstrip("#").strip()
        match = FENCE.match(line)
        if not match or not match.group("info"):
            i += 1
            continue
        indent, info, start = match.group("indent"), match.group("info"), i
        body = []
        i += 1
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        i += 1
        if info not in ("bash", "python"):
            continue
        block = Block(info, start + 1, section, "\n".join(body) + "\n")
        # the markers: HTML comments directly above the fence (blank lines allowed)
        above = start - 1
        while above >= 0 and not lines[above].strip():
            above -= 1
        end = above
        if above >= 0 and lines[above].strip().endswith("-->"):
            while above >= 0 and "<!--" not in lines[above]:
                above -= 1
            comment = "\n".join(x.strip() if j == above else x for j, x in enumerate(lines[above : end + 1], above))
            skip, setup = SKIP.search(comment), SETUP.search(comment)
            if skip:
                block.skip = (skip.group("reason") or "").strip()
                if not block.skip:
                    block.errors.append("a skip marker needs a reason: <!-- readme-test: skip (why) -->")
            elif setup:
                block.setup = setup.group("code")
            elif "readme-test" in comment:
                block.errors.append(f"unknown readme-test marker: {comment.strip()!r}")
        blocks.append(block)
    return blocks


BLOCKS = extract(README.read_text())


def test_the_extractor_finds_the_blocks_and_markers() -> None:
    sample = """# A
```bash
echo one
```
<!-- readme-test: skip (needs a GPU) -->

```python
print(2)
```
- item

  <!-- readme-test: setup
  x = 1
  -->
  ```python
  print(x)
  ```
```text
not run
```
<!-- readme-test: skip -->
```bash
true
```
"""
    found = extract(sample)
    assert [(b.kind, b.line) for b in found] == [("bash", 2), ("python", 7), ("python", 15), ("bash", 22)]
    assert found[1].skip == "needs a GPU" and found[2].setup.strip() == "x = 1" and found[2].code == "print(x)\n"
    assert found[3].errors and not found[0].errors


def test_the_readme_has_blocks_of_both_kinds() -> None:
    kinds = {b.kind for b in BLOCKS}
    assert kinds == {"bash", "python"} and len(BLOCKS) >= 10
    assert not [b.name for b in BLOCKS if b.errors], [b.errors for b in BLOCKS if b.errors]


def test_the_hydra_table_lists_every_shipped_option() -> None:
    # A reader picks experiments and group options from the README's table: it names each one that ships.
    text = README.read_text()
    table = text[text.index("| group | options |") :]
    table = table[: table.index("\n\n")]
    rows = {line.split("|")[1].strip().strip("`"): line.split("|")[2] for line in table.splitlines()[2:]}
    configs = ROOT / "lightning_vae" / "configs"
    for group in ("experiment", "data", "trainer", "callbacks", "logger", "debug", "hparams_search"):
        shipped = sorted(p.stem for p in (configs / group).glob("*.yaml"))
        listed = set(re.findall(r"`([\w/]+)`", rows[f"{group}/"]))
        assert set(shipped) <= listed, (group, sorted(set(shipped) - listed))


# ---------------------------------------------------------------------------------------- shared state
@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("readme")
    (folder / "configs").symlink_to(ROOT / "configs", target_is_directory=True)
    return folder


@pytest.fixture(scope="module")
def checkpoint(workdir: Path) -> Path:
    """A tiny run of configs/cli/shapes.yaml: what `path/to/last.ckpt` stands for."""
    from lightning_vae.cli import build_cli

    here = os.getcwd()
    os.chdir(workdir)
    try:
        cli = build_cli(args=[*SHAPES_TWO_STEPS, "--trainer.default_root_dir=ckpt_run"])  # ckpt_run/checkpoints
    finally:
        os.chdir(here)
    path = Path(cli.trainer.checkpoint_callback.best_model_path)
    return path if path.is_absolute() else workdir / path


def _mnist() -> Path:
    return require_mnist("the README's MNIST examples")


def _substitute(code: str, checkpoint: Path) -> str:
    if "path/to/mnist" in code:
        mnist = str(_mnist())
        code = code.replace("/path/to/mnist", mnist).replace("path/to/mnist", mnist)
    for placeholder in ("path/to/last.ckpt", "path/to/checkpoint.ckpt"):
        code = code.replace(placeholder, str(checkpoint))
    return code


# ---------------------------------------------------------------------------------------- python blocks
def _capped_trainer() -> type:
    from lightning.pytorch import Trainer

    class CappedTrainer(Trainer):
        """The README's Trainer with a few batches per run (the README test's size override)."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["max_epochs"] = 1
            kwargs["num_sanity_val_steps"] = 0
            steps = kwargs.get("max_steps")
            if steps is not None and steps > 0:
                kwargs["max_steps"] = min(steps, 2)
            for name, cap in CAPS.items():
                given = kwargs.get(name)
                if given is None or isinstance(given, float) or given > cap:
                    kwargs[name] = cap
            super().__init__(*args, **kwargs)

    return CappedTrainer


@pytest.fixture(scope="module")
def namespace() -> dict[str, Any]:
    return {"__name__": "readme", "_done": set()}


PYTHON = [b for b in BLOCKS if b.kind == "python"]


def _run_python(block: Block, namespace: dict[str, Any], checkpoint: Path, workdir: Path) -> None:
    import lightning.pytorch

    original = lightning.pytorch.Trainer
    here = os.getcwd()
    lightning.pytorch.Trainer = _capped_trainer()  # type: ignore[misc]
    os.chdir(workdir)
    try:
        if block.setup:
            exec(compile(_substitute(block.setup, checkpoint), f"README.md:{block.line} (setup)", "exec"), namespace)
        exec(compile(_substitute(block.code, checkpoint), f"README.md:{block.line}", "exec"), namespace)
    finally:
        os.chdir(here)
        lightning.pytorch.Trainer = original  # type: ignore[misc]
    namespace["_done"].add(block.line)


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.name)
def test_python_block(
    block: Block, namespace: dict[str, Any], checkpoint: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if block.skip:
        pytest.skip(f"README.md:{block.line}: {block.skip}")
    monkeypatch.setenv("LIGHTNING_VAE_MNIST_DIR", str(MNIST_DIR))
    for earlier in PYTHON:  # blocks build on earlier ones: run those first when selected alone (-k)
        if earlier.line >= block.line:
            break
        if not earlier.skip and earlier.line not in namespace["_done"]:
            _run_python(earlier, namespace, checkpoint, workdir)
    _run_python(block, namespace, checkpoint, workdir)


# ---------------------------------------------------------------------------------------- shell blocks
def _ci_commands() -> list[list[str]]:
    commands = []
    for line in CI_RUN.read_text().splitlines():
        tokens = shlex.split(line, comments=True)
        if tokens:
            commands.append(tokens)
    return commands


def _normal(tokens: list[str]) -> list[str]:
    """A command as compared with .ci/run: quiet flags dropped, the CI venv's name for the venv."""
    return [t.replace(".ci-venv", ".venv") for t in tokens if t != "-q"]


def _is_setup(tokens: list[str]) -> bool:
    return (
        tokens[:3] == ["python3", "-m", "venv"]
        or tokens[:1] in (["."], ["source"])
        or tokens[:2] == ["pip", "install"]
        or tokens[:1] == ["pytest"]
    )


def _commands(code: str) -> list[list[str]]:
    """The commands of a shell block: continuation lines joined, comments dropped, split at `&&`."""
    joined = re.sub(r"\\\n", " ", code)
    commands = []
    for line in joined.splitlines():
        tokens = shlex.split(line, comments=True)
        current: list[str] = []
        for token in tokens:
            if token == "&&":
                commands.append(current)
                current = []
            else:
                current.append(token)
        if current:
            commands.append(current)
    return commands


#: Options of a Hydra command line that take a value.
HYDRA_VALUE_FLAGS = {
    "--cfg",
    "-c",
    "--config-dir",
    "-cd",
    "--config-name",
    "-cn",
    "--config-path",
    "-cp",
    "--package",
    "-p",
}


def _sized(tokens: list[str]) -> list[str]:
    """A command with the README test's size overrides appended."""
    mnist = any("mnist" in t for t in tokens)
    other_data = any(t.startswith(("--data.class_path", "--data=")) or t == "--data" for t in tokens)
    if tokens[0] == "lightning-vae" and len(tokens) > 1 and tokens[1] in ("fit", "validate", "test", "predict"):
        if "--print_config" in tokens:
            return tokens
        data = (
            []
            if other_data
            else ["--data.init_args.train_subset=64", "--data.init_args.val_size=32"]
            if mnist
            else ["--data.init_args.n_train=64", "--data.init_args.n_val=32"]
        )
        data += [] if other_data else ["--data.init_args.batch_size=32"]
        limits = [f"--trainer.{k}={v}" for k, v in CAPS.items()]
        quiet = ["--trainer.enable_progress_bar=false", "--trainer.num_sanity_val_steps=0"]
        return [*tokens, "--trainer.max_steps=2", *limits, *quiet, *data]
    if tokens[0] == "lightning-vae-hydra":
        data = ["data.train_subset=64", "data.val_size=32"] if mnist else ["data.n_train=64", "data.n_val=32"]
        limits = [f"++trainer.{k}={v}" for k, v in CAPS.items()]
        quiet = ["trainer.enable_progress_bar=false", "++trainer.num_sanity_val_steps=0"]
        quiet += ["hydra/job_logging=none", "hydra/hydra_logging=none"]
        # Hydra takes its overrides as one run of arguments: the README's options (`-m`, `--cfg job`) go first
        flags: list[str] = []
        overrides: list[str] = []
        rest = iter(tokens[1:])
        for token in rest:
            if token.startswith("-"):
                flags.append(token)
                if token in HYDRA_VALUE_FLAGS:
                    flags.append(next(rest))
            else:
                overrides.append(token)
        mine = ["trainer.max_steps=2", *limits, *data, "data.batch_size=32", *quiet]
        return [tokens[0], *flags, *mine, *overrides]
    return tokens


def _run(command: list[str], workdir: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    """Run one command in ``workdir``: the package's commands in this process, others as a subprocess."""
    if command[0] not in ("lightning-vae", "lightning-vae-hydra"):
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=900)
        return result.returncode, result.stderr[-3000:]
    from lightning_vae import cli
    from lightning_vae.cli import hydra

    monkeypatch.chdir(workdir)
    code: Any = 0
    try:
        if command[0] == "lightning-vae":
            cli.main(command[1:])
        else:
            monkeypatch.setattr(sys, "argv", command)
            hydra.main()
    except SystemExit as exit_info:
        code = exit_info.code
    return (0, "") if code in (0, None) else (1, str(code))


SHELL = [b for b in BLOCKS if b.kind == "bash"]


@pytest.mark.parametrize("block", SHELL, ids=lambda b: b.name)
def test_shell_block(block: Block, checkpoint: Path, workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.skip:
        pytest.skip(f"README.md:{block.line}: {block.skip}")
    ci = [_normal(c) for c in _ci_commands()]
    for name in ("LIGHTNING_VAE_CONFIG_DIR", "LIGHTNING_VAE_LOG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LIGHTNING_VAE_MNIST_DIR", str(MNIST_DIR))
    for tokens in _commands(_substitute(block.code, checkpoint)):
        if _is_setup(tokens):
            assert _normal(tokens) in ci, f"README.md:{block.line}: `{shlex.join(tokens)}` is not what .ci/run runs"
            continue
        assert tokens[0] != "tensorboard", f"README.md:{block.line}: a server; mark the block skip"
        code, error = _run(_sized(tokens), workdir, monkeypatch)
        assert code == 0, f"README.md:{block.line}: `{shlex.join(tokens)}` failed:\n{error}"
