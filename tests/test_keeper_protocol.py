"""The keeper's protocol, its requests' checks and who may connect: without a keeper process,
over a socket pair."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from supervisor.runtime.keeper import protocol, requests
from supervisor.runtime.keeper.clients import admits, peer_uid


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with left, right:
        yield left, right


def open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def test_the_socket_name_is_abstract_and_the_same_for_any_path_to_the_home(
    tmp_path: Path,
) -> None:
    (tmp_path / "home").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "home")
    name = protocol.socket_name(tmp_path / "home")
    assert name.startswith(b"\0fsup-logkeeper-") and len(name) == len(protocol.SOCKET_PREFIX) + 24
    assert protocol.socket_name(tmp_path / "link") == name
    assert protocol.socket_name(tmp_path / "home" / ".." / "home") == name
    assert protocol.socket_name(tmp_path) != name


def test_messages_round_trip_and_are_bounded() -> None:
    message = {"op": "add", "key": "k é", "n": 3}
    assert protocol.decode(protocol.encode(message)) == message
    with pytest.raises(protocol.ProtocolError):
        protocol.encode({"op": "x" * protocol.MAX_MESSAGE})
    for bad in (b"x" * (protocol.MAX_MESSAGE + 1), b"\xff", b"{", b"[1, 2]", b'"op"'):
        with pytest.raises(protocol.ProtocolError):
            protocol.decode(bad)


def test_fds_travel_and_are_the_same_pipe(pair: tuple[socket.socket, socket.socket]) -> None:
    left, right = pair
    read_end, write_end = os.pipe()
    try:
        protocol.send(left, {"op": "add"}, [read_end])
        message, fds = protocol.recv(right)
        assert message == {"op": "add"} and len(fds) == 1
        os.write(write_end, b"through\n")
        assert os.read(fds[0], 100) == b"through\n"
        os.close(fds[0])
    finally:
        protocol.close_all([read_end, write_end])


def test_the_fds_of_a_message_that_fails_to_decode_are_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    left, right = pair
    read_end, write_end = os.pipe()
    try:
        before = open_fds()
        for data in (b"not json", b"x" * (protocol.MAX_MESSAGE + 10)):
            left.sendmsg([data], protocol.ancillary([read_end, write_end]))
            with pytest.raises(protocol.ProtocolError):
                protocol.recv(right)
        assert open_fds() == before
    finally:
        protocol.close_all([read_end, write_end])


def test_an_empty_datagram_is_an_error_and_a_closed_peer_is_none(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    left, right = pair
    left.send(b"")
    with pytest.raises(protocol.ProtocolError, match="empty"):
        protocol.recv(right)
    left.close()
    assert protocol.recv(right) == (None, [])


ADD: dict[str, Any] = {
    "op": "add",
    "key": "f1:1",
    "dir": "/home/x/logs/formations/f1",
    "name": "1.2.0",
    "max_bytes": 1024,
    "backups": 3,
}


def test_a_good_add_parses() -> None:
    assert requests.parse(ADD, 2) == requests.Add("f1:1", ADD["dir"], "1.2.0", 1024, 3)
    assert requests.parse({"op": "flush", "key": "k"}, 0) == requests.Flush("k")
    assert requests.parse({"op": "list", "after": 5}, 0) == requests.List(5)


@pytest.mark.parametrize(
    ("change", "fds", "why"),
    [
        ({"op": "nope"}, 2, "unknown op"),
        ({"op": None}, 2, "unknown op"),
        ({}, 1, "add takes 2 fds, got 1"),
        ({}, 3, "add takes 2 fds, got 3"),
        ({"key": None}, 2, "key must be a string"),
        ({"key": ""}, 2, "key must be 1 to"),
        ({"key": "k" * 257}, 2, "key must be 1 to"),
        ({"dir": "relative/logs"}, 2, "absolute"),
        ({"dir": "/a\0b"}, 2, "without NUL"),
        ({"name": "../1.0.0"}, 2, "file name"),
        ({"name": ".."}, 2, "file name"),
        ({"max_bytes": 0}, 2, "max_bytes must be from 1"),
        ({"max_bytes": True}, 2, "max_bytes must be an integer"),
        ({"max_bytes": "10"}, 2, "max_bytes must be an integer"),
        ({"backups": -1}, 2, "backups must be from 0"),
        ({"backups": 1.5}, 2, "backups must be an integer"),
    ],
)
def test_a_bad_add_says_why(change: dict[str, Any], fds: int, why: str) -> None:
    with pytest.raises(requests.RequestError, match=why):
        requests.parse({**ADD, **change}, fds)


@pytest.mark.parametrize(
    ("message", "fds", "why"),
    [
        ({"op": "flush", "key": "k"}, 1, "flush takes 0 fds"),
        ({"op": "flush"}, 0, "key must be a string"),
        ({"op": "list", "after": -1}, 0, "after must be from 0"),
        ({"op": "list"}, 0, "after must be an integer"),
    ],
)
def test_a_bad_flush_or_list_says_why(message: dict[str, Any], fds: int, why: str) -> None:
    with pytest.raises(requests.RequestError, match=why):
        requests.parse(message, fds)


def test_only_the_keeper_s_own_user_is_admitted(pair: tuple[socket.socket, socket.socket]) -> None:
    left, _ = pair
    assert peer_uid(left) == os.geteuid()
    assert admits(os.geteuid(), os.geteuid())
    assert not admits(os.geteuid() + 1, os.geteuid())
    assert not admits(0, 1000)  # root is refused too: its fsup runs its own keeper
