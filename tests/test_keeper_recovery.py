"""The keeper dies, the pipes live: duplicates held elsewhere (fsup's fd store, or taken back
with `list`) go to a new keeper and no line is lost, no writer sees EPIPE. And no message,
however broken, ends the keeper or the connection."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import psutil
import pytest
from keeper_kit import Client, add, read_text, running_keeper, texts, wait_for

from supervisor.runtime.keeper import protocol
from supervisor.runtime.keeper.clients import MAX_OUTBOX


def add_dups(client: Client, key: str, folder: Path, fds: tuple[int, int]) -> None:
    message = {"op": "add", "key": key, "dir": str(folder), "name": "1.0.0"}
    answer, _ = client.request({**message, "max_bytes": 10**9, "backups": 1}, fds)
    assert answer == {"ok": True}, answer


def test_a_killed_keeper_s_pipes_go_to_a_new_keeper_and_no_line_is_lost(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    with running_keeper(tmp_path) as first, Client(tmp_path) as client:
        pipes = add(client, "k", folder, keep=True)
        assert pipes.kept is not None
        for n in range(100):
            os.write(pipes.stdout, b"before %d\n" % n)
        assert client.request({"op": "flush", "key": "k"})[0]["ok"]
        first.process.kill()
        first.process.wait(10)
    # No keeper: the pipes stay open through the test's duplicates; a write just waits.
    for n in range(100):
        os.write(pipes.stdout, b"between %d\n" % n)  # would raise BrokenPipeError
        os.write(pipes.stderr, b"between %d\n" % n)
    with running_keeper(tmp_path), Client(tmp_path) as client:
        add_dups(client, "k", folder, pipes.kept)
        os.write(pipes.stdout, b"after\n")
        protocol.close_all(pipes.kept)
        protocol.close_all([pipes.stdout, pipes.stderr])
        client.closed("k")
    lines = texts(folder)
    assert lines[:100] == [b"before %d" % n for n in range(100)]
    stdout = [t for t in lines[100:] if t.startswith(b"between") or t == b"after"]
    assert sorted(stdout) == sorted([b"between %d" % n for n in range(100)] * 2 + [b"after"])
    assert len(lines) == 301


def test_pairs_closing_between_two_pages_shift_none_out_of_the_next(tmp_path: Path) -> None:
    """The list is paged by a cursor: pairs of the first page that close before the second
    is asked for (processes ending while a new fsup takes its duplicates back) must not make
    the second page skip a pair, as an offset would."""
    folder = tmp_path / "logs"
    with running_keeper(tmp_path), Client(tmp_path) as client:
        writers = [add(client, f"k{n}", folder) for n in range(110)]
        first_page, first_fds = client.request({"op": "list", "after": 0})
        for pipes in writers[:5]:
            pipes.close()
        for n in range(5):
            client.closed(f"k{n}")
        second_page, second_fds = client.request({"op": "list", "after": first_page["after"]})
        protocol.close_all(first_fds + second_fds)
        assert [p["key"] for p in second_page["pipes"]] == [f"k{n}" for n in range(100, 110)]
        assert not second_page["more"]
        for pipes in writers[5:]:
            pipes.close()


def test_list_hands_back_the_same_pipes_page_by_page(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    count = 120
    with running_keeper(tmp_path) as first, Client(tmp_path) as client:
        writers = [add(client, f"k{n}", folder) for n in range(count)]  # the keeper's only
        first_page, first_fds = client.request({"op": "list", "after": 0})
        after = first_page["after"]
        second_page, second_fds = client.request({"op": "list", "after": after})
        first.process.kill()
        first.process.wait(10)
    assert first_page["more"] and not second_page["more"]
    listed = first_page["pipes"] + second_page["pipes"]
    fds = first_fds + second_fds
    assert [pipe["key"] for pipe in listed] == [f"k{n}" for n in range(count)]
    assert listed[0] == {
        "key": "k0",
        "dir": str(folder),
        "name": "1.0.0",
        "max_bytes": 10**9,
        "backups": 3,
    }
    assert len(fds) == 2 * count
    for pipes, out, err in zip(writers, fds[::2], fds[1::2], strict=True):
        assert os.fstat(out).st_ino == os.fstat(pipes.stdout).st_ino  # the same pipe
        assert os.fstat(err).st_ino == os.fstat(pipes.stderr).st_ino
    with running_keeper(tmp_path), Client(tmp_path) as client:
        for pipe, out, err in zip(listed, fds[::2], fds[1::2], strict=True):
            add_dups(client, pipe["key"], folder, (out, err))
        protocol.close_all(fds)
        for n, pipes in enumerate(writers):
            os.write(pipes.stdout, b"line %d\n" % n)
            pipes.close()
        for n in range(count):
            client.closed(f"k{n}")
    assert sorted(texts(folder)) == sorted(b"line %d" % n for n in range(count))


def garbage(tmp_path: Path) -> list[tuple[bytes, list[int], str]]:
    """Bad datagrams with the fds they carry and what the answer must say."""
    add: dict[str, Any] = {
        "op": "add",
        "key": "g",
        "dir": str(tmp_path / "logs"),
        "name": "1.0.0",
        "max_bytes": 100,
        "backups": 1,
    }

    def pipe_ends(n: int) -> list[int]:
        fds: list[int] = []
        while len(fds) < n:
            fds += os.pipe()
        protocol.close_all(fds[n:])
        return fds[:n]

    def encoded(message: dict[str, Any]) -> bytes:
        return protocol.encode(message)

    big = b'{"op": "list", "pad": "' + b"x" * protocol.MAX_MESSAGE + b'"}'
    without_name = {k: v for k, v in add.items() if k != "name"}
    return [
        (b"{not json", pipe_ends(2), "not JSON"),
        (b"[1]", [], "not a JSON object"),
        (b"\xff\xfe", [], "not JSON"),
        (big, pipe_ends(2), "over 65536 bytes"),
        (b"", [], "empty message"),
        (encoded({"op": "format-disk"}), pipe_ends(1), "unknown op"),
        (encoded(add), pipe_ends(1), "add takes 2 fds, got 1"),
        (encoded(add), pipe_ends(3), "add takes 2 fds, got 3"),
        (encoded(without_name), pipe_ends(2), "name must be a string"),
        (encoded({**add, "dir": "logs"}), pipe_ends(2), "absolute"),
        (encoded({"op": "flush", "key": "g"}), pipe_ends(2), "flush takes 0 fds"),
        (encoded({"op": "list", "after": "0"}), [], "after must be an integer"),
    ]


def test_garbage_gets_an_error_and_the_keeper_goes_on(tmp_path: Path) -> None:
    with running_keeper(tmp_path) as keeper, Client(tmp_path) as client:
        assert client.request({"op": "list", "after": 0})[0]["ok"]  # accepted, settled
        keeper_fds = psutil.Process(keeper.pid).num_fds()
        for data, fds, why in garbage(tmp_path):
            client.sock.sendmsg([data], protocol.ancillary(fds))
            protocol.close_all(fds)
            answer, got = client.answer()
            assert answer["ok"] is False and why in answer["error"], (data[:40], answer)
            assert got == []
        left, right = socket.socketpair()
        answer, _ = client.request(
            {
                "op": "add",
                "key": "s",
                "dir": str(tmp_path),
                "name": "1.0.0",
                "max_bytes": 10,
                "backups": 1,
            },
            [left.fileno(), right.fileno()],
        )
        left.close()
        right.close()
        assert answer == {"ok": False, "error": "the fds must be pipes"}
        assert psutil.Process(keeper.pid).num_fds() == keeper_fds  # every fd closed
        pipes = add(client, "g", tmp_path / "logs")  # the same connection still works
        os.write(pipes.stdout, b"still here\n")
        pipes.close()
        client.closed("g")
        assert texts(tmp_path / "logs") == [b"still here"]
        assert client.request({"op": "list", "after": 0})[0] == {
            "ok": True,
            "pipes": [],
            "more": False,
            "after": 0,
        }


def test_a_key_already_held_is_refused(tmp_path: Path) -> None:
    with running_keeper(tmp_path), Client(tmp_path) as client:
        pipes = add(client, "k", tmp_path / "logs")
        with pytest.raises(AssertionError, match="already held"):
            add(client, "k", tmp_path / "logs")
        pipes.close()
        client.closed("k")


def test_a_client_that_vanishes_mid_request_is_dropped_alone(tmp_path: Path) -> None:
    with running_keeper(tmp_path) as keeper, Client(tmp_path) as client:
        pipes = add(client, "k", tmp_path / "logs")
        for _ in range(5):
            rude = Client(tmp_path)
            protocol.send(rude.sock, {"op": "list", "after": 0})
            rude.close()  # gone before its answer
        os.write(pipes.stdout, b"fine\n")
        assert client.request({"op": "flush", "key": "k"})[0]["ok"]
        assert texts(tmp_path / "logs") == [b"fine"]
        assert keeper.process.poll() is None
        pipes.close()
    assert stat.S_ISREG((tmp_path / "logs" / "1.0.0.log").stat().st_mode)


def test_a_keeper_out_of_fds_refuses_connections_and_goes_on(tmp_path: Path) -> None:
    limit = 16  # stdio, the listener, epoll: room for about 10 connections
    with running_keeper(tmp_path, "--fd-limit", str(limit)) as keeper:
        with Client(tmp_path) as client:
            pipes = add(client, "k", tmp_path / "logs")  # 2 pipes + the file: 3 more fds
            crowd = [Client(tmp_path) for _ in range(limit)]  # the backlog takes them all
            wait_for(lambda: "accept failed" in read_text(keeper.diagnostics), "EMFILE")
            os.write(pipes.stdout, b"still logging\n")
            assert client.request({"op": "flush", "key": "k"})[0]["ok"]
            assert texts(tmp_path / "logs") == [b"still logging"]
            for other in crowd:
                other.close()
            with Client(tmp_path) as late:  # accepted again after the pause
                assert late.request({"op": "list", "after": 0})[0]["pipes"][0]["key"] == "k"
            pipes.close()
            client.closed("k")
        assert keeper.process.wait(10) == 0


def test_a_killed_keeper_loses_only_the_unfinished_line_it_held(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    with running_keeper(tmp_path) as first, Client(tmp_path) as client:
        pipes = add(client, "k", folder, keep=True)
        assert pipes.kept is not None
        os.write(pipes.stdout, b"whole\nhalf a li")
        assert client.request({"op": "flush", "key": "k"})[0]["ok"]  # "half a li" is held
        first.process.kill()
        first.process.wait(10)
    os.write(pipes.stdout, b"ne\nnext\n")
    with running_keeper(tmp_path), Client(tmp_path) as client:
        add_dups(client, "k", folder, pipes.kept)
        pipes.close()
        client.closed("k")
    assert texts(folder) == [b"whole", b"ne", b"next"]


def test_a_pipe_already_held_is_refused(tmp_path: Path) -> None:
    with running_keeper(tmp_path), Client(tmp_path) as client:
        pipes = add(client, "k", tmp_path / "logs")
        answer, fds = client.request({"op": "list", "after": 0})
        again = {"op": "add", "key": "k2", "dir": str(tmp_path), "name": "1.0.0"}
        again |= {"max_bytes": 10, "backups": 1}
        assert client.request(again, fds)[0] == {
            "ok": False,
            "error": "a pipe already held by 'k'",
        }
        assert client.request(again, [fds[0], fds[0]])[0] == {
            "ok": False,
            "error": "stdout and stderr must be two pipes",
        }
        protocol.close_all(fds)
        pipes.close()
        client.closed("k")
        assert client.request(again, fds[:0])[0]["error"] == "add takes 2 fds, got 0"


def test_a_client_that_never_reads_is_dropped_and_the_keeper_goes_on(tmp_path: Path) -> None:
    with running_keeper(tmp_path) as keeper, Client(tmp_path) as client:
        pipes = add(client, "k", tmp_path / "logs")
        rude = Client(tmp_path)
        try:
            request = protocol.encode({"op": "flush", "key": "k"})
            with pytest.raises(OSError):  # the keeper hung up on it mid-way
                for _ in range(MAX_OUTBOX + 10_000):
                    rude.sock.send(request)
        finally:
            rude.close()
        assert "messages unread" in read_text(keeper.diagnostics)
        os.write(pipes.stdout, b"unharmed\n")
        assert client.request({"op": "flush", "key": "k"})[0]["ok"]
        assert texts(tmp_path / "logs") == [b"unharmed"]
        pipes.close()
