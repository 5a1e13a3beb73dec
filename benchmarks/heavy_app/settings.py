"""Django settings for the benchmark service ``heavy_app``.

Not meant for production: fixed secret key, DEBUG off, every host allowed.
The SQLite database lives in a local file: ``$HEAVY_APP_DB`` if set,
otherwise a per-user file in the system temp directory.  It is created and
seeded on first import of :mod:`benchmarks.heavy_app.wsgi`.
"""

import os
import tempfile
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

# Bump when the models change, so that a stale database file is not reused.
SCHEMA_VERSION = 1

SECRET_KEY = "heavy-app-benchmark-only-not-a-secret"
DEBUG = os.environ.get("HEAVY_APP_DEBUG") == "1"
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "django.contrib.auth",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.humanize",
    "benchmarks.heavy_app.catalog.apps.CatalogConfig",
]

MIDDLEWARE = [
    "benchmarks.heavy_app.catalog.middleware.WorkerPidMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "benchmarks.heavy_app.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "benchmarks.heavy_app.wsgi.application"

DATABASE_PATH = os.environ.get("HEAVY_APP_DB") or os.path.join(
    tempfile.gettempdir(),
    "heavy_app-v%d-%d.sqlite3" % (SCHEMA_VERSION, os.getuid()),
)

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": DATABASE_PATH,
        "OPTIONS": {"timeout": 20},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
}
