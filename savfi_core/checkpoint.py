"""Checkpoint files: atomic writes and loading that never executes pickled code.

Every checkpoint savfi reads goes through :func:`safe_load`, which calls
``torch.load(weights_only=True)``. The authors' SAVFI files contain two harmless non-tensor
types besides tensors and plain containers: ``argparse.Namespace`` (the ``arch`` entry of meta
checkpoints) and ``datetime.datetime`` (Super-SloMo's ``timestamp``). Those two are allowlisted;
anything else in a file is refused by PyTorch's restricted unpickler.
"""
from __future__ import annotations

import argparse
import datetime
import errno
import glob
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from savfi_core.runlock import process_is_running

# The only non-tensor classes the original checkpoints are known to hold (see module docstring).
SAFE_CHECKPOINT_GLOBALS = (argparse.Namespace, datetime.datetime, datetime.timedelta, datetime.timezone)


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, or does not fit the model it is loaded into."""


def safe_load(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a checkpoint with ``weights_only=True`` and the small allowlist above."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        with torch.serialization.safe_globals(list(SAFE_CHECKPOINT_GLOBALS)):
            return torch.load(path, map_location=map_location, weights_only=True)
    except CheckpointError:
        raise
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(f"cannot load checkpoint {path}: {error}") from error


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` with ``torch.save`` so that ``path`` is either the old or the new file.

    The data goes to a temporary file in the same folder (``.<name>.<pid>.<random>.tmp``), is
    flushed to disk, then renamed over ``path``: a run killed mid-write never leaves a truncated
    checkpoint behind. On any failure the temporary file is removed; temporaries of ``path`` left
    by a process that no longer runs (killed with SIGKILL mid-write) are removed on the next save.
    A full disk raises ``OSError(ENOSPC, "no space left on device while writing <path>")``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    # Serialized in memory first: torch.save's zip writer reports a full disk as an opaque
    # "unexpected pos" RuntimeError, a plain write says ENOSPC.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        try:
            _write_all(descriptor, buffer.getbuffer())
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.unlink(temporary)
        if isinstance(error, OSError) and error.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"no space left on device while writing {path}") from error
        raise
    return path


def _write_all(descriptor: int, data: memoryview) -> None:
    written = 0
    while written < len(data):
        written += os.write(descriptor, data[written:])


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove ``atomic_save`` temporaries of ``path`` whose writing process is gone; return them."""
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid_text = candidate.name[len(path.name) + 2 :].split(".", 1)[0]
        if not pid_text.isdigit() or process_is_running(int(pid_text)):
            continue  # not ours (or an older name without a pid), or still being written
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
    return removed

