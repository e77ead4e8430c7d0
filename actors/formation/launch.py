"""How a formation's process is launched: its argv, working directory, environment and logs.

A plain function of what it is given, so the actor (its active process) and the job runner
(an update's staging process) build the same launch without sharing an object.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from supervisor.core.manifest import FormationSpec
from supervisor.storage.home import Home

from ..process import HOME_ENV
from ..spawn import LaunchSpec

# A formation's launch, bound to its home and id: (spec, version_dir, port) -> LaunchSpec.
LaunchSpecFor = Callable[[FormationSpec, Path, int], LaunchSpec]


def launch_spec(
    home: Home,
    server_url: str,
    formation_id: str,
    spec: FormationSpec,
    version_dir: Path,
    port: int,
) -> LaunchSpec:
    """Version `spec` of the formation, run from `version_dir`, told to listen on `port`;
    fsup's own environment plus the manifest's, then what fsup sets (which wins)."""
    env = dict(os.environ)
    env.update(spec.env)
    env.update(
        PORT=str(port),
        HOST="127.0.0.1",
        FORMATION_ID=formation_id,
        FORMATION_VERSION=spec.version,
        MUXI_SERVER_URL=server_url,
    )
    env[HOME_ENV] = str(home.root)
    argv = list(spec.command)
    if "/" in argv[0] and not os.path.isabs(argv[0]):
        argv[0] = str(version_dir / argv[0])
    return LaunchSpec(
        argv=tuple(argv),
        cwd=version_dir,
        env=env,
        log_dir=home.formation_logs(formation_id),
        version=spec.version,
    )
