"""The fsup CLI, driven as a subprocess against a real server."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import stat
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import httpx
import pytest
import yaml
from helpers import EXAMPLES, REPO, Server, wait_for

from supervisor.storage.intake import pack_folder

pytestmark = pytest.mark.e2e


def fsup(
    server_or_home: Server | Path, *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    if isinstance(server_or_home, Server):
        home, url = server_or_home.home, server_or_home.url
    else:
        home, url = server_or_home, "http://127.0.0.1:9"  # nothing listens there
    env = {**os.environ, "MUXI_HOME": str(home), "MUXI_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "supervisor", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok_json(server: Server, *args: str) -> dict:
    done = fsup(server, "--json", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_full_cycle_deploy_update_rollback_logs_download_stop_rm(
    server: Server, tmp_path: Path
) -> None:
    first = ok_json(server, "deploy", str(EXAMPLES / "hello"))
    assert (first["formation_id"], first["status"], first["version"]) == (
        "hello",
        "running",
        "1.0.0",
    )
    listing = ok_json(server, "ls")
    assert [f["id"] for f in listing["formations"]] == ["hello"]

    updated = ok_json(server, "deploy", str(EXAMPLES.parent / "updates" / "hello-1.1.0"))
    assert updated["version"] == "1.1.0" and updated["previous_version"] == "1.0.0"
    again = fsup(server, "deploy", str(EXAMPLES.parent / "updates" / "hello-1.1.0"))
    assert again.returncode == 1 and "VERSION_NOT_HIGHER" in again.stderr
    assert "raise `version`" in again.stderr

    rolled = ok_json(server, "rollback", "hello")
    assert rolled["version"] == "1.0.0"
    shown = ok_json(server, "show", "hello")
    assert shown["versions"] == ["1.0.0", "1.1.0"] and shown["status"] == "running"

    logs = ok_json(server, "logs", "hello", "-n", "5", "--stream", "stdout")
    assert logs["lines"] and all(line["stream"] == "stdout" for line in logs["lines"])
    plain = fsup(server, "logs", "hello", "-n", "2")
    assert plain.returncode == 0 and "stdout | " in plain.stdout

    target = tmp_path / "hello.zip"
    downloaded = ok_json(server, "download", "hello", "-o", str(target))
    assert downloaded["file"] == str(target)
    assert "formation.yaml" in zipfile.ZipFile(target).namelist()

    stopped = ok_json(server, "stop", "hello")
    assert stopped["status"] == "stopped"
    status = ok_json(server, "status")
    assert status["formations"]["stopped"] == 1
    assert status["log_keeper"]["connected"] is True and status["log_keeper"]["error"] is None
    shown = fsup(server, "status")
    assert shown.returncode == 0 and "stamped by the log keeper" in shown.stdout
    table = fsup(server, "ls")
    assert table.returncode == 0 and "hello" in table.stdout and "stopped" in table.stdout
    audit = ok_json(server, "audit", "-n", "100")
    assert any(
        e["method"] == "PUT" and e["path"] == "/rpc/formations/hello" for e in audit["entries"]
    )

    removed = ok_json(server, "rm", "hello", "-y")
    assert removed == {"id": "hello", "deleted": True}
    assert ok_json(server, "ls")["total"] == 0


def test_progress_is_plain_lines_off_a_terminal(server: Server) -> None:
    done = fsup(server, "deploy", str(EXAMPLES / "hello"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    stages = [line.split(":", 1)[0] for line in lines[:-1]]
    assert stages[:5] == [
        "extracting",
        "validating",
        "resolving_runtime",
        "downloading_sif",
        "pulling_runner",
    ]
    assert "health_check" in stages and "(skipped)" in lines[3]
    assert lines[-1].startswith("hello: deployed 1.0.0, running on port")


def test_errors_exit_1_with_code_message_and_hint(server: Server, home: Path) -> None:
    missing = fsup(server, "show", "ghost")
    assert missing.returncode == 1 and missing.stdout == ""
    assert "FORMATION_NOT_FOUND" in missing.stderr and "fsup ls" in missing.stderr
    assert "Traceback" not in missing.stderr
    crash = fsup(server, "deploy", str(REPO / "tests" / "fixtures"))
    assert crash.returncode == 1 and "has no formation.yaml" in crash.stderr
    unreachable = fsup(home, "ls")
    assert unreachable.returncode == 1 and "cannot reach the server" in unreachable.stderr
    usage = fsup(server, "frobnicate")
    assert usage.returncode == 2 and "invalid choice" in usage.stderr
    no_id = fsup(server, "start")
    assert no_id.returncode == 2


def test_wrong_keys_say_so(server: Server, home: Path) -> None:
    added = fsup(
        server,
        "profile",
        "add",
        "bad",
        "--url",
        server.url,
        "--key-id",
        "MUXI_LOCAL_x",
        "--secret-key",
        "nope",
    )
    assert added.returncode == 0
    denied = fsup(server, "--profile", "bad", "ls")
    assert denied.returncode == 1 and "UNAUTHORIZED" in denied.stderr
    assert "key id and secret" in denied.stderr


def test_profiles_file_and_its_mode(server: Server, home: Path) -> None:
    creds = json.loads((home / "server" / "credentials.json").read_text())
    done = fsup(
        server,
        "profile",
        "add",
        "mine",
        "--url",
        server.url,
        "--key-id",
        creds["key_id"],
        "--secret-key",
        creds["secret_key"],
        "--default",
    )
    assert done.returncode == 0
    path = home / "profiles.yaml"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    doc = yaml.safe_load(path.read_text())
    assert doc["default"] == "mine" and doc["profiles"]["mine"]["url"] == server.url
    listed = ok_json(server, "profile", "ls")
    assert listed["default"] == "mine"
    assert [p["name"] for p in listed["profiles"]] == ["local", "mine"]
    env = {**os.environ, "MUXI_HOME": str(home)}
    env.pop("MUXI_URL", None)
    via_default = subprocess.run(
        [sys.executable, "-m", "supervisor", "--json", "ls"],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert via_default.returncode == 0, via_default.stderr  # the default profile's URL
    assert fsup(server, "profile", "use", "local").returncode == 0
    assert yaml.safe_load(path.read_text())["default"] is None
    assert fsup(server, "profile", "rm", "mine").returncode == 0
    gone = fsup(server, "--profile", "mine", "ls")
    assert gone.returncode == 1 and "no profile named 'mine'" in gone.stderr


def test_logs_follow_stops_cleanly_on_ctrl_c(server: Server) -> None:
    server.rpc.deploy(open_bundle(EXAMPLES / "hello"))
    env = {**os.environ, "MUXI_HOME": str(server.home), "MUXI_URL": server.url}
    follower = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "logs", "hello", "-f", "-n", "1"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_works,
    )
    try:
        ready, _, _ = select.select([follower.stdout], [], [], 20)
        assert ready and follower.stdout is not None and follower.stdout.readline()
        follower.send_signal(signal.SIGINT)
        _, stderr = follower.communicate(timeout=20)
        assert follower.returncode == 0 and "Traceback" not in stderr
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()


def test_search_prints_hits(server: Server) -> None:
    server.rpc.deploy(open_bundle(EXAMPLES / "hello"))
    wait_for(lambda: "listening" in fsup(server, "logs", "hello").stdout)
    done = fsup(server, "search", "listening", "on", "port")
    assert done.returncode == 0, done.stderr
    assert "[log] hello: hello 1.0.0 listening on port" in done.stdout
    assert "1 result(s)" in done.stdout
    as_json = ok_json(server, "search", "listening")
    assert as_json["results"]["total"] == 1


def ctrl_c_works() -> None:
    """In the child before exec: SIGINT back to its default, so that Python installs its
    KeyboardInterrupt handler even when this test run was started as a background job of a
    non-interactive shell (which starts its jobs with SIGINT ignored, inherited here)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def open_bundle(folder: Path) -> bytes:
    return pack_folder(folder)


