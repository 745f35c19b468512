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


def test_every_service_shares_one_configuration(compose):
    """The API reads what the workers write: one database, one artifact store, one data dir."""
    envs = {name: service.get("environment") or {} for name, service in compose["services"].items()
            if name != "postgres"}
    assert len({tuple(sorted(env.items())) for env in envs.values()}) == 1, envs
    env = envs["api"]
    postgres = compose["services"]["postgres"]["environment"]
    url = env["SURGICAL_DATABASE_URL"]
    assert url.startswith("postgresql+psycopg://")
    assert url.endswith(f"@postgres:5432/{postgres['POSTGRES_DB']}")
    assert f"//{postgres['POSTGRES_USER']}:{postgres['POSTGRES_PASSWORD']}@" in url
    assert Path(env["SURGICAL_ARTIFACT_DIR"]).is_relative_to(env["SURGICAL_DATA_DIR"])


def _mounts(service: dict) -> dict[str, tuple[str, str]]:
    """target -> (source, mode) from the short syntax docker-compose config prints."""
    mounts = {}
    for volume in service.get("volumes", []):
        source, target, mode = volume.split(":")
        mounts[target] = (source, mode)
    return mounts


def test_volumes_hold_the_data_where_the_settings_point(compose):
    services = compose["services"]
    data_dir = services["api"]["environment"]["SURGICAL_DATA_DIR"]
    roots = services["api"]["environment"]["SURGICAL_DATA_ROOTS"]
    for name in ("api", "worker", "dashboard"):  # artifacts written by one, served by the others
        assert _mounts(services[name])[data_dir] == ("surgical-data", "rw"), name
    for name in ("api", "worker"):  # the user's datasets: checked by the API, read by workers
        source, mode = _mounts(services[name])[roots]
        assert Path(source).is_absolute() and mode == "ro", name
    assert _mounts(services["postgres"])["/var/lib/postgresql/data"] == ("pgdata", "rw")
    assert {"pgdata", "surgical-data"} <= set(compose["volumes"])


def _dockerfile(service: dict) -> str:
    return (Path(service["build"]["context"]) / service["build"]["dockerfile"]).read_text()


def test_dockerfiles_build_what_the_services_run(compose):
    services = compose["services"]
    for name, service in services.items():
        if "build" not in service:
            continue
        text = _dockerfile(service)
        for package in ("app", "selector", "workers", "migrations"):
            assert f"COPY {package} ./{package}" in text, f"{name}: {package} not in the image"
        assert "pip install" in text, name
    api = _dockerfile(services["api"])
    # The light image: the project without its dependencies (torch), then the API's own.
    assert "pip install --no-cache-dir --no-deps ." in api and "torch" not in api.split("\n", 1)[1]
    assert "optuna-dashboard" in api and "psycopg" in api
    worker = _dockerfile(services["worker"])
    assert worker.startswith("# ") and "FROM pytorch/pytorch:" in worker and "cuda" in worker
    assert 'CMD ["surgical", "worker", "--device", "cuda"]' in worker
    assert services["worker"]["command"] == ["surgical", "worker", "--device", "cuda"]
