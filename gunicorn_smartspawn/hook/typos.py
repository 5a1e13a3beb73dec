"""Did-you-mean for names in gunicorn.conf.py that no setting has.

gunicorn ignores unknown names in a configuration file on purpose (they may
be helper variables), so ``spawn_methd = "direct"`` silently runs with the
default. For a run with the plugin's worker, a name within a small edit
distance of a known setting (gunicorn's or the plugin's) gets one warning
line on stderr, with the suggestion; nothing is refused. A stock run (another
worker class) is left alone.
"""

from __future__ import annotations

import difflib
import sys
import types
from collections.abc import Iterable, Mapping
from typing import Any

#: How close a name must be to a setting's to be taken for a typo of it (difflib's ratio).
CUTOFF = 0.8


def suspects(names: Mapping[str, Any], known: Iterable[str]) -> list[tuple[str, str]]:
    """(name, the setting it looks like) for every name that is no setting but nearly one."""
    known = list(known)
    found: list[tuple[str, str]] = []
    for name, value in names.items():
        if name.startswith("_") or name in known or name.lower() in known:
            continue
        if isinstance(value, (types.ModuleType, type, types.FunctionType)):
            continue  # an import, a class, a helper function: not a setting
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=CUTOFF)
        if close:
            found.append((name, close[0]))
    return found


def warn(where: str, names: Mapping[str, Any], known: Iterable[str]) -> list[str]:
    """Write one line per suspect to stderr; the lines."""
    lines = [
        f"gunicorn-smartspawn: {where} sets {name!r}, which is no setting, so gunicorn ignores it; did you mean {hint!r}?"
        for name, hint in suspects(names, known)
    ]
    for line in lines:
        print(line, file=sys.stderr, flush=True)
    return lines