def test_packing_leaves_out_what_does_not_belong(tmp_path: Path) -> None:
    app = tmp_path / "app"
    for name in (
        "formation.yaml",
        "main.py",
        "sub/data/keep.txt",
        "sub/mod.py",
        ".git/HEAD",
        "__pycache__/x.cpython-311.pyc",
        "sub/y.pyc",
        ".env",
        ".env.local",
        "node_modules/pkg/index.js",
        "logs/today.txt",
        "app.log",
        "data/state.bin",
        "memory.db",
    ):
        path = app / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x")
    (app / "link").symlink_to(app / "main.py")
    with tarfile.open(fileobj=io.BytesIO(pack_folder(app)), mode="r:gz") as archive:
        names = {
            n.removeprefix("app/") for n in archive.getnames() if not archive.getmember(n).isdir()
        }
    assert names == {"formation.yaml", "main.py", "sub/data/keep.txt", "sub/mod.py"}


@pytest.mark.parametrize(
    ("code", "message", "words"),
    [
        (
            "UNAUTHORIZED",
            "request timestamp is 400s away from the server clock (limit 300s)",
            "clock",
        ),
        ("UNAUTHORIZED", "invalid key id or signature", "key id and secret"),
        ("VERSION_NOT_HIGHER", "version 1.0.0 is not higher", "raise `version`"),
        ("PORTS_EXHAUSTED", "no free port", "--port-range"),
    ],
)
def test_hints_say_what_to_do(code: str, message: str, words: str) -> None:
    from supervisor.cli.client import ApiError  # noqa: PLC0415
    from supervisor.cli.commands import hint_for  # noqa: PLC0415

    assert words in hint_for(ApiError(400, code, message, {}))


