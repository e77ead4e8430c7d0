"""`python -m supervisor.runtime.keeper --home HOME`: start the log keeper of HOME.

fsup starts it in a new session, stdin from /dev/null, stdout a pipe and stderr appended to
`<home>/server/logkeeper.log`. It writes `ready` on stdout once it listens (and closes its
stdout), or `busy` when a keeper of that home already listens, and exits 0 then. Signals that
a terminal or a service manager sends to fsup's group (SIGINT, SIGHUP, SIGTERM) are ignored:
a Ctrl-C on `fsup serve` must not take the children's logs with it. It ends by itself (see
`Keeper.finished`); SIGKILL ends it at once, losing only the unfinished lines it held.

Its diagnostics go to its stderr. The file there is the diagnostics file: when it is a
regular file over MAX_DIAGNOSTICS at start, the keeper empties it (so no path is passed, and
the file emptied is the one written, whatever fsup named it).
"""

from __future__ import annotations

import argparse
import errno
import os
import resource
import signal
import socket
import stat
import sys
import time
from pathlib import Path
from typing import Final

from supervisor.runtime.keeper import protocol
from supervisor.runtime.keeper.program import FIRST_CLIENT_WAIT, Keeper

MAX_DIAGNOSTICS: Final = 1024 * 1024
BACKLOG: Final = 64


def diagnose(message: str) -> None:
    """One line (or a traceback) on stderr, stamped; never fails (the keeper must go on)."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    try:
        os.write(2, f"{stamp} logkeeper[{os.getpid()}]: {message}\n".encode(errors="replace"))
    except OSError:
        pass


def bound_diagnostics() -> None:
    """Empty stderr's file when it is a regular file over MAX_DIAGNOSTICS."""
    try:
        info = os.fstat(2)
        if stat.S_ISREG(info.st_mode) and info.st_size > MAX_DIAGNOSTICS:
            os.ftruncate(2, 0)
            os.lseek(2, 0, os.SEEK_SET)  # in case it was not opened for appending
    except OSError:
        pass


def raise_fd_limit(limit: int | None) -> None:
    """Take the hard limit of open fds as the soft one: the keeper holds two per pair (and
    one per version file), and running out of fds would refuse pipes. `limit` lowers it
    instead (to test a keeper out of fds)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit or hard, hard))
    except (OSError, ValueError):
        pass


def say(word: str) -> None:
    """Tell fsup `word` on stdout, then close stdout (fsup reads it to EOF)."""
    try:
        os.write(1, f"{word}\n".encode())
    except OSError:
        pass
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 1)
    os.close(null)


def listen(home: Path) -> socket.socket | None:
    """The keeper's listening socket for `home`, or None when another keeper holds it."""
    listener = socket.socket(
        socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC
    )
    try:
        listener.bind(protocol.socket_name(home))
    except OSError as error:
        listener.close()
        if error.errno == errno.EADDRINUSE:
            return None
        raise
    listener.listen(BACKLOG)
    return listener


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m supervisor.runtime.keeper")
    parser.add_argument("--home", type=Path, required=True, help="the fsup home it keeps")
    parser.add_argument(
        "--first-client-wait",
        type=float,
        default=FIRST_CLIENT_WAIT,
        help="end after this many seconds if no client connected (tests shorten it)",
    )
    parser.add_argument(
        "--fd-limit", type=int, help="set the limit of open fds instead of raising it (tests)"
    )
    args = parser.parse_args(argv)
    home = args.home.resolve()
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM, signal.SIGPIPE):
        signal.signal(signum, signal.SIG_IGN)
    listener = listen(home)
    if listener is None:
        say("busy")
        return 0
    raise_fd_limit(args.fd_limit)
    bound_diagnostics()  # only now: a busy keeper must not empty the running one's file
    os.chdir("/")  # hold no folder of the home busy
    diagnose(f"listening for {home}")
    say("ready")
    Keeper(listener, diagnose, first_client_wait=args.first_client_wait).run()
    diagnose("nothing left to keep: exiting")
    return 0


if __name__ == "__main__":
    sys.exit(main())
