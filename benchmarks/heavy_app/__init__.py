"""An import-heavy Django service used to benchmark worker spawning.

Importing :mod:`benchmarks.heavy_app.wsgi` sets up a small Django project
(SQLite database, one app with three models, templates, URLconf), imports
numpy and pandas and builds module-level data (a DataFrame of synthetic
orders plus a pure-Python lookup table).  See ``benchmarks/measure_import.py``
for the import time and RSS this costs.
"""
