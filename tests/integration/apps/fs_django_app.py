"""Test app: Django alone connected to PostgreSQL at import (no library whose objects only a heap
walk finds, so a preloader at boot forks its workers before the fork-safety report).

FS_PG_PORT names the server (127.0.0.1, user postgres, trust). At import it
runs ``SELECT pg_backend_pid()``; the connection stays open in Django's
wrapper. GET / asks again and answers both backend pids.
"""

import json
import os

import django
from django.conf import settings

PORT = int(os.environ["FS_PG_PORT"])
settings.configure(
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": "postgres",
            "USER": "postgres",
            "HOST": "127.0.0.1",
            "PORT": PORT,
        }
    },
    INSTALLED_APPS=[],
    USE_TZ=True,
)
django.setup()

from django.db import connection  # noqa: E402


def backend_pid():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


AT_IMPORT = backend_pid()


def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "import": AT_IMPORT, "now": backend_pid()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
