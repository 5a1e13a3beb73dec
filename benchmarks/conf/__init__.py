"""gunicorn configuration files used by the benchmark variants (``-c PATH``)."""
