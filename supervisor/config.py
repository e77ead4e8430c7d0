"""Server settings: built-in defaults, overridden by `server/config.yaml`, overridden by flags.

On first start the defaults are written out to `config.yaml` so an operator can see every knob
in one place and edit it; unknown keys there are an error (a typo must not be ignored).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from . import manifest
from .bundles import BundleLimits
from .errors import FsupError
from .formation_logs import LogLimits
from .hmac_auth import SCHEMES, SIGNED_HEADERS
from .manifest import RestartSpec, load_yaml


class ConfigError(Exception):
    """config.yaml or a command-line flag is wrong; the message says which and how."""


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 7890
    port_range: tuple[int, int] = (8000, 9000)
    max_body_bytes: int = 100 * 1024 * 1024
    bundle: BundleLimits = field(default_factory=BundleLimits)
    restart_defaults: RestartSpec = field(default_factory=RestartSpec)
    logs: LogLimits = field(default_factory=LogLimits)
    # How long a clean shutdown waits for all formations to stop (each has its own timeout).
    shutdown_timeout: float = 60.0
    # The /rpc signing schemes accepted; None is "auto" (see `accepted_schemes`).
    auth_schemes: tuple[str, ...] | None = None

    def accepted_schemes(self) -> tuple[str, ...]:
        """"auto" accepts both schemes on a loopback address, where nobody can see a signed
        request to replay it with another query or body, and only the seed's scheme (which
        signs both) when fsup listens beyond loopback."""
        if self.auth_schemes is not None:
            return self.auth_schemes
        return SCHEMES if is_loopback(self.host) else (SIGNED_HEADERS,)

    def to_yaml(self) -> str:
        doc = {
            "host": self.host,
            "port": self.port,
            "port_range": f"{self.port_range[0]}-{self.port_range[1]}",
            "limits": {
                "max_body_bytes": self.max_body_bytes,
                "bundle_max_members": self.bundle.max_members,
                "bundle_max_unpacked_bytes": self.bundle.max_unpacked_bytes,
                "bundle_max_ratio": self.bundle.max_ratio,
                "log_max_bytes": self.logs.max_bytes,
                "log_backups": self.logs.backups,
            },
            "restart_defaults": {
                "policy": self.restart_defaults.policy,
                "backoff": {
                    "initial": self.restart_defaults.backoff.initial,
                    "factor": self.restart_defaults.backoff.factor,
                    "max": self.restart_defaults.backoff.max,
                    "jitter": self.restart_defaults.backoff.jitter,
                },
                "reset_after": self.restart_defaults.reset_after,
                "max_restarts": self.restart_defaults.max_restarts,
                "window": self.restart_defaults.window,
            },
            "shutdown_timeout": self.shutdown_timeout,
            "auth": {"schemes": list(self.auth_schemes) if self.auth_schemes else "auto"},
        }
        header = (
            "# fsup server settings; command-line flags override these.\n"
            "# auth.schemes: the /rpc signing schemes accepted. signed-headers (X-MUXI-* headers;\n"
            "# signs method, path, query, timestamp and body), muxi-hmac (Authorization: MUXI-HMAC,\n"
            "# as MUXI's CLI and SDKs sign; method, path and timestamp only). auto: both on a\n"
            "# loopback address, signed-headers only beyond it.\n"
        )
        return header + yaml.safe_dump(doc, sort_keys=False)


def parse_port_range(text: str) -> tuple[int, int]:
    try:
        low_text, high_text = str(text).split("-", 1)
        low, high = int(low_text), int(high_text)
    except ValueError:
        raise ConfigError(f"port range {text!r} must look like 8000-9000") from None
    if not (1 <= low <= high <= 65535):
        raise ConfigError(f"port range {text!r} must be within 1-65535, low before high")
    return low, high


def load_config(path: Path) -> ServerConfig:
    """Read config.yaml (writing the defaults out when it does not exist yet)."""
    if not path.exists():
        config = ServerConfig()
        path.write_text(config.to_yaml())
        return config
    try:
        # The manifest's loader: bounded size and nesting, no aliases.
        doc = load_yaml(path.read_bytes()) or {}
    except FsupError as exc:
        raise ConfigError(f"{path}: {exc.message.removeprefix('formation.yaml: ')}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: must be a mapping of settings")
    return _from_doc(doc, path)


def _from_doc(doc: dict[str, Any], path: Path) -> ServerConfig:
    known = {"host", "port", "port_range", "limits", "restart_defaults", "shutdown_timeout",
             "auth"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}")
    config = ServerConfig()
    limits = doc.get("limits") or {}
    try:
        config = replace(
            config,
            host=str(doc.get("host", config.host)),
            port=int(doc.get("port", config.port)),
            port_range=parse_port_range(doc.get("port_range", "8000-9000")),
            max_body_bytes=int(limits.get("max_body_bytes", config.max_body_bytes)),
            bundle=BundleLimits(
                max_members=int(limits.get("bundle_max_members", config.bundle.max_members)),
                max_unpacked_bytes=int(
                    limits.get("bundle_max_unpacked_bytes", config.bundle.max_unpacked_bytes)
                ),
                max_ratio=float(limits.get("bundle_max_ratio", config.bundle.max_ratio)),
            ),
            logs=LogLimits(
                max_bytes=int(limits.get("log_max_bytes", config.logs.max_bytes)),
                backups=int(limits.get("log_backups", config.logs.backups)),
            ),
            shutdown_timeout=float(doc.get("shutdown_timeout", config.shutdown_timeout)),
        )
    except (TypeError, ValueError, AttributeError) as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if "auth" in doc:
        config = replace(config, auth_schemes=parse_auth(doc["auth"], path))
    restart_doc = doc.get("restart_defaults")
    if restart_doc is not None:
        config = replace(config, restart_defaults=_restart_defaults(restart_doc, path))
    return config


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_auth(doc: Any, path: Path) -> tuple[str, ...] | None:
    """`auth: {schemes: auto | [signed-headers, muxi-hmac]}`; None is auto."""
    if not isinstance(doc, dict) or set(doc) - {"schemes"}:
        raise ConfigError(f"{path}: auth must be a mapping with one setting, schemes")
    schemes = doc.get("schemes", "auto")
    if schemes == "auto":
        return None
    if isinstance(schemes, str):
        schemes = [schemes]
    choices = ", ".join(SCHEMES)
    if not isinstance(schemes, list) or not schemes or \
            not all(isinstance(s, str) and s in SCHEMES for s in schemes):
        raise ConfigError(f"{path}: auth.schemes must be auto or a list of {choices}")
    return tuple(dict.fromkeys(schemes))


def _restart_defaults(doc: Any, path: Path) -> RestartSpec:
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: restart_defaults must be a mapping")
    try:
        return manifest.parse_restart(doc, "restart_defaults.", RestartSpec())
    except FsupError as exc:
        raise ConfigError(f"{path}: {exc.message.removeprefix('formation.yaml: ')}") from None
