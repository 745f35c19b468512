"""The service's commands: ``serve``, ``db upgrade``, ``keys create|revoke``.

``app`` is the Typer object; the project's ``surgical`` console script (``workers.cli:main``)
adds the commands that need torch to it. ``python -m app.cli`` runs these alone. Errors end as
one readable line on stderr and exit status 1 (the CLI's one place that maps errors).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, NoReturn, ParamSpec, TypeVar

import typer
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from app.errors import AppError
from app.settings import Settings

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    help="surgical: which layers to fine-tune under distribution shift, as a service.",
    no_args_is_help=True,
)
db_app = typer.Typer(help="The service database.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(keys_app, name="keys")


def _first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def error_message(exc: BaseException) -> str:
    """One line that says what went wrong, without a traceback."""
    if isinstance(exc, AppError):
        return exc.detail
    if isinstance(exc, SQLAlchemyError):
        cause = getattr(exc, "orig", None) or exc
        return f"database error: {_first_line(str(cause))} (is the database up and upgraded?)"
    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        return f"invalid setting {field}: {err['msg']}"
    return f"{type(exc).__name__}: {_first_line(str(exc))}"


def _exit_with(exc: BaseException) -> NoReturn:
    typer.secho(f"error: {error_message(exc)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def friendly_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn any expected failure of a command into one line and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (AppError, SQLAlchemyError, ValidationError, OSError, RuntimeError) as exc:
            _exit_with(exc)

    return wrapper


@app.command()
@friendly_errors
def serve(
    host: Annotated[str | None, typer.Option(help="Interface (default: settings.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings.port).")] = None,
    no_auth: Annotated[
        bool, typer.Option("--no-auth", help="Local mode: no API keys, owner 'local'.")
    ] = False,
    access_log: Annotated[bool, typer.Option(help="Log every request (uvicorn's access log).")] = True,
) -> None:
    """Serve the REST API."""
    import uvicorn

    from app.main import create_app

    settings = Settings()
    updates: dict[str, object] = {"host": host or settings.host}
    updates["port"] = settings.port if port is None else port
    if no_auth:
        updates["auth"] = False
    settings = settings.model_copy(update=updates)
    if not settings.auth:
        typer.secho(
            "WARNING: authentication is off; every request acts as owner 'local'.",
            fg=typer.colors.YELLOW,
            err=True,
        )
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, access_log=access_log)


@db_app.command("upgrade")
@friendly_errors
def db_upgrade() -> None:
    """Create or migrate the jobs tables and Optuna's storage tables."""
    from app.migrate import head_revision, upgrade

    settings = Settings()
    upgrade(settings)
    typer.echo(f"database at revision {head_revision()}: {settings.database_url}")


@keys_app.command("create")
@friendly_errors
def keys_create(name: Annotated[str, typer.Argument(help="The owner the key acts as.")]) -> None:
    """Create an API key and print it (shown only this once)."""
    from app.auth import create_api_key
    from app.db import make_engine, make_session_factory, session_scope

    engine = make_engine(Settings())
    try:
        with session_scope(make_session_factory(engine)) as session:
            key = create_api_key(session, name)
    finally:
        engine.dispose()
    typer.echo(key)


@keys_app.command("revoke")
@friendly_errors
def keys_revoke(
    prefix: Annotated[str, typer.Argument(help="The key's prefix (after srg_).")],
) -> None:
    """Revoke an API key by its prefix."""
    from app.auth import revoke_api_key
    from app.db import make_engine, make_session_factory, session_scope
    from app.errors import NotFound

    engine = make_engine(Settings())
    try:
        with session_scope(make_session_factory(engine)) as session:
            if not revoke_api_key(session, prefix):
                raise NotFound(f"no active key with prefix {prefix!r}")
    finally:
        engine.dispose()
    typer.echo(f"revoked {prefix}")


if __name__ == "__main__":
    app()
