"""Running a list of jobs on any ``concurrent.futures.Executor`` in dependency order.

``graphlib.TopologicalSorter`` says which jobs are ready; each ready job is either reused
(its record says it finished with the current hash, see :mod:`savfi_core.study.cache`), skipped
(an upstream job failed) or submitted to the executor: a thread pool of subprocesses on this
machine (``--jobs N``) or a Dask cluster through ``Client.get_executor()`` (``--executor dask``).
"""
from __future__ import annotations

import concurrent.futures
import graphlib
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from savfi_core.study.cache import (
    BOOKKEEPING_FILES, CodeDigests, code_state, job_hash, output_digest, read_record, resolve_inputs, write_record,
)
from savfi_core.study.execute import execute_job
from savfi_core.study.expand import Job
from savfi_core.procs import stop_job_processes


@dataclass
class RunSummary:
    """Outcome of ``run_jobs``: job id -> status ('done', 'cached', 'failed', 'skipped')."""

    statuses: dict[str, str]
    errors: dict[str, str]

    @property
    def failed(self) -> list[str]:
        return [job_id for job_id, status in self.statuses.items() if status == "failed"]

    @property
    def skipped(self) -> list[str]:
        return [job_id for job_id, status in self.statuses.items() if status == "skipped"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.skipped


def job_status(job: Job, grid_dir: Path, digests: dict[str, str], code_digest: CodeDigests) -> tuple[str, str | None]:
    """('cached', hash) when the job finished with an unchanged hash, else ('pending', hash|None).

    ``digests`` holds output digests of upstream jobs known to be current; the hash is None when
    an upstream job is not current (so this one must run after it anyway).
    """
    if any(upstream not in digests for upstream in job.depends_on):
        return "pending", None
    current = job_hash(job, digests, code_digest(job))
    record = read_record(grid_dir / job.job_id)
    if record and record.get("status") == "done" and record.get("hash") == current:
        return "cached", current
    return "pending", current


def plan(jobs: list[Job], grid_dir: Path) -> dict[str, str]:
    """Status of every job without running anything ('cached' or 'pending'), for --dry-run."""
    code_digest = CodeDigests()
    digests: dict[str, str] = {}
    statuses = {}
    for job in jobs:
        status, _ = job_status(job, grid_dir, digests, code_digest)
        statuses[job.job_id] = status
        if status == "cached":
            digests[job.job_id] = read_record(grid_dir / job.job_id)["output_digest"]
    return statuses


def publish(job_dir: Path, grid_dir: Path) -> None:
    """Copy a job's outputs (not its bookkeeping) into the grid folder."""
    for path in job_dir.iterdir():
        if path.name in BOOKKEEPING_FILES:
            continue
        target = grid_dir / path.name
        if path.is_dir():
            shutil.rmtree(target, ignore_errors=True)
            shutil.copytree(path, target)
        else:
            shutil.copy2(path, target)


def run_jobs(
    jobs: list[Job], grid_dir: str | os.PathLike, *, executor: concurrent.futures.Executor, force: bool = False,
    threads: int = 1, working_directory: str | os.PathLike | None = None, kernel_name: str | None = None,
    progress: Callable[[str, str], None] | None = None, warm_kernels: str | None = None,
) -> RunSummary:
    """Run ``jobs`` on ``executor`` as their dependencies allow; reuse cached ones unless ``force``.

    When a job fails, its dependants (transitively) are marked skipped and the others continue.
    A dependency outside ``jobs`` (``--only``) must already be done. progress(job_id, status) is
    called as each job is settled. warm_kernels: the socket of this run's warm-kernel server
    (``savfi_core.study.warm_kernels``), or None for kernels started from scratch.
    """
    grid_dir = Path(grid_dir).resolve()
    working_directory = str(Path(working_directory or os.getcwd()).resolve())
    code_digest, code = CodeDigests(), code_state()
    by_id = {job.job_id: job for job in jobs}
    digests: dict[str, str] = {}
    for dep in sorted({dep for job in jobs for dep in job.depends_on if dep not in by_id}):
        record = read_record(grid_dir / dep)
        if record and record.get("status") == "done":
            digests[dep] = record["output_digest"]
    statuses: dict[str, str] = {}
    errors: dict[str, str] = {}
    hashes: dict[str, str] = {}
    running: dict[concurrent.futures.Future, str] = {}
    sorter = graphlib.TopologicalSorter({job.job_id: [d for d in job.depends_on if d in by_id] for job in jobs})
    sorter.prepare()

    def settle(job_id: str, status: str) -> None:
        statuses[job_id] = status
        sorter.done(job_id)
        if progress:
            progress(job_id, status)

    def blocker_of(job: Job) -> str | None:
        for dep in job.depends_on:
            if statuses.get(dep) in ("failed", "skipped") or (dep not in by_id and dep not in digests):
                return dep
        return None

    def start(job_id: str) -> None:
        job, job_dir = by_id[job_id], grid_dir / job_id
        blocker = blocker_of(job)
        if blocker is not None:
            errors[job_id] = f"upstream {blocker} " + (statuses.get(blocker) or "has not run")
            write_record(job_dir, {"job_id": job_id, "status": "skipped", "error": errors[job_id]})
            return settle(job_id, "skipped")
        status, current = job_status(job, grid_dir, digests, code_digest)
        if status == "cached" and not force:
            digests[job_id] = read_record(job_dir)["output_digest"]
            if job.publish:
                publish(job_dir, grid_dir)
            return settle(job_id, "cached")
        previous = read_record(job_dir)
        # Keep the folder of an interrupted attempt with the same hash, so that training
        # notebooks resume from their checkpoint; anything else starts from an empty folder.
        if force or previous is None or previous.get("hash") != current or previous.get("status") == "done":
            shutil.rmtree(job_dir, ignore_errors=True)
        hashes[job_id] = current
        write_record(job_dir, {"job_id": job_id, "stage": job.stage, "status": "queued", "hash": current,
                               "queued": time.strftime("%Y-%m-%dT%H:%M:%S")})
        spec = {"job_id": job_id, "notebook": str(job.notebook), "job_dir": str(job_dir),
                "parameters": {**resolve_inputs(job, grid_dir), "output_dir": str(job_dir)},
                "working_directory": working_directory, "threads": threads, "kernel_name": kernel_name,
                "python": sys.executable, "launcher": job.launcher, "warm_kernels": warm_kernels}
        running[executor.submit(execute_job, spec)] = job_id

    def finish(future: concurrent.futures.Future) -> None:
        job_id = running.pop(future)
        job, job_dir = by_id[job_id], grid_dir / job_id
        try:
            outcome = future.result()
        except Exception as error:  # the executor itself failed (e.g. a Dask worker died)
            outcome = {"status": "failed", "error": f"{type(error).__name__}: {error}", "seconds": None, "timing": {}}
        record = {"job_id": job_id, "stage": job.stage, "hash": hashes[job_id], "status": outcome["status"],
                  "error": outcome["error"], "seconds": outcome["seconds"],
                  "code_digest": code_digest(job), "code_files": code_digest.files(job), **code,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "parameters": job.parameters, **outcome.get("timing", {})}
        if outcome["status"] == "done":
            record["output_digest"] = digests[job_id] = output_digest(job_dir)
            if job.publish:
                publish(job_dir, grid_dir)
        else:
            errors[job_id] = outcome["error"]
        write_record(job_dir, record)
        settle(job_id, outcome["status"])

    while sorter.is_active():
        for job_id in sorter.get_ready():
            start(job_id)
        if not running:
            continue  # everything ready was settled at once; the sorter has the next ones
        try:
            finished, _ = concurrent.futures.wait(list(running), return_when=concurrent.futures.FIRST_COMPLETED)
        except KeyboardInterrupt:
            # Ctrl-C (or SIGTERM): start nothing more. Queued jobs are cancelled (their folders
            # say so); running jobs are in process groups of their own, stopped here, so none
            # outlives the runner. Rerunning continues here.
            for future in running:
                future.cancel()
            stop_job_processes()
            for future, job_id in running.items():
                write_record(grid_dir / job_id, {"job_id": job_id, "stage": by_id[job_id].stage, "status": "interrupted",
                                                 "hash": hashes[job_id]})
            raise
        for future in finished:
            finish(future)
    return RunSummary(statuses, errors)
