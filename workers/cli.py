"""The ``surgical`` command: the service's commands (``app.cli``), the remote commands
(``app.cli_client.remote_app``, merged in as top-level commands) and the ones that need torch
(``worker``, ``groups``, ``data``, ``run``), which call library functions directly. Torch,
``selector`` and Optuna are imported inside those commands only, so ``surgical serve``,
``surgical --help`` and the client commands stay light (tests/cli/test_local_commands.py)."""

from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from app.cli import app as cli
from app.cli_client import remote_app

cli.add_typer(remote_app)  # no name: submit, status, ... are top-level commands
data_cli = typer.Typer(help="Built-in data and source models.", no_args_is_help=True)
cli.add_typer(data_cli, name="data")


@cli.command()
def run(
    port: Annotated[int, typer.Option(help="API port.")] = 8000,
    dashboard_port: Annotated[int, typer.Option(help="Dashboard port.")] = 8080,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes (default: one per core or GPU).")] = None,
    demo: Annotated[bool, typer.Option(help="Submit the built-in demo job and show its leaderboard.")] = True,
    demo_spec: Annotated[Path | None, typer.Option(
        envvar="SURGICAL_DEMO_SPEC", help="Job spec (.json/.yaml) to run as the demo instead of the built-in one.",
    )] = None,
    exit_after_demo: Annotated[bool, typer.Option(help="Stop once the demo job has finished.")] = False,
) -> None:
    """Run the whole product locally: API, workers, dashboard, and a demo job (Ctrl-C stops all)."""
    from workers.embedded import run_embedded

    raise typer.Exit(run_embedded(port=port, dashboard_port=dashboard_port, workers=workers,
                                  demo=demo, exit_after_demo=exit_after_demo, demo_spec=demo_spec))


@cli.command()
def dashboard(
    host: Annotated[str, typer.Option(help="Interface; keep loopback unless --read-only behind a proxy.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8080,
    read_only: Annotated[bool, typer.Option("--read-only", help="Refuse every mutating request.")] = False,
) -> None:
    """Serve the Optuna dashboard on the jobs' studies and artifacts (SIGTERM/Ctrl-C stop it)."""
    from app.dashboard import make_dashboard_server
    from app.settings import Settings

    try:
        server = make_dashboard_server(Settings(), host, port, readonly=read_only)
    except OSError as error:
        typer.secho(f"error: cannot serve the dashboard on {host}:{port}: {error.strerror or error}",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(1) from None
    typer.echo(f"dashboard on http://{host}:{port}/dashboard{' (read-only)' if read_only else ''}")

    def stop(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # leaves serve_forever below; the socket is closed in finally

    signal.signal(signal.SIGTERM, stop)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


@cli.command()
def worker(
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: CUDA when present)")] = None,
    drain: Annotated[bool, typer.Option(help="Exit once no job has work left.")] = False,
    log_level: Annotated[str, typer.Option(help="Logging level.")] = "INFO",
) -> None:
    """Claim jobs and run their trials until stopped (SIGTERM: after the current trial)."""
    import optuna

    from app.settings import Settings
    from workers.loop import build_context, run_worker

    level = log_level.upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(logging.getLevelNamesMapping().get(level, logging.INFO))
    ctx = build_context(Settings(), device=device)
    run_worker(ctx, drain=drain)


def _selector_errors_exit_2(error: Exception) -> NoReturn:
    """A SelectorError (bad model reference, unknown shift) as one line, status 2 (usage)."""
    typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


@cli.command()
def groups(
    model: Annotated[str, typer.Argument(help="torchvision name (resnet50), cifar_resnet, a file, or pkg.mod:fn")],
    granularity: Annotated[str, typer.Option(help="stage or block")] = "stage",
) -> None:
    """Print a model's layer groups as a table."""
    from selector import SelectorError
    from selector.io.models_io import inspection_model
    from selector.layers.groups import describe_groups

    try:
        typer.echo(describe_groups(inspection_model(model), granularity, name=model))
    except SelectorError as error:
        _selector_errors_exit_2(error)


@data_cli.command("prepare")
def data_prepare(
    data_dir: Annotated[Path | None, typer.Option(help="Cache directory (default: $SURGICAL_DATA_DIR or ~/.cache/surgical).")] = None,
    model: Annotated[list[str] | None, typer.Option(help="Only this source model (repeatable; default: all).")] = None,
) -> None:
    """Build and cache every built-in source model ahead of time."""
    from selector import SelectorError
    from selector.builtin.cli import prepare_sources

    try:
        prepare_sources(model, data_dir)
    except SelectorError as error:
        _selector_errors_exit_2(error)


@data_cli.command("grid")
def data_grid(
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("shifts.png"),
    shift: Annotated[list[str] | None, typer.Option(help="Only this shift (repeatable; default: all).")] = None,
    severity: Annotated[int | None, typer.Option(min=1, max=5, help="Force this level (default: each shift's calibrated one).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the examples shown.")] = 0,
) -> None:
    """Save a grid of example images for every built-in shift."""
    from selector import SelectorError
    from selector.builtin.cli import write_shift_grid

    try:
        write_shift_grid(out, shifts=shift, severity=severity, seed=seed)
    except (SelectorError, ValueError) as error:
        _selector_errors_exit_2(error)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
