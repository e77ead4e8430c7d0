"""The clients of the chaos run: what people and programs do with fsup while it is attacked.

- the operator stops, starts and restarts formations, one request at a time, and keeps asking
  until fsup gives a definitive answer (a request lost to a kill leaves the desired state in
  doubt until then; the checks skip that formation meanwhile);
- readers list and show formations, status, logs, nodes and the routing summary;
- proxy clients call the formations through `/api/{id}/...`;
- a search client lists, reads, starts, stops and creates searches.

Each has its own `random.Random`, seeded from the run's seed, so a schedule can be replayed.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from chaos_checker import Fleet
from chaos_world import Client, Exchange, Fsup, Recorder, SearchBook

OP_DEADLINE_S = 60.0
KEYWORDS = ("serving", "shared doc", "nasty", "health")
MAX_NEW_SEARCHES = 8


@dataclass
class World:
    fsup: Fsup
    recorder: Recorder
    fleet: Fleet
    searches: SearchBook
    bound: float
    stop: threading.Event  # the clients' stop; the operator has its own (it finishes its op)


def guarded(recorder: Recorder, name: str, body: Callable[[], None]) -> Callable[[], None]:
    """A thread body that reports its own crash as a harness failure instead of vanishing."""

    def run() -> None:
        try:
            body()
        except Exception as exc:  # noqa: BLE001 - reported, the run fails on it
            recorder.find("harness", f"{name} thread failed: {exc!r}")

    return run


class Operator:
    def __init__(self, world: World, rng: random.Random, stop: threading.Event) -> None:
        self.world = world
        self.rng = rng
        self.stop = stop
        self.client = Client(world.fsup, stop)

    def run(self) -> None:
        fleet = self.world.fleet
        try:
            while not self.stop.wait(self.rng.uniform(1.5, 4.0)):
                fid = self.rng.choice(fleet.ids())
                with fleet.lock:
                    desired = fleet.models[fid].desired
                    stopped = [m for m in fleet.models.values() if m.desired == "stopped"]
                if desired == "stopped":
                    op = "start" if self.rng.random() < 0.8 else "restart"
                elif not stopped and self.rng.random() < 0.35:
                    op = "stop"
                else:
                    op = "restart"
                self.perform(fid, op)
        finally:
            self.client.close()

    def perform(self, fid: str, op: str) -> None:
        """One lifecycle request, repeated until its outcome is certain."""
        fleet, recorder = self.world.fleet, self.world.recorder
        target = "stopped" if op == "stop" else "running"
        fleet.begin_op(fid, op)
        started = time.time()
        answers: list[str] = []
        current, done = op, False
        while time.time() - started < OP_DEADLINE_S:
            answer = self.client.rpc("POST", f"/rpc/formations/{fid}/{current}")
            if answer is None:
                time.sleep(0.2)
                continue
            answers.append(f"{current}: {answer.status} {answer.code or ''}".strip())
            if answer.status == 200:
                done = True
                break
            if (current, answer.code) in (
                ("stop", "FORMATION_NOT_RUNNING"),
                ("start", "FORMATION_ALREADY_RUNNING"),
            ):
                shown = self.client.rpc("GET", f"/rpc/formations/{fid}")
                if (
                    shown is not None
                    and shown.status == 200
                    and shown.body.get("desired") == target
                ):
                    done = True
                    break
            if current == "restart":
                current = "start"  # same outcome, and answers definitively when it is running
            time.sleep(0.3)
        recorder.notes[f"operator {op}"] += 1
        if len(answers) > 1:
            recorder.notes["operator requests retried"] += 1
        if not done:
            recorder.find(
                "operator",
                f"{op} {fid}: no definitive answer within "
                f"{OP_DEADLINE_S:g}s; answers: {answers[-6:]}",
                self.world.fsup.log_around(time.time(), before=OP_DEADLINE_S, mentions=fid),
            )
        recorder.note_op(fid, started, time.time())
        fleet.end_op(fid, op, target)


class Reader:
    """Management API reads; a known formation answered 404 is a lost formation."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.client = Client(world.fsup, world.stop)

    def run(self) -> None:
        try:
            while not self.world.stop.wait(self.rng.uniform(0.1, 0.4)):
                fid = self.rng.choice(self.world.fleet.ids())
                choice = self.rng.randrange(7)
                if choice == 0:
                    answer = self.client.rpc("GET", "/rpc/formations")
                elif choice == 1:
                    answer = self.client.rpc("GET", f"/rpc/formations/{fid}")
                elif choice == 2:
                    answer = self.client.rpc("GET", "/rpc/server/status")
                elif choice == 3:
                    answer = self.client.rpc("GET", f"/rpc/formations/{fid}/logs?lines=5")
                elif choice == 4:
                    answer = self.client.rpc("GET", "/rpc/server/logs?lines=5")
                elif choice == 5:
                    answer = self.client.api("GET", "/nodes")
                else:
                    answer = self.client.api("GET", "/routing/summary")
                self.check_found(answer)
        finally:
            self.client.close()

    def check_found(self, answer: Exchange | None) -> None:
        if answer is not None and answer.code == "FORMATION_NOT_FOUND":
            up_for = answer.started - self.world.fsup.started_at
            self.world.recorder.find(
                "lost",
                f"a known formation answered 404: {answer.describe()} (fsup up for {up_for:.1f}s)",
            )


