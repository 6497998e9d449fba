"""Warm kernels: every job's Jupyter kernel is forked from one process that has imported torch.

Why: a job's own work is often seconds (8 outer steps of a tiny network), but a fresh kernel
first spends about 2 s starting and importing torch, pandas and savfi_core, and the first
optimizer imports ``torch._dynamo`` (0.9 s more, quiet machine); ``benchmarks/grid-timing-cpu.md``.
Paying that once per run instead of once per job is what this module does, while every job still
gets a fresh kernel process of its own (its own connection file and ports: several kernels
started from one process race for ports, ``../shared/NOTES.md``).

Three processes take part::

    runner (run_all.py)   starts the server:  python -m savfi_core.study.warm_kernels serve SOCKET
    server                imports PRELOADED once, then forks one kernel per request
    job process           papermill with WarmKernelManager, whose kernel command is the launcher:
                          python -m savfi_core.study.warm_kernels launch -f CONNECTION_FILE

The launcher (a bare interpreter, no heavy imports) sends the server its working directory,
its environment and its standard streams, plus the read end of a pipe whose write end only the
launcher holds. The server forks; the child takes over those streams, directory and environment
and runs ``IPKernelApp`` on the connection file. To jupyter_client the launcher *is* the kernel:
signals to it (interrupt, terminate) are forwarded to the child, and when it is killed (papermill's
immediate shutdown sends SIGKILL) the pipe closes and the child exits at once. The launcher exits
with the child's exit status, which the server reports when it reaps the child.

Lifetimes follow ``savfi_core.procs``: the server dies with its runner (PR_SET_PDEATHSIG, and its
loop checks its parent), each child dies with the server (PR_SET_PDEATHSIG) and with its launcher
(the pipe), the launcher with its job process (PR_SET_PDEATHSIG). The server is single-threaded
when it forks (checked), as fork requires.

What a forked kernel shares with the others is only what the imports left in memory, copy on
write; nothing of a job runs in the server. Torch's random generators are seeded by each stage.
``kernel_ready_seconds`` of a warm job is counted from the fork.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from typing import Iterator

#: How a job process finds the server (set by the runner for jobs that run one plain kernel).
SOCKET_VARIABLE = "SAVFI_WARM_KERNELS"
#: What the server imports before it forks: what the notebooks' first cells and the stages import.
PRELOADED = (
    "numpy", "pandas", "yaml", "torch", "torch._dynamo", "torch.func", "scipy.ndimage", "PIL.Image",
    "matplotlib", "matplotlib.pyplot", "ipykernel.kernelapp",
    "savfi_core.study.stages", "savfi_core.backbones", "savfi_core.meta", "savfi_core.train", "savfi_core.data",
    "savfi_core.metrics", "savfi_core.report", "savfi_core.study.protocols", "savfi_core.meta.evaluate",
)
READY_LINE = "warm kernels ready"
_MESSAGE_LIMIT = 1 << 20


class WarmKernelError(RuntimeError):
    """The warm-kernel server could not start, or a launcher could not reach it."""


# --------------------------------------------------------------------------------------------
# The runner side
# --------------------------------------------------------------------------------------------


def available() -> bool:
    """fork, Unix sockets and descriptor passing: Linux and macOS."""
    return os.name == "posix" and hasattr(socket, "send_fds") and hasattr(os, "fork")


@contextlib.contextmanager
def warm_kernel_server(threads: int, keep_descriptors: tuple[int, ...] = (), log=sys.stderr,
                       startup_timeout: float = 120.0, python: str = sys.executable) -> Iterator[str]:
    """Start the server for one run (``threads`` torch threads per kernel); yield its socket path.

    The server gets the same environment as the job processes (thread counts, Agg backend), runs
    in a session of its own and keeps ``keep_descriptors`` (the run lock) open while it lives.
    Raises WarmKernelError, naming the server's output, when it does not come up.
    """
    from savfi_core.procs import PARENT_PID_VARIABLE, stop_process_group

    folder = tempfile.mkdtemp(prefix="savfi-warm-")
    path = os.path.join(folder, "server.sock")
    environment = dict(os.environ)
    environment.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                       MPLBACKEND="Agg", **{PARENT_PID_VARIABLE: str(os.getpid())})
    environment.pop(SOCKET_VARIABLE, None)
    output = open(os.path.join(folder, "server.log"), "w+")
    # stdin from /dev/null: descriptors 0-2 stay taken, so the streams a launcher sends never land on them
    process = subprocess.Popen([python, "-m", "savfi_core.study.warm_kernels", "serve", path],
                               stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=environment,
                               start_new_session=True, pass_fds=tuple(keep_descriptors))
    try:
        deadline = time.monotonic() + startup_timeout
        while True:
            # poll before reading: a server that has exited has written all it will, so the
            # error below always carries its whole output
            exited = process.poll() is not None
            output.seek(0)
            text = output.read()
            if READY_LINE in text:
                break
            if exited or time.monotonic() > deadline:
                raise WarmKernelError(f"the warm-kernel server did not start (exit {process.poll()}); its output:\n{text.strip()}")
            time.sleep(0.05)
        print(text.strip().splitlines()[-1], file=log)
        yield path
    finally:
        stop_process_group(process, grace=1.0)
        output.close()
        for leftover in (path, os.path.join(folder, "server.log")):
            with contextlib.suppress(OSError):
                os.unlink(leftover)
        with contextlib.suppress(OSError):
            os.rmdir(folder)


def kernel_manager_class(asynchronous: bool = True):
    """jupyter_client's KernelManager whose kernel command is this module's launcher (async, as
    nbclient drives it; ``asynchronous=False``: the blocking one)."""
    from jupyter_client.manager import AsyncKernelManager, KernelManager

    class WarmKernelManager(AsyncKernelManager if asynchronous else KernelManager):
        def format_kernel_cmd(self, extra_arguments=None):
            command = super().format_kernel_cmd(extra_arguments)
            if "-f" not in command:
                raise WarmKernelError(f"kernel spec {self.kernel_name!r} has no '-f {{connection_file}}' argument: {command}")
            return [sys.executable, "-m", "savfi_core.study.warm_kernels", "launch", *command[command.index("-f"):]]

    return WarmKernelManager


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def _parent_death_signal(signum: int) -> None:
    from savfi_core.procs import _set_parent_death_signal

    _set_parent_death_signal(signum)


def serve(path: str) -> int:
    """Import PRELOADED, listen on ``path``, fork a kernel per request until the runner is gone."""
    import importlib

    from savfi_core.procs import PARENT_PID_VARIABLE

    runner = int(os.environ.get(PARENT_PID_VARIABLE) or os.getppid())
    _parent_death_signal(signal.SIGTERM)
    start = time.perf_counter()
    for name in PRELOADED:
        importlib.import_module(name)
    imported = time.perf_counter() - start
    if threading.active_count() != 1:
        names = [thread.name for thread in threading.enumerate()]
        raise WarmKernelError(f"the warm-kernel server has threads after its imports ({names}); it cannot fork safely")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    children: dict[int, socket.socket] = {}
    signal.signal(signal.SIGTERM, lambda signum, frame: _stop_server(children, 128 + signum))
    print(f"{READY_LINE}: pid {os.getpid()}, {len(PRELOADED)} modules imported once in {imported:.2f} s", flush=True)
    while True:
        if os.getppid() != runner:
            _stop_server(children, 0)
        readable, _, _ = select.select([listener], [], [], 0.2)
        if readable:
            connection, _ = listener.accept()
            try:
                child = _fork_kernel(connection, listener, children)
            except Exception as error:  # a malformed request: tell that launcher, keep serving the others
                with contextlib.suppress(OSError):
                    connection.sendall(json.dumps({"error": f"{type(error).__name__}: {error}"}).encode() + b"\n")
                connection.close()
            else:
                children[child] = connection
        _reap(children)


def _stop_server(children: dict[int, socket.socket], code: int) -> None:
    for child in list(children):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    os._exit(code)


def _reap(children: dict[int, socket.socket]) -> None:
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        connection = children.pop(pid, None)
        if connection is not None:
            with contextlib.suppress(OSError):
                connection.sendall(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            connection.close()


def _fork_kernel(connection: socket.socket, listener: socket.socket, children: dict[int, socket.socket]) -> int:
    message, descriptors, _, _ = socket.recv_fds(connection, _MESSAGE_LIMIT, 4)
    if len(descriptors) != 4:
        for descriptor in descriptors:
            os.close(descriptor)
        raise WarmKernelError(f"a launcher sent {len(descriptors)} descriptors, expected 4 (stdin, stdout, stderr, liveness)")
    request = json.loads(message.decode())
    child = os.fork()
    if child == 0:  # the kernel
        try:
            listener.close()
            for other in children.values():  # the other kernels' launchers must see only the server's end
                other.close()
            connection.close()
            _become_kernel(request, descriptors)
        except BaseException as error:  # noqa: BLE001 - report and leave, never return into the server's loop
            with contextlib.suppress(Exception):
                print(f"warm kernel {os.getpid()}: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            os._exit(1)
        os._exit(0)
    for descriptor in descriptors:
        os.close(descriptor)
    connection.sendall(json.dumps({"pid": child}).encode() + b"\n")
    return child


def _become_kernel(request: dict, descriptors: list[int]) -> None:
    _parent_death_signal(signal.SIGKILL)  # the server gone: nothing may keep running
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for target, descriptor in zip((0, 1, 2), descriptors[:3]):
        os.dup2(descriptor, target)
        os.close(descriptor)
    liveness = descriptors[3]

    def watch_launcher() -> None:
        while os.read(liveness, 1):  # only EOF: the launcher's write end closed, the launcher is gone
            pass
        os._exit(1)

    threading.Thread(target=watch_launcher, name="savfi-warm-launcher-watch", daemon=True).start()
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()))
    sys.argv = ["ipykernel_launcher", *request["argv"]]
    sys.path[0] = request["cwd"]  # as in a fresh ``python -m ipykernel_launcher`` started there
    from ipykernel.kernelapp import IPKernelApp

    # parent_handle 1: no parent poller (ipykernel's polls for its parent process, which here is the
    # server, not the job process that JPY_PARENT_PID names; the launcher's pipe does that work)
    IPKernelApp.launch_instance(argv=request["argv"], parent_handle=1)


# --------------------------------------------------------------------------------------------
# The launcher
# --------------------------------------------------------------------------------------------


def launch(argv: list[str]) -> int:
    """The kernel process that jupyter_client sees: have the server fork the kernel, wait for it."""
    path = os.environ.get(SOCKET_VARIABLE)
    if not path:
        raise WarmKernelError(f"the warm-kernel launcher needs ${SOCKET_VARIABLE} (the server's socket)")
    _parent_death_signal(signal.SIGKILL)  # the job process gone: the pipe closes and the kernel follows
    liveness_read, liveness_write = os.pipe()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.connect(path)
    except OSError as error:
        raise WarmKernelError(f"cannot reach the warm-kernel server at {path}: {error}") from error
    request = {"cwd": os.getcwd(), "env": dict(os.environ), "argv": list(argv)}
    socket.send_fds(server, [json.dumps(request).encode()], [0, 1, 2, liveness_read])
    os.close(liveness_read)
    replies = server.makefile("r")
    first = json.loads(replies.readline() or "{}")
    if "pid" not in first:
        raise WarmKernelError(f"the warm-kernel server refused: {first.get('error', 'no reply')}")
    kernel = first["pid"]

    def forward(signum, frame) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(kernel, signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(signum, forward)
    line = replies.readline()
    # liveness_write stays open until this process ends: its closing is what the kernel watches
    return int(json.loads(line)["exit"]) if line else 1


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "serve":
        return serve(argv[1])
    if argv and argv[0] == "launch":
        return launch(argv[1:])
    raise SystemExit("usage: python -m savfi_core.study.warm_kernels serve SOCKET | launch -f CONNECTION_FILE")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
