"""The OpenAPI 3.1 document of fsup's HTTP API, served (public) at `GET /openapi.json`.

Built by helpers, not kept as JSON, so that what holds for a family of routes is written once;
each error response has the contract's shape with the codes the operation really returns.
tests/test_openapi.py keeps it equal to the routes; tests/test_schemathesis.py checks a server.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from quart import Blueprint, jsonify

from supervisor import __version__

PATH = "/openapi.json"
Schema = dict[str, Any]
Security = list[dict[str, list[str]]]

STR, INT, NUM, BOOL = ({"type": kind} for kind in ("string", "integer", "number", "boolean"))
ANY_OBJECT: Schema = {"type": "object"}
BINARY: Schema = {"type": "string", "format": "binary"}
STATES = ["starting", "running", "stopping", "stopped", "restarting", "crashed"]
SEARCH_STATES = ["idle", "running", "complete", "stopped", "error"]
ID_PATTERN = "^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$"
# Printable text: no ASCII control characters (the handlers refuse any non-printable one).
PRINTABLE = "^[^\\x00-\\x1f\\x7f]*$"

HMAC: Security = [{"muxiKeyId": [], "muxiTimestamp": [], "muxiSignature": []}, {"muxiHmac": []}]
BEARER, COOKIE, PUBLIC = [{"bearerAuth": []}], [{"sessionCookie": []}], []  # type: Security, Security, Security


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def maybe(schema: Schema) -> Schema:
    """`schema` or null (a process that is not running has no pid, no uptime...)."""
    return {"oneOf": [schema, {"type": "null"}]}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None) -> Schema:
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
    }


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def closed(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> Schema:
    """A request body object: the handlers refuse unknown fields with 400."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(required),
        "additionalProperties": False,
    }


