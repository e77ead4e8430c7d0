"""`/api/v1/*` (searches, operations, auth, events, logs) and the proxy `/api/{id}/*`."""

from __future__ import annotations

from supervisor.http.openapi.kit import (
    BAD,
    BEARER,
    BOOL,
    COOKIE,
    EITHER,
    FORMATION_ID,
    INT,
    PRINTABLE,
    PUBLIC,
    RESULT_ID,
    SEARCH_404,
    SEARCH_ID,
    SSE,
    STR,
    Schema,
    array,
    closed,
    enum,
    int_query,
    json_body,
    json_response,
    maybe,
    obj,
    ok,
    operation,
    param,
    ref,
)


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
                EITHER,
            ),
            "post": operation(
                "create_search",
                "Create a search (optionally started at once)",
                "searches",
                ok("Created (SearchDetail)", ref("SearchDetail"), "201"),
                BAD,
                EITHER,
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
                EITHER,
                sid,
            ),
            "patch": operation(
                "patch_search",
                "Rename or pin a search",
                "searches",
                detail,
                {**BAD, **SEARCH_404},
                EITHER,
                sid,
                json_body(patch, required=True),
            ),
            "delete": operation(
                "delete_search",
                "Delete a search, its runs and results",
                "searches",
                ok("Deleted", ref("Deleted")),
                SEARCH_404,
                EITHER,
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
                EITHER,
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
                EITHER,
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
                EITHER,
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
                EITHER,
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
                EITHER,
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
                EITHER,
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
                EITHER,
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
                EITHER,
            )
        },
        "/api/v1/routing/refresh": {
            "post": operation(
                "routing_refresh",
                "Health-check every running formation now",
                "operations",
                ok("Probes started", obj({"refreshing": array(STR), "total": INT})),
                unavailable,
                EITHER,
            )
        },
        "/api/v1/nodes": {
            "get": operation(
                "nodes",
                "The supervised processes (psutil figures)",
                "operations",
                ok("A page of nodes", ref("NodePage")),
                {**BAD, **unavailable},
                EITHER,
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
                EITHER,
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
