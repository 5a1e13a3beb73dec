"""Test app: Django and SQLAlchemy connected to PostgreSQL at import.

FS_PG_PORT names the server (127.0.0.1, user postgres, trust). At import
both run ``SELECT pg_backend_pid()``: Django's connection stays open in its
wrapper, SQLAlchemy's goes back to the engine's pool. GET / asks again
through both and answers the backend pids, next to those of the import.
"""

import json
import os

import django
import sqlalchemy
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

ENGINE = sqlalchemy.create_engine(f"postgresql+psycopg2://postgres@127.0.0.1:{PORT}/postgres", pool_size=2)


def backend_pids():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        django_pid = cursor.fetchone()[0]
    with ENGINE.connect() as conn:
        sqlalchemy_pid = conn.execute(sqlalchemy.text("SELECT pg_backend_pid()")).scalar()
    return {"django": django_pid, "sqlalchemy": sqlalchemy_pid}


AT_IMPORT = backend_pids()


def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "import": AT_IMPORT, "now": backend_pids()}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
