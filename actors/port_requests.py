"""Messages a formation actor sends the fleet for ports beyond its first (blue-green staging).
Kept apart so that both actors can import them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AllocatePort:
    """A second port for a formation (its staging process during an update)."""

    formation_id: str


@dataclass(frozen=True)
class ReleasePort:
    formation_id: str
    port: int
