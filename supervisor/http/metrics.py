"""`GET /metrics`: fsup's figures for Prometheus, in its text format, or OpenMetrics when the
scraper's `Accept` asks for it.

The formats, their negotiation and fsup's own process figures are prometheus_client's
(`choose_encoder`, `ProcessCollector`), not written here. Each app has its own registry
(`HttpServices.registry`), never the library's global one: tests run several apps in one
process. The collectors read live state when scraped (`metrics_collectors`); nothing is
updated between scrapes but the tallies of what happens, where it happens.

Who may scrape: the holder of `/api/v1`'s bearer token (`server/api.token`, which
Prometheus reads with `authorization: {credentials_file: ...}`, again at every scrape, so a
rotated token is picked up), or anyone when `config.yaml` says `metrics: {public: true}`.
The dashboard's session cookie is not accepted: a scraper has none, and a route that takes
a cookie needs the cross-site checks that a read-only scrape does not. `/metrics` keeps the
`Host` check of fsup's browser-reachable routes (`core.hosts`), one rule for all of them: a
scraper that reaches fsup by another name than loopback needs it in `http.allowed_hosts`,
as `/api/v1` does. Scrapes are not audited: one every 15 s, forever, would flood the trail,
and a scrape changes nothing (the audit trail records changes and `/rpc` calls).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio
from prometheus_client import ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, choose_encoder, generate_latest
from prometheus_client.registry import Collector
from quart import Blueprint, Response, request

from actors.search import ListSearches
from supervisor.core.errors import FsupError
from supervisor.http.api_auth import check_bearer
from supervisor.http.metrics_collectors import (
    BusCollector,
    FleetCollector,
    Scrape,
    TallyCollector,
    read_fleet,
)
from supervisor.http.rpc import ask, snapshots
from supervisor.http.services import HttpServices, services

PATH = "/metrics"
# The format versions prometheus_client writes: a version the `Accept` names beyond these is
# answered in the text format rather than labelled with a version that was not written.
KNOWN_VERSIONS = frozenset({"0.0.4", "1.0.0", "2.0.0"})
Encoder = Callable[[Collector], bytes]


def register_collectors(svc: HttpServices) -> None:
    """Fill the app's registry: fsup's own process (`process_*`), what the proxy and the
    formations tallied, the event stream. Called once, as the app is made."""
    ProcessCollector(registry=svc.registry)
    svc.registry.register(TallyCollector(svc.metrics))
    svc.registry.register(BusCollector(svc.bus))


def negotiate(accept: str) -> tuple[Encoder, str]:
    """The encoder and Content-Type for the scraper's `Accept`: OpenMetrics when asked
    for, the text format otherwise, and for an `Accept` prometheus_client cannot read (a
    version that is not a number raised inside it) or names a version it does not write."""
    try:
        encoder, content_type = choose_encoder(accept)
    except (TypeError, ValueError):
        return generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    params = (part.strip().partition("=") for part in content_type.split(";")[1:])
    version = next((value for key, _, value in params if key == "version"), "")
    if version not in KNOWN_VERSIONS:
        return generate_latest, CONTENT_TYPE_PLAIN_0_0_4
    return encoder, content_type


async def authenticate() -> None:
    """The bearer token, unless `metrics.public` (401 in the contract's shape otherwise)."""
    svc = services()
    if not svc.config.metrics_public:
        check_bearer(svc.api_token, request.headers.get("Authorization"))


async def searches_running(svc: HttpServices) -> int | None:
    """How many searches run now, or None when the searches actor cannot say."""
    if svc.searches is None:
        return None
    try:
        found = await ask(svc.searches, ListSearches())
    except FsupError:
        return None
    return sum(1 for search in found if search.get("state") == "running")


async def scrape() -> Any:
    """The figures, gathered now: the formations asked through their actors (a formation
    that does not answer in time is `unknown`), their processes read in a worker thread,
    then everything encoded at once."""
    svc = services()
    listing = await snapshots()
    fleet = await trio.to_thread.run_sync(read_fleet, listing)
    running = await searches_running(svc)
    svc.metrics.keep_only({facts.formation_id for facts in fleet})
    encoder, content_type = negotiate(request.headers.get("Accept", ""))
    body = encoder(Scrape(svc.registry, FleetCollector(fleet, running)))
    return Response(body, status=200, content_type=content_type)


def blueprint() -> Blueprint:
    """`/metrics`, behind the bearer token (or public, by configuration)."""
    bp = Blueprint("metrics", __name__)
    bp.before_request(authenticate)
    bp.get(PATH)(scrape)
    return bp
