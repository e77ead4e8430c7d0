"""`fsup serve`: the home's lock, settings from config.yaml and flags, the credentials, then
the server until a signal.

The server's modules are imported here, not at the top of the CLI, so the client commands
start light.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys
from functools import partial

from supervisor.http.early import EarlyListener
from supervisor.storage.config import ConfigError, ServerConfig, load_config, with_flags
from supervisor.storage.home import Home, load_or_create_credentials, load_or_create_token
from supervisor.storage.server_lock import ServerLock, ServerLockError

# glibc's mallopt parameters (malloc.h), and fsup's values for them (see `tune_heap`).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
HEAP_ARENAS = 2
MMAP_THRESHOLD = 128 * 1024  # glibc's own starting value for both thresholds, kept from rising


def tune_heap() -> bool:
    """Set glibc's malloc for a long-running server; False where there is no glibc.

    Why (issue 17): under churn fsup's RSS crept up by megabytes over minutes while the
    objects in use stayed flat: the free holes in glibc's heaps grew.
    - Heaps: glibc gives each new thread that allocates a heap of its own (up to 8 per core),
      and what a heap frees is reused by that heap only; fsup's threads (the early listener,
      trio's worker threads for searches, deploys, figures) come and go. The GIL serializes
      nearly all of fsup's allocations anyway: two heaps cost no parallelism.
    - Thresholds: glibc serves a block of 128 KiB or more with its own mmap, unmapped when
      freed, but each such free raises the threshold to that block's size (to 32 MiB), and the
      trim threshold to twice that. Importing the server's modules already raises it past
      300 KiB; from then on request bodies, JSON answers, bundles and read buffers of up to
      that size are carved out of the heap among long-lived small blocks, and leave holes
      there. Setting both thresholds fixes them at glibc's starting value.
    Called first thing in `serve`, before any thread has a heap of its own. `mallopt` changes
    this process only, not the environment: the formations fsup starts keep glibc's defaults
    (MALLOC_ARENA_MAX and the like would be inherited).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = (
        (M_ARENA_MAX, HEAP_ARENAS),
        (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
        (M_TRIM_THRESHOLD, MMAP_THRESHOLD),
    )
    tuned = all([bool(mallopt(param, value)) for param, value in settings])
    # What the imports freed under the old thresholds is still at the heap's top: a block over
    # the new threshold would be carved from it instead of mapped. Hand it back now.
    trim = getattr(ctypes.CDLL(name), "malloc_trim", None)
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
        trim(0)
    return tuned


def serve(args: argparse.Namespace, home: Home) -> int:
    tune_heap()  # first: before any thread (the early listener's) has a heap of its own
    # The lock comes first: a second server on this home must change nothing, not even the
    # config.yaml it would write out or the port it would bind (issue 17).
    try:
        lock = ServerLock.acquire(home)
    except ServerLockError as exc:
        print(f"fsup: {exc}", file=sys.stderr)
        return 1
    with lock:  # held until the process ends: the server runs inside
        return _serve_locked(args, home)


def _serve_locked(args: argparse.Namespace, home: Home) -> int:
    home.ensure()
    try:
        config = with_flags(
            load_config(home.config),
            {
                "--host": args.host,
                "--port": args.port,
                "--port-range": args.port_range,
            },
        )
    except ConfigError as exc:
        print(f"fsup: {exc}", file=sys.stderr)
        return 2
    for folder in args.deploy:
        if not folder.is_dir():
            print(f"fsup: --deploy {folder}: not a folder", file=sys.stderr)
            return 2
    # The credentials exist before the port answers anything, the early `/health` included:
    # a script that waits for `/health` and then reads them must find them (issue 17).
    problem = _write_credentials(home)
    if problem:
        print(f"fsup: {problem}", file=sys.stderr)
        return 1
    # The port is bound and `/health` answered before the server's modules load (`early`).
    try:
        early = EarlyListener(config.host, config.port).start()
    except OSError as exc:
        print(f"fsup: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    try:
        return _serve(args, home, config, early)
    finally:
        early.close()  # what the server did not take (nothing, once it ran)


def _write_credentials(home: Home) -> str | None:
    """Create (or read back) `credentials.json` and `api.token`; a message if that fails.
    Each file is read on its own, and a message names the file at fault: the advice for
    one (move it away) would throw away the other's working credentials."""
    try:
        load_or_create_credentials(home)
    except OSError as exc:
        return f"cannot write the credentials in {home.server}: {exc.strerror or exc}"
    except (ValueError, KeyError, TypeError) as exc:
        reason = f"no {exc}" if isinstance(exc, KeyError) else "not the JSON object fsup wrote"
        return (
            f"{home.credentials} cannot be read ({reason}): restore it, or move it away to "
            "have new credentials created (clients using the old ones must then be updated)"
        )
    try:
        _, replaced = load_or_create_token(home.api_token)
    except OSError as exc:
        return (
            f"{home.api_token} cannot be read or written ({exc.strerror or exc}): fix it, or "
            "move it away to have a new API token created (credentials.json is not affected)"
        )
    if replaced:
        print(
            f"fsup: {home.api_token} {replaced}: replaced with a new API token; dashboard "
            "sessions and bearer clients of the old one must fetch it again "
            "(GET /api/v1/auth/bootstrap), as after a rotation",
            file=sys.stderr,
        )
    return None


def _serve(args: argparse.Namespace, home: Home, config: ServerConfig, early: EarlyListener) -> int:
    # httpx's package imports its own command line (`httpx._main`: rich, pygments, click) when
    # it can; the server never runs it. Marked absent, httpx falls back to its stub `main`,
    # and the server is spared about 3 MiB and 50 ms of start-up (issue 11).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    import trio  # noqa: PLC0415 - keep the client commands' start-up light

    from supervisor.runtime.logs import configure as configure_logging  # noqa: PLC0415
    from supervisor.server import run_server  # noqa: PLC0415
    from supervisor.storage.store import StoreError  # noqa: PLC0415

    configure_logging(home.logs)
    try:
        trio.run(partial(run_server, home, config, [f.resolve() for f in args.deploy], early=early))
    except StoreError as exc:
        print(f"fsup: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"fsup: cannot serve on {config.host}:{config.port}: {exc}", file=sys.stderr)
        return 1
    return 0