def schemas() -> dict[str, Schema]:
    """Every response shape, as the handlers and actors build it (read from their code)."""
    status = enum(*STATES)
    search_state = enum(*SEARCH_STATES)
    run_summary = obj(
        {"run_id": STR, "state": STR, "mode": STR, "started_at": STR, "finished_at": maybe(STR)}
    )
    return {
        "Error": obj(
            {
                "error": obj({"code": STR, "message": STR, "details": ANY_OBJECT}),
                "code": STR,
                "message": STR,
            }
        ),
        "Formation": obj(
            {
                "id": STR,
                "version": STR,
                "description": STR,
                "status": status,
                "port": INT,
                "pid": maybe(INT),
                "healthy": maybe(BOOL),
                "restart_count": INT,
                "uptime_s": maybe(NUM),
                "created_at": maybe(STR),
                "updated_at": maybe(STR),
                "desired": maybe(enum("running", "stopped")),
                "versions": array(STR),
                "update_in_progress": BOOL,
                "last_exit_code": maybe(INT),
                "last_error": maybe(STR),
            }
        ),
        "UnansweredFormation": {
            **obj({"id": STR, "status": {"const": "unknown"}}),
            "description": "A formation whose actor did not answer in time (listing only).",
        },
        "FormationList": obj(
            {
                "formations": array({"anyOf": [ref("Formation"), ref("UnansweredFormation")]}),
                "total": INT,
            }
        ),
        "LifecycleResult": {
            **obj(
                {
                    "formation_id": STR,
                    "status": status,
                    "port": INT,
                    "version": STR,
                    "pid": maybe(INT),
                    "healthy": maybe(BOOL),
                },
                {"previous_version": STR},
            ),
            "description": "The answer of deploy, update, start, stop, restart and rollback: "
            "the data of the `complete` event of the same operation streamed as SSE; "
            "`previous_version` after an update or a rollback.",
        },
        "Deleted": obj({"id": STR, "deleted": {"const": True}}),
        "CancelUpdate": obj(
            {"formation_id": STR, "cancelled": BOOL}, {"message": STR, "version": STR}
        ),
        "FormationLogs": obj(
            {
                "formation_id": STR,
                "lines": array(
                    obj({"ts": maybe(STR), "stream": enum("stdout", "stderr"), "line": STR})
                ),
            }
        ),
        "AuditLog": obj(
            {
                "entries": array(
                    obj(
                        {
                            "ts": STR,
                            "key_id": STR,
                            "method": STR,
                            "path": STR,
                            "status": INT,
                            "duration_ms": NUM,
                            "remote_addr": STR,
                            "scheme": STR,
                        }
                    )
                )
            }
        ),
        "ServerStatus": obj(
            {
                "server_id": STR,
                "version": STR,
                "uptime_s": NUM,
                "formations": obj({"total": INT, "running": INT, "stopped": INT, "crashed": INT}),
                "ports": obj({"range": STR, "allocated": INT, "available": INT}),
            }
        ),
        "Result": obj(
            {
                "result_id": STR,
                "kind": enum("log", "peer"),
                "title": STR,
                "sources": array(STR),
                "first_seen": STR,
            },
            {"snippet": STR, "size": INT, "score": NUM},
        ),
        "Search": obj(
            {
                "id": STR,
                "keyword": STR,
                "state": search_state,
                "mode": enum("full", "live"),
                "pinned": BOOL,
                "active_run_id": maybe(STR),
                "created_at": STR,
                "updated_at": STR,
            }
        ),
        "SearchList": obj(
            {
                "searches": array(
                    obj(
                        {
                            "id": STR,
                            "keyword": STR,
                            "state": search_state,
                            "updated_at": STR,
                            "pinned": BOOL,
                            "summary": obj(
                                {
                                    "hits": INT,
                                    "peers_contacted": INT,
                                    "progress": NUM,
                                    "errors": INT,
                                }
                            ),
                        }
                    )
                )
            }
        ),
        "SearchDetail": obj(
            {
                "search": {"allOf": [ref("Search"), obj({"last_run_summary": maybe(run_summary)})]},
                "telemetry": obj(
                    {
                        "peers": INT,
                        "peers_done": INT,
                        "requests": INT,
                        "responses": INT,
                        "drops": INT,
                        "hits": INT,
                        "rates": obj({"requests_per_s": NUM, "hits_per_s": NUM}),
                    }
                ),
                "progress": obj({"phase": STR, "percent": NUM}, {"started_at": STR}),
                "results": obj({"count": INT, "top": array(ref("Result"))}),
                "activity": array(obj({"id": INT, "type": STR, "ts": STR})),
            }
        ),
        "ResultPage": obj(
            {"items": array(ref("Result")), "total": INT, "limit": INT, "offset": INT}
        ),
        "SearchExport": obj(
            {"search": ref("Search"), "results": array(ref("Result")), "total": INT}
        ),
        "RoutingSummary": obj(
            {
                "routes": INT,
                "serving": INT,
                "healthy": INT,
                "stale": INT,
                "refresh_age_s": obj({"min": maybe(NUM), "median": maybe(NUM), "max": maybe(NUM)}),
            }
        ),
        "NodePage": obj(
            {
                "nodes": array(
                    obj(
                        {
                            "formation_id": STR,
                            "role": enum("active", "staging"),
                            "pid": INT,
                            "port": INT,
                            "state": STR,
                            "healthy": maybe(BOOL),
                            "restart_count": INT,
                            "last_health_check_age_s": maybe(NUM),
                            "cpu_percent": maybe(NUM),
                            "rss_bytes": maybe(INT),
                            "uptime_s": maybe(NUM),
                        }
                    )
                ),
                "total": INT,
                "limit": INT,
                "offset": INT,
            }
        ),
        "LogPage": obj(
            {
                "items": array(
                    obj({"id": INT, "ts": STR, "level": STR, "logger": STR, "message": STR})
                ),
                "next_cursor": INT,
            }
        ),
    }


