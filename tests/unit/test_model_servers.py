"""worker/servers.py: what an ASGI model's server imports as a worker starts, imported in the preloader."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from gunicorn.workers.sync import SyncWorker

from gunicorn_smartspawn.worker import servers


def _in_fresh_interpreter(code: str) -> dict[str, object]:
    """Run ``code`` in a new interpreter (this one may have imported anything); it prints JSON."""
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_uvicorns_protocol_modules_are_imported_before_any_worker_needs_them() -> None:
    pytest.importorskip("uvicorn_worker")
    found = _in_fresh_interpreter("""
        import json, sys
        import uvicorn_worker
        from gunicorn.config import Config
        from gunicorn_smartspawn.worker import servers
        before = {m for m in sys.modules if m.startswith("uvicorn.protocols.http.") or m == "uvicorn.lifespan.on"}
        said = servers.prepare(uvicorn_worker.UvicornWorker, Config())
        after = {m for m in sys.modules if m.startswith("uvicorn.protocols.http.") or m == "uvicorn.lifespan.on"}
        import asyncio
        print(json.dumps({"said": said, "before": sorted(before), "after": sorted(after),
                          "loop_set": getattr(getattr(asyncio.get_event_loop_policy(), "_local", None), "_loop", None)
                                      is not None}))
    """)
    assert found["said"] == "uvicorn's protocol modules imported"
    assert found["before"] == []
    assert "uvicorn.lifespan.on" in found["after"]  # type: ignore[operator]
    assert any(m.endswith(("h11_impl", "httptools_impl")) for m in found["after"])  # type: ignore[union-attr]
    assert found["loop_set"] is False  # imports only: no event loop was made


def test_a_wsgi_model_imports_nothing_and_a_failure_is_said_not_raised() -> None:
    assert servers.prepare(SyncWorker, object()) is None
    pytest.importorskip("uvicorn_worker")
    import uvicorn_worker

    class Broken(uvicorn_worker.UvicornWorker):  # type: ignore[misc]
        CONFIG_KWARGS = {"http": "no_such_protocol"}

    said = servers.prepare(Broken, object())
    assert said is not None and said.startswith("server modules not imported (")
