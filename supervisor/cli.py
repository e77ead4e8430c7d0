"""The `fsup` command line. For now: `fsup serve` (the management commands come next)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import trio

from . import __version__
from .config import ConfigError, load_config, parse_port_range
from .home import Home, default_home
from .logs import configure as configure_logging
from .store import StoreError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fsup", description="A local, actor-based process supervisor."
    )
    parser.add_argument("--version", action="version", version=f"fsup {__version__}")
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
        help="deploy the formation folder DIR (or every formation folder inside DIR) "
        "unless already deployed; may be repeated",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return serve(args)
    return 2


def serve(args: argparse.Namespace) -> int:
    from .server import run_server  # noqa: PLC0415 - keep `fsup --help` fast

    home = Home(default_home())
    home.ensure()
    configure_logging(home.logs)
    try:
        config = load_config(home.config)
        if args.host:
            config = replace(config, host=args.host)
        if args.port is not None:
            config = replace(config, port=args.port)
        if args.port_range:
            config = replace(config, port_range=parse_port_range(args.port_range))
    except ConfigError as exc:
        print(f"fsup: {exc}", file=sys.stderr)
        return 2
    for folder in args.deploy:
        if not folder.is_dir():
            print(f"fsup: --deploy {folder}: not a folder", file=sys.stderr)
            return 2
    try:
        trio.run(run_server, home, config, [f.resolve() for f in args.deploy])
    except StoreError as exc:
        print(f"fsup: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fsup: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
