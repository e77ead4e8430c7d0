"""The chaos run's verdict: which 5xx the contract allows, and the summary printed at the end.

A 5xx while fsup is up is a defect unless the contract itself asks for it:

- `500 INTERNAL` to a request during which an injected fault fired in an actor that serves it
  (issue 8: an unexpected exception in an actor is answered `INTERNAL`);
- `503 FORMATION_NOT_RUNNING` or `502 BAD_GATEWAY` from the proxy for a formation that was
  stopped, being operated on, or disrupted within the bound before the request ended.

Everything else (a 503 for an actor that did not answer, an `INTERNAL` with no fault, a fault
answered with another code) is reported with its request.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from collections.abc import Callable

from chaos_checker import Fleet
from chaos_world import Exchange, Recorder

PROXY_OUTAGE = {(503, "FORMATION_NOT_RUNNING"), (502, "BAD_GATEWAY")}
FAULT_SLACK_S = 0.05


def serves(actor: str, exchange: Exchange) -> bool:
    """Whether a fault in `actor` can surface in the answer to `exchange`."""
    if actor == "fleet":
        return exchange.kind != "proxy"
    if actor == "searches" or actor.startswith("search-run:"):
        return exchange.path.startswith("/api/v1/searches")
    fid = actor.partition(":")[2]
    return exchange.kind == "rpc" and exchange.path.startswith(f"/rpc/formations/{fid}")


def proxy_target(exchange: Exchange) -> str:
    return exchange.path.split("/")[2] if exchange.kind == "proxy" else ""


def excuse(exchange: Exchange, recorder: Recorder, fleet: Fleet, bound: float) -> str | None:
    """Why the contract expects this 5xx, or None when it is a defect."""
    fired = recorder.faults_fired(exchange.started - FAULT_SLACK_S, exchange.ended + FAULT_SLACK_S)
    if any(serves(actor, exchange) for actor in fired):
        if (exchange.status, exchange.code) == (500, "INTERNAL"):
            return "INTERNAL answer to an injected fault"
        return None  # hit by a fault, but not answered as the contract says
    fid = proxy_target(exchange)
    if fid and (exchange.status, exchange.code) in PROXY_OUTAGE and fid in fleet.models:
        if fleet.desired_at(fid, exchange.started) == "stopped":
            return f"proxy {exchange.status}: formation stopped"
        if recorder.in_op(fid, exchange.started, exchange.ended):
            return f"proxy {exchange.status}: during an operator request"
        if recorder.disrupted(fid, exchange.started - bound, exchange.ended):
            return f"proxy {exchange.status}: formation recently disrupted"
    return None


def classify(recorder: Recorder, fleet: Fleet, bound: float) -> tuple[Counter[str], list[Exchange]]:
    """(expected 5xx by reason, unexpected 5xx)."""
    expected: Counter[str] = Counter()
    unexpected = []
    with recorder.lock:
        seen = list(recorder.five_xx)
    for exchange in seen:
        reason = excuse(exchange, recorder, fleet, bound)
        if reason is None:
            unexpected.append(exchange)
        else:
            expected[reason] += 1
    return expected, unexpected


def _shape(exchange: Exchange) -> str:
    path = re.sub(r"/[0-9a-f]{12}(?=/|$|\?)", "/<id>", exchange.path.split("?")[0])
    return f"{exchange.method} {path} -> {exchange.status} {exchange.code or ''}".strip()


def _seconds(values: list[float]) -> str:
    if not values:
        return "none"
    return f"n={len(values)} median {statistics.median(values):.2f}s max {max(values):.2f}s"


def summary(
    recorder: Recorder,
    fleet: Fleet,
    bound: float,
    seed: int,
    seconds: float,
    epochs: int,
    log_around: Callable[[float], str],
) -> tuple[str, bool]:
    """The printed summary, and whether the run passed; `log_around(t)` gives the server's
    warnings and errors near time t, shown under each kind of unexpected 5xx."""
    expected, unexpected = classify(recorder, fleet, bound)
    kills = recorder.kills
    faults = {k.removeprefix("fault "): v for k, v in kills.items() if k.startswith("fault ")}
    lines = [
        f"chaos run: seed {seed}, {seconds:.0f}s of chaos, bound {bound:g}s, "
        f"{epochs} fsup start(s)  (replay: --chaos-seed {seed})",
        f"kills: child {kills['child']}, grandchild {kills['grandchild']}, "
        f"fsup {kills['fsup']}, actor faults {sum(faults.values())} "
        f"{dict(sorted(faults.items()))} (fired: {len(recorder.fired())})",
    ]
    by_kind: dict[str, list[float]] = {}
    for kind, took in recorder.convergence:
        by_kind.setdefault(kind, []).append(took)
    lines.append(f"convergence: {_seconds([t for _, t in recorder.convergence])}")
    lines += [f"  after {kind}: {_seconds(v)}" for kind, v in sorted(by_kind.items())]
    total = sum(recorder.requests.values())
    lines.append(f"requests: {total} " + str(dict(sorted(recorder.requests.items()))))
    lines.append(
        f"5xx: {len(recorder.five_xx)} ({len(unexpected)} unexpected; expected by "
        f"the contract: {dict(expected) or 'none'})"
    )
    for shape, count in Counter(_shape(e) for e in unexpected).most_common():
        example = next(e for e in unexpected if _shape(e) == shape)
        lines.append(f"  {count} x {shape}; e.g. {example.describe()}")
        lines += ["    " + line[:600] for line in log_around(example.ended).splitlines()[-6:]]
    lost = [f for f in recorder.findings if f.kind == "lost"]
    lines.append(f"lost: {len(lost) or 'nothing'}")
    lines.append(f"notes: {dict(sorted(recorder.notes.items()))}")
    signatures = Counter(f.signature() for f in recorder.findings)
    lines.append(f"findings: {len(recorder.findings)} ({len(signatures)} distinct)")
    shown: set[str] = set()
    for finding in recorder.findings:
        signature = finding.signature()
        if signature in shown:
            continue
        shown.add(signature)
        lines.append(f"- [{signatures[signature]}x] {finding.kind}: {finding.summary}")
        if finding.detail:
            detail = finding.detail.splitlines()
            shown_lines = detail if len(detail) <= 14 else detail[:1] + ["..."] + detail[-12:]
            lines += ["    " + line[:600] for line in shown_lines]
    return "\n".join(lines), not recorder.findings and not unexpected
