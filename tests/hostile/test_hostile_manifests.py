"""Hostile `formation.yaml` in otherwise good bundles: deep nesting, aliases, ids and versions
with a trailing newline or a reserved name, wrong types, huge values, documents that are no
mapping. Each must be a 400 `INVALID_FORMATION` naming the field (where there is one), within
a bound, with nothing deployed."""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass

import pytest
from helpers import NASTY, make_bundle
from hostile_contract import assert_error
from hostile_kit import PLANT, Target

pytestmark = pytest.mark.e2e

FLEET = ("alpha",)
_numbers = itertools.count(1)


def fields(**values: object) -> dict[str, object]:
    """A valid manifest's fields, overridden by `values` (None removes a field)."""
    doc: dict[str, object] = {
        "id": "hy-case",
        "version": "1.0.0",
        "command": ["python3", "nasty.py", "serve"],
        "health": {"http": "/health", "interval": 0.1, "timeout": 10},
        "stop": {"timeout": 3},
    }
    doc.update(values)
    return {k: v for k, v in doc.items() if v is not None}


def as_yaml(doc: dict[str, object]) -> bytes:
    """YAML flow style (JSON is YAML), one field a line, so raw lines can be appended."""
    return "".join(f"{key}: {json.dumps(value)}\n" for key, value in doc.items()).encode()


def with_lines(*lines: str, **values: object) -> bytes:
    return as_yaml(fields(**values)) + "".join(line + "\n" for line in lines).encode()


@dataclass(frozen=True)
class ManifestCase:
    id: str
    text: bytes
    field: str | None = None  # the field the error must name, when one is at fault
    codes: tuple[str, ...] = ("INVALID_FORMATION",)


LAUGHS = "\n".join(
    ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
)

SIZE = ("INVALID_FORMATION", "INVALID_BUNDLE")

