"""What every command shares: the expected-failure type and how a result is printed."""

from __future__ import annotations

import argparse
from typing import Any

from supervisor.cli import render as cli_render


class CliError(Exception):
    """An expected failure: printed without a traceback, exit status 1."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.hint = hint


def done(args: argparse.Namespace, result: dict[str, Any], summary: str) -> None:
    if args.json:
        cli_render.print_json(result)
    else:
        cli_render.out.print(summary)
