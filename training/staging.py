"""Outputs written all or nothing: check that a path can be written before the slow work,
write under a hidden temporary name beside the final place, then rename into place.

A failure or a crash at any point leaves the old output or the new one, never half of one;
`discard` removes what was staged when the run gives up.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class WriteError(Exception):
    """An output cannot be written; the message names it and says why."""


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def check_writable(path: Path, what: str, *, folder: bool = False) -> None:
    """Raise WriteError if `path` (a file, or a folder with `folder`) cannot be written.
    Creates nothing."""
    if path.exists() and path.is_dir() != folder:
        raise WriteError(f"cannot write {what} {path}: it is "
                         + ("not a directory" if folder else "a directory"))
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise WriteError(f"cannot write {what} {path}: {parent} is not a directory")
    try:
        with tempfile.TemporaryFile(dir=path if path.is_dir() else parent):
            pass
    except OSError as exc:
        raise WriteError(f"cannot write {what} {path}: {_reason(exc)}") from None


def stage_file(path: Path, data: bytes) -> Path:
    """`data` in a temporary file beside `path`, fsynced; `commit` puts it in place."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        os.fchmod(fd, 0o644)  # mkstemp's 0600 would hide it from a server running as another uid
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise WriteError(f"cannot write {path}: {_reason(exc)}") from None
        raise
    return Path(tmp)


def stage_folder(path: Path) -> Path:
    """An empty temporary folder beside `path`, to fill and then `commit`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staged = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        staged.chmod(0o755)
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {_reason(exc)}") from None
    return staged


def commit(staged: Path, path: Path) -> None:
    """Rename a staged file or folder to `path`, replacing what is there."""
    old = None
    try:
        if staged.is_dir() and (path.exists() or path.is_symlink()):
            # rename() does not replace a non-empty folder: move the old one aside first.
            old = staged.with_name(staged.name + ".old")
            os.replace(path, old)
        try:
            os.replace(staged, path)
        except OSError:
            if old is not None:
                os.replace(old, path)
            raise
    except OSError as exc:
        raise WriteError(f"cannot write {path}: {_reason(exc)}") from None
    if old is not None:
        discard(old)


def discard(*paths: Path | None) -> None:
    """Remove staged files and folders that were not committed."""
    for path in paths:
        if path is None:
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
