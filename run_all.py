#!/usr/bin/env python
"""Run a whole study grid: every notebook job of ``params/<grid>.yaml`` into ``results/<grid>/``.

    python run_all.py                                   # params/quick.yaml, as many jobs as cores (<= 4)
    python run_all.py --grid params/paper.yaml --dry-run
    python run_all.py --jobs 2 --only sepconv           # sepconv's jobs (and what they need)
    python run_all.py --executor dask --scheduler tcp://host:8786

Finished jobs whose parameters and inputs are unchanged are skipped (``--force`` reruns them),
so running the same command again after an interruption continues where it stopped. A failing
job is recorded in its folder (``job.json``, ``log.txt``, the executed ``notebook.ipynb``), the
jobs that depend on it are skipped, the rest go on, and the exit code is 1. One runner at a
time per results folder: a second one refuses (exit 3) and names the first (``savfi_core/runlock.py``);
jobs stop with their runner, even one killed with SIGKILL (``savfi_core/procs.py``).
See ``savfi_core/study/`` (``schema.py``: every key of a grid) for the grid format and ``results/README.md`` for clusters.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import signal
import sys
import threading
import time
from pathlib import Path

from savfi_core.study.expand import expand_grid, load_grid, select_jobs
from savfi_core.study.loader import GridError
from savfi_core.study.cache import read_record
from savfi_core.study.runner import plan, run_jobs
from savfi_core.study.timing import slowest_jobs_text, write_timing_table
from savfi_core.runlock import RunLockError, acquire_run_lock, describe_holder

DEFAULT_GRID = Path(__file__).resolve().parent / "params" / "quick.yaml"


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default=str(DEFAULT_GRID), help="grid YAML file (default: params/quick.yaml)")
    parser.add_argument("--results", default="results", help="results root; jobs go to RESULTS/<grid name>/<job id>/")
    parser.add_argument("--jobs", type=int, default=max(1, min(4, os.cpu_count() or 1)),
                        help="jobs run at once (local executor; LocalCluster workers with --executor dask); default: cores, at most 4")
    parser.add_argument("--executor", choices=("local", "dask"), default="local")
    parser.add_argument("--scheduler", help="Dask scheduler address (tcp://host:8786); without it a LocalCluster of --jobs workers")
    parser.add_argument("--threads", type=int, help="CPU threads per job (default: cores / --jobs, 1 on Dask)")
    parser.add_argument("--only", action="append", metavar="PATTERN",
                        help="run only jobs whose id matches (fnmatch, or substring without wildcards), plus their dependencies; repeatable")
    parser.add_argument("--force", action="store_true", help="rerun selected jobs even if finished and unchanged")
    parser.add_argument("--dry-run", action="store_true", help="check every value of the grid and list its jobs; run nothing")
    parser.add_argument("--kernel", help="Jupyter kernel name for papermill (default: the notebook's own)")
    parser.add_argument("--cold-kernels", action="store_true",
                        help="start every job's kernel from scratch instead of forking it from one process that has "
                             "imported torch (savfi_core/study/warm_kernels.py; local executor only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    try:
        grid = load_grid(arguments.grid)
        all_jobs = expand_grid(grid)
        jobs = select_jobs(all_jobs, arguments.only)
    except GridError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    grid_dir = Path(arguments.results) / grid.name

    if arguments.dry_run:
        statuses = plan(jobs, grid_dir)
        width = max(len(job.job_id) for job in jobs)
        print(f"grid {grid.name!r} from {arguments.grid}: {len(jobs)} jobs -> {grid_dir}/")
        for job in jobs:
            after = ", ".join(job.depends_on) if job.depends_on else "-"
            launch = f"torchrun x{job.processes}" if job.processes > 1 or (job.launcher or {}).get("kind") == "torchrun" else "python"
            print(f"  {job.job_id:<{width}}  {statuses[job.job_id]:<8}  {job.notebook.name:<20} {launch:<12} after: {after}")
        return 0

    try:
        lock = acquire_run_lock(grid_dir)
    except RunLockError as error:
        print(f"error: {error}", file=sys.stderr)
        return 3
    if lock.stale_holder:
        print(f"note: {grid_dir}: the previous run ({describe_holder(lock.stale_holder)}) ended without "
              f"releasing its lock; taking it over", file=sys.stderr)
    # `kill PID` stops the grid like Ctrl-C: running jobs are stopped, their folders marked.
    # (Restored afterwards: main() is also called in-process, by the tests.)
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler) if in_main_thread else None
    try:
        return _run(arguments, grid, jobs, grid_dir, all_jobs)
    finally:
        lock.release()
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous_handler)


def _run(arguments: argparse.Namespace, grid, jobs: list, grid_dir: Path, all_jobs: list) -> int:
    from tqdm.auto import tqdm

    cores = os.cpu_count() or 1
    client = cluster = None
    if arguments.executor == "dask":
        from distributed import Client, LocalCluster

        if arguments.scheduler:
            client = Client(arguments.scheduler)
        else:
            # Processes, one thread each: every job is itself a subprocess doing the work.
            cluster = LocalCluster(n_workers=arguments.jobs, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(cluster)
        executor = client.get_executor(pure=False)
        threads = arguments.threads or 1
        print(f"dask: {client}", file=sys.stderr)
    else:
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=arguments.jobs)
        threads = arguments.threads or max(1, cores // arguments.jobs)

    bar = tqdm(total=len(jobs), desc=f"grid {grid.name}", unit="job")

    def progress(job_id: str, status: str) -> None:
        bar.update(1)
        bar.set_postfix_str(f"{job_id}: {status}")
        if status in ("failed", "skipped"):
            bar.write(f"{status}: {job_id} (see {grid_dir / job_id}/)")

    start = time.perf_counter()
    interrupted = False
    try:
        with _kernel_server(arguments, threads) as warm_kernels:
            summary = run_jobs(jobs, grid_dir, executor=executor, force=arguments.force, threads=threads,
                               working_directory=Path.cwd(), kernel_name=arguments.kernel, progress=progress,
                               warm_kernels=warm_kernels)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        executor.shutdown(wait=not interrupted)
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    elapsed = time.perf_counter() - start
    if interrupted:
        print(f"grid {grid.name}: interrupted after {elapsed:.0f} s; finished jobs are kept in {grid_dir}/, "
              f"run the same command again to continue", file=sys.stderr)
        return 130

    counts = {status: list(summary.statuses.values()).count(status) for status in ("done", "cached", "failed", "skipped")}
    print(f"grid {grid.name}: {counts['done']} ran, {counts['cached']} unchanged (skipped), "
          f"{counts['failed']} failed, {counts['skipped']} not run because of failures; {elapsed:.0f} s -> {grid_dir}/")
    for job_id in summary.failed:
        print(f"  FAILED  {job_id}: {summary.errors[job_id]}\n          notebook and log: {grid_dir / job_id}/")
    for job_id in summary.skipped:
        print(f"  SKIPPED {job_id}: {summary.errors[job_id]}")
    # Every job of the grid that has a record (cached ones keep the timing of the run that made them).
    timing_path = write_timing_table([read_record(grid_dir / job.job_id) for job in all_jobs], grid_dir, grid.name)
    ran = [read_record(grid_dir / job_id) for job_id, status in summary.statuses.items() if status in ("done", "failed")]
    if any(record and record.get("wall_seconds") is not None for record in ran):
        print(slowest_jobs_text(ran, 5))
    print(f"timing of every job: {timing_path}")
    return 0 if summary.ok else 1


def _kernel_server(arguments: argparse.Namespace, threads: int):
    """The warm-kernel server of this run (its socket path), or None: cold kernels on Dask (each
    worker is another machine's process), with --cold-kernels, or where fork is missing."""
    from savfi_core.study import warm_kernels

    if arguments.executor == "dask" or arguments.cold_kernels or not warm_kernels.available():
        reason = "dask" if arguments.executor == "dask" else ("--cold-kernels" if arguments.cold_kernels else "no fork here")
        print(f"kernels: one fresh kernel per job, started from scratch ({reason})", file=sys.stderr)
        return contextlib.nullcontext(None)
    from savfi_core.runlock import held_descriptors

    return warm_kernels.warm_kernel_server(threads, keep_descriptors=tuple(held_descriptors()))


if __name__ == "__main__":
    sys.exit(main())
