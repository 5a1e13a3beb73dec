"""The master <-> preloader wire protocol: messages, framing, descriptors, the channel,
and the bounds of the master's end against a hostile preloader."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gunicorn_smartspawn import wire
from gunicorn_smartspawn.errors import ProtocolError
from gunicorn_smartspawn.wire import (
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
    MAX_READS_PER_RECEIVE,
    MAX_TEXT,
    Channel,
    EventOrder,
    FrameDecoder,
    PreloaderFailed,
    PreloaderReady,
    SpawnFailed,
    SpawnWorker,
    TokenBucket,
    WatchFiles,
    WorkerSpawned,
    cut_text,
    decode_body,
    encode,
    fit,
    watch_entries,
    watch_frames,
)

MESSAGES = [
    SpawnWorker(age=7),
    PreloaderReady(pid=4321, load_seconds=2.375),
    PreloaderFailed(
        error="ModuleNotFoundError: No module named 'shop'",
        traceback='Traceback (most recent call last):\n  File "wsgi.py", line 1\n    caf\u00e9 \u2603 "quoted" \\ \x00\n',
    ),
    WorkerSpawned(age=7, pid=4400, fork_ms=8.25),
    SpawnFailed(age=8, error="[Errno 11] Resource temporarily unavailable"),
    WatchFiles(files="1732960000123456789 /srv/app/wsgi.py\n0 /srv/app/caf\u00e9 d\u00e9j\u00e0.py"),
]


def frame(body: object) -> bytes:
    """A frame around arbitrary JSON (or raw bytes), bypassing ``encode``'s checks."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HEADER.pack(len(data)) + data


def fds_for(messages: list[object], first: int = 100) -> list[int]:
    """Fake descriptor numbers, one per message that carries one (the decoder does no I/O)."""
    count = sum(type(m).FDS for m in messages)
    return list(range(first, first + count))


def expected_pairs(messages: list[object], fds: list[int]) -> list[tuple[object, tuple[int, ...]]]:
    it: Iterator[int] = iter(fds)
    return [(m, tuple(next(it) for _ in range(type(m).FDS))) for m in messages]


# -- encode / decode -------------------------------------------------------------------------


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message: object) -> None:
    data = encode(message)  # type: ignore[arg-type]
    (length,) = HEADER.unpack_from(data)
    assert length == len(data) - HEADER.size
    body = json.loads(data[HEADER.size :])
    assert body["type"] == type(message).__name__
    assert decode_body(data[HEADER.size :]) == message
    decoder = FrameDecoder()
    fds = fds_for([message])
    decoder.feed(data, fds)
    assert list(decoder) == [(message, tuple(fds))]
    assert decoder.leftover_fds() == []


def test_every_message_type_is_covered() -> None:
    assert {type(m).__name__ for m in MESSAGES} == set(COMMANDS) | set(EVENTS)


def test_header_is_big_endian_u32_of_the_json_length() -> None:
    data = encode(SpawnWorker(age=1))
    assert data[:4] == len(data[4:]).to_bytes(4, "big")
    assert json.loads(data[4:]) == {"type": "SpawnWorker", "age": 1, "slot": -1, "spare": 0}


def test_float_field_accepts_a_json_integer() -> None:
    message = decode_body(b'{"type": "PreloaderReady", "pid": 5, "load_seconds": 2, "code": ""}')
    assert message == PreloaderReady(pid=5, load_seconds=2.0)


def test_encode_refuses_an_oversized_frame() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        encode(PreloaderFailed(error="x" * MAX_FRAME, traceback=""))
    with pytest.raises(ProtocolError, match=f"exceeds the {MAX_EVENT_FRAME}-byte limit"):
        encode(PreloaderFailed(error="", traceback="x" * MAX_EVENT_FRAME))  # an event's limit is smaller


# -- framing ---------------------------------------------------------------------------------


def stream_and_fds() -> tuple[bytes, list[int]]:
    messages = [*MESSAGES, SpawnWorker(age=9), WorkerSpawned(age=9, pid=4401, fork_ms=0.5)]
    return b"".join(encode(m) for m in messages), fds_for(messages)  # type: ignore[arg-type]


def test_several_frames_in_one_chunk_come_out_in_order() -> None:
    messages = [*MESSAGES, SpawnWorker(age=9)]
    data = b"".join(encode(m) for m in messages)  # type: ignore[arg-type]
    fds = fds_for(messages)
    decoder = FrameDecoder()
    decoder.feed(data, fds)
    assert list(decoder) == expected_pairs(messages, fds)
    assert list(decoder) == []


def test_frames_split_at_every_byte_boundary() -> None:
    messages = [*MESSAGES, SpawnWorker(age=9), WorkerSpawned(age=9, pid=4401, fork_ms=0.5)]
    data, fds = stream_and_fds()
    expected = expected_pairs(messages, fds)
    for cut in range(len(data) + 1):
        decoder = FrameDecoder()
        decoder.feed(data[:cut], fds)  # SCM_RIGHTS arrive with the first bytes
        got = list(decoder)
        decoder.feed(data[cut:])
        got += list(decoder)
        assert got == expected, f"split at byte {cut}"
        assert decoder.leftover_fds() == []


def test_frames_fed_one_byte_at_a_time() -> None:
    messages = [*MESSAGES, SpawnWorker(age=9), WorkerSpawned(age=9, pid=4401, fork_ms=0.5)]
    fds = fds_for(messages)
    expected = expected_pairs(messages, fds)
    decoder = FrameDecoder()
    got = []
    for message, message_fds in expected:
        data = encode(message)  # type: ignore[arg-type]
        for i in range(len(data)):
            # a descriptor arrives with the first byte of its frame
            decoder.feed(data[i : i + 1], message_fds if i == 0 else ())
            got += list(decoder)
    assert got == expected


