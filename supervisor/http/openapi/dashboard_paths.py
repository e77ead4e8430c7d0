"""What the dashboard (DESIGN section 10) added: `/api/v1/formations`, the session's and the
server's endpoints, and the `/ui` pages themselves."""

from __future__ import annotations

from supervisor.http.openapi.kit import (
    BAD,
    BEARER,
    COOKIE,
    EITHER,
    FORMATION_ID,
    INT,
    LOG_QUERY,
    LOOKUP,
    NUM,
    PUBLIC,
    SSE,
    STATES,
    STR,
    Schema,
    closed,
    enum,
    json_body,
    json_response,
    maybe,
    obj,
    ok,
    operation,
    param,
    ref,
)

LEVELS = ("debug", "info", "warning", "error", "critical")
BUSY = ["UPDATE_IN_PROGRESS", "FORMATION_BUSY", "OPERATION_CANCELLED"]
# The errors of each lifecycle action, as /rpc's (a JSON answer once done; no SSE here).
ACTIONS: dict[str, tuple[str, list[str]]] = {
    "start": ("Start a stopped formation", ["FORMATION_ALREADY_RUNNING", *BUSY]),
    "stop": ("Stop a formation gracefully", ["FORMATION_NOT_RUNNING", "OPERATION_CANCELLED"]),
    "restart": ("Stop (when running), then start", BUSY),
    "rollback": ("Blue-green back to the previous version", ["NO_PREVIOUS_VERSION", *BUSY]),
}


def dashboard_schemas() -> dict[str, Schema]:
    figures = {"cpu_percent": maybe(NUM), "rss_bytes": maybe(INT)}
    view = {"allOf": [ref("Formation"), obj({}, figures)]}
    unanswered = {"allOf": [ref("UnansweredFormation"), obj({}, figures)]}
    counts = obj({state: INT for state in (*STATES, "unknown")})
    return {
        "FormationView": {
            **view,
            "description": "A formation with its process's CPU (% since the last look) and "
            "resident memory (null without a process).",
        },
        "FormationViewList": obj(
            {"formations": {"type": "array", "items": {"anyOf": [view, unanswered]}}, "total": INT}
        ),
        "Status": obj(
            {
                "server_id": STR,
                "version": STR,
                "uptime_s": NUM,
                "formations": obj({"total": INT, "by_state": counts}),
                "routes": ref("RoutingSummary"),
                "proxy": obj({"requests": INT, "responses": INT, "in_flight": INT, "holding": ANY}),
                "events": obj(
                    {
                        "subscribers": INT,
                        "dropped": INT,
                        "last_id": INT,
                        "history": INT,
                        "history_bytes": INT,
                    }
                ),
                "processes": {
                    "type": "object",
                    "additionalProperties": obj({}, {**figures, "uptime_s": maybe(NUM)}),
                },
            },
            {"log_keeper": ref("LogKeeperState")},
        ),
        "Settings": obj({"log_level": enum(*LEVELS)}),
    }


ANY: Schema = {"type": "object"}


def formation_paths() -> dict[str, Schema]:
    paths: dict[str, Schema] = {
        "/api/v1/formations": {
            "get": operation(
                "api_formations",
                "The fleet, with CPU and memory per process",
                "formations",
                ok("The formations", ref("FormationViewList")),
                {503: ["FORMATION_UNAVAILABLE"]},
                EITHER,
            )
        },
        "/api/v1/formations/{formation_id}": {
            "get": operation(
                "api_formation",
                "One formation, with CPU and memory",
                "formations",
                ok("The formation", ref("FormationView")),
                LOOKUP,
                EITHER,
                [FORMATION_ID],
            ),
            "delete": operation(
                "api_delete",
                "Stop and delete a formation, its files and logs",
                "formations",
                ok("Deleted", ref("Deleted")),
                LOOKUP,
                EITHER,
                [FORMATION_ID],
            ),
        },
        "/api/v1/formations/{formation_id}/logs": {
            "get": operation(
                "api_formation_logs",
                "The formation's captured stdout/stderr",
                "formations",
                {
                    "200": {
                        "description": "The last lines; with follow=true an SSE stream of "
                        "`event: log` (same line objects) until the formation is deleted",
                        "content": {
                            "application/json": {"schema": ref("FormationLogs")},
                            **SSE,
                        },
                    }
                },
                {**BAD, **LOOKUP},
                EITHER,
                [
                    FORMATION_ID,
                    *LOG_QUERY,
                ],
            )
        },
    }
    for action, (summary, conflicts) in ACTIONS.items():
        errors: dict[int, list[str]] = {
            404: ["FORMATION_NOT_FOUND"],
            409: conflicts,
            503: ["FORMATION_UNAVAILABLE"],
        }
        if action != "stop":
            errors.update(
                {
                    409: [*conflicts, "PORT_IN_USE"],
                    422: ["HEALTH_CHECK_FAILED"],
                    503: ["FORMATION_UNAVAILABLE", "PORTS_EXHAUSTED"],
                }
            )
        paths[f"/api/v1/formations/{{formation_id}}/{action}"] = {
            "post": operation(
                f"api_{action}",
                summary,
                "formations",
                ok("Done", ref("LifecycleResult")),
                errors,
                EITHER,
                [FORMATION_ID],
                description="Answers once the operation is done; its progress is on the "
                "event stream (formation_state_changed...).",
            )
        }
    return paths


