"""formation.yaml validation: good manifests parse, bad ones name the field."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from supervisor.core.errors import FsupError
from supervisor.core.manifest import RESERVED_IDS, RestartSpec, parse_manifest
from supervisor.storage.intake import validate

MiB = 1024 * 1024

GOOD = b"""
id: hello
version: 1.0.0
description: Hello service
command: ["python3", "app.py"]
env: {GREETING: hi, WORKERS: 2, DEBUG: false}
health: {http: /health, interval: 0.5, timeout: 60}
restart:
  policy: on-failure
  backoff: {initial: 0.5, factor: 2, max: 30, jitter: 0.1}
  reset_after: 60
  max_restarts: 10
  window: 300
stop: {signal: SIGTERM, timeout: 10}
search: {path: /search}
"""


def test_the_contract_example_parses() -> None:
    spec = parse_manifest(GOOD)
    assert spec.id == "hello" and spec.version == "1.0.0"
    assert spec.command == ("python3", "app.py")
    assert dict(spec.env) == {"GREETING": "hi", "WORKERS": "2", "DEBUG": "false"}
    assert spec.health.kind == "http" and spec.health.http == "/health"
    assert spec.restart.backoff.max == 30 and spec.restart.max_restarts == 10
    assert spec.stop.signum == 15
    assert spec.search is not None and spec.search.path == "/search"


def test_defaults_fill_what_is_left_out() -> None:
    spec = parse_manifest(b"id: tiny\nversion: 0.1.0\ncommand: [sleep, '60']\n")
    assert spec.health.kind == "process" and spec.health.stay_up == 1.0
    assert spec.restart == RestartSpec()
    assert spec.stop.signal == "SIGTERM" and spec.stop.timeout == 10
    assert spec.search is None


def test_server_restart_defaults_apply() -> None:
    defaults = RestartSpec(policy="always", max_restarts=3)
    spec = parse_manifest(b"id: tiny\nversion: 0.1.0\ncommand: [x]\n", defaults)
    assert spec.restart.policy == "always" and spec.restart.max_restarts == 3


def mutate(replace: str, by: str) -> bytes:
    assert replace.encode() in GOOD
    return GOOD.replace(replace.encode(), by.encode())


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (mutate("id: hello", "id: Hello"), "id"),
        (mutate("id: hello", "id: ab"), "id"),
        (mutate("id: hello", "id: -abc"), "id"),
        (mutate("id: hello", "id: rpc"), "id"),
        (mutate("id: hello\n", ""), "id"),
        (mutate("version: 1.0.0", "version: 1.0"), "version"),
        (mutate("version: 1.0.0", "version: 1"), "version"),
        (mutate("version: 1.0.0", "version: 1.0.0-01"), "version"),
        (mutate('command: ["python3", "app.py"]', "command: python3 app.py"), "command"),
        (mutate('command: ["python3", "app.py"]', "command: []"), "command"),
        (mutate('command: ["python3", "app.py"]', 'command: ["python3", 3]'), "command[1]"),
        (mutate("GREETING: hi", "PORT: 1"), "env.PORT"),
        (mutate("GREETING: hi", "1BAD: x"), "env.1BAD"),
        (mutate("GREETING: hi", "NESTED: {a: 1}"), "env.NESTED"),
        (mutate("http: /health", "http: health"), "health.http"),
        (mutate("http: /health", "http: /health, tcp: true"), "health.tcp"),
        (mutate("interval: 0.5", "interval: 0"), "health.interval"),
        (mutate("timeout: 60", "timeout: forever"), "health.timeout"),
        (mutate("policy: on-failure", "policy: sometimes"), "restart.policy"),
        (mutate("factor: 2", "factor: 0.5"), "restart.backoff.factor"),
        (mutate("max: 30", "max: 0.1"), "restart.backoff.max"),
        (mutate("jitter: 0.1", "jitter: 2"), "restart.backoff.jitter"),
        (mutate("max_restarts: 10", "max_restarts: 2.5"), "restart.max_restarts"),
        (mutate("max_restarts: 10", "max_restarts: true"), "restart.max_restarts"),
        (mutate("signal: SIGTERM", "signal: SIGKILL"), "stop.signal"),
        (mutate("timeout: 10}", "timeout: -1}"), "stop.timeout"),
        (mutate("search: {path: /search}", "search: {path: search}"), "search.path"),
        (mutate("description: Hello service", "descripton: typo"), "descripton"),
        (mutate("window: 300", "window: 300\n  windw: 3"), "restart.windw"),
        (mutate("id: hello", 'id: "hello\\n"'), "id"),
        (mutate("id: hello", 'id: "rpc\\n"'), "id"),
        (mutate("version: 1.0.0", 'version: "1.0.0\\n"'), "version"),
        (mutate("version: 1.0.0", 'version: "\u0661.0.0"'), "version"),
        (mutate("GREETING: hi", '"GREETING\\n": hi'), "env.GREETING\\n"),
        (mutate("signal: SIGTERM", "signal: [SIGTERM]"), "stop.signal"),
        (mutate("policy: on-failure", "policy: [always]"), "restart.policy"),
    ],
)
def test_bad_fields_are_named(text: bytes, field: str) -> None:
    with pytest.raises(FsupError) as info:
        parse_manifest(text)
    assert info.value.code == "INVALID_FORMATION"
    assert info.value.details["field"] == field
    assert info.value.message.startswith(f"formation.yaml: {field}:")


@pytest.mark.parametrize(
    "text",
    [
        b"- just\n- a list\n",
        b"id: [unclosed\n",
        b"a: &x [1, 2]\nb: *x\n",
        b"id: x\n" + b"#" * (64 * 1024 + 1),
        b"!!python/object:os.system {}\n",
        b"[" * 50000,
        b"id: 2024-13-45\n",
        b"id: " + b"9" * 5000 + b"\n",
    ],
)
def test_bad_documents_are_refused(text: bytes) -> None:
    with pytest.raises(FsupError) as info:
        parse_manifest(text)
    assert info.value.code == "INVALID_FORMATION"


def test_aliases_are_refused_by_name() -> None:
    with pytest.raises(FsupError, match="aliases"):
        parse_manifest(b"id: &a hello\nversion: 1.0.0\ncommand: [*a]\n")


def test_short_stop_signal_names_are_accepted() -> None:
    spec = parse_manifest(mutate("signal: SIGTERM", "signal: INT"))
    assert spec.stop.signal == "SIGINT"


# --- hostile formation.yaml ------------------------------------------------------------------------

BASE = 'id: {id}\nversion: "{version}"\ncommand: [python3, app.py]\n'


def manifest(id_: str = '"hello"', version: str = "1.0.0", extra: str = "") -> bytes:
    return (BASE.format(id=id_, version=version) + extra).encode()


def refused_manifest(text: bytes) -> FsupError:
    with pytest.raises(FsupError) as info:
        parse_manifest(text)
    assert info.value.code == "INVALID_FORMATION" and info.value.status == 400
    return info.value


@pytest.mark.parametrize("name", sorted(RESERVED_IDS))
def test_reserved_ids_with_a_trailing_newline_are_refused(name: str) -> None:
    assert refused_manifest(manifest(f'"{name}\\n"')).details["field"] == "id"
    assert refused_manifest(manifest(f'"{name}"')).details["field"] == "id"


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (manifest('"hello\\n"'), "id"),
        (manifest('"\\nhello"'), "id"),
        (manifest("|\n  hello\n"), "id"),
        (manifest(version="1.0.0\\n"), "version"),
        (manifest(version="1.0.0\\n\\n"), "version"),
        (manifest(version="\u0661.0.0"), "version"),  # Arabic-Indic one
        (manifest(version="1.\uff10.0"), "version"),  # fullwidth zero
        (manifest(version="1.0.0-" + "a" * 200), "version"),
        (manifest(version="1" * 30 + ".0.0"), "version"),
        (manifest(extra='env: {"A\\n": x}\n'), "env.A\\n"),
        (manifest(extra="env: {A: 0b" + "1" * 20000 + "}\n"), "env.A"),
        (manifest(extra="stop: {signal: [1]}\n"), "stop.signal"),
        (manifest(extra="stop: {signal: {a: 1}}\n"), "stop.signal"),
        (manifest(extra="restart: {policy: [always]}\n"), "restart.policy"),
        (manifest(extra='health: {http: "/health\\x00"}\n'), "health.http"),
        (manifest(extra='search: {path: "/s\\x1b[2J"}\n'), "search.path"),
    ],
)
def test_bad_manifest_values_are_named(text: bytes, field: str) -> None:
    error = refused_manifest(text)
    assert error.details["field"] == field and error.message.startswith(f"formation.yaml: {field}")


PARSED_WITHIN_S = 10.0


@pytest.mark.parametrize(
    ("text", "field"),
    [
        (b"[" * 60000, "(document)"),
        (b"{a: " * 15000, "(document)"),
        (b"id: " + b"[" * 30000 + b"]" * 30000, "(document)"),
        (b"".join(b"  " * i + b"- \n" for i in range(200)), "(document)"),
        (b"a:\n" + b"".join(b"  " * i + b"b:\n" for i in range(1, 200)), "(document)"),
        (manifest(extra="restart: {max_restarts: " + "9" * 5000 + "}\n"), "(document)"),
        (manifest(extra="description: 2024-13-45\n"), "(document)"),
        (manifest(extra="? 0b" + "1" * 15000 + "\n: 1\n"), "<a very large number>"),
        (b"\xff\xfe\x00garbage", "(document)"),
        (manifest(extra="env: {A: !!python/name:os.system ''}\n"), "(document)"),
    ],
    ids=[
        "flow-seq",
        "flow-map",
        "nested-value",
        "block-seq",
        "block-map",
        "long-int",
        "bad-date",
        "huge-key",
        "not-utf8",
        "python-tag",
    ],
)
def test_hostile_yaml_documents_are_refused(text: bytes, field: str) -> None:
    """Refused, and without the runaway cost (deep recursion, quadratic scans) that would take
    minutes: the bound is a deadline for a loaded machine (0.3 s measured at most), not a
    speed check (bench/ measures speed)."""
    started = time.perf_counter()
    error = refused_manifest(text)
    took = time.perf_counter() - started
    assert took < PARSED_WITHIN_S, f"refused after {took:.1f}s"
    assert error.details["field"] == field


def test_nesting_up_to_the_cap_is_parsed() -> None:
    """31 levels under the document: parsed, then refused as an unknown field."""
    deep = refused_manifest(manifest(extra="x-deep: " + "[" * 31 + "]" * 31 + "\n"))
    assert deep.details["field"] == "x-deep"
    too_deep = refused_manifest(manifest(extra="x-deep: " + "[" * 32 + "]" * 32 + "\n"))
    assert "deeper than 32" in too_deep.message


async def test_an_oversized_formation_yaml_is_not_read_whole(tmp_path: Path) -> None:
    (tmp_path / "formation.yaml").write_bytes(manifest() + b"#" * (200 * MiB // 100))
    with pytest.raises(FsupError) as info:
        await validate(tmp_path, RestartSpec())
    assert info.value.code == "INVALID_FORMATION" and "larger than" in info.value.message


MINIMAL = b'id: hello\nversion: 1.0.0\ncommand: ["python3", "app.py"]\n'


@pytest.mark.parametrize(
    ("health", "period"),
    [
        ("{http: /health}", 10.0),  # the default liveness period
        ("{http: /health, interval: 0.2}", 0.2),  # an interval set alone: probed that often
        ("{http: /health, interval: 0.2, liveness: 30}", 30.0),
        ("{tcp: true, liveness: 0}", 0.0),  # off
        ("{liveness: 5}", 0.0),  # no probe declared: nothing to check
        ("{http: /health, liveness: 0.05}", 0.05),
    ],
)
def test_liveness_period(health: str, period: float) -> None:
    spec = parse_manifest(MINIMAL + f"health: {health}\n".encode())
    assert spec.health.liveness_period == period
    assert parse_manifest(MINIMAL).health.liveness_period == 0.0  # no health section at all


@pytest.mark.parametrize("value", ["0.01", "3601", "-1", ".nan", ".inf", "true", "'10'"])
def test_a_bad_liveness_period_is_named(value: str) -> None:
    with pytest.raises(FsupError) as info:
        parse_manifest(MINIMAL + f"health: {{http: /h, liveness: {value}}}\n".encode())
    assert info.value.code == "INVALID_FORMATION" and "health.liveness" in info.value.message
