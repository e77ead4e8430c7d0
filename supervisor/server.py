"""`fsup serve`: the fleet and the HTTP front end in one trio nursery.

The nursery opened here owns everything: the root actor (and through it every formation
actor) and Hypercorn. Shutdown (SIGINT/SIGTERM) runs in order: stop accepting HTTP, stop every
formation gracefully (bounded by `shutdown_timeout`), then cancel what is left. Cancellation
alone never kills a formation process: only an explicit stop does, so a crashed fsup leaves
its children running for the next one to adopt.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import trio
from hypercorn.config import Config as HypercornConfig

from actors.base import ActorError, ActorRef
from actors.fleet import FleetActor, Restore, ShutdownAll
from actors.formation.context import FormationContext
from actors.health import ProbeFactory, open_probe_client
from actors.search import SearchesActor
from actors.search_run import SearchContext
from actors.spawn import OsLauncher
from actors.supervision import Intensity, Supervisor
from supervisor import operations
from supervisor.http.app import create_app
from supervisor.http.early import EarlyListener
from supervisor.http.proxy import open_proxy_client
from supervisor.http.server_api import publish_status
from supervisor.http.services import HttpServices
from supervisor.http.serving import serve_http
from supervisor.operations import Services
from supervisor.runtime.events import BusEvent, EventBus
from supervisor.runtime.log_keeper import open_log_keeper
from supervisor.runtime.logs import LogBook
from supervisor.runtime.metrics import Metrics
from supervisor.runtime.ports import PortPool
from supervisor.runtime.routing import RouteTable
from supervisor.runtime.telemetry import PERIOD_S, HistoryKeeping, publish_fleet_stats
from supervisor.storage import intake
from supervisor.storage.config import ServerConfig
from supervisor.storage.home import Home, load_or_create_credentials, load_or_create_token
from supervisor.storage.store import AUDIT_FLUSH_S, SearchStore, Store

log = logging.getLogger("fsup.server")

ROOT_INTENSITY = Intensity(max_restarts=5, period=10.0, escalate=False)
# `serve --deploy`: folders packed, extracted and validated at once (their starts: unbounded).
DEPLOY_PREPARING = 8


async def run_server(
    home: Home,
    config: ServerConfig,
    deploy_dirs: Sequence[Path] = (),
    *,
    early: EarlyListener | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until SIGINT or SIGTERM; report the URL through `task_status` once listening.
    `early`: the port already bound, answering `/health` while this loaded (`http.early`)."""
    home.ensure()
    credentials, server_id = load_or_create_credentials(home)
    api_token, _ = load_or_create_token(home.api_token)  # `fsup serve` said if it replaced one
    bus = EventBus()
    metrics = Metrics()
    log_book = LogBook(bus)
    logging.getLogger().addHandler(log_book)
    store = Store(home.state_db)
    bus.observe(timeline_keeper(store))
    try:
        async with (
            open_log_keeper(home.root, config.logs) as keeper,
            open_probe_client() as client,
            open_proxy_client() as proxy_client,
            trio.open_nursery() as nursery,
        ):
            # Retired ports lose their idle keep-alives at once; requests wait for the restore.
            routes = RouteTable(retired=proxy_client.close_port, restoring=True)
            ctx = FormationContext(
                home,
                store,
                OsLauncher(keeper),
                ProbeFactory(),
                server_url="",
                routes=routes,
                restart_defaults=config.restart_defaults,
                log_limits=config.logs,
                events=bus,
                metrics=metrics,
            )
            # The root actors are supervised like the formations, but never escalate: a crash
            # is logged, its caller gets INTERNAL, and a fresh incarnation rebuilds its state
            # from the store (the fleet re-adopts the running processes).
            roots = Supervisor(nursery, ROOT_INTENSITY)
            fleet = await roots.start(
                "fleet", lambda: FleetActor(ctx, PortPool(*config.port_range))
            )
            search_ctx = SearchContext(
                SearchStore(store), bus, fleet, client, log_backups=config.logs.backups
            )
            searches_ref = await roots.start("searches", lambda: SearchesActor(search_ctx))
            services = HttpServices(
                fleet,
                home,
                config,
                routes,
                store,
                bus,
                credentials=credentials,
                server_id=server_id,
                proxy_client=proxy_client,
                api_token=api_token,
                searches=searches_ref,
                log_book=log_book,
                metrics=metrics,
                log_keeper=keeper,
            )
            app = create_app(services)
            stop_http = trio.Event()
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                binds = await nursery.start(
                    partial(
                        serve_http,
                        app,
                        _hypercorn_config(config),
                        shutdown_trigger=stop_http.wait,
                        early=early,
                    )
                )
                url = binds[0]
                await fleet.tell(Restore(url))
                log.info("listening on %s (home %s)", url, home.root)
                print(f"fsup listening on {url}", flush=True)
                task_status.started(url)
                keeping = HistoryKeeping(services.history, metrics)
                nursery.start_soon(publish_fleet_stats, bus, routes, PERIOD_S, keeping)
                nursery.start_soon(publish_status, app)
                nursery.start_soon(flush_audit, store)
                nursery.start_soon(flush_timeline, store)
                if deploy_dirs:
                    nursery.start_soon(deploy_folders, services, deploy_dirs)
                async for signum in signals:
                    log.info("received %s; shutting down", signal.Signals(signum).name)
                    break
            bus.close()  # open event streams end, so they do not hold up the HTTP shutdown
            stop_http.set()
            await _stop_formations(fleet, config.shutdown_timeout)
            nursery.cancel_scope.cancel(reason="shutdown")
    finally:
        store.close()
        log.info("stopped")
        logging.getLogger().removeHandler(log_book)


