"""Short name for the worker class: ``gunicorn -k smartspawn.Worker``."""

from gunicorn_smartspawn.worker import Worker

__all__ = ["Worker"]
