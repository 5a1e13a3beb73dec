"""The master process: gunicorn's arbiter, extended. It never imports application code.

``arbiter`` holds gunicorn's overrides and composes the rest: ``children``
(the registry of every child), ``apps`` and ``pool`` (per-app state, pure),
``spawner`` (forks), ``reaper`` (exits and channel messages), ``loop`` (the
wait), ``listeners``, ``metrics`` and ``setup`` (checks of the global
configuration).
"""
