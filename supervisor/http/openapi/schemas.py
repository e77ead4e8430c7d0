"""The document's named schemas (`components.schemas`): every body fsup answers."""

from __future__ import annotations

from supervisor.http.audit import AUTH_VALUES
from supervisor.http.openapi.kit import (
    ANY_OBJECT,
    BOOL,
    INT,
    NUM,
    SEARCH_STATES,
    STATES,
    STR,
    Schema,
    array,
    enum,
    maybe,
    obj,
    ref,
)

# Not a status: `status` stays the process's real state (`stopping` while a delete stops it).
DELETING: Schema = {
    **BOOL,
    "description": "true from an accepted delete until the formation is gone (then a 404); "
    "meanwhile every change of it answers 409 FORMATION_BUSY",
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
                "deleting": DELETING,
            }
        ),
        "UnansweredFormation": {
            **obj({"id": STR, "status": {"const": "unknown"}, "deleting": DELETING}),
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
                "lines": {
                    **array(ref("LogLine")),
                    "description": "Oldest first: every version's lines merged by `ts`, after "
                    "the lines of legacy files (`ts` and `version` null)",
                },
            },
            {
                "failed_deploy": {
                    **obj(
                        {
                            "formation_id": STR,
                            "version": STR,
                            "failed_at": STR,
                            "code": STR,
                            "message": STR,
                        }
                    ),
                    "description": "Only for an id that does not exist: the lines are the "
                    "kept log of its failed first deploy, kept until it is deployed again",
                }
            },
        ),
        "LogLine": obj(
            {
                "ts": {
                    **maybe(STR),
                    "description": "When the log keeper read the line from the process's "
                    "output (RFC 3339 UTC, microseconds; a line cut into fragments has its "
                    "first fragment's time); null for a line of a legacy file (stdout.log, "
                    "stderr.log, written by a process an older fsup started), whose time is "
                    "not known",
                },
                "stream": enum("stdout", "stderr"),
                "line": {
                    **STR,
                    "description": "The text, without its newline; cut at 16 KiB",
                },
                "version": {
                    **maybe(STR),
                    "description": "The version of the formation whose process wrote the "
                    "line (during an update, both versions write); null for a legacy line",
                },
            }
        ),
        "AuditLog": {
            **obj({"entries": array(ref("AuditEntry"))}),
            "description": "Every call that changes something, through /rpc, /api/v1 or the "
            "dashboard, and every /rpc call; refused ones included. Oldest first.",
        },
        "AuditEntry": obj(
            {
                "ts": STR,
                "key_id": {
                    **STR,
                    "description": "The /rpc key id the call names (empty "
                    "for /api/v1, and for a call that names none); unchecked for a refused call",
                },
                "auth": {
                    **enum(*AUTH_VALUES),
                    "description": "How the caller authenticated, or claimed to when "
                    "refused: hmac (the seed's X-MUXI-* signed headers), muxi-hmac "
                    "(Authorization: MUXI-HMAC), bearer (Authorization: Bearer, /api/v1), "
                    "session (the dashboard's rm_session cookie); empty when it sent no "
                    "credentials",
                },
                "method": STR,
                "path": STR,
                "status": {
                    **INT,
                    "description": "The answer's HTTP status; 499 (nginx's 'client closed "
                    "request') when the client went away or timed out before the answer; what "
                    "the call had set going goes on (a stop already asked for completes)",
                },
                "duration_ms": NUM,
                "remote_addr": STR,
            }
        ),
        "ServerStatus": obj(
            {
                "server_id": STR,
                "version": STR,
                "uptime_s": NUM,
                "formations": obj({"total": INT, "running": INT, "stopped": INT, "crashed": INT}),
                "ports": obj({"range": STR, "allocated": INT, "available": INT}),
            },
            {"log_keeper": ref("LogKeeperState")},
        ),
        "LogKeeperState": obj(
            {"connected": BOOL, "pipes": INT, "keepers_started": INT, "error": maybe(STR)}
        )
        | {
            "description": "Whether formations' output is stamped by the log keeper "
            "(`connected`), how many pipes fsup holds the read ends of, how many keepers "
            "this fsup started, and, while none can be had, why (`error`): their output then "
            "goes to the legacy stdout.log and stderr.log, lines without times."
        },
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
