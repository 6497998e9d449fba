"""Output safety of the CLI: check an output path before any work, replace it atomically.

    target = check_output(path, overwrite=False)     # OutputError now, not after the compute
    with replace_atomically(target) as temporary:    # a sibling of path, same kind and suffix
        write(temporary)                             # renamed over path only if this succeeds

An output is a video file (its suffix says the container) or a folder of numbered frames. An
existing video, or a folder holding anything, is refused unless ``overwrite``; with it, the whole
output is replaced, never mixed: a new folder is written beside the old one and swapped in by
renames at the end, so a run that fails (full disk, killed) leaves the previous output as it was
and no partial file under the final name.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

VIDEO_SUFFIXES = {".mp4", ".mkv", ".mov", ".avi", ".webm", ".m4v"}


class OutputError(ValueError):
    """The output path cannot be written as asked; ``str()`` is ``"<path>: <what>"``."""

    def __init__(self, path: str | os.PathLike, what: str) -> None:
        super().__init__(f"{path}: {what}")
        self.path = Path(path)


@dataclass(frozen=True)
class OutputTarget:
    """A checked output: ``kind`` is ``'video'`` or ``'frames'`` (a folder of PNGs)."""

    path: Path
    kind: str


def describe_os_error(error: OSError, path: str | os.PathLike) -> OutputError:
    """An OSError while writing ``path`` as one line that says what happened to which file."""
    if error.errno == errno.ENOSPC:
        return OutputError(path, "no space left on device while writing it")
    if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return OutputError(path, f"cannot write there: {os.strerror(error.errno)}")
    return OutputError(path, f"writing failed: {error.strerror or error}")


def check_output(path: str | os.PathLike, overwrite: bool = False) -> OutputTarget:
    """Validate ``path`` as an output before anything is computed.

    A path with a video suffix is a video; a path without a suffix, or an existing folder, is a
    frame folder; any other suffix is refused. The parent folder is created if missing and must
    accept a file (probed by creating and removing one: this also catches read-only file systems).
    """
    path = Path(path)
    if path.is_dir():
        kind = "frames"
    elif path.suffix.lower() in VIDEO_SUFFIXES:
        kind = "video"
    elif path.suffix:
        raise OutputError(path, f"unknown output suffix {path.suffix!r}: use a folder (no suffix) for PNG frames "
                                f"or a video file ({', '.join(sorted(VIDEO_SUFFIXES))})")
    else:
        kind = "frames"
    if path.exists():
        if kind == "video" and not path.is_file():
            raise OutputError(path, "exists and is not a file")
        if kind == "frames" and not path.is_dir():
            raise OutputError(path, "exists and is not a folder")
        if not overwrite and (kind == "video" or any(path.iterdir())):
            what = "video exists" if kind == "video" else "folder is not empty"
            raise OutputError(path, f"output {what}; pass --overwrite to replace it (the whole output is replaced)")
    parent = path.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise OutputError(parent, "is a file, not a folder the output can go into") from None
    except OSError as error:
        raise describe_os_error(error, parent) from error
    try:
        descriptor, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=parent)
        os.close(descriptor)
        os.unlink(probe)
    except OSError as error:
        raise describe_os_error(error, parent) from error
    return OutputTarget(path, kind)


@contextlib.contextmanager
def replace_atomically(target: OutputTarget) -> Iterator[Path]:
    """Yield a temporary sibling of ``target.path`` to write into; on success it replaces the
    output (the old one is removed only after the new one is in place); on any failure the
    temporary is removed and the old output is untouched. OSErrors become :class:`OutputError`."""
    path = target.path
    parent = path.parent
    if target.kind == "video":
        descriptor, name = tempfile.mkstemp(prefix=f".{path.stem}.partial-", suffix=path.suffix, dir=parent)
        os.close(descriptor)
    else:
        name = tempfile.mkdtemp(prefix=f".{path.name}.partial-", dir=parent)
    temporary = Path(name)
    try:
        try:
            yield temporary
        except OSError as error:
            raise describe_os_error(error, path) from error
        try:
            if target.kind == "video":
                os.replace(temporary, path)
            else:
                _swap_folder(temporary, path)
        except OSError as error:
            raise describe_os_error(error, path) from error
    finally:
        if temporary.is_dir():
            shutil.rmtree(temporary, ignore_errors=True)
        elif temporary.exists():
            temporary.unlink()


def _swap_folder(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path``: the old folder goes aside first, then is deleted."""
    if not path.exists():
        os.rename(new, path)
        return
    aside = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.rmdir(aside)
    os.rename(path, aside)
    try:
        os.rename(new, path)
    except OSError:
        os.rename(aside, path)  # put the old output back
        raise
    shutil.rmtree(aside, ignore_errors=True)