def json_response(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def ok(description: str, schema: Schema, status: str = "200") -> dict[str, Schema]:
    return {status: json_response(description, schema)}


def error(codes: list[str]) -> Schema:
    """An error response whose `error.code` is one of `codes`."""
    schema = {
        "allOf": [
            ref("Error"),
            {"properties": {"error": {"properties": {"code": {"enum": codes}}}}},
        ]
    }
    return json_response(" or ".join(codes), schema)


SSE = {"text/event-stream": {"schema": STR}}
STREAM_NOTE = (
    "With `Accept: text/event-stream` the answer is a stream of `event: progress` (the seed's "
    'stages in order; stages that do not apply are sent with `"skipped": true`), then one '
    "`event: complete` (data as the JSON answer) or `event: error` (`{code, message, stage, "
    "details}`); every event has an `id:`, and quiet streams get heartbeat comments."
)


def operation(
    op_id: str,
    summary: str,
    tag: str,
    responses: dict[str, Schema],
    errors: dict[int, list[str]],
    security: Security,
    parameters: list[Schema] | None = None,
    body: Schema | None = None,
    description: str = "",
) -> Schema:
    """One operation. Errors common to a whole family are added here: authenticated calls can
    be refused (401); signed `/rpc` calls read the body to check it, under a size bound (413)
    and a read deadline (408), as do operations with a body; every handler can fail
    unexpectedly (500 INTERNAL in the contract's shape, never a bare traceback)."""
    errors = dict(errors)
    if security:
        errors.setdefault(401, ["UNAUTHORIZED"])
    if security is HMAC or body is not None:
        errors.setdefault(408, ["INVALID_REQUEST"])
        errors.setdefault(413, ["PAYLOAD_TOO_LARGE"])
    errors.setdefault(500, ["INTERNAL"])
    item: Schema = {
        "operationId": op_id,
        "summary": summary,
        "tags": [tag],
        "security": security,
        "responses": {
            **responses,
            **{str(code): error(codes) for code, codes in sorted(errors.items())},
        },
    }
    optional = {"description": description, "parameters": parameters, "requestBody": body}
    return {**item, **{key: value for key, value in optional.items() if value}}


def param(name: str, where: str, schema: Schema, description: str) -> Schema:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "description": description,
        "schema": schema,
    }


def int_query(name: str, low: int, high: int, default: int, description: str) -> Schema:
    return param(
        name,
        "query",
        {"type": "integer", "minimum": low, "maximum": high, "default": default},
        description,
    )


FORMATION_ID = param(
    "formation_id",
    "path",
    {"type": "string", "pattern": ID_PATTERN},
    "The formation's id (from its formation.yaml)",
)
SEARCH_ID, RESULT_ID = (
    param(
        f"{kind}_id", "path", {"type": "string", "minLength": 1}, f"A {kind} id, as the API gave it"
    )
    for kind in ("search", "result")
)
LOOKUP, BAD = (
    {404: ["FORMATION_NOT_FOUND"], 503: ["FORMATION_UNAVAILABLE"]},
    {400: ["INVALID_REQUEST"]},
)
# An id with an encoded slash reaches no route of this family: the contract's NOT_FOUND.
SEARCH_404 = {404: ["SEARCH_NOT_FOUND", "NOT_FOUND"]}
BUNDLE_BODY = {
    "required": True,
    "description": "The bundle's raw bytes (never empty): a .tar.gz or a .zip of the "
    "formation folder (one top-level folder is stripped). Also accepted as Content-Type: "
    "application/x-gzip, application/x-tar, application/x-gtar, "
    "application/x-zip-compressed, application/octet-stream, or none.",
    "content": {
        kind: {"schema": {**BINARY, "minLength": 1}}
        for kind in ("application/gzip", "application/zip")
    },
}


def json_body(schema: Schema, required: bool) -> Schema:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


