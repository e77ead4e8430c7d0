"""The files fsup keeps under its home folder (`$MUXI_HOME`, default `~/.muxi`)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from supervisor.core.hmac_auth import Credentials
from supervisor.core.timestamps import rfc3339_now

# `api.token`: 64 lowercase hex digits (32 random bytes), a newline after them.
TOKEN_PATTERN = re.compile(rb"[0-9a-f]{64}")


def default_home() -> Path:
    return Path(os.environ.get("MUXI_HOME") or Path.home() / ".muxi").expanduser().resolve()


@dataclass(frozen=True)
class Home:
    root: Path

    @property
    def server(self) -> Path:
        return self.root / "server"

    @property
    def lock(self) -> Path:
        """Held by the one `fsup serve` of this home (`server_lock`)."""
        return self.server / "lock"

    @property
    def credentials(self) -> Path:
        return self.server / "credentials.json"

    @property
    def api_token(self) -> Path:
        return self.server / "api.token"

    @property
    def config(self) -> Path:
        return self.server / "config.yaml"

    @property
    def state_db(self) -> Path:
        return self.server / "state.db"

    @property
    def formations(self) -> Path:
        return self.server / "formations"

    @property
    def staging(self) -> Path:
        return self.server / "staging"

    @property
    def logs(self) -> Path:
        return self.server / "logs"

    def formation_dir(self, formation_id: str) -> Path:
        return self.formations / formation_id

    def version_dir(self, formation_id: str, version: str) -> Path:
        return self.formation_dir(formation_id) / "versions" / version

    def formation_logs(self, formation_id: str) -> Path:
        return self.logs / "formations" / formation_id

    def failed_deploy_logs(self, formation_id: str) -> Path:
        """The log of a failed first deploy of `formation_id`, kept once the formation is
        removed (`storage.failed_deploys`)."""
        return self.logs / "failed-deploys" / formation_id

    def ensure(self) -> None:
        for path in (self.server, self.formations, self.staging, self.logs):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)


def write_private(path: Path, text: str) -> None:
    """Create `path` with mode 0600 from the first byte (no window where it is readable)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
        out.flush()
        os.fsync(out.fileno())
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def load_or_create_credentials(home: Home) -> tuple[Credentials, str]:
    """Return the local credentials and server id, creating `credentials.json` on first start."""
    path = home.credentials
    if path.exists():
        data = json.loads(path.read_text())
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return Credentials(data["key_id"], data["secret_key"]), data["server_id"]
    hostname = socket.gethostname()
    data = {
        "key_id": f"MUXI_LOCAL_{secrets.token_hex(8)}",
        "secret_key": base64.b64encode(secrets.token_bytes(32)).decode(),
        "server_id": f"{hostname}-{hashlib.sha256(hostname.encode() + secrets.token_bytes(32)).hexdigest()}",
        "created_at": rfc3339_now(),
    }
    write_private(path, json.dumps(data, indent=2) + "\n")
    return Credentials(data["key_id"], data["secret_key"]), data["server_id"]


def load_or_create_token(path: Path) -> tuple[str, str | None]:
    """The bearer token in `server/api.token` (mode 0600), created when absent; and, when the
    file was there but held no token, why it was replaced (`None` otherwise).

    Read as bytes: a file of any content is judged, never a `UnicodeDecodeError` that a
    caller could take for another file's. A file that holds no token is replaced, not
    refused: the token is fsup's own, handed out again by the loopback bootstrap, and a new
    one ends the sessions and bearer clients of the old one exactly as a rotation does; the
    caller says so (it names the file). A file that cannot be read at all (a directory, no
    permission) raises the `OSError`: replacing it could hide what is wrong with the home."""
    try:
        content: bytes | None = path.read_bytes()
    except FileNotFoundError:
        content = None
    if content is not None and TOKEN_PATTERN.fullmatch(content.strip()):
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)
        return content.strip().decode("ascii"), None
    token = secrets.token_hex(32)
    write_private(path, token + "\n")
    if content is None:
        return token, None
    return token, f"held no token (64 hex digits) but {len(content)} other bytes"
