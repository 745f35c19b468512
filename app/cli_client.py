"""The CLI's remote commands, built on :class:`app.client.Client` alone.

``surgical submit|status|wait|result|trials|cancel|download|list|delete`` talk to a running service
(``--url`` / ``SURGICAL_URL``, ``--api-key`` / ``SURGICAL_API_KEY``; ``SURGICAL_RETRY_FOR``:
seconds to keep retrying a service that is down, default 30). Human output is a table
(and, on a terminal, a progress bar while waiting); ``--json`` prints the API's JSON for scripts.
Any error ends as one readable line on stderr and a non-zero exit status (1 for API errors, 2
for usage, 3 when a waited-for job failed or was cancelled, 4 on a wait timeout).
"""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import BaseModel

from app.client import DEFAULT_URL, Client, JobNotSucceededError, SurgicalError, WaitTimeoutError

P = ParamSpec("P")
R = TypeVar("R")

UrlOpt = Annotated[str, typer.Option("--url", envvar="SURGICAL_URL", help="Service URL.")]
KeyOpt = Annotated[str | None, typer.Option("--api-key", envvar="SURGICAL_API_KEY", help="API key.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _client(url: str, api_key: str | None) -> Client:
    """The service's client. ``SURGICAL_RETRY_FOR`` (seconds, default 30) bounds how long a
    command keeps retrying a service that is down or restarting; on a terminal it says once
    that it is waiting, rather than sitting silent."""
    raw = os.environ.get("SURGICAL_RETRY_FOR", "30")
    try:
        retry_for = float(raw)
    except ValueError:
        raise ValueError(f"SURGICAL_RETRY_FOR must be a number of seconds, got {raw!r}") from None
    say = (lambda line: typer.secho(line, fg=typer.colors.YELLOW, err=True)) \
        if sys.stderr.isatty() else None
    return Client(url, api_key, retry_for=max(0.0, retry_for), on_retry=say)


def _fail(message: str, code: int) -> NoReturn:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def remote(command: Callable[P, R]) -> Callable[P, R]:
    """Map the client's exception tree to one line and an exit status."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except WaitTimeoutError as error:
            _fail(str(error), 4)
        except JobNotSucceededError as error:
            _fail(str(error), 3)
        except SurgicalError as error:
            _fail(str(error), 1)
        except (OSError, ValueError) as error:
            _fail(str(error).splitlines()[0] if str(error) else type(error).__name__, 2)

    return wrapper


def _print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    typer.echo(json.dumps(value, indent=2))


def _show_progress(as_json: bool) -> bool:
    """A progress bar only for people: not with ``--json``, nor into a pipe or a log file."""
    return not as_json and sys.stderr.isatty()


def _console() -> Any:
    from rich.console import Console

    return Console()


def _print_found(found: Any, as_json: bool,
                 table: Literal["diagnosis_table", "jobs_table", "trials_table"]) -> None:
    """What a command fetched: the API's JSON with ``--json``, else the :mod:`app.tables`
    function named ``table`` applied to it (named, so rich loads only when a table prints)."""
    if as_json:
        _print_json(found)
        return
    from app import tables

    _console().print(getattr(tables, table)(found))


def load_spec(path: Path) -> dict[str, Any]:
    """A job spec from JSON or YAML (by extension; ``-`` reads JSON from stdin).

    Every problem with the file itself is a ``ValueError`` whose message names the file and
    fits on one line; what the spec says is checked by the service.
    """
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: cannot read it ({getattr(error, 'strerror', None) or error})") from None
    if path.suffix in (".yaml", ".yml"):
        import yaml

        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(error, "problem", None) or str(error).splitlines()[0]
            raise ValueError(f"{path}: invalid YAML{where}: {problem}") from None
    else:
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}: invalid JSON: {error}") from None
    if not isinstance(spec, dict):
        raise ValueError(f"{path}: a job spec must be a mapping with 'model' and 'data'")
    return spec


remote_app = typer.Typer(help="Commands that talk to a running service.")
"""The remote commands. ``workers.cli`` adds them to ``surgical`` without a group name, so they
are top-level commands (``surgical submit``, not ``surgical remote submit``)."""


@remote_app.command()
@remote
def submit(
    spec: Annotated[Path, typer.Argument(help="Job spec, .json or .yaml ('-' for stdin JSON).")],
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job and print its result.")] = False,
    idempotency_key: Annotated[str | None, typer.Option(help="Makes retried submits safe.")] = None,
    url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Submit a job spec."""
    with _client(url, api_key) as client:
        job = client.submit(load_spec(spec), idempotency_key=idempotency_key)
        if wait:
            job = client.wait(job.id, progress=_show_progress(as_json))
            _show_result(client, job.id, as_json)
            return
        _print_json(job) if as_json else typer.echo(f"{job.id} {job.state}")


@remote_app.command()
@remote
def diagnose(
    spec: Annotated[Path, typer.Argument(help="Job spec, .json or .yaml ('-' for stdin JSON).")],
    timeout: Annotated[float | None, typer.Option(help="Seconds to wait.")] = None,
    url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False,
) -> None:
    """Diagnose where the spec's shift lives, without training (a 'diagnose' job)."""
    with _client(url, api_key) as client:
        found = client.diagnose(load_spec(spec), timeout=timeout, progress=_show_progress(as_json))
    _print_found(found, as_json, "diagnosis_table")


@remote_app.command()
@remote
def status(job_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Show a job's state and progress."""
    with _client(url, api_key) as client:
        job = client.get(job_id)
    if as_json:
        _print_json(job)
        return
    from app.tables import jobs_table

    _console().print(jobs_table([job]))
    if job.error:
        typer.echo(f"error: {job.error.type}: {job.error.detail}")


@remote_app.command("wait")
@remote
def wait_(job_id: str, timeout: Annotated[float | None, typer.Option(help="Seconds.")] = None,
          url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Wait for a job with a progress bar; print its leaderboard."""
    with _client(url, api_key) as client:
        client.wait(job_id, timeout=timeout, progress=_show_progress(as_json))
        _show_result(client, job_id, as_json)


@remote_app.command()
@remote
def result(job_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Print a finished job's recommendation and leaderboard."""
    with _client(url, api_key) as client:
        _show_result(client, job_id, as_json)


@remote_app.command()
@remote
def trials(job_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List a job's trials."""
    with _client(url, api_key) as client:
        found = client.trials(job_id)
    _print_found(found, as_json, "trials_table")


@remote_app.command()
@remote
def cancel(job_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """Ask a job to stop (after the trials running now)."""
    with _client(url, api_key) as client:
        job = client.cancel(job_id)
    _print_json(job) if as_json else typer.echo(f"{job.id} {job.state}{' (cancel requested)' if job.cancel_requested and not job.done else ''}")


@remote_app.command()
@remote
def delete(job_id: str, url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None) -> None:
    """Delete a finished job, its trials and its artifacts."""
    with _client(url, api_key) as client:
        client.delete(job_id)
    typer.echo(f"{job_id} deleted")


@remote_app.command()
@remote
def download(
    job_id: str,
    name: Annotated[list[str] | None, typer.Option("--name", help="Artifact name (default: all).")] = None,
    out: Annotated[Path, typer.Option(help="Directory to write into.")] = Path("."),
    url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None,
) -> None:
    """Download a job's artifacts (weights patch, plots, result)."""
    out.mkdir(parents=True, exist_ok=True)
    with _client(url, api_key) as client:
        names = name or [artifact.name for artifact in client.artifacts(job_id)]
        for artifact in names:
            typer.echo(str(client.download(job_id, artifact, out)))


@remote_app.command("list")
@remote
def list_(state: Annotated[str | None, typer.Option(help="queued|running|succeeded|failed|cancelled")] = None,
          url: UrlOpt = DEFAULT_URL, api_key: KeyOpt = None, as_json: JsonOpt = False) -> None:
    """List jobs, newest first."""
    with _client(url, api_key) as client:
        jobs = list(client.iter_jobs(state=state))
    _print_found(jobs, as_json, "jobs_table")




def _show_result(client: Client, job_id: str, as_json: bool) -> None:
    found = client.result(job_id)
    if as_json:
        _print_json(found)
        return
    from app.tables import leaderboard_table

    console = _console()
    console.print(leaderboard_table(found, title=f"job {job_id}"))
    transform = (found.data or {}).get("transform")
    if transform:  # what the images went through, so users see what ran
        shown = ", ".join(f"{key} {value}" for key, value in transform.items()
                          if value is not None and key != "interpolation")
        console.print(f"transform: {shown}")
    for note in found.notes:
        console.print(f"note: {note}")
    if found.diagnosis is not None:
        console.print(f"diagnosis: {found.diagnosis.explanation}")
