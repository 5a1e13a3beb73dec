"""``smartspawn``: status and memory of a running gunicorn-smartspawn server.

    smartspawn status  [-s SOCKET] [--json]
    smartspawn memory  [-s SOCKET | --pid MASTER_PID] [--json]
    smartspawn restart APP [-s SOCKET]
    smartspawn scale   APP (+N | -N | N) [-s SOCKET]
    smartspawn ready   [-s SOCKET]          exit 0 once every app serves

The commands ask the master over its control socket (:mod:`.client`);
``memory --pid`` reads ``/proc`` below that pid and needs no socket. Human
output is a table that fits 100 columns; ``--json`` prints the master's
answer (schemas in docs/tools.md). Every failure is one line on stderr and
exit code 1; usage errors exit with 2. Importing this module does not import
gunicorn, so the tool starts fast.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Final, TextIO

from gunicorn_smartspawn._version import __version__
from gunicorn_smartspawn.control import client, memory
from gunicorn_smartspawn.control.protocol import PROTOCOL

WIDTH: Final = 100
MB: Final = 2**20
EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

_SCALE: Final = re.compile(r"^([+-]?)(\d{1,6})$")


class UnexpectedAnswer(client.ControlError):
    """The master's answer lacks a field this tool needs."""


# -- formatting helpers ----------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """``0.84s``, ``12s``, ``5m 02s``, ``3h 04m``, ``2d 03h``; ``-`` for None."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s" if seconds < 1 else f"{seconds:.1f}s"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600:02d}h"


def megabytes(size: int | None) -> str:
    """Bytes as MB of 2^20 bytes: one decimal, none from 100,000 MB on (so columns stay 10 wide)."""
    if size is None:
        return "-"
    return f"{size / MB:.1f}" if size < 100_000 * MB else f"{size / MB:.0f}"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 3)] + "..."


