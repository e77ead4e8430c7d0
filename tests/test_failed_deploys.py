"""What a failed first deploy leaves behind (`storage.failed_deploys`, the fleet's removal):
its log is kept under the home, cut to a bound, named by the error, read back with its
metadata, cleared by the next deploy of the id, and the oldest kept ones make room.

The fleet's part runs in-process on the world of test_fleet_actor (fake processes and probes,
virtual time); the end-to-end story is in test_e2e_failed_deploy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import trio
from log_kit import KeeperFiles, at
from test_fleet_actor import World, ask, expect, fleet_of, refused

from actors.fleet import Delete
from supervisor.core.errors import FsupError
from supervisor.storage import failed_deploys
from supervisor.storage.failed_deploys import KEEP_BYTES, META, keep, prune, read_meta
from supervisor.storage.formation_logs import tail

META_OF = {"formation_id": "web", "version": "1.0.0", "failed_at": "t", "code": "X", "message": "m"}


def test_keep_moves_the_logs_cuts_them_and_drops_rotated_copies(tmp_path: Path) -> None:
    logs, kept = tmp_path / "logs" / "web", tmp_path / "kept" / "web"
    logs.mkdir(parents=True)
    (logs / "stderr.log").write_text("boom\n")
    (logs / "stdout.log.1").write_text("old\n")
    big = b"".join(b"line %07d\n" % n for n in range(KEEP_BYTES // 10))  # over the bound
    (logs / "stdout.log").write_bytes(big)
    keep(logs, kept, META_OF)
    assert not logs.exists()
    assert sorted(p.name for p in kept.iterdir()) == [META, "stderr.log", "stdout.log"]
    assert (kept / "stderr.log").read_text() == "boom\n"
    cut = (kept / "stdout.log").read_bytes()
    assert len(cut) <= KEEP_BYTES and big.endswith(cut) and cut.startswith(b"line ")
    assert read_meta(kept) == META_OF


def test_keep_cuts_the_keepers_file_to_whole_lines_that_the_tail_reads(tmp_path: Path) -> None:
    logs, kept = tmp_path / "logs" / "web", tmp_path / "kept" / "web"
    logs.mkdir(parents=True)
    keeper = KeeperFiles(logs, "1.0.0")
    keeper.line(at(0), "stdout", "rotated away")
    keeper.rotate()
    for n in range(KEEP_BYTES // 40):  # over the bound
        keeper.line(at(1), "stderr", f"line {n:07d}")
    keep(logs, kept, META_OF)
    assert sorted(p.name for p in kept.iterdir()) == ["1.0.0.log", META]
    assert (kept / "1.0.0.log").stat().st_size <= KEEP_BYTES
    last = tail(kept, ("stdout", "stderr"), 2, 3)
    assert [(x.text, x.version) for x in last] == [
        (f"line {KEEP_BYTES // 40 - 2:07d}", "1.0.0"),
        (f"line {KEEP_BYTES // 40 - 1:07d}", "1.0.0"),
    ]


def test_keep_without_any_log_still_says_why(tmp_path: Path) -> None:
    kept = tmp_path / "kept" / "web"
    keep(tmp_path / "never-written", kept, META_OF)
    assert read_meta(kept) == META_OF and [p.name for p in kept.iterdir()] == [META]


def test_nothing_kept_reads_as_none(tmp_path: Path) -> None:
    assert read_meta(tmp_path / "absent") is None
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / META).write_text("{not json")
    assert read_meta(tmp_path / "broken") is None


def test_prune_removes_the_oldest_beyond_the_bound(tmp_path: Path) -> None:
    for n in range(5):
        folder = tmp_path / f"f{n}"
        folder.mkdir()
        (folder / META).write_text("{}")
        os.utime(folder / META, (1000 + n, 1000 + n))
    prune(tmp_path, 3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f2", "f3", "f4"]


def test_keep_bounds_how_many_are_kept(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(failed_deploys, "KEPT_MAX", 2)
    root = tmp_path / "kept"
    for n in range(3):
        kept = root / f"f{n}"
        keep(tmp_path / "none", kept, {**META_OF, "formation_id": f"f{n}"})
        os.utime(kept / META, (1000 + n, 1000 + n))
    # The third keep pruned before its own time was set: f0 (oldest) went.
    assert sorted(p.name for p in root.iterdir()) == ["f1", "f2"]


async def test_a_failed_first_start_keeps_its_log_until_the_id_is_deployed_again(
    tmp_path: Path, autojump_clock: Any
) -> None:
    healthy = {"now": False}
    world = World(tmp_path, healthy=lambda: healthy["now"])
    logs = world.home.formation_logs("web")
    logs.mkdir(parents=True)
    (logs / "stderr.log").write_text("listening on the wrong port\n")
    async with fleet_of(world) as (fleet, _):
        with world.bus.subscribe() as events:
            error = await refused(fleet, world.bundle("web"))
            gone = await expect(events, "formation_deleted", formation_id="web")
        assert gone.data == {"formation_id": "web", "deployed": False}
        kept = world.home.failed_deploy_logs("web")
        assert error.code == "HEALTH_CHECK_FAILED" and error.status == 422
        assert error.details["log_dir"] == str(kept)
        assert error.details["formation_id"] == "web"
        assert (kept / "stderr.log").read_text() == "listening on the wrong port\n"
        meta = read_meta(kept)
        assert meta is not None
        assert (meta["formation_id"], meta["version"], meta["code"]) == (
            "web",
            "1.0.0",
            "HEALTH_CHECK_FAILED",
        )
        assert meta["message"] == error.message and meta["failed_at"].endswith("Z")
        assert not logs.exists() and world.store.formation("web") is None
        # Fixed: the same id deploys (no 409), and the kept log of the failure goes.
        healthy["now"] = True
        assert (await ask(fleet, world.bundle("web")))["status"] == "running"
        assert not kept.exists()


async def test_a_first_start_ended_by_a_delete_keeps_nothing(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The user asked for it to go, files and logs: the deploy is answered with the
    interruption, and no log of it is kept."""
    world = World(tmp_path, healthy=lambda: False)
    logs = world.home.formation_logs("web")
    logs.mkdir(parents=True)
    (logs / "stderr.log").write_text("starting\n")
    async with fleet_of(world) as (fleet, _):
        errors: list[FsupError] = []
        async with trio.open_nursery() as nursery:

            async def deploy() -> None:
                errors.append(await refused(fleet, world.bundle("web")))

            nursery.start_soon(deploy)
            await trio.sleep(1.0)  # spawned, in its start gate
            assert await ask(fleet, Delete("web")) == {"id": "web", "deleted": True}
        assert errors and "log_dir" not in errors[0].details, errors
        assert not world.home.failed_deploy_logs("web").exists() and not logs.exists()
        assert world.store.formation("web") is None
