"""Bad input: one clear line naming the setting or app, and a documented exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import APPS, REPO, SMARTSPAWN, free_port, group_members


def run_gunicorn(tmp_path: Path, *args: str, env: dict[str, str] | None = None, prelude: str = "",
                 timeout: float = 30) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("GUNICORN_")}
    full_env["PYTHONPATH"] = os.pathsep.join([str(APPS), str(REPO)])
    full_env.update(env or {})
    argv = ["gunicorn", "-b", f"127.0.0.1:{free_port()}", "--no-control-socket", *args]
    if "control_socket_disable" not in __import__("gunicorn.config").config.Config().settings:
        argv.remove("--no-control-socket")
    code = prelude + f"import sys; sys.argv = {argv!r}\nfrom gunicorn.app.wsgiapp import run\nrun()\n"
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=full_env, cwd=tmp_path, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        try:
            os.killpg(proc.pid, 9)
        except OSError:
            pass
    assert not group_members(proc.pid), "processes left behind"
    return subprocess.CompletedProcess(argv, proc.returncode, out, "")



def test_unknown_spawn_method(tmp_path):
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "--spawn-method", "fast", "probe_app:app")
    assert result.returncode == 2
    assert "argument --spawn-method: invalid choice: 'fast' (choose from 'smart', 'direct')" in result.stdout


def test_unknown_spawn_method_in_config_file(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("spawn_method = 'fast'\n")
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "probe_app:app")
    assert result.returncode == 1
    assert "spawn_method='fast' is not valid: expected 'smart'" in result.stdout


def test_negative_idle_timeout(tmp_path):
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "--preloader-idle-timeout", "-5", "probe_app:app")
    assert result.returncode == 1
    assert "Error: preloader_idle_timeout=-5 is not valid: expected a whole number of seconds >= 0" in result.stdout


def test_env_var_settings_are_read(tmp_path):
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "probe_app:app", env={"GUNICORN_CMD_ARGS": "--spawn-method=bogus"})
    assert result.returncode == 2
    assert "invalid choice: 'bogus'" in result.stdout


@pytest.mark.parametrize("method", ["smart", "direct"])
def test_missing_module_exits_with_app_load_error(tmp_path, method):
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "--spawn-method", method, "no_such_module:app")
    assert result.returncode == 4, result.stdout
    assert "Reason: app no_such_module: could not load" in result.stdout
    if method == "smart":
        assert "ModuleNotFoundError: No module named 'no_such_module'" in result.stdout.splitlines()[-1]


@pytest.mark.parametrize("method", ["smart", "direct"])
def test_app_raising_at_import_exits_with_app_load_error(tmp_path, method):
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "--spawn-method", method, "probe_app:app",
                          env={"PROBE_FAIL_IMPORT": "1"})
    assert result.returncode == 4, result.stdout
    assert "probe_app refuses to import" in result.stdout


def test_missing_attribute(tmp_path):
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "probe_app:nothing_here")
    assert result.returncode == 4
    assert "Failed to find attribute 'nothing_here' in 'probe_app'" in result.stdout.splitlines()[-1]


def test_preload_with_direct_is_refused(tmp_path):
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "--spawn-method", "direct", "--preload", "probe_app:app")
    assert result.returncode == 1
    assert "preload_app=True (--preload) conflicts with spawn_method='direct'" in result.stdout


def test_preloader_dying_while_starting(tmp_path):
    # the app kills its own process during import: the preloader dies without a word
    app = tmp_path / "suicidal.py"
    app.write_text("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\napp = None\n")
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "--pythonpath", str(tmp_path), "suicidal:app")
    assert result.returncode == 4
    assert "ended by signal SIGKILL while loading the app" in result.stdout.splitlines()[-1]


def test_without_the_startup_hook_the_worker_class_says_how_to_fix(tmp_path):
    prelude = "import sys\nsys.meta_path[:] = [f for f in sys.meta_path if type(f).__name__ != '_Finder']\n"
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "probe_app:app", prelude=prelude)
    assert result.returncode == 1
    assert "needs gunicorn-smartspawn's startup hook" in result.stdout
    assert "pip install gunicorn-smartspawn" in result.stdout


def test_stock_worker_gets_the_stock_arbiter(tmp_path):
    code = (
        "import gunicorn.app.base as b, gunicorn.arbiter as a\n"
        "from gunicorn_smartspawn.hook import plugin\n"
        "from gunicorn.app.wsgiapp import WSGIApplication\n"
        "import sys; sys.argv = ['gunicorn', 'probe_app:app']\n"
        "arb = b.Arbiter(WSGIApplication())\n"
        "print(type(arb) is a.Arbiter)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(APPS))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path,
                         timeout=30)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr


# -- the apps table ------------------------------------------------------------------------

BAD_APPS = [
    ({"shop": {"app": "probe_app:app", "bind": "127.0.0.1:1", "wokers": 2}},
     "apps['shop'] has an unknown key 'wokers'; did you mean 'workers'?"),
    ({"shop": {"bind": "127.0.0.1:1"}}, "apps['shop'] has no 'app'"),
    ({"shop": {"app": "probe_app:app"}}, "apps['shop'] has no 'bind'"),
    ({"shop": {"app": "probe_app:app", "bind": "127.0.0.1:1", "workers": "4"}},
     "apps['shop']['workers']='4' is not valid: expected a whole number >= 1"),
    ({"shop": {"app": "probe_app:app", "bind": "127.0.0.1:1", "workers": 0}},
     "apps['shop']['workers']=0 is not valid: expected a whole number >= 1"),
    ({"shop": {"app": "probe_app:app", "bind": "127.0.0.1:1", "spawn_method": "fast"}},
     "apps['shop']['spawn_method']='fast' is not valid: expected 'smart' (fork workers from a preloader) or 'direct'"),
    ({"shop": {"app": "probe_app:app", "bind": "127.0.0.1:1", "preloader_idle_timeout": -1}},
     "apps['shop']['preloader_idle_timeout']=-1 is not valid: expected a whole number of seconds >= 0 (0 keeps the preloader forever)"),
    ({"shop": {"app": "probe_app:app", "bind": "127.0.0.1:1", "env": {"A": 1}}},
     "apps['shop']['env']={'A': 1} is not valid: expected a dict whose values are strings"),
    ({"shop": {"app": "probe_app:app", "bind": "127.0.0.1:1"}, "blog": {"app": "probe_app:app", "bind": "localhost:1"}},
     "apps['blog']['bind']='localhost:1' is used also by apps['shop']"),
    ({"shop": {"app": "probe_app:app", "bind": "127.0.0.1:1"}, "SHOP": {"app": "probe_app:app", "bind": "127.0.0.1:2"}},
     "apps: the names 'shop' and 'SHOP' differ only in case"),
    ({"bad name": {"app": "probe_app:app", "bind": "127.0.0.1:1"}}, "apps: the name 'bad name' is not valid"),
    ({"shop": "probe_app:app"}, "apps['shop']='probe_app:app' is not valid: expected a dict of settings"),
    (["shop"], "apps=['shop'] is not valid: expected a dict of app name -> dict of settings"),
]


@pytest.mark.parametrize("apps,message", BAD_APPS, ids=[m.split(" is ")[0][:40] for _, m in BAD_APPS])
def test_bad_apps_table(tmp_path, apps, message):
    (tmp_path / "gunicorn.conf.py").write_text(f"worker_class = 'smartspawn.Worker'\napps = {apps!r}\n")
    result = run_gunicorn(tmp_path)
    assert result.returncode == 1, result.stdout
    assert message in result.stdout, result.stdout
    assert "Listening at" not in result.stdout and "Booting worker" not in result.stdout


def test_apps_and_app_module_together_are_refused(tmp_path):
    port = free_port()
    (tmp_path / "gunicorn.conf.py").write_text(
        f"worker_class = 'smartspawn.Worker'\napps = {{'shop': {{'app': 'probe_app:app', 'bind': '127.0.0.1:{port}'}}}}\n")
    result = run_gunicorn(tmp_path, "probe_app:app")
    assert result.returncode == 1
    assert "both APP_MODULE (probe_app:app) and apps = {...} are given" in result.stdout


def test_apps_without_the_worker_class_are_refused(tmp_path):
    port = free_port()
    (tmp_path / "gunicorn.conf.py").write_text(f"apps = {{'shop': {{'app': 'probe_app:app', 'bind': '127.0.0.1:{port}'}}}}\n")
    result = run_gunicorn(tmp_path)
    assert result.returncode == 1
    assert "apps = {...} needs worker_class = 'smartspawn.Worker'" in result.stdout


def test_an_app_bind_in_use_names_the_app(tmp_path):
    import socket

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    try:
        (tmp_path / "gunicorn.conf.py").write_text(
            "worker_class = 'smartspawn.Worker'\n"
            f"apps = {{'shop': {{'app': 'probe_app:app', 'bind': '127.0.0.1:{port}'}}}}\n")
        result = run_gunicorn(tmp_path)
    finally:
        holder.close()
    assert result.returncode == 1
    assert f"apps['shop']['bind']='127.0.0.1:{port}' cannot be bound: Address already in use" in result.stdout
    assert "Booting worker" not in result.stdout


def test_workers_that_cannot_boot_halt_a_single_smart_app_with_code_3(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text("def post_fork(server, worker):\n    raise RuntimeError('no')\n")
    result = run_gunicorn(tmp_path, *SMARTSPAWN, "probe_app:app")
    assert result.returncode == 3, result.stdout
    assert "worker died before serving" in result.stdout.splitlines()[-1]


def test_typos_of_settings_in_the_config_file_get_a_did_you_mean(tmp_path):
    (tmp_path / "gunicorn.conf.py").write_text(
        "worker_class = 'smartspawn.Worker'\nspawn_methd = 'direct'\npreloader_idle_timout = 0\nbilling_db = 'x'\n"
    )
    result = run_gunicorn(tmp_path, "--check-config", "probe_app:app")
    assert result.returncode == 0, result.stdout
    assert "sets 'spawn_methd', which is no setting, so gunicorn ignores it; did you mean 'spawn_method'?" in result.stdout
    assert "did you mean 'preloader_idle_timeout'?" in result.stdout
    assert "billing_db" not in result.stdout


def test_a_stock_run_says_nothing_about_its_config_files_names(tmp_path):
    # a helper variable named like a plugin setting, and a typo: a stock run is untouched by the plugin
    (tmp_path / "gunicorn.conf.py").write_text("spawn_methd = 'direct'\napps = ['billing', 'shop']\nspawn_method = 'x'\n")
    result = run_gunicorn(tmp_path, "--check-config", "probe_app:app")
    assert result.returncode == 0, result.stdout
    assert "did you mean" not in result.stdout
