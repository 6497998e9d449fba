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
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

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

    The data goes to a temporary file in the same folder, is flushed to disk, then renamed over
    ``path``: a run killed mid-write never leaves a truncated checkpoint behind.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks (weights, sources, job outputs)."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