MANIFEST_CASES = [
    # nesting and aliases
    ManifestCase("deep-flow-sequences", b"[" * 25_000 + b"]" * 25_000),
    ManifestCase("deep-flow-mappings", b"{a: " * 8_000 + b"1" + b"}" * 8_000),
    ManifestCase("deep-block-sequences", b"- " * 15_000 + b"x\n"),
    ManifestCase(
        "deep-nesting-in-env", with_lines("env: {A: " + "[" * 20_000 + "]" * 20_000 + "}")
    ),
    ManifestCase("billion-laughs", with_lines(LAUGHS)),
    ManifestCase(
        "billion-laughs-in-env", as_yaml(fields()) + (LAUGHS + "\nenv: {X: *a9}\n").encode()
    ),
    ManifestCase("self-referencing-alias", with_lines("description: &loop [*loop]")),
    # ids
    ManifestCase("id-trailing-newline", as_yaml(fields(id="hy-newline\n")), "id"),
    ManifestCase("id-reserved-with-newline", as_yaml(fields(id="api\n")), "id"),
    ManifestCase("id-reserved-api", as_yaml(fields(id="api")), "id"),
    ManifestCase("id-reserved-v1", as_yaml(fields(id="v1")), "id"),
    ManifestCase("id-leading-newline", as_yaml(fields(id="\nhy-lead")), "id"),
    ManifestCase("id-uppercase", as_yaml(fields(id="Hy-Upper")), "id"),
    ManifestCase("id-too-short", as_yaml(fields(id="h")), "id"),
    ManifestCase("id-too-long", as_yaml(fields(id="h" * 51)), "id"),
    ManifestCase("id-leading-dash", as_yaml(fields(id="-hyphen")), "id"),
    ManifestCase("id-slash-traversal", as_yaml(fields(id="../../escape")), "id"),
    ManifestCase("id-nul", as_yaml(fields(id="hy\u0000nul")), "id"),
    ManifestCase("id-unicode-letters", as_yaml(fields(id="hy-\u00fcn\u00efcode")), "id"),
    ManifestCase("id-fullwidth", as_yaml(fields(id="\uff48\uff59-wide")), "id"),
    ManifestCase("id-arabic-digits", as_yaml(fields(id="hy-\u0663\u0664\u0665")), "id"),
    ManifestCase("id-integer", as_yaml(fields(id=123456)), "id"),
    ManifestCase("id-list", as_yaml(fields(id=["hy-a", "hy-b"])), "id"),
    ManifestCase("id-boolean", as_yaml(fields(id=True)), "id"),
    ManifestCase("id-missing", as_yaml(fields(id=None)), "id"),
    ManifestCase("id-yaml-date", with_lines("id: 2020-01-01", id=None), "id"),
    # versions
    ManifestCase("version-trailing-newline", as_yaml(fields(version="1.0.0\n")), "version"),
    ManifestCase("version-two-parts", as_yaml(fields(version="1.0")), "version"),
    ManifestCase("version-leading-zero", as_yaml(fields(version="01.0.0")), "version"),
    ManifestCase("version-v-prefix", as_yaml(fields(version="v1.0.0")), "version"),
    ManifestCase("version-float", with_lines("version: 1.0", version=None), "version"),
    ManifestCase(
        "version-5000-digit-major", as_yaml(fields(version="9" * 5000 + ".0.0")), "version"
    ),
    ManifestCase(
        "version-huge-prerelease", as_yaml(fields(version="1.0.0-" + "a" * 20_000)), "version"
    ),
    ManifestCase("version-yaml-date", with_lines("version: 2020-01-01", version=None), "version"),
    ManifestCase("version-null", with_lines("version: null", version=None), "version"),
    # wrong types and out-of-range values
    ManifestCase("command-a-string", as_yaml(fields(command="python3 nasty.py serve")), "command"),
    ManifestCase("command-empty", as_yaml(fields(command=[])), "command"),
    ManifestCase("command-integers", as_yaml(fields(command=[1, 2])), "command[0]"),
    ManifestCase("command-nul-byte", as_yaml(fields(command=["python3\u0000", "x"])), "command[0]"),
    ManifestCase("command-300-args", as_yaml(fields(command=["python3"] * 300)), "command"),
    ManifestCase("env-a-list", as_yaml(fields(env=["A=1"])), "env"),
    ManifestCase("env-bad-name", as_yaml(fields(env={"A=B": "1"})), "env.A=B"),
    ManifestCase("env-overrides-port", as_yaml(fields(env={"PORT": "1"})), "env.PORT"),
    ManifestCase("env-value-mapping", as_yaml(fields(env={"A": {"b": 1}})), "env.A"),
    ManifestCase(
        "health-interval-zero", as_yaml(fields(health={"interval": 0})), "health.interval"
    ),
    ManifestCase(
        "health-interval-nan",
        with_lines("health: {interval: .nan}", health=None),
        "health.interval",
    ),
    ManifestCase(
        "health-timeout-infinite",
        with_lines("health: {timeout: .inf}", health=None),
        "health.timeout",
    ),
    ManifestCase("health-http-no-slash", as_yaml(fields(health={"http": "health"})), "health.http"),
    ManifestCase(
        "health-http-absolute-url",
        as_yaml(fields(health={"http": "http://127.0.0.1:1/health"})),
        "health.http",
    ),
    ManifestCase("health-unknown-key", as_yaml(fields(health={"htpp": "/health"})), "health.htpp"),
    ManifestCase(
        "restart-policy-unknown", as_yaml(fields(restart={"policy": "sometimes"})), "restart.policy"
    ),
    ManifestCase(
        "restart-max-5001-digits", with_lines("restart: {max_restarts: 1" + "0" * 5000 + "}")
    ),
    ManifestCase(
        "restart-backoff-factor-zero",
        as_yaml(fields(restart={"backoff": {"factor": 0}})),
        "restart.backoff.factor",
    ),
    ManifestCase("stop-signal-sigkill", as_yaml(fields(stop={"signal": "SIGKILL"})), "stop.signal"),
    ManifestCase("stop-timeout-huge", as_yaml(fields(stop={"timeout": 1e9})), "stop.timeout"),
    ManifestCase("search-path-no-slash", as_yaml(fields(search={"path": "search"})), "search.path"),
    ManifestCase("unknown-top-level-field", as_yaml(fields(helth={"http": "/health"})), "helth"),
    ManifestCase("description-2000-chars", as_yaml(fields(description="d" * 2000)), "description"),
    # sizes
    ManifestCase(
        "manifest-over-64kib", as_yaml(fields()) + b"#" + b"c" * 70_000 + b"\n", codes=SIZE
    ),
    ManifestCase(
        "manifest-10mib-of-spaces", as_yaml(fields()) + b" " * (10 * 1024 * 1024), codes=SIZE
    ),
    # documents that are no mapping, or no YAML
    ManifestCase("document-a-list", b"- id: hy-list\n- version: 1.0.0\n"),
    ManifestCase("document-a-scalar", b"just a string\n"),
    ManifestCase("document-empty", b""),
    ManifestCase("two-documents", as_yaml(fields()) + b"---\n" + as_yaml(fields(id="hy-second"))),
    ManifestCase("not-utf8", as_yaml(fields()) + b"description: \xff\xfe\xfa\n"),
    ManifestCase(
        "python-object-tag",
        with_lines(f'description: !!python/object/apply:os.system ["touch /tmp/{PLANT}"]'),
    ),
    ManifestCase("binary-tag-id", with_lines("id: !!binary aHktYmluYXJ5", id=None), "id"),
    ManifestCase("unhashable-key", with_lines("? [a, b]\n: c")),
    ManifestCase("syntax-error", b"id: [hy-broken\nversion: 1.0.0\n"),
    ManifestCase("tab-indentation", b"id: hy-tabs\nhealth:\n\thttp: /health\n"),
]