def last_line(text: str) -> str:
    """The line of an error that says most: a traceback's last one."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


# -- memory ------------------------------------------------------------------------------------

_MEM_HEAD: Final = f"{'PID':>8}  {'ROLE':<9}  {'APP':<24}{'RSS':>10}{'PSS':>10}{'PRIVATE':>10}{'SHARED':>10}{'SWAP':>10}"


def _mem_row(pid: str, role: str, app: str, figures: Mapping[str, Any]) -> str:
    cells = "".join(f"{megabytes(figures.get(key)):>10}" for key in ("rss", "pss", "private", "shared", "swap"))
    return f"{pid:>8}  {clip(role, 9):<9}  {clip(app, 23):<24}{cells}"


def format_memory(report: Mapping[str, Any]) -> str:
    """The table of a :func:`memory.memory_report` (sizes in MB of 2^20 bytes)."""
    try:
        processes = report["processes"]
        totals = report["totals"]
        by_app = report["by_app"]
        saved = int(report["saved_by_sharing"])
        master = next((p["pid"] for p in processes if p["role"] == "master"), None)
        whose = f"gunicorn master {master} and its processes" if master is not None else "the gunicorn processes"
        lines = [f"Memory of {whose}, in MB (2^20 bytes)", "", _MEM_HEAD]
        for p in processes:
            lines.append(_mem_row(str(p["pid"]), str(p["role"]), p["app"] or "-", p))
        rule = "-" * len(_MEM_HEAD)
        lines.append(rule)
        if len(by_app) > 1:
            for app, figures in by_app.items():
                count = sum(1 for p in processes if p["app"] == app)
                lines.append(_mem_row("", "app", f"{app} ({count})", figures))
        lines.append(_mem_row("", "total", f"{len(processes)} processes", totals))
        lines.append("")
        lines.append(textwrap.fill(
            f"Sharing saves {megabytes(saved)} MB: the processes map {megabytes(totals['rss'])} MB (sum of RSS) "
            f"but use {megabytes(totals['pss'])} MB (sum of PSS).",
            WIDTH,
        ))
    except (KeyError, TypeError, ValueError) as exc:
        raise UnexpectedAnswer(f"the memory report lacks a field this smartspawn needs ({exc!r})") from None
    return "\n".join(lines)


# -- status ------------------------------------------------------------------------------------

_WORKER_HEAD: Final = (
    f"  {'PID':>8}  {'GEN':>3}  {'AGE':>4}  {'UPTIME':>7}  {'REQUESTS':>8}  {'STATE':<7}  {'LAST REQUEST':<12}"
    f"{'PSS MB':>9}{'PRIV MB':>9}"
)


def _worker_state(w: Mapping[str, Any]) -> str:
    if not w.get("ready"):
        return "booting"
    busy = w.get("busy")
    return "-" if busy is None else ("busy" if busy else "idle")


def _last_request(w: Mapping[str, Any]) -> str:
    ago = w.get("last_request_ago")
    if ago is not None:
        return f"{duration(ago)} ago"
    return "never" if w.get("requests") == 0 else "-"


def _local_memory(pid: int, app: str) -> memory.MemoryInfo | None:
    """The worker's memory if this machine's /proc shows that very worker (same pid namespace)."""
    try:
        if memory.parse_title(memory.read_title(pid)) != ("worker", app):
            return None
        return memory.read_memory(pid)
    except memory.MemoryReadError:
        return None


def _app_lines(app: Mapping[str, Any], read_proc: bool) -> list[str]:
    name = str(app["name"])
    workers = app["workers"]
    retry = app.get("retry_in")
    rest = (
        f"  {app['spawn_method']}  {app['state']}{f' (retry in {duration(retry)})' if retry is not None else ''}  "
        f"{len(workers)} worker{'s' if len(workers) != 1 else ''} (target {app['target']})  gen {app['generation']}"
    )
    lines = [clip(clip(name, max(20, WIDTH - len(rest))) + rest, WIDTH)]
    if app.get("last_error"):
        wrapped = textwrap.wrap(last_line(str(app["last_error"])), WIDTH, initial_indent="  error: ",
                                subsequent_indent=" " * 9, max_lines=3, placeholder=" ...")
        lines.extend(wrapped)
    pool = app.get("pool")
    if isinstance(pool, Mapping):
        idle = pool.get("worker_idle_timeout")
        lines.append(
            f"  pool {pool.get('min_workers')}..{pool.get('max_workers')}  busy {pool.get('busy')}  "
            f"queue {pool.get('queue')}  idle out after {duration(idle) if idle else 'never'}"
        )
        last = pool.get("last_decision")
        if isinstance(last, Mapping):
            lines.append(clip(f"  last: {last.get('what')} ({duration(last.get('ago'))} ago)", WIDTH))
    preloader = app.get("preloader")
    if preloader is not None:
        timeout = preloader["idle_timeout"]
        stops = f"stops after {duration(timeout)}" if timeout else "never stops"
        loaded = f"loaded in {duration(preloader['loaded_in'])}" if preloader.get("loaded_in") is not None else "loading"
        lines.append(
            f"  preloader {preloader['pid']}  gen {preloader['generation']}  {loaded}  "
            f"idle {duration(preloader['idle_for'])} ({stops})"
        )
    elif app["spawn_method"] == "smart" and app["state"] in ("running", "starting"):
        lines.append("  preloader: none running (one starts when a worker is needed)")
    spares = app.get("spares") or []
    if spares or app.get("spare_workers"):
        parked = ", ".join(f"{s['pid']}{'' if s['parked'] else ' (starting)'}" for s in spares)
        lines.append(clip(f"  spares {len(spares)} of {app.get('spare_workers')}: {parked or 'none parked'}", WIDTH))
    if workers:
        lines.append(_WORKER_HEAD)
    for w in workers:
        mem = _local_memory(int(w["pid"]), name) if read_proc else None
        requests = w.get("requests")
        lines.append(
            f"  {w['pid']:>8}  {w['generation']:>3}  {w['age']:>4}  {duration(w.get('uptime')):>7}  "
            f"{'-' if requests is None else requests:>8}  {_worker_state(w):<7}  {_last_request(w):<12}"
            f"{megabytes(mem.pss if mem else None):>9}{megabytes(mem.private if mem else None):>9}"
        )
    return lines


def format_status(status: Mapping[str, Any], read_proc: bool = True) -> str:
    """The table of a status answer; worker memory from /proc when ``read_proc``."""
    try:
        master = status["master"]
        apps = status["apps"]
        lines = [
            clip(
                f"gunicorn-smartspawn {master['smartspawn']} on gunicorn {master['gunicorn']}: master {master['pid']}, "
                f"up {duration(master['uptime'])}, {len(apps)} app{'s' if len(apps) != 1 else ''}",
                WIDTH,
            )
        ]
        for app in apps:
            lines.append("")
            lines.extend(_app_lines(app, read_proc))
    except (KeyError, TypeError, ValueError) as exc:
        raise UnexpectedAnswer(f"the master's status lacks a field this smartspawn needs ({exc!r})") from None
    return "\n".join(lines)


# -- commands ------------------------------------------------------------------------------------


def _emit(out: TextIO, result: Any, as_json: bool, human: str | None = None) -> None:
    out.write((json.dumps(result, indent=2) if as_json or human is None else human) + "\n")


def _cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    result = client.request(client.socket_path(args.socket), {"command": "status"}, args.timeout)
    _emit(out, result, args.json, None if args.json else format_status(result))
    return EXIT_OK


def _cmd_memory(args: argparse.Namespace, out: TextIO) -> int:
    if args.pid is not None:
        memory.check_master(args.pid)
        report = memory.memory_report(memory.process_tree(args.pid))
    else:
        report = client.request(client.socket_path(args.socket), {"command": "memory"}, args.timeout)
        if not isinstance(report, dict) or report.get("protocol") != PROTOCOL:
            got = report.get("protocol") if isinstance(report, dict) else None
            raise UnexpectedAnswer(f"the master's memory report has protocol {got!r}, this smartspawn reads {PROTOCOL}")
    _emit(out, report, args.json, None if args.json else format_memory(report))
    return EXIT_OK


def _cmd_restart(args: argparse.Namespace, out: TextIO) -> int:
    result = client.request(client.socket_path(args.socket), {"command": "restart", "app": args.app}, args.timeout)
    _emit(out, result, args.json, None if args.json else _done(result, f"app {args.app}: restart requested"))
    return EXIT_OK


def _cmd_scale(args: argparse.Namespace, out: TextIO) -> int:
    sign, number = args.how
    message: dict[str, Any] = {"command": "scale", "app": args.app}
    if sign:
        message["delta"] = number if sign == "+" else -number
    else:
        message["workers"] = number
    result = client.request(client.socket_path(args.socket), message, args.timeout)
    default = f"app {args.app}: scale requested"
    if isinstance(result, dict) and isinstance(result.get("workers"), int):
        before = f"{result['previous']} -> " if isinstance(result.get("previous"), int) else ""
        default = f"app {args.app}: workers {before}{result['workers']}"
    _emit(out, result, args.json, None if args.json else _done(result, default))
    return EXIT_OK


def _cmd_ready(args: argparse.Namespace, out: TextIO) -> int:
    """A readiness probe: exit 0 once every app serves, 1 (with why) until then."""
    result = client.request(client.socket_path(args.socket), {"command": "ready"}, args.timeout)
    if not isinstance(result, dict) or not isinstance(result.get("ready"), bool):
        raise UnexpectedAnswer("the master's ready answer has no 'ready'")
    _emit(out, result, args.json, None if args.json else f"{'ready' if result['ready'] else 'not ready'}: {result.get('status')}")
    return EXIT_OK if result["ready"] else EXIT_FAILED


def _done(result: Any, default: str) -> str:
    if isinstance(result, dict) and isinstance(result.get("message"), str):
        return str(result["message"])
    return default


def _scale_amount(text: str) -> tuple[str, int]:
    match = _SCALE.match(text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give +N or -N to add or remove workers, or N for a total")
    sign, number = match.group(1), int(match.group(2))
    if sign and number == 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a change of 0 workers changes nothing")
    return sign, number


def _positive_pid(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pid")
    return int(text)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0 or value > 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds, more than 0 and at most 3600")
    return value


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-s", "--socket", metavar="SOCKET",
        help=f"the master's control socket (--smartspawn-socket); default: ${client.SOCKET_ENV}, "
        f"else {client.default_socket_path()}",
    )
    common.add_argument("--json", action="store_true", help="print the answer as JSON (schemas in docs/tools.md)")
    common.add_argument("--timeout", type=_positive_seconds, default=client.DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"how long to wait for the master (default {client.DEFAULT_TIMEOUT:g})")
    parser = argparse.ArgumentParser(
        prog="smartspawn",
        description="Status and memory of a running gunicorn-smartspawn server.",
    )
    parser.add_argument("--version", action="version", version=f"smartspawn {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser("status", parents=[common], help="apps, preloaders and workers").set_defaults(run=_cmd_status)
    mem = commands.add_parser("memory", parents=[common], help="RSS, PSS, private and shared memory per process")
    mem.add_argument("--pid", type=_positive_pid, metavar="MASTER_PID",
                     help="read /proc below this master instead of asking over the socket")
    mem.set_defaults(run=_cmd_memory)
    restart = commands.add_parser("restart", parents=[common], help="restart one app (a new generation)")
    restart.add_argument("app", metavar="APP")
    restart.set_defaults(run=_cmd_restart)
    scale = commands.add_parser("scale", parents=[common], help="change one app's number of workers")
    scale.add_argument("app", metavar="APP")
    scale.add_argument("how", type=_scale_amount, metavar="+N|-N|N")
    scale.set_defaults(run=_cmd_scale)
    ready = commands.add_parser("ready", parents=[common], help="exit 0 once every app serves (a readiness probe)")
    ready.set_defaults(run=_cmd_ready)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "pid", None) is not None and args.socket is not None:
            parser.error("give either -s/--socket or --pid, not both")
    except SystemExit as exc:  # argparse: usage errors exit 2, --help and --version 0
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    try:
        return int(args.run(args, sys.stdout))
    except (client.ControlError, memory.MemoryReadError) as exc:
        sys.stderr.write(f"smartspawn: {exc}\n")
        return EXIT_FAILED
    except BrokenPipeError:  # `smartspawn status | head`: leave quietly, also at exit's flush
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
