"""Test app: GET /log?<count>&<size> logs ``count`` records of ``size`` bytes to logger "fs.records".

Each record reads ``<pid:seq:size:payload:end>``, the payload one letter
repeated, so a record cut by another process's bytes is seen at once.
"""

import itertools
import json
import logging
import os

LOG = logging.getLogger("fs.records")
_seq = itertools.count()


def app(environ, start_response):
    pid = os.getpid()
    count, size = 0, 0
    if environ.get("PATH_INFO") == "/log":
        count, size = (int(x) for x in environ["QUERY_STRING"].split("&"))
    for _ in range(count):
        seq = next(_seq)
        LOG.info("<%d:%d:%d:%s:end>", pid, seq, size, chr(97 + seq % 26) * size)
    body = json.dumps({"pid": pid, "written": count}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
