"""A second `fsup serve` on the target's home, however it is pointed there and whatever it is
asked to do: it exits 1 at once, naming the home and the pid that holds it, and the running
fsup, its fleet, its processes and its files are as they were (the corpus's guard checks).

Issue 17: a second server on one home used to start without a word, adopt the first's
processes, kill its new ones as strays, and stop formations on its Ctrl-C. The home's lock is
per file, not per path: a home named through a symbolic link, a `..` or a trailing slash is
the same home.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLES, run_to_end
from hostile_kit import Target
from port_blocks import PORT_RANGE

pytestmark = pytest.mark.e2e

FLEET = ("alpha",)
# About 0.3 s measured; a deadline for a loaded machine (a second server that waited for the
# lock instead of refusing would wait for ever).
REFUSED_WITHIN_S = 20.0


def spellings(target: Target, scratch: Path) -> dict[str, str]:
    """Ways to name the target's home in `MUXI_HOME`."""
    link = scratch / "home-link"
    link.symlink_to(target.home, target_is_directory=True)
    return {
        "exact": str(target.home),
        "trailing-slash": f"{target.home}/",
        "dot-dot": str(target.home / ".." / target.home.name),
        "symlink": str(link),
    }


FLAGS = {
    "port-0": ["--port", "0", "--port-range", PORT_RANGE],
    "the-same-port": ["--port", "{port}", "--port-range", PORT_RANGE],
    "deploy-a-folder": ["--port", "0", "--port-range", PORT_RANGE, "--deploy", "{hello}"],
    "a-bad-port-range": ["--port", "0", "--port-range", "9-1"],
}


@pytest.mark.parametrize("flags", list(FLAGS))
@pytest.mark.parametrize("spelling", ["exact", "trailing-slash", "dot-dot", "symlink"])
def test_a_second_server_on_the_home_is_refused_and_changes_nothing(
    target: Target, tmp_path: Path, spelling: str, flags: str
) -> None:
    assert target.server.proc is not None
    holder = target.server.proc.pid
    argv = [arg.format(port=target.addr[1], hello=EXAMPLES / "hello") for arg in FLAGS[flags]]
    env = {**os.environ, "MUXI_HOME": spellings(target, tmp_path)[spelling]}
    serve = [sys.executable, "-m", "supervisor", "serve", *argv]
    done = run_to_end(serve, env, REFUSED_WITHIN_S, "the second server was not refused")
    assert done.returncode == 1, done.stderr
    assert done.stderr == (
        f"fsup: the home {target.home} is in use by another fsup serve (pid {holder}); "
        "stop that one first, or set MUXI_HOME to another home\n"
    )
    assert done.stdout == ""
