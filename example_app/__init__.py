"""Example app for gunicorn-smartspawn."""
