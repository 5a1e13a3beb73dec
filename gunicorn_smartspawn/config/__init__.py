"""Configuration: one set of validators, and the ``apps`` table validated and derived.

Pure and shared by every process role: :mod:`.validators` checks a value
the same way whether it comes from a global setting or an ``apps`` entry;
:mod:`.apps` turns the table into per-app configs.
"""
