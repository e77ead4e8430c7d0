"""`/api/v1/searches`: create, list, get, patch, delete; start, stop, rerun, export;
results. Handlers validate, then ask the searches actor. Bodies are parsed by
`safe_json.loads_object` (bounded size and depth), every field's type is checked, and a
refusal names the field or query parameter."""

from __future__ import annotations

from typing import Any

import trio
from quart import Blueprint, request

from actors.base import ActorCrashed, ActorError, ActorRef
from actors.search import (
    CreateSearch,
    DeleteSearch,
    ExportSearch,
    GetSearch,
    ListSearches,
    PatchSearch,
    SearchResult,
    SearchResults,
    StartSearch,
    StopSearch,
)
from supervisor.core.errors import FsupError
from supervisor.core.safe_json import MAX_JSON_BYTES, bad_request, loads_object, query_int, shown
from supervisor.http.api_v1 import api_auth_hook
from supervisor.http.params import choice_param
from supervisor.http.services import services
from supervisor.storage.store import RESULT_ORDERS

PREFIX = "/api/v1/searches"
MODES = ("full", "live")
SORTS = tuple(RESULT_ORDERS)
MAX_KEYWORD = 200
ASK_TIMEOUT_S = 10.0


def searches() -> ActorRef:
    ref = services().searches
    if ref is None:
        raise FsupError("INTERNAL", "this server runs no searches actor")
    return ref


async def ask(message: Any) -> Any:
    try:
        with trio.fail_after(ASK_TIMEOUT_S):
            return await searches().ask(message)
    except ActorCrashed:
        # A bug inside the actor: logged there with its traceback; the actor is restarted.
        raise FsupError(
            "INTERNAL",
            "the searches actor failed while handling the request and was restarted; retry",
        ) from None
    except (ActorError, trio.TooSlowError):
        raise FsupError("INTERNAL", "the searches actor did not answer; retry") from None


async def json_body(allowed: set[str], required: bool = True) -> dict[str, Any]:
    """The request's JSON object, with only `allowed` fields. A declared length over the
    limit is refused before the body is read."""
    declared = request.content_length
    if declared is not None and declared > MAX_JSON_BYTES:
        raise FsupError(
            "PAYLOAD_TOO_LARGE", f"the request body is larger than {MAX_JSON_BYTES} bytes"
        )
    raw = await request.get_data(cache=True, as_text=False, parse_form_data=False)
    if not raw.strip():
        if required:
            raise bad_request("the request body must be a JSON object")
        return {}
    body = loads_object(raw)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise bad_request(
            f"unknown field {shown(unknown[0])} (allowed: {', '.join(sorted(allowed))})",
            unknown[0][:64],
        )
    return body


def keyword_of(body: dict[str, Any], required: bool) -> str | None:
    keyword = body.get("keyword")
    if keyword is None and not required:
        return None
    if not isinstance(keyword, str) or not keyword.strip():
        raise bad_request("'keyword' must be a non-empty string", "keyword")
    if len(keyword) > MAX_KEYWORD:
        raise bad_request(f"'keyword' is longer than {MAX_KEYWORD} characters", "keyword")
    if not keyword.isprintable():
        raise bad_request("'keyword' must not contain control characters or line breaks", "keyword")
    return keyword.strip()


def flag(body: dict[str, Any], name: str) -> bool | None:
    value = body.get(name)
    if value is not None and not isinstance(value, bool):
        raise bad_request(f"{name!r} must be true or false", name)
    return value


def mode_of(body: dict[str, Any]) -> str | None:
    mode = body.get("mode")
    if mode is not None and (not isinstance(mode, str) or mode not in MODES):
        raise bad_request(f"'mode' must be one of {', '.join(MODES)}", "mode")
    return mode


async def list_searches() -> Any:
    return {"searches": await ask(ListSearches())}


async def create_search() -> Any:
    body = await json_body({"keyword", "autostart", "mode"})
    keyword = keyword_of(body, required=True)
    assert keyword is not None
    message = CreateSearch(keyword, mode_of(body) or "full", bool(flag(body, "autostart")))
    return await ask(message), 201


async def get_search(search_id: str) -> Any:
    return await ask(GetSearch(search_id))


async def patch_search(search_id: str) -> Any:
    body = await json_body({"keyword", "pinned"})
    return await ask(PatchSearch(search_id, keyword_of(body, False), flag(body, "pinned")))


async def delete_search(search_id: str) -> Any:
    return await ask(DeleteSearch(search_id))


async def start_search(search_id: str) -> Any:
    body = await json_body({"mode"}, required=False)
    return await ask(StartSearch(search_id, mode_of(body)))


async def stop_search(search_id: str) -> Any:
    """Takes no field, but a body, if sent, must still be an empty JSON object."""
    await json_body(set(), required=False)
    return await ask(StopSearch(search_id))


async def rerun_search(search_id: str) -> Any:
    body = await json_body({"mode"}, required=False)
    return await ask(StartSearch(search_id, mode_of(body), rerun=True))


async def export_search(search_id: str) -> Any:
    return await ask(ExportSearch(search_id))


async def results(search_id: str) -> Any:
    """A page of a search's results; `q` filters them, so it is held to a keyword's bounds."""
    q = request.args.get("q")
    if q is not None and (len(q) > MAX_KEYWORD or not q.isprintable()):
        raise FsupError(
            "INVALID_REQUEST",
            f"query parameter 'q' must be at most {MAX_KEYWORD} printable characters",
            {"parameter": "q"},
        )
    return await ask(
        SearchResults(
            search_id,
            limit=query_int(request.args, "limit", 50, 1, 500),
            offset=query_int(request.args, "offset", 0, 0, 10_000_000),
            sort=choice_param("sort", SORTS, "sources"),
            q=q or None,
        )
    )


async def result(search_id: str, result_id: str) -> Any:
    return await ask(SearchResult(search_id, result_id))


def blueprint() -> Blueprint:
    """`/api/v1/searches`, behind `/api/v1`'s bearer token."""
    bp = Blueprint("searches", __name__)
    bp.before_request(api_auth_hook)
    bp.get(PREFIX)(list_searches)
    bp.post(PREFIX)(create_search)
    bp.get(f"{PREFIX}/<search_id>")(get_search)
    bp.patch(f"{PREFIX}/<search_id>")(patch_search)
    bp.delete(f"{PREFIX}/<search_id>")(delete_search)
    bp.post(f"{PREFIX}/<search_id>/start")(start_search)
    bp.post(f"{PREFIX}/<search_id>/stop")(stop_search)
    bp.post(f"{PREFIX}/<search_id>/rerun")(rerun_search)
    bp.post(f"{PREFIX}/<search_id>/export")(export_search)
    bp.get(f"{PREFIX}/<search_id>/results")(results)
    bp.get(f"{PREFIX}/<search_id>/results/<result_id>")(result)
    return bp
