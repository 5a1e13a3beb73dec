"""What the startup hook has done so far: a leaf module any layer may read.

Written only through the functions below, by :mod:`.plugin`; read by the
worker class to refuse a run whose hook never ran.
"""

from __future__ import annotations

from typing import Any

_stock_arbiter: Any = None
_settings_registered = False


def settings_registered() -> None:
    global _settings_registered
    _settings_registered = True


def remember_stock_arbiter(arbiter_class: Any) -> None:
    global _stock_arbiter
    _stock_arbiter = arbiter_class


def stock_arbiter() -> Any:
    """gunicorn's own ``Arbiter`` class, as found before the selector replaced it."""
    return _stock_arbiter


def installed() -> bool:
    """True once the settings are registered and the arbiter selector is in place."""
    return _settings_registered and _stock_arbiter is not None
