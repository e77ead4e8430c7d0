"""Test-only fault injection: make an actor fail as if it had a bug, on demand.

The chaos tests must prove that an unexpected exception inside any actor is survived (logged,
answered `INTERNAL`, the actor restarted from the store). Real bugs cannot be summoned on cue,
so a test arms a fault for an actor by name and the next `count` messages that actor handles
raise `InjectedFault` in `Actor._dispatch`, before the handler runs, exactly where a bug in a
handler would surface.

The hook exists only when fsup is started with `FSUP_TEST_FAULTS=1`. The variable is read once,
when this module is imported at startup, into the constant `ENABLED`; `Actor._dispatch` tests
that constant before calling `trip`, so in production the hook is one false branch per message
(no call, no lookup, no lock), and the HTTP route that arms faults is never registered.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections import deque
from typing import Any, Final

log = logging.getLogger("fsup.faults")

ENV_VAR: Final = "FSUP_TEST_FAULTS"
#: Read once at import: a test cannot turn the hook on in a running production server.
ENABLED: Final[bool] = os.environ.get(ENV_VAR) == "1"
#: A file each fired fault is appended to, as a JSON line, before it is raised: a test that
#: SIGKILLs fsup still knows every fault that fired (the in-memory list dies with fsup).
LEDGER_VAR: Final = "FSUP_TEST_FAULTS_LEDGER"
LEDGER_PATH: Final = os.environ.get(LEDGER_VAR) if ENABLED else None

MAX_COUNT: Final = 1000
_FIRED_KEPT: Final = 1000

# Actor name -> faults still to raise. Only the trio thread touches it (actors and HTTP
# handlers share one event loop), so it needs no lock.
_armed: dict[str, int] = {}
# What fired, newest last, for a test to correlate a 500 it saw with a fault it caused.
_fired: deque[dict[str, Any]] = deque(maxlen=_FIRED_KEPT)


class InjectedFault(RuntimeError):
    """A failure a test asked for; never raised unless `FSUP_TEST_FAULTS=1`."""


def arm(actor: str, count: int) -> None:
    """Make the next `count` messages handled by the actor named `actor` fail (0 disarms)."""
    if count <= 0:
        _armed.pop(actor, None)
    else:
        _armed[actor] = count
    log.warning("fault injection: %s armed with %d fault(s)", actor, count)


def trip(name: str) -> None:
    """Raise `InjectedFault` if a fault is armed for the actor `name`; called per message."""
    left = _armed.get(name)
    if left is None:
        return
    if left <= 1:
        del _armed[name]
    else:
        _armed[name] = left - 1
    record = {"actor": name, "ts": time.time()}
    _fired.append(record)
    if LEDGER_PATH:
        # A blocking write on the event loop, acceptable in a test-only path: one short line
        # per fault, finished before the raise, so a kill cannot come in between.
        with open(LEDGER_PATH, "a", encoding="utf-8") as ledger:
            ledger.write(json.dumps(record) + "\n")
    raise InjectedFault(f"injected fault in {name} (FSUP_TEST_FAULTS)")


def reset() -> None:
    """Disarm every fault and forget those that fired: the clean slate a test leaves behind
    when it armed faults in its own process (a server's faults end with the server)."""
    _armed.clear()
    _fired.clear()


def status() -> dict[str, Any]:
    """The faults still armed and the ones that fired (wall-clock `ts`, newest last)."""
    return {"armed": dict(_armed), "fired": list(_fired)}
