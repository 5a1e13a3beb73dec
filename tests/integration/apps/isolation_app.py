"""Test app that plays a hostile app in a multi-app master: what can it see of the others?

Environment (all optional):
  PROBE_HEAD, PROBE_TAIL  the two halves of another app's secret; the whole
                          secret is never put together in this process, so a
                          scan finds only copies that came from elsewhere
  HANG_AT_IMPORT          seconds to sleep at import (a stuck import)
Routes:
  /                 pid, uid at import and now, groups, and ?env=NAME's value
  /scan             the secret: copies in this process's memory (at import and
                    now) and live Python objects that contain it
  /forge            write garbage into every slot of every scoreboard this
                    process can find (other workers' slots; its own is left)
"""

import ctypes
import gc
import json
import os
import struct
import sys
import time
from urllib.parse import parse_qs

time.sleep(float(os.environ.get("HANG_AT_IMPORT", "0")))
IMPORT_UID = os.getuid()
IMPORT_EUID = os.geteuid()
HEAD = os.environ.get("PROBE_HEAD", "").encode()
TAIL = os.environ.get("PROBE_TAIL", "").encode()
SLOT = struct.Struct("=iB3xQdd")


def _regions(shared: bool):
    """(start, end, inode) of this process's anonymous private (or shared) writable mappings."""
    with open("/proc/self/maps") as f:
        lines = f.read().splitlines()
    for line in lines:
        parts = line.split(None, 5)
        perms, inode = parts[1], int(parts[4])
        path = parts[5] if len(parts) > 5 else ""
        start, end = (int(x, 16) for x in parts[0].split("-"))
        if shared:
            if perms.startswith("rw") and perms[3] == "s" and path == "/dev/zero (deleted)":
                yield start, end, inode
        elif perms.startswith("rw") and perms[3] == "p" and (not path or path in ("[heap]", "[stack]")):
            yield start, end, inode


def memory_copies() -> int:
    """Copies of HEAD+TAIL in this process's anonymous memory (read in place, through ctypes)."""
    if not HEAD:
        return -1
    found = 0
    for start, end, _ in list(_regions(shared=False)):
        data = ctypes.string_at(start, end - start)
        i = data.find(HEAD)
        while i >= 0:
            if data[i + len(HEAD) : i + len(HEAD) + len(TAIL)] == TAIL:
                found += 1
            i = data.find(HEAD, i + 1)
        del data
    return found


def live_objects() -> list[str]:
    """Types of the live objects that hold a str or bytes containing HEAD+TAIL."""
    if not HEAD:
        return []
    head, tail = HEAD.decode(), TAIL.decode()
    found = []
    gc.unfreeze()  # frozen objects (gc.freeze() in the master or the preloader) are live objects too
    for obj in gc.get_objects():
        try:
            referents = gc.get_referents(obj)
        except Exception:
            continue
        for item in referents:
            if isinstance(item, (str, bytes)):
                h, t = (head, tail) if isinstance(item, str) else (HEAD, TAIL)
                i = item.find(h)
                if i >= 0 and item[i + len(h) : i + len(h) + len(t)] == t:
                    found.append(type(obj).__name__)
    return found


def config_apps() -> list[str]:
    """The app names this process can still see in gunicorn.conf.py's ``apps`` and in the master's table."""
    names = set()
    module = sys.modules.get("__config__")
    if isinstance(getattr(module, "apps", None), dict):
        names.update(module.apps)
    gc.unfreeze()
    for obj in gc.get_objects():
        if type(obj).__name__ == "AppTable":
            names.update(obj.specs)
    return sorted(names)


AT_IMPORT = {"copies": memory_copies(), "live": live_objects(), "apps": config_apps()}


def scoreboards() -> list[dict]:
    return [{"inode": inode, "size": end - start} for start, end, inode in _regions(shared=True)]


def forge() -> dict:
    """Every slot with a pid that is not this process's: a billion requests, busy, NaN."""
    forged = []
    for start, end, _ in list(_regions(shared=True)):
        table = (ctypes.c_char * (end - start)).from_address(start)
        for offset in range(0, end - start - SLOT.size + 1, SLOT.size):
            pid = SLOT.unpack_from(table, offset)[0]
            if pid and pid != os.getpid():
                SLOT.pack_into(table, offset, pid, 200, 999_999_999, float("nan"), float("inf"))
                forged.append(pid)
    return {"forged": forged, "scoreboards": scoreboards()}


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    query = parse_qs(environ.get("QUERY_STRING", ""))
    if path == "/scan":
        body = {"at_import": AT_IMPORT, "now": {"copies": memory_copies(), "live": live_objects(), "apps": config_apps()}}
    elif path == "/forge":
        body = forge()
    else:
        body = {"scoreboards": scoreboards()}
    body.update({
        "pid": os.getpid(),
        "import_uid": IMPORT_UID,
        "import_euid": IMPORT_EUID,
        "uid": os.getuid(),
        "gid": os.getgid(),
        "groups": sorted(os.getgroups()),
        "env": {name: os.environ.get(name) for name in query.get("env", [])},
    })
    data = json.dumps(body).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]
