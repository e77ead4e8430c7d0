"""The `fsup` command line: every endpoint from the terminal.

Built on the same client code as the tests (`supervisor.cli.client`: HMAC signing and SSE parsing
written once). Exit status: 0 on success, 1 on an error (its code and message on stderr with a
hint), 2 on a usage error (argparse's own).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from supervisor.cli import render as cli_render
from supervisor.cli.client import ApiClient, ApiError, RpcClient, SseEvent, decode
from supervisor.cli.common import CliError, done
from supervisor.cli.events_command import cmd_events
from supervisor.cli.parser import build_parser
from supervisor.cli.profile_commands import cmd_profile
from supervisor.cli.serve import serve
from supervisor.core.manifest import id_problem
from supervisor.core.search_states import SearchState
from supervisor.storage.home import Home, default_home
from supervisor.storage.intake import MANIFEST_NAME, pack_folder
from supervisor.storage.profiles import ProfileError, resolve

GZIP = {"Content-Type": "application/gzip"}
ZIP = {"Content-Type": "application/zip"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    home = Home(default_home())
    if args.command == "serve":
        return serve(args, home)
    try:
        COMMANDS[args.command](args, home)
        return 0
    except KeyboardInterrupt:
        cli_render.err.print()
        return 0 if args.command in ("logs", "search", "events") else 130
    except CliError as exc:
        report(args, str(exc), exc.hint)
    except ApiError as exc:
        report(args, f"{exc.code}: {exc.message}", hint_for(exc), exc.details)
    except ProfileError as exc:
        report(args, str(exc))
    except httpx.ConnectError:
        report(args, "cannot reach the server", "is `fsup serve` running? (--url, $MUXI_URL)")
    except httpx.HTTPError as exc:
        report(args, f"the connection to the server failed: {exc}")
    return 1


def report(args: argparse.Namespace, message: str, hint: str = "", details: Any = None) -> None:
    cli_render.err.print(f"[bold red]error:[/bold red] {message}", markup=True)
    tail = (details or {}).get("stderr_tail") if isinstance(details, dict) else None
    if tail:
        cli_render.err.print("[dim]its stderr ended with:[/dim]", markup=True)
        cli_render.err.print(tail.rstrip(), markup=False)
    if hint:
        cli_render.err.print(f"hint: {hint}", markup=False)


def hint_for(exc: ApiError) -> str:
    """What to do next, naming the formation when the error does (its id is the server's,
    checked against the id rule, never free text)."""
    if exc.code == "UNAUTHORIZED":
        if "clock" in exc.message:
            return "this machine's clock and the server's differ; fix the time on one of them"
        return "check the profile's key id and secret (`fsup profile ls`)"
    return {
        "FORMATION_NOT_FOUND": "see `fsup ls` for the formations there are",
        "VERSION_NOT_HIGHER": "raise `version` in formation.yaml, then deploy again",
        "FORMATION_ALREADY_RUNNING": "use `fsup restart` to restart it",
        "FORMATION_NOT_RUNNING": "use `fsup start` to start it",
        "NO_PREVIOUS_VERSION": "there is no older version kept to roll back to",
        "UPDATE_IN_PROGRESS": "wait for it to finish, or cancel it",
        "HEALTH_CHECK_FAILED": f"see `fsup logs {named(exc.details)}` for what the process said"
        + (" (kept until its next deploy)" if "log_dir" in exc.details else ""),
        "PORTS_EXHAUSTED": "stop or delete a formation, or widen --port-range",
    }.get(exc.code, "")


def named(details: Any, fallback: str = "ID") -> str:
    """The formation id an error's details name, else `fallback`."""
    found = details.get("formation_id") if isinstance(details, dict) else None
    return found if isinstance(found, str) and id_problem(found) is None else fallback


# -- helpers ---------------------------------------------------------------------------------


def rpc(args: argparse.Namespace, home: Home) -> RpcClient:
    profile = resolve(home, args.profile, args.url)
    return RpcClient(
        profile.url, profile.key_id, profile.secret_key, timeout=120, scheme=args.auth_scheme
    )


