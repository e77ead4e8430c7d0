"""CLI profiles: which fsup to talk to, with which keys (`$MUXI_HOME/profiles.yaml`, 0600).

`{default: NAME, profiles: {NAME: {url, key_id, secret_key}}}`. With no profile chosen and no
default set, the CLI uses the local server: `http://127.0.0.1:7890` with the keys of
`server/credentials.json`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from supervisor.storage.home import Home, write_private

LOCAL_URL = "http://127.0.0.1:7890"
LOCAL = "local"


class ProfileError(Exception):
    """A profile is missing or broken; the message says what to do."""


@dataclass(frozen=True)
class Profile:
    name: str
    url: str
    key_id: str
    secret_key: str


def profiles_path(home: Home) -> Path:
    return home.root / "profiles.yaml"


def load(home: Home) -> dict[str, Any]:
    path = profiles_path(home)
    if not path.exists():
        return {"default": None, "profiles": {}}
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("profiles", {}), dict):
        raise ProfileError(f"{path} must hold {{default: NAME, profiles: {{NAME: ...}}}}")
    doc.setdefault("profiles", {})
    doc.setdefault("default", None)
    return doc


def save(home: Home, doc: dict[str, Any]) -> None:
    home.root.mkdir(parents=True, exist_ok=True)
    write_private(profiles_path(home), yaml.safe_dump(doc, sort_keys=True))


def local_profile(home: Home, url: str = LOCAL_URL) -> Profile:
    path = home.credentials
    try:
        data = json.loads(path.read_text())
        return Profile(LOCAL, url, data["key_id"], data["secret_key"])
    except FileNotFoundError:
        raise ProfileError(
            f"no credentials at {path}: start the server once with `fsup serve`, or add a "
            "profile with `fsup profile add`"
        ) from None
    except (ValueError, KeyError) as exc:
        raise ProfileError(f"{path} is unreadable: {exc}") from None


def resolve(home: Home, name: str | None, url: str | None) -> Profile:
    """The profile to use: `--profile`, else the default, else local; `--url`/`$MUXI_URL`
    override its URL."""
    url = url or os.environ.get("MUXI_URL") or None
    doc = load(home)
    chosen = name or doc.get("default")
    if chosen in (None, LOCAL):
        return local_profile(home, url or LOCAL_URL)
    entry = doc["profiles"].get(chosen)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(doc["profiles"])) or "none"
        raise ProfileError(f"no profile named {chosen!r} (known: {known}); see `fsup profile ls`")
    try:
        return Profile(chosen, url or entry["url"], entry["key_id"], entry["secret_key"])
    except KeyError as exc:
        raise ProfileError(f"profile {chosen!r} lacks {exc.args[0]!r}") from None
