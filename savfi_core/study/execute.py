"""One job = one papermill execution of its notebook, in a fresh Python subprocess.

Every job runs in its own subprocess (several Jupyter kernels started from one process race for
ports) and writes into its own folder ``results/<grid>/<job-id>/``: the executed notebook
(``notebook.ipynb``), the resolved parameters (``parameters.yaml``), a log (``log.txt``), the
job record (``job.json``) and whatever the notebook writes (checkpoints, CSV, PNG).

    python -m savfi_core.study.execute JOB_DIR/run.json     # the subprocess side
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from savfi_core.procs import die_with_parent, run_job_process
from savfi_core.runlock import held_descriptors
from savfi_core.study.timing import STAGE_TIMING_FILE, job_timing, peak_rss_mb, utc_now

PROCESS_FILE = "job_process.json"  # written by the job subprocess: its children's (the kernel's) peak RSS


def execute_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job's notebook in a fresh Python subprocess; return its outcome.

    spec: job_id, notebook, job_dir, parameters, working_directory, threads, kernel_name, python.
    Returns {'status': 'done'|'failed', 'error': str|None, 'seconds': float, 'timing': {...}} (the
    timing fields of the job record, :func:`savfi_core.study.timing.job_timing`). Runs wherever it
    is called: in a thread here, or on a Dask worker that sees the same file system.
    """
    job_dir = Path(spec["job_dir"])
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "run.json").write_text(json.dumps(spec, indent=2, default=str))
    (job_dir / "parameters.yaml").write_text(yaml.safe_dump(spec["parameters"], sort_keys=True))
    for stale in ("error.json", STAGE_TIMING_FILE, PROCESS_FILE):  # a resumed attempt's leftovers
        (job_dir / stale).unlink(missing_ok=True)
    environment = dict(os.environ)
    threads = str(spec.get("threads", 1))
    # One job = one process; keep BLAS/OpenMP from spawning a thread per core in each of them.
    environment.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MPLBACKEND="Agg")
    started, start = utc_now(), time.perf_counter()
    with open(job_dir / "log.txt", "w") as log:
        # Own process group, dies with this runner, keeps the run lock held while it lives.
        returncode = run_job_process(
            [spec.get("python", sys.executable), "-m", "savfi_core.study.execute", str(job_dir / "run.json")],
            stdout=log, env=environment, cwd=spec["working_directory"], keep_descriptors=held_descriptors(),
        )
    seconds = time.perf_counter() - start
    timing = job_timing(started, utc_now(), seconds, job_dir, _children_peak_rss_mb(job_dir))
    if returncode == 0:
        return {"status": "done", "error": None, "seconds": seconds, "timing": timing}
    error_file = job_dir / "error.json"
    if error_file.is_file():
        error = json.loads(error_file.read_text())["error"]
    else:  # the subprocess died before it could write its error (killed, import failure)
        tail = (job_dir / "log.txt").read_text().strip().splitlines()[-15:]
        error = f"exit code {returncode}; log tail:\n" + "\n".join(tail)
    return {"status": "failed", "error": error, "seconds": seconds, "timing": timing}


def _children_peak_rss_mb(job_dir: Path) -> float | None:
    try:
        return json.loads((job_dir / PROCESS_FILE).read_text())["children_peak_rss_mb"]
    except (OSError, ValueError, KeyError):
        return None


def _skip_iri_format_checker() -> None:
    """Keep jsonschema from importing ``rfc3987_syntax`` on its way into papermill.

    jsonschema registers its optional IRI format checks when that package is importable, and
    importing it builds a parser that took 2.7 of papermill's 3.7 s of import time (``python -X
    importtime -c "import papermill"``), once per job. nbformat validates notebooks without a
    format checker, so those checks are never used here; a ``None`` entry in ``sys.modules``
    makes jsonschema's guarded import fail and skip them.
    """
    sys.modules.setdefault("rfc3987_syntax", None)


def execute_notebook_here(run_file: Path) -> int:
    """Body of the subprocess: one papermill execution; errors go to error.json."""
    _skip_iri_format_checker()
    import papermill

    watching = die_with_parent()
    print(f"job process {os.getpid()}: stops with its runner ({watching})", file=sys.stderr, flush=True)
    spec = json.loads(Path(run_file).read_text())
    job_dir = Path(spec["job_dir"])
    try:
        return _execute(papermill, spec, job_dir)
    finally:
        # The kernel is this process's child, reaped by papermill: its peak RSS is counted here.
        (job_dir / PROCESS_FILE).write_text(json.dumps({"children_peak_rss_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1)}))


def _execute(papermill, spec: dict[str, Any], job_dir: Path) -> int:
    try:
        papermill.execute_notebook(
            spec["notebook"], str(job_dir / "notebook.ipynb"), parameters=spec["parameters"],
            kernel_name=spec.get("kernel_name"), progress_bar=False, log_output=True,
            cwd=spec["working_directory"],
            # Every cell has run and every file is written by then: stop the kernel at once
            # instead of the graceful shutdown request and wait (0.4 s less per job, measured).
            shutdown_kernel="immediate",
        )
    except Exception as error:  # papermill saves the executed notebook (with the failing cell) first
        if type(error).__name__ == "PapermillExecutionError":
            message = f"{error.ename}: {error.evalue} (cell {error.exec_count})"
        else:
            message = f"{type(error).__name__}: {error}"
        (job_dir / "error.json").write_text(json.dumps({"error": message, "traceback": traceback.format_exc()}, indent=2))
        print(f"job failed: {message}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        raise SystemExit("usage: python -m savfi_core.study.execute JOB_DIR/run.json")
    return execute_notebook_here(Path(argv[0]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
