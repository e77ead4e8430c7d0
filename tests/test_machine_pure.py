"""The formation machine can be used without the runtime: importing it loads no I/O library."""

from __future__ import annotations

import subprocess
import sys

IO_MODULES = ("trio", "psutil", "sqlite3", "quart", "hypercorn", "actors.formation.actor")


def test_the_machine_package_imports_nothing_with_io() -> None:
    probe = (
        "import sys, actors.formation.machine as m\n"
        "m.FormationMachine\n"
        f"print(','.join(name for name in {IO_MODULES!r} if name in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "", f"importing the machine loaded {done.stdout.strip()}"


def test_the_probe_sees_an_io_import() -> None:
    """The check above can fail: the driver does load trio."""
    probe = "import sys, actors.formation.actor\nprint('trio' in sys.modules)\n"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "True"
