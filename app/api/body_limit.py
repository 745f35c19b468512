"""Refuse oversized request bodies with a 413 problem, before they are buffered.

FastAPI's own ``max_body_size`` answers 413 in plain text from inside Starlette, out of reach of
the problem-details handlers; raising an ``HTTPException`` from ``receive`` instead lets the
route's exception handling turn it into ``application/problem+json`` like every other error.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimitMiddleware:
    """Count request body bytes (and trust no Content-Length); 413 past ``max_bytes``."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        too_large = HTTPException(413, f"request body larger than {self.max_bytes} bytes")
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            if declared.isdigit() and int(declared) > self.max_bytes:
                raise too_large
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.max_bytes:
                raise too_large
            return message

        await self.app(scope, limited_receive, send)