def session_paths() -> dict[str, Schema]:
    expires = ok("The session is good", obj({"ok": {"const": True}, "expires_at": INT}))
    settings = ok("The settings now", ref("Settings"))
    return {
        "/api/v1/session/check": {
            "get": operation(
                "session_check", "Whether this session is good", "auth", expires, {}, COOKIE
            )
        },
        "/api/v1/session/logout": {
            "post": operation(
                "session_logout",
                "End this session on the server (a replayed cookie is refused)",
                "auth",
                ok("Ended", obj({"ok": {"const": True}})),
                {403: ["FORBIDDEN"]},
                COOKIE,
            )
        },
        "/api/v1/token/rotate": {
            "post": operation(
                "token_rotate",
                "A new bearer token; every session ends",
                "auth",
                ok(
                    "The new token",
                    obj(
                        {
                            "token": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                            "sessions_ended": {"const": True},
                        }
                    ),
                ),
                {},
                BEARER,
            )
        },
        "/api/v1/status": {
            "get": operation(
                "api_status",
                "The server at a glance (also a `status` event every 5 s)",
                "server",
                ok("Status", ref("Status")),
                {503: ["FORMATION_UNAVAILABLE"]},
                EITHER,
            )
        },
        "/api/v1/version": {
            "get": operation(
                "api_version",
                "fsup's version",
                "server",
                ok(
                    "Version",
                    obj({"version": STR, "api": {"const": "v1"}, "server_id": STR, "python": STR}),
                ),
                {},
                EITHER,
            )
        },
        "/api/v1/settings": {
            "get": operation("api_settings", "Settings", "server", settings, {}, EITHER),
            "patch": operation(
                "api_patch_settings",
                "Change settings now (until fsup stops)",
                "server",
                settings,
                BAD,
                EITHER,
                body=json_body(closed({"log_level": enum(*LEVELS)}), required=True),
            ),
        },
    }


def ui_paths() -> dict[str, Schema]:
    page = {
        "description": "A file of the dashboard",
        "content": {
            kind: {"schema": STR}
            for kind in ("text/html", "text/javascript", "text/css", "text/plain")
        },
    }
    missing = {404: ["NOT_FOUND"]}
    return {
        "/ui": {
            "get": operation(
                "ui_root",
                "Redirects to /ui/",
                "dashboard",
                {"308": {"description": "To /ui/", "headers": {"Location": {"schema": STR}}}},
                {},
                PUBLIC,
            )
        },
        "/ui/": {
            "get": operation(
                "ui_index",
                "The dashboard",
                "dashboard",
                {"200": {"description": "The page", "content": {"text/html": {"schema": STR}}}},
                {},
                PUBLIC,
            )
        },
        "/ui/{name}": {
            "get": operation(
                "ui_asset",
                "The dashboard's scripts and styles",
                "dashboard",
                {"200": page},
                missing,
                PUBLIC,
                [param("name", "path", {"type": "string", "minLength": 1}, "A file name")],
            )
        },
    }


def dashboard_paths() -> dict[str, Schema]:
    return {**formation_paths(), **session_paths(), **ui_paths()}


__all__ = ["dashboard_paths", "dashboard_schemas", "json_response"]
