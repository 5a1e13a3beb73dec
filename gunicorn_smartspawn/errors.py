"""Exit codes and exceptions, named.

gunicorn's own worker codes (3 = WORKER_BOOT_ERROR, 4 = APP_LOAD_ERROR) keep
their meaning for workers. A preloader never exits with 3 or 4, so no reaping
code (ours or, on gunicorn 23, the base class's) can mistake a preloader's
exit for a worker that failed to boot.
"""

from __future__ import annotations

#: gunicorn's codes, repeated so the plugin does not import the arbiter to name them.
WORKER_BOOT_ERROR = 3
APP_LOAD_ERROR = 4

#: The preloader's channel to the master reached EOF: the master told it to go
#: (idle timeout, new generation, shutdown) or the master is gone.
PRELOADER_EXIT_OK = 0
#: The preloader could not import the app; the traceback went over the channel.
PRELOADER_LOAD_ERROR = 12
#: The preloader broke in its own loop (a bug, or a hostile message).
PRELOADER_CRASHED = 13
#: The master's end of the channel sent a frame the preloader refuses.
PRELOADER_PROTOCOL_ERROR = 16
#: The double-fork intermediate could not fork the worker.
INTERMEDIATE_FORK_ERROR = 14
#: A forked worker never saw the master become its parent.
WORKER_REPARENT_TIMEOUT = 15


class SmartSpawnError(Exception):
    """Base class of the plugin's own errors."""


class ConfigError(SmartSpawnError, ValueError):
    """A setting has a value the plugin cannot use. The message names it."""


class ProtocolError(SmartSpawnError):
    """A frame on the master<->preloader channel is malformed."""


class HookNotInstalled(SmartSpawnError, RuntimeError):
    """``-k smartspawn.Worker`` was given but the startup hook never ran."""


def describe_status(status: int) -> str:
    """``waitpid`` status as words: ``exit code 4`` or ``signal SIGKILL``."""
    import os
    import signal

    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    if os.WIFEXITED(status):
        return f"exit code {os.WEXITSTATUS(status)}"
    return f"status {status}"


def exit_code(status: int) -> int | None:
    """The exit code in a ``waitpid`` status, or None if a signal ended the process."""
    import os

    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status)
    return None