@pytest.mark.parametrize(
    ("argv", "bad"),
    [
        (["show", "../x"], "'../x'"),
        (["show", "hello/../x"], "'hello/../x'"),
        (["start", "Hello"], "'Hello'"),
        (["stop", "ab"], "'ab'"),
        (["restart", "x" * 51], "'xxx"),
        (["rollback", "rpc"], "'rpc' is reserved"),
        (["rm", "-y", "hello-"], "'hello-'"),
        (["logs", "-n", "5", "hello\n"], "'hello\\n'"),
        (["logs", "he%2Fllo"], "'he%2Fllo'"),
        (["download", "--db", "--", "-hello"], "'-hello'"),
        (["download", "caf\u00e9"], "'caf\u00e9'"),
    ],
)
def test_ids_are_checked_before_any_request(
    argv: list[str],
    bad: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from supervisor.cli import commands as cli  # noqa: PLC0415

    monkeypatch.setenv("MUXI_HOME", str(tmp_path))
    monkeypatch.setattr(cli, "rpc", lambda *_: pytest.fail("a request was about to be made"))
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "argument id: " in err and bad in err and "is not a formation id" in err
    assert list(tmp_path.iterdir()) == []  # nothing written either


def test_good_ids_go_through_and_deploy_reads_the_id_the_same_way(tmp_path: Path) -> None:
    from supervisor.cli.commands import CliError, manifest_id  # noqa: PLC0415
    from supervisor.cli.parser import build_parser  # noqa: PLC0415

    for command in ("show", "start", "stop", "restart", "rollback", "rm", "logs", "download"):
        assert build_parser().parse_args([command, "my-app-2"]).id == "my-app-2"
    assert manifest_id(b"id: my-app\nversion: 1.0.0\n", tmp_path) == "my-app"
    for text in (b"id: ../x\n", b"id: api\n", b"version: 1.0.0\n", b"id: [a]\n"):
        with pytest.raises(CliError, match="formation.yaml: id: "):
            manifest_id(text, tmp_path)


def test_live_search_stops_cleanly_on_ctrl_c(server: Server) -> None:
    server.rpc.deploy(open_bundle(EXAMPLES / "hello"))
    wait_for(lambda: "listening" in fsup(server, "logs", "hello").stdout)
    env = {**os.environ, "MUXI_HOME": str(server.home), "MUXI_URL": server.url}
    searcher = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "search", "--live", "listening"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=ctrl_c_works,
    )
    try:
        ready, _, _ = select.select([searcher.stdout], [], [], 20)
        assert ready and searcher.stdout is not None
        assert "[log] hello:" in searcher.stdout.readline()
        searcher.send_signal(signal.SIGINT)
        out, err = searcher.communicate(timeout=20)
        assert searcher.returncode == 0 and "Traceback" not in err
        assert "1 result(s)" in out
    finally:
        if searcher.poll() is None:
            searcher.kill()
            searcher.communicate()
    # The search was stopped on the server, not left running.
    bearer = httpx.get(f"{server.url}/api/v1/auth/bootstrap").json()["token"]
    searches = httpx.get(
        f"{server.url}/api/v1/searches", headers={"Authorization": f"Bearer {bearer}"}
    ).json()["searches"]
    assert [s["state"] for s in searches] == ["stopped"]


def test_auth_scheme_muxi_hmac_signs_as_muxi_clients_do(server: Server) -> None:
    status = ok_json(server, "--auth-scheme", "muxi-hmac", "status")
    assert status["formations"]["total"] == 0
    audit = ok_json(server, "audit", "-n", "2")["entries"]
    assert [(e["auth"], e["path"]) for e in audit][0] == ("muxi-hmac", "/rpc/server/status")
    wrong = fsup(server, "--auth-scheme", "bearer", "status")
    assert wrong.returncode == 2 and "invalid choice" in wrong.stderr
