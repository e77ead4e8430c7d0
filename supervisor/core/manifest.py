"""`formation.yaml`: parse and validate into a frozen `FormationSpec`.

Validation happens before any process starts, and every message names the field at fault
(`restart.backoff.factor: must be a number >= 1`), because the person reading it is fixing a
YAML file. The YAML itself is bounded: a size cap, a nesting cap (PyYAML's composer recurses,
so `[[[[...]]]]` would end in RecursionError), no aliases (billion-laughs), safe types only.
Every pattern is matched with `fullmatch`: `$` also matches before a trailing newline, which
let `"api\n"` slip past the reserved names.
"""

from __future__ import annotations

import re
import signal
from dataclasses import dataclass, field
from typing import Any

import yaml

from supervisor.core import version_order
from supervisor.core.errors import FsupError
from supervisor.core.version_order import Precedence

MAX_MANIFEST_BYTES = 64 * 1024
MAX_YAML_DEPTH = 32
# Matched with fullmatch (never match/search with `$`, which allows a trailing newline).
ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9-]{1,48}[a-z0-9]")
RESERVED_IDS = frozenset({"api", "health", "ping", "rpc", "server", "admin", "metrics", "v1", "ui"})
ENV_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
# Set by the supervisor for every formation; a formation may not override them.
SUPERVISOR_ENV = frozenset(
    {"PORT", "HOST", "FORMATION_ID", "FORMATION_VERSION", "MUXI_SERVER_URL", "MUXI_HOME"}
)
STOP_SIGNALS = frozenset({"SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGUSR1", "SIGUSR2"})
RESTART_POLICIES = ("always", "on-failure", "never")
# The ranges of the restart settings (low, high), shared with config.yaml's restart_defaults.
RESTART_RANGES: dict[str, tuple[float, float]] = {
    "backoff.initial": (0.01, 3600),
    "backoff.factor": (1, 10),
    "backoff.max": (0.01, 86400),
    "backoff.jitter": (0, 1),
    "reset_after": (0, 86400),
    "window": (1, 86400 * 7),
}
MAX_RESTARTS_RANGE = (0, 10000)
# Seconds between liveness checks of a running formation, unless its manifest says otherwise.
DEFAULT_LIVENESS_S = 10.0
LIVENESS_RANGE = (0.05, 3600)


@dataclass(frozen=True)
class HealthSpec:
    """How readiness and liveness are judged. Neither http nor tcp: the process stays up.

    Starting, the probe runs early and often (from milliseconds after the spawn, the gaps
    doubling up to `interval`): a service is routed the moment it answers. Running, it runs
    every `liveness` seconds, an operator's usual liveness period (Kubernetes' and
    process-compose's default is 10 s), and every `interval` while it fails."""

    http: str | None = None
    tcp: bool = False
    interval: float = 0.5
    timeout: float = 60.0
    # With neither probe, the process counts as healthy once it has stayed up this long.
    stay_up: float = 1.0
    # Seconds between checks once running; None: every `interval` (a manifest that sets
    # `interval` and not `liveness` keeps probing as often as it asked); 0: no checks.
    liveness: float | None = DEFAULT_LIVENESS_S

    @property
    def kind(self) -> str:
        return "http" if self.http else "tcp" if self.tcp else "process"

    @property
    def liveness_period(self) -> float:
        """Seconds between checks of a running process; 0 when there are none (no probe
        declared: its exit is watched, and being alive is being healthy)."""
        if self.kind == "process":
            return 0.0
        return self.interval if self.liveness is None else self.liveness


@dataclass(frozen=True)
class BackoffSpec:
    initial: float = 0.5
    factor: float = 2.0
    max: float = 30.0
    jitter: float = 0.1


@dataclass(frozen=True)
class RestartSpec:
    policy: str = "on-failure"
    backoff: BackoffSpec = field(default_factory=BackoffSpec)
    reset_after: float = 60.0
    max_restarts: int = 10
    window: float = 300.0


@dataclass(frozen=True)
class StopSpec:
    signal: str = "SIGTERM"
    timeout: float = 10.0

    @property
    def signum(self) -> int:
        return int(getattr(signal, self.signal))


@dataclass(frozen=True)
class SearchSpec:
    path: str


