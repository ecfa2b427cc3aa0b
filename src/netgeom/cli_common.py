"""What every `netgeom` command shares: option types, params set-up, one-line errors."""

from __future__ import annotations

import errno
import functools
import re
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

from netgeom import progress
from netgeom.errors import NetgeomError
from netgeom.layout import Layout
from netgeom.params import Params, load_params

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="Params file.")]
QuietOption = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]

CellWidth = Annotated[Optional[int], typer.Option("--width", help="Model width (default: model.width, else grid.widths[0]).")]
CellNoise = Annotated[Optional[float], typer.Option("--noise", help="Label-noise level (default: noise.label).")]
CellReplicate = Annotated[int, typer.Option("--replicate", min=0, max=2**31, help="Seed offset: the run uses seed + replicate.")]
TrackOption = Annotated[
    bool,
    typer.Option(
        "--track/--no-track",
        help="Log the run to MLflow now (dvc.yaml's stages pass --no-track: the report stage logs every training in one process).",
    ),
]


def make_cell(settings: Params, width: int | None, noise: float | None, replicate: int):
    """The cell a command works on: options given, else model.width (the grid's first width for a
    fixed-width family, whose model.width is null) and noise.label."""
    from netgeom.cell import Cell

    default_width = settings.model.width if settings.model.width is not None else settings.grid.widths[0]
    return Cell(default_width if width is None else width, settings.noise.label if noise is None else noise, replicate)


# Typer >= 0.28 carries its own copy of click; its exceptions live beside typer.BadParameter
# (click < 8.2 has no NoArgsIsHelpError: `()` then matches nothing).
click = sys.modules[typer.BadParameter.__module__]
NO_ARGS_IS_HELP = getattr(click, "NoArgsIsHelpError", ())


class _OneLineUsageErrors:
    """A mistyped, unknown or missing option or command is bad input like a bad params key: one
    line naming it and where the allowed values are listed, exit 2 (click draws a usage box)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except NO_ARGS_IS_HELP as exc:
            typer.echo(exc.ctx.get_help())
            sys.exit(2)
        except click.UsageError as exc:
            where = f" (`{exc.ctx.command_path} --help` lists what is allowed)" if exc.ctx else ""
            message = " ".join(exc.format_message().split())
            typer.echo(f"netgeom: error: {message}{where}", err=True)
            sys.exit(exc.exit_code)
        except click.ClickException as exc:
            typer.echo(f"netgeom: error: {' '.join(exc.format_message().split())}", err=True)
            sys.exit(exc.exit_code)
        except typer.Abort:
            typer.echo("netgeom: aborted", err=True)
            sys.exit(1)
        # Without standalone mode click hands back an Exit's code (or a command's return value).
        sys.exit(result if isinstance(result, int) else 0)


class OneLineErrorsGroup(_OneLineUsageErrors, TyperGroup):
    pass


class OneLineErrorsCommand(_OneLineUsageErrors, TyperCommand):
    pass


def fail(message: str) -> typer.Exit:
    typer.echo(f"netgeom: error: {message}", err=True)
    return typer.Exit(code=2)


# Out of disk space or quota: the writes are atomic, so what was there is intact and a rerun
# after freeing space picks up from it; a traceback would only hide that.
DISK_FULL = {errno.ENOSPC, errno.EDQUOT}


def guarded(command):
    """Report a NetgeomError, or a full disk, as one line and exit 2 (used on every command)."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except NetgeomError as exc:
            raise fail(str(exc)) from None
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                raise
            where = f" writing {exc.filename}" if exc.filename else ""
            raise fail(f"disk full{where} ({exc.strerror}); the last complete results are intact: free space and rerun") from None
        except (MemoryError, RuntimeError) as exc:
            if (asked := out_of_memory(exc)) is None:
                raise
            raise fail(
                f"out of memory{asked}: lower what sizes it (model.width, --points, a batch size) or free memory; "
                "the last complete results are intact"
            ) from None

    return wrapper


def out_of_memory(exc: BaseException) -> str | None:
    """' (asked for N GB)' (or '') when `exc` is an allocation failure (Python's MemoryError,
    torch's CPU allocator, CUDA's OutOfMemoryError); None for any other error. A width of 10^9
    fails inside torch.empty with a multi-line C++ message that says nothing about the setting."""
    text = str(exc)
    if not (isinstance(exc, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower()):
        return None
    if match := re.search(r"allocate (\d+) bytes", text):
        return f" (asked for {int(match.group(1)) / 1e9:.3g} GB)"
    if match := re.search(r"allocate ([\d.]+ [KMGT]iB)", text):
        return f" (asked for {match.group(1)})"
    return ""


def setup(params_path: Path, quiet: bool, torch: bool = True) -> tuple[Params, Layout]:
    """Validated params and the layout; quiet progress if asked; torch threads from params
    (`torch=False` for commands that run no torch code: they then never import it)."""
    progress.set_quiet(quiet)
    settings = load_params(params_path)
    if torch:
        use_torch(settings)
    return settings, Layout.here()


def use_torch(settings: Params) -> None:
    """Torch threads from params (call before any torch work of a command)."""
    import torch

    # torch.func's own internals trigger this deprecation notice; it is not ours to act on.
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    torch.set_num_threads(settings.execution.threads)

