"""The `fsup` command line: arguments, the signing client, what is printed.

`main` parses the arguments and only then imports what the command needs: `fsup serve` never
loads the client side (httpx's client use, rich's tables and progress, bundle packing), which
would weigh on the server's start-up time and memory for nothing (issue 11).
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from supervisor.cli.parser import build_parser  # noqa: PLC0415 - see the module

    args = build_parser().parse_args(argv)
    if args.command == "serve":
        from supervisor.cli.serve import serve  # noqa: PLC0415
        from supervisor.storage.home import Home, default_home  # noqa: PLC0415

        return serve(args, Home(default_home()))
    from supervisor.cli.commands import main as run_command  # noqa: PLC0415

    return run_command(argv)


__all__ = ["main"]