def test_incomplete_frame_waits_for_the_rest() -> None:
    data = encode(WorkerSpawned(age=1, pid=2, fork_ms=3.0))
    decoder = FrameDecoder()
    decoder.feed(data[:2])
    assert list(decoder) == []
    decoder.feed(data[2:-1])
    assert list(decoder) == []
    decoder.feed(data[-1:])
    assert list(decoder) == [(WorkerSpawned(age=1, pid=2, fork_ms=3.0), ())]


def test_descriptors_are_handed_in_order_only_to_messages_that_carry_them() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode(SpawnWorker(age=1)) + encode(PreloaderReady(pid=3, load_seconds=0.1)), [10])
    decoder.feed(encode(SpawnWorker(age=2)), [11])
    decoder.feed(encode(SpawnWorker(age=3)) + encode(SpawnWorker(age=4)), [12, 13])
    assert list(decoder) == [
        (SpawnWorker(age=1), (10,)),
        (PreloaderReady(pid=3, load_seconds=0.1), ()),
        (SpawnWorker(age=2), (11,)),
        (SpawnWorker(age=3), (12,)),
        (SpawnWorker(age=4), (13,)),
    ]
    assert decoder.leftover_fds() == []


def test_unclaimed_descriptors_are_left_over_once() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode(PreloaderReady(pid=3, load_seconds=0.1)), [20, 21])
    assert list(decoder) == [(PreloaderReady(pid=3, load_seconds=0.1), ())]
    assert decoder.leftover_fds() == [20, 21]
    assert decoder.leftover_fds() == []


def test_message_whose_descriptor_did_not_arrive_is_an_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode(SpawnWorker(age=1)))
    with pytest.raises(ProtocolError, match="descriptor"):
        list(decoder)


def test_second_message_missing_its_descriptor_is_an_error() -> None:
    decoder = FrameDecoder()
    decoder.feed(encode(SpawnWorker(age=1)) + encode(SpawnWorker(age=2)), [10])
    it = iter(decoder)
    assert next(it) == (SpawnWorker(age=1), (10,))
    with pytest.raises(ProtocolError):
        next(it)


# -- errors ------------------------------------------------------------------------------------

BAD_BODIES = {
    "unknown type": {"type": "LaunchMissiles", "age": 1},
    "no type": {"age": 1},
    "type not a string": {"type": 5, "age": 1},
    "type null": {"type": None},
    "missing field": {"type": "WorkerSpawned", "age": 1, "pid": 2},
    "extra field": {"type": "SpawnWorker", "age": 1, "pickle": "cos\nsystem\n"},
    "bool where int": {"type": "SpawnWorker", "age": True},
    "false where int": {"type": "WorkerSpawned", "age": 1, "pid": False, "fork_ms": 1.0},
    "string where int": {"type": "SpawnWorker", "age": "7"},
    "float where int": {"type": "SpawnWorker", "age": 7.0},
    "null where int": {"type": "SpawnWorker", "age": None},
    "list where int": {"type": "SpawnWorker", "age": [7]},
    "bool where float": {"type": "PreloaderReady", "pid": 1, "load_seconds": True},
    "string where float": {"type": "PreloaderReady", "pid": 1, "load_seconds": "0.5"},
    "int where str": {"type": "SpawnFailed", "age": 1, "error": 12},
    "null where str": {"type": "PreloaderFailed", "error": None, "traceback": ""},
    "object where str": {"type": "PreloaderFailed", "error": {"a": 1}, "traceback": ""},
}


@pytest.mark.parametrize("body", BAD_BODIES.values(), ids=list(BAD_BODIES))
def test_malformed_message_is_a_protocol_error(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        decode_body(json.dumps(body).encode())
    decoder = FrameDecoder()
    decoder.feed(frame(body), [10])
    with pytest.raises(ProtocolError):
        list(decoder)


@pytest.mark.parametrize(
    "data",
    [b"not json", b"{\"type\": ", b"\xff\xfe{}", b"", b"{'type': 'SpawnWorker', 'age': 1}"],
    ids=["garbage", "truncated", "not utf-8", "empty", "python repr"],
)
def test_non_json_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="JSON"):
        decode_body(data)
    decoder = FrameDecoder()
    decoder.feed(frame(data))
    with pytest.raises(ProtocolError):
        list(decoder)


@pytest.mark.parametrize("data", [b"[1, 2]", b'"SpawnWorker"', b"null", b"7", b"true"])
def test_non_object_is_a_protocol_error(data: bytes) -> None:
    with pytest.raises(ProtocolError, match="object"):
        decode_body(data)


def test_deeply_nested_json_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode_body(b"[" * 100_000 + b"]" * 100_000)


def test_error_names_the_unknown_type_and_the_allowed_ones() -> None:
    with pytest.raises(ProtocolError) as info:
        decode_body(b'{"type": "Nope"}', COMMANDS)
    assert "'Nope'" in str(info.value) and "SpawnWorker" in str(info.value)


def test_oversized_length_header_is_an_error_before_the_body_arrives() -> None:
    decoder = FrameDecoder()
    decoder.feed(HEADER.pack(MAX_FRAME + 1) + b"{")
    with pytest.raises(ProtocolError, match="exceeds"):
        list(decoder)


def test_largest_allowed_length_header_just_waits() -> None:
    decoder = FrameDecoder()
    decoder.feed(HEADER.pack(MAX_FRAME) + b"{")
    assert list(decoder) == []


