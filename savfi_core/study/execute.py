"""One job = one papermill execution of its notebook, in a fresh Python subprocess.

Every job runs in its own subprocess (several Jupyter kernels started from one process race for
ports) and writes into its own folder ``results/<grid>/<job-id>/``: the executed notebook
(``notebook.ipynb``), the resolved parameters (``parameters.yaml``), a log (``log.txt``), the
job record (``job.json``) and whatever the notebook writes (checkpoints, CSV, PNG).

    python -m savfi_core.study.execute JOB_DIR/run.json     # the subprocess side

    python -m savfi_core.study.execute --torchrun N JOB_DIR/run.json   # a torchrun group of N

A job whose spec has ``launcher: {kind: torchrun, nproc_per_node: N}`` (a training section's
``launcher`` in the grid) starts as the second line: that process watches its runner like any job
process and runs torchrun's agent in itself (``torch.distributed.run --standalone
--nproc_per_node=N -m savfi_core.study.execute JOB_DIR/run.json``), whose N ranks on this node
watch the agent in turn, so the whole group stops with its runner. The ranks are
each executing the notebook (so each runs the same stage function, which shards every batch over
the ranks, see ``savfi_core.train.distributed``). Rank 0 writes ``notebook.ipynb`` and the
results; the other ranks execute into a temporary notebook that is deleted, and a failing rank
> 0 writes ``error.rank<r>.json``. torchrun stops the whole group when one rank fails.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import yaml

from savfi_core.procs import PARENT_PID_VARIABLE, die_with_parent, run_job_process
from savfi_core.runlock import held_descriptors
from savfi_core.study.timing import STAGE_TIMING_FILE, job_timing, peak_rss_mb, utc_now
from savfi_core.study.warm_kernels import SOCKET_VARIABLE

PROCESS_FILE = "job_process.json"  # written by the job subprocess: its children's (the kernel's) peak RSS


def job_command(spec: dict[str, Any], run_file: Path) -> list[str]:
    """The command line of a job's subprocess: this module, directly or under torchrun."""
    python = spec.get("python", sys.executable)
    launcher = spec.get("launcher") or {}
    if launcher.get("kind", "python") == "python":
        return [python, "-m", "savfi_core.study.execute", str(run_file)]
    if launcher["kind"] == "torchrun":
        return [python, "-m", "savfi_core.study.execute", "--torchrun", str(int(launcher.get("nproc_per_node", 1))), str(run_file)]
    raise ValueError(f"job {spec.get('job_id')}: unknown launcher kind {launcher['kind']!r}")


def execute_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one job's notebook in a fresh Python subprocess; return its outcome.

    spec: job_id, notebook, job_dir, parameters, working_directory, threads (per process), kernel_name,
    python, launcher (optional, see ``job_command``).
    Returns {'status': 'done'|'failed', 'error': str|None, 'seconds': float, 'timing': {...}} (the
    timing fields of the job record, :func:`savfi_core.study.timing.job_timing`). Runs wherever it
    is called: in a thread here, or on a Dask worker that sees the same file system.
    """
    job_dir = Path(spec["job_dir"])
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "run.json").write_text(json.dumps(spec, indent=2, default=str))
    (job_dir / "parameters.yaml").write_text(yaml.safe_dump(spec["parameters"], sort_keys=True))
    # a resumed attempt's leftovers
    for stale in [job_dir / "error.json", job_dir / STAGE_TIMING_FILE, job_dir / PROCESS_FILE, *job_dir.glob("error.rank*.json")]:
        stale.unlink(missing_ok=True)
    environment = dict(os.environ)
    threads = str(spec.get("threads", 1))
    # One job = one process; keep BLAS/OpenMP from spawning a thread per core in each of them.
    environment.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads, MPLBACKEND="Agg")
    environment.pop(SOCKET_VARIABLE, None)
    if spec.get("warm_kernels") and (spec.get("launcher") or {}).get("kind", "python") == "python":
        # one plain kernel: forked by the run's warm-kernel server (a torchrun group starts its own)
        environment[SOCKET_VARIABLE] = spec["warm_kernels"]
    started, start = utc_now(), time.perf_counter()
    with open(job_dir / "log.txt", "w") as log:
        # Own process group, dies with this runner, keeps the run lock held while it lives.
        returncode = run_job_process(
            job_command(spec, job_dir / "run.json"),
            stdout=log, env=environment, cwd=spec["working_directory"], keep_descriptors=held_descriptors(),
        )
    seconds = time.perf_counter() - start
    timing = job_timing(started, utc_now(), seconds, job_dir, _children_peak_rss_mb(job_dir))
    if returncode == 0:
        return {"status": "done", "error": None, "seconds": seconds, "timing": timing}
    error_files = [job_dir / "error.json", *sorted(job_dir.glob("error.rank*.json"))]
    written = [path for path in error_files if path.is_file()]
    if written:
        error = "; ".join(json.loads(path.read_text())["error"] for path in written)
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
    # Under torchrun every rank runs the notebook; the kernel inherits RANK, WORLD_SIZE, ... from
    # this process. Only rank 0's executed notebook is kept.
    rank = int(os.environ.get("RANK", "0"))
    scratch = None if rank == 0 else tempfile.TemporaryDirectory(prefix=f"savfi-rank{rank}-")
    output = job_dir / "notebook.ipynb" if scratch is None else Path(scratch.name) / "notebook.ipynb"
    error_file = job_dir / ("error.json" if rank == 0 else f"error.rank{rank}.json")
    try:
        return _execute(papermill, spec, output, rank, error_file, scratch)
    finally:
        if rank == 0:
            # The kernel is this process's child, reaped by papermill: its peak RSS is counted here.
            (job_dir / PROCESS_FILE).write_text(json.dumps({"children_peak_rss_mb": round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1)}))


# Kernels that start at the same moment can race for the same TCP port: jupyter_client picks free
# ports for the connection file, and another process may bind one of them before the kernel does
# ("ZMQError: Address already in use" in the job's log; ../shared/NOTES.md). The kernel then dies
# before nbclient's kernel_info handshake, so no cell has run and starting a fresh kernel (new
# ports) re-runs nothing. Seen once in 97 jobs of `make run` on 2026-12-07.
KERNEL_START_ATTEMPTS = 3
KERNEL_START_FAILURES = ("Kernel died before replying to kernel_info", "Kernel didn't respond in")


def kernel_never_started(error: BaseException) -> bool:
    """Whether papermill's ``error`` is nbclient's failed kernel start (no cell ran), not a cell's error."""
    return isinstance(error, RuntimeError) and any(message in str(error) for message in KERNEL_START_FAILURES)


