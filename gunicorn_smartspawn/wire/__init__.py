"""The master <-> preloader wire protocol: messages, framing, and the channel.

One ``socketpair(AF_UNIX, SOCK_STREAM)`` per preloader. Every message is one
frame: a u32 big-endian length, then that many bytes of a JSON object
(``{"type": "SpawnWorker", "age": 7, "slot": 3}``). A message class that
carries descriptors (``FDS > 0``) sends them with ``SCM_RIGHTS`` in the same
``sendmsg`` as its frame; the receiver hands each message the next ``FDS``
in arrival order. Commands (master -> preloader) are imperative, events
(preloader -> master) past tense. JSON only, never pickle; unknown types,
missing or extra fields and wrong types are a :class:`ProtocolError`.

A preloader runs application code, maybe as another user: the master's end
(:data:`EVENT_LIMITS`) bounds what it takes, and past a bound ``receive()``
raises a ProtocolError that names it (then refuses everything after).
Descriptors: 0, any that arrive are closed at once. Frame: 64 KiB, refused
from its length alone. Text: :data:`TEXT_LIMITS` (``send()`` cuts an event
to fit, :func:`fit`). Rate: a bucket of 2048 frames refilled at 2000 a
second (1000 spawn answers at once take half; no preloader forks 2000
workers a second). Order: one load report, first, then one answer per
``SpawnWorker`` sent (:class:`EventOrder`), so what a preloader makes the
master log is bounded by what the master asked of it. Reads: 32 of 64 KiB
per ``receive()``. With ``--reload``, a preloader may also send, after its
load report, the files its import read (``WatchFiles``): at most 64 frames
of 48 KiB, 20,000 absolute paths of up to 4096 characters, each with its
mtime; the master watches them and can do nothing with them but reload that
same app. The
preloader's end (``COMMANDS``) takes frames up to 1 MiB and holds at most one
descriptor ahead of its frame.

Two modules: :mod:`.messages` (fields, bounds, encoding, order) and
:mod:`.channel` (framing and the socket end); everything is re-exported here.
"""

from __future__ import annotations

from gunicorn_smartspawn.wire.channel import Channel, FrameDecoder, TokenBucket
from gunicorn_smartspawn.wire.messages import (
    COMMAND_LIMITS,
    COMMANDS,
    EVENT_BURST,
    EVENT_LIMITS,
    EVENT_RATE,
    EVENTS,
    HEADER,
    MAX_ERROR_TEXT,
    MAX_EVENT_FRAME,
    MAX_FDS_PER_READ,
    MAX_FRAME,
    MAX_PATH,
    MAX_READS_PER_RECEIVE,
    MAX_TEXT,
    MAX_WATCH_FILES,
    MAX_WATCH_FRAMES,
    MAX_WATCH_TEXT,
    READ_SIZE,
    SEND_TIMEOUT,
    TEXT_LIMITS,
    EventOrder,
    Limits,
    Message,
    PreloaderFailed,
    PreloaderReady,
    SpawnFailed,
    SpawnWorker,
    WatchFiles,
    WorkerSpawned,
    cut_text,
    decode_body,
    encode,
    fit,
    max_frame_of,
    watch_entries,
    watch_frames,
)

__all__ = [
    "COMMANDS", "COMMAND_LIMITS", "EVENTS", "EVENT_BURST", "EVENT_LIMITS", "EVENT_RATE", "HEADER", "MAX_ERROR_TEXT",
    "MAX_EVENT_FRAME", "MAX_FDS_PER_READ", "MAX_FRAME", "MAX_PATH", "MAX_READS_PER_RECEIVE", "MAX_TEXT",
    "MAX_WATCH_FILES", "MAX_WATCH_FRAMES", "MAX_WATCH_TEXT", "READ_SIZE", "SEND_TIMEOUT", "TEXT_LIMITS", "Channel",
    "EventOrder", "FrameDecoder", "Limits", "Message", "PreloaderFailed", "PreloaderReady", "SpawnFailed",
    "SpawnWorker", "TokenBucket", "WatchFiles", "WorkerSpawned", "cut_text", "decode_body", "encode", "fit",
    "max_frame_of", "watch_entries", "watch_frames",
]
