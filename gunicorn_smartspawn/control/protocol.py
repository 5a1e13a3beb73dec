"""The control socket's wire format and address, shared by the master's server and the client.

One request per connection, one JSON object per line each way::

    client -> master   {"command": "status"}\\n
                       {"command": "memory"}\\n
                       {"command": "restart", "app": "shop"}\\n
                       {"command": "scale", "app": "shop", "delta": 1}\\n
                       {"command": "scale", "app": "shop", "workers": 3}\\n
    master -> client   {"ok": true, "protocol": 1, "version": "0.1.0", "result": {...}}\\n
                       {"ok": false, "protocol": 1, "version": "0.1.0", "error": "one line"}\\n

``protocol`` versions this format and the schemas of the ``status`` and
``memory`` results (docs/tools.md). JSON only, never pickle.

Adding a command: a handler in :mod:`.handlers`, a subcommand in :mod:`.cli`,
its ``gunicornc`` spelling in :mod:`.gunicornc`, and docs/tools.md.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, Final

from gunicorn_smartspawn._version import __version__

#: Version of the request/reply format and of the result schemas.
PROTOCOL: Final = 1
#: Environment variable that names the socket when ``-s`` is not given.
SOCKET_ENV: Final = "SMARTSPAWN_SOCKET"
#: Longest request line the master reads.
MAX_REQUEST: Final = 64 * 1024


def default_socket_path(environ: Mapping[str, str] | None = None) -> str:
    """``$XDG_RUNTIME_DIR/gunicorn-smartspawn.sock`` if XDG_RUNTIME_DIR is set,
    else ``~/.gunicorn/smartspawn.sock``."""
    env = os.environ if environ is None else environ
    runtime = env.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "gunicorn-smartspawn.sock")
    return os.path.join(os.path.expanduser("~"), ".gunicorn", "smartspawn.sock")


def socket_path(given: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The socket to use: ``given`` (``-s``), else ``$SMARTSPAWN_SOCKET``, else the default."""
    env = os.environ if environ is None else environ
    return given or env.get(SOCKET_ENV) or default_socket_path(env)


def response(result: Any = None, error: str | None = None) -> bytes:
    """One reply line."""
    body: dict[str, Any] = {"ok": error is None, "protocol": PROTOCOL, "version": __version__}
    if error is None:
        body["result"] = result
    else:
        body["error"] = error
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode() + b"\n"
