"""What the CLI prints: aligned tables for people, JSON with `--json`, live progress from an
operation's SSE stream (a progress display on a terminal, plain lines otherwise)."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from supervisor.cli.client import SseEvent

# Off a terminal (a pipe, a file), no width limit: tables are never cut to 80 columns.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 10_000)
err = Console(
    stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 10_000
)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    sys.stdout.flush()


def table(columns: list[str], rows: Iterable[Iterable[Any]]) -> None:
    grid = Table(show_edge=False, box=None, pad_edge=False, header_style="bold")
    for column in columns:
        grid.add_column(column)
    for row in rows:
        grid.add_row(*("-" if cell is None else str(cell) for cell in row))
    out.print(grid)


def fields(pairs: Iterable[tuple[str, Any]]) -> None:
    grid = Table(show_header=False, show_edge=False, box=None, pad_edge=False)
    grid.add_column(style="bold")
    grid.add_column()
    for name, value in pairs:
        grid.add_row(name, "-" if value is None else str(value))
    out.print(grid)


def keeper_field(keeper: dict[str, Any] | None) -> list[tuple[str, str]]:
    """How formations' output is kept, for `fsup status` (nothing from an older server)."""
    if not isinstance(keeper, dict):
        return []
    if keeper.get("error"):
        return [("logs", f"NOT stamped: {keeper['error']} (output goes to stdout.log/stderr.log)")]
    return [("logs", f"stamped by the log keeper ({keeper.get('pipes', 0)} pipes held)")]


def follow_progress(events: Iterator[SseEvent], quiet: bool) -> SseEvent | None:
    """Show an operation's progress; return its final event (complete or error)."""
    if quiet:
        return _last(events)
    if out.is_terminal:
        return _live(events)
    return _plain(events)


def _last(events: Iterator[SseEvent]) -> SseEvent | None:
    final = None
    for event in events:
        if event.event in ("complete", "error"):
            final = event
    return final


def _plain(events: Iterator[SseEvent]) -> SseEvent | None:
    for event in events:
        if event.event in ("complete", "error"):
            return event
        data = event.data
        note = " (skipped)" if data.get("skipped") else ""
        out.print(f"{data.get('stage', '?')}: {data.get('message', '')}{note}")
    return None


def _live(events: Iterator[SseEvent]) -> SseEvent | None:
    columns = [
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*columns, console=out, transient=False) as progress:
        current: Any = None
        stage = None
        for event in events:
            if event.event in ("complete", "error"):
                if current is not None:
                    progress.update(current, completed=progress.tasks[current].total or 1)
                return event
            data = event.data
            if data.get("stage") != stage:
                if current is not None:
                    progress.update(current, completed=progress.tasks[current].total or 1)
                stage = data.get("stage")
                skipped = " [dim](skipped)[/dim]" if data.get("skipped") else ""
                current = progress.add_task(f"{stage}{skipped}", total=1, detail="")
            if "max_attempts" in data:  # the health-check countdown
                progress.update(
                    current,
                    total=data["max_attempts"],
                    completed=data["attempt"] - 1,
                    detail=f"{data.get('remaining_s', 0):g}s left",
                )
            else:
                progress.update(current, detail=str(data.get("message", ""))[:60])
    return None


def timeline_line(envelope: dict[str, Any]) -> str:
    """One event of a formation's timeline on one line: its time, its type, what happened."""
    kind = str(envelope.get("type", "?"))
    data = envelope.get("data") or {}
    return f"{envelope.get('ts', '-')}  {kind:<26}  {_summary(kind, data)}"


def _summary(kind: str, data: dict[str, Any]) -> str:  # noqa: C901 - one case per type
    match kind:
        case "formation_state_changed":
            text = f"{data.get('from')} -> {data.get('to')} ({data.get('reason')})"
            ended = data.get("exit")
            if ended:
                text += f": {ended.get('description')}"
                if ended.get("uptime_s") is not None:
                    text += f" after {ended['uptime_s']:g}s"
            gave_up = data.get("gave_up")
            if gave_up:
                text += (
                    f"; gave up after {gave_up.get('restarts')} restarts within "
                    f"{gave_up.get('window_s'):g}s"
                )
            elif data.get("error") and not ended:
                text += f": {data['error']}"
            return text
        case "formation_health_changed":
            healthy = data.get("healthy")
            return "healthy" if healthy else f"unhealthy: {data.get('error')}"
        case "formation_deployed":
            return (
                f"deployed {data.get('version')} (pid {data.get('pid')}, port {data.get('port')})"
            )
        case "formation_updated" | "formation_rolled_back":
            return (
                f"{data.get('previous_version')} -> {data.get('version')} (pid {data.get('pid')})"
            )
        case "formation_update_aborted":
            return (
                f"{data.get('kind')} to {data.get('version')} aborted at {data.get('stage')}: "
                f"{data.get('error')}"
            )
    rest = {k: v for k, v in data.items() if k != "formation_id"}
    return json.dumps(rest, sort_keys=True)
