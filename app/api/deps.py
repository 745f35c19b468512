"""Request dependencies, each an ``Annotated`` alias (the full-stack-fastapi-template way).

Everything comes from ``app.state``, filled by :func:`app.main.create_app`: nothing here reads
the environment or builds an engine.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Iterator
from typing import Annotated, Any

from fastapi import Depends, Request, Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from app.auth import LOCAL_OWNER, authenticate
from app.db import session_scope
from app.errors import Unauthorized
from app.settings import Settings
from app.trials import Studies


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    """One transaction per request, committed before the response is sent (scope=function)."""
    with session_scope(request.app.state.session_factory) as session:
        yield session


async def get_studies(request: Request) -> Studies:
    return request.app.state.studies


async def get_artifact_store(request: Request) -> Any:
    return request.app.state.artifact_store


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session, scope="function")]
StudiesDep = Annotated[Studies, Depends(get_studies)]
ArtifactStoreDep = Annotated[Any, Depends(get_artifact_store)]

_bearer = HTTPBearer(auto_error=False, description="An API key from `surgical keys create`.")


def owner_of(request: Request, session: Session) -> str:
    """The owner of the request's API key ("local" when auth is off); Unauthorized otherwise."""
    settings: Settings = request.app.state.settings
    if not settings.auth:
        return LOCAL_OWNER
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'")
    return authenticate(session, key.strip())


def _owner_in_own_transaction(request: Request) -> str:
    with session_scope(request.app.state.session_factory) as session:
        return owner_of(request, session)


_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


class AuthenticatedRoute(APIRoute):
    """A route that authenticates before FastAPI reads the body or validates any parameter.

    FastAPI parses the JSON body before it solves dependencies, so an unauthenticated client
    sending a malformed body would learn about our validation (422) instead of getting 401.
    For methods that carry a body the owner is found first and kept on ``request.state`` for
    :func:`get_owner`; other requests authenticate in :func:`get_owner`, which FastAPI solves
    before it validates path, query and header parameters.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authenticated(request: Request) -> Response:
            if request.method in _BODY_METHODS:
                request.state.owner = await run_in_threadpool(_owner_in_own_transaction, request)
            return await handler(request)

        return authenticated


#: Declares the bearer security scheme in OpenAPI; the key is checked by :func:`owner_of`.
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def get_owner(request: Request, _credentials: BearerDep) -> str:
    """The owner of the request's API key (found once per request)."""
    owner: str | None = getattr(request.state, "owner", None)
    if owner is None:
        owner = await run_in_threadpool(_owner_in_own_transaction, request)
    return owner


OwnerDep = Annotated[str, Depends(get_owner)]
