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

# glibc's mallopt parameter for the most heaps (arenas) its malloc may keep (malloc.h).
M_ARENA_MAX = -8
HEAP_ARENAS = 2


def limit_heap_arenas(arenas: int = HEAP_ARENAS) -> bool:
    """Cap glibc's malloc heaps for this process; False where there is no glibc.

    Why: glibc gives each new thread that allocates its own heap (up to 8 per core), and what
    a heap frees is reused by that heap only. fsup's threads (the early listener, trio's
    worker threads for searches, deploys, figures, each coming and going) left free holes
    spread over several heaps, and the server's RSS crept up under churn with no object alive
    to show for it (issue 17). The GIL serializes nearly all of fsup's allocations anyway, so
    fewer heaps cost no parallelism. Called before the first thread starts (a heap a thread
    already has stays); `mallopt` changes this process only, not the environment, so the
    formations fsup starts keep glibc's defaults (MALLOC_ARENA_MAX would be inherited).
    """
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_ARENA_MAX, arenas))


def serve(args: argparse.Namespace, home: Home) -> int:
    limit_heap_arenas()  # first: before any thread (the early listener's) has a heap of its own
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
    from supervisor.runtime.server import run_server  # noqa: PLC0415
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
