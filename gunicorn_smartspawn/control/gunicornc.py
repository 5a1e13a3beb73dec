"""Teach gunicorn's control socket (``gunicornc``, gunicorn >= 25.1) the plugin's commands.

gunicorn serves its control socket from a thread of the master. Commands
added here do not touch the master's state from that thread: they hand the
request to the master's loop (:meth:`SmartArbiter.run_from_thread`) and
wait for its answer, so the data comes from the same code as
``smartspawn status``::

    gunicornc -c "show apps"            same as: smartspawn status --json
    gunicornc -c "show memory"          same as: smartspawn memory --json
    gunicornc -c "app restart shop"     same as: smartspawn restart shop
    gunicornc -c "app scale shop +1"    same as: smartspawn scale shop +1
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

COMMANDS = {
    "show apps": "Apps with their preloader and workers (gunicorn-smartspawn)",
    "show memory": "RSS/PSS/private memory of every process, and what sharing saves",
    "app restart <APP>": "Restart one app: new preloader generation, graceful rotation",
    "app scale <APP> <N|+N|-N>": "Set or change one app's worker count",
}


def parse(parts: list[str]) -> dict[str, Any] | None:
    """The plugin request for a gunicornc command, or None if the command is gunicorn's."""
    words = [p.lower() for p in parts[:2]]
    if words == ["show", "apps"]:
        return {"command": "status"}
    if words == ["show", "memory"]:
        return {"command": "memory"}
    if words[:1] != ["app"]:
        return None
    if len(parts) == 3 and parts[1].lower() == "restart":
        return {"command": "restart", "app": parts[2]}
    if len(parts) == 4 and parts[1].lower() == "scale":
        amount = parts[3]
        try:
            number = int(amount)
        except ValueError:
            raise ValueError(f"app scale {parts[2]} {amount}: expected N, +N or -N") from None
        if amount.startswith(("+", "-")):
            return {"command": "scale", "app": parts[2], "delta": number}
        return {"command": "scale", "app": parts[2], "workers": number}
    raise ValueError("expected: app restart <APP> | app scale <APP> <N|+N|-N>")


def extend(server: Any, run: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Wrap ``server._execute_command`` (runs in gunicorn's control thread); ``run``
    carries a plugin request to the master's loop and returns its reply."""
    original = server._execute_command

    def execute(parts: list[str]) -> dict[str, Any]:
        request = parse(parts)
        if request is None:
            result: dict[str, Any] = original(parts)
            if parts and parts[0].lower() == "help" and isinstance(result.get("commands"), dict):
                result["commands"].update(COMMANDS)
            return result
        answer = run(request)
        if not answer.get("ok"):
            return {"success": False, "error": answer.get("error")}
        value: dict[str, Any] = answer["result"]
        return value

    server._execute_command = execute