def _bundle(case: ManifestCase, formation_id: str) -> bytes:
    text = case.text.replace(b"hy-case", formation_id.encode())
    return make_bundle({"formation.yaml": text, "nasty.py": NASTY.read_text()})


@pytest.mark.parametrize("case", MANIFEST_CASES, ids=lambda c: c.id)
def test_hostile_manifest_is_refused(target: Target, case: ManifestCase) -> None:
    """Deployed as a new formation: refused with the field named, nothing started."""
    formation_id = f"hy-{next(_numbers)}"
    reply = target.request(
        "POST",
        "/rpc/formations/deploy",
        [("Content-Type", "application/gzip")],
        _bundle(case, formation_id),
        auth="signed",
    )
    error = assert_error(reply, 400, case.codes)
    if case.field is not None:
        assert error["details"].get("field") == case.field, error


UPDATE_CASES = [
    pytest.param(
        as_yaml(fields(id="alpha", version="2.0.0\n")),
        "version",
        id="update-version-trailing-newline",
    ),
    pytest.param(
        as_yaml(fields(id="alpha\n", version="3.0.0")), "id", id="update-id-trailing-newline"
    ),
    pytest.param(
        as_yaml(fields(id="alpha", version="4.0.0")) + LAUGHS.encode() + b"\n",
        None,
        id="update-billion-laughs",
    ),
    pytest.param(
        as_yaml(fields(id="alpha", version="5.0.0"))
        + b"env: {A: "
        + b"[" * 20_000
        + b"]" * 20_000
        + b"}\n",
        None,
        id="update-deep-nesting",
    ),
]


@pytest.mark.parametrize(("text", "field"), UPDATE_CASES)
def test_hostile_manifest_update_is_refused(target: Target, text: bytes, field: str | None) -> None:
    """Sent as an update of a running formation: refused, the running version untouched."""
    bundle = make_bundle({"formation.yaml": text, "nasty.py": NASTY.read_text()})
    reply = target.request(
        "PUT",
        "/rpc/formations/alpha",
        [("Content-Type", "application/gzip")],
        bundle,
        auth="signed",
    )
    error = assert_error(reply, 400, "INVALID_FORMATION")
    if field is not None:
        assert error["details"].get("field") == field, error
