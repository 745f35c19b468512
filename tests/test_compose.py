"""docker-compose.yml is checked without a Docker engine: Debian's docker-compose validates it
against the Compose specification, and every command and SURGICAL_* variable it uses must exist
in the project."""

import subprocess
from pathlib import Path

import pytest
import yaml
from typer.main import get_command

from app.settings import Settings
from workers.cli import cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    result = subprocess.run(
        ["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def test_services_have_the_production_shape(compose):
    services = compose["services"]
    assert {"postgres", "migrate", "api", "worker", "dashboard"} <= set(services)
    assert "healthcheck" in services["postgres"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("api", "worker", "dashboard"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert "pgdata" in compose["volumes"]


def _resolve(command: list[str]):
    group = get_command(cli)
    for word in command[1:]:
        if word.startswith("-"):
            break
        sub = getattr(group, "commands", {}).get(word)
        if sub is None:
            return None, word
        group = sub
    return group, None


def test_every_service_command_exists(compose):
    for name, service in compose["services"].items():
        command = service.get("command")
        if name == "postgres":
            continue
        assert command and command[0] == "surgical", name
        found, missing = _resolve(command)
        assert found is not None, f"{name}: 'surgical {' '.join(command[1:])}' has no command {missing!r}"
        options = {opt for param in found.params for opt in getattr(param, "opts", [])}
        for word in command[1:]:
            if word.startswith("--"):
                assert word in options, f"{name}: option {word} unknown to {found.name}"


def test_every_environment_variable_is_a_setting(compose):
    fields = set(Settings.model_fields)
    for name, service in compose["services"].items():
        for variable in (service.get("environment") or {}):
            if variable.startswith("SURGICAL_"):
                assert variable.removeprefix("SURGICAL_").lower() in fields, f"{name}: {variable}"


def test_dockerfiles_exist(compose):
    for name, service in compose["services"].items():
        if "build" in service:
            assert (Path(service["build"]["context"]) / service["build"]["dockerfile"]).is_file(), name
