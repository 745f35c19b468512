"""The FastAPI application, built by :func:`create_app` from settings (nothing at import time).

``uvicorn --factory app.main:app_factory`` reads the settings from the environment; the CLI's
``serve`` and the tests call :func:`create_app` with theirs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from anyio import CapacityLimiter
from fastapi import FastAPI

from app.api.body_limit import BodyLimitMiddleware
from app.api.routes import health, jobs, outputs
from app.api.views import API_PREFIX
from app.artifacts import make_artifact_store
from app.db import make_engine, make_session_factory
from app.problems import install_problem_handlers
from app.settings import Settings
from app.trials import Studies

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1024 * 1024  # a job spec is a few hundred bytes
POLL_THREADS = 2

DESCRIPTION = """
Finds which layers of a pretrained model to fine-tune under distribution shift
(surgical fine-tuning, Lee et al., ICLR 2023). Submit a job, poll it, read the trials
and the result. Errors are RFC 9457 problem details (`application/problem+json`).
"""


def create_app(settings: Settings) -> FastAPI:
    """An app bound to ``settings``: its own engine, Optuna reader and artifact store."""
    engine = make_engine(settings)
    studies = Studies(settings.storage_url)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not settings.auth:
            log.warning(
                "AUTHENTICATION IS OFF (auth=False): every request acts as owner 'local'. "
                "Only use this for a local, single-user service bound to loopback."
            )
        try:
            yield
        finally:
            studies.close()
            engine.dispose()

    app = FastAPI(
        title="surgical",
        summary="Surgical fine-tuning as a service.",
        description=DESCRIPTION,
        version="0.1.0",
        lifespan=lifespan,
    )
    app.add_middleware(BodyLimitMiddleware, max_bytes=MAX_BODY_BYTES)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.studies = studies
    app.state.artifact_store = make_artifact_store(settings)
    # Threads for the poll endpoint (app.api.routes.jobs.read_job): two, so that a burst of
    # polls queues briefly instead of thrashing the GIL (20 pollers on 2 cores: p99 65 ms with
    # 2 threads, 225 ms with 4; docs/RELIABILITY.md), while one read may wait on the network.
    app.state.poll_limiter = CapacityLimiter(POLL_THREADS)
    install_problem_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router, prefix=API_PREFIX)
    app.include_router(outputs.router, prefix=API_PREFIX)
    return app


def app_factory() -> FastAPI:
    """For ``uvicorn --factory app.main:app_factory``: settings from SURGICAL_* variables."""
    return create_app(Settings())
