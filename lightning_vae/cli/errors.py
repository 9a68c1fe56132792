"""How both commands end on an error: one line naming the problem, a non-zero exit, the traceback on request.

``lightning-vae`` and ``lightning-vae-hydra`` run through :func:`run_command`. An exception that ends the command
(a refused checkpoint or config, a corrupt file, a ``NonFiniteError``, a wrong argument) is printed as one line,
``<command>: <ExceptionType>: <message>``, and the process exits with status 1. ``--debug`` anywhere on the
command line (it is removed before the command parses it) or ``LIGHTNING_VAE_DEBUG=1`` in the environment lets the
exception through with its traceback instead.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from typing import Any

#: Environment variable that shows tracebacks (any of 1, true, yes, on).
DEBUG_ENV = "LIGHTNING_VAE_DEBUG"
#: The flag that does the same on the command line.
DEBUG_FLAG = "--debug"
_HINT = f"(run again with {DEBUG_FLAG} or {DEBUG_ENV}=1 for the traceback)"


def debug_requested(args: Sequence[str] = ()) -> bool:
    """Whether tracebacks are asked for: ``--debug`` in ``args`` or ``LIGHTNING_VAE_DEBUG`` set to a true value.

    Example::

        >>> debug_requested(["fit", "--debug"])
        True
    """
    return DEBUG_FLAG in args or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def one_line(command: str, error: BaseException) -> str:
    r"""``<command>: <ExceptionType>: <message>`` on one line, with the hint that shows the traceback.

    An error from a worker process (``ddp_spawn``) is reported by its last line, the worker's own exception.

    Example::

        >>> print(one_line("lightning-vae fit", ValueError("'x.ckpt' is corrupt:\n  member 'data/0' fails its CRC")))
        ... # doctest: +ELLIPSIS
        lightning-vae fit: ValueError: 'x.ckpt' is corrupt: member 'data/0' fails its CRC (run again with --debug ...)
    """
    from lightning_vae.cli.args import CLIError

    message = str(error)
    if type(error).__name__ == "ProcessRaisedException":  # torch.multiprocessing: the worker's traceback as text
        lines = [line for line in message.splitlines() if line.strip()]
        message = lines[-1] if lines else message
    message = re.sub(r"\s*\n\s*", " ", message).strip()
    if isinstance(error, CLIError):  # says what to pass: no type name, no hint
        return message if message.startswith(command.split()[0]) else f"{command}: {message}"
    kind = type(error).__name__
    return f"{command}: {kind}: {message} {_HINT}" if message else f"{command}: {kind} {_HINT}"


def run_command(command: str, run: Callable[[list[str]], Any], args: Sequence[str]) -> Any:
    """Run ``run(args)`` (``--debug`` removed) as a command: an exception becomes one line and exit status 1.

    ``SystemExit`` (help, argument errors already reported) passes through; ``KeyboardInterrupt`` ends with status
    130. With :func:`debug_requested`, exceptions pass through with their tracebacks.
    """
    args = list(args)
    debug = debug_requested(args)
    args = [a for a in args if a != DEBUG_FLAG]
    previous = os.environ.get(DEBUG_ENV)
    if debug:
        os.environ[DEBUG_ENV] = "1"  # nested reporting (the export command's, Hydra's) lets errors through too
    try:
        return run(args)
    except Exception as error:  # noqa: BLE001 - every error ends the command the same way
        if debug:
            raise
        subcommand = args[0] if args and not args[0].startswith("-") and command == "lightning-vae" else None
        name = f"{command} {subcommand}" if subcommand else command
        raise SystemExit(one_line(name, error)) from None
    except KeyboardInterrupt:
        if debug:
            raise
        raise SystemExit(130) from None
    finally:
        if previous is None:
            os.environ.pop(DEBUG_ENV, None)
        else:
            os.environ[DEBUG_ENV] = previous


__all__ = ["DEBUG_ENV", "DEBUG_FLAG", "debug_requested", "one_line", "run_command"]
