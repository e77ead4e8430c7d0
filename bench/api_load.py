"""fsup's HTTP front end against bare baselines, with a closed-loop client.

One connection, one request at a time, for a fixed duration (httpx, keep-alive): req/s is
then 1 / latency, and p50/p99 are per request. No wrk needed, and the client's own cost is
the same on both sides of each ratio. Baselines measured in the same run:
  signed `GET /rpc/formations`  vs  a bare Hypercorn hello app on the trio worker (the
                                   server fsup itself runs on, minus fsup)
  proxy `/api/{id}/health`      vs  the same service hit directly, once with a keep-alive
                                   (HTTP/1.1) backend and once with an HTTP/1.0 one
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import procs
import workload

HELLO_APP = '''\
"""A bare ASGI hello: the ceiling of any app served by Hypercorn's trio worker."""


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", b"5")]})
    await send({"type": "http.response.body", "body": b"hello"})
'''


def closed_loop(call: Callable[[], int], seconds: float, warmup: float = 0.3) -> dict[str, Any]:
    """Call `call` (returns an HTTP status) back to back for `seconds`."""
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        call()
    latencies: list[float] = []
    errors = 0
    began = time.perf_counter()
    end = began + seconds
    while True:
        t0 = time.perf_counter()
        if t0 >= end:
            break
        try:
            ok = call() == 200
        except httpx.HTTPError:
            ok = False
        latencies.append(time.perf_counter() - t0)
        errors += not ok
    elapsed = time.perf_counter() - began
    ordered = sorted(latencies)
    return {
        "requests": len(ordered),
        "errors": errors,
        "req_s": len(ordered) / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
    }


def hypercorn_hello(workdir: Path, port: int) -> str:
    """Start the bare hello app under Hypercorn's trio worker; return its URL once it answers."""
    (workdir / "hello_app.py").write_text(HELLO_APP)
    procs.launch(
        [
            sys.executable,
            "-m",
            "hypercorn",
            "--worker-class",
            "trio",
            "--bind",
            f"127.0.0.1:{port}",
            "hello_app:app",
        ],
        cwd=workdir,
        log=workdir / "hypercorn.out",
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if workload.get(port, "/") is not None:
            return url
        time.sleep(0.05)
    raise RuntimeError("the bare Hypercorn app did not start")


def measure(
    fsup: Any, workdir: Path, hello_port: int, seconds: float, say: Callable[[str], None]
) -> dict[str, Any]:
    """All the front-end figures against a running fsup with its formations deployed."""
    out: dict[str, Any] = {}
    hello = hypercorn_hello(workdir, hello_port)
    with httpx.Client(trust_env=False, timeout=10) as http:
        out["hello"] = closed_loop(lambda: http.get(hello).status_code, seconds)
    rpc = fsup.rpc

    def signed() -> int:
        rpc.call("GET", "/rpc/formations")
        return 200

    out["rpc_formations"] = closed_loop(signed, seconds)
    say(f"  rpc {out['rpc_formations']['req_s']:.0f} req/s vs hello {out['hello']['req_s']:.0f}")

    # An HTTP/1.0 backend next to the keep-alive ones: the proxy cannot pool its connections.
    folder = fsup.write_formation(workdir / "h10" / "svc-h10", "svc-h10", BENCH_HTTP10="1")
    body = _pack(folder)
    fsup.rpc.deploy(body)
    for label, name in (("keepalive", fsup.names[0]), ("http10", "svc-h10")):
        port = workload.port_of(fsup.portdir, name)
        with httpx.Client(trust_env=False, timeout=10) as http:
            direct = closed_loop(
                lambda p=port: http.get(f"http://127.0.0.1:{p}/health").status_code, seconds
            )
        with httpx.Client(trust_env=False, timeout=10) as http:
            proxied = closed_loop(
                lambda n=name: http.get(f"{fsup.url}/api/{n}/health").status_code, seconds
            )
        out[f"proxy_{label}"] = {"direct": direct, "proxy": proxied}
        say(f"  proxy {label}: {proxied['req_s']:.0f} req/s vs direct {direct['req_s']:.0f}")
    return out


def _pack(folder: Path) -> bytes:
    import io  # noqa: PLC0415
    import tarfile  # noqa: PLC0415

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=folder.name)
    return buffer.getvalue()
