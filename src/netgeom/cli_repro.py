"""`netgeom repro`: the command function (registered on the main app in netgeom.cli).

Also runnable on its own: `python -m netgeom.cli_repro [TARGETS...] [-j N] [--backend ...]`.
"""

from __future__ import annotations

import sys
from typing import Annotated, Optional

import typer

from netgeom.cli_common import OneLineErrorsCommand


def repro(
    targets: Annotated[Optional[list[str]], typer.Argument(help="Stages or dvc.yaml files, as for `dvc repro` (default: dvc.yaml).")] = None,
    jobs: Annotated[Optional[int], typer.Option("--jobs", "-j", help="Stages at a time (default: cores // execution.threads; ray: as the cluster allows).")] = None,
    backend: Annotated[str, typer.Option("--backend", help="local (child processes) or ray (tasks on RAY_ADDRESS).")] = "local",
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
):
    """Reproduce the pipeline like `dvc repro`, running independent stages in parallel."""
    from netgeom.errors import NetgeomError
    from netgeom.repro import repro as run_repro

    try:
        result = run_repro(targets or (), jobs=jobs, backend=backend, quiet=quiet)
    except NetgeomError as exc:
        typer.echo(f"netgeom: error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except KeyboardInterrupt:  # before the scheduler took over the signal: nothing ran yet
        typer.echo("netgeom: interrupted; nothing was run", err=True)
        raise typer.Exit(code=130) from None
    raise typer.Exit(code=result.exit_code)


app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
app.command(cls=OneLineErrorsCommand)(repro)

if __name__ == "__main__":
    sys.exit(app())