def padded(body: bytes, size: int) -> bytes:
    """A frame whose JSON is ``body`` padded with whitespace to exactly ``size`` bytes (valid JSON)."""
    assert body.endswith(b"}") and len(body) <= size
    return frame(body[:-1] + b" " * (size - len(body)) + b"}")


def test_command_frame_of_exactly_max_frame_bytes_is_accepted() -> None:
    data = padded(b'{"type":"SpawnWorker","age":1,"slot":-1,"spare":0}', MAX_FRAME)
    assert len(data) == HEADER.size + MAX_FRAME
    decoder = FrameDecoder(COMMANDS)
    decoder.feed(data, [10])
    assert list(decoder) == [(SpawnWorker(age=1), (10,))]


def test_event_frame_of_exactly_max_event_frame_bytes_is_accepted_one_more_is_not() -> None:
    body = b'{"type":"SpawnFailed","age":1,"error":"e"}'
    decoder = FrameDecoder(EVENTS, MAX_EVENT_FRAME, "events")
    decoder.feed(padded(body, MAX_EVENT_FRAME))
    assert list(decoder) == [(SpawnFailed(age=1, error="e"), ())]
    decoder.feed(padded(body, MAX_EVENT_FRAME + 1))
    refused = f"frame of {MAX_EVENT_FRAME + 1} bytes exceeds the {MAX_EVENT_FRAME}-byte limit for events"
    with pytest.raises(ProtocolError, match=refused):
        list(decoder)


# -- who may send what --------------------------------------------------------------------------


def test_commands_and_events_are_disjoint_and_complete() -> None:
    assert set(COMMANDS) == {"SpawnWorker"}
    assert set(EVENTS) == {"PreloaderReady", "PreloaderFailed", "WorkerSpawned", "SpawnFailed", "WatchFiles"}
    assert not set(COMMANDS) & set(EVENTS)
    for name, cls in {**COMMANDS, **EVENTS}.items():
        assert cls.__name__ == name


@pytest.mark.parametrize("message", [m for m in MESSAGES if type(m).__name__ in EVENTS], ids=lambda m: type(m).__name__)
def test_preloader_side_rejects_events(message: object) -> None:
    data = encode(message)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode_body(data[HEADER.size :], COMMANDS)
    decoder = FrameDecoder(COMMANDS)
    decoder.feed(data)
    with pytest.raises(ProtocolError):
        list(decoder)
    assert decode_body(data[HEADER.size :], EVENTS) == message


def test_master_side_rejects_commands() -> None:
    data = encode(SpawnWorker(age=1))
    with pytest.raises(ProtocolError, match="unknown message type"):
        decode_body(data[HEADER.size :], EVENTS)
    decoder = FrameDecoder(EVENTS)
    decoder.feed(data, [10])
    with pytest.raises(ProtocolError):
        list(decoder)
    assert decode_body(data[HEADER.size :], COMMANDS) == SpawnWorker(age=1)


# -- the channel over a real socketpair -----------------------------------------------------------


@pytest.fixture
def channels() -> Iterator[tuple[Channel, Channel]]:
    """(the master's end, the preloader's end), as the arbiter and the preloader build them."""
    master, preloader_sock = Channel.pair()
    preloader = Channel(preloader_sock, COMMANDS)
    yield master, preloader
    for channel in (master, preloader):
        if channel.sock.fileno() >= 0:
            channel.close()


def fd_is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def open_fds() -> int:
    """How many descriptors this process holds (the listing's own included: compare counts only)."""
    return len(os.listdir("/proc/self/fd"))


