"""`/rpc/*` in the OpenAPI document: the seed's signed management API."""

from __future__ import annotations

from supervisor.http.openapi.kit import (
    BAD,
    BINARY,
    FORMATION_ID,
    HMAC,
    LOG_QUERY,
    LOOKUP,
    SSE,
    STR,
    Schema,
    int_query,
    lifecycle,
    ok,
    operation,
    param,
    ref,
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
                ["FORMATION_ALREADY_RUNNING", *busy],
            )
        },
        "/rpc/formations/{formation_id}/stop": {
            "post": lifecycle(
                "stop",
                "Stop a formation gracefully",
                # OPERATION_CANCELLED: a restart overtook the stop before it ended.
                ["FORMATION_NOT_RUNNING", "OPERATION_CANCELLED"],
            )
        },
        "/rpc/formations/{formation_id}/restart": {
            "post": lifecycle("restart", "Stop (when running), then start", busy)
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
                    *LOG_QUERY,
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
                "The audit trail: every change through /rpc, /api/v1 or the dashboard, every "
                "/rpc call, oldest first",
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