def operation(
    args: argparse.Namespace,
    client: RpcClient,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    formation_id: str = "ID",
) -> dict[str, Any]:
    """Run a streamed lifecycle operation with progress; return its result or raise."""
    final = cli_render.follow_progress(client.stream(method, path, body, headers), args.json)
    if final is None:
        raise CliError(
            "the server closed the stream before the operation finished",
            f"check `fsup show {formation_id}`; the operation may still be under way",
        )
    if final.event == "error":
        data = final.data
        raise ApiError(0, data.get("code", "?"), data.get("message", ""), data.get("details") or {})
    return final.data  # type: ignore[no-any-return]


def uptime(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# -- commands ----------------------------------------------------------------------------------


def cmd_deploy(args: argparse.Namespace, home: Home) -> None:
    body, headers, formation_id = bundle_of(args.path)
    with rpc(args, home) as client:
        try:
            client.call("GET", f"/rpc/formations/{formation_id}")
            exists = True
        except ApiError as exc:
            if exc.code != "FORMATION_NOT_FOUND":
                raise
            exists = False
        if exists:
            result = operation(
                args, client, "PUT", f"/rpc/formations/{formation_id}", body, headers, formation_id
            )
            verb = f"updated to {result['version']} (from {result.get('previous_version')})"
        else:
            result = operation(
                args, client, "POST", "/rpc/formations/deploy", body, headers, formation_id
            )
            verb = f"deployed {result['version']}"
    done(
        args,
        result,
        f"{formation_id}: {verb}, {result['status']} on port {result['port']} "
        f"(pid {result['pid']})",
    )


def bundle_of(path: Path) -> tuple[bytes, dict[str, str], str]:
    """The bundle to send, its content type, and the formation id its manifest declares."""
    if path.is_dir():
        manifest = path / MANIFEST_NAME
        if not manifest.is_file():
            raise CliError(f"{path} has no {MANIFEST_NAME}", "point at a formation folder")
        return pack_folder(path.resolve()), GZIP, manifest_id(manifest.read_bytes(), path)
    if not path.is_file():
        raise CliError(f"{path} does not exist")
    data = path.read_bytes()
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            name = _manifest_member(archive.namelist(), path)
            return data, ZIP, manifest_id(archive.read(name), path)
    try:
        with tarfile.open(path, "r:*") as archive:
            name = _manifest_member(archive.getnames(), path)
            member = archive.extractfile(name)
            assert member is not None
            return data, GZIP, manifest_id(member.read(), path)
    except tarfile.TarError:
        raise CliError(f"{path} is neither a folder, a .tar.gz nor a .zip") from None


def _manifest_member(names: list[str], path: Path) -> str:
    for name in names:
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if parts and parts[-1] == MANIFEST_NAME and len(parts) <= 2:
            return name
    raise CliError(f"{path} holds no {MANIFEST_NAME} at its top or in its top folder")


def manifest_id(text: bytes, where: Path) -> str:
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CliError(f"{where}: {MANIFEST_NAME} is not valid YAML: {exc}") from None
    formation_id = doc.get("id") if isinstance(doc, dict) else None
    problem = id_problem(formation_id)  # the server's own rule
    if problem is not None:
        raise CliError(f"{where}: {MANIFEST_NAME}: id: {problem}", "an id looks like my-app")
    return str(formation_id)


def cmd_ls(args: argparse.Namespace, home: Home) -> None:
    with rpc(args, home) as client:
        listing = client.call("GET", "/rpc/formations")
    if args.json:
        cli_render.print_json(listing)
        return
    if not listing["formations"]:
        cli_render.out.print("no formations; deploy one with `fsup deploy PATH`")
        return
    cli_render.table(
        ["ID", "VERSION", "STATUS", "HEALTHY", "PID", "PORT", "RESTARTS", "UPTIME"],
        (
            [
                f["id"],
                f.get("version"),
                f.get("status"),
                f.get("healthy"),
                f.get("pid"),
                f.get("port"),
                f.get("restart_count"),
                uptime(f.get("uptime_s")),
            ]
            for f in listing["formations"]
        ),
    )


def cmd_show(args: argparse.Namespace, home: Home) -> None:
    with rpc(args, home) as client:
        formation = client.call("GET", f"/rpc/formations/{args.id}")
    if args.json:
        cli_render.print_json(formation)
        return
    keys = (
        "id",
        "version",
        "status",
        "healthy",
        "pid",
        "port",
        "restart_count",
        "desired",
        "versions",
        "update_in_progress",
        "last_exit_code",
        "last_error",
        "created_at",
        "updated_at",
        "description",
    )
    cli_render.fields(
        (key, ", ".join(formation[key]) if key == "versions" else formation.get(key))
        for key in keys
    )
    cli_render.fields([("uptime", uptime(formation.get("uptime_s")))])


def lifecycle(action: str) -> Callable[[argparse.Namespace, Home], None]:
    def run(args: argparse.Namespace, home: Home) -> None:
        with rpc(args, home) as client:
            path = f"/rpc/formations/{args.id}/{action}"
            result = operation(args, client, "POST", path, formation_id=args.id)
        extra = f" (from {result['previous_version']})" if result.get("previous_version") else ""
        done(
            args,
            result,
            f"{args.id}: {result['status']}, version {result['version']}{extra}"
            + (f", pid {result['pid']}" if result.get("pid") else ""),
        )

    return run


def cmd_rm(args: argparse.Namespace, home: Home) -> None:
    if not args.yes and sys.stdin.isatty():
        answer = cli_render.out.input(
            f"Delete formation {args.id!r}, its versions and logs? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            raise CliError("not deleted")
    with rpc(args, home) as client:
        result = client.call("DELETE", f"/rpc/formations/{args.id}")
    done(args, result, f"{args.id}: deleted")


def cmd_logs(args: argparse.Namespace, home: Home) -> None:
    if args.lines < 0:
        raise CliError("-n must be 0 or more")
    path = f"/rpc/formations/{args.id}/logs?lines={args.lines}&stream={args.stream}"
    with rpc(args, home) as client:
        if not args.follow:
            result = client.call("GET", path)
            if args.json:
                cli_render.print_json(result)
                return
            for line in result["lines"]:
                print_log_line(line)
            failed = result.get("failed_deploy")
            if failed:  # a formation that is gone: say whose lines these were
                cli_render.err.print(failed_note(failed), markup=False)
            return
        for event in client.stream("GET", path + "&follow=true"):
            if event.event == "log":
                if args.json:
                    sys.stdout.write(json.dumps(event.data, sort_keys=True) + "\n")
                    sys.stdout.flush()
                else:
                    print_log_line(event.data)


def failed_note(failed: dict[str, Any]) -> str:
    return (
        f"(from the failed deploy of {failed.get('formation_id')} "
        f"{failed.get('version')} at {failed.get('failed_at')}: {failed.get('code')}; "
        "it is not deployed)"
    )


def print_log_line(line: dict[str, Any]) -> None:
    """`13:02:11.482 stderr | text`: when the keeper read the line (local time), its stream,
    its text."""
    cli_render.out.print(
        f"{log_clock(line.get('ts'))} {line['stream']:<6} | {line['line']}", markup=False
    )


def log_clock(ts: str | None) -> str:
    """An RFC 3339 time as `HH:MM:SS.mmm` in local time; blanks of the same width for a line
    with none (a legacy file's)."""
    if not ts:
        return " " * 12
    try:
        at = datetime.fromisoformat(ts.replace("Z", "+00:00")).astimezone()
    except ValueError:
        return ts
    return at.strftime("%H:%M:%S.") + f"{at.microsecond // 1000:03d}"


def cmd_download(args: argparse.Namespace, home: Home) -> None:
    path = f"/rpc/formations/{args.id}/download" + ("?db=true" if args.db else "")
    with rpc(args, home) as client:
        response = client.send(client.build("GET", path), stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                decode(response)
            disposition = response.headers.get("content-disposition", "")
            match = re.search(r'filename="([^"/]+)"', disposition)
            target = args.output or Path(match.group(1) if match else f"{args.id}.zip")
            size = 0
            with open(target, "wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
                    size += len(chunk)
        finally:
            response.close()
    done(
        args,
        {"formation_id": args.id, "file": str(target), "bytes": size},
        f"{args.id}: wrote {target} ({size} bytes)",
    )


def cmd_status(args: argparse.Namespace, home: Home) -> None:
    with rpc(args, home) as client:
        status = client.call("GET", "/rpc/server/status")
    if args.json:
        cli_render.print_json(status)
        return
    counts, ports = status["formations"], status["ports"]
    cli_render.fields(
        [
            ("server", status["server_id"]),
            ("version", status["version"]),
            ("uptime", uptime(status["uptime_s"])),
            (
                "formations",
                f"{counts['total']} ({counts['running']} running, "
                f"{counts['stopped']} stopped, {counts['crashed']} crashed)",
            ),
            ("ports", f"{ports['allocated']} used, {ports['available']} free in {ports['range']}"),
            *cli_render.keeper_field(status.get("log_keeper")),
        ]
    )


def cmd_audit(args: argparse.Namespace, home: Home) -> None:
    with rpc(args, home) as client:
        entries = client.call("GET", f"/rpc/server/logs?lines={max(1, args.lines)}")["entries"]
    if args.json:
        cli_render.print_json({"entries": entries})
        return
    cli_render.table(
        ["TIME", "AUTH", "KEY", "METHOD", "PATH", "STATUS", "MS", "FROM"],
        (
            [
                e["ts"],
                e.get("auth", e.get("scheme")) or "-",  # `scheme`: an fsup before schema 5
                e["key_id"] or "-",
                e["method"],
                e["path"],
                e["status"],
                e["duration_ms"],
                e["remote_addr"],
            ]
            for e in entries
        ),
    )


def cmd_search(args: argparse.Namespace, home: Home) -> None:
    profile = resolve(home, args.profile, args.url)
    keyword = " ".join(args.keyword)
    with ApiClient(profile.url) as api:
        api.login()
        with api.open_events() as events:  # subscribed before the search exists
            mode = "live" if args.live else "full"
            created = api.call(
                "POST", "/searches", {"keyword": keyword, "mode": mode, "autostart": True}
            )
            search_id = created["search"]["id"]
            try:
                follow_search(args, events, search_id)
            except KeyboardInterrupt:
                api.call("POST", f"/searches/{search_id}/stop")
                if not args.json:
                    cli_render.err.print("stopped")
        detail = api.call("GET", f"/searches/{search_id}")
        results = api.call("GET", f"/searches/{search_id}/results?limit=500")
    if args.json:
        cli_render.print_json({"search": detail, "results": results})
        return
    stats = detail["telemetry"]
    cli_render.out.print(
        f"{results['total']} result(s) for {keyword!r} from {stats['peers']} formation(s); "
        f"{stats['drops']} dropped",
        markup=False,
    )


def follow_search(args: argparse.Namespace, events: Iterator[SseEvent], search_id: str) -> None:
    """Print hits as they are found until the search completes or stops."""
    for event in events:
        envelope = event.data
        if envelope.get("search_id") != search_id:
            continue
        if envelope["type"] == "search_hit_found" and not args.json:
            hit = envelope["data"]
            cli_render.out.print(
                f"[{hit['kind']}] {','.join(hit['sources'])}: {hit['title']}", markup=False
            )
        if envelope["type"] == "search_completed" or (
            envelope["type"] == "search_state_changed"
            and envelope["data"].get("state") in (SearchState.COMPLETE, SearchState.STOPPED)
        ):
            return


COMMANDS: dict[str, Callable[[argparse.Namespace, Home], None]] = {
    "deploy": cmd_deploy,
    "ls": cmd_ls,
    "show": cmd_show,
    "start": lifecycle("start"),
    "stop": lifecycle("stop"),
    "restart": lifecycle("restart"),
    "rollback": lifecycle("rollback"),
    "rm": cmd_rm,
    "logs": cmd_logs,
    "events": cmd_events,
    "download": cmd_download,
    "status": cmd_status,
    "audit": cmd_audit,
    "search": cmd_search,
    "profile": cmd_profile,
}


if __name__ == "__main__":
    sys.exit(main())
