"""The README, run as written: its walk-throughs top to bottom against a real fsup, its links.

The walk-throughs' shell blocks are read from README.md and sent one command at a time to one
bash process (so `field`, `$TOKEN`, `$SEARCH` and `%1` carry over, as in a terminal), from a
working folder that looks like the repository's root (`examples/` and `.venv/bin/fsup`), on a
fresh `fsup serve --deploy examples/formations` (the quick start). The only rewrites are the
server's address (a free port instead of 7890) and `/tmp/` (this test's own folder). A command
whose comment says "Ctrl-C to stop" runs for a few seconds and is then interrupted. Reading
the Markdown and driving bash are `readme_kit.py`; what each command must show is here.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from helpers import EXAMPLES, REPO, Server, example_bundle, wait_for
from readme_kit import Ran, Shell, anchors, link_targets, sections, shell_commands

pytestmark = pytest.mark.e2e

README = REPO / "README.md"
SCRIPT = REPO / "examples" / "rpc-curl.sh"
QUICK_START = ".venv/bin/fsup serve --deploy examples/formations"
README_URL = "http://127.0.0.1:7890"
WALKTHROUGHS = ("The CLI", "Talking to it with curl", "Searches and the event stream")
FOLLOW_SECONDS = 3
SETTLE_SECONDS = 30  # how long a read-only command may be repeated until things settle


# --- Reading the README ---------------------------------------------------------------------


def walkthrough_commands() -> list[str]:
    found = sections(README.read_text())
    commands = []
    for title in WALKTHROUGHS:
        assert title in found, f"README has no section {title!r}"
        section_commands = shell_commands(found[title])
        assert section_commands, f"README section {title!r} has no ```sh block"
        commands += section_commands
    return commands


# --- What each command must show --------------------------------------------------------------


@dataclass
class Walk:
    server: Server
    workdir: Path
    runs: list[Ran] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    def output_of(self, key: str) -> str:
        """The output of the last command run so far that contains `key`."""
        return next(ran.out for ran in reversed(self.runs) if key in ran.command)


@dataclass(frozen=True)
class Expect:
    check: Callable[[Walk, Ran], object] = lambda walk, ran: True
    # A read-only command: run it again until the check holds (a restart settling, a search
    # finishing), as a reader would look again.
    settle: bool = False
    before: Callable[[Walk], object] | None = None


def sse_complete(walk: Walk, ran: Ran) -> bool:
    return "event: progress" in ran.out and "event: complete" in ran.out


def formation(ran: Ran) -> dict[str, Any]:
    answer: dict[str, Any] = ran.json()
    return answer


def ids(listed: dict[str, Any]) -> list[str]:
    return sorted(f["id"] for f in listed["formations"])


def is_zip(path: Path) -> bool:
    return path.is_file() and zipfile.is_zipfile(path)


def search_sources(ran: Ran) -> list[str]:
    return sorted({s for item in ran.json()["items"] for s in item["sources"]})


def events_seen(walk: Walk) -> str:
    return walk.output_of("$API/events &")


# Keyed by a piece of the command that occurs in exactly one README command. Every command must
# also exit 0 (124 for the "Ctrl-C to stop" ones), and a comment quoting text ("bonjour from
# 1.1.0") means that text is in the output.
EXPECT: dict[str, Expect] = {
    # The CLI
    ".venv/bin/fsup ls ": Expect(lambda w, r: "hello" in r.out and "flaky" in r.out),
    ".venv/bin/fsup show hello": Expect(lambda w, r: "hello" in r.out and "1.0.0" in r.out),
    "fsup deploy examples/updates/hello-1.1.0": Expect(lambda w, r: "1.1.0" in r.out),
    "fsup rollback hello": Expect(
        lambda w, r: "hello: running, version 1.0.0 (from 1.1.0)" in r.out
    ),
    "fsup logs hello -n 20": Expect(lambda w, r: "hello 1.0.0 listening on port" in r.out),
    "fsup logs hello -f": Expect(lambda w, r: "listening on port" in r.out),
    "fsup search listening on port": Expect(
        lambda w, r: "hello 1.0.0 listening on port" in r.out and "flaky listening on port" in r.out
    ),
    "fsup restart flaky": Expect(lambda w, r: "flaky: running" in r.out),
    "fsup download hello --db -o hello.zip": Expect(lambda w, r: is_zip(w.workdir / "hello.zip")),
    "fsup status": Expect(lambda w, r: "formations" in r.out and "2 (" in r.out),
    "fsup audit": Expect(lambda w, r: "/rpc/formations/flaky/restart" in r.out),
    "fsup rm flaky": Expect(lambda w, r: "flaky: deleted" in r.out),
    "fsup deploy examples/formations/flaky": Expect(
        lambda w, r: "flaky" in r.out and "running" in r.out
    ),
    # Talking to it with curl
    "# list formations": Expect(lambda w, r: ids(r.json()) == ["flaky", "hello"]),
    "# one formation": Expect(lambda w, r: formation(r)["status"] == "running"),
    "field() {": Expect(lambda w, r: r.out == ""),
    "# hello through fsup's proxy": Expect(lambda w, r: r.json()["message"] == "hello from 1.0.0"),
    "# or directly, on its own port": Expect(
        lambda w, r: r.json()["message"] == "hello from 1.0.0"
    ),
    "DELETE /rpc/formations/hello": Expect(
        lambda w, r: r.json() == {"id": "hello", "deleted": True}
    ),
    "POST /rpc/formations/deploy": Expect(
        lambda w, r: sse_complete(w, r) and '"stage": "health_check"' in r.out
    ),
    "hello/stop": Expect(lambda w, r: formation(r)["status"] == "stopped"),
    "hello/start": Expect(lambda w, r: formation(r)["status"] == "running"),
    "hello/restart -H 'Accept: text/event-stream'": Expect(
        lambda w, r: '"stage": "stopping"' in r.out and "event: complete" in r.out
    ),
    "GET /rpc/server/status": Expect(lambda w, r: r.json()["formations"]["total"] == 2),
    "PUT /rpc/formations/hello": Expect(
        lambda w, r: sse_complete(w, r) and '"stage": "swapping"' in r.out
    ),
    "hello/rollback": Expect(
        lambda w, r: (r.json()["version"], r.json()["previous_version"]) == ("1.0.0", "1.1.0")
    ),
    "logs?lines=20&stream=stdout": Expect(
        lambda w, r: r.json()["lines"] and all(x["stream"] == "stdout" for x in r.json()["lines"])
    ),
    "logs?follow=true": Expect(lambda w, r: "event: log" in r.out),
    "download -o hello.zip": Expect(lambda w, r: is_zip(w.workdir / "hello.zip")),
    "/rpc/server/logs?lines=10": Expect(
        lambda w, r: "/rpc/formations/hello/download" in [e["path"] for e in r.json()["entries"]]
    ),
    "(field flaky port)/crash": Expect(lambda w, r: r.json() == {"crashing": True}),
    "GET /rpc/formations/flaky": Expect(
        lambda w, r: formation(r)["status"] == "running" and formation(r)["restart_count"] >= 1,
        settle=True,
    ),
    "kill -9": Expect(
        before=lambda w: w.state.update(hello_pid=w.server.formation("hello")["pid"])
    ),
    "# back with a new pid": Expect(
        lambda w, r: (
            formation(r)["status"] == "running"
            and formation(r)["pid"] not in (None, w.state["hello_pid"])
        ),
        settle=True,
    ),
    # Searches and the event stream
    "$API/session": Expect(lambda w, r: r.json()["ok"] is True),
    "$API/events &": Expect(),
    "SEARCH=$(": Expect(
        lambda w, r: r.out == "",
        # A reader starts the search after the stream is up (its first line is sent once
        # subscribed); here the next command would follow within a millisecond.
        before=lambda w: wait_for(lambda: "retry:" in events_seen(w), 10),
    ),
    "# detail": Expect(lambda w, r: r.json()["search"]["keyword"] == "listening on port"),
    "results?sort=recent": Expect(
        lambda w, r: search_sources(r) == ["flaky", "hello"], settle=True
    ),
    "$API/nodes": Expect(
        lambda w, r: {"flaky", "hello"} <= set(re.findall(r'"(flaky|hello)"', r.out))
    ),
    "$API/routing/summary": Expect(lambda w, r: r.json()["routes"] == 2),
    # The session cookie with the dashboard's header: a change without the bearer token.
    "$API/formations/hello/restart": Expect(lambda w, r: r.json()["status"] == "running"),
    "kill %1": Expect(
        lambda w, r: "event: search_created" in events_seen(w),
        # A reader kills the stream after the search has run; wait for its last event.
        before=lambda w: wait_for(lambda: "event: search_completed" in events_seen(w), 30),
    ),
}


def expectation(command: str) -> Expect:
    keys = [key for key in EXPECT if key in command]
    assert len(keys) <= 1, f"{command!r} matches several expectations: {keys}"
    return EXPECT[keys[0]] if keys else Expect()


def quoted_in_comment(command: str) -> list[str]:
    """Texts quoted in a trailing comment: `curl ... # "bonjour from 1.1.0", through ...`."""
    comment = command.rsplit("\n", 1)[-1].partition("  # ")[2]
    return re.findall(r'"([^"]+)"', comment)


def run_step(shell: Shell, walk: Walk, command: str, as_written: str) -> None:
    expect = expectation(as_written)
    if expect.before is not None:
        expect.before(walk)
    follow = "Ctrl-C to stop" in as_written
    if follow:
        command = f"timeout -s INT {FOLLOW_SECONDS} {command}"
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        ran = shell.run(command)
        walk.runs.append(ran)
        assert ran.rc == (124 if follow else 0), ran.report()
        assert "Traceback" not in ran.err, ran.report()
        problem: Exception | None = None
        try:
            ok = bool(expect.check(walk, ran)) and all(
                t in ran.out for t in quoted_in_comment(as_written)
            )
        except (ValueError, KeyError, TypeError) as error:  # not the JSON or shape expected
            ok, problem = False, error
        if ok:
            return
        if not expect.settle or time.monotonic() > deadline:
            raise AssertionError(f"unexpected output ({problem!r})\n{ran.report()}")
        time.sleep(0.5)


@pytest.fixture
def quick_start(home: Path) -> Iterator[Server]:
    """The quick start: `fsup serve --deploy examples/formations`, both formations running."""
    server = Server(home).start("--deploy", str(EXAMPLES))
    try:
        wait_for(
            lambda: (
                sorted(
                    (f["id"], f["status"])
                    for f in server.rpc.call("GET", "/rpc/formations")["formations"]
                )
                == [("flaky", "running"), ("hello", "running")]
            ),
            timeout=30,
        )
        yield server
    finally:
        assert server.stop() == 0, server.log_tail()


def test_readme_walkthroughs_run_top_to_bottom_as_written(
    quick_start: Server, home: Path, tmp_path: Path
) -> None:
    assert QUICK_START in sections(README.read_text())["Quick start"]
    commands = walkthrough_commands()
    for key in EXPECT:
        assert sum(key in c for c in commands) == 1, f"{key!r} is not in exactly one README command"

    workdir, scratch = tmp_path / "work", tmp_path / "scratch"
    (workdir / ".venv" / "bin").mkdir(parents=True)
    scratch.mkdir()
    (workdir / "examples").symlink_to(REPO / "examples")
    shim = workdir / ".venv" / "bin" / "fsup"
    shim.write_text(
        f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(REPO))} "
        f'exec {shlex.quote(sys.executable)} -m supervisor "$@"\n'
    )
    shim.chmod(0o755)
    env = {**os.environ, "MUXI_HOME": str(home), "MUXI_URL": quick_start.url}

    walk = Walk(quick_start, workdir)
    shell = Shell(workdir, env, scratch)
    try:
        for as_written in commands:
            command = as_written.replace(README_URL, quick_start.url).replace(
                "/tmp/", f"{scratch}/"
            )
            run_step(shell, walk, command, as_written)
    finally:
        shell.close()

    # Followed to the end, the walk-throughs leave the fleet as the quick start made it.
    listed = quick_start.rpc.call("GET", "/rpc/formations")["formations"]
    assert sorted((f["id"], f["version"]) for f in listed) == [
        ("flaky", "1.0.0"),
        ("hello", "1.0.0"),
    ]


# --- The curl helper on its own ---------------------------------------------------------------


def rpc_curl(server: Server, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MUXI_HOME": str(home), "MUXI_URL": server.url}
    return subprocess.run(
        [str(SCRIPT), *args], env=env, capture_output=True, text=True, timeout=60, cwd=home
    )


def request_headers(verbose: str) -> list[str]:
    return [line[2:].lower() for line in verbose.splitlines() if line.startswith("> ")]


def test_rpc_curl_passes_curl_options_through(server: Server, home: Path) -> None:
    # No body: the empty body is signed and none is sent; every other argument goes to curl.
    done = rpc_curl(
        server,
        home,
        "GET",
        "/rpc/server/logs?lines=1",
        "-v",
        "-o",
        "status.json",
        "-H",
        "X-Extra: yes",
    )
    assert done.returncode == 0, done.stderr
    sent = request_headers(done.stderr)
    assert sent[0] == "get /rpc/server/logs?lines=1 http/1.1"
    assert "x-extra: yes" in sent and not [h for h in sent if h.startswith("content-")]
    assert "entries" in json.loads((home / "status.json").read_text())
    done = rpc_curl(server, home, "POST", "/rpc/formations/nope/start", "-w", "\n%{http_code}")
    assert done.stdout.splitlines()[-1] == "404", done.stdout
    assert json.loads(done.stdout.splitlines()[0])["error"]["code"] == "FORMATION_NOT_FOUND"


def test_rpc_curl_signs_and_sends_a_body_file(server: Server, home: Path) -> None:
    body = home / "bundle.tar.gz"
    body.write_bytes(b"not a bundle")
    done = rpc_curl(
        server,
        home,
        "POST",
        "/rpc/formations/deploy",
        "bundle.tar.gz",
        "-H",
        "Content-Type: application/gzip",
        "-v",
        "-w",
        "\n%{http_code}",
    )
    assert done.returncode == 0, done.stderr
    assert "content-length: 12" in request_headers(done.stderr)
    # Signed over the body: past authentication (401) to the bundle check.
    assert done.stdout.splitlines()[-1] == "400", done.stdout
    assert json.loads(done.stdout.splitlines()[0])["error"]["code"] != "UNAUTHORIZED"


def test_rpc_curl_signs_as_muxi_clients_do(server: Server, home: Path) -> None:
    done = rpc_curl(
        server, home, "--auth-scheme", "muxi-hmac", "GET", "/rpc/server/logs?lines=5", "-v"
    )
    assert done.returncode == 0, done.stderr
    sent = request_headers(done.stderr)
    assert any(h.startswith("authorization: muxi-hmac key=") for h in sent), sent
    assert not [h for h in sent if h.startswith("x-muxi-")]
    assert "entries" in json.loads(done.stdout)
    audit = server.rpc.call("GET", "/rpc/server/logs?lines=1")["entries"]
    assert (audit[-1]["auth"], audit[-1]["status"]) == ("muxi-hmac", 200)


def test_the_readme_sdk_example_runs(server: Server, home: Path) -> None:
    server.rpc.deploy(example_bundle("hello"))
    block = re.search(
        r"^```python\n(.*?)^```",
        sections(README.read_text())["HMAC signing"],
        flags=re.MULTILINE | re.DOTALL,
    )
    assert block is not None, "the HMAC section has no ```python block"
    env = {
        **os.environ,
        "MUXI_HOME": str(home),
        "MUXI_URL": server.url,
        "MUXI_SDK_VERSION_NOTIFICATION": "0",
        "NO_PROXY": "127.0.0.1",
    }
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", block.group(1)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=home,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert printed[0] == "['hello']" and printed[-1] == "running", printed


def test_rpc_curl_usage_errors(server: Server, home: Path) -> None:
    done = rpc_curl(server, home, "GET")
    assert done.returncode == 2 and "usage:" in done.stderr
    done = rpc_curl(server, home, "--auth-scheme", "bearer", "GET", "/rpc/formations")
    assert done.returncode == 2 and "signed-headers or muxi-hmac" in done.stderr
    done = rpc_curl(server, home, "POST", "/rpc/formations/deploy", "missing.tar.gz")
    assert done.returncode == 2 and "body file not found" in done.stderr


# --- Other README claims ----------------------------------------------------------------------


def test_serve_deploys_the_example_formations(home: Path) -> None:
    server = Server(home).start("--deploy", str(EXAMPLES))
    try:

        def both_running() -> bool:
            items = server.rpc.call("GET", "/rpc/formations")["formations"]
            return sorted((f["id"], f["status"]) for f in items) == [
                ("flaky", "running"),
                ("hello", "running"),
            ]

        wait_for(both_running, timeout=30)
    finally:
        assert server.stop() == 0
    # A second start neither duplicates nor fails: they are already deployed.
    server.start("--deploy", str(EXAMPLES))
    try:
        wait_for(lambda: server.rpc.call("GET", "/rpc/formations")["total"] == 2)
        assert "already deployed" in wait_for(
            lambda: (log := server.log_tail()).count("already deployed") >= 2 and log
        )
    finally:
        assert server.stop() == 0


def test_readme_links_stay_inside_the_repository() -> None:
    text = README.read_text()
    targets = link_targets(text)
    assert {"#hmac-signing", "docs/decisions.md"} <= set(targets)  # the parser sees links
    for target in targets:
        assert target, "an empty link target"
        assert not re.match(r"^([a-zA-Z][a-zA-Z0-9+.-]*:|//|/|www\.)", target), (
            f"{target!r} points outside the repository"
        )
        path_part, _, anchor = target.partition("#")
        path = (README.parent / path_part).resolve() if path_part else README
        assert path.is_relative_to(REPO), f"{target!r} points outside the repository"
        assert path.exists(), f"{target!r}: no such file in the repository"
        if anchor:
            assert path.suffix == ".md", f"{target!r}: an anchor into a non-Markdown file"
            assert anchor in anchors(path.read_text()), f"{target!r}: no such heading"
    # Nor may a path in the text lead out of it (`../shared/...`).
    assert "../" not in text