class ProxyUser(Reader):
    """Calls the formations through fsup's reverse proxy."""

    def run(self) -> None:
        paths = ("/whoami", "/health", "/slow?ms=300")
        try:
            while not self.world.stop.wait(self.rng.uniform(0.05, 0.25)):
                fid = self.rng.choice(self.world.fleet.ids())
                self.check_found(self.client.proxy(fid, self.rng.choice(paths)))
        finally:
            self.client.close()


class SearchUser:
    """Uses /api/v1/searches like the dashboard would, and keeps the book of searches."""

    def __init__(self, world: World, rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.client = Client(world.fsup, world.stop)
        self.created = 0

    def create(self, keyword: str, mode: str) -> None:
        answer = self.client.api(
            "POST", "/searches", {"keyword": keyword, "autostart": True, "mode": mode}
        )
        if answer is not None and answer.status == 201:
            search = answer.body["search"]
            self.world.searches.add(search["id"], search["keyword"])
            self.world.searches.set_run(search["id"], search.get("active_run_id"))
            self.created += 1

    def run(self) -> None:
        book = self.world.searches
        try:
            while not self.world.stop.wait(self.rng.uniform(0.3, 1.0)):
                known = sorted(book.known_now())
                sid = self.rng.choice(known) if known else None
                choice = self.rng.randrange(8)
                if choice == 0 and self.created < MAX_NEW_SEARCHES:
                    self.create(self.rng.choice(KEYWORDS), self.rng.choice(("full", "live")))
                elif choice == 1:
                    listed = self.client.api("GET", "/searches")
                    if listed is not None and listed.status == 200:
                        for item in listed.body.get("searches", []):
                            if item["id"] in known and item["state"] != "running":
                                book.set_run(item["id"], None)
                elif sid is None:
                    continue
                elif choice in (2, 3):
                    shown = self.client.api("GET", f"/searches/{sid}")
                    if shown is not None and shown.status == 200:
                        book.set_run(sid, shown.body["search"].get("active_run_id"))
                elif choice == 4:
                    self.client.api("GET", f"/searches/{sid}/results?limit=5&sort=score")
                elif choice == 5:
                    started = self.client.api("POST", f"/searches/{sid}/start")
                    if started is not None and started.status == 200:
                        book.set_run(sid, started.body["search"].get("active_run_id"))
                elif choice == 6:
                    self.client.api("POST", f"/searches/{sid}/stop")
                    book.set_run(sid, None)
                else:
                    self.client.api("POST", f"/searches/{sid}/export")
        finally:
            self.client.close()
