"""The OpenAPI 3.1 document of fsup's HTTP API, served (public) at `GET /openapi.json`.

A package: `kit` (helpers), `schemas`, `rpc_paths`, `api_paths`; built by helpers, not kept as JSON, so that what holds for a family of routes is written once;
each error response has the contract's shape with the codes the operation really returns.
tests/test_openapi.py keeps it equal to the routes; tests/test_schemathesis.py checks a server.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from quart import Blueprint, jsonify

from supervisor import __version__
from supervisor.core.doors import door_of
from supervisor.http.api_auth import CREDENTIAL_ANSWERS
from supervisor.http.openapi.api_paths import api_paths, proxy_paths, search_paths
from supervisor.http.openapi.dashboard_paths import dashboard_paths, dashboard_schemas
from supervisor.http.openapi.history_paths import history_paths, history_schemas
from supervisor.http.openapi.kit import (
    ANY_OBJECT,
    EITHER,
    PATH,
    PUBLIC,
    Schema,
    error,
    obj,
    ok,
    operation,
)
from supervisor.http.openapi.metrics_paths import metrics_paths
from supervisor.http.openapi.rpc_paths import rpc_paths
from supervisor.http.openapi.schemas import schemas
from supervisor.http.openapi.timeline_paths import timeline_paths, timeline_schemas

__all__ = ["PATH", "blueprint", "document"]


def api_key(where: str, name: str, description: str) -> Schema:
    return {"type": "apiKey", "in": where, "name": name, "description": description}


SECURITY_SCHEMES = {
    "muxiKeyId": api_key("header", "X-MUXI-Key-ID", "The key id of credentials.json"),
    "muxiTimestamp": api_key("header", "X-MUXI-Timestamp", "RFC3339 UTC, within 300 s"),
    "muxiSignature": api_key(
        "header", "X-MUXI-Signature", "base64(HMAC-SHA256(secret_key, canonical string))"
    ),
    "muxiHmac": api_key(
        "header",
        "Authorization",
        "MUXI-HMAC key=<key id>, timestamp=<unix s>, "
        "signature=base64(HMAC-SHA256(secret_key, '<ts>;<METHOD>;<path>'))",
    ),
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "server/api.token (64 hex characters)",
    },
    "sessionCookie": api_key("cookie", "rm_session", "Set by POST /api/v1/session"),
}


@cache
def document() -> dict[str, Any]:
    """The whole document (built once; it never changes while fsup runs)."""
    public = {
        "/health": ("health", "Liveness", obj({"status": {"const": "healthy"}})),
        "/ping": ("ping", "Ping", obj({"message": {"const": "pong"}})),
        PATH: ("openapi_document", "This document", ANY_OBJECT),
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "fsup",
            "version": __version__,
            "description": "A local, actor-based process supervisor. `/rpc/*` is the "
            "HMAC-signed management API (X-MUXI-* headers over `METHOD\\nPATH?QUERY\\nTIMESTAMP"
            "\\nBODY`, or Authorization: MUXI-HMAC over `<ts>;<METHOD>;<path>`; base64 "
            "HMAC-SHA256 with the secret key, timestamp within 300 s); `/api/v1/*` takes a "
            "bearer token from GET /api/v1/auth/bootstrap, the event stream the rm_session "
            'cookie. Errors: `{"error": {"code", "message", "details"}, "code", "message"}`. '
            "The dashboard (`/ui/`) uses the same /api/v1 with the session cookie; a call "
            "that changes something then needs the header `X-Fsup-Request` (cross-site check). "
            "`/api/v1`, `/ui`, `/openapi.json` and `/metrics` answer only under a `Host` that "
            "names this server (localhost, 127.0.0.1, [::1], any port, or a name listed in "
            "`http.allowed_hosts` of config.yaml): 403 FORBIDDEN otherwise (DNS rebinding). "
            "A credential header given twice is a 401; a WebSocket upgrade is a 400.",
        },
        "tags": [
            {"name": name}
            for name in (
                "public",
                "formations",
                "server",
                "searches",
                "auth",
                "events",
                "operations",
                "proxy",
                "dashboard",
                "metrics",
            )
        ],
        "paths": {
            **{
                path: {"get": operation(op_id, summary, "public", ok(summary, schema), {}, PUBLIC)}
                for path, (op_id, summary, schema) in public.items()
            },
            **rpc_paths(),
            **search_paths(),
            **api_paths(),
            **dashboard_paths(),
            **timeline_paths(),
            **history_paths(),
            **proxy_paths(),
            **metrics_paths(),
        },
        "components": {
            "schemas": {
                **schemas(),
                **dashboard_schemas(),
                **timeline_schemas(),
                **history_schemas(),
            },
            "securitySchemes": SECURITY_SCHEMES,
        },
    }
    _cross_site_refusals(doc["paths"])
    _host_refusals(doc["paths"])
    _no_store(doc["paths"])
    return doc


def _host_refusals(paths: dict[str, Any]) -> None:
    """Every operation of a browser-reachable route (`/api/v1`, `/ui`, this document) is
    refused under a Host that does not name this server (DNS rebinding): 403 FORBIDDEN."""
    for path, item in paths.items():
        if door_of(path).names_checked:
            for op in item.values():
                op["responses"].setdefault("403", error(["FORBIDDEN"]))
                op["responses"] = dict(sorted(op["responses"].items()))


def _no_store(paths: dict[str, Any]) -> None:
    """The answers that carry a credential say `Cache-Control: no-store`."""
    header = {
        "Cache-Control": {
            "description": "A credential is never kept by a cache",
            "schema": {"const": "no-store"},
        }
    }
    for path in CREDENTIAL_ANSWERS:
        for op in paths[path].values():
            for status, answer in op["responses"].items():
                if status.startswith("2"):
                    answer["headers"] = {**answer.get("headers", {}), **header}


def _cross_site_refusals(paths: dict[str, Any]) -> None:
    """An /api/v1 call that changes something and may ride on the session cookie can be
    refused by the cross-site check: 403 FORBIDDEN, added here once for all of them."""
    for item in paths.values():
        for method, op in item.items():
            if method in ("post", "put", "patch", "delete") and op.get("security") is EITHER:
                op["responses"].setdefault("403", error(["FORBIDDEN"]))
                op["responses"] = dict(sorted(op["responses"].items()))


async def openapi_document() -> Any:
    return jsonify(document())


def blueprint() -> Blueprint:
    """The public OpenAPI document."""
    bp = Blueprint("openapi", __name__)
    bp.get(PATH)(openapi_document)
    return bp
