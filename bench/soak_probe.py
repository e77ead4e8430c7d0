"""Inside fsup, for the churn soak (`bench/soak.py`): `serve` wrapped so it answers SIGUSR1
with a dump (gc object counts by type, a tracemalloc snapshot when tracing, who holds chosen
objects) and SIGUSR2 with cheap memory figures (Python's arenas and blocks, glibc's heap,
SQLite's own allocations, threads); and the reading of those dumps and of the soak's result.

Run by the soak as `python bench/soak_probe.py serve --port ...`; the handlers run in fsup's
main thread between two bytecodes, as any Python signal handler, so what they see is
consistent. Nothing here is part of fsup.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

DUMPS = "FSUP_SOAK_DUMPS"
TRACE = "FSUP_SOAK_TRACE"
REFERRERS = "FSUP_SOAK_REFERRERS"  # type names whose holders the dumps chase
REPO = Path(__file__).resolve().parent.parent
INSIDE = (
    "rssanon_mib",
    "rssfile_mib",
    "py_arenas",
    "py_used_mib",
    "heap_used_mib",
    "heap_free_mib",
    "glibc_heaps",
    "sqlite_mib",
    "threads",
)


def dump_now(_signum: int, _frame: Any) -> None:
    """Write gc object counts by type (and a tracemalloc snapshot when tracing) to the dumps
    folder; runs in fsup's main thread between two bytecodes, as any Python signal handler."""
    import tracemalloc  # noqa: PLC0415 - only in the wrapper

    folder = Path(os.environ[DUMPS])
    index = len(list(folder.glob("gc-*.json")))
    counts = Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.get_objects())
    (folder / f"gc-{index}.json").write_text(json.dumps(dict(counts.most_common())))
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(str(folder / f"trace-{index}.pickle"))
    wanted = [name for name in os.environ.get(REFERRERS, "").split(",") if name]
    if wanted:
        (folder / f"referrers-{index}.txt").write_text(referrer_chains(wanted))
    (folder / f"done-{index}").touch()


def referrer_chains(wanted: list[str], per_type: int = 4, depth: int = 9) -> str:
    """Who holds a few live objects of each `wanted` type (module.qualname): a chain of
    referrers, `depth` deep, naming each holder's type (and a dict's key). Plain loops: a
    comprehension's cells would be found holding the objects it looks at."""
    lines: list[str] = []
    skip = (type(sys._getframe()),)  # frames (ours among them)
    objects = gc.get_objects()
    for name in wanted:
        found = []
        for o in objects:
            if f"{type(o).__module__}.{type(o).__qualname__}" == name:
                found.append(o)
        lines.append(f"{name}: {len(found)} alive")
        ended = [o for o in found if getattr(o, "returncode", None) is not None]
        if ended:  # a process handle whose process has ended: who keeps it?
            lines.append(
                f"  of which {len(ended)} of ended processes: "
                + ", ".join(str(getattr(o, "pid", "?")) for o in ended[:20])
            )
            found = ended + [o for o in found if o not in ended]
        for target in found[:per_type]:
            lines.append("   <- " + " <- ".join(_chain(target, depth, skip, (objects, found))))
    objects.clear()
    return "\n".join(lines) + "\n"


def _chain(target: Any, depth: int, skip: tuple[type, ...], mine: tuple[Any, ...]) -> list[str]:
    """Up the referrers of `target`: at each step every holder's type (a dict's key too), then
    on through the first that is not a bare list (lists are mostly locals in frames)."""
    chain, current = [], target
    for _ in range(depth):
        holders = []
        for h in gc.get_referrers(current):
            if isinstance(h, skip) or type(h).__name__ == "cell" or any(h is m for m in mine):
                continue
            holders.append(h)
        if not holders:
            break
        labels = []
        for holder in holders[:4]:
            label = f"{type(holder).__module__}.{type(holder).__qualname__}"
            if isinstance(holder, dict):
                for key, value in holder.items():
                    if value is current:
                        label += f"[{key!r}]"
                        break
            labels.append(label)
        chain.append(" | ".join(labels))
        onward = [h for h in holders if not isinstance(h, list)] or holders
        current = onward[0]
        mine = (*mine, holders)
    return chain


def stats_now(_signum: int, _frame: Any) -> None:
    """Write where the memory is, cheaply: Python's allocated blocks, glibc's heap (in use and
    free: fragmentation shows as free), SQLite's own allocations (its page cache: outside
    tracemalloc's sight), threads. To `stats.json`, replaced each time."""
    import ctypes  # noqa: PLC0415
    import threading  # noqa: PLC0415

    class Mallinfo2(ctypes.Structure):
        _fields_ = [
            (name, ctypes.c_size_t)
            for name in (
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
            ).split()
        ]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Mallinfo2
    info = libc.mallinfo2()
    sqlite = ctypes.CDLL("libsqlite3.so.0")
    sqlite.sqlite3_memory_used.restype = ctypes.c_int64
    figures = {
        "py_blocks": sys.getallocatedblocks(),
        **pymalloc_figures(),
        "heap_mib": round((info.arena + info.hblkhd) / 2**20, 2),
        "heap_used_mib": round((info.uordblks + info.hblkhd) / 2**20, 2),
        "heap_free_mib": round(info.fordblks / 2**20, 2),
        "glibc_heaps": glibc_heaps(libc),
        "sqlite_mib": round(sqlite.sqlite3_memory_used() / 2**20, 2),
        "threads": threading.active_count(),
    }
    folder = Path(os.environ[DUMPS])
    (folder / "stats.tmp").write_text(json.dumps(figures))
    os.replace(folder / "stats.tmp", folder / "stats.json")


