"""The OpenAPI document stays true to the app: every route is in it and nothing else is, and it
is a valid OpenAPI 3.1 document. (Whether the responses match it is the schemathesis run's job:
tests/test_schemathesis.py.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
from app_kit import open_bare_app
from quart_trio import QuartTrio
from schemathesis.specs.openapi.definitions import OPENAPI_31_VALIDATOR

from supervisor.http import faults
from supervisor.http.openapi import PATH, document

METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
# `/api/v1/<path:rest>` only gives unknown /api/v1 paths the contract's 404 (instead of the
# proxy's "formation 'v1' not found"); it is not an endpoint, and the document says so in
# `info.description`. Werkzeug serves files under /static for any Quart app; fsup has none.
NOT_ENDPOINTS = {"api_v1.api_unknown", "static"}


@pytest.fixture
async def app(tmp_path: Path) -> AsyncIterator[QuartTrio]:
    async with open_bare_app(tmp_path, "ab" * 32) as app:
        yield app


def app_operations(app: QuartTrio) -> set[tuple[str, str]]:
    """(OpenAPI path template, method) of every route a client can call. HEAD beside GET and
    OPTIONS are left out where the framework adds them on its own; a route that lists them
    itself (the proxy) must document them. Test-only routes (faults) are not the API."""
    found = set()
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        if rule.endpoint in NOT_ENDPOINTS or view.__module__ == faults.__name__:
            continue
        automatic = getattr(rule, "provide_automatic_options", True)
        template = re.sub(r"<(?:[a-z]+:)?(\w+)>", r"{\1}", rule.rule)
        for method in rule.methods or ():
            if automatic and (method == "OPTIONS" or (method == "HEAD" and "GET" in rule.methods)):
                continue
            found.add((template, method.lower()))
    return found


def doc_operations() -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document()["paths"].items()
        for method in item
        if method in METHODS
    }


def operations() -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document()["paths"].items():
        for method, op in item.items():
            yield path, method, op


async def test_every_route_is_documented_and_nothing_else(app: QuartTrio) -> None:
    in_app, in_doc = app_operations(app), doc_operations()
    assert sorted(in_app - in_doc) == [], "routes missing from the OpenAPI document"
    assert sorted(in_doc - in_app) == [], "documented operations the app does not have"


def test_document_is_valid_openapi_31() -> None:
    doc = document()
    errors = [
        f"{list(e.instance_path)}: {e.message[:300]}" for e in OPENAPI_31_VALIDATOR.iter_errors(doc)
    ]
    assert errors == []
    assert doc["openapi"].startswith("3.1.")


def walk(node: Any, where: str = "#") -> Iterator[tuple[str, Any]]:
    yield where, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from walk(value, f"{where}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from walk(value, f"{where}/{index}")


def test_every_schema_is_valid_json_schema_and_every_ref_resolves() -> None:
    """The OpenAPI meta-schema does not look inside Schema objects: check each against JSON
    Schema 2020-12 (OpenAPI 3.1's dialect), and that each `$ref` points at something."""
    doc = document()
    components = doc["components"]["schemas"]
    for name, schema in components.items():
        jsonschema_rs.meta.validate(schema)  # raises on an invalid schema, naming the keyword
        assert name[0].isupper(), name
    for where, node in walk(doc):
        if isinstance(node, dict) and "$ref" in node:
            target = node["$ref"]
            assert target.startswith("#/components/schemas/"), where
            assert target.rsplit("/", 1)[1] in components, f"{where}: {target} is not defined"
    for _path, _method, op in operations():
        for response in op["responses"].values():
            for media in response.get("content", {}).values():
                jsonschema_rs.meta.validate(media["schema"])
        for parameter in op.get("parameters", []):
            jsonschema_rs.meta.validate(parameter["schema"])
        for media in op.get("requestBody", {}).get("content", {}).values():
            jsonschema_rs.meta.validate(media["schema"])


def test_operations_are_consistent() -> None:
    """Unique operation ids; path parameters exactly as the template names them; every error
    status answers the contract's error shape; every operation says how it authenticates."""
    seen: set[str] = set()
    for path, method, op in operations():
        assert op["operationId"] not in seen, op["operationId"]
        seen.add(op["operationId"])
        declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
        assert declared == set(re.findall(r"{(\w+)}", path)), f"{method} {path}"
        assert "security" in op, f"{method} {path}"
        for status, response in op["responses"].items():
            if status != "default" and int(status) >= 400:
                schema = response["content"]["application/json"]["schema"]
                assert schema["allOf"][0] == {"$ref": "#/components/schemas/Error"}, status


def test_auth_is_documented_per_family() -> None:
    """HMAC headers or MUXI-HMAC on /rpc; on /api/v1 the bearer token or the session cookie
    (the dashboard), the cookie alone on the event stream and the session's own endpoints,
    the bearer alone to open a session or rotate the token; none on the public paths and
    the dashboard's pages: as DESIGN sections 5, 6 and 10 say."""
    public = {"/health", "/ping", PATH, "/api/v1/health", "/api/v1/auth/bootstrap"}
    cookie_only = {"/api/v1/events", "/api/v1/session/check", "/api/v1/session/logout"}
    # `/metrics` too: a scraper has no session (open instead with `metrics.public`).
    bearer_only = {"/api/v1/session", "/api/v1/token/rotate", "/metrics"}
    for path, method, op in operations():
        names = {name for requirement in op["security"] for name in requirement}
        if path.startswith("/rpc/"):
            assert names == {"muxiKeyId", "muxiTimestamp", "muxiSignature", "muxiHmac"}, path
            alternatives = [set(requirement) for requirement in op["security"]]
            assert {"muxiHmac"} in alternatives, path
            assert "401" in op["responses"], path
        elif path in cookie_only:
            assert names == {"sessionCookie"}, path
        elif path in bearer_only:
            assert names == {"bearerAuth"}, path
        elif path.startswith("/api/v1/") and path not in public:
            assert names == {"bearerAuth", "sessionCookie"}, path
            assert len(op["security"]) == 2, f"either one, not both at once: {path}"
            if method != "get":
                assert "403" in op["responses"], f"the cross-site check's refusal: {path}"
        else:
            assert names == set(), f"{method} {path}"


async def test_the_document_is_served_without_auth(app: QuartTrio) -> None:
    response = await app.test_client().get(PATH)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert await response.get_json() == document()
