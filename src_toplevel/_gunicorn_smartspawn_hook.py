"""Installed as a .pth import: registers gunicorn-smartspawn with gunicorn.

Every Python process in the environment imports this module at startup, so
it does almost nothing: it puts one finder on ``sys.meta_path`` that stays
inert until one of the three gunicorn modules in ``_TARGETS`` is imported. Then
it lets the real module load and calls into ``gunicorn_smartspawn.plugin``,
which registers the plugin's settings (so stock ``gunicorn --help`` lists
them) and the arbiter selector. A process that never imports gunicorn never
imports any other part of the plugin.
"""

import sys

_TARGETS = ("gunicorn.config", "gunicorn.app.base", "gunicorn.app.wsgiapp")


class _AfterLoad:
    def __init__(self, loader, name):
        self._loader = loader
        self._name = name

    def __getattr__(self, attr):
        return getattr(self._loader, attr)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _loaded(self._name)


class _Finder:
    """Wraps the loader of the two gunicorn modules the plugin extends."""

    def find_spec(self, name, path=None, target=None):
        if name not in _TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _AfterLoad(spec.loader, name)
                return spec
        return None


_done = set()


def _loaded(name):
    _done.add(name)
    if _done.issuperset(_TARGETS):
        try:
            sys.meta_path.remove(_FINDER)
        except ValueError:
            pass
    try:
        from gunicorn_smartspawn.hook import plugin

        plugin.on_gunicorn_module(name, sys.modules[name])
    except Exception as exc:  # never break a gunicorn that does not use the plugin
        sys.stderr.write("gunicorn-smartspawn: not registered with gunicorn (%s: %s)\n" % (type(exc).__name__, exc))


_FINDER = _Finder()
if not any(isinstance(f, _Finder) for f in sys.meta_path):
    sys.meta_path.insert(0, _FINDER)
    for _name in _TARGETS:
        if _name in sys.modules:
            _loaded(_name)
