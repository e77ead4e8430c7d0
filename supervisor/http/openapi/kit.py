"""Building blocks of the OpenAPI document: schema and operation helpers, shared constants."""

from __future__ import annotations

from typing import Any

from supervisor.core.search_states import STORED

PATH = "/openapi.json"
Schema = dict[str, Any]
Security = list[dict[str, list[str]]]

STR, INT, NUM, BOOL = ({"type": kind} for kind in ("string", "integer", "number", "boolean"))
ANY_OBJECT: Schema = {"type": "object"}
BINARY: Schema = {"type": "string", "format": "binary"}
STATES = ["starting", "running", "stopping", "stopped", "restarting", "crashed"]
SEARCH_STATES = [state.value for state in STORED]  # the contract's order
ID_PATTERN = "^[a-z0-9][a-z0-9-]{1,48}[a-z0-9]$"
# Printable text: no ASCII control characters (the handlers refuse any non-printable one).
PRINTABLE = "^[^\\x00-\\x1f\\x7f]*$"

HMAC: Security = [{"muxiKeyId": [], "muxiTimestamp": [], "muxiSignature": []}, {"muxiHmac": []}]
BEARER, COOKIE, PUBLIC = [{"bearerAuth": []}], [{"sessionCookie": []}], []  # type: Security, Security, Security
# /api/v1's REST calls: the bearer token, or the session cookie (the dashboard); with the
# cookie, a call that changes something also passes the cross-site check (403 otherwise).
EITHER: Security = [{"bearerAuth": []}, {"sessionCookie": []}]


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


# A formation's log routes take the same query, on /rpc and /api/v1.
LOG_QUERY = [
    int_query(
        "lines",
        0,
        10_000,
        100,
        "How many lines in all (not per stream): the last ones of the stream asked for, or of "
        "both merged by time",
    ),
    int_query("limit", 0, 10_000, 100, "Another name for lines (MUXI clients)"),
    param(
        "stream",
        "query",
        {**enum("all", "stdout", "stderr"), "default": "all"},
        "Which stream (all: both, merged in time order)",
    ),
    param(
        "follow",
        "query",
        {"type": "boolean", "default": False},
        "Stream new lines as SSE (also 1/0, yes/no)",
    ),
]
