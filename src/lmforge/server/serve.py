"""`lmforge serve`: check every option, load the models, print where the server listens, run
uvicorn until Ctrl-C or SIGTERM (in-flight requests get a few seconds to finish, then a 503)."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import shlex
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lmforge.errors import LmforgeError
from lmforge.formats.directory import resolve_model_dir
from lmforge.inference.options import check_options
from lmforge.processes import signals_stop

if TYPE_CHECKING:
    from lmforge.server.batcher import Batcher
    from lmforge.server.models import ServedModel

API_KEY_ENV = "LMFORGE_API_KEY"
SHUTDOWN_GRACE_S = 5.0  # after Ctrl-C or SIGTERM, the time requests in flight get to finish
KEY_FILE_MAX_BYTES = 64 * 1024  # far more than any key; a bigger file is the wrong file
KeyKind = Literal["env", "flag", "file"]
# the route and body of a request each kind of model answers ("chat": a model with a chat template)
EXAMPLES = {
    "chat": ("chat/completions", '"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 20'),
    "text-generation": ("completions", '"prompt": "Hello", "max_tokens": 20'),
    "translation": ("translations", '"input": "Hello."'),
    "text-classification": ("classifications", '"input": "What a lovely day."'),
    "feature-extraction": ("embeddings", '"input": "What a lovely day."'),
    "question-answering": (
        "answers",
        '"question": "Who kept the crown?", "context": "The old king kept his crown."',
    ),
}


class _Stopper:
    """The SIGINT/SIGTERM handler. The first signal stops taking requests and gives those in flight
    SHUTDOWN_GRACE_S to finish, then ends them with a 503 (`server_stopping`); a second ends them at
    once; a third quits without waiting for anything. It never raises mid-decode before that: doing
    so failed every request in flight at once with a 500."""

    def __init__(self, server: Any, batcher: Batcher) -> None:
        self.server, self.batcher = server, batcher
        self.signals = 0
        self.timer: threading.Timer | None = None

    def __call__(self, signum: int, frame: object) -> None:
        self.signals += 1
        if self.signals == 1:
            print(
                f"lmforge serve: stopping (requests in flight get {SHUTDOWN_GRACE_S:g} s to finish;"
                " Ctrl-C again ends them now)",
                file=sys.stderr,
            )
            self.server.should_exit = True
            self.timer = threading.Timer(SHUTDOWN_GRACE_S, self.batcher.shutdown)
            self.timer.daemon = True
            self.timer.start()
        elif self.signals == 2:  # not uvicorn's force_exit: that skips the app's shutdown
            print("lmforge serve: ending the requests in flight", file=sys.stderr)
            self.batcher.shutdown()
        else:
            self.server.force_exit = True
            raise KeyboardInterrupt

    def cancel(self) -> None:
        if self.timer is not None:
            self.timer.cancel()


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


def check_tool_call_parser(parser: str | None) -> None:
    """--tool-call-parser names a format tool calls are read in (server/tool_formats.py's PARSERS)."""
    from lmforge.server.tool_formats import PARSERS

    if parser is not None and parser not in PARSERS:
        raise LmforgeError(f"tool_call_parser={parser!r}: unknown (known: {', '.join(PARSERS)})")


ORIGIN = re.compile(r"([a-zA-Z][a-zA-Z0-9+.-]*)://([^/?#\s*@:]+|\[[0-9a-fA-F:.]+\])(?::(\d+))?")
DEFAULT_PORTS = {"http": "80", "https": "443"}


def check_origins(origins: list[str]) -> tuple[str, ...]:
    """--allow-origin values as a browser sends them: `*`, `null` (a local file's page), or
    scheme://host[:port] (http, https, chrome-extension, app, ...) with no path, user or trailing
    slash, each of which would never match and leave the page blocked, unsaid. The scheme and host
    are lower-cased and a default port dropped, as browsers write them."""
    out = []
    for origin in origins:
        match = ORIGIN.fullmatch(origin)
        port = int(match[3]) if match and match[3] else None
        if origin in ("*", "null"):
            out.append(origin)
        elif match and (port is None or 1 <= port <= 65535):
            scheme, host = match[1].lower(), _ascii_host(match[2])
            keep = f":{port}" if port is not None and DEFAULT_PORTS.get(scheme) != str(port) else ""
            out.append(f"{scheme}://{host}{keep}")
        else:
            raise LmforgeError(
                f"allow_origin={origin!r}: give an origin as a browser sends it, e.g. http://localhost:5173"
                " (scheme, host and port; no path, user or trailing slash), or * for any"
            )
    return tuple(dict.fromkeys(out))


def _ascii_host(host: str) -> str:
    """A host as a browser's Origin header writes it: lower case, a non-ASCII name in punycode."""
    try:
        return host.lower().encode("idna").decode("ascii")
    except UnicodeError:
        return host.lower()


def _check_port_free(host: str, port: int) -> None:
    """Bind once before loading models, so a taken port fails in a second, not after the load."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            raise LmforgeError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None


def read_api_key(api_key: str | None, api_key_file: str | Path | None) -> tuple[str | None, KeyKind | None]:
    """The API key and where it came from: api_key (--api-key), else the text of api_key_file
    (UTF-8, surrounding whitespace stripped), else $LMFORGE_API_KEY; (None, None) without one.
    One-line errors, naming the file, before any model loads."""
    if api_key is not None and api_key_file is not None:
        raise LmforgeError(
            "api_key and api_key_file are both given: give one (the key, or the file that holds it)"
        )
    if api_key is not None:
        if not api_key.strip():
            raise LmforgeError("api_key is empty: give a non-empty key, or none")
        return _sendable(api_key, "api_key"), "flag"
    if api_key_file is not None:
        return _sendable(_key_from_file(api_key_file), f"api_key_file={api_key_file}"), "file"
    key = os.environ.get(API_KEY_ENV) or None
    if key is not None and not key.strip():
        raise LmforgeError(f"${API_KEY_ENV} holds only whitespace: give a non-empty key, or unset it")
    return (None, None) if key is None else (_sendable(key, f"${API_KEY_ENV}"), "env")


def _sendable(key: str, where: str) -> str:
    """The key, if an HTTP client can send it: printable ASCII. A header's bytes are ASCII in
    practice (curl sends UTF-8, the openai client refuses non-ASCII, a browser's fetch throws past
    Latin-1), so a key with any other character could never be matched. The character is named by
    its code point and place, never shown (it is part of a secret)."""
    bad = next((i for i, c in enumerate(key) if not " " <= c <= "~"), None)
    if bad is None:
        return key
    raise LmforgeError(
        f"{where}: the key holds U+{ord(key[bad]):04X} (character {bad + 1}), which no HTTP client can"
        " send in a header: an API key is printable ASCII (letters, digits, punctuation)"
    )


def _key_from_file(path: str | Path) -> str:
    where = f"api_key_file={path}"
    try:
        with open(path, "rb") as f:
            data = f.read(KEY_FILE_MAX_BYTES + 1)
    except FileNotFoundError:
        raise LmforgeError(f"{where}: no such file") from None
    except IsADirectoryError:
        raise LmforgeError(f"{where}: is a folder, not a file holding the key") from None
    except OSError as e:
        raise LmforgeError(f"{where}: cannot read it ({e.strerror or e})") from None
    if len(data) > KEY_FILE_MAX_BYTES:
        raise LmforgeError(f"{where}: larger than {KEY_FILE_MAX_BYTES // 1024} KiB, so not a key file")
    try:
        text = data.decode("utf-8-sig")  # a byte-order mark (Windows editors write one) is not the key
    except UnicodeDecodeError as e:
        raise LmforgeError(f"{where}: not valid UTF-8 (byte {e.start} of the file)") from None
    key = text.strip()
    if not key:
        raise LmforgeError(f"{where}: the file is empty (or only whitespace): put the key in it")
    if "\n" in key or "\r" in key:  # an HTTP header cannot carry a line break: no client could send it
        raise LmforgeError(f"{where}: the key spans more than one line: put only the key in the file")
    return key


def try_command(
    where: str, model: ServedModel, key: KeyKind | None, key_file: str | Path | None = None
) -> str:
    """A curl line the server answers: a request `model`'s kind takes, with the API key's header.
    key: None (no key), "env" (from $LMFORGE_API_KEY: the shell has it), "flag" (--api-key, not
    echoed into logs: a placeholder) or "file" (--api-key-file key_file: `$(cat key_file)`, the
    path only, which is no secret)."""
    route, body = EXAMPLES["chat" if model.chat is not None else model.kind]
    if key == "file" and key_file is None:
        raise ValueError("try_command: key='file' needs key_file")
    auth = {
        None: "",
        "env": f' -H "Authorization: Bearer ${API_KEY_ENV}"',
        "flag": " -H 'Authorization: Bearer <your --api-key>'",
        "file": f' -H "Authorization: Bearer $(cat {shlex.quote(str(key_file))})"',
    }[key]
    if key == "file" and not _cat_gives_the_key(Path(key_file)):  # type: ignore[arg-type]
        auth = f" -H {shlex.quote(f'Authorization: Bearer <the key in {key_file}>')}"
    return (
        f"curl {where}/v1/{route}{auth} -H 'Content-Type: application/json'"
        f' -d \'{{"model": "{model.id}", {body}}}\''
    )


def _cat_gives_the_key(path: Path) -> bool:
    """Whether `$(cat path)` is the key the server read: the shell drops trailing newlines only,
    the server also a byte-order mark, carriage returns and other surrounding whitespace."""
    raw = path.read_bytes()
    text = raw.rstrip(b"\n")
    return not raw.startswith(b"\xef\xbb\xbf") and text == text.strip()


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def start_warnings(host: str, key: KeyKind | None) -> list[str]:
    """What `lmforge serve` warns about at start (never the key itself)."""
    out: list[str] = []
    if key == "flag":
        out.append(
            "--api-key puts the key on the command line, where other users of this machine can read it"
            f" in the process list (ps); prefer ${API_KEY_ENV} or --api-key-file"
        )
    if not _loopback(host) and key is None:
        out.append(
            f"{host} is not loopback and no API key is set (--api-key-file, ${API_KEY_ENV}): anyone who"
            " can reach this port can use the models"
        )
    return out


def serve(
    models: list[str | Path],
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key: str | None = None,
    api_key_file: str | Path | None = None,
    max_queue: int = 16,
    max_tokens_limit: int = 1024,
    timeout: float = 300.0,
    dtype: str = "auto",
    compile: bool | str = "auto",
    allow_origin: list[str] | None = None,
    tool_call_parser: str | None = None,
) -> None:
    """Serve model directories over an OpenAI-compatible HTTP API (docs/serving.md). Each model's
    id is its directory's name. Binds to loopback unless told otherwise; a key makes every /v1 route
    require `Authorization: Bearer`: api_key, else the one in api_key_file (UTF-8, surrounding
    whitespace stripped), else the LMFORGE_API_KEY environment variable. On a command line
    (--api-key) a key is visible to other users in the process list: prefer the variable or a file.
    Concurrent requests decode together (continuous batching); past max_queue admitted requests the
    server answers 503 at once. compile: whether a lone request (or a few, one by one) decodes
    through a compiled step on the CPU: True compiles or loads it at start; "auto", for fp32
    models, loads it where this machine measured it faster, compiling and measuring it at the
    first start; False never (compile_choice.step_for_serving). allow_origin: the origins
    (`http://localhost:5173`, or `*` for any) whose web pages may call the API from a browser (CORS);
    none by default: only the playground, served from the same origin. tool_call_parser: the format
    chat replies are read in for tool calls when a request gives `tools`, as vLLM's parsers of the
    same names read them: "hermes" (`<tool_call>{...}</tool_call>`, as Qwen2.5, Hermes and SmolLM3
    write them), "llama3_json" (`{"name": ..., "parameters": {...}}`, Llama 3.1 / 3.2 / 3.3; also
    by vLLM's other name for it, "llama4_json"),
    "pythonic" (`[f(a=1)]`, Llama 3.2 1B / 3B and Llama 4; forced calls refused); none by default,
    as vLLM's: such a request is then a 400 unless its tool_choice is "none"."""
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError as e:
        raise LmforgeError(
            f"lmforge serve needs fastapi and uvicorn ({e.name} is missing): pip install fastapi uvicorn"
            " (in a checkout of lmforge: pip install -e '.[serve]')"
        ) from None
    from lmforge.server.app import Settings, create_app
    from lmforge.server.batcher import Batcher
    from lmforge.server.models import load_models

    check_serve_options(host, port, max_queue, max_tokens_limit, timeout)
    check_tool_call_parser(tool_call_parser)
    origins = check_origins(allow_origin or [])
    check_options(dtype=dtype, compile=compile)
    key, given = read_api_key(api_key, api_key_file)
    for path in models:  # a missing or foreign directory fails before any model loads
        resolve_model_dir(path)
    _check_port_free(host, port)
    with signals_stop():  # a SIGTERM while models load (a compile takes minutes) says so, as elsewhere
        served = load_models(list(models), dtype, compile)
    batcher = Batcher()  # decoding runs in this thread, uvicorn in another
    settings = Settings(max_queue, max_tokens_limit, float(timeout), key, origins, tool_call_parser)
    app = create_app(served, settings, batcher)
    where = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    print(f"lmforge serve: listening on {where}", file=sys.stderr)
    for m in served.values():
        chat = ", chat" if m.chat is not None else ""
        decoding = f"; {m.decoding}" if m.decoding else ""
        print(f"  {m.id}: {m.kind}{chat} ({m.directory}){decoding}", file=sys.stderr)
    # absolute: the try line works from any folder
    key_file = None if api_key_file is None else Path(api_key_file).absolute()
    print(f"  try: {try_command(where, next(iter(served.values())), given, key_file)}", file=sys.stderr)
    for line in start_warnings(host, given):
        print(f"lmforge serve: warning: {line}", file=sys.stderr)
    # uvicorn's own limit is a backstop: past it, it cancels a request's task (a bare 500)
    limit = int(SHUTDOWN_GRACE_S) + 5
    server = uvicorn.Server(
        uvicorn.Config(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=limit)
    )
    http = threading.Thread(target=server.run, name="lmforge-http", daemon=True)
    # SIGTERM (kill, systemd, docker stop) stops it as Ctrl-C does. SIGINT gets the handler too: a
    # process started in the background by a script (`cmd &`) inherits SIGINT *ignored*, and Python
    # then never raises KeyboardInterrupt, so `kill -INT` did nothing (uvicorn, run on its own,
    # also installs its handlers whatever it inherited)
    stopper = _Stopper(server, batcher)
    previous = {sig: signal.signal(sig, stopper) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        http.start()
        batcher.run(until=lambda: not http.is_alive())  # until uvicorn has stopped
    finally:
        stopper.cancel()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if not server.started:
        raise LmforgeError(f"the server could not start on {host}:{port} (see uvicorn's lines above)")
