"""Test app: memcached and redis client libraries connected at import.

pymemcache, python-memcached and redis-py (a single-connection client and a
pooled one) each open a connection while the app is imported (FS_MEMCACHED,
FS_REDIS = host:port). GET / uses every client once and answers the local
address of each one's connection ("host:port", as the servers list their
clients), next to the addresses they had at import.
"""

import json
import os

import memcache
import redis
from pymemcache.client.base import Client as PymemcacheClient

mc_host, _, mc_port = os.environ["FS_MEMCACHED"].rpartition(":")
rd_host, _, rd_port = os.environ["FS_REDIS"].rpartition(":")

PYMEMCACHE = PymemcacheClient((mc_host, int(mc_port)), connect_timeout=2, timeout=2)
PYTHON_MEMCACHED = memcache.Client([f"{mc_host}:{mc_port}"], socket_timeout=2)
REDIS_SINGLE = redis.Redis(host=rd_host, port=int(rd_port), single_connection_client=True, socket_timeout=2)
REDIS_POOLED = redis.Redis(host=rd_host, port=int(rd_port), socket_timeout=2)


def _addr(sock):
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def use_all(tag):
    PYMEMCACHE.set(f"pm-{tag}", b"1")
    assert PYMEMCACHE.get(f"pm-{tag}") == b"1"
    assert PYTHON_MEMCACHED.set(f"py-{tag}", "1")
    assert PYTHON_MEMCACHED.get(f"py-{tag}") == "1"
    REDIS_SINGLE.set(f"rs-{tag}", "1")
    REDIS_POOLED.set(f"rp-{tag}", "1")
    return {
        "pymemcache": _addr(PYMEMCACHE.sock),
        "python-memcached": _addr(PYTHON_MEMCACHED.servers[0].socket),
        "redis-single": REDIS_SINGLE.client_info()["addr"],
        "redis-pooled": REDIS_POOLED.client_info()["addr"],
    }


AT_IMPORT = use_all(f"import-{os.getpid()}")


def app(environ, start_response):
    body = json.dumps({"pid": os.getpid(), "import": AT_IMPORT, "now": use_all(os.getpid())}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]
