"""The preloader process: imports one app once, then creates its workers on request.

:mod:`.process` is its life (become, load, serve); :mod:`.fork` how a
worker is made the master's child (one clone, or a bounded double fork).
It imports the worker layer, never the master: what it needs from the
master arrives in a :class:`~.process.Launch` at fork time.
"""
