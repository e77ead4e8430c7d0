"""Raw samples into figures: medians with their spread, ratios, one Markdown table per N.

Absolute numbers move with the machine's load; ratios to the floor and to the peers
measured in the same run are what compare across machines, so every cell carries both.
"""

from __future__ import annotations

import statistics
from typing import Any

ORDER = ("floor", "circus", "supervisord", "pm2", "fsup")


def summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    ordered = sorted(values)
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "n": len(ordered),
    }


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"
    if unit == "cpu":
        return f"{value:.3f} s"
    return f"{value:.0f} MiB"


def _cell(
    stat: dict[str, float] | None, unit: str, floor: float | None, key: str = "median"
) -> str:
    if stat is None:
        return "—"
    text = _fmt(stat[key], unit)
    if stat.get("n", 1) > 1 and key == "median":
        text += f" [{_fmt(stat['min'], unit).split()[0]}–{_fmt(stat['max'], unit)}]"
    if floor:
        text += f" ({stat[key] / floor:.2f}× floor)"
    return text


def rows(by_runner: dict[str, dict[str, Any]], idle_s: float) -> list[tuple[str, str, dict]]:
    """(label, unit, {runner: stat}) for each figure."""

    def get(name: str, *path: str) -> dict[str, float] | None:
        node: Any = by_runner.get(name, {})
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, list):
            return summary(node)
        if isinstance(node, (int, float)):
            return {"median": float(node), "n": 1}
        return None

    names = [n for n in ORDER if n in by_runner]
    table = [
        ("cold start: all N answer /health", "s", {n: get(n, "cold_start_s") for n in names}),
        ("restore after a clean stop", "s", {n: get(n, "restore_s") for n in names}),
        ("crash recovery, port (median)", "s", {n: get(n, "crash", "port_s") for n in names}),
        ("crash recovery, port (p95)", "s:p95", {n: get(n, "crash", "port_s") for n in names}),
        (
            "crash recovery, proxy route (median)",
            "s",
            {n: get(n, "crash", "proxy_s") for n in names},
        ),
        (
            "crash recovery, proxy route (p95)",
            "s:p95",
            {n: get(n, "crash", "proxy_s") for n in names},
        ),
        (
            f"supervisor CPU over {idle_s:g} s idle",
            "cpu",
            {n: get(n, "idle", "supervisor_cpu_s") for n in names},
        ),
        (
            f"services' own CPU over {idle_s:g} s idle",
            "cpu",
            {n: get(n, "idle", "services_cpu_s") for n in names},
        ),
        ("supervisor RSS", "mib", {n: get(n, "idle", "supervisor_rss_mib") for n in names}),
        ("stop all", "s", {n: get(n, "stop_all_s") for n in names}),
    ]
    return table


def markdown(n: int, by_runner: dict[str, dict[str, Any]], idle_s: float) -> str:
    names = [name for name in ORDER if name in by_runner]
    peers = [p for p in names if p not in ("floor", "fsup")]
    head = f"| N = {n} | " + " | ".join(names) + " | fsup ÷ each peer |"
    lines = [head, "|" + "---|" * (len(names) + 2)]
    for label, unit, stats in rows(by_runner, idle_s):
        key = "p95" if unit.endswith(":p95") else "median"
        unit = unit.split(":")[0]
        floor = stats.get("floor")
        floor_value = floor[key] if floor and key in floor and unit == "s" else None
        if floor_value is not None and label.startswith("crash"):
            floor_value = None
        cells = []
        for name in names:
            stat = stats.get(name)
            if stat is not None and key not in stat:
                stat = None
            cells.append(_cell(stat, unit, floor_value if name != "floor" else None, key))
        mine = stats.get("fsup")
        ratios = []
        for peer in peers:
            theirs = stats.get(peer)
            if mine and theirs and key in mine and key in theirs and theirs[key] > 0:
                ratios.append(f"{peer} {mine[key] / theirs[key]:.2f}×")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {', '.join(ratios) or '—'} |")
    return "\n".join(lines)


def api_markdown(api: dict[str, Any]) -> str:
    if not api:
        return ""
    hello, rpc = api["hello"], api["rpc_formations"]
    lines = [
        "| fsup front end (1 connection, closed loop) | req/s | p50 | p99 | vs baseline |",
        "|---|---|---|---|---|",
        f"| bare Hypercorn hello (trio worker) | {hello['req_s']:.0f} | "
        f"{hello['p50_ms']:.2f} ms | {hello['p99_ms']:.2f} ms | baseline |",
        f"| signed `GET /rpc/formations` | {rpc['req_s']:.0f} | {rpc['p50_ms']:.2f} ms | "
        f"{rpc['p99_ms']:.2f} ms | {rpc['req_s'] / hello['req_s']:.2f}× req/s, p99 "
        f"{rpc['p99_ms'] / hello['p99_ms']:.1f}× |",
    ]
    for label, title in (("keepalive", "keep-alive backend"), ("http10", "HTTP/1.0 backend")):
        if f"proxy_{label}" not in api:
            continue
        direct, proxy = api[f"proxy_{label}"]["direct"], api[f"proxy_{label}"]["proxy"]
        lines.append(
            f"| direct `/health`, {title} | {direct['req_s']:.0f} | "
            f"{direct['p50_ms']:.2f} ms | {direct['p99_ms']:.2f} ms | baseline |"
        )
        lines.append(
            f"| proxy `/api/{{id}}/health`, {title} | {proxy['req_s']:.0f} | "
            f"{proxy['p50_ms']:.2f} ms | {proxy['p99_ms']:.2f} ms | "
            f"{proxy['req_s'] / direct['req_s']:.2f}× direct, {proxy['req_s'] / hello['req_s']:.2f}"
            f"× hello; +{proxy['p50_ms'] - direct['p50_ms']:.2f} ms p50, "
            f"+{proxy['p99_ms'] - direct['p99_ms']:.2f} ms p99 |"
        )
    return "\n".join(lines)


def extras_markdown(extras: dict[str, Any]) -> str:
    """fsup's own figures (no peer has them): updates under load, search, SSE fan-out."""
    lines = ["| fsup alone | figure | baseline in the same run |", "|---|---|---|"]
    up = extras.get("updates", {})
    if "failed" in up:
        lines.append(
            f"| {up['updates']} updates under load (4 clients via the proxy) | "
            f"{up['failed']} failed of {up['requests']} requests; update median "
            f"{up['update_s'].get('median', 0):.2f} s | target: 0 failed |"
        )
    se = extras.get("search", {})
    if "search_mib_s" in se:
        lines.append(
            f"| full search over {se['files']} logs, {se['mib']} MiB | "
            f"{se['search_mib_s']:.0f} MiB/s ({se['search_s']:.2f} s, {se['hits']} hits) | "
            f"`grep -c`: {se['grep_mib_s']:.0f} MiB/s; fsup {se['ratio']:.2f}× |"
        )
    sse = extras.get("sse", {})
    if "latency_s" in sse and sse["latency_s"].get("n"):
        lat = sse["latency_s"]
        lines.append(
            f"| SSE to {sse['subscribers']} subscribers, {sse['events']} events | p50 "
            f"{lat['median'] * 1000:.1f} ms, p99 {lat['p99'] * 1000:.1f} ms "
            f"({sse['delivered']} of {sse['expected']} delivered) | target p99 ≤ 50 ms |"
        )
    for label in ("updates", "search", "sse"):
        if "error" in extras.get(label, {}):
            lines.append(f"| {label} | failed: {extras[label]['error'][:120]} | |")
    return "\n".join(lines)
