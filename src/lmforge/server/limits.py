"""The request body limit, as plain ASGI middleware: a body over the limit is refused with 413 by
its Content-Length before it is read, and, when it has none (chunked transfer), once the bytes
received pass the limit.

Not `@app.middleware("http")` (Starlette's BaseHTTPMiddleware): that wraps `receive` in a task
group which swallows the `http.disconnect` that `Request.is_disconnected()` polls for, so a plain
request whose client left was never noticed and decoded to its end."""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lmforge.server.errors import ApiError


class BodyLimit:
    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        size = Headers(scope=scope).get("content-length")
        if size is not None and (not size.isdigit() or int(size) > self.limit):  # refused unread
            await self._refuse(scope, receive, send)
            return
        # Read the whole body here (the app reads it whole anyway), counting what actually arrives
        chunks: list[bytes] = []
        received = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left mid-body: the app sees that
                first = message
                break
            chunks.append(message.get("body", b""))
            received += len(chunks[-1])
            if received > self.limit:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        replayed = False

        async def replay() -> Message:
            # the body once, then the server's own receive: a disconnect is seen as it happens
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return first

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = ApiError(
            413, f"the request body is over {self.limit} bytes", None, "body_too_large"
        ).response()
        response.headers["connection"] = "close"  # the rest of the body is not read
        await response(scope, receive, send)
