"""No module of the project is over 500 lines (issue 10): a long module is a sign that two
concepts share it. Counted as `wc -l` does, on the formatted source."""

from __future__ import annotations

from pathlib import Path

LIMIT = 500
ROOT = Path(__file__).resolve().parent.parent
FOLDERS = ("supervisor", "actors", "tests", "bench", "examples")


def test_no_module_is_over_500_lines() -> None:
    long = {}
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            if ".peers" in path.parts or ".venv" in path.parts:
                continue
            lines = path.read_bytes().count(b"\n")
            if lines > LIMIT:
                long[str(path.relative_to(ROOT))] = lines
    assert long == {}, f"split these modules (over {LIMIT} lines): {long}"