def glibc_heaps(libc: Any) -> int:
    """How many heaps (arenas) glibc's malloc keeps: each thread that allocates gets one of
    its own, up to M_ARENA_MAX (fsup caps it at start). From `malloc_info`'s XML."""
    import ctypes  # noqa: PLC0415
    import tempfile  # noqa: PLC0415

    libc.fopen.restype = ctypes.c_void_p
    libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
    libc.fclose.argtypes = [ctypes.c_void_p]
    with tempfile.NamedTemporaryFile(suffix=".xml") as out:
        stream = libc.fopen(out.name.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        return Path(out.name).read_text().count("<heap nr=")


def pymalloc_figures() -> dict[str, float]:
    """Python's object heap as its allocator sees it: arenas held (each 1 MiB on 3.11) and
    bytes in use, from `sys._debugmallocstats` (it writes to fd 2: borrowed for the call)."""
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryFile() as out:
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    figures: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        number = value.strip().replace(",", "")
        if name.startswith("# arenas allocated current") and number.isdigit():
            figures["py_arenas"] = int(number)
        elif name.startswith("# bytes in allocated blocks") and number.isdigit():
            figures["py_used_mib"] = round(int(number) / 2**20, 2)
    return figures


def serve_wrapped(argv: list[str]) -> int:
    import tracemalloc  # noqa: PLC0415

    if os.environ.get(TRACE):
        tracemalloc.start(int(os.environ[TRACE]))
    signal.signal(signal.SIGUSR1, dump_now)
    signal.signal(signal.SIGUSR2, stats_now)
    sys.path[0] = str(REPO)  # not bench/: its modules (procs, report, ...) must not shadow
    sys.argv = ["fsup", *argv]
    from supervisor.cli import main as fsup_main  # noqa: PLC0415

    return int(fsup_main() or 0)


def gc_growth(dumps: Path, first: int, last: int, top: int = 15) -> list[tuple[str, int]]:
    before = json.loads((dumps / f"gc-{first}.json").read_text())
    after = json.loads((dumps / f"gc-{last}.json").read_text())
    grown = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    return sorted(grown.items(), key=lambda item: -item[1])[:top]


def trace_growth(dumps: Path, first: int, last: int, top: int = 20) -> list[str]:
    import tracemalloc  # noqa: PLC0415

    before = tracemalloc.Snapshot.load(str(dumps / f"trace-{first}.pickle"))
    after = tracemalloc.Snapshot.load(str(dumps / f"trace-{last}.pickle"))
    lines = []
    for stat in after.compare_to(before, "traceback")[:top]:
        frames = [f"{f.filename.replace(str(REPO) + '/', '')}:{f.lineno}" for f in stat.traceback]
        lines.append(
            f"{stat.size_diff / 1024:+9.1f} KiB {stat.count_diff:+7d} blocks  "
            + " < ".join(reversed(frames[-4:]))
        )
    return lines


def rss_parts(pid: int) -> dict[str, float]:
    """RssAnon (the heaps, stacks: what a leak grows) and RssFile (code and libraries paged
    in as new paths run: grows early, then stops) from /proc."""
    parts = {}
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("RssAnon", "RssFile"):
                parts[name.lower() + "_mib"] = round(int(value.split()[0]) / 1024, 2)
    return parts


def show(result: dict[str, Any]) -> None:
    print(
        f"\n{result['minutes']:g} min, {result['formations']} formations, load average "
        f"{', '.join(f'{x:.2f}' for x in result['load_average'])}"
        + (" (traced: tracemalloc slows fsup)" if result["traced"] else "")
    )
    print(f"fsup's own log: {result.get('fsup_log_lines')} lines")
    print("driven:", ", ".join(f"{k} {v}" for k, v in sorted(result["driven"].items())))
    for error, count in result["errors"].items():
        print(f"  {count} x {error}")
    print(
        f"RSS: {result['rss_start_mib']:.2f} MiB at start, {result['rss_after_warmup_mib']:.2f} "
        f"after the first minute, {result['rss_end_mib']:.2f} at the end "
        f"(max {result['rss_max_mib']:.2f})"
    )
    target = "within" if result["growth_after_warmup_mib"] < 2 else "OVER"
    print(
        f"growth after the first minute: {result['growth_after_warmup_mib']:+.2f} MiB "
        f"({target} the 2 MiB target), slope {result['slope_after_warmup_mib_per_min']:+.3f} "
        f"MiB/min; fds {result['fds_after_warmup']} -> {result['fds_end']}"
    )
    print(
        "inside fsup, after the first minute -> at the end: "
        + ", ".join(
            f"{k} {result['inside_after_warmup'][k]} -> {result['inside_end'][k]}" for k in INSIDE
        )
    )
    if "gc_growth" in result:
        print("gc objects grown most (type, count):")
        for name, count in result["gc_growth"]:
            print(f"  {count:+8d} {name}")
    for line in [*result.get("trace_growth", []), *result.get("referrers", [])]:
        print(" ", line)


if __name__ == "__main__":
    sys.exit(serve_wrapped(sys.argv[1:]))
