"""A log file that many worker processes append to without mixing records.

Passenger's caveat #1 ends with log files: records from processes that share
a log file interleave unless writes are synchronized with an inter-process
lock, and reopening the file does not help. :class:`LockedFileHandler` is
that lock. Use it from gunicorn's ``logconfig_dict``::

    logconfig_dict = {
        "version": 1,
        "disable_existing_loggers": False,
        "handlers": {
            "app": {
                "class": "gunicorn_smartspawn.logging.LockedFileHandler",
                "filename": "/var/log/shop/app.log",
                "formatter": "plain",
            },
        },
        "formatters": {"plain": {"format": "%(asctime)s %(process)d %(message)s"}},
        "loggers": {"shop": {"handlers": ["app"], "level": "INFO", "propagate": False}},
    }
"""

from __future__ import annotations

import fcntl
import io
import logging
import os


class LockedFileHandler(logging.FileHandler):
    """A ``FileHandler`` that appends each record whole, under an exclusive ``flock``.

    Each record is formatted and encoded first, then written with
    ``os.write`` (short writes continued) while the handler holds
    ``flock(LOCK_EX)`` on the file, so no other process using this handler
    on the same file can write inside it, whatever the record's length and
    however the kernel splits the write.

    An ``flock`` belongs to an *open file description*, and ``fork`` shares
    descriptions: a file opened in gunicorn's master (which applies
    ``logconfig_dict``) or in a preloader, and inherited by every worker,
    would be one lock that excludes no one. So the handler opens the file
    anew in each process, on that process's first record; the inherited copy
    is only closed (closing a descriptor the parent still holds loses
    nothing).

    Only append mode is accepted: reopening with ``"w"`` in every worker
    would truncate the file each time. gunicorn's ``USR1`` (reopen log files)
    works as for any ``FileHandler``.
    """

    _owner_pid: int

    def __init__(
        self,
        filename: str | os.PathLike[str],
        mode: str = "a",
        encoding: str | None = "utf-8",
        delay: bool = False,
        errors: str | None = "backslashreplace",
    ) -> None:
        if mode not in ("a", "at"):
            raise ValueError(
                f"LockedFileHandler mode={mode!r} is not supported: only 'a' (append), since every "
                "process that logs opens the file itself and 'w' would truncate it each time"
            )
        self._owner_pid = os.getpid()
        super().__init__(filename, "a", encoding or "utf-8", delay, errors or "backslashreplace")

    def _open(self) -> io.TextIOWrapper:
        stream = super()._open()
        self._owner_pid = os.getpid()
        return stream

    def _stream_of_this_process(self) -> io.TextIOWrapper:
        stream = self.stream
        if stream is not None and self._owner_pid != os.getpid():
            self.stream = None
            try:
                stream.close()  # this process's descriptor only; nothing is buffered in it
            except OSError:
                pass
            stream = None
        if stream is None:
            stream = self.stream = self._open()
        return stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = (self.format(record) + self.terminator).encode(self.encoding or "utf-8", self.errors or "strict")
            fd = self._stream_of_this_process().fileno()
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                write_all(fd, data)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        except RecursionError:
            raise
        except Exception:
            self.handleError(record)


def write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte of ``data`` is written."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
