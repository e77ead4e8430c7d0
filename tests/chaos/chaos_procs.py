"""What really runs: the processes of one fsup home, seen with psutil, independently of fsup.

The chaos checks never take fsup's word for what runs: a formation counts as running only if
the process fsup reports is the one and only main process found on the machine, and every
other process of that formation descends from it. Anything else of the home is an orphan.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

# The formation program of the chaos run; its helpers (the stubborn mode's sleepers) are not
# main processes even when an orphaned one has no formation parent any more.
MAIN_MARK = "nasty.py"


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    formation_id: str
    cmdline: tuple[str, ...]

    @property
    def is_main_program(self) -> bool:
        return any(part.endswith(MAIN_MARK) for part in self.cmdline)

    def describe(self) -> str:
        return f"{self.pid} ({' '.join(self.cmdline)[:70]})"


def scan(home: Path) -> dict[str, list[Proc]]:
    """Live (non-zombie) processes started for this home's formations, by formation id."""
    found: dict[str, list[Proc]] = {}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except (psutil.Error, OSError):
            continue
        if env.get("MUXI_HOME") != str(home) or "FORMATION_ID" not in env:
            continue
        fid = env["FORMATION_ID"]
        found.setdefault(fid, []).append(
            Proc(proc.info["pid"], proc.info["ppid"], fid, tuple(proc.info["cmdline"] or ()))
        )
    return found


def mains(procs: list[Proc]) -> list[Proc]:
    """The formation's main processes: its program, not started by another of its own."""
    programs = {p.pid for p in procs if p.is_main_program}
    return [p for p in procs if p.is_main_program and p.ppid not in programs]


def tree(procs: list[Proc], root: int | None) -> set[int]:
    """`root` and every process of `procs` that descends from it."""
    if root is None:
        return set()
    members = {root}
    grew = True
    while grew:
        grew = False
        for proc in procs:
            if proc.ppid in members and proc.pid not in members:
                members.add(proc.pid)
                grew = True
    return members


def judge(desired: str, snap: dict[str, Any] | None, procs: list[Proc]) -> list[str]:
    """What keeps a formation from being in its desired state (empty: it is).

    Running: fsup says running and healthy, its stored desired state is running, the pid it
    reports is the only main process, and nothing of the formation lives outside that tree.
    Stopped: fsup says stopped with no pid, the store agrees, and no process of it is left.
    """
    if snap is None:
        return ["not listed by GET /rpc/formations"]
    problems = []
    if snap.get("desired") != desired:
        problems.append(f"stored desired state {snap.get('desired')!r}")
    status = snap.get("status")
    if status != desired:
        error = snap.get("last_error")
        problems.append(f"status {status!r}" + (f" (last_error: {error})" if error else ""))
    if desired == "stopped":
        if snap.get("pid") is not None:
            problems.append(f"reports pid {snap.get('pid')}")
        if procs:
            problems.append("processes left: " + ", ".join(p.describe() for p in procs))
        return problems
    if snap.get("healthy") is not True:
        problems.append(f"healthy={snap.get('healthy')!r}")
    pid = snap.get("pid")
    main_pids = sorted(p.pid for p in mains(procs))
    if main_pids != [pid]:
        problems.append(f"main processes {main_pids} but fsup reports pid {pid}")
    orphans = orphans_of(procs, pid)
    if orphans:
        problems.append("orphans: " + ", ".join(p.describe() for p in orphans))
    return problems


def orphans_of(procs: list[Proc], pid: int | None) -> list[Proc]:
    """Processes of one formation outside the tree of its reported main process."""
    members = tree(procs, pid)
    return [p for p in procs if p.pid not in members and not p.is_main_program]