def timeline_keeper(store: Store) -> Callable[[BusEvent], None]:
    """The bus's observer that keeps each formation's `formation_*` envelopes in its
    timeline (`store.timeline`). `formation_deleted` is not kept: the timeline is deleted with
    its formation, and that envelope would outlive it."""

    def keep(event: BusEvent) -> None:
        if not event.type.startswith("formation_") or event.type == "formation_deleted":
            return
        formation_id = event.data.get("formation_id")
        if isinstance(formation_id, str):
            store.record_event(formation_id, event.envelope_json)

    return keep


async def flush_audit(store: Store, delay: float = AUDIT_FLUSH_S) -> None:
    """Write the audit rows that wait, `delay` after the first of them (the store writes a
    full batch at once, and what is left at a clean stop when it closes). Sleeps while no
    `/rpc` call is made."""

    def attach(waiting: Callable[[], None] | None) -> None:
        store.audit_waiting = waiting

    await flush_when_waiting(attach, store.flush_audit, "the audit trail", delay)


async def flush_timeline(store: Store, delay: float = AUDIT_FLUSH_S) -> None:
    """Write the timeline's envelopes that wait, as `flush_audit` writes the audit's rows."""

    def attach(waiting: Callable[[], None] | None) -> None:
        store.timeline_waiting = waiting

    await flush_when_waiting(attach, store.flush_timeline, "the timeline", delay)


async def flush_when_waiting(
    attach: Callable[[Callable[[], None] | None], None],
    flush: Callable[[], int],
    what: str,
    delay: float,
) -> None:
    """Call `flush` `delay` after something starts waiting (`attach` hands the store the
    callback that says so, and takes it back with None when this ends)."""
    wake, woken = trio.open_memory_channel[None](1)

    def waiting() -> None:
        try:
            wake.send_nowait(None)
        except trio.WouldBlock:
            pass  # already woken

    attach(waiting)
    waiting()  # for rows recorded before this task ran
    try:
        async for _ in woken:
            await trio.sleep(delay)
            try:
                flush()
            except sqlite3.Error as exc:  # kept for the next write; fsup carries on
                log.error("writing %s: %s", what, exc)
    finally:
        attach(None)


async def _stop_formations(fleet: ActorRef, bound: float) -> None:
    with trio.move_on_after(bound) as scope:
        try:
            await fleet.ask(ShutdownAll())
        except ActorError as exc:
            log.error("stopping formations: %s", exc)
    if scope.cancelled_caught:
        log.error("formations still stopping after %ss; leaving them to the next start", bound)


def _hypercorn_config(config: ServerConfig) -> HypercornConfig:
    hconfig = HypercornConfig()
    hconfig.bind = [f"{config.host}:{config.port}"]
    hconfig.accesslog = None
    hconfig.errorlog = logging.getLogger("hypercorn.error")
    hconfig.graceful_timeout = 5.0
    return hconfig


def formation_folders(path: Path) -> list[Path]:
    """`path` itself if it holds formation.yaml, else its subfolders that do."""
    if (path / intake.MANIFEST_NAME).is_file():
        return [path]
    return sorted(p for p in path.iterdir() if (p / intake.MANIFEST_NAME).is_file())


async def deploy_folders(services: Services, paths: Sequence[Path]) -> None:
    """`fsup serve --deploy`: deploy formation folders that are not deployed yet, side by side
    (one after another, 100 folders took 100 health gates in a row). At most
    `DEPLOY_PREPARING` are packed, extracted and validated at once; their starts then run
    unbounded, as starts do."""
    preparing = trio.CapacityLimiter(DEPLOY_PREPARING)
    async with trio.open_nursery() as nursery:
        for folder in [f for path in paths for f in formation_folders(path)]:
            nursery.start_soon(_deploy_folder, services, folder, preparing)


async def _deploy_folder(services: Services, folder: Path, preparing: trio.CapacityLimiter) -> None:
    last = None
    await preparing.acquire()
    held = True
    try:
        body = await trio.to_thread.run_sync(intake.pack_folder, folder)
        async for event in operations.deploy(services, body):
            if event is None:
                continue
            last = event
            if held and (event.kind != "progress" or event.data.get("stage") == "spawning"):
                held = False
                preparing.release()
    finally:
        if held:
            preparing.release()
    assert last is not None
    if last.error is None:
        log.info("deployed %s from %s: %s", last.data.get("formation_id"), folder, last.data)
    elif last.error.code == "FORMATION_ALREADY_EXISTS":
        log.info("%s: already deployed; leaving it as it is", folder.name)
    else:
        log.error("could not deploy %s: %s %s", folder, last.error.code, last.error.message)
