"""How both commands end on an error (cli/errors.py): one line ``<command>: <ExceptionType>: <message>`` and exit
status 1, what a CLIError says as it is, a worker's own last line, tracebacks on request by flag or environment (and
the environment restored), interrupts as status 130."""

from __future__ import annotations

import os

import pytest

from lightning_vae.cli.args import CLIError
from lightning_vae.cli.errors import DEBUG_ENV, DEBUG_FLAG, debug_requested, one_line, run_command

HINT = f"(run again with {DEBUG_FLAG} or {DEBUG_ENV}=1 for the traceback)"


@pytest.mark.parametrize(("value", "expected"), [("1", True), (" Yes ", True), ("on", True), ("0", False), ("", False)])
def test_tracebacks_are_asked_for_by_the_flag_or_the_environment(value: str, expected: bool, monkeypatch) -> None:
    monkeypatch.setenv(DEBUG_ENV, value)
    assert debug_requested(["fit"]) is expected
    assert debug_requested(["fit", "--debug"]) is True
    monkeypatch.delenv(DEBUG_ENV)
    assert debug_requested() is False


def test_one_line_names_the_command_the_type_and_the_message() -> None:
    error = ValueError("'x.ckpt' is corrupt:\n   member 'data/0'\n\tfails its CRC  ")
    assert one_line("lightning-vae test", error) == (
        f"lightning-vae test: ValueError: 'x.ckpt' is corrupt: member 'data/0' fails its CRC {HINT}"
    )
    assert one_line("lightning-vae-hydra", KeyError()) == f"lightning-vae-hydra: KeyError {HINT}"  # no message


def test_a_cli_error_says_what_to_pass_without_a_type_or_a_hint() -> None:
    assert one_line("lightning-vae test", CLIError("no model. Pass --ckpt_path")) == (
        "lightning-vae test: no model. Pass --ckpt_path"
    )
    own = CLIError("lightning-vae fit: no data module was given")  # already names the command
    assert one_line("lightning-vae fit", own) == "lightning-vae fit: no data module was given"


def test_a_worker_error_is_reported_by_its_last_line() -> None:
    worker = type("ProcessRaisedException", (Exception,), {})(
        "\n\n-- Process 1 terminated with the following error:\nTraceback (most recent call last):\n"
        '  File "x.py", line 3, in f\nValueError: the worker\'s own message\n'
    )
    assert one_line("lightning-vae fit", worker) == (
        f"lightning-vae fit: ProcessRaisedException: ValueError: the worker's own message {HINT}"
    )


def test_run_command_returns_or_exits_with_one_line(monkeypatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    seen = []
    assert run_command("lightning-vae", lambda args: seen.append(args) or 7, ["fit", "--x=1"]) == 7
    assert seen == [["fit", "--x=1"]]

    def fail(args: list[str]) -> None:
        raise RuntimeError("boom")

    with pytest.raises(SystemExit) as info:
        run_command("lightning-vae", fail, ["test", "--ckpt_path=x"])
    assert info.value.code == f"lightning-vae test: RuntimeError: boom {HINT}"  # a message: exit status 1
    with pytest.raises(SystemExit) as info:
        run_command("lightning-vae", fail, ["--help"])  # no subcommand to name
    assert str(info.value.code).startswith("lightning-vae: RuntimeError: boom")
    with pytest.raises(SystemExit) as info:
        run_command("lightning-vae-hydra", fail, ["experiment=x"])  # the Hydra command names no subcommand
    assert str(info.value.code).startswith("lightning-vae-hydra: RuntimeError")


def test_usage_errors_pass_and_interrupts_exit_130(monkeypatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)

    def usage(args: list[str]) -> None:
        raise SystemExit(2)

    def interrupted(args: list[str]) -> None:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as info:
        run_command("lightning-vae", usage, [])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        run_command("lightning-vae", interrupted, ["fit"])
    assert info.value.code == 130


def test_debug_lets_the_error_through_and_restores_the_environment(monkeypatch) -> None:
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    seen = []

    def fail(args: list[str]) -> None:
        seen.append((list(args), os.environ.get(DEBUG_ENV)))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_command("lightning-vae", fail, ["fit", "--debug", "--x=1"])
    assert seen == [(["fit", "--x=1"], "1")]  # the flag removed; nested reporting sees the environment set
    assert DEBUG_ENV not in os.environ  # and it is gone again
    monkeypatch.setenv(DEBUG_ENV, "true")
    with pytest.raises(KeyboardInterrupt):
        run_command("lightning-vae", lambda args: (_ for _ in ()).throw(KeyboardInterrupt()), [])
    assert os.environ[DEBUG_ENV] == "true"  # a value set before is put back
