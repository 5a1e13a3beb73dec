"""The wire protocol's messages: their fields, bounds, encoding and order (see the package docstring)."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, Final

from gunicorn_smartspawn.errors import ProtocolError

HEADER: Final = struct.Struct("!I")
MAX_FRAME: Final = 1 << 20  # any frame; commands
MAX_EVENT_FRAME: Final = 64 * 1024  # an event's frame: what the master buffers per channel
MAX_FDS_PER_READ: Final = 16  # one recvmsg; the kernel closes the rest (MSG_CTRUNC)
READ_SIZE: Final = 64 * 1024
MAX_READS_PER_RECEIVE: Final = 32  # a peer that writes without pause cannot hold the reader
SEND_TIMEOUT: Final = 5.0  # a peer that does not take a small frame within this many seconds is hung
MAX_TEXT: Final = 32 * 1024  # longest traceback text a preloader sends; the rest is cut, marked
MAX_ERROR_TEXT: Final = 4096  # longest error text (one line) an event carries
EVENT_BURST: Final = 2048  # event frames a channel may deliver at once ...
EVENT_RATE: Final = 2000.0  # ... and refilled per second
MAX_WATCH_TEXT: Final = 48 * 1024  # characters of one WatchFiles list (the sender packs to fit a frame)
MAX_WATCH_FRAMES: Final = 64  # WatchFiles frames one preloader may send ...
MAX_WATCH_FILES: Final = 20_000  # ... and entries in all of them
MAX_PATH: Final = 4096  # characters of one watched path (Linux PATH_MAX)


def cut_text(text: str, limit: int = MAX_TEXT) -> str:
    """``text`` cut to ``limit`` characters, marked, so that a frame (or a log line) stays bounded."""
    return text if len(text) <= limit else text[: max(0, limit - 20)] + "\n... (truncated)"


@dataclass(frozen=True)
class SpawnWorker:
    """Command: fork a worker of this ``age``; carries its heartbeat file.

    ``slot`` is its scoreboard slot, -1 for none."""

    age: int
    slot: int = -1
    spare: int = 0  # 1: park before the request loop until the master's SIGCONT (spare_workers)
    FDS: ClassVar[int] = 1


@dataclass(frozen=True)
class PreloaderReady:
    """Event: the app is imported and the preloader waits for commands."""

    pid: int
    load_seconds: float
    code: str = ""  # a fingerprint of the code it imported (hex): a restart may find other code
    FDS: ClassVar[int] = 0


@dataclass(frozen=True)
class PreloaderFailed:
    """Event: the app could not be imported; the preloader exits next."""

    error: str
    traceback: str
    FDS: ClassVar[int] = 0


@dataclass(frozen=True)
class WorkerSpawned:
    """Event: worker ``age`` runs as ``pid``, a child of the master."""

    age: int
    pid: int
    fork_ms: float
    FDS: ClassVar[int] = 0


@dataclass(frozen=True)
class SpawnFailed:
    """Event: worker ``age`` could not be forked."""

    age: int
    error: str
    FDS: ClassVar[int] = 0


@dataclass(frozen=True)
class WatchFiles:
    """Event (``--reload`` only, after the load report): files the app's import read, one
    ``<st_mtime_ns> <absolute path>`` a line (:func:`watch_entries`); the master watches them."""

    files: str
    FDS: ClassVar[int] = 0


Message = SpawnWorker | PreloaderReady | PreloaderFailed | WorkerSpawned | SpawnFailed | WatchFiles
COMMANDS: Final[dict[str, type[Any]]] = {"SpawnWorker": SpawnWorker}
EVENTS: Final[dict[str, type[Any]]] = {
    cls.__name__: cls for cls in (PreloaderReady, PreloaderFailed, WorkerSpawned, SpawnFailed, WatchFiles)
}
_TYPES: Final = {**COMMANDS, **EVENTS}
_FIELD_TYPES: Final[dict[str, tuple[type, ...]]] = {"int": (int,), "float": (float, int), "str": (str,)}
#: Longest text of each text field, in characters: longer is refused on decode, cut by ``send()``.
TEXT_LIMITS: Final[Mapping[str, Mapping[str, int]]] = {
    "PreloaderReady": {"code": 64},
    "PreloaderFailed": {"error": MAX_ERROR_TEXT, "traceback": MAX_TEXT},
    "SpawnFailed": {"error": MAX_ERROR_TEXT},
    "WatchFiles": {"files": MAX_WATCH_TEXT},
}


@dataclass(frozen=True)
class Limits:
    """What one end of a channel takes before it calls its peer hostile."""

    side: str  # names the side in errors: "events" (the master's end) or "commands"
    max_frame: int  # JSON bytes
    max_held_fds: int  # descriptors received ahead of the frame that claims them
    burst: int = 0  # token bucket of frames (0: no rate bound) ...
    rate: float = 0.0  # ... refilled per second
    ordered: bool = False  # events follow :class:`EventOrder`


EVENT_LIMITS: Final = Limits("events", MAX_EVENT_FRAME, 0, EVENT_BURST, EVENT_RATE, ordered=True)
#: A ``SpawnWorker``'s descriptor arrives with its frame's first byte: at most one waits.
COMMAND_LIMITS: Final = Limits("commands", MAX_FRAME, 1)


def max_frame_of(cls: type[Any]) -> int:
    return MAX_EVENT_FRAME if cls.__name__ in EVENTS else MAX_FRAME


def _body(message: Message) -> bytes:
    body = {"type": type(message).__name__, **asdict(message)}
    return json.dumps(body, separators=(",", ":"), allow_nan=False).encode("utf-8")


def encode(message: Message) -> bytes:
    """One frame for ``message``; refuses one over its kind's frame limit (see :func:`fit`)."""
    data = _body(message)
    limit = max_frame_of(type(message))
    if len(data) > limit:
        raise ProtocolError(f"{type(message).__name__} frame of {len(data)} bytes exceeds the {limit}-byte limit")
    return HEADER.pack(len(data)) + data


