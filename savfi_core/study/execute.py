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
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from savfi_core.procs import die_with_parent, run_job_process
from savfi_core.runlock import held_descriptors


def execute_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job's notebook in a fresh Python subprocess; return its outcome.

    spec: job_id, notebook, job_dir, parameters, working_directory, threads, kernel_name, python.
    Returns {'status': 'done'|'failed', 'error': str|None, 'seconds': float}. Runs wherever it is
    called: in a thread here, or on a Dask worker that sees the same file system.
    """
    job_dir = Path(spec["job_dir"])
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "run.json").write_text(json.dumps(spec, indent=2, default=str))
    (job_dir / "parameters.yaml").write_text(yaml.safe_dump(spec["parameters"], sort_keys=True))
    (job_dir / "error.json").unlink(missing_ok=True)
    environment = dict(os.environ)
    threads = str(spec.get("threads", 1))
    # One job = one process; keep BLAS/OpenMP from spawning a thread per core in each of them.
    environment.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MPLBACKEND="Agg")
    start = time.perf_counter()
    with open(job_dir / "log.txt", "w") as log:
        # Own process group, dies with this runner, keeps the run lock held while it lives.
        returncode = run_job_process(
            [spec.get("python", sys.executable), "-m", "savfi_core.study.execute", str(job_dir / "run.json")],
            stdout=log, env=environment, cwd=spec["working_directory"], keep_descriptors=held_descriptors(),
        )
    seconds = time.perf_counter() - start
    if returncode == 0:
        return {"status": "done", "error": None, "seconds": seconds}
    error_file = job_dir / "error.json"
    if error_file.is_file():
        error = json.loads(error_file.read_text())["error"]
    else:  # the subprocess died before it could write its error (killed, import failure)
        tail = (job_dir / "log.txt").read_text().strip().splitlines()[-15:]
        error = f"exit code {returncode}; log tail:\n" + "\n".join(tail)
    return {"status": "failed", "error": error, "seconds": seconds}


def execute_notebook_here(run_file: Path) -> int:
    """Body of the subprocess: one papermill execution; errors go to error.json."""
    import papermill

    watching = die_with_parent()
    print(f"job process {os.getpid()}: stops with its runner ({watching})", file=sys.stderr, flush=True)
    spec = json.loads(Path(run_file).read_text())
    job_dir = Path(spec["job_dir"])
    try:
        papermill.execute_notebook(
            spec["notebook"], str(job_dir / "notebook.ipynb"), parameters=spec["parameters"],
            kernel_name=spec.get("kernel_name"), progress_bar=False, log_output=True,
            cwd=spec["working_directory"],
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
