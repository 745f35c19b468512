"""Settings from the environment, and API keys."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.auth import authenticate, create_api_key, revoke_api_key
from app.db import session_scope
from app.errors import Invalid, Unauthorized
from app.models import ApiKey
from app.settings import Settings


def test_defaults_derive_from_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SURGICAL_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("SURGICAL_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'surgical.db'}"
    assert settings.optuna_storage_url == settings.database_url == settings.storage_url
    assert settings.artifact_dir == tmp_path / "artifacts"
    assert settings.data_roots == [tmp_path / "datasets"]
    assert settings.factory_allowlist == [] and settings.auth is True
    assert (settings.max_trials, settings.max_epochs) == (200, 50)
    assert (settings.max_n_per_class, settings.max_batch_size) == (2000, 1024)
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SURGICAL_DATA_ROOTS", f"{tmp_path}/a{os.pathsep}{tmp_path}/b")
    monkeypatch.setenv("SURGICAL_FACTORY_ALLOWLIST", "mypkg, other.models")
    monkeypatch.setenv("SURGICAL_AUTH", "false")
    monkeypatch.setenv("SURGICAL_DATABASE_URL", "postgresql://u@h/db")
    monkeypatch.setenv("SURGICAL_OPTUNA_STORAGE_URL", "sqlite:////tmp/optuna.db")
    settings = Settings()
    assert settings.data_roots == [tmp_path / "a", tmp_path / "b"]
    assert settings.factory_allowlist == ["mypkg", "other.models"]
    assert settings.auth is False
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.storage_url == "sqlite:////tmp/optuna.db"
    monkeypatch.setenv("SURGICAL_DATA_ROOTS", f'["{tmp_path}/c"]')
    assert Settings().data_roots == [tmp_path / "c"]


def test_api_keys(factory: sessionmaker[Session]) -> None:
    with session_scope(factory) as session:
        key = create_api_key(session, "dave")
        other = create_api_key(session, "erin")
    with session_scope(factory) as session:
        assert authenticate(session, key) == "dave" and authenticate(session, other) == "erin"
        stored = session.scalars(select(ApiKey).where(ApiKey.owner == "dave")).one()
        assert key not in (stored.key_hash, stored.prefix) and len(stored.key_hash) == 64
        for bad in ("", "nonsense", key[:-1] + ("A" if key[-1] != "A" else "B"), f"x{key}"):
            with pytest.raises(Unauthorized):
                authenticate(session, bad)
        with pytest.raises(Invalid):
            create_api_key(session, "  ")
    with session_scope(factory) as session:
        assert revoke_api_key(session, stored.prefix)
        assert not revoke_api_key(session, stored.prefix)
    with session_scope(factory) as session, pytest.raises(Unauthorized):
        authenticate(session, key)
