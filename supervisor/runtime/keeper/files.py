"""The CRI files of a formation's versions: `<dir>/<version>.log` and its backups, kept by the
keeper, their only writer.

Appends go through one `os.write` per batch of whole lines on an O_APPEND descriptor, so a
reader never sees half a line but the last one being written. Rotation renames
(`.log.N-1` -> `.log.N` ... `.log` -> `.log.1`) and opens a new `.log`: nothing is copied or
truncated, so no line is lost between a copy and a truncate (what the old rotation from
outside risked). With `backups = 0` the full file is removed. Several pairs of pipes of the
same (dir, version), say a restarted process and a grandchild of the old one still writing,
share one open file: `LogFiles` counts its users.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

Diagnose = Callable[[str], None]

FILE_MODE = 0o600
DIR_MODE = 0o700


class LogFile:
    """One version's current file, open for appending, and its rotation."""

    def __init__(self, directory: Path, name: str, max_bytes: int, backups: int) -> None:
        self.path = directory / f"{name}.log"
        self.max_bytes = max_bytes
        self.backups = backups
        self.users = 0
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        # Where the next rotation happens: max_bytes, or further on after a failed rotation,
        # so that a folder that cannot be renamed in is not retried at every write.
        self._rotate_at = max_bytes

    def _open(self) -> int:
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
        return os.open(self.path, flags, FILE_MODE)

    def set_limits(self, max_bytes: int, backups: int) -> None:
        """Rotate at `max_bytes` and keep `backups` from now on (the latest pair's say)."""
        self.max_bytes, self.backups = max_bytes, backups
        self._rotate_at = max_bytes

    def write(self, data: bytes, diagnose: Diagnose) -> None:
        """Append `data` (whole CRI lines), then rotate when the file reached max_bytes.
        A failed write (a full disk, a removed folder) is told to `diagnose` and the data
        dropped: the keeper must go on reading, or the children block."""
        view, before = memoryview(data), self._size
        try:
            while view:
                written = os.write(self._fd, view)
                self._size += written
                view = view[written:]
        except OSError as error:
            diagnose(f"cannot write {self.path}: {error}; {len(view)} bytes dropped")
            self._cut_back(before, diagnose)
        if self._size >= self._rotate_at:
            self.rotate(diagnose)

    def _cut_back(self, size: int, diagnose: Diagnose) -> None:
        """Drop the part of a batch a failed write left (the keeper is the file's only
        writer): a torn line would be glued to the next batch's first one."""
        if self._size == size:
            return
        try:
            os.ftruncate(self._fd, size)
            self._size = size
        except OSError as error:
            diagnose(f"cannot cut {self.path} back to whole lines: {error}")

    def reopen_if_moved(self, diagnose: Diagnose) -> None:
        """Open the path anew when the file held open is no longer there (its folder was
        removed and made again: a formation deleted and deployed again while a pair of the
        old one still wrote), so lines go where readers look."""
        try:
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                return
        except FileNotFoundError:
            pass
        except OSError:
            return
        try:
            self.path.parent.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            fd = self._open()
        except OSError as error:
            diagnose(f"cannot open {self.path} again: {error}")
            return
        os.close(self._fd)
        self._fd, self._size = fd, os.fstat(fd).st_size
        self._rotate_at = self.max_bytes

    def rotate(self, diagnose: Diagnose) -> None:
        """Shift the backups up by one, make the current file `.log.1` (or remove it when no
        backup is kept) and open a new current file."""
        try:
            self._shift()
            fd = self._open()
        except OSError as error:
            diagnose(f"cannot rotate {self.path}: {error}")
            self._rotate_at = self._size + self.max_bytes
            return
        os.close(self._fd)
        self._fd, self._size, self._rotate_at = fd, 0, self.max_bytes

    def _shift(self) -> None:
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
            return
        base = str(self.path)
        for index in range(self.backups - 1, 0, -1):
            older = f"{base}.{index}"
            if os.path.exists(older):
                os.replace(older, f"{base}.{index + 1}")
        os.replace(base, f"{base}.1")

    def close(self) -> None:
        """Close the descriptor (the data is on disk already: no buffer)."""
        os.close(self._fd)


class LogFiles:
    """The open files by (dir, version), shared by the pairs that write them."""

    def __init__(self) -> None:
        self._files: dict[Path, LogFile] = {}

    def __len__(self) -> int:
        return len(self._files)

    def acquire(
        self,
        directory: Path,
        name: str,
        max_bytes: int,
        backups: int,
        diagnose: Diagnose = lambda message: None,
    ) -> LogFile:
        """The file of (directory, name), opened (and its folder made, 0700) if no pair
        writes it yet, or opened anew if it was removed meanwhile. The latest pair's limits
        apply to all of them."""
        path = directory / f"{name}.log"
        log_file = self._files.get(path)
        if log_file is not None:
            log_file.reopen_if_moved(diagnose)
        else:
            directory.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
            log_file = self._files[path] = LogFile(directory, name, max_bytes, backups)
        log_file.set_limits(max_bytes, backups)
        log_file.users += 1
        return log_file

    def release(self, log_file: LogFile) -> None:
        """One pair less writes `log_file`; the last one closes it."""
        log_file.users -= 1
        if log_file.users <= 0:
            del self._files[log_file.path]
            log_file.close()

    def close_all(self) -> None:
        """Close every file (at exit)."""
        for log_file in self._files.values():
            log_file.close()
        self._files.clear()
