"""Helpers for running the README as a test (`tests/test_e2e_readme.py`): reading its
Markdown (sections, the commands of ```sh blocks, headings' anchors, link targets) and
running commands one at a time in one bash process, as a reader would in a terminal.

They know Markdown and bash, not what the README promises: what each command must show, and
which links must resolve, stays in the test.
"""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# --- Reading Markdown -------------------------------------------------------------------------


def sections(text: str) -> dict[str, str]:
    """The README's `## ` sections by title."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    return {title.strip(): body for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def shell_commands(section: str) -> list[str]:
    """The commands of a section's ```sh blocks, continuation lines kept with their command."""
    commands: list[str] = []
    for block in re.findall(r"^```sh\n(.*?)^```", section, flags=re.MULTILINE | re.DOTALL):
        pending = ""
        for line in block.splitlines():
            pending += line
            if line.endswith("\\"):
                pending += "\n"
                continue
            if pending.strip():
                commands.append(pending)
            pending = ""
        assert not pending, f"a block ends in a continuation line: {pending!r}"
    return commands


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip()).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", strip_code(markdown), flags=re.MULTILINE):
        base, n = slug(heading), 0
        name = base
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def strip_code(markdown: str) -> str:
    """The prose: fenced blocks and inline code spans removed."""
    text = re.sub(r"^(```|~~~).*?^\1[ \t]*$", "", markdown, flags=re.MULTILINE | re.DOTALL)
    return re.sub(r"(`+).+?\1", "", text, flags=re.DOTALL)


def link_targets(markdown: str) -> list[str]:
    """Every link target: inline links and images, reference definitions, autolinks, bare
    URLs (which GitHub links too) and HTML href/src."""
    prose = strip_code(markdown)
    targets = re.findall(r"\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)", prose)
    targets += re.findall(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", prose, flags=re.MULTILINE)
    targets += re.findall(r"<([a-zA-Z][a-zA-Z0-9+.-]*:[^>\s]*)>", prose)
    targets += re.findall(r"(?:href|src)\s*=\s*[\"']([^\"']*)[\"']", prose)
    bare = re.findall(r"(?<![(<\w])((?:[a-zA-Z][a-zA-Z0-9+.-]*://|www\.)[^\s)>]+)", prose)
    return targets + [url for url in bare if url not in targets]


# --- Running commands in one shell ------------------------------------------------------------


@dataclass
class Ran:
    command: str
    rc: int
    out_path: Path
    err_path: Path

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def json(self) -> Any:
        return json.loads(self.out)

    def report(self) -> str:
        return (
            f"$ {self.command}\n[exit {self.rc}]\n{self.out[-3000:]}\n[stderr]\n{self.err[-3000:]}"
        )


class Shell:
    """One bash process fed one command at a time; each command's output goes to its own files."""

    def __init__(self, cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.scratch = scratch
        self.count = 0
        with open(scratch / "bash.err", "wb") as errors:
            self.proc = subprocess.Popen(
                ["bash", "--noprofile", "--norc"],
                cwd=cwd,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
        self.send("set -o pipefail\n")

    def send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text.encode())
        self.proc.stdin.flush()

    def run(self, command: str, timeout: float = 120.0) -> Ran:
        self.count += 1
        out, err = self.scratch / f"{self.count}.out", self.scratch / f"{self.count}.err"
        marker = f"@@done {self.count} "
        # The command on its own lines, so that a trailing comment or `&` stays as written.
        self.send(
            f"{{ {command}\n}} </dev/null >{shlex.quote(str(out))} "
            f'2>{shlex.quote(str(err))}\necho "{marker}$?"\n'
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline().decode()
                if line.startswith(marker):
                    return Ran(command, int(line[len(marker) :]), out, err)
                if not line:
                    break
        ran = Ran(command, -1, out, err)
        raise AssertionError(
            f"no answer within {timeout}s\n{ran.report()}\n"
            f"{(self.scratch / 'bash.err').read_text()}"
        )

    def close(self) -> None:
        """Ends bash and everything it started (its session's process group)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(10)
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()