def lifecycle(action: str, summary: str, conflicts: list[str]) -> Schema:
    """Deploy, update, start, stop, restart, rollback: JSON once done, or an SSE stream."""
    from_bundle = action in ("deploy", "deploy_alias", "update")
    done = json_response("Done (JSON, without Accept: text/event-stream)", ref("LifecycleResult"))
    if action.startswith("deploy"):  # 201 once done; a stream always starts with 200
        responses = {
            "201": done,
            "200": {
                "description": "The progress stream (Accept: text/event-stream)",
                "content": SSE,
            },
        }
    else:
        responses = {"200": {**done, "content": {**done["content"], **SSE}}}
    errors: dict[int, list[str]] = {409: conflicts, 503: ["FORMATION_UNAVAILABLE"]}
    if from_bundle:
        errors[400] = ["INVALID_BUNDLE", "INVALID_FORMATION"]
    if action != "stop":
        errors[409] = [*conflicts, "PORT_IN_USE"]
        errors[422] = ["HEALTH_CHECK_FAILED"]
        errors[503] = ["FORMATION_UNAVAILABLE", "PORTS_EXHAUSTED"]
    if not action.startswith("deploy"):
        errors[404] = ["FORMATION_NOT_FOUND"]
    parameters = (
        [FORMATION_ID]
        if not action.startswith("deploy")
        else [
            param(
                "X-Formation-ID", "header", STR, "When given, must equal the id in formation.yaml"
            )
        ]
    )
    return operation(
        action,
        summary,
        "formations",
        responses,
        errors,
        HMAC,
        parameters,
        BUNDLE_BODY if from_bundle else None,
        STREAM_NOTE,
    )


def rpc_paths() -> dict[str, Schema]:
    """Seed 000's management API (DESIGN section 5)."""
    created = ["FORMATION_ALREADY_EXISTS", "OPERATION_CANCELLED"]
    busy = ["UPDATE_IN_PROGRESS", "FORMATION_BUSY", "OPERATION_CANCELLED"]
    logs = {
        "description": "The last lines; with follow=true an SSE stream of `event: log` "
        "(same line objects) until the formation is deleted",
        "content": {"application/json": {"schema": ref("FormationLogs")}, **SSE},
    }
    download = {
        "description": "A zip of the version's folder (data/ and memory.db only with db=true)",
        "headers": {"Content-Disposition": {"schema": STR}},
        "content": {"application/zip": {"schema": BINARY}},
    }
    return {
        "/rpc/formations/deploy": {
            "post": lifecycle("deploy", "Deploy a new formation from a bundle", created)
        },
        "/rpc/formations": {
            "get": operation(
                "list_formations",
                "List formations",
                "formations",
                ok("The formations", ref("FormationList")),
                {503: ["FORMATION_UNAVAILABLE"]},
                HMAC,
            ),
            "post": lifecycle(
                "deploy_alias", "Deploy a new formation (alias of /rpc/formations/deploy)", created
            ),
        },
        "/rpc/formations/{formation_id}": {
            "get": operation(
                "get_formation",
                "One formation",
                "formations",
                ok("The formation", ref("Formation")),
                LOOKUP,
                HMAC,
                [FORMATION_ID],
            ),
            "put": lifecycle(
                "update",
                "Update a formation to a higher version, blue-green",
                ["VERSION_NOT_HIGHER", *busy],
            ),
            "delete": operation(
                "delete",
                "Stop and delete a formation, its files and logs",
                "formations",
                ok("Deleted", ref("Deleted")),
                LOOKUP,
                HMAC,
                [FORMATION_ID],
            ),
        },
        "/rpc/formations/{formation_id}/start": {
            "post": lifecycle(
                "start",
                "Start a stopped formation",
                ["FORMATION_ALREADY_RUNNING", "OPERATION_CANCELLED"],
            )
        },
        "/rpc/formations/{formation_id}/stop": {
            "post": lifecycle("stop", "Stop a formation gracefully", ["FORMATION_NOT_RUNNING"])
        },
        "/rpc/formations/{formation_id}/restart": {
            "post": lifecycle("restart", "Stop (when running), then start", ["OPERATION_CANCELLED"])
        },
        "/rpc/formations/{formation_id}/rollback": {
            "post": lifecycle(
                "rollback",
                "Blue-green back to the previous version",
                ["NO_PREVIOUS_VERSION", *busy],
            )
        },
        "/rpc/formations/{formation_id}/cancel-update": {
            "post": operation(
                "cancel_update",
                "Abort an update or rollback that has not swapped yet",
                "formations",
                ok("Whether it was cancelled", ref("CancelUpdate")),
                LOOKUP,
                HMAC,
                [FORMATION_ID],
            )
        },
        "/rpc/formations/{formation_id}/logs": {
            "get": operation(
                "logs",
                "The formation's captured stdout/stderr",
                "formations",
                {"200": logs},
                {**BAD, **LOOKUP},
                HMAC,
                [
                    FORMATION_ID,
                    int_query("lines", 0, 10_000, 100, "How many lines per stream"),
                    int_query("limit", 0, 10_000, 100, "Another name for lines (MUXI clients)"),
                    param(
                        "stream",
                        "query",
                        {**enum("all", "stdout", "stderr"), "default": "all"},
                        "Which stream",
                    ),
                    param(
                        "follow",
                        "query",
                        {"type": "boolean", "default": False},
                        "Stream new lines as SSE (also 1/0, yes/no)",
                    ),
                ],
            )
        },
        "/rpc/formations/{formation_id}/download": {
            "get": operation(
                "download",
                "The current version as a zip",
                "formations",
                {"200": download},
                {**BAD, **LOOKUP},
                HMAC,
                [
                    FORMATION_ID,
                    param(
                        "db",
                        "query",
                        {"type": "boolean", "default": False},
                        "Include the runtime state (data/, memory.db)",
                    ),
                ],
            )
        },
        "/rpc/server/logs": {
            "get": operation(
                "audit_log",
                "The audit trail of /rpc calls, oldest first",
                "server",
                ok("Audit entries", ref("AuditLog")),
                BAD,
                HMAC,
                [
                    int_query("lines", 1, 10_000, 100, "How many entries"),
                    int_query("limit", 1, 10_000, 100, "Another name for lines (MUXI clients)"),
                ],
            )
        },
        "/rpc/server/status": {
            "get": operation(
                "status",
                "Server status: formations by state, ports",
                "server",
                ok("Status", ref("ServerStatus")),
                {503: ["FORMATION_UNAVAILABLE"]},
                HMAC,
            )
        },
    }


