"""`--api-key`: every /v1/ route wants `Authorization: Bearer <key>`, checked as plain ASGI
middleware before the body is read or parsed, so a request without the key learns nothing else
(as a FastAPI dependency the check ran after the body's parse: a keyless, non-JSON body got a 400
about its JSON instead of the 401). /health and the playground's page stay open."""

from __future__ import annotations

import hmac

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from lmforge.server.errors import ApiError

GUARDED = "/v1/"


class RequireKey:
    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app, self.key = app, key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(GUARDED) and not self._holds_key(scope):
            refusal = ApiError(
                401, "missing or wrong API key: send 'Authorization: Bearer <key>'", None, "invalid_api_key"
            )
            await refusal.response()(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _holds_key(self, scope: Scope) -> bool:
        scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.key)
