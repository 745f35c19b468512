"""The Optuna dashboard over the service's own storage and artifact store.

optuna-dashboard has no authentication and its API can delete or rename studies and upgrade the
schema. So it listens on loopback by default, and ``read_only=True`` wraps it in a WSGI
middleware that lets only GET and HEAD through (its pages and JSON reads) — the mode to use
behind an authenticating proxy.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from app.artifacts import make_artifact_store
from app.settings import Settings

log = logging.getLogger(__name__)

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def read_only(app: WSGIApp) -> WSGIApp:
    """Refuse every mutating request with an RFC 9457 problem (405)."""

    def guarded(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET").upper()
        if method in SAFE_METHODS:
            return app(environ, start_response)
        body = json.dumps({
            "type": "about:blank",
            "title": "Method Not Allowed",
            "status": 405,
            "detail": "this dashboard is read-only; changes go through the surgical API",
            "instance": environ.get("PATH_INFO", "/"),
        }).encode()
        start_response("405 Method Not Allowed", [
            ("Content-Type", "application/problem+json"),
            ("Content-Length", str(len(body))),
            ("Allow", "GET, HEAD, OPTIONS"),
        ])
        return [body]

    return guarded


def dashboard_app(settings: Settings, *, readonly: bool = False) -> WSGIApp:
    """optuna-dashboard's WSGI app on the jobs' Optuna storage and artifact store."""
    import optuna
    from optuna_dashboard import wsgi

    url = settings.storage_url
    storage = optuna.storages.RDBStorage(url, skip_table_creation=True)
    artifact_store = make_artifact_store(settings)
    app = wsgi(storage, artifact_store=artifact_store)
    return read_only(app) if readonly else app


class _ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("dashboard: " + format, *args)


def make_dashboard_server(settings: Settings, host: str = "127.0.0.1", port: int = 8080,
                          *, readonly: bool = False) -> WSGIServer:
    """A threaded WSGI server for the dashboard (call ``serve_forever`` / ``shutdown``)."""
    if host not in ("127.0.0.1", "localhost", "::1") and not readonly:
        log.warning("the dashboard has no authentication and is not read-only, yet listens on %s", host)
    return make_server(host, port, dashboard_app(settings, readonly=readonly),
                       server_class=_ThreadedServer, handler_class=_QuietHandler)
