"""Request dependencies, each an ``Annotated`` alias (the full-stack-fastapi-template way).

Everything comes from ``app.state``, filled by :func:`app.main.create_app`: nothing here reads
the environment or builds an engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from app.auth import LOCAL_OWNER, authenticate
from app.db import session_scope
from app.errors import Unauthorized
from app.settings import Settings
from app.trials import Studies


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent (scope=function)."""
    with session_scope(request.app.state.session_factory) as session:
        yield session


def get_studies(request: Request) -> Studies:
    return request.app.state.studies


def get_artifact_store(request: Request) -> Any:
    return request.app.state.artifact_store


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StudiesDep = Annotated[Studies, Depends(get_studies)]
ArtifactStoreDep = Annotated[Any, Depends(get_artifact_store)]

_bearer = HTTPBearer(auto_error=False, description="An API key from `surgical keys create`.")


def get_owner(
    settings: SettingsDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The owner of the request's API key ("local" when auth is off)."""
    if not settings.auth:
        return LOCAL_OWNER
    if credentials is None:
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    return authenticate(session, credentials.credentials)


OwnerDep = Annotated[str, Depends(get_owner)]
