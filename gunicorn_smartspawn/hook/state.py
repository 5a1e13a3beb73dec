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


class Explicit:
    """Mixin of the plugin's ``Setting`` classes: ``explicit`` is True once a value was given
    (command line, config file, GUNICORN_CMD_ARGS), not only the default.

    Read by the arbiter selector: a plugin setting given to a run whose worker
    class is not the plugin's is pointed out, never silently ignored.
    """

    explicit: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.explicit = False  # gunicorn's Setting.__init__ sets the default through set()

    def set(self, val: Any) -> None:
        super().set(val)  # type: ignore[misc]
        self.explicit = True
