"""The service's CLI commands, and the promise that the API process never loads torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from app.auth import authenticate
from app.cli import app
from app.db import session_scope

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _env(url: str, tmp_path: Path) -> dict[str, str]:
    return {"SURGICAL_DATABASE_URL": url, "SURGICAL_DATA_DIR": str(tmp_path)}


def test_db_upgrade_and_keys(db_url: str, tmp_path: Path, factory: sessionmaker[Session]) -> None:
    env = _env(db_url, tmp_path)
    done = runner.invoke(app, ["db", "upgrade"], env=env)
    assert done.exit_code == 0, done.output
    assert "revision 0001" in done.output
    created = runner.invoke(app, ["keys", "create", "carol"], env=env)
    assert created.exit_code == 0, created.output
    key = created.stdout.strip()
    with session_scope(factory) as session:
        assert authenticate(session, key) == "carol"
    prefix = key.split("_")[1]
    assert runner.invoke(app, ["keys", "revoke", prefix], env=env).exit_code == 0
    again = runner.invoke(app, ["keys", "revoke", prefix], env=env)
    assert again.exit_code == 1 and "no active key" in again.stderr


@pytest.mark.parametrize(
    "args", [["db", "upgrade"], ["keys", "create", "x"]], ids=["upgrade", "keys"]
)
def test_errors_are_one_line(args: list[str], tmp_path: Path) -> None:
    env = _env("postgresql+psycopg://postgres@127.0.0.1:1/nowhere", tmp_path)
    done = runner.invoke(app, args, env=env)
    assert done.exit_code == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: database error:"), done.stderr
    assert "Traceback" not in done.output


def test_invalid_settings_are_one_line(tmp_path: Path) -> None:
    done = runner.invoke(app, ["db", "upgrade"], env={"SURGICAL_MAX_TRIALS": "lots"})
    assert done.exit_code == 1 and "invalid setting max_trials" in done.stderr


def test_python_m_app_cli_and_no_torch_in_the_api_process(tmp_path: Path) -> None:
    """``import app.main`` (and building the app) must not load torch, selector or workers."""
    code = f"""
import sys
import app.main, app.cli, app.store, app.schemas, app.migrate, app.validation
from app.settings import Settings
app.main.create_app(Settings(data_dir={str(tmp_path)!r}))
heavy = sorted(m for m in ("torch", "torchvision", "selector", "workers") if m in sys.modules)
assert not heavy, heavy
print("light")
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "light" in done.stdout, done.stderr
    helped = subprocess.run(
        [sys.executable, "-m", "app.cli", "--help"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert helped.returncode == 0, helped.stderr
    for command in ("serve", "db", "keys"):
        assert command in helped.stdout
