"""The records of a grid's finished jobs without their weights: to commit, move or resume elsewhere.

A long study (``params/rife_study.yaml``: hours on a CPU) may outlive the machine it runs on. Its
results are small (CSVs, a log, a few PNGs) but its training jobs also write checkpoints of tens of
MB each. ``archive_finished`` copies what a later run needs to treat the finished jobs as finished
and what a report needs, and leaves the checkpoints out::

    python -m savfi_core.study.archive --grid params/rife_study.yaml --results results --to docs/rife_study/jobs

Which jobs: every finished job, except one whose weights a dependant that has not finished still
reads (a training job whose evaluation has not run yet: a record without its checkpoint would
make the runner skip the training and the evaluation fail). Restoring is a copy back
(``cp -r docs/rife_study/jobs/. results/rife_study/``): the runner then reuses every archived job
whose hash is unchanged and runs the rest. The hash (``savfi_core.study.cache``) covers notebook,
parameters, the upstream output digests recorded in ``job.json``, the weights file and the
library code the job runs, none of them the archived files themselves; so continue from the
commit the archived records name (``docs/rife_study/README.md``).
"""
from __future__ import annotations

import argparse
import fnmatch
import shutil
import sys
from pathlib import Path

from savfi_core.study.cache import input_references, read_record
from savfi_core.study.expand import Job, expand_grid, load_grid

# Left out of an archive: weights (the reason to archive at all), the executed notebook (its
# outputs hold the same tables and figures as the job's files, plus absolute paths) and the
# process bookkeeping of the machine it ran on. Only the weights are ever read by another job.
WEIGHTS = ("*.pt",)
LEFT_OUT = (*WEIGHTS, "notebook.ipynb", "job_process.json", "*.tmp")


def _is_weights(path: str | Path) -> bool:
    return any(fnmatch.fnmatch(Path(path).name, pattern) for pattern in WEIGHTS)


def archivable(jobs: list[Job], grid_dir: Path) -> list[str]:
    """Ids of the finished jobs whose weights no unfinished dependant reads, in grid order (a
    dependant that reads a whole folder reads the weights in it, if there are any)."""
    done = {job.job_id for job in jobs if (read_record(grid_dir / job.job_id) or {}).get("status") == "done"}
    still_needed = set()
    for job in jobs:
        if job.job_id in done:
            continue
        for value in job.inputs.values():
            for upstream, relative in input_references(value):
                if _is_weights(relative) or (not relative and any(map(_is_weights, (grid_dir / upstream).rglob("*")))):
                    still_needed.add(upstream)
    return [job.job_id for job in jobs if job.job_id in done and job.job_id not in still_needed]


def archive_finished(jobs: list[Job], grid_dir: str | Path, destination: str | Path) -> list[str]:
    """Copy the ``archivable`` jobs' folders from ``grid_dir`` into ``destination`` without
    ``LEFT_OUT`` files, replacing an earlier copy of each; returns their ids."""
    grid_dir, destination = Path(grid_dir), Path(destination)
    chosen = archivable(jobs, grid_dir)
    destination.mkdir(parents=True, exist_ok=True)
    for job_id in chosen:
        target = destination / job_id
        staging = destination / f".{job_id}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(grid_dir / job_id, staging, ignore=shutil.ignore_patterns(*LEFT_OUT))
        # replace a job's earlier copy whole: a reader never sees half of one
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", required=True, help="the grid YAML the jobs came from")
    parser.add_argument("--results", default="results", help="results root (the grid's jobs are in RESULTS/<grid name>/)")
    parser.add_argument("--to", required=True, help="folder to copy the finished jobs' records into")
    arguments = parser.parse_args(argv)
    grid = load_grid(arguments.grid)
    jobs = expand_grid(grid)
    grid_dir = Path(arguments.results) / grid.name
    chosen = archive_finished(jobs, grid_dir, arguments.to)
    left = [job.job_id for job in jobs if job.job_id not in chosen]
    print(f"{len(chosen)} of {len(jobs)} jobs of {grid.name!r} archived into {arguments.to}/ (without {', '.join(LEFT_OUT)})")
    for job_id in left:
        status = (read_record(grid_dir / job_id) or {}).get("status", "not run")
        print(f"  left out: {job_id} ({status}{': a dependant that has not finished reads its weights' if status == 'done' else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
