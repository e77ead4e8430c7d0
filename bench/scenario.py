"""The measurement sequence, the same for every runner: cold start, idle, kills, stop.

Kept apart from the runners so that no supervisor gets a different script: each repetition
starts a fresh runner (fresh temporary folder), times `start()` until all N services answer
/health, and times "stop all" until every service process is gone. The first repetition also
measures an idle window (after a settle period, so start-up work is not counted as idle) and
crash recovery: K SIGKILLs round-robin over the services, each timed until a new pid answers
on the port (and, for fsup, through its proxy route, polled at the same time by a second
thread, so one kill yields both figures). fsup alone also restores after the clean stop.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import procs
import workload
from peer_runners import Runner


def idle_window(runner: Runner, seconds: float) -> dict[str, float]:
    """Supervisor CPU and RSS and the services' own CPU over `seconds` of nothing happening."""

    def snapshot() -> tuple[dict[int, float], dict[int, float], list[Any]]:
        own, _ = procs.split_tree(runner.supervisor_pids())
        svc = list(procs.services().values())
        return (
            {p.pid: procs.cpu_seconds([p]) for p in own},
            {p.pid: procs.cpu_seconds([p]) for p in svc},
            own,
        )

    own0, svc0, _ = snapshot()
    time.sleep(seconds)
    own1, svc1, own = snapshot()
    return {
        "window_s": seconds,
        "supervisor_cpu_s": sum(v - own0.get(pid, 0.0) for pid, v in own1.items()),
        "services_cpu_s": sum(v - svc0.get(pid, 0.0) for pid, v in svc1.items()),
        "supervisor_rss_mib": procs.rss_mib(own),
        "supervisor_processes": sorted(_name(p) for p in own),
    }


def _name(proc: Any) -> str:
    try:
        return " ".join(proc.cmdline())[:80] or proc.name()
    except procs.psutil.Error:
        return "?"


def _proxy_pid(url: str, name: str) -> int | None:
    conn = http.client.HTTPConnection(
        url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1]), timeout=10
    )
    try:
        conn.request("GET", f"/api/{name}/health")
        answer = conn.getresponse()
        body = answer.read()
        if answer.status == 200:
            return int(json.loads(body)["pid"])
    except (OSError, http.client.HTTPException, ValueError, KeyError):
        pass
    finally:
        conn.close()
    return None


def crash_recovery(runner: Runner, kills: int, proxy_url: str | None) -> dict[str, list[float]]:
    """K SIGKILLs; seconds until the port (and the proxy route) answer from a new pid."""
    port_times: list[float] = []
    proxy_times: list[float] = []
    for k in range(kills):
        name = runner.names[k % runner.n]
        old = workload.health_pid(runner.portdir, name)
        if old is None:
            raise RuntimeError(f"{runner.name}: {name} does not answer before kill {k}")
        found: list[float] = []

        def poll_proxy(
            began: float, name: str = name, old: int = old, found: list[float] = found
        ) -> None:
            assert proxy_url is not None
            while time.perf_counter() - began < 60:
                pid = _proxy_pid(proxy_url, name)
                if pid is not None and pid != old:
                    found.append(time.perf_counter() - began)
                    return
                time.sleep(0.002)

        os.kill(old, signal.SIGKILL)
        began = time.perf_counter()
        thread = None
        if proxy_url:
            thread = threading.Thread(target=poll_proxy, args=(began,), daemon=True)
            thread.start()
        try:
            port_times.append(workload.wait_new_pid(runner.portdir, name, old, began))
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}; {runner.describe(name)}") from None
        if thread is not None:
            thread.join(60)
            if found:
                proxy_times.append(found[0])
        time.sleep(0.2)
    out = {"port_s": port_times}
    if proxy_url:
        out["proxy_s"] = proxy_times
    return out


def stop_all(runner: Runner) -> float:
    """Seconds from the stop command until every service process is gone."""
    pids = [p.pid for p in procs.services().values()]
    began = time.perf_counter()
    runner.stop_all()
    if not procs.wait_gone(pids):
        raise RuntimeError(f"{runner.name}: services still alive after stop all")
    return time.perf_counter() - began


def measure(
    make: Callable[[int], Runner],
    reps: int,
    kills: int,
    idle_s: float,
    settle_s: float,
    say: Callable[[str], None],
    extra: Callable[[Runner], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Run the sequence `reps` times on fresh runners; return the raw samples."""
    result: dict[str, Any] = {"cold_start_s": [], "stop_all_s": []}
    for rep in range(reps):
        runner = make(rep)
        try:
            workload.reset_ports(runner.portdir)
            began = time.perf_counter()
            runner.start()
            result["cold_start_s"].append(workload.wait_all(runner.portdir, runner.names, began))
            say(
                f"  {runner.name} rep {rep + 1}/{reps}: cold start "
                f"{result['cold_start_s'][-1]:.3f} s"
            )
            if rep == 0:
                time.sleep(settle_s)
                result["idle"] = idle_window(runner, idle_s)
                say(f"  {runner.name}: idle {result['idle']}")
                if runner.supervises and kills:
                    proxy = getattr(runner, "url", None)
                    result["crash"] = crash_recovery(runner, kills, proxy)
                    say(f"  {runner.name}: crash recovery done ({kills} kills)")
                if extra is not None:
                    result.update(extra(runner))
            runner.wait_settled()
            result["stop_all_s"].append(stop_all(runner))
            if runner.restores:
                runner.wait_exit()  # type: ignore[attr-defined]
                workload.reset_ports(runner.portdir)
                began = time.perf_counter()
                runner.restore()  # type: ignore[attr-defined]
                result.setdefault("restore_s", []).append(
                    workload.wait_all(runner.portdir, runner.names, began, timeout=120)
                )
                runner.wait_settled()
                result.setdefault("stop_after_restore_s", []).append(stop_all(runner))
                say(f"  {runner.name} rep {rep + 1}: restore {result['restore_s'][-1]:.3f} s")
        finally:
            runner.shutdown()
            swept = procs.cleanup()
            if swept:
                result["swept"] = result.get("swept", 0) + swept
    return result
