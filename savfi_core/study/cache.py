"""When a finished job can be reused: its hash, its record, the digests of its outputs.

A job is skipped when its record says it finished with the same *job hash*::

    hash = sha256(stage, notebook content, parameters, [digest of each upstream job's outputs],
                  [digest of the weights file it starts from, the shipped one for weights: default],
                  digest of the savfi_core source files the notebook's code runs)

so editing a notebook or a parameter, shipping new weights or changing library code that the job
runs reruns that job, and everything downstream whose inputs then change; a change to a file the
job does not run (see :mod:`savfi_core.study.code`, the import graph of the notebook) leaves it
cached, and a rerun after an interruption continues where it stopped. Each record also names the
files of that digest, the commit, and whether the package's tree had uncommitted changes.
"""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from savfi_core.checkpoint import file_sha256
from savfi_core.study.code import notebook_code, used_files

PACKAGE_ROOT = Path(__file__).resolve().parents[1]
SOURCE_SUFFIXES = (".py", ".cu")
# Files of a job folder that are bookkeeping, not results: left out of the output digest because
# they hold timestamps and absolute paths.
BOOKKEEPING_FILES = ("notebook.ipynb", "parameters.yaml", "log.txt", "job.json", "run.json", "error.json",
                     "stage_timing.json", "job_process.json")


def source_files(root: Path | None = None) -> list[Path]:
    root = PACKAGE_ROOT if root is None else root
    return sorted(path for path in root.rglob("*") if path.suffix in SOURCE_SUFFIXES and "__pycache__" not in path.parts)


def source_digest(root: Path | None = None, files: list[Path] | None = None) -> str:
    """sha256 over (relative path, content hash) of ``files`` (default: every source file of savfi_core)."""
    root = PACKAGE_ROOT if root is None else root
    digest = hashlib.sha256()
    for path in source_files(root) if files is None else files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + file_sha256(path).encode() + b"\n")
    return digest.hexdigest()


def notebook_code_files(notebook: str | os.PathLike, root: Path | None = None) -> list[Path]:
    """The savfi_core files a notebook's code runs (``savfi_core.study.code``)."""
    return used_files(notebook_code(Path(notebook)), PACKAGE_ROOT if root is None else root)


class CodeDigests:
    """Digest of the code each job runs, computed once per notebook for one run of the grid (the
    files are read when first asked: an edit during a run counts from the next run)."""

    def __init__(self, root: Path | None = None):
        self.root = PACKAGE_ROOT if root is None else root
        self._by_notebook: dict[str, tuple[str, list[str]]] = {}

    def files_and_digest(self, job) -> tuple[str, list[str]]:
        key = str(Path(job.notebook).resolve())
        if key not in self._by_notebook:
            files = notebook_code_files(job.notebook, self.root)
            self._by_notebook[key] = (source_digest(self.root, files), [path.relative_to(self.root).as_posix() for path in files])
        return self._by_notebook[key]

    def __call__(self, job) -> str:
        return self.files_and_digest(job)[0]

    def files(self, job) -> list[str]:
        return self.files_and_digest(job)[1]


def code_state(root: Path | None = None) -> dict[str, Any]:
    """{'commit': HEAD or None, 'dirty': uncommitted changes under savfi_core (None without git)}."""
    root = PACKAGE_ROOT if root is None else root

    def git(*arguments: str) -> str | None:
        try:
            completed = subprocess.run(["git", *arguments], cwd=root, capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return completed.stdout.strip() if completed.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--", ".") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def output_digest(job_dir: Path) -> str:
    """sha256 over (relative path, content hash) of every output file of a finished job."""
    digest = hashlib.sha256()
    for path in sorted(p for p in job_dir.rglob("*") if p.is_file()):
        relative = path.relative_to(job_dir).as_posix()
        if relative in BOOKKEEPING_FILES:
            continue
        digest.update(relative.encode() + b"\0" + file_sha256(path).encode() + b"\n")
    return digest.hexdigest()


def read_record(job_dir: Path) -> dict[str, Any] | None:
    path = job_dir / "job.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a record cut off by an interruption: the job simply runs again


def write_record(job_dir: Path, record: dict[str, Any]) -> None:
    """Write job.json atomically (a reader never sees half a record)."""
    job_dir.mkdir(parents=True, exist_ok=True)
    temporary = job_dir / "job.json.tmp"
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True, default=str))
    os.replace(temporary, job_dir / "job.json")


def input_references(value: Any) -> list[tuple[str, str]]:
    if isinstance(value, tuple):
        return [value]
    if isinstance(value, list):
        return [reference for item in value for reference in input_references(item)]
    if isinstance(value, dict):
        return [reference for item in value.values() for reference in input_references(item)]
    raise TypeError(f"input reference must be (job_id, file), a list or a dict of them, got {value!r}")


def weights_file_digest(parameters: dict[str, Any]) -> str | None:
    """sha256 of the weights file a job starts from (``weights: default`` is the shipped file of
    its backbone and size), so that new shipped weights rerun the jobs that read them."""
    weights = parameters.get("weights")
    if not isinstance(weights, str):
        return None
    if weights == "default":
        from savfi_core.backbones import default_weights_path
        from savfi_core.backbones.carrier import CarrierWeightsError

        if "backbone" not in parameters:
            return None
        try:
            path = Path(default_weights_path(parameters["backbone"], parameters.get("size", "tiny")))
        except CarrierWeightsError:
            return None  # the carrier package is missing: the job fails when it loads them, saying what to install
    else:
        path = Path(weights)
    return file_sha256(path) if path.is_file() else None


def job_hash(job, upstream_digests: dict[str, str], code_digest: str | None = None) -> str:
    """sha256 of stage, notebook content, parameters, upstream outputs, weights file and code
    (see the module doc); ``code_digest`` defaults to the digest of the savfi_core files the
    job's notebook runs, as they are now."""
    payload = {
        "stage": job.stage,
        "notebook": file_sha256(job.notebook),
        "parameters": job.parameters,
        "inputs": {name: [list(ref) for ref in input_references(value)] for name, value in sorted(job.inputs.items())},
        "upstream": {job_id: upstream_digests[job_id] for job_id in sorted(job.depends_on)},
        "code": CodeDigests()(job) if code_digest is None else code_digest,
    }
    weights = weights_file_digest(job.parameters)
    if weights is not None:
        payload["weights_file"] = weights
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def resolve_inputs(job, grid_dir: Path) -> dict[str, Any]:
    """Parameters with every upstream reference replaced by an absolute path."""

    def resolve(value: Any) -> Any:
        if isinstance(value, tuple):
            upstream, relative = value
            path = (grid_dir / upstream / relative) if relative else (grid_dir / upstream)
            return str(path.resolve())
        if isinstance(value, list):
            return [resolve(item) for item in value]
        return {key: resolve(item) for key, item in value.items()}

    return {**job.parameters, **{name: resolve(value) for name, value in job.inputs.items()}}
