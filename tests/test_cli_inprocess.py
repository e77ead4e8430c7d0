"""The `fsup` CLI called in-process through `supervisor.cli.commands.main(argv)` against a real server.

One server for the module (tests/helpers.Server, its own home) with the `hello` example
deployed; no test changes its formations, so the tests do not depend on each other. Output is
read with capsys; MUXI_HOME and MUXI_URL are set with monkeypatch.

What it proves: `ls` and `show` print tables for people and JSON with `--json`; an API error
is exit 1 with its code, message and hint on stderr and nothing on stdout; a usage error is
argparse's exit 2; `--auth-scheme muxi-hmac` signs as MUXI clients do and is audited so;
profiles are added, listed, chosen and removed in their own home and used for requests; an
unreachable server is exit 1 with `cannot reach the server`.
"""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import EXAMPLES, Server, formation_processes

from supervisor.cli.commands import main
from supervisor.storage.intake import pack_folder

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    home = tmp_path_factory.mktemp("muxi")
    server = Server(home).start()
    try:
        server.rpc.deploy(pack_folder(EXAMPLES / "hello"))
        yield server
    finally:
        code = server.stop()
    assert code == 0, server.log_tail()
    assert formation_processes(home) == []


@pytest.fixture
def env(served: Server, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The CLI pointed at the module's server, as `fsup` run in its home would be."""
    monkeypatch.setenv("MUXI_HOME", str(served.home))
    monkeypatch.setenv("MUXI_URL", served.url)
    return served


Capture = pytest.CaptureFixture[str]


def run(capsys: Capture, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # what came before is not this command's
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def ok_json(capsys: Capture, *argv: str) -> Any:
    code, out, err = run(capsys, "--json", *argv)
    assert code == 0, err
    return json.loads(out)


def usage_error(capsys: Capture, *argv: str) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(list(argv))
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    return err


def test_ls_as_a_table_and_as_json(env: Server, capsys: Capture) -> None:
    listing = ok_json(capsys, "ls")
    assert listing["total"] == 1
    (hello,) = listing["formations"]
    assert (hello["id"], hello["version"], hello["status"]) == ("hello", "1.0.0", "running")
    code, out, err = run(capsys, "ls")
    assert code == 0 and err == ""
    header, row = out.splitlines()
    assert header.split() == [
        "ID",
        "VERSION",
        "STATUS",
        "HEALTHY",
        "PID",
        "PORT",
        "RESTARTS",
        "UPTIME",
    ]
    cells = row.split()
    assert cells[:6] == ["hello", "1.0.0", "running", "True", str(hello["pid"]), str(hello["port"])]


def test_show_as_fields_and_as_json(env: Server, capsys: Capture) -> None:
    shown = ok_json(capsys, "show", "hello")
    assert (shown["id"], shown["status"], shown["versions"]) == ("hello", "running", ["1.0.0"])
    assert shown["description"] == "A small HTTP service with a health endpoint"
    code, out, _ = run(capsys, "show", "hello")
    assert code == 0
    fields = {k: v.strip() for k, v in (line.split(None, 1) for line in out.splitlines())}
    assert fields["id"] == "hello" and fields["status"] == "running"
    assert fields["pid"] == str(shown["pid"]) and fields["versions"] == "1.0.0"
    assert fields["last_error"] == "-" and "uptime" in fields


def test_an_api_error_is_exit_1_with_code_message_and_hint(env: Server, capsys: Capture) -> None:
    code, out, err = run(capsys, "show", "ghost")
    assert (code, out) == (1, "")
    assert "error: FORMATION_NOT_FOUND: formation 'ghost' not found" in err
    assert "hint: see `fsup ls` for the formations there are" in err
    assert "Traceback" not in err
    # Through a streamed operation too (the error arrives as an SSE event).
    code, out, err = run(capsys, "start", "hello")
    assert (code, out) == (1, "")
    assert "FORMATION_ALREADY_RUNNING" in err and "hint: use `fsup restart`" in err
    code, _, err = run(capsys, "--json", "rm", "-y", "ghost")
    assert code == 1 and "FORMATION_NOT_FOUND" in err


def test_usage_errors_exit_2_before_any_request(env: Server, capsys: Capture) -> None:
    assert "invalid choice: 'frobnicate'" in usage_error(capsys, "frobnicate")
    assert "the following arguments are required: id" in usage_error(capsys, "start")
    assert "is not a formation id" in usage_error(capsys, "show", "../x")
    assert "invalid choice: 'bearer'" in usage_error(capsys, "--auth-scheme", "bearer", "status")
    assert "-n/--lines: invalid int value" in usage_error(capsys, "logs", "hello", "-n", "x")


def test_auth_scheme_muxi_hmac(env: Server, capsys: Capture) -> None:
    status = ok_json(capsys, "--auth-scheme", "muxi-hmac", "status")
    assert status["formations"]["total"] == 1 and status["formations"]["running"] == 1
    entries = ok_json(capsys, "audit", "-n", "1")["entries"]
    assert [(e["auth"], e["method"], e["path"], e["status"]) for e in entries] == [
        ("muxi-hmac", "GET", "/rpc/server/status", 200)
    ]
    code, out, _ = run(capsys, "--auth-scheme", "muxi-hmac", "status")
    assert code == 0
    assert "formations" in out and "1 (1 running, 0 stopped, 0 crashed)" in out


def test_profiles_in_their_own_home(
    served: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("MUXI_HOME", str(tmp_path))
    monkeypatch.delenv("MUXI_URL", raising=False)
    creds = json.loads((served.home / "server" / "credentials.json").read_text())
    code, out, _ = run(
        capsys,
        "profile",
        "add",
        "mine",
        "--url",
        served.url,
        "--key-id",
        creds["key_id"],
        "--secret-key",
        creds["secret_key"],
        "--default",
    )
    assert (code, out.strip()) == (0, "profile mine saved")
    path = tmp_path / "profiles.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert yaml.safe_load(path.read_text())["profiles"]["mine"]["url"] == served.url
    listed = ok_json(capsys, "profile", "ls")
    assert listed == {
        "default": "mine",
        "profiles": [
            {"name": "local", "url": "http://127.0.0.1:7890 (credentials.json)", "default": False},
            {"name": "mine", "url": served.url, "default": True},
        ],
    }
    code, out, _ = run(capsys, "profile", "ls")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["NAME", "local", "mine"]
    # The default profile reaches the server: no URL given, no credentials in this home.
    assert ok_json(capsys, "ls")["total"] == 1

    assert ok_json(capsys, "profile", "use", "local") == {"default": "local"}
    assert yaml.safe_load(path.read_text())["default"] is None
    code, _, err = run(capsys, "ls")
    assert code == 1 and "no credentials at" in err
    assert ok_json(capsys, "--profile", "mine", "ls")["total"] == 1

    assert ok_json(capsys, "profile", "rm", "mine") == {"removed": "mine"}
    code, _, err = run(capsys, "--profile", "mine", "ls")
    assert code == 1 and "no profile named 'mine'" in err
    for argv, words in (
        (("profile", "rm", "mine"), "no profile named 'mine'"),
        (("profile", "use", "nope"), "no profile named 'nope'"),
        (
            ("profile", "add", "local", "--url", "x", "--key-id", "k", "--secret-key", "s"),
            "built-in local profile",
        ),
    ):
        code, _, err = run(capsys, *argv)
        assert code == 1 and words in err, argv
    assert yaml.safe_load(path.read_text()) == {"default": None, "profiles": {}}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # closed again when this returns


def test_an_unreachable_server_is_exit_1_with_a_hint(
    served: Server, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    monkeypatch.setenv("MUXI_HOME", str(served.home))
    monkeypatch.setenv("MUXI_URL", f"http://127.0.0.1:{closed_port()}")
    for argv in (["ls"], ["--json", "show", "hello"], ["status"], ["stop", "hello"]):
        code, out, err = run(capsys, *argv)
        assert (code, out) == (1, ""), argv
        assert "error: cannot reach the server" in err
        assert "hint: is `fsup serve` running? (--url, $MUXI_URL)" in err
    # Nothing was stopped by the last one.
    assert served.formation("hello")["status"] == "running"