def fit(message: Message) -> Message:
    """``message`` with each text field cut to its bound, then all of them to half
    as long until the frame fits (a JSON escape is up to 12 bytes a character)."""
    cls: type[Any] = type(message)
    bounds = TEXT_LIMITS.get(cls.__name__, {})
    cap = max((len(getattr(message, name)) for name in bounds), default=0)
    while True:
        cut = {name: cut_text(getattr(message, name), min(bound, cap)) for name, bound in bounds.items()}
        fitted: Message = cls(**{**asdict(message), **cut})
        if not bounds or cap == 0 or len(_body(fitted)) <= max_frame_of(cls):
            return fitted
        cap //= 2


def decode_body(data: bytes, allowed: dict[str, type[Any]] = _TYPES) -> Message:
    """The message in one frame's JSON bytes, checked field by field."""
    try:
        body = json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not UTF-8 JSON: {cut_text(str(exc), 80)}") from None
    except RecursionError:
        raise ProtocolError("frame nests JSON too deeply") from None
    if not isinstance(body, dict):
        raise ProtocolError("frame is not a JSON object")
    name = body.pop("type", None)
    cls = allowed.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {cut_text(repr(name), 60)}: expected one of {sorted(allowed)}")
    expected = {f.name: f for f in fields(cls)}
    if set(body) != set(expected):
        raise ProtocolError(f"{name} has fields {cut_text(repr(sorted(body)), 80)}: expected {sorted(expected)}")
    for key, value in body.items():
        kinds = _FIELD_TYPES[str(expected[key].type)]
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise ProtocolError(f"{name}.{key}={cut_text(repr(value), 40)} is not of type {expected[key].type}")
    for key, bound in TEXT_LIMITS.get(name, {}).items():
        if len(body[key]) > bound:
            raise ProtocolError(f"{name}.{key} of {len(body[key])} characters exceeds the {bound}-character limit")
    message: Message = cls(**body)
    if isinstance(message, WatchFiles):
        watch_entries(message.files)  # every line checked before the master keeps any
    for key in ("pid", "age"):
        value = body.get(key)
        if value is not None and value < (2 if key == "pid" else 1):
            raise ProtocolError(f"{name}.{key}={value!r} is out of range")
    return message


