"""Server settings: built-in defaults, overridden by `server/config.yaml`, overridden by flags.

One table, `SETTINGS`, is the model: each setting's place in config.yaml (a dotted path), the
`ServerConfig` field it fills, its type and range, and a line of help. Reading config.yaml,
checking the `fsup serve` flags and writing the defaults out all walk that table, so they
cannot drift apart. On first start the defaults are written to `config.yaml`, each line with
its type and range, so an operator sees every knob in one place. Anything wrong stops `fsup
serve` with a message that starts with the file and names the setting by its full path:
an unknown key (a typo must not be ignored), a wrong type (booleans are not numbers), a value
out of range.
"""

from __future__ import annotations

import difflib
import textwrap
from dataclasses import dataclass, field, replace
from functools import reduce
from pathlib import Path
from typing import Any

import yaml

from supervisor.core.errors import FsupError
from supervisor.core.hmac_auth import SCHEMES, SIGNED_HEADERS
from supervisor.core.hosts import is_loopback
from supervisor.core.manifest import (
    MAX_RESTARTS_RANGE,
    RESTART_POLICIES,
    RESTART_RANGES,
    RestartSpec,
    label,
    load_yaml,
)
from supervisor.storage.bundles import BundleLimits
from supervisor.storage.config_kinds import (
    BIG,
    Boolean,
    Choice,
    Host,
    HostNames,
    Integer,
    Invalid,
    Kind,
    Number,
    PortRange,
    Schemes,
    shown_value,
)
from supervisor.storage.formation_logs import LogLimits


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
    # Names besides loopback under which /api/v1, /ui, /openapi.json and /metrics answer
    # (normalized as `core.hosts` compares them); DNS rebinding guard.
    allowed_hosts: tuple[str, ...] = ()
    # `/metrics` without the bearer token (for a scraper that cannot send one).
    metrics_public: bool = False

    def accepted_schemes(self) -> tuple[str, ...]:
        """ "auto" accepts both schemes on a loopback address, where nobody can see a signed
        request to replay it with another query or body, and only the seed's scheme (which
        signs both) when fsup listens beyond loopback."""
        if self.auth_schemes is not None:
            return self.auth_schemes
        return SCHEMES if is_loopback(self.host) else (SIGNED_HEADERS,)

    def to_yaml(self) -> str:
        """This configuration as config.yaml: every setting, with its type and range."""
        return render(self)


# -- the model -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    key: str  # its dotted path in config.yaml
    field: str  # the dotted ServerConfig attribute it fills
    kind: Kind
    help: str


_AUTH_HELP = (
    "/rpc signing schemes accepted: signed-headers (X-MUXI-* headers; signs method, "
    "path, query, timestamp and body), muxi-hmac (Authorization: MUXI-HMAC, as MUXI's "
    "CLI and SDKs sign; method, path and timestamp only); auto is both on a loopback "
    "address, signed-headers only beyond it"
)

_HOSTS_HELP = (
    "names besides localhost, 127.0.0.1 and [::1] under which /api/v1, /ui, /openapi.json "
    "and /metrics answer, any port; others get 403"
)


def _restart(key: str, help_text: str) -> Setting:
    low, high = RESTART_RANGES[key]
    return Setting(
        f"restart_defaults.{key}", f"restart_defaults.{key}", Number(low, high), help_text
    )


SETTINGS: tuple[Setting, ...] = (
    Setting("host", "host", Host(), "address to listen on; --host overrides it"),
    Setting(
        "port",
        "port",
        Integer(0, 65535),
        "port to listen on, 0 picks a free one; --port overrides it",
    ),
    Setting(
        "port_range",
        "port_range",
        PortRange(),
        "ports handed to formations; --port-range overrides it",
    ),
    Setting(
        "limits.max_body_bytes",
        "max_body_bytes",
        Integer(1, BIG),
        "largest request body, bundles included",
    ),
    Setting(
        "limits.bundle_max_members",
        "bundle.max_members",
        Integer(1, BIG),
        "most files and folders in a bundle",
    ),
    Setting(
        "limits.bundle_max_unpacked_bytes",
        "bundle.max_unpacked_bytes",
        Integer(1, BIG),
        "largest total size of a bundle once unpacked",
    ),
    Setting(
        "limits.bundle_max_ratio",
        "bundle.max_ratio",
        Number(1, 1e6),
        "highest unpacked/packed size ratio of a bundle (over 1 MiB)",
    ),
    Setting(
        "limits.log_max_bytes",
        "logs.max_bytes",
        Integer(1, BIG),
        "a formation's log file is rotated at this size",
    ),
    Setting(
        "limits.log_backups", "logs.backups", Integer(0, 100), "rotated log files kept per stream"
    ),
    Setting(
        "restart_defaults.policy",
        "restart_defaults.policy",
        Choice(RESTART_POLICIES),
        "restart policy of formations whose formation.yaml sets none",
    ),
    _restart("backoff.initial", "seconds before the first restart"),
    _restart("backoff.factor", "each further wait is this many times longer"),
    _restart("backoff.max", "longest wait, seconds; at least backoff.initial"),
    _restart("backoff.jitter", "random share added to or taken from each wait"),
    _restart("reset_after", "seconds up and healthy that reset the backoff"),
    Setting(
        "restart_defaults.max_restarts",
        "restart_defaults.max_restarts",
        Integer(*MAX_RESTARTS_RANGE),
        "restarts within window before giving up (crashed)",
    ),
    _restart("window", "the window of max_restarts, seconds"),
    Setting(
        "shutdown_timeout",
        "shutdown_timeout",
        Number(0.1, 86400),
        "seconds a clean stop of fsup waits for formations to stop",
    ),
    Setting("auth.schemes", "auth_schemes", Schemes(), _AUTH_HELP),
    Setting("http.allowed_hosts", "allowed_hosts", HostNames(), _HOSTS_HELP),
    Setting(
        "metrics.public",
        "metrics_public",
        Boolean(),
        "true: GET /metrics answers without the /api/v1 bearer token (Prometheus's "
        "authorization with a credentials_file is the default way in)",
    ),
)
_BY_KEY = {setting.key: setting for setting in SETTINGS}
# Every mapping that holds settings: limits, restart_defaults, restart_defaults.backoff, auth.
_SECTIONS = {key.rsplit(".", depth)[0] for key in _BY_KEY for depth in range(1, key.count(".") + 1)}
_FLAGS = {"--host": "host", "--port": "port", "--port-range": "port_range"}


