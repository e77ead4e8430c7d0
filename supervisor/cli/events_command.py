"""`fsup events ID [-n N] [-f]`: a formation's timeline, one line per event; with `-f`, then
the live event stream's events of that formation, until Ctrl-C.

The stream is opened (subscribed on the server) before the timeline is read, so that no
event falls between the two; an event both in the timeline and on the stream is printed once
(the timeline's copy is the stream's envelope, compared whole).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from typing import Any

from supervisor.cli import render as cli_render
from supervisor.cli.client import ApiClient, RpcClient, SseEvent
from supervisor.cli.common import CliError
from supervisor.storage.home import Home
from supervisor.storage.profiles import resolve

# The server's bound on `limit` (`http.timeline.EVENTS_MAX`).
MAX_EVENTS = 1000


def cmd_events(args: argparse.Namespace, home: Home) -> None:
    if not 1 <= args.lines <= MAX_EVENTS:
        raise CliError(f"-n must be between 1 and {MAX_EVENTS}")
    profile = resolve(home, args.profile, args.url)
    path = f"/rpc/formations/{args.id}/events?limit={args.lines}"
    with RpcClient(profile.url, profile.key_id, profile.secret_key, scheme=args.auth_scheme) as rpc:
        if not args.follow:
            answer = rpc.call("GET", path)
            if args.json:
                cli_render.print_json(answer)
                return
            for envelope in answer["events"]:
                show(args, envelope)
            return
        with ApiClient(profile.url) as api:
            api.login()
            with api.open_events() as stream:
                shown = rpc.call("GET", path)["events"]
                for envelope in shown:
                    show(args, envelope)
                follow(args, stream, {_key(e) for e in shown})


def follow(args: argparse.Namespace, stream: Iterator[SseEvent], seen: set[str]) -> None:
    """Print the stream's events of the formation not printed yet; return once it is
    deleted (nothing more can come) or the stream ends."""
    for event in stream:
        envelope = event.data
        if not isinstance(envelope, dict) or not str(envelope.get("type")).startswith("formation_"):
            continue
        if (envelope.get("data") or {}).get("formation_id") != args.id:
            continue
        if _key(envelope) in seen:
            continue
        show(args, envelope)
        if envelope["type"] == "formation_deleted":
            return
    cli_render.err.print("the event stream ended", markup=False)


def show(args: argparse.Namespace, envelope: dict[str, Any]) -> None:
    if args.json:
        sys.stdout.write(json.dumps(envelope, sort_keys=True) + "\n")
        sys.stdout.flush()
    else:
        cli_render.out.print(cli_render.timeline_line(envelope), markup=False)


def _key(envelope: dict[str, Any]) -> str:
    return json.dumps(envelope, sort_keys=True)
