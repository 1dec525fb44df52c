"""`lmforge serve`: check every option, load the models, print where the server listens, run
uvicorn until Ctrl-C or SIGTERM (in-flight requests get a few seconds to finish, then are cancelled)."""

from __future__ import annotations

import ipaddress
import math
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from lmforge.errors import LmforgeError
from lmforge.formats.directory import resolve_model_dir
from lmforge.inference.options import check_options

if TYPE_CHECKING:
    from lmforge.server.models import ServedModel

API_KEY_ENV = "LMFORGE_API_KEY"
# the route and body of a request each kind of model answers ("chat": a model with a chat template)
EXAMPLES = {
    "chat": ("chat/completions", '"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20'),
    "text-generation": ("completions", '"prompt": "Hello", "max_tokens": 20'),
    "translation": ("translations", '"input": "Hello."'),
    "text-classification": ("classifications", '"input": "What a lovely day."'),
    "question-answering": (
        "answers",
        '"question": "Who kept the crown?", "context": "The old king kept his crown."',
    ),
}


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def check_serve_options(host: str, port: int, max_queue: int, max_tokens_limit: int, timeout: float) -> None:
    """One-line errors for bad options, before any model loads."""
    if not host:
        raise LmforgeError("host='': give an address to bind, e.g. 127.0.0.1")
    if not (isinstance(port, int) and 1 <= port <= 65535):
        raise LmforgeError(f"port={port}: must be an integer in [1, 65535]")
    if not (isinstance(max_queue, int) and max_queue >= 1):
        raise LmforgeError(f"max_queue={max_queue}: must be an integer >= 1 (requests admitted at once)")
    if not (isinstance(max_tokens_limit, int) and max_tokens_limit >= 1):
        raise LmforgeError(f"max_tokens_limit={max_tokens_limit}: must be an integer >= 1")
    if not (isinstance(timeout, int | float) and math.isfinite(timeout) and timeout > 0):
        raise LmforgeError(f"timeout={timeout}: must be a finite number of seconds > 0")


def _check_port_free(host: str, port: int) -> None:
    """Bind once before loading models, so a taken port fails in a second, not after the load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise LmforgeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def try_command(where: str, model: ServedModel, key: Literal["env", "flag"] | None) -> str:
    """A curl line the server answers: a request `model`'s kind takes, with the API key's header.
    key: None (no key), "env" (from $LMFORGE_API_KEY: the shell has it) or "flag" (--api-key,
    not echoed into logs: a placeholder)."""
    route, body = EXAMPLES["chat" if model.chat is not None else model.kind]
    auth = {
        None: "",
        "env": f' -H "Authorization: Bearer ${API_KEY_ENV}"',
        "flag": " -H 'Authorization: Bearer <your --api-key>'",
    }[key]
    return (
        f"curl {where}/v1/{route}{auth} -H 'Content-Type: application/json'"
        f' -d \'{{"model": "{model.id}", {body}}}\''
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def serve(
    models: list[str | Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    max_queue: int = 16,
    max_tokens_limit: int = 1024,
    timeout: float = 300.0,
    dtype: str = "auto",
) -> None:
    """Serve model directories over an OpenAI-compatible HTTP API (docs/serving.md). Each model's
    id is its directory's name. Binds to loopback unless told otherwise; api_key (or the
    LMFORGE_API_KEY environment variable) makes every /v1 route require `Authorization: Bearer`.
    Concurrent requests decode together (continuous batching); past max_queue admitted requests the
    server answers 503 at once."""
    import uvicorn

    from lmforge.server.app import Settings, create_app
    from lmforge.server.batcher import Batcher
    from lmforge.server.models import load_models

    check_serve_options(host, port, max_queue, max_tokens_limit, timeout)
    check_options(dtype=dtype)
    key = api_key if api_key is not None else os.environ.get(API_KEY_ENV) or None
    if key is not None and not key.strip():
        raise LmforgeError("api_key is empty: give a non-empty key, or none")
    for path in models:  # a missing or foreign directory fails before any model loads
        resolve_model_dir(path)
    _check_port_free(host, port)
    served = load_models(list(models), dtype)
    batcher = Batcher()  # decoding runs in this thread, uvicorn in another
    app = create_app(served, Settings(max_queue, max_tokens_limit, float(timeout), key), batcher)
    where = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    print(f"lmforge serve: listening on {where}", file=sys.stderr)
    for m in served.values():
        chat = ", chat" if m.chat is not None else ""
        print(f"  {m.id}: {m.kind}{chat} ({m.directory})", file=sys.stderr)
    given = None if key is None else "flag" if api_key is not None else "env"
    print(f"  try: {try_command(where, next(iter(served.values())), given)}", file=sys.stderr)
    if not _loopback(host) and key is None:
        print(
            f"lmforge serve: warning: {host} is not loopback and no --api-key is set: anyone who can reach"
            " this port can use the models",
            file=sys.stderr,
        )
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)
    )
    http = threading.Thread(target=server.run, name="lmforge-http", daemon=True)
    # SIGTERM (kill, systemd, docker stop) stops it as Ctrl-C does. SIGINT gets the handler too: a
    # process started in the background by a script (`cmd &`) inherits SIGINT *ignored*, and Python
    # then never raises KeyboardInterrupt, so `kill -INT` did nothing (uvicorn, run on its own,
    # also installs its handlers whatever it inherited)
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        http.start()
        batcher.run(until=lambda: not http.is_alive())
    except KeyboardInterrupt:  # Ctrl-C: uvicorn stops taking requests and lets in-flight ones end
        print("lmforge serve: stopping", file=sys.stderr)
        server.should_exit = True
        batcher.run(until=lambda: not http.is_alive())
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise LmforgeError(f"the server could not start on {host}:{port} (see uvicorn's lines above)")