def _get(config: ServerConfig, attribute: str) -> Any:
    return reduce(getattr, attribute.split("."), config)


def _set(target: Any, attribute: str, value: Any) -> Any:
    name, _, rest = attribute.partition(".")
    return replace(target, **{name: _set(getattr(target, name), rest, value) if rest else value})


# -- reading ---------------------------------------------------------------------------------


def load_config(path: Path) -> ServerConfig:
    """Read config.yaml (writing the defaults out when it does not exist yet)."""
    if not path.exists():
        config = ServerConfig()
        path.write_text(config.to_yaml())
        return config
    try:
        # The manifest's loader: bounded size and nesting, no aliases.
        doc = load_yaml(path.read_bytes())
    except FsupError as exc:
        raise ConfigError(f"{path}: {exc.message.removeprefix('formation.yaml: ')}") from None
    if doc is None:
        return ServerConfig()
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of settings, got {shown_value(doc)}")
    return from_doc(doc, str(path))


def from_doc(doc: dict[Any, Any], source: str) -> ServerConfig:
    """The configuration a parsed config.yaml describes; `source` starts every message."""
    given: dict[str, Any] = {}
    _collect(doc, "", source, given)
    config = ServerConfig()
    for setting in SETTINGS:
        if setting.key in given:
            config = _set(
                config,
                setting.field,
                _read(setting, given[setting.key], f"{source}: {setting.key}"),
            )
    backoff = config.restart_defaults.backoff
    if backoff.max < backoff.initial:
        raise ConfigError(
            f"{source}: restart_defaults.backoff.max: must be at least "
            f"restart_defaults.backoff.initial ({backoff.initial:g}), got {backoff.max:g}"
        )
    return config


def _collect(doc: dict[Any, Any], prefix: str, source: str, given: dict[str, Any]) -> None:
    """Flatten `doc` into `given` (dotted key: value), refusing unknown keys and sections that
    are not mappings. A section left empty (`limits:` with nothing under it) is fine."""
    for key, value in doc.items():
        dotted = f"{prefix}{key}" if isinstance(key, str) else f"{prefix}{label(key)}"
        if isinstance(key, str) and dotted in _BY_KEY:
            given[dotted] = value
        elif isinstance(key, str) and dotted in _SECTIONS:
            if value is None:
                continue
            if not isinstance(value, dict):
                raise ConfigError(
                    f"{source}: {dotted}: expected a mapping of settings, got {shown_value(value)}"
                )
            _collect(value, dotted + ".", source, given)
        else:
            raise ConfigError(f"{source}: unknown setting {dotted!r}{_suggestion(dotted)}")


def _suggestion(dotted: str) -> str:
    close = difflib.get_close_matches(dotted, [*_BY_KEY, *_SECTIONS], n=1, cutoff=0.7)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _read(setting: Setting, value: Any, where: str) -> Any:
    try:
        return setting.kind.read(value)
    except Invalid as exc:
        raise ConfigError(f"{where}: {exc}") from None


def with_flags(config: ServerConfig, flags: dict[str, Any]) -> ServerConfig:
    """`config` with the `fsup serve` flags given (`{"--port": 0}`; None is not given) put in,
    each checked as its config.yaml setting is."""
    for flag, value in flags.items():
        if value is not None:
            setting = _BY_KEY[_FLAGS[flag]]
            config = _set(config, setting.field, _read(setting, value, flag))
    return config


# -- writing ---------------------------------------------------------------------------------

HEADER = (
    "# fsup server settings. Flags of `fsup serve` (--host, --port, --port-range) override\n"
    "# them. Each setting says its type and range; an unknown key or a wrong value stops\n"
    "# `fsup serve` with a message that names it. Delete a line to get its default back.\n"
)


def _scalar(value: Any) -> str:
    """A value as YAML writes it inline (quoted where it would read back as another type)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000)
    return text.removesuffix("\n...\n").rstrip("\n")


def render(config: ServerConfig) -> str:
    lines = [HEADER.rstrip("\n")]
    open_sections: list[str] = []
    for setting in SETTINGS:
        *sections, name = setting.key.split(".")
        common = 0
        while (
            common < min(len(sections), len(open_sections))
            and sections[common] == open_sections[common]
        ):
            common += 1
        del open_sections[common:]
        for depth in range(common, len(sections)):
            lines.append(f"{'  ' * depth}{sections[depth]}:")
            open_sections.append(sections[depth])
        indent = "  " * len(sections)
        lines += textwrap.wrap(
            f"{setting.help} [{setting.kind.describe()}]",
            96,
            initial_indent=f"{indent}# ",
            subsequent_indent=f"{indent}# ",
        )
        lines.append(f"{indent}{name}: {_scalar(setting.kind.write(_get(config, setting.field)))}")
    return "\n".join(lines) + "\n"