def _execute(papermill, spec: dict[str, Any], output: Path, rank: int, error_file: Path, scratch) -> int:
    warm = {}
    if os.environ.get(SOCKET_VARIABLE):
        from savfi_core.study.warm_kernels import kernel_manager_class

        warm = {"kernel_manager_class": kernel_manager_class()}
    print(f"kernel: {'forked by the warm-kernel server' if warm else 'started from scratch'}", file=sys.stderr, flush=True)
    try:
        for attempt in range(1, KERNEL_START_ATTEMPTS + 1):
            try:
                papermill.execute_notebook(
                    spec["notebook"], str(output), parameters=spec["parameters"],
                    kernel_name=spec.get("kernel_name"), progress_bar=False, log_output=True,
                    cwd=spec["working_directory"],
                    # Every cell has run and every file is written by then: stop the kernel at once
                    # instead of the graceful shutdown request and wait (0.4 s less per job, measured).
                    shutdown_kernel="immediate", **warm,
                )
                break
            except RuntimeError as error:
                if attempt == KERNEL_START_ATTEMPTS or not kernel_never_started(error):
                    raise
                print(f"kernel start failed before any cell ran ({error}); starting a fresh kernel, "
                      f"attempt {attempt + 1} of {KERNEL_START_ATTEMPTS}", file=sys.stderr, flush=True)
    except Exception as error:  # papermill saves the executed notebook (with the failing cell) first
        if type(error).__name__ == "PapermillExecutionError":
            message = f"{error.ename}: {error.evalue} (cell {error.exec_count})"
        else:
            message = f"{type(error).__name__}: {error}"
        if rank:
            message = f"rank {rank}: {message}"
        error_file.write_text(json.dumps({"error": message, "traceback": traceback.format_exc()}, indent=2))
        print(f"job failed: {message}", file=sys.stderr)
        return 1
    finally:
        if scratch is not None:
            scratch.cleanup()
    return 0


def launch_torchrun_here(run_file: Path, processes: int) -> int:
    """Body of a torchrun job's subprocess: torchrun's agent, started in this process."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    watching = die_with_parent()
    print(f"torchrun job process {os.getpid()}: stops with its runner ({watching}); {processes} ranks",
          file=sys.stderr, flush=True)
    os.environ[PARENT_PID_VARIABLE] = str(os.getpid())  # each rank watches this agent
    # --standalone: a private rendezvous on a free local port, so that several torchrun jobs can
    # share a node; one job = one node (a Dask worker runs it where the worker runs).
    try:
        torchrun(["--standalone", "--nnodes=1", f"--nproc_per_node={processes}",
                  "-m", "savfi_core.study.execute", str(run_file)])
    except ChildFailedError as error:  # the ranks' errors are in error*.json and the log
        print(f"torchrun job failed: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "--torchrun":
        return launch_torchrun_here(Path(argv[2]), int(argv[1]))
    if len(argv) != 1:
        raise SystemExit("usage: python -m savfi_core.study.execute [--torchrun N] JOB_DIR/run.json")
    return execute_notebook_here(Path(argv[0]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
