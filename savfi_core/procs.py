"""Job subprocesses that live exactly as long as their runner.

Two halves:

- the runner side, :func:`run_job_process`: starts a job in its own session (so it is a process
  group of its own, which a terminal's Ctrl-C does not reach behind the runner's back), passes
  it the run lock's descriptor (``savfi_core.runlock``), and registers it so that
  :func:`stop_job_processes` (called when the runner is interrupted or exits) stops the whole
  group: SIGTERM, then SIGKILL after a grace period;
- the job side, :func:`die_with_parent`, called first thing in the job subprocess: the job stops
  when its runner is gone, even when the runner was killed with SIGKILL and could not clean up.
  On Linux ``prctl(PR_SET_PDEATHSIG, SIGTERM)`` has the kernel send SIGTERM at the parent's
  death; everywhere, a watchdog thread also polls the parent pid every
  ``WATCHDOG_INTERVAL`` seconds (the portable fallback). On SIGTERM the job stops its own
  children first (the Jupyter kernel, which jupyter_client starts in a session of its own) and
  waits for them, then exits: once a job process is gone, nothing of it is left working.
"""
from __future__ import annotations

import atexit
import os
import signal
import subprocess
import sys
import threading
import time
from typing import IO, Sequence

# Environment variable through which a job learns its runner's pid (to watch for its death).
PARENT_PID_VARIABLE = "SAVFI_RUNNER_PID"
WATCHDOG_INTERVAL = 0.5
STOP_GRACE_SECONDS = 3.0

_live: dict[int, subprocess.Popen] = {}
_live_lock = threading.Lock()


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)  # the job is its session's leader: its pgid is its pid
    except (ProcessLookupError, PermissionError):
        pass


def stop_process_group(process: subprocess.Popen, grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM to the job's group, SIGKILL to what is left after ``grace`` seconds; then reap."""
    if os.name != "posix":
        process.terminate()
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
        return
    _signal_group(process, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass
    _signal_group(process, signal.SIGKILL)  # whatever of the group outlived the grace period
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        pass


def stop_job_processes() -> None:
    """Stop every job this process started that is still running (runner interrupted or exiting)."""
    with _live_lock:
        processes = list(_live.values())
    for process in processes:
        if process.poll() is None:
            stop_process_group(process)


atexit.register(stop_job_processes)


def run_job_process(
    command: Sequence[str], *, stdout: IO, env: dict[str, str], cwd: str, keep_descriptors: Sequence[int] = ()
) -> int:
    """Run ``command`` as a job subprocess (own session, dies with this process); its exit code.

    keep_descriptors: descriptors the job inherits (the run lock's, so the folder stays locked
    while any job of the run is alive).
    """
    env = {**env, PARENT_PID_VARIABLE: str(os.getpid())}
    posix = os.name == "posix"
    process = subprocess.Popen(
        list(command), stdout=stdout, stderr=subprocess.STDOUT, env=env, cwd=cwd,
        start_new_session=posix, pass_fds=tuple(keep_descriptors) if posix else (),
    )
    with _live_lock:
        _live[process.pid] = process
    try:
        return process.wait()
    except BaseException:  # interrupted while waiting: the job must not outlive us
        stop_process_group(process)
        raise
    finally:
        with _live_lock:
            _live.pop(process.pid, None)


# --------------------------------------------------------------------------------------------
# The job side
# --------------------------------------------------------------------------------------------


def _set_parent_death_signal(signum: int) -> bool:
    """``prctl(PR_SET_PDEATHSIG, signum)`` on Linux; False where unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        return libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def stop_descendants(grace: float = STOP_GRACE_SECONDS) -> None:
    """SIGTERM every descendant of this process (each in whatever group it is), wait, SIGKILL the rest."""
    import psutil

    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return
    for child in children:
        try:
            child.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(children, timeout=grace)
    for child in alive:
        try:
            child.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=grace)


def _stop_and_exit(signum: int, reason: str) -> None:
    print(f"job stopping: {reason}", file=sys.stderr, flush=True)
    stop_descendants()
    os._exit(128 + signum)


def die_with_parent() -> str:
    """Make this job process stop (with its children) when its runner dies; say how it watches.

    Returns the mechanisms in use, e.g. ``"prctl(PR_SET_PDEATHSIG) + watchdog"``. The runner's
    pid comes from ``$SAVFI_RUNNER_PID`` (set by :func:`run_job_process`), else the current parent.
    """
    runner_pid = int(os.environ.get(PARENT_PID_VARIABLE) or os.getppid())
    signal.signal(signal.SIGTERM, lambda signum, frame: _stop_and_exit(signum, "SIGTERM (runner stopped or gone)"))
    mechanisms = []
    if _set_parent_death_signal(signal.SIGTERM):
        mechanisms.append("prctl(PR_SET_PDEATHSIG)")

    def watch() -> None:
        while True:
            if os.getppid() != runner_pid:
                _stop_and_exit(signal.SIGTERM, f"runner pid {runner_pid} is gone (watchdog)")
            time.sleep(WATCHDOG_INTERVAL)

    threading.Thread(target=watch, name="savfi-runner-watchdog", daemon=True).start()
    mechanisms.append("watchdog")
    # The runner may have died between our start and the prctl call: the watchdog sees that
    # on its first check, so nothing is missed.
    return " + ".join(mechanisms)
