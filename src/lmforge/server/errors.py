"""OpenAI's error object, `{"error": {"message", "type", "param", "code"}}`, for every failure, and
the handlers that turn FastAPI's own failures (bad JSON, wrong types) into it."""

from __future__ import annotations

import re
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

TYPES = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error",
         405: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error",
         503: "server_busy", 504: "timeout"}  # fmt: skip


FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
UNSUPPORTED = "is not supported by lmforge serve"  # schemas' refusals of OpenAI fields it lacks
UNKNOWN = "is not a field of"  # refusals of unknown fields on lmforge's own routes (/v1/answers)
TAGS = {"body", "str", "int", "float", "bool", "list", "dict", "none"}


class ApiError(Exception):
    """A request the server refuses or could not finish: sent as OpenAI's error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def body(self) -> dict[str, Any]:
        kind = TYPES.get(self.status, "server_error" if self.status >= 500 else "invalid_request_error")
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else {}
        if self.code == "timeout":  # openai's clients retry a 5xx twice: a request past --timeout
            headers["x-should-retry"] = "false"  # would then take three times its length to fail
        return JSONResponse(self.body(), status_code=self.status, headers=headers or None)


def _first(errors: Sequence[Any]) -> dict[str, Any]:
    """The problem to report: the first, except that a list given for a `str | list[...]` field is
    judged by the list branch (e.g. "at most 4 items"), not by the str one ("a valid string")."""
    if not errors:
        return {"loc": (), "msg": "invalid request"}
    first, loc = errors[0], tuple(errors[0].get("loc", ()))
    if first.get("type") == "string_type" and isinstance(first.get("input"), list) and loc:
        branch = len(loc) - 1  # where the union's tag sits: ("stop", "str"), ("stop", "list[str]")
        for e in errors[1:]:
            other = tuple(e.get("loc", ()))
            same_field = len(other) > branch and other[:branch] == loc[:branch]
            if same_field and str(other[branch]).startswith("list["):
                return e
    return first


def _validation(exc: RequestValidationError) -> ApiError:
    """The first problem pydantic found, as one line naming the field (OpenAI answers 400)."""
    first = _first(exc.errors())
    # a field's path: names and list indices, without the body prefix or pydantic's union tags
    loc = [str(p) for p in first.get("loc", ()) if isinstance(p, int) or (FIELD.match(p) and p not in TAGS)]
    param = ".".join(loc) or None
    if first.get("type") == "json_invalid":
        return ApiError(400, "the request body is not valid JSON", None, "invalid_json")
    if not loc and first.get("type") == "value_error":  # a check across fields (schemas' validators)
        message = str(first.get("msg", "")).removeprefix("Value error, ")
        named = message.split(":", 1)[0]  # "max_tokens: 0 generates nothing ...": that field is the param
        code = "unsupported_parameter" if UNSUPPORTED in message else "invalid_value"
        code = "unknown_parameter" if message.startswith(f"{named}: {UNKNOWN} ") else code
        field = all(FIELD.fullmatch(part) for part in named.split("."))  # stream_options.x too
        return ApiError(400, message, named if field else None, code)
    if not loc:  # the body itself: bytes that are not JSON, or JSON that is not an object
        return ApiError(400, "the request body must be a JSON object (Content-Type: application/json)", None,
                        "invalid_json")  # fmt: skip
    if first.get("type") == "missing":
        return ApiError(400, f"missing required parameter '{param}'", param, "missing_required_parameter")
    # pydantic's wording, less "Value error, " (schemas' own checks) and "after validation"
    message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    message = message.replace(" after validation", "")
    shown = "input" in first and not isinstance(first["input"], dict | list)
    if shown and first.get("type") != "value_error":  # schemas' own messages say what was wrong
        value = first["input"]
        got = repr(value)
        if len(got) > 120:  # a long value: its start and its own length
            size = len(value) if isinstance(value, str) else len(got)
            got = f"{got[:100]}... ({size:,} characters)"
        message += f" (got {got})"
    return ApiError(400, f"{param}: {message}" if param else message, param, "invalid_value")


def _unparsed(cause: BaseException | None) -> str:
    """Why a body that FastAPI could not parse was refused (valid JSON can be: json's limits)."""
    if isinstance(cause, RecursionError):
        return "the request body's JSON is nested too deeply"
    if isinstance(cause, ValueError) and "digits" in str(cause):  # Python's int max str digits
        return "the request body's JSON holds an integer of more than 4,300 digits"
    return "the request body is not valid JSON in UTF-8"


def install(app: FastAPI) -> None:
    """Every error the app can give leaves as OpenAI's error object."""

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        kind = request.headers.get("content-type", "")
        if request.method == "POST" and not kind.split(";")[0].strip().endswith("json"):  # curl -d: a form
            said = f"Content-Type is {kind!r}, not application/json" if kind else "has no Content-Type"
            message = f"the request {said}: send the JSON body with -H 'Content-Type: application/json'"
            return ApiError(400, message, None, "invalid_content_type").response()
        return _validation(exc).response()

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":  # FastAPI's,
            return ApiError(400, _unparsed(exc.__cause__), None, "invalid_json").response()  # from json's
        return ApiError(exc.status_code, str(exc.detail)).response()


class CatchBugs:
    """A bug is still OpenAI's error object, not a bare "Internal Server Error", and its traceback
    goes to the server's log, not the reply. Plain ASGI middleware, added innermost: Starlette's
    own handler for Exception sits outside every middleware, so its 500 lacked CORS headers and a
    browser page saw only a network error."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Any) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception as exc:
            if started:  # a stream broke after its headers: nothing to replace them with
                raise
            traceback.print_exc(file=sys.stderr)
            message = f"the server failed ({type(exc).__name__}); its log has the details"
            await ApiError(500, message, None, "server_error").response()(scope, receive, send)
