"""Files under the home: credentials (0600, contract shape) and config.yaml (defaults written)."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from supervisor.core.manifest import BackoffSpec, RestartSpec
from supervisor.storage.bundles import BundleLimits
from supervisor.storage.config import (
    SETTINGS,
    ConfigError,
    ServerConfig,
    from_doc,
    load_config,
    with_flags,
)
from supervisor.storage.formation_logs import LogLimits
from supervisor.storage.home import Home, load_or_create_credentials


def test_credentials_are_created_once_with_mode_0600(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.ensure()
    creds, server_id = load_or_create_credentials(home)
    path = home.credentials
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert set(data) == {"key_id", "secret_key", "server_id", "created_at"}
    assert re.fullmatch(r"MUXI_LOCAL_[0-9a-f]{16}", data["key_id"])
    assert len(__import__("base64").b64decode(data["secret_key"])) == 32
    assert re.fullmatch(r".+-[0-9a-f]{64}", data["server_id"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["created_at"])
    again, same_id = load_or_create_credentials(home)
    assert (again, same_id) == (creds, server_id)


def test_config_defaults_are_written_out_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    assert load_config(path) == ServerConfig()
    assert "port_range: 8000-9000" in path.read_text()
    assert load_config(path) == ServerConfig()


def test_config_overrides_and_mistakes(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "port: 9999\nrestart_defaults: {policy: always}\nlimits: {max_body_bytes: 10}\n"
    )
    config = load_config(path)
    assert config.port == 9999 and config.max_body_bytes == 10
    assert config.restart_defaults.policy == "always"
    for text, words in [
        ("prot: 1\n", "unknown setting"),
        ("restart_defaults: {policy: x}\n", "policy"),
        ("port_range: 9-1\n", "port range"),
        ("a: " + "[" * 5000 + "\n", "deep"),
        ("a: &x [1]\nb: *x\n", "alias"),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=words):
            load_config(path)


def test_port_range_parsing() -> None:
    def port_range(text: str) -> tuple[int, int]:
        return with_flags(ServerConfig(), {"--port-range": text}).port_range

    assert port_range("8000-9000") == (8000, 9000)
    for bad in ("8000", "a-b", "0-10", "9000-8000", "1-70000"):
        with pytest.raises(ConfigError):
            port_range(bad)


# -- the config.yaml model -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        # unknown keys, named by their full dotted path
        ("prot: 1\n", "unknown setting 'prot' (did you mean 'port'?)"),
        (
            "limits: {max_bdy_bytes: 10}\n",
            "unknown setting 'limits.max_bdy_bytes' (did you mean 'limits.max_body_bytes'?)",
        ),
        (
            "restart_defaults: {backoff: {factr: 2}}\n",
            "unknown setting 'restart_defaults.backoff.factr'",
        ),
        ("restart_defaults: {policy: always, max: 3}\n", "unknown setting 'restart_defaults.max'"),
        ("auth: {schemes: auto, keys: 1}\n", "unknown setting 'auth.keys'"),
        ("limits: {port: 1}\n", "unknown setting 'limits.port'"),
        ("1: x\n", "unknown setting '1'"),
        ("port:\n  number: 1\n", "port: expected an integer, got a mapping"),
        # wrong types, named with the path and the type expected; booleans are not numbers
        ("port: '7890'\n", "port: expected an integer, got a string ('7890')"),
        ("port: true\n", "port: expected an integer, got a boolean (true)"),
        ("port: 7890.0\n", "port: expected an integer, got a number (7890.0)"),
        ("port:\n", "port: expected an integer, got nothing (null)"),
        ("host: 1\n", "host: expected a string (an IP address or host name), got an integer (1)"),
        (
            "port_range: 8000\n",
            "port_range: expected a port range such as 8000-9000, got an integer",
        ),
        (
            "port_range: [8000, 9000]\n",
            "port_range: expected a port range such as 8000-9000, got a list",
        ),
        ("limits: 5\n", "limits: expected a mapping of settings, got an integer (5)"),
        (
            "limits: {max_body_bytes: true}\n",
            "limits.max_body_bytes: expected an integer, got a boolean",
        ),
        (
            "limits: {max_body_bytes: 1.5}\n",
            "limits.max_body_bytes: expected an integer, got a number",
        ),
        (
            "limits: {max_body_bytes: 10MB}\n",
            "limits.max_body_bytes: expected an integer, got a string ('10MB')",
        ),
        (
            "limits: {log_backups: false}\n",
            "limits.log_backups: expected an integer, got a boolean (false)",
        ),
        (
            "limits: {bundle_max_ratio: yes}\n",
            "limits.bundle_max_ratio: expected a number, got a boolean (true)",
        ),
        (
            "restart_defaults: {backoff: {factor: true}}\n",
            "restart_defaults.backoff.factor: expected a number, got a boolean (true)",
        ),
        (
            "restart_defaults: {backoff: 2}\n",
            "restart_defaults.backoff: expected a mapping of settings, got an integer (2)",
        ),
        (
            "restart_defaults: {max_restarts: 2.5}\n",
            "restart_defaults.max_restarts: expected an integer, got a number (2.5)",
        ),
        (
            "restart_defaults: {policy: [always]}\n",
            "restart_defaults.policy: expected one of always, on-failure, never, got a list",
        ),
        ("shutdown_timeout: '60'\n", "shutdown_timeout: expected a number, got a string ('60')"),
        ("auth: schemes\n", "auth: expected a mapping of settings, got a string ('schemes')"),
        (
            "auth: {schemes: true}\n",
            "auth.schemes: expected auto or a list of signed-headers, muxi-hmac",
        ),
        (
            "auth: {schemes: []}\n",
            "auth.schemes: expected auto or a list of signed-headers, muxi-hmac, got a list",
        ),
        (
            "auth: {schemes: [bearer]}\n",
            "auth.schemes: must be auto or a list of signed-headers, "
            "muxi-hmac; a string ('bearer') is not a scheme",
        ),
        ("- port\n- 1\n", "expected a mapping of settings, got a list"),
        # out of range
        ("port: 65536\n", "port: must be between 0 and 65535, got 65536"),
        ("port: -1\n", "port: must be between 0 and 65535, got -1"),
        (
            "port_range: 0-10\n",
            "port_range: port range 0-10 must be within 1-65535, low before high",
        ),
        ("port_range: 9000-8000\n", "port_range: port range 9000-8000 must be within 1-65535"),
        ("port_range: 8000-70000\n", "port_range: port range 8000-70000 must be within 1-65535"),
        ("port_range: 8000 - 9000\n", "port_range: '8000 - 9000' is not a port range"),
        ("host: 'a b'\n", "host: 'a b' is not an IP address or host name"),
        ("host: ''\n", "host: '' is not an IP address or host name"),
        ("limits: {max_body_bytes: 0}\n", "limits.max_body_bytes: must be between 1 and"),
        ("limits: {bundle_max_members: -5}\n", "limits.bundle_max_members: must be between 1 and"),
        (
            "limits: {bundle_max_ratio: 0.5}\n",
            "limits.bundle_max_ratio: must be between 1 and 1000000",
        ),
        ("limits: {log_backups: -1}\n", "limits.log_backups: must be between 0 and 100, got -1"),
        ("limits: {log_max_bytes: 0}\n", "limits.log_max_bytes: must be between 1 and"),
        (
            "restart_defaults: {policy: sometimes}\n",
            "restart_defaults.policy: must be one of always, on-failure, never, got 'sometimes'",
        ),
        (
            "restart_defaults: {backoff: {factor: 0.5}}\n",
            "restart_defaults.backoff.factor: must be between 1 and 10, got 0.5",
        ),
        (
            "restart_defaults: {backoff: {jitter: 2}}\n",
            "restart_defaults.backoff.jitter: must be between 0 and 1",
        ),
        (
            "restart_defaults: {window: .nan}\n",
            "restart_defaults.window: must be between 1 and 604800, got nan",
        ),
        (
            "restart_defaults: {reset_after: .inf}\n",
            "restart_defaults.reset_after: must be between 0 and 86400",
        ),
        (
            "restart_defaults: {max_restarts: 10001}\n",
            "restart_defaults.max_restarts: must be between 0 and 10000",
        ),
        (
            "restart_defaults: {backoff: {initial: 60}}\n",
            "restart_defaults.backoff.max: must be at least restart_defaults.backoff.initial (60), got 30",
        ),
        ("shutdown_timeout: 0\n", "shutdown_timeout: must be between 0.1 and 86400, got 0"),
        (
            "port: " + "9" * 300 + "\n",
            "port: must be between 0 and 65535, got <a very large number>",
        ),
        # http.allowed_hosts: names only, each one checked
        ("http: {allowed_hosts: fsup.lan}\n", "http.allowed_hosts: expected a list of host"),
        ("http: {allowed_hosts: [1]}\n", "http.allowed_hosts: each entry is a host name"),
        ("http: {allowed_hosts: ['*.lan']}\n", "'*.lan': wildcards are not accepted"),
        ("http: {allowed_hosts: ['fsup.lan:7890']}\n", "without a port"),
        ("http: {allowed_hosts: ['a..b']}\n", "'a..b' is not a host name or IP address"),
        ("http: {allowed_hosts: ['fe80::1%eth0']}\n", "an IPv6 zone"),
        ("http: {allowed_hosts: ['user@fsup']}\n", "is not a host name or IP address"),
        ("http: {allowed_hosts: ['caf\u00e9.lan']}\n", "is not ASCII"),
        ("http: {allowed_hosts: [" + "a, " * 65 + "]}\n", "lists 65 names; the limit is 64"),
        ("http: {allowed_host: []}\n", "unknown setting 'http.allowed_host'"),
        # the document itself
        ("a: " + "[" * 5000 + "\n", "deeper than"),
        ("a: &x [1]\nb: *x\n", "aliases are not allowed"),
        ("port: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_configs_are_refused_naming_the_setting(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("text", "changed"),
    [
        ("", {}),
        ("limits:\nrestart_defaults:\n  backoff:\nauth:\n", {}),  # sections left empty
        ("port: 0\n", {"port": 0}),  # the listening port may be 0 (a free one)
        ("port: 65535\nport_range: 1-1\n", {"port": 65535, "port_range": (1, 1)}),
        ("host: '::1'\n", {"host": "::1"}),
        ("host: localhost\n", {"host": "localhost"}),
        ("shutdown_timeout: 5\n", {"shutdown_timeout": 5.0}),
        ("auth: {schemes: muxi-hmac}\n", {"auth_schemes": ("muxi-hmac",)}),
        (
            "auth: {schemes: [muxi-hmac, signed-headers, muxi-hmac]}\n",
            {"auth_schemes": ("muxi-hmac", "signed-headers")},
        ),
        ("auth: {schemes: auto}\n", {"auth_schemes": None}),
        ("http: {allowed_hosts: []}\n", {}),
        ("http:\n  allowed_hosts:\n", {}),
        (
            "http: {allowed_hosts: [Fsup.LAN., fsup.lan, '::1', '[FE80::0001]', 10.0.0.7]}\n",
            {"allowed_hosts": ("fsup.lan", "[::1]", "[fe80::1]", "10.0.0.7")},
        ),
    ],
)
def test_good_configs(tmp_path: Path, text: str, changed: dict[str, Any]) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert load_config(path) == replace(ServerConfig(), **changed)


def test_backoff_factor_one_and_bounds_are_accepted(tmp_path: Path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(
        "restart_defaults: {backoff: {factor: 1, initial: 0.01, jitter: 0}, "
        "max_restarts: 0}\nlimits: {log_backups: 0, bundle_max_ratio: 1}\n"
    )
    config = load_config(path)
    assert config.restart_defaults.backoff == BackoffSpec(0.01, 1.0, 30.0, 0.0)
    assert config.restart_defaults.max_restarts == 0 and config.logs.backups == 0


EVERYTHING_CHANGED = ServerConfig(
    host="0.0.0.0",
    port=0,
    port_range=(20000, 20999),
    max_body_bytes=2048,
    bundle=BundleLimits(max_members=7, max_unpacked_bytes=4096, max_ratio=12.5),
    restart_defaults=RestartSpec(
        policy="always",
        backoff=BackoffSpec(1.5, 3.0, 90.0, 0.0),
        reset_after=5.0,
        max_restarts=0,
        window=20.0,
    ),
    logs=LogLimits(max_bytes=1000, backups=0),
    shutdown_timeout=2.5,
    auth_schemes=("muxi-hmac", "signed-headers"),
    allowed_hosts=("fsup.lan", "[fe80::1]", "10.0.0.7"),
)


@pytest.mark.parametrize("config", [ServerConfig(), EVERYTHING_CHANGED])
def test_what_is_written_reads_back_the_same(tmp_path: Path, config: ServerConfig) -> None:
    """One model writes and reads: the two cannot drift."""
    path = tmp_path / "config.yaml"
    path.write_text(config.to_yaml())
    assert load_config(path) == config
    assert from_doc(yaml.safe_load(config.to_yaml()), "x") == config


def test_every_setting_is_written_with_its_type_and_range() -> None:
    text = ServerConfig().to_yaml()
    written = from_doc(yaml.safe_load(text), "x")
    assert written == ServerConfig()
    lines = text.splitlines()
    for setting in SETTINGS:
        name = setting.key.rsplit(".", 1)[-1]
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(f"{name}:"))
        assert f"[{setting.kind.describe()}]" in " ".join(
            line.strip() for line in lines[max(0, index - 4) : index]
        ), setting.key


def _leaf_fields(value: Any, prefix: str = "") -> set[str]:
    leaves: set[str] = set()
    for item in fields(value):
        inner = getattr(value, item.name)
        name = f"{prefix}{item.name}"
        leaves |= _leaf_fields(inner, name + ".") if is_dataclass(inner) else {name}
    return leaves


def test_every_server_setting_is_in_the_model() -> None:
    # ratio_floor_bytes is a constant of the bomb check, not a knob.
    assert _leaf_fields(ServerConfig()) - {"bundle.ratio_floor_bytes"} == {
        s.field for s in SETTINGS
    }


def test_flags_are_checked_like_their_settings() -> None:
    config = with_flags(
        ServerConfig(), {"--host": "0.0.0.0", "--port": 0, "--port-range": "20000-20010"}
    )
    assert (config.host, config.port, config.port_range) == ("0.0.0.0", 0, (20000, 20010))
    assert with_flags(config, {"--host": None, "--port": None, "--port-range": None}) == config
    for flags, message in [
        ({"--port": 70000}, "--port: must be between 0 and 65535, got 70000"),
        ({"--port-range": "9-1"}, "--port-range: port range 9-1 must be"),
        ({"--host": "a b"}, "--host: 'a b' is not an IP address"),
    ]:
        with pytest.raises(ConfigError) as info:
            with_flags(ServerConfig(), flags)
        assert str(info.value).startswith(message)


def test_serve_refuses_a_bad_flag_or_config_with_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "MUXI_HOME": str(tmp_path)}
    command = [sys.executable, "-m", "supervisor", "serve"]
    done = subprocess.run(
        [*command, "--port", "70000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 2 and "fsup: --port: must be between 0 and 65535" in done.stderr
    config = tmp_path / "server" / "config.yaml"
    config.write_text("limits: {max_bdy_bytes: 10}\n")
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert done.returncode == 2
    assert f"fsup: {config}: unknown setting 'limits.max_bdy_bytes'" in done.stderr
