"""The log keeper as fsup runs it: a real process, real pipes, the files it writes.

Order across streams, no line lost over many rotations, partial lines, `flush`, the `closed`
event, and the keeper's own life: signals ignored, `busy`, ending by itself."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from keeper_kit import (
    Client,
    add,
    read_log,
    read_text,
    running_keeper,
    start_keeper,
    stop,
    texts,
    wait_for,
)


def pipe_empty(fd: int) -> bool:
    """Whether the pipe of read end `fd` holds nothing (the keeper read it all)."""
    import array
    import fcntl
    import termios

    count = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, count)
    return count[0] == 0


def test_two_streams_written_at_a_human_pace_keep_their_order(tmp_path: Path) -> None:
    with running_keeper(tmp_path), Client(tmp_path) as client:
        pipes = add(client, "f1:1", tmp_path / "logs", keep=True)
        assert pipes.kept is not None
        for seq in range(60):
            stream = seq % 2
            os.write((pipes.stdout, pipes.stderr)[stream], b"seq %d\n" % seq)
            # A human pace: the keeper wakes on each write; wait until it took it.
            wait_for(lambda s=stream: pipe_empty(pipes.kept[s]), "the keeper to read")
            time.sleep(0.002)
        pipes.close()
        client.closed("f1:1")
    lines = read_log(tmp_path / "logs")
    assert [line.text for line in lines] == [b"seq %d" % seq for seq in range(60)]
    assert [line.stream for line in lines] == ["stdout", "stderr"] * 30
    stamps = [line.ts for line in lines]
    assert stamps == sorted(stamps) and len(set(stamps)) == 60


WRITER = """
import os, sys
count, width = int(sys.argv[1]), int(sys.argv[2])
for seq in range(count):
    os.write(1 + seq % 2, b"%08d %s\\n" % (seq, b"x" * width))