def search_paths() -> dict[str, Schema]:
    """Seed 003's searches (DESIGN sections 6 and 8). Optional body fields may be null
    (taken as absent), as the handlers read them."""
    detail = ok("The search (SearchDetail)", ref("SearchDetail"))
    mode = enum("full", "live")
    keyword = {
        "type": "string",
        "minLength": 1,
        "maxLength": 200,
        "pattern": PRINTABLE,
        "description": "Printable text with at least one non-space character",
    }
    mode_body = json_body(closed({"mode": maybe(mode)}), required=False)
    sid = [SEARCH_ID]
    create = closed(
        {"keyword": keyword, "autostart": maybe(BOOL), "mode": maybe(mode)}, ("keyword",)
    )
    patch = closed({"keyword": maybe(keyword), "pinned": maybe(BOOL)})
    return {
        "/api/v1/searches": {
            "get": operation(
                "list_searches",
                "All searches (the sidebar)",
                "searches",
                ok("Searches", ref("SearchList")),
                {},
                BEARER,
            ),
            "post": operation(
                "create_search",
                "Create a search (optionally started at once)",
                "searches",
                ok("Created (SearchDetail)", ref("SearchDetail"), "201"),
                BAD,
                BEARER,
                body=json_body(create, required=True),
            ),
        },
        "/api/v1/searches/{search_id}": {
            "get": operation(
                "get_search",
                "One search with telemetry, progress, results",
                "searches",
                detail,
                SEARCH_404,
                BEARER,
                sid,
            ),
            "patch": operation(
                "patch_search",
                "Rename or pin a search",
                "searches",
                detail,
                {**BAD, **SEARCH_404},
                BEARER,
                sid,
                json_body(patch, required=True),
            ),
            "delete": operation(
                "delete_search",
                "Delete a search, its runs and results",
                "searches",
                ok("Deleted", ref("Deleted")),
                SEARCH_404,
                BEARER,
                sid,
            ),
        },
        "/api/v1/searches/{search_id}/start": {
            "post": operation(
                "start_search",
                "Start a search (idempotent: a running one is left running)",
                "searches",
                detail,
                {**BAD, **SEARCH_404},
                BEARER,
                sid,
                mode_body,
            )
        },
        "/api/v1/searches/{search_id}/stop": {
            "post": operation(
                "stop_search",
                "Stop a search (idempotent)",
                "searches",
                detail,
                {**BAD, **SEARCH_404},
                BEARER,
                sid,
                json_body(closed({}), required=False),
            )
        },
        "/api/v1/searches/{search_id}/rerun": {
            "post": operation(
                "rerun_search",
                "Clear the results and start a new run",
                "searches",
                detail,
                {**BAD, **SEARCH_404},
                BEARER,
                sid,
                mode_body,
            )
        },
        "/api/v1/searches/{search_id}/export": {
            "post": operation(
                "export_search",
                "The search and all its results",
                "searches",
                ok("Export", ref("SearchExport")),
                SEARCH_404,
                BEARER,
                sid,
            )
        },
        "/api/v1/searches/{search_id}/results": {
            "get": operation(
                "results",
                "A page of results",
                "searches",
                ok("Results", ref("ResultPage")),
                {**BAD, **SEARCH_404},
                BEARER,
                [
                    SEARCH_ID,
                    int_query("limit", 1, 500, 50, "Page size"),
                    int_query("offset", 0, 10_000_000, 0, "Results to skip"),
                    param(
                        "sort",
                        "query",
                        {**enum("sources", "size", "score", "recent"), "default": "sources"},
                        "Order",
                    ),
                    param(
                        "q",
                        "query",
                        {"type": "string", "maxLength": 200, "pattern": PRINTABLE},
                        "Only results whose title or snippet contains this (case-insensitive)",
                    ),
                ],
            )
        },
        "/api/v1/searches/{search_id}/results/{result_id}": {
            "get": operation(
                "result",
                "One result",
                "searches",
                ok("Result", ref("Result")),
                {404: ["SEARCH_NOT_FOUND", "RESULT_NOT_FOUND", "NOT_FOUND"]},
                BEARER,
                [SEARCH_ID, RESULT_ID],
            )
        },
    }


