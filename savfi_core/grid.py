"""The former home of the study grid, kept so that old imports and commands keep working.

Everything now lives in :mod:`savfi_core.study` (schema, expand, cache, runner, execute); this
module re-exports its public names, and ``python -m savfi_core.grid JOB_DIR/run.json`` still
runs one job's notebook.
"""
from __future__ import annotations

import sys

from savfi_core.study.cache import job_hash, output_digest, read_record, write_record
from savfi_core.study.execute import execute_job, main as _execute_main
from savfi_core.study.expand import Job, expand_grid, load_grid, select_jobs
from savfi_core.study.loader import GridError
from savfi_core.study.runner import RunSummary, plan, run_jobs
from savfi_core.vocabulary import ALGORITHMS, PROTOCOLS, STAGES

__all__ = [
    "ALGORITHMS", "PROTOCOLS", "STAGES", "GridError", "Job", "RunSummary", "execute_job", "expand_grid", "job_hash",
    "load_grid", "output_digest", "plan", "read_record", "run_jobs", "select_jobs", "write_record",
]

if __name__ == "__main__":
    raise SystemExit(_execute_main(sys.argv[1:]))
