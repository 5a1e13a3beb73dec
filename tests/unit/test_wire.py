"""The master <-> preloader wire protocol: messages, framing, descriptors, the channel."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator

import pytest

from gunicorn_smartspawn.errors import ProtocolError
from gunicorn_smartspawn.wire import (
    COMMANDS,
    EVENTS,
    HEADER,
    MAX_FRAME,
    Channel,
    FrameDecoder,
    PreloaderFailed,
    PreloaderReady,
    SpawnFailed,
    SpawnWorker,
    WorkerSpawned,
    decode_body,
    encode,
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
    assert json.loads(data[4:]) == {"type": "SpawnWorker", "age": 1, "slot": -1}


def test_float_field_accepts_a_json_integer() -> None:
    message = decode_body(b'{"type": "PreloaderReady", "pid": 5, "load_seconds": 2}')
    assert message == PreloaderReady(pid=5, load_seconds=2.0)


def test_encode_refuses_an_oversized_frame() -> None:
    with pytest.raises(ProtocolError, match="exceeds"):
        encode(PreloaderFailed(error="x" * MAX_FRAME, traceback=""))


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


def test_frame_of_exactly_max_frame_bytes_is_accepted() -> None:
    overhead = len(json.dumps({"type": "SpawnFailed", "age": 1, "error": ""}, separators=(",", ":")))
    message = SpawnFailed(age=1, error="e" * (MAX_FRAME - overhead))
    data = encode(message)
    assert len(data) == HEADER.size + MAX_FRAME
    decoder = FrameDecoder()
    decoder.feed(data)
    assert list(decoder) == [(message, ())]


# -- who may send what --------------------------------------------------------------------------


def test_commands_and_events_are_disjoint_and_complete() -> None:
    assert set(COMMANDS) == {"SpawnWorker"}
    assert set(EVENTS) == {"PreloaderReady", "PreloaderFailed", "WorkerSpawned", "SpawnFailed"}
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


def test_events_arrive_in_order(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    events = [m for m in MESSAGES if type(m).__name__ in EVENTS]
    for event in events:
        preloader.send(event)  # type: ignore[arg-type]
    assert master.receive() == [(e, ()) for e in events]
    assert master.receive() == []


def test_frame_larger_than_one_read_arrives_whole(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    big = PreloaderFailed(error="boom", traceback="t" * 150_000)
    preloader.send(big)
    assert master.receive() == [(big, ())]


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


def test_close_closes_descriptors_no_message_claimed(channels: tuple[Channel, Channel]) -> None:
    master, preloader = channels
    r, w = os.pipe()
    try:
        frame_bytes = encode(PreloaderReady(pid=4242, load_seconds=0.1))
        socket.send_fds(preloader.sock, [frame_bytes], [r])  # a stray descriptor
        assert master.receive() == [(PreloaderReady(pid=4242, load_seconds=0.1), ())]
        before = set(os.listdir("/proc/self/fd"))
        master.close()
        after = set(os.listdir("/proc/self/fd"))
        assert len(before - after) == 2  # the socket and the stray descriptor
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"type":"WorkerSpawned","age":1,"pid":0,"fork_ms":1.0}',
        b'{"type":"WorkerSpawned","age":1,"pid":-1,"fork_ms":1.0}',
        b'{"type":"PreloaderReady","pid":1,"load_seconds":1.0}',
        b'{"type":"SpawnWorker","age":0}',
        b'{"type":"PreloaderReady","pid":42,"load_seconds":NaN}',
    ],
)
def test_values_a_master_would_act_on_are_range_checked(frame):
    # pid 0 or -1 given to kill() would signal a whole process group or every process
    with pytest.raises(ProtocolError):
        decode_body(frame)


# -- fuzzing: whatever arrives, the decoder yields messages or raises ProtocolError ------------

from hypothesis import given, settings, strategies as st  # noqa: E402

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
                assert type(message).__name__ in ("SpawnWorker", "PreloaderReady", "PreloaderFailed", "WorkerSpawned", "SpawnFailed")
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
