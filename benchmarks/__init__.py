"""Benchmarks for gunicorn-smartspawn (not part of the installed package)."""
