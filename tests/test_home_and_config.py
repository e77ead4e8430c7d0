"""Files under the home: credentials (0600, contract shape) and config.yaml (defaults written)."""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path

import pytest

from supervisor.config import ConfigError, ServerConfig, load_config, parse_port_range
from supervisor.home import Home, load_or_create_credentials


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
    path.write_text("port: 9999\nrestart_defaults: {policy: always}\nlimits: {max_body_bytes: 10}\n")
    config = load_config(path)
    assert config.port == 9999 and config.max_body_bytes == 10
    assert config.restart_defaults.policy == "always"
    for text, words in [("prot: 1\n", "unknown setting"), ("restart_defaults: {policy: x}\n", "policy"),
                        ("port_range: 9-1\n", "port range"), ("a: " + "[" * 5000 + "\n", "deep"),
                        ("a: &x [1]\nb: *x\n", "alias")]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=words):
            load_config(path)


def test_port_range_parsing() -> None:
    assert parse_port_range("8000-9000") == (8000, 9000)
    for bad in ("8000", "a-b", "0-10", "9000-8000", "1-70000"):
        with pytest.raises(ConfigError):
            parse_port_range(bad)
