"""Listening sockets of a multi-app master: one set per app, bound before any import.

The one-app form leaves binding to gunicorn. With an ``apps`` table the
master binds each app's addresses itself, reusing sockets it inherited
(systemd's ``LISTEN_FDS`` or gunicorn's ``GUNICORN_FD`` after USR2) when
their address matches, so that no connection is refused across a re-exec.
"""

from __future__ import annotations

import errno
import os
import socket
import time
from collections.abc import Iterable, Sequence
from typing import Any

from gunicorn import sock, systemd, util

from gunicorn_smartspawn.config.apps import AppSpec, normalize_bind

BIND_ATTEMPTS = 3


def inherited_fds() -> tuple[list[int], bool]:
    """Listening fds passed by systemd or a re-executing master, and whether systemd passed them."""
    count = systemd.listen_fds()
    if count:
        return list(range(systemd.SD_LISTEN_FDS_START, systemd.SD_LISTEN_FDS_START + count)), True
    if "GUNICORN_FD" in os.environ:
        return [int(fd) for fd in os.environ.pop("GUNICORN_FD").split(",") if fd], False
    return [], False


def listener_key(listener: Any) -> str:
    """The :func:`normalize_bind` form of a gunicorn listener's address."""
    text = str(listener)
    for scheme in ("http://", "https://"):
        if text.startswith(scheme):
            text = text[len(scheme):]
    return normalize_bind(text)


def bind_apps(specs: Iterable[AppSpec], cfg: Any, log: Any, fds: Sequence[int] = (), strict: bool = True) -> dict[str, str]:
    """Give each spec without listeners its sockets: inherited ones first, then new ones.

    ``strict`` (at start): a bind failure raises. Otherwise (a reload) it is
    returned as app name -> error, and that app's other new sockets closed.
    """
    failed: dict[str, str] = {}
    by_key: dict[str, Any] = {}
    for fd in fds:
        [listener] = sock.create_sockets(cfg, log, [fd])
        by_key[listener_key(listener)] = listener
    for spec in specs:
        if spec.listeners or spec.config is None:
            continue
        try:
            for bind in spec.config.binds:
                listener = by_key.pop(normalize_bind(bind), None) or bind_one(spec, bind, log)
                spec.listeners.append(listener)
        except RuntimeError as exc:
            if strict:
                raise
            failed[spec.name] = str(exc)
    for listener in by_key.values():
        log.info("Closing inherited listener %s: no app binds it any more", listener)
        listener.close()
    return failed


def bind_one(spec: AppSpec, bind: str, log: Any, retry: bool = True) -> Any:
    """One new listener for ``bind`` with the app's settings; RuntimeError naming the app if it fails."""
    address = util.parse_address(bind)
    sock_type = sock._sock_type(address)
    for attempt in range(BIND_ATTEMPTS):
        try:
            return sock_type(address, spec.cfg, log)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and attempt + 1 < BIND_ATTEMPTS and retry:
                log.error("app=%s address in use: %s, retrying", spec.name, bind)
                time.sleep(0.5)
                continue
            raise RuntimeError(
                f"apps[{spec.name!r}]['bind']={bind!r} cannot be bound: {exc.strerror or exc}"
            ) from None
    raise AssertionError("unreachable")


def close(listeners: Iterable[Any], unlink: bool) -> None:
    sock.close_sockets(list(listeners), unlink)


def accepting(listener: Any) -> bool:
    """Does ``listener`` still accept connections? A worker (app code) may have
    called ``shutdown()`` on it, which ends listening for every process sharing it."""
    try:
        return bool(listener.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN))
    except OSError:
        return False


def rebind(listener: Any, cfg: Any, log: Any) -> Any:
    """A new listener at ``listener``'s address (the old one is closed, its path kept)."""
    address = listener.cfg_addr
    listener.close()
    return sock._sock_type(address)(address, cfg, log)


def revive(master: Any, now: float) -> None:
    """A listener that stopped accepting (a worker shut it down) is bound anew, and its app's
    workers are rolled onto the new one, as on HUP."""
    for spec in list(master.apps.specs.values()):
        for listener in list(spec.listeners):
            if spec.removed or accepting(listener):
                continue
            master.log.error("app=%s listener %s stopped accepting connections: binding it again", spec.name, listener)
            try:
                fresh = rebind(listener, spec.cfg, master.log)
            except (OSError, ValueError) as exc:
                master.log.error("app=%s could not bind %s again: %s", spec.name, listener, exc)
                continue
            for other in master.apps.specs.values():  # the one-app form shares gunicorn's LISTENERS
                other.listeners = [fresh if lnr is listener else lnr for lnr in other.listeners]
            master.LISTENERS = [fresh if lnr is listener else lnr for lnr in master.LISTENERS]
            master.apps.pools[spec.name].request_reload(now)


def rebind_after_reload(master: Any, old_address: Any) -> None:
    """After a HUP: bind what the new configuration names (multi-app: each app's), keep the rest."""
    if master.multi:
        failed = bind_apps(master.apps.specs.values(), master.cfg, master.log, strict=False)
        for name, error in failed.items():
            master.apps.bind_failed(name, error, added=name in master._added)
        master.LISTENERS = master.apps.all_listeners()
        return
    if old_address != master.cfg.address:
        for lnr in master.LISTENERS:
            lnr.close()
        master.LISTENERS = sock.create_sockets(master.cfg, master.log)
        master.log.info("Listening at: %s", ",".join(str(lnr) for lnr in master.LISTENERS))
    for spec in master.apps.specs.values():
        spec.listeners = list(master.LISTENERS)
