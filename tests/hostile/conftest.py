"""The hostile corpus's fixtures: one real fsup per module, and after every case a check that
nothing changed.

`target` (module scope) starts fsup in its own home with a small fleet (a module may name it in
`FLEET`) and one completed search. `guard` (autouse) snapshots the formations, their processes,
the files under the home, the places outside it where a planted file could land, the searches
and fsup's log before each case; after the case `pytest_runtest_call` compares, so a change
fails the case itself. Between cases the fleet is repaired (fsup restarted if a case ended it,
stray formations deleted), so one defect does not cascade into the cases after it.
"""

from __future__ import annotations

from collections.abc import Generator, Iterator
from pathlib import Path

import pytest
from hostile_kit import Target

DEFAULT_FLEET = ("alpha", "beta")


@pytest.fixture(scope="module")
def target(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Target]:
    """A running fsup with the module's fleet deployed and a finished baseline search."""
    fleet = getattr(request.module, "FLEET", DEFAULT_FLEET)
    root: Path = tmp_path_factory.mktemp("hostile")
    hostile = Target(root, fleet)
    try:
        hostile.launch()
    except BaseException:
        hostile.close()
        raise
    yield hostile
    code, leftovers = hostile.close()
    assert code == 0, f"fsup exited with {code}\n{hostile.server.log_tail()}"
    assert not leftovers, f"formation processes left behind: {leftovers}"


@pytest.fixture(autouse=True)
def guard(request: pytest.FixtureRequest, target: Target) -> Iterator[Target]:
    """Snapshot before the case (checked by `pytest_runtest_call`); repair after it."""
    if not target.alive():
        target.restore()
    request.node.hostile_before = target.snapshot()
    request.node.hostile_target = target
    yield target
    target.restore()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, object, object]:
    """After the case itself: compare with the snapshot; a change fails the case."""
    failure: BaseException | None = None
    result: object = None
    try:
        result = yield
    except BaseException as exc:  # noqa: BLE001 - re-raised below, with the snapshot's verdict
        failure = exc
    target: Target | None = getattr(item, "hostile_target", None)
    if target is not None:
        problems = target.verify(item.hostile_before)  # type: ignore[attr-defined]
        if problems:
            message = "after the case, fsup is not as it was:\n- " + "\n- ".join(problems)
            if failure is None:
                pytest.fail(message, pytrace=False)
            failure.add_note(message)
    if failure is not None:
        raise failure
    return result
