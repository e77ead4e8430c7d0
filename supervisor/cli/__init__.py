"""The `fsup` command line: arguments, the signing client, what is printed."""

from supervisor.cli.commands import main

__all__ = ["main"]