"""


def test_a_fast_writer_across_many_rotations_loses_no_line(tmp_path: Path) -> None:
    count = 20_000
    folder = tmp_path / "logs"
    with running_keeper(tmp_path), Client(tmp_path) as client:
        pipes = add(client, "f1:1", folder, max_bytes=64 * 1024, backups=100)
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(count), "90"],
            stdout=pipes.stdout,
            stderr=pipes.stderr,
        )
        pipes.close()  # the writer holds the write ends now
        try:
            assert writer.wait(60) == 0
        finally:
            stop(writer)
        client.closed("f1:1")
    lines = read_log(folder)
    # Many rotations (a write of a 64 KiB read can take a file well past max_bytes).
    assert len(list(folder.glob("1.0.0.log.*"))) >= 15
    assert sorted(int(line.text[:8]) for line in lines) == list(range(count))
    for stream in ("stdout", "stderr"):  # within a stream, the order is exact
        mine = [int(line.text[:8]) for line in lines if line.stream == stream]
        assert mine == sorted(mine)
    assert all(not line.partial for line in lines)


def test_partial_lines_p_after_half_a_second_16_kib_cuts_and_f_at_eof(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    with running_keeper(tmp_path), Client(tmp_path) as client:
        pipes = add(client, "k", folder)
        written = time.monotonic()
        os.write(pipes.stdout, b"prompt: ")
        wait_for(lambda: read_log(folder), "the waiting fragment")
        assert time.monotonic() - written >= 0.45
        os.write(pipes.stdout, b"yes\n" + b"y" * (2 * 16384 + 3) + b"\n")
        os.write(pipes.stderr, b"dying words")
        pipes.close()
        client.closed("k")
    got = [(line.stream, line.partial, line.text) for line in read_log(folder)]
    assert sorted(got) == sorted(
        [
            ("stdout", True, b"prompt: "),
            ("stdout", False, b"yes"),
            ("stdout", True, b"y" * 16384),
            ("stdout", True, b"y" * 16384),
            ("stdout", False, b"yyy"),
            ("stderr", False, b"dying words"),
        ]
    )
    assert [g for g in got if g[0] == "stdout"][1:] == [
        ("stdout", False, b"yes"),
        ("stdout", True, b"y" * 16384),
        ("stdout", True, b"y" * 16384),
        ("stdout", False, b"yyy"),
    ]


def test_flush_writes_what_the_pipes_hold_at_once(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    with running_keeper(tmp_path), Client(tmp_path) as client:
        pipes = add(client, "k", folder)
        for round_ in range(20):
            burst = b"".join(b"r%d line %d\n" % (round_, n) for n in range(500))
            os.write(pipes.stderr, burst)
            assert client.request({"op": "flush", "key": "k"}) == ({"ok": True}, [])
            assert texts(folder)[-1] == b"r%d line 499" % round_
        assert client.request({"op": "flush", "key": "unknown"}) == ({"ok": True}, [])
        pipes.close()


def test_flush_after_the_writer_is_gone_writes_its_unfinished_last_line(tmp_path: Path) -> None:
    """A process that dies mid-line: its exit's tail needs that line, and the flush the exit
    asks for must see the end of the stream even when nothing is left to read."""
    folder = tmp_path / "logs"
    with running_keeper(tmp_path), Client(tmp_path) as client:
        pipes = add(client, "k", folder)
        os.write(pipes.stderr, b"Traceback: the last words")
        assert client.request({"op": "flush", "key": "k"}) == ({"ok": True}, [])
        os.close(pipes.stdout)
        os.close(pipes.stderr)
        assert client.request({"op": "flush", "key": "k"}) == ({"ok": True}, [])
        assert texts(folder)[-1] == b"Traceback: the last words"


def test_every_client_is_told_when_a_pair_closed(tmp_path: Path) -> None:
    with running_keeper(tmp_path), Client(tmp_path) as first, Client(tmp_path) as second:
        pipes = add(first, "a", tmp_path / "logs")
        other = add(first, "b", tmp_path / "logs")
        os.close(pipes.stdout)
        assert first.request({"op": "list", "after": 0})[0]["pipes"][0]["key"] == "a"
        os.close(pipes.stderr)  # now both ends of "a" are closed
        first.closed("a")
        second.closed("a")
        assert {"event": "closed", "key": "b"} not in first.events
        answer, fds = second.request({"op": "list", "after": 0})
        assert [pipe["key"] for pipe in answer["pipes"]] == ["b"]
        other.close()
        for fd in fds:
            os.close(fd)


def test_the_keeper_ignores_sigint_sigterm_and_sighup(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    with running_keeper(tmp_path) as keeper, Client(tmp_path) as client:
        pipes = add(client, "k", folder)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            os.killpg(keeper.pid, signum)  # as a Ctrl-C or a service manager would
            os.write(pipes.stdout, b"after %s\n" % signum.name.encode())
        assert client.request({"op": "flush", "key": "k"}) == ({"ok": True}, [])
        assert texts(folder) == [b"after SIGINT", b"after SIGTERM", b"after SIGHUP"]
        assert keeper.process.poll() is None
        pipes.close()


def test_the_keeper_ends_when_its_last_client_leaves_with_no_pipe(tmp_path: Path) -> None:
    with running_keeper(tmp_path) as keeper:
        Client(tmp_path).close()
        assert keeper.process.wait(10) == 0
        assert "nothing left to keep" in read_text(keeper.diagnostics)


def test_the_keeper_outlives_its_client_while_it_holds_pipes(tmp_path: Path) -> None:
    folder = tmp_path / "logs"
    with running_keeper(tmp_path) as keeper:
        with Client(tmp_path) as client:
            pipes = add(client, "k", folder)
        os.write(pipes.stdout, b"fsup is gone, I still log\n")
        wait_for(lambda: texts(folder) == [b"fsup is gone, I still log"], "the line")
        assert keeper.process.poll() is None
        pipes.close()  # the child ends: nothing is left to keep
        assert keeper.process.wait(10) == 0


def test_the_keeper_ends_if_no_client_ever_came(tmp_path: Path) -> None:
    with running_keeper(tmp_path, "--first-client-wait", "0.3") as keeper:
        assert keeper.process.wait(10) == 0


def test_a_second_keeper_for_the_home_says_busy(tmp_path: Path) -> None:
    with running_keeper(tmp_path) as keeper:
        keeper.diagnostics.write_bytes(b"x" * (2 << 20))  # the running keeper's file
        process, word = start_keeper(tmp_path)
        try:
            assert word == b"busy\n"
            assert process.wait(10) == 0
        finally:
            stop(process)
        assert keeper.diagnostics.stat().st_size == 2 << 20  # the busy one emptied nothing


def test_a_diagnostics_file_over_1_mib_is_emptied_at_start(tmp_path: Path) -> None:
    (tmp_path / "logkeeper.log").write_bytes(b"old\n" * 300_000)
    with running_keeper(tmp_path) as keeper:
        text = read_text(keeper.diagnostics)
        assert "old" not in text and "listening for" in text


def test_no_process_is_left_when_the_keeper_is_killed(tmp_path: Path) -> None:
    with running_keeper(tmp_path) as keeper:
        pid = keeper.pid
        assert psutil.Process(pid).children() == []
    assert not psutil.pid_exists(pid)