def api_paths() -> dict[str, Schema]:
    """Seed 003's auth, operations, logs and events (DESIGN sections 6 and 7)."""
    unavailable = {503: ["FORMATION_UNAVAILABLE"]}
    session = json_response("Session opened", obj({"ok": {"const": True}, "expires_at": INT}))
    session["headers"] = {
        "Set-Cookie": {
            "description": "rm_session=...; HttpOnly; SameSite=Strict; Path=/api/v1",
            "schema": STR,
        }
    }
    events = {
        "description": "Events `{type, ts, search_id, data}`, each with a monotonic "
        "`id:`; heartbeat comments every 15 s of quiet",
        "content": SSE,
    }
    return {
        "/api/v1/health": {
            "get": operation(
                "api_health",
                "Liveness of the /api/v1 side",
                "public",
                ok("Up", obj({"ok": {"const": True}})),
                {},
                PUBLIC,
            )
        },
        "/api/v1/auth/bootstrap": {
            "get": operation(
                "api_bootstrap",
                "The bearer token (loopback peers only, by socket address)",
                "auth",
                ok("The token", obj({"token": {"type": "string", "pattern": "^[0-9a-f]{64}$"}})),
                {403: ["FORBIDDEN"]},
                PUBLIC,
            )
        },
        "/api/v1/session": {
            "post": operation(
                "api_session",
                "Open a browser session: sets the rm_session cookie",
                "auth",
                {"200": session},
                {},
                BEARER,
            )
        },
        "/api/v1/events": {
            "get": operation(
                "api_events",
                "The event stream (SSE; session cookie only)",
                "events",
                {"200": events},
                BAD,
                COOKIE,
                [
                    param(
                        "Last-Event-ID",
                        "header",
                        {"type": "string", "pattern": "^[0-9]{1,19}$"},
                        "Resume after this event id (from the bounded history)",
                    )
                ],
            )
        },
        "/api/v1/logs": {
            "get": operation(
                "api_logs",
                "The server's own log records, paged",
                "operations",
                ok("A page of records", ref("LogPage")),
                BAD,
                BEARER,
                [
                    param(
                        "level",
                        "query",
                        {
                            **enum("debug", "info", "warning", "error", "critical"),
                            "default": "info",
                        },
                        "Records at this level or above",
                    ),
                    int_query("limit", 1, 1000, 200, "Page size"),
                    int_query("cursor", 0, 2**62, 0, "Records after this id (next_cursor)"),
                ],
            )
        },
        "/api/v1/routing/summary": {
            "get": operation(
                "routing_summary",
                "The proxy's routing table in figures",
                "operations",
                ok("Summary", ref("RoutingSummary")),
                {},
                BEARER,
            )
        },
        "/api/v1/routing/refresh": {
            "post": operation(
                "routing_refresh",
                "Health-check every running formation now",
                "operations",
                ok("Probes started", obj({"refreshing": array(STR), "total": INT})),
                unavailable,
                BEARER,
            )
        },
        "/api/v1/nodes": {
            "get": operation(
                "nodes",
                "The supervised processes (psutil figures)",
                "operations",
                ok("A page of nodes", ref("NodePage")),
                {**BAD, **unavailable},
                BEARER,
                [
                    int_query("limit", 1, 1000, 100, "Page size"),
                    int_query("offset", 0, 1_000_000, 0, "Nodes to skip"),
                ],
            )
        },
        "/api/v1/bootstrap": {
            "post": operation(
                "bootstrap_fleet",
                "Reconcile the store with the running processes",
                "operations",
                ok("Reconciled", obj({"formations": INT, "strays_killed": INT})),
                unavailable,
                BEARER,
            )
        },
    }


