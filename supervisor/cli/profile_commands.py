"""`fsup profile add|ls|use|rm`: which fsup the CLI talks to, kept in profiles.yaml."""

from __future__ import annotations

import argparse

from supervisor.cli import render as cli_render
from supervisor.cli.common import CliError, done
from supervisor.storage.home import Home
from supervisor.storage.profiles import LOCAL, load, save


def cmd_profile(args: argparse.Namespace, home: Home) -> None:
    doc = load(home)
    if args.action == "add":
        if args.name == LOCAL:
            raise CliError(f"{LOCAL!r} is the built-in local profile; choose another name")
        doc["profiles"][args.name] = {
            "url": args.profile_url,
            "key_id": args.key_id,
            "secret_key": args.secret_key,
        }
        if args.default:
            doc["default"] = args.name
        save(home, doc)
        done(args, {"added": args.name}, f"profile {args.name} saved")
    elif args.action == "ls":
        default = doc.get("default") or LOCAL
        rows = [(LOCAL, "http://127.0.0.1:7890 (credentials.json)", default == LOCAL)]
        rows += [
            (name, p.get("url"), default == name) for name, p in sorted(doc["profiles"].items())
        ]
        if args.json:
            cli_render.print_json(
                {
                    "default": default,
                    "profiles": [{"name": n, "url": u, "default": d} for n, u, d in rows],
                }
            )
            return
        cli_render.table(["NAME", "URL", "DEFAULT"], ((n, u, "*" if d else "") for n, u, d in rows))
    elif args.action == "use":
        if args.name != LOCAL and args.name not in doc["profiles"]:
            raise CliError(f"no profile named {args.name!r}", "see `fsup profile ls`")
        doc["default"] = None if args.name == LOCAL else args.name
        save(home, doc)
        done(args, {"default": args.name}, f"now using profile {args.name}")
    elif args.action == "rm":
        if doc["profiles"].pop(args.name, None) is None:
            raise CliError(f"no profile named {args.name!r}", "see `fsup profile ls`")
        if doc.get("default") == args.name:
            doc["default"] = None
        save(home, doc)
        done(args, {"removed": args.name}, f"profile {args.name} removed")
