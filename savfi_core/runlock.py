"""One runner per results folder: a lock file that names its holder.

    with hold_run_lock(grid_dir) as lock:      # raises RunLockError naming the holder
        ...                                     # run the jobs

The lock is ``<folder>/.savfi-run.lock``, taken with ``fcntl.flock`` (exclusive, non-blocking)
and holding a JSON line: pid, host, start time and command of the holder. The kernel releases a
``flock`` when the last descriptor of it closes, so a runner killed with SIGKILL never leaves a
lock that blocks forever; the job subprocesses inherit the descriptor (:attr:`RunLock.fileno`,
passed on by ``savfi_core.procs``), so the folder stays locked until the last process of the
run is gone, and a rerun can never meet a job of the previous run still writing in its folder.

Why not unlink the file on release: a second runner may already hold it open, and unlinking
would let it and a third runner lock two different files. Release truncates the file instead,
so a non-empty file found when taking the lock means its holder died without releasing it
(``RunLock.stale_holder``: reported, then taken over).

Where ``fcntl`` does not exist (Windows) the file is created with ``O_EXCL`` instead; a file
whose holder is no longer running (same host) is then removed as stale.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

LOCK_NAME = ".savfi-run.lock"


class RunLockError(RuntimeError):
    """Another process holds the lock of the folder; the message names it."""


def process_is_running(pid: int) -> bool:
    """Whether a process with this id exists on this host (signal 0 probes without sending)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to someone else
        return True
    except OSError:
        return False
    return True


def describe_holder(holder: dict[str, Any] | None) -> str:
    if not holder:
        return "an unknown process (the lock file is empty)"
    text = f"pid {holder.get('pid')} on {holder.get('host')} since {holder.get('started')}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


def _read_holder(path: Path) -> dict[str, Any] | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if not text:
        return None
    try:
        holder = json.loads(text)
    except json.JSONDecodeError:
        return {"pid": None, "host": None, "started": None, "command": f"unreadable lock content {text[:80]!r}"}
    return holder if isinstance(holder, dict) else None


@dataclass
class RunLock:
    """A held lock. ``stale_holder``: the record of a previous holder that never released it."""

    path: Path
    descriptor: int
    holder: dict[str, Any]
    stale_holder: dict[str, Any] | None = None
    _released: bool = field(default=False, repr=False)

    def fileno(self) -> int:
        return self.descriptor

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        try:
            os.ftruncate(self.descriptor, 0)  # "released": the next holder finds an empty file
        finally:
            if fcntl is not None:
                fcntl.flock(self.descriptor, fcntl.LOCK_UN)
            os.close(self.descriptor)
            if fcntl is None:
                self.path.unlink(missing_ok=True)
            _HELD.pop(str(self.path), None)


# Locks this process holds (path -> lock): the descriptors job subprocesses inherit.
_HELD: dict[str, RunLock] = {}


def held_descriptors() -> tuple[int, ...]:
    """Descriptors of the run locks this process holds (for ``subprocess.Popen(pass_fds=...)``)."""
    return tuple(lock.descriptor for lock in _HELD.values())


def acquire_run_lock(folder: str | os.PathLike, command: str | None = None) -> RunLock:
    """Take the lock of ``folder`` (created if missing) or raise :class:`RunLockError`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_NAME
    holder = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else " ".join(sys.argv),
    }
    if fcntl is not None:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            raise RunLockError(_refusal(folder, _read_holder(path))) from None
        stale = _read_holder(path)
    else:
        stale = None
        try:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            stale = _read_holder(path)
            same_host = stale and stale.get("host") == socket.gethostname()
            if not (same_host and isinstance(stale.get("pid"), int) and not process_is_running(stale["pid"])):
                raise RunLockError(_refusal(folder, stale)) from None
            path.unlink(missing_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, (json.dumps(holder) + "\n").encode(), 0)
    os.fsync(descriptor)
    lock = RunLock(path=path, descriptor=descriptor, holder=holder, stale_holder=stale)
    _HELD[str(path)] = lock
    return lock


def _refusal(folder: Path, holder: dict[str, Any] | None) -> str:
    message = f"{folder}: another run holds this results folder: {describe_holder(holder)}"
    pid = (holder or {}).get("pid")
    if isinstance(pid, int) and holder.get("host") == socket.gethostname() and not process_is_running(pid):
        message += "; that runner has exited but its job processes are still stopping, try again in a few seconds"
    else:
        message += "; wait for it to finish or stop it (kill its pid), then run again"
    return message


@contextlib.contextmanager
def hold_run_lock(folder: str | os.PathLike, command: str | None = None) -> Iterator[RunLock]:
    """``acquire_run_lock`` as a context manager: released on leaving, whatever happens."""
    lock = acquire_run_lock(folder, command)
    try:
        yield lock
    finally:
        lock.release()