# Methods a formation may declare safe to send twice (GET, HEAD and OPTIONS always are).
DECLARABLE_IDEMPOTENT = ("PUT", "DELETE", "POST", "PATCH")


@dataclass(frozen=True)
class ProxySpec:
    """How the proxy treats requests while the formation comes back: `hold` seconds of
    waiting at most, and the methods it may retry besides GET, HEAD and OPTIONS."""

    hold: float = 5.0
    idempotent: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FormationSpec:
    id: str
    version: str
    command: tuple[str, ...]
    description: str = ""
    env: tuple[tuple[str, str], ...] = ()
    health: HealthSpec = field(default_factory=HealthSpec)
    restart: RestartSpec = field(default_factory=RestartSpec)
    stop: StopSpec = field(default_factory=StopSpec)
    search: SearchSpec | None = None
    proxy: ProxySpec = field(default_factory=ProxySpec)

    @property
    def parsed_version(self) -> Precedence:
        """The version as it compares: by SemVer precedence (`supervisor.core.version_order`)."""
        return Precedence(self.version)


def label(value: Any, limit: int = 64) -> str:
    """A key or value from the manifest as a message may show it: bounded, and safe for
    integers too long to print (`str()` raises above 4300 digits)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return "<a very large number>"
    text = value if isinstance(value, str) else repr(value)
    text = text if text.isprintable() else repr(text)[1:-1]
    return text if len(text) <= limit else text[:limit] + "..."


def invalid(field_name: str, problem: str) -> FsupError:
    return FsupError(
        "INVALID_FORMATION",
        f"formation.yaml: {field_name}: {problem}",
        {"field": field_name},
    )


class _NoAliasLoader(yaml.SafeLoader):
    """A SafeLoader that refuses anchors and aliases (they buy nothing in a manifest and are
    the lever of exponential-expansion attacks) and nesting deeper than `MAX_YAML_DEPTH`
    (the composer recurses once a level)."""

    def __init__(self, stream: bytes) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:  # noqa: ANN401 - PyYAML's API
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise invalid("(document)", f"YAML aliases are not allowed (line {mark.line + 1})")
        if self.depth >= MAX_YAML_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise invalid(
                "(document)", f"nested deeper than {MAX_YAML_DEPTH} levels (line {mark.line + 1})"
            )
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load_yaml(text: bytes) -> Any:
    if len(text) > MAX_MANIFEST_BYTES:
        raise invalid("(document)", f"larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        return yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506 - a SafeLoader subclass
    except FsupError:
        raise
    except yaml.YAMLError as exc:
        raise invalid("(document)", f"not valid YAML: {exc}") from None
    except (ValueError, OverflowError, RecursionError) as exc:
        # PyYAML's constructors let these through: an integer of more than 4300 digits,
        # a timestamp such as 2024-13-45.
        raise invalid("(document)", f"a value cannot be read: {label(str(exc), 200)}") from None


def parse_manifest(text: bytes, restart_defaults: RestartSpec = RestartSpec()) -> FormationSpec:
    """Parse `formation.yaml` bytes; raise `FsupError(INVALID_FORMATION)` naming the field.

    `restart_defaults` (from the server's config.yaml) fill the restart fields a manifest omits.
    """
    doc = load_yaml(text)
    if not isinstance(doc, dict):
        raise invalid("(document)", "must be a mapping of fields")
    reader = _Fields(doc, "")
    spec = FormationSpec(
        id=parse_formation_id(reader.required("id")),
        version=_version(reader.required("version")),
        description=reader.string("description", default="", max_len=1000),
        command=_command(reader.required("command")),
        env=_env(reader.optional("env")),
        health=_health(reader.section("health")),
        restart=_restart(reader.section("restart"), restart_defaults),
        stop=_stop(reader.section("stop")),
        search=_search(reader.section("search", present=False)),
        proxy=_proxy(reader.section("proxy")),
    )
    reader.reject_unknown()
    return spec


class _Fields:
    """Typed access to one mapping of the manifest, remembering which keys were read so that
    unknown keys (usually typos like `helth`) are reported instead of silently ignored."""

    def __init__(self, doc: dict[Any, Any], prefix: str) -> None:
        self.doc = doc
        self.prefix = prefix
        self.seen: set[str] = set()

    def name(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def optional(self, key: str) -> Any:
        self.seen.add(key)
        return self.doc.get(key)

    def required(self, key: str) -> Any:
        value = self.optional(key)
        if value is None:
            raise invalid(self.name(key), "is required")
        return value

    def section(self, key: str, present: bool = True) -> _Fields | None:
        value = self.optional(key)
        if value is None:
            return _Fields({}, self.name(key) + ".") if present else None
        if not isinstance(value, dict):
            raise invalid(self.name(key), "must be a mapping")
        return _Fields(value, self.name(key) + ".")

    def string(self, key: str, default: str, max_len: int) -> str:
        value = self.optional(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise invalid(self.name(key), "must be a string")
        if len(value) > max_len:
            raise invalid(self.name(key), f"longer than {max_len} characters")
        return value

    def number(self, key: str, default: float, low: float, high: float) -> float:
        value = self.optional(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise invalid(self.name(key), "must be a number")
        if not low <= value <= high:
            raise invalid(self.name(key), f"must be between {low:g} and {high:g}")
        return float(value)

    def integer(self, key: str, default: int, low: int, high: int) -> int:
        value = self.optional(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise invalid(self.name(key), "must be an integer")
        if not low <= value <= high:
            raise invalid(self.name(key), f"must be between {low} and {high}")
        return value

    def boolean(self, key: str, default: bool) -> bool:
        value = self.optional(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise invalid(self.name(key), "must be true or false")
        return value

    def reject_unknown(self) -> None:
        unknown = sorted(label(k) for k in self.doc if k not in self.seen)
        if unknown:
            raise invalid(self.name(unknown[0]), "unknown field")


def id_problem(value: Any) -> str | None:
    """What makes `value` not a formation id, or None when it is one. The CLI checks the ids
    it is given with this too, before it sends anything."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value):
        return (
            "must be 3-50 characters of a-z, 0-9 and '-', starting and ending with a letter "
            "or digit"
        )
    if value in RESERVED_IDS:
        return f"{value!r} is reserved ({', '.join(sorted(RESERVED_IDS))})"
    return None


def parse_formation_id(value: Any) -> str:
    reason = id_problem(value)
    if reason is not None:
        raise invalid("id", reason)
    return str(value)


def _version(value: Any) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise invalid("version", f"write it as a quoted semver string such as '{label(value)}.0'")
    reason = version_order.problem(value) if isinstance(value, str) else "it is not a string"
    if reason is not None:
        raise invalid(
            "version",
            f"must be a SemVer 2.0.0 version such as 1.2.3, 1.0.0-rc.1 or "
            f"1.0.0+build.5, but {reason}",
        )
    return str(value)


def _command(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value:
        raise invalid("command", 'must be a non-empty list of strings, e.g. ["python3", "app.py"]')
    if len(value) > 256:
        raise invalid("command", "has more than 256 arguments")
    for index, arg in enumerate(value):
        if not isinstance(arg, str) or not arg or "\0" in arg or len(arg) > 4096:
            raise invalid(f"command[{index}]", "must be a non-empty string without NUL bytes")
    return tuple(value)


def _env(value: Any) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise invalid("env", "must be a mapping of NAME: value")
    if len(value) > 256:
        raise invalid("env", "has more than 256 variables")
    pairs = []
    for name, raw in value.items():
        if not isinstance(name, str) or not ENV_NAME_PATTERN.fullmatch(name):
            raise invalid(f"env.{label(name)}", "is not a valid environment variable name")
        if name in SUPERVISOR_ENV:
            raise invalid(f"env.{name}", "is set by the supervisor and cannot be overridden")
        if isinstance(raw, bool):
            text = "true" if raw else "false"
        elif isinstance(raw, int) and raw.bit_length() > 64:
            raise invalid(f"env.{name}", "is a number too large for a variable; quote it")
        elif isinstance(raw, str | int | float):
            text = str(raw)
        else:
            raise invalid(f"env.{name}", "must be a string or a number")
        if "\0" in text or len(text) > 32768:
            raise invalid(f"env.{name}", "must be under 32 KiB without NUL bytes")
        pairs.append((name, text))
    return tuple(pairs)


def _url_path(value: Any, field_name: str) -> str:
    if not isinstance(value, str) or not value.startswith("/") or len(value) > 1024:
        raise invalid(field_name, "must be a URL path starting with '/'")
    if any(c.isspace() or not c.isprintable() for c in value) or "#" in value:
        raise invalid(field_name, "must not contain spaces, control characters or '#'")
    return value


def _health(fields: _Fields | None) -> HealthSpec:
    assert fields is not None
    http_path = fields.optional("http")
    tcp = fields.boolean("tcp", default=False)
    if http_path is not None:
        http_path = _url_path(http_path, fields.name("http"))
        if tcp:
            raise invalid(fields.name("tcp"), "choose either http or tcp, not both")
    spec = HealthSpec(
        http=http_path,
        tcp=tcp,
        interval=fields.number("interval", 0.5, 0.05, 60),
        timeout=fields.number("timeout", 60.0, 0.1, 3600),
        liveness=_liveness(fields),
    )
    fields.reject_unknown()
    return spec


def _liveness(fields: _Fields) -> float | None:
    """`liveness`: 0 (off) or a period; absent, every `interval` if that is set, else the
    default period."""
    value = fields.optional("liveness")
    if value is None:
        return None if fields.optional("interval") is not None else DEFAULT_LIVENESS_S
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(fields.name("liveness"), "must be a number")
    low, high = LIVENESS_RANGE
    if value != 0 and not low <= value <= high:
        raise invalid(fields.name("liveness"), f"must be 0 (off) or between {low:g} and {high:g}")
    return float(value)


def _restart(fields: _Fields | None, defaults: RestartSpec) -> RestartSpec:
    assert fields is not None
    policy = fields.optional("policy")
    if policy is None:
        policy = defaults.policy
    if not isinstance(policy, str) or policy not in RESTART_POLICIES:
        raise invalid(fields.name("policy"), f"must be one of {', '.join(RESTART_POLICIES)}")
    backoff_fields = fields.section("backoff")
    assert backoff_fields is not None
    base = defaults.backoff
    ranges = RESTART_RANGES
    backoff = BackoffSpec(
        initial=backoff_fields.number("initial", base.initial, *ranges["backoff.initial"]),
        factor=backoff_fields.number("factor", base.factor, *ranges["backoff.factor"]),
        max=backoff_fields.number("max", max(base.max, base.initial), *ranges["backoff.max"]),
        jitter=backoff_fields.number("jitter", base.jitter, *ranges["backoff.jitter"]),
    )
    backoff_fields.reject_unknown()
    if backoff.max < backoff.initial:
        raise invalid(backoff_fields.name("max"), "must be at least backoff.initial")
    spec = RestartSpec(
        policy=policy,
        backoff=backoff,
        reset_after=fields.number("reset_after", defaults.reset_after, *ranges["reset_after"]),
        max_restarts=fields.integer("max_restarts", defaults.max_restarts, *MAX_RESTARTS_RANGE),
        window=fields.number("window", defaults.window, *ranges["window"]),
    )
    fields.reject_unknown()
    return spec


def _stop(fields: _Fields | None) -> StopSpec:
    assert fields is not None
    name = fields.optional("signal")
    if name is None:
        name = "SIGTERM"
    if not isinstance(name, str):
        raise invalid(fields.name("signal"), "must be a signal name such as SIGTERM")
    if not name.startswith("SIG"):
        name = "SIG" + name
    if name not in STOP_SIGNALS:
        raise invalid(fields.name("signal"), f"must be one of {', '.join(sorted(STOP_SIGNALS))}")
    spec = StopSpec(signal=name, timeout=fields.number("timeout", 10.0, 0, 300))
    fields.reject_unknown()
    return spec


def _proxy(fields: _Fields | None) -> ProxySpec:
    assert fields is not None
    methods = fields.optional("idempotent")
    if methods is None:
        methods = []
    if not isinstance(methods, list) or not all(
        isinstance(m, str) and m in DECLARABLE_IDEMPOTENT for m in methods
    ):
        raise invalid(
            fields.name("idempotent"), f"must be a list of {', '.join(DECLARABLE_IDEMPOTENT)}"
        )
    spec = ProxySpec(hold=fields.number("hold", 5.0, 0, 60), idempotent=frozenset(methods))
    fields.reject_unknown()
    return spec


def _search(fields: _Fields | None) -> SearchSpec | None:
    if fields is None:
        return None
    spec = SearchSpec(path=_url_path(fields.required("path"), fields.name("path")))
    fields.reject_unknown()
    return spec