def test_pair_ends_are_close_on_exec_and_non_blocking(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    assert not master.sock.get_inheritable()
    assert not preloader.sock.get_inheritable()
    assert master.sock.gettimeout() == 0.0
    assert master.fileno() == master.sock.fileno()


def test_receive_with_nothing_sent_returns_nothing(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    assert master.receive() == []
    assert preloader.receive() == []


def test_command_carries_its_descriptor(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    r, w = os.pipe()
    try:
        master.send(SpawnWorker(age=3), [r])
        assert master.sock.gettimeout() == 0.0  # back to non-blocking after the send
        ((message, fds),) = preloader.receive()
        assert message == SpawnWorker(age=3)
        (received,) = fds
        assert received not in (r, w)
        os.write(w, b"heartbeat")
        assert os.read(received, 100) == b"heartbeat"  # the same pipe, a new descriptor
        os.close(received)
    finally:
        os.close(r)
        os.close(w)


def request(master: Channel, preloader: Channel, ages: range) -> None:
    """The master asks for workers ``ages``; the preloader's end takes the requests (closing the heartbeat copies)."""
    r, w = os.pipe()
    try:
        for age in ages:
            master.send(SpawnWorker(age=age), [r])
            if age % 64 == 0:
                _take_requests(preloader)
        _take_requests(preloader)
    finally:
        os.close(r)
        os.close(w)


def _take_requests(preloader: Channel) -> None:
    while taken := preloader.receive():  # each receive() makes a bounded number of reads
        for message, fds in taken:
            assert isinstance(message, SpawnWorker) and len(fds) == 1
            os.close(fds[0])


def test_events_arrive_in_order(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    request(master, preloader, range(7, 9))
    events = [
        PreloaderReady(pid=4321, load_seconds=2.375),
        WorkerSpawned(age=7, pid=4400, fork_ms=8.25),
        SpawnFailed(age=8, error="[Errno 11] Resource temporarily unavailable"),
    ]
    for event in events:
        preloader.send(event)
    assert master.receive() == [(e, ()) for e in events]
    assert master.receive() == []


def test_failed_load_arrives(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    failed = next(m for m in MESSAGES if isinstance(m, PreloaderFailed))
    preloader.send(failed)
    assert master.receive() == [(failed, ())]


def test_frame_split_across_sends_waits_for_its_rest(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    data = encode(PreloaderFailed(error="boom", traceback="t" * 30_000))
    preloader.sock.sendall(data[:15_000])
    assert master.receive() == []
    preloader.sock.sendall(data[15_000:])
    assert master.receive() == [(PreloaderFailed(error="boom", traceback="t" * 30_000), ())]


def test_command_frame_larger_than_one_read_arrives_whole(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    data = padded(b'{"type":"SpawnWorker","age":5,"slot":2,"spare":0}', 300_000)
    r, w = os.pipe()
    try:
        socket.send_fds(master.sock, [data[:1000]], [r])
        master.sock.setblocking(True)
        received = []
        sender = threading.Thread(target=master.sock.sendall, args=(data[1000:],))
        sender.start()
        while not received:
            received = preloader.receive()
        sender.join()
        ((message, (fd,)),) = received
        assert message == SpawnWorker(age=5, slot=2)
        os.close(fd)
    finally:
        os.close(r)
        os.close(w)


def test_send_cuts_an_event_to_fit_its_bounds(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    # what the preloader sends: first line and traceback cut to MAX_TEXT by cut_text;
    # escapes (\u2603 is 6 bytes in JSON) would still make a frame of ~200 KB
    huge = PreloaderFailed(error=cut_text("E" * 100_000), traceback=cut_text("\u2603" * 100_000))
    preloader.send(huge)
    ((message, fds),) = master.receive()
    assert isinstance(message, PreloaderFailed) and fds == ()
    assert len(message.error) <= MAX_ERROR_TEXT and message.error.endswith("(truncated)")
    assert message.traceback.startswith("\u2603" * 100) and message.traceback.endswith("(truncated)")
    assert len(encode(message)) <= HEADER.size + MAX_EVENT_FRAME


def test_fit_keeps_what_fits_and_cuts_only_what_must() -> None:
    small = SpawnFailed(age=1, error="fork: EAGAIN")
    assert fit(small) == small
    assert fit(SpawnWorker(age=1)) == SpawnWorker(age=1)
    long_error = fit(SpawnFailed(age=1, error="x" * 10_000))
    assert isinstance(long_error, SpawnFailed) and len(long_error.error) <= MAX_ERROR_TEXT
    # ASCII text within the bounds fits as it is
    within = PreloaderFailed(error="e" * MAX_ERROR_TEXT, traceback="t" * (MAX_TEXT - 100))
    assert fit(within) == within
    # the worst escaping (12 bytes a character) is cut until the frame fits
    worst = fit(PreloaderFailed(error="\U0001f600" * MAX_ERROR_TEXT, traceback="\x00" * MAX_TEXT))
    assert len(encode(worst)) <= HEADER.size + MAX_EVENT_FRAME


def test_send_refuses_the_wrong_number_of_descriptors(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    with pytest.raises(ProtocolError):
        master.send(SpawnWorker(age=1))
    with pytest.raises(ProtocolError):
        preloader.send(PreloaderReady(pid=1, load_seconds=0.1), [0])
    assert preloader.receive() == [] and master.receive() == []


def test_peer_closing_is_eof(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    preloader.close()
    with pytest.raises(EOFError):
        master.receive()
    with pytest.raises(EOFError):
        master.receive()


def test_messages_before_eof_are_delivered_then_eof(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    request(master, preloader, range(1, 2))
    preloader.send(PreloaderReady(pid=9, load_seconds=1.0))
    preloader.send(WorkerSpawned(age=1, pid=10, fork_ms=2.0))
    preloader.close()
    assert master.receive() == [
        (PreloaderReady(pid=9, load_seconds=1.0), ()),
        (WorkerSpawned(age=1, pid=10, fork_ms=2.0), ()),
    ]
    with pytest.raises(EOFError):
        master.receive()


def test_master_end_rejects_a_command_sent_to_it(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    r, w = os.pipe()
    try:
        preloader.send(SpawnWorker(age=1), [r])
        with pytest.raises(ProtocolError):
            master.receive()
    finally:
        os.close(r)
        os.close(w)
        master.close()  # closes the descriptor that came with the rejected frame, if kept


def test_close_closes_the_descriptor_of_a_frame_not_complete_yet(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    r, w = os.pipe()
    try:
        data = encode(SpawnWorker(age=1))
        socket.send_fds(master.sock, [data[:5]], [r])  # the command's first bytes and its descriptor
        assert preloader.receive() == []
        assert preloader.held_fds == 1
        before = open_fds()
        preloader.close()
        assert before - open_fds() == 2  # the socket and the waiting descriptor
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"WorkerSpawned","age":1,"pid":0,"fork_ms":1.0}',
        b'{"type":"WorkerSpawned","age":1,"pid":-1,"fork_ms":1.0}',
        b'{"type":"PreloaderReady","pid":1,"load_seconds":1.0,"code":""}',
        b'{"type":"SpawnWorker","age":0}',
        b'{"type":"PreloaderReady","pid":42,"load_seconds":NaN,"code":""}',
    ],
)
def test_values_a_master_would_act_on_are_range_checked(frame):
    # pid 0 or -1 given to kill() would signal a whole process group or every process
    with pytest.raises(ProtocolError):
        decode_body(frame)


# -- the master's end is bounded: a preloader runs application code -----------------------------


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def clocked(clock: FakeClock) -> Iterator[tuple[Channel, Channel]]:
    """Like ``channels``, with the master's frame-rate bound on ``clock``."""
    master, preloader_sock = Channel.pair(clock=clock)
    preloader = Channel(preloader_sock, COMMANDS)
    yield master, preloader
    for channel in (master, preloader):
        if channel.sock.fileno() >= 0:
            channel.close()


def null_fds(n: int) -> list[int]:
    return [os.open(os.devnull, os.O_RDONLY) for _ in range(n)]


def close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def test_each_end_has_its_bounds() -> None:
    assert (EVENT_LIMITS.max_frame, EVENT_LIMITS.max_held_fds) == (64 * 1024, 0)
    assert (EVENT_LIMITS.burst, EVENT_LIMITS.rate, EVENT_LIMITS.ordered) == (EVENT_BURST, EVENT_RATE, True)
    assert EVENT_BURST >= 2 * 1001  # a preloader answering 1000 requests at once uses half of it
    master, preloader_sock = Channel.pair()
    preloader = Channel(preloader_sock, COMMANDS, blocking=True)
    assert master.limits is EVENT_LIMITS
    commands = preloader.limits
    assert (commands.max_frame, commands.max_held_fds, commands.burst, commands.ordered) == (MAX_FRAME, 1, 0, False)
    with socket.socket(socket.AF_UNIX) as sock:
        assert Channel(sock, {**COMMANDS, **EVENTS}).limits == commands  # an end that takes not only events
    master.close()
    preloader.close()


# descriptors


def test_descriptor_arriving_with_an_event_is_closed_at_once_and_refused(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    r, w = os.pipe()
    socket.send_fds(preloader.sock, [encode(PreloaderReady(pid=42, load_seconds=0.1))], [r])
    os.close(r)
    before = open_fds()
    with pytest.raises(ProtocolError, match=r"^1 descriptor\(s\) arrived with events: the limit is 0$"):
        master.receive()
    assert open_fds() == before and master.held_fds == 0
    with pytest.raises(BrokenPipeError):  # no read end of the pipe is left anywhere
        os.write(w, b"x")
    os.close(w)


def test_trickled_frame_with_descriptors_never_raises_the_fd_count(channels: tuple[Channel, Channel]) -> None:
    """The reported attack: announce a large frame, trickle its bytes with 16 descriptors each."""
    master, preloader = channels
    before = open_fds()
    for i in range(20):
        fds = null_fds(MAX_FDS_PER_READ)
        socket.send_fds(preloader.sock, [(HEADER.pack(60_000) if i == 0 else b"") + b"x" * 100], fds)
        close_all(fds)
        with pytest.raises(ProtocolError, match="descriptor"):
            master.receive()  # the first refuses and closes; later ones refuse without reading
        assert open_fds() == before
        assert master.held_fds == 0
    master.close()
    assert open_fds() == before - 1  # only the socket went: nothing was held


def test_broken_channel_keeps_refusing_with_the_first_reason(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    preloader.sock.sendall(HEADER.pack(900_000))
    with pytest.raises(ProtocolError) as first:
        master.receive()
    preloader.send(PreloaderReady(pid=42, load_seconds=0.1))
    with pytest.raises(ProtocolError) as again:
        master.receive()
    assert str(again.value) == str(first.value)


def test_more_descriptors_than_one_read_takes_are_cut_off_and_refused(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    fds = null_fds(MAX_FDS_PER_READ + 4)
    socket.send_fds(master.sock, [encode(SpawnWorker(age=1))], fds)
    close_all(fds)
    before = open_fds()
    with pytest.raises(ProtocolError, match="descriptors were cut off"):
        preloader.receive()
    assert open_fds() == before and preloader.held_fds == 0


def test_descriptors_ahead_of_their_frames_are_refused_on_the_commands_side(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    fds = null_fds(2)
    socket.send_fds(master.sock, [encode(SpawnWorker(age=1))[:3]], fds)
    close_all(fds)
    before = open_fds()
    with pytest.raises(ProtocolError, match=r"2 descriptor\(s\) wait for a frame: the limit is 1 for commands"):
        preloader.receive()
    assert open_fds() == before


def test_descriptors_of_messages_decoded_before_an_error_are_closed(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    fds = null_fds(1)
    socket.send_fds(master.sock, [encode(SpawnWorker(age=1)) + frame({"type": "Nope"})], fds)
    close_all(fds)
    before = open_fds()
    with pytest.raises(ProtocolError, match="unknown message type"):
        preloader.receive()  # SpawnWorker(age=1) decoded first, with its descriptor: closed, not lost
    assert open_fds() == before


def test_eof_closes_the_descriptor_of_a_frame_that_cannot_complete(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    fds = null_fds(1)
    socket.send_fds(master.sock, [encode(SpawnWorker(age=1))[:6]], fds)
    close_all(fds)
    master.close()
    before = open_fds()
    with pytest.raises(EOFError):
        preloader.receive()
    assert open_fds() == before and preloader.held_fds == 0


def test_commands_side_takes_a_burst_of_1000_requests(channels: tuple[Channel, Channel]) -> None:
    """The preloader's end keeps working: 1000 requests sent as fast as the master can, one descriptor each."""
    master, preloader = channels
    heartbeat_r, heartbeat_w = os.pipe()
    got: list[tuple[object, tuple[int, ...]]] = []
    held: list[int] = []
    errors: list[BaseException] = []

    def serve() -> None:
        import select

        try:
            while len(got) < 1000:
                select.select([preloader.sock], [], [], 5)
                got.extend(preloader.receive())
                held.append(preloader.held_fds)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=serve)
    reader.start()
    try:
        for age in range(1, 1001):
            master.send(SpawnWorker(age=age, slot=age), [heartbeat_r])
    finally:
        reader.join(30)
        os.close(heartbeat_r)
    assert not errors, errors
    assert [m for m, _ in got] == [SpawnWorker(age=a, slot=a) for a in range(1, 1001)]
    assert max(held) <= 1
    for _message, (fd,) in got:
        os.close(fd)
    os.close(heartbeat_w)


def test_one_receive_makes_a_bounded_number_of_reads(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    r, w = os.pipe()
    try:
        for age in range(1, 41):  # each with its descriptor: one read apiece
            master.send(SpawnWorker(age=age), [r])
    finally:
        os.close(r)
        os.close(w)
    first = preloader.receive()
    second = preloader.receive()
    assert (len(first), len(second)) == (MAX_READS_PER_RECEIVE, 40 - MAX_READS_PER_RECEIVE)
    for _message, fds in first + second:
        close_all(list(fds))


# bytes


def test_oversize_event_frame_is_refused_from_its_length_alone(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    preloader.sock.sendall(HEADER.pack(900_000))
    with pytest.raises(ProtocolError) as info:
        master.receive()
    assert str(info.value) == "frame of 900000 bytes exceeds the 65536-byte limit for events"


def test_a_trickled_frame_buffers_at_most_one_event_frame(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    data = padded(b'{"type":"PreloaderReady","pid":42,"load_seconds":0.5,"code":""}', MAX_EVENT_FRAME)
    for start in range(0, len(data) - 1, 4096):
        preloader.sock.sendall(data[start : min(start + 4096, len(data) - 1)])
        assert master.receive() == []
        assert master.buffered <= HEADER.size + MAX_EVENT_FRAME
    preloader.sock.sendall(data[-1:])
    assert master.receive() == [(PreloaderReady(pid=42, load_seconds=0.5), ())]
    assert master.buffered == 0


# text


@pytest.mark.parametrize(
    ("body", "what"),
    [
        ({"type": "PreloaderFailed", "error": "e" * (MAX_ERROR_TEXT + 1), "traceback": ""},
         f"PreloaderFailed.error of {MAX_ERROR_TEXT + 1} characters exceeds the {MAX_ERROR_TEXT}-character limit"),
        ({"type": "PreloaderFailed", "error": "", "traceback": "t" * (MAX_TEXT + 1)},
         f"PreloaderFailed.traceback of {MAX_TEXT + 1} characters exceeds the {MAX_TEXT}-character limit"),
        ({"type": "SpawnFailed", "age": 1, "error": "\u2603" * (MAX_ERROR_TEXT + 1)},
         f"SpawnFailed.error of {MAX_ERROR_TEXT + 1} characters exceeds the {MAX_ERROR_TEXT}-character limit"),
    ],
    ids=["error", "traceback", "spawn-error"],
)
def test_text_over_its_bound_is_refused(channels: tuple[Channel, Channel], body: dict[str, object], what: str) -> None:
    master, preloader = channels
    data = frame(body)
    assert len(data) <= HEADER.size + MAX_EVENT_FRAME  # within the frame bound: the text bound refuses it
    preloader.sock.sendall(data)
    with pytest.raises(ProtocolError) as info:
        master.receive()
    assert str(info.value) == what


def test_text_at_its_bound_is_accepted(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    message = PreloaderFailed(error="e" * MAX_ERROR_TEXT, traceback="t" * MAX_TEXT)
    preloader.sock.sendall(frame({"type": "PreloaderFailed", "error": message.error, "traceback": message.traceback}))
    assert master.receive() == [(message, ())]


# rate


def test_token_bucket_spends_a_burst_then_refills_at_its_rate(clock: FakeClock) -> None:
    bucket = TokenBucket(rate=2.0, burst=3, clock=clock)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5  # one token
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.now += 100.0  # refills up to the burst, no further
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    clock.now -= 10.0  # a clock that goes back grants nothing
    assert bucket.take() is False


def answer(master: Channel, preloader: Channel, events: list[object]) -> list[tuple[object, tuple[int, ...]]]:
    """The preloader's end sends ``events``, the master's end takes them, in batches the socket buffer holds
    (a send with a timeout waits until the socket polls writable: a quarter of its buffer free)."""
    got: list[tuple[object, tuple[int, ...]]] = []
    for start in range(0, len(events), 50):
        for event in events[start : start + 50]:
            preloader.send(event)  # type: ignore[arg-type]
        got += master.receive()
    return got


def spawned(ages: range) -> list[object]:
    return [WorkerSpawned(age=age, pid=10_000 + age, fork_ms=1.0) for age in ages]


def test_a_preloader_answering_1000_requests_at_once_is_within_the_rate_bound(clocked: tuple[Channel, Channel]) -> None:
    master, preloader = clocked  # the clock stands still: all of it counts as one instant
    request(master, preloader, range(1, 1001))
    events = [PreloaderReady(pid=42, load_seconds=0.5), *spawned(range(1, 1001))]
    assert [m for m, _ in answer(master, preloader, events)] == events


def test_frames_past_the_burst_are_refused(clocked: tuple[Channel, Channel]) -> None:
    master, preloader = clocked
    request(master, preloader, range(1, EVENT_BURST + 1))
    events = [PreloaderReady(pid=42, load_seconds=0.5), *spawned(range(1, EVENT_BURST))]
    assert len(answer(master, preloader, events)) == EVENT_BURST
    preloader.send(WorkerSpawned(age=EVENT_BURST, pid=50_000, fork_ms=1.0))
    with pytest.raises(ProtocolError) as info:
        master.receive()
    assert str(info.value) == (
        f"WorkerSpawned frame over the rate limit for events: {EVENT_BURST} at once, {EVENT_RATE:g} a second"
    )


def test_the_rate_bound_refills_with_the_clock(clocked: tuple[Channel, Channel], clock: FakeClock) -> None:
    master, preloader = clocked
    refill = int(EVENT_RATE / 2)
    request(master, preloader, range(1, EVENT_BURST + refill + 2))
    first = [PreloaderReady(pid=42, load_seconds=0.5), *spawned(range(1, EVENT_BURST))]
    assert len(answer(master, preloader, first)) == EVENT_BURST
    clock.now += 0.5
    assert len(answer(master, preloader, spawned(range(EVENT_BURST, EVENT_BURST + refill)))) == refill
    preloader.send(spawned(range(EVENT_BURST + refill, EVENT_BURST + refill + 1))[0])  # type: ignore[arg-type]
    with pytest.raises(ProtocolError, match="rate limit"):
        master.receive()


# order


@pytest.mark.parametrize(
    ("requests", "events", "error"),
    [
        (0, [PreloaderReady(pid=42, load_seconds=0.5), PreloaderReady(pid=42, load_seconds=0.5)],
         "PreloaderReady after PreloaderReady: the limit is one load report per preloader"),
        (0, [PreloaderFailed(error="e", traceback="t"), PreloaderFailed(error="e", traceback="t")],
         "PreloaderFailed after PreloaderFailed: the limit is one load report per preloader"),
        (0, [PreloaderReady(pid=42, load_seconds=0.5), PreloaderFailed(error="e", traceback="t")],
         "PreloaderFailed after PreloaderReady: the limit is one load report per preloader"),
        (1, [PreloaderFailed(error="e", traceback="t"), SpawnFailed(age=1, error="e")],
         "SpawnFailed after PreloaderFailed: spawn answers come only from a ready preloader"),
        (1, [WorkerSpawned(age=1, pid=43, fork_ms=1.0)],
         "WorkerSpawned before PreloaderReady: spawn answers come only from a ready preloader"),
        (0, [PreloaderReady(pid=42, load_seconds=0.5), WorkerSpawned(age=1, pid=43, fork_ms=1.0)],
         "WorkerSpawned would be answer 1 to 0 SpawnWorker request(s): the limit is one answer per request"),
        (1, [PreloaderReady(pid=42, load_seconds=0.5), WorkerSpawned(age=1, pid=43, fork_ms=1.0), SpawnFailed(age=2, error="e")],
         "SpawnFailed would be answer 2 to 1 SpawnWorker request(s): the limit is one answer per request"),
    ],
    ids=["ready-twice", "failed-twice", "failed-after-ready", "answer-after-failed", "answer-before-ready",
         "answer-unasked", "more-answers-than-requests"],
)
def test_events_out_of_order_are_refused(
    channels: tuple[Channel, Channel], requests: int, events: list[object], error: str
) -> None:
    master, preloader = channels
    request(master, preloader, range(1, requests + 1))
    for event in events:
        preloader.send(event)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError) as info:
        master.receive()
    assert str(info.value) == error


def test_event_order_counts_requests_and_answers() -> None:
    order = EventOrder()
    order.requests += 1
    order.requests += 1
    order.check(PreloaderReady(pid=42, load_seconds=0.5))
    order.check(WorkerSpawned(age=1, pid=43, fork_ms=1.0))
    order.check(SpawnFailed(age=2, error="e"))
    order.requests += 1
    order.check(WorkerSpawned(age=3, pid=44, fork_ms=1.0))
    with pytest.raises(ProtocolError, match="answer 4 to 3"):
        order.check(WorkerSpawned(age=4, pid=45, fork_ms=1.0))


def test_a_flood_of_failures_yields_one_message_then_a_refusal(channels: tuple[Channel, Channel]) -> None:
    """What the master would log for a PreloaderFailed flood: one failure, then the preloader is stopped."""
    master, preloader = channels
    failure = PreloaderFailed(error="E" * MAX_ERROR_TEXT, traceback="T" * 1000)
    preloader.send(failure)
    assert master.receive() == [(failure, ())]
    preloader.sock.sendall(encode(failure) * 10)
    with pytest.raises(ProtocolError, match="one load report"):
        master.receive()


# -- fuzzing: whatever arrives, the decoder yields messages or raises ProtocolError ------------


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=300), max_size=5))
def test_fuzz_raw_bytes(data: bytes, cuts: list[int]) -> None:
    decoder = FrameDecoder()
    pieces, last = [], 0
    for cut in sorted(cuts):
        pieces.append(data[last:cut])
        last = cut
    pieces.append(data[last:])
    try:
        for piece in pieces:
            decoder.feed(piece)
            for message, fds in decoder:
                assert type(message).__name__ in {*COMMANDS, *EVENTS}
                assert fds == ()
    except ProtocolError:
        pass


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(["SpawnWorker", "PreloaderReady", "PreloaderFailed", "WorkerSpawned", "SpawnFailed", "Other", 7]),
    st.dictionaries(st.sampled_from(["age", "pid", "slot", "fork_ms", "load_seconds", "error", "traceback", "x"]),
                    _json_values, max_size=6),
)
def test_fuzz_json_frames(kind: object, fields: dict) -> None:
    decoder = FrameDecoder()
    decoder.feed(_frame(json.dumps({"type": kind, **fields}).encode()), [])
    try:
        for message, _fds in decoder:
            # a message that decodes carries exactly its fields, of their types, in range
            encoded = encode(message)
            again = FrameDecoder()
            again.feed(encoded, [0] * type(message).FDS)
            assert [m for m, _ in again] == [message]
    except ProtocolError:
        pass



# -- fuzzing the master's end over a real socketpair: no descriptor is ever kept ------------------

_VALID_EVENT_FRAMES = [
    encode(PreloaderReady(pid=42, load_seconds=0.5)),
    encode(PreloaderFailed(error="e", traceback="t")),
    encode(WorkerSpawned(age=1, pid=43, fork_ms=1.0)),
    encode(WorkerSpawned(age=2, pid=44, fork_ms=1.0)),
    encode(SpawnFailed(age=2, error="e")),
    encode(SpawnWorker(age=1)),
]
_chunk_bytes = st.one_of(
    st.binary(min_size=1, max_size=80),
    st.sampled_from(_VALID_EVENT_FRAMES),
    st.sampled_from(_VALID_EVENT_FRAMES).flatmap(lambda f: st.integers(1, len(f)).map(lambda n: f[:n])),
    st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: HEADER.pack(n)),
)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=0, max_value=2),
    st.lists(st.tuples(_chunk_bytes, st.integers(min_value=0, max_value=MAX_FDS_PER_READ + 2)), max_size=10),
    st.lists(st.floats(min_value=0.0, max_value=2.0), max_size=10),
)
def test_fuzz_master_end_never_keeps_a_descriptor(requests: int, chunks: list[tuple[bytes, int]], steps: list[float]) -> None:
    baseline = open_fds()
    clock = FakeClock()
    master, raw = Channel.pair(clock=clock)
    try:
        for age in range(1, requests + 1):
            fds = null_fds(1)
            master.send(SpawnWorker(age=age), fds)  # waits, unread, in the raw end
            close_all(fds)
        for i, (data, count) in enumerate(chunks):
            fds = null_fds(count)
            try:
                if fds:
                    socket.send_fds(raw, [data], fds)
                else:
                    raw.sendall(data)
            finally:
                close_all(fds)
            clock.now += steps[i] if i < len(steps) else 0.0
            try:
                for _message, claimed in master.receive():
                    assert claimed == ()
            except ProtocolError:
                pass
            assert master.held_fds == 0
            assert master.buffered <= HEADER.size + MAX_EVENT_FRAME + wire.READ_SIZE
            assert open_fds() == baseline + 2  # the pair: every received descriptor is already closed
    finally:
        master.close()
        raw.close()
    assert open_fds() == baseline


# -- WatchFiles: the file list of a --reload preloader ------------------------------------------


def test_watch_entries_reads_each_line() -> None:
    assert watch_entries("5 /a b/c.py\n0 /x") == [("/a b/c.py", 5), ("/x", 0)]
    assert watch_entries("") == []


@pytest.mark.parametrize(
    "text",
    ["x /a.py", "-1 /a.py", "5 a.py", "5", "1" * 21 + " /a.py", "5 /a\0b", "5 /" + "a" * wire.MAX_PATH, "5 /a\n\n"],
    ids=["not-a-number", "negative", "relative", "no-path", "long-number", "nul", "long-path", "empty-line"],
)
def test_watch_entries_refuses_a_bad_line(text: str) -> None:
    with pytest.raises(ProtocolError, match="WatchFiles line"):
        watch_entries(text)
    with pytest.raises(ProtocolError, match="WatchFiles line"):
        decode_body(json.dumps({"type": "WatchFiles", "files": text}).encode())


def test_watch_frames_pack_within_bounds_and_round_trip() -> None:
    entries = [(f"/srv/app/pkg{i // 100}/m\u00e9\u2603{i}.py", 10**18 + i) for i in range(3000)]
    frames = watch_frames([*entries, ("relative.py", 1), ("/new\nline.py", 1), ("/neg.py", -1)])
    assert len(frames) > 1
    back = [entry for f in frames for entry in decode_body(encode(f)[HEADER.size :]).files.split("\n")]  # type: ignore[union-attr]
    assert [watch_entries(line)[0] for line in back] == entries
    for f in frames:
        assert len(encode(f)) <= MAX_EVENT_FRAME


def test_watch_frames_stop_at_the_bounds() -> None:
    many = watch_frames((f"/f{i}", 1) for i in range(wire.MAX_WATCH_FILES + 50))
    assert sum(len(f.files.split("\n")) for f in many) == wire.MAX_WATCH_FILES
    long_paths = watch_frames(("/" + "p" * 4000 + str(i), 1) for i in range(wire.MAX_WATCH_FILES))
    assert len(long_paths) == wire.MAX_WATCH_FRAMES


def test_watch_files_only_after_the_load_report_and_bounded_in_frames() -> None:
    order = EventOrder()
    with pytest.raises(ProtocolError, match="before PreloaderReady"):
        order.check(WatchFiles("1 /a.py"))
    order = EventOrder()
    order.check(PreloaderReady(pid=5, load_seconds=1.0))
    for _ in range(wire.MAX_WATCH_FRAMES):
        order.check(WatchFiles("1 /a.py"))
    with pytest.raises(ProtocolError, match="the limit is 64 per preloader"):
        order.check(WatchFiles("1 /a.py"))
    failed = EventOrder()  # a failed import lists what it read too: fixing those files reloads
    failed.check(PreloaderFailed(error="x", traceback=""))
    for _ in range(wire.MAX_WATCH_FRAMES):
        failed.check(WatchFiles("1 /a.py"))
    with pytest.raises(ProtocolError, match="the limit is 64 per preloader"):
        failed.check(WatchFiles("1 /a.py"))
    with pytest.raises(ProtocolError, match="after PreloaderFailed"):
        failed.check(SpawnFailed(age=1, error="x"))
