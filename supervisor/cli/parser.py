"""The `fsup` command line's arguments (the commands themselves are in `cli`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from supervisor import __version__
from supervisor.core.hmac_auth import SCHEMES, SIGNED_HEADERS
from supervisor.core.manifest import id_problem, label


def formation_id(text: str) -> str:
    """A formation id argument, checked with the server's own rule (`manifest.id_problem`)
    before anything is sent: `fsup show ../x` is a usage error (exit 2), not a request."""
    problem = id_problem(text)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"'{label(text)}' is not a formation id: {problem}")
    return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsup",
        description="A local, actor-based process supervisor.",
    )
    parser.add_argument("--version", action="version", version=f"fsup {__version__}")
    parser.add_argument("--profile", help="profile to use (see `fsup profile ls`)")
    parser.add_argument("--url", help="server URL (default: the profile's; also $MUXI_URL)")
    parser.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    parser.add_argument(
        "--auth-scheme",
        choices=SCHEMES,
        default=SIGNED_HEADERS,
        help="how /rpc calls are signed: signed-headers (X-MUXI-* headers, signs the query and "
        "body; default) or muxi-hmac (Authorization: MUXI-HMAC, as MUXI's CLI and SDKs sign)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the supervisor in the foreground")
    serve.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default 7890; 0 picks one)")
    serve.add_argument("--port-range", help="ports handed to formations (default 8000-9000)")
    serve.add_argument(
        "--deploy",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="deploy the formation folder DIR (or every formation folder inside DIR) unless "
        "already deployed; may be repeated",
    )

    deploy = commands.add_parser(
        "deploy", help="deploy a folder or bundle (updates the formation if it exists)"
    )
    deploy.add_argument("path", type=Path, help="a formation folder, .tar.gz or .zip")

    commands.add_parser("ls", help="list formations")
    for name, text in (
        ("show", "show one formation"),
        ("start", "start a formation"),
        ("stop", "stop a formation"),
        ("restart", "restart a formation"),
        ("rollback", "roll back to the previous version"),
    ):
        commands.add_parser(name, help=text).add_argument("id", type=formation_id)
    rm = commands.add_parser("rm", help="delete a formation (asks first on a terminal)")
    rm.add_argument("id", type=formation_id)
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask")

    logs = commands.add_parser("logs", help="show (or follow) a formation's logs")
    logs.add_argument("id", type=formation_id)
    logs.add_argument("-n", "--lines", type=int, default=100, help="how many lines (default 100)")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing new lines")
    logs.add_argument("--stream", choices=("stdout", "stderr", "all"), default="all")

    events = commands.add_parser("events", help="a formation's timeline: what happened to it")
    events.add_argument("id", type=formation_id)
    events.add_argument(
        "-n", "--lines", type=int, default=100, help="how many events, the newest (default 100)"
    )
    events.add_argument("-f", "--follow", action="store_true", help="then print new events")

    download = commands.add_parser("download", help="download a formation as a zip")
    download.add_argument("id", type=formation_id)
    download.add_argument("--db", action="store_true", help="include data/ and memory.db")
    download.add_argument(
        "-o", "--output", type=Path, help="file to write (default ID-VERSION.zip)"
    )

    commands.add_parser("status", help="server status")
    audit = commands.add_parser(
        "audit", help="who changed what (/rpc, /api/v1, the dashboard) and how they signed in"
    )
    audit.add_argument("-n", "--lines", type=int, default=50)

    search = commands.add_parser("search", help="search the fleet's logs and formations")
    search.add_argument("keyword", nargs="+")
    search.add_argument("--live", action="store_true", help="keep following until Ctrl-C")

    profile = commands.add_parser("profile", help="manage server profiles")
    actions = profile.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = actions.add_parser("add", help="add or replace a profile")
    add.add_argument("name")
    add.add_argument("--url", dest="profile_url", required=True)
    add.add_argument("--key-id", required=True)
    add.add_argument("--secret-key", required=True)
    add.add_argument("--default", action="store_true", help="also make it the default")
    actions.add_parser("ls", help="list profiles")
    use = actions.add_parser("use", help="make a profile the default")
    use.add_argument("name")
    remove = actions.add_parser("rm", help="remove a profile")
    remove.add_argument("name")
    return parser