def watch_entries(text: str) -> list[tuple[str, int]]:
    """The (path, mtime_ns) lines of a ``WatchFiles`` list; ProtocolError names the first bad line."""
    entries = []
    for number, line in enumerate(text.split("\n") if text else (), 1):
        stamp, _, path = line.partition(" ")
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 20):
            raise ProtocolError(f"WatchFiles line {number}: {cut_text(repr(stamp), 40)} is not an mtime in ns")
        if not path.startswith("/") or len(path) > MAX_PATH or "\0" in path:
            raise ProtocolError(f"WatchFiles line {number}: not an absolute path of at most {MAX_PATH} characters")
        entries.append((path, int(stamp)))
    return entries


def watch_frames(entries: Iterable[tuple[str, int]]) -> list[WatchFiles]:
    """The ``WatchFiles`` events for ``entries`` (path, mtime_ns): each frame within its bounds,
    at most ``MAX_WATCH_FILES`` entries in ``MAX_WATCH_FRAMES`` frames (the rest is left out)."""
    frames: list[WatchFiles] = []
    lines: list[str] = []
    size = count = 0
    for path, mtime_ns in entries:
        line = f"{mtime_ns} {path}"
        cost = len(json.dumps(line)) + 1  # what the line takes in the frame, escapes included
        if not path.startswith("/") or "\n" in path or "\0" in path or len(path) > MAX_PATH or mtime_ns < 0:
            continue
        if count >= MAX_WATCH_FILES or (size + cost > MAX_WATCH_TEXT and len(frames) + 1 >= MAX_WATCH_FRAMES):
            break
        if size + cost > MAX_WATCH_TEXT:
            frames.append(WatchFiles("\n".join(lines)))
            lines, size = [], 0
        lines.append(line)
        size += cost
        count += 1
    if lines:
        frames.append(WatchFiles("\n".join(lines)))
    return frames


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


class EventOrder:
    """What a preloader may say next: its load once and first (``PreloaderReady``, or
    ``PreloaderFailed`` and then nothing); after ``PreloaderReady``, one
    ``WorkerSpawned`` or ``SpawnFailed`` per ``SpawnWorker`` sent to it; after either load
    report, at most ``MAX_WATCH_FRAMES`` ``WatchFiles``."""

    def __init__(self) -> None:
        self.loaded: str | None = None
        self.requests = self.answers = self.watch_frames = 0

    def check(self, message: Message) -> None:
        name = type(message).__name__
        if isinstance(message, PreloaderReady | PreloaderFailed):
            if self.loaded is not None:
                raise ProtocolError(f"{name} after {self.loaded}: the limit is one load report per preloader")
            self.loaded = name
        elif isinstance(message, WatchFiles) and self.loaded is not None:
            self.watch_frames += 1
            if self.watch_frames > MAX_WATCH_FRAMES:
                raise ProtocolError(f"WatchFiles frame {self.watch_frames}: the limit is {MAX_WATCH_FRAMES} per preloader")
        elif self.loaded != "PreloaderReady":
            when = f"after {self.loaded}" if self.loaded else "before PreloaderReady"
            raise ProtocolError(f"{name} {when}: spawn answers come only from a ready preloader")
        elif self.answers >= self.requests:
            raise ProtocolError(f"{name} would be answer {self.answers + 1} to {self.requests} SpawnWorker"
                                " request(s): the limit is one answer per request")
        else:
            self.answers += 1