def proxy_paths() -> dict[str, Schema]:
    """`/api/{id}` and `/api/{id}/{rest}`: whatever the formation answers, plus fsup's own
    errors (400 for an ambiguous encoding of the id or path, 408 for a stalled body)."""
    rest = param(
        "rest",
        "path",
        STR,
        "The path passed on to the formation, as sent: may be empty or hold further slashes",
    )
    errors = {
        400: ["INVALID_REQUEST"],
        404: ["FORMATION_NOT_FOUND"],
        408: ["INVALID_REQUEST"],
        502: ["BAD_GATEWAY"],
        503: ["FORMATION_NOT_RUNNING"],
    }
    paths: dict[str, Schema] = {}
    for suffix, endpoint, parameters in (
        ("", "proxy_root", [FORMATION_ID]),
        ("/{rest}", "proxy", [FORMATION_ID, rest]),
    ):
        paths[f"/api/{{formation_id}}{suffix}"] = {
            method: operation(
                f"{endpoint}_{method}",
                "Proxied to the formation's active process",
                "proxy",
                {"default": {"description": "The formation's own answer"}},
                errors,
                PUBLIC,
                parameters,
                description="Method, query, headers and body are streamed both ways "
                "to http://127.0.0.1:<port>/<rest>; X-Forwarded-For/Proto/Host and X-Formation-ID "
                "are set. Authentication, if any, is the formation's own.",
            )
            for method in ("get", "post", "put", "patch", "delete", "head", "options")
        }
    return paths


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
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fsup",
            "version": __version__,
            "description": "A local, actor-based process supervisor. `/rpc/*` is the "
            "HMAC-signed management API (X-MUXI-* headers over `METHOD\\nPATH?QUERY\\nTIMESTAMP"
            "\\nBODY`, or Authorization: MUXI-HMAC over `<ts>;<METHOD>;<path>`; base64 "
            "HMAC-SHA256 with the secret key, timestamp within 300 s); `/api/v1/*` takes a "
            "bearer token from GET /api/v1/auth/bootstrap, the event stream the rm_session "
            'cookie. Errors: `{"error": {"code", "message", "details"}, "code", "message"}`.',
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
            **proxy_paths(),
        },
        "components": {"schemas": schemas(), "securitySchemes": SECURITY_SCHEMES},
    }


def blueprint() -> Blueprint:
    """The public OpenAPI document."""
    bp = Blueprint("openapi", __name__)

    @bp.get(PATH)
    async def openapi_document() -> Any:
        return jsonify(document())

    return bp
