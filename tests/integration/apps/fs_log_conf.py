# gunicorn.conf.py for the locked-log test: logger "fs.records" writes through
# LockedFileHandler to $FS_LOG_FILE. gunicorn applies logconfig_dict in the
# master, so every worker inherits the handler opened there.
import os

logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "INFO", "handlers": []},
    "loggers": {"fs.records": {"level": "INFO", "handlers": ["locked"], "propagate": False}},
    "handlers": {
        "locked": {
            "class": "gunicorn_smartspawn.logging.LockedFileHandler",
            "filename": os.environ["FS_LOG_FILE"],
            "formatter": "bare",
        }
    },
    "formatters": {"bare": {"format": "%(message)s"}},
}
