"""Warm kernels (savfi_core/study/warm_kernels.py): forked kernels behave as fresh ones, live no
longer than their launcher, and give a grid the same results as kernels started from scratch."""
from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from savfi_core.study import warm_kernels
from savfi_core.study.warm_kernels import SOCKET_VARIABLE, kernel_manager_class, warm_kernel_server

pytestmark = pytest.mark.skipif(not warm_kernels.available(), reason="warm kernels need fork and Unix descriptor passing")
ROOT = Path(__file__).resolve().parents[1]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _run(client, code: str, timeout: float = 60) -> tuple[dict, str]:
    printed = []

    def hook(message):
        if message["msg_type"] == "stream":
            printed.append(message["content"]["text"])

    reply = client.execute_interactive(code, timeout=timeout, output_hook=hook)
    return reply["content"], "".join(printed)


def test_a_forked_kernel_is_a_fresh_process_that_follows_its_launcher(tmp_path, monkeypatch):
    with warm_kernel_server(1) as path:
        monkeypatch.setenv(SOCKET_VARIABLE, path)
        monkeypatch.setenv("SAVFI_TEST_MARK", "launcher-env")
        manager = kernel_manager_class(asynchronous=False)(kernel_name="python3")
        manager.start_kernel(cwd=str(tmp_path))
        client = manager.client()
        client.start_channels()
        try:
            client.wait_for_ready(timeout=60)
            launcher = manager.provisioner.process.pid
            content, printed = _run(client, "import os, sys, torch; print(os.getpid(), os.getppid(), os.getcwd(), "
                                            "os.environ['SAVFI_TEST_MARK'], torch.get_num_threads(), 'torch' in sys.modules)")
            assert content["status"] == "ok", content
            kernel, parent, cwd, mark, threads, preloaded = printed.split()
            kernel, parent = int(kernel), int(parent)
            assert kernel not in (launcher, os.getpid()) and parent != launcher  # the server's child, not the launcher
            assert cwd == str(tmp_path) and mark == "launcher-env" and threads == "1" and preloaded == "True"

            # an interrupt sent to the launcher reaches the cell
            client.execute("import time; time.sleep(60)")
            time.sleep(1.0)
            started = time.monotonic()
            manager.interrupt_kernel()
            reply = client.get_shell_msg(timeout=20)
            assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
            assert time.monotonic() - started < 20

            # papermill's immediate shutdown SIGKILLs the launcher: the kernel must go with it
            os.kill(launcher, signal.SIGKILL)
            deadline = time.monotonic() + 5
            while _alive(kernel) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not _alive(kernel), "the forked kernel outlived its launcher"
        finally:
            client.stop_channels()
            manager.cleanup_resources()
    assert not Path(path).exists()


def test_a_server_that_cannot_start_is_an_error_with_its_output(tmp_path):
    broken = tmp_path / "python"
    broken.write_text("#!/bin/sh\necho 'cannot import torch' >&2\nexit 3\n")
    broken.chmod(0o755)
    with pytest.raises(warm_kernels.WarmKernelError, match=r"did not start \(exit 3\)[\s\S]*cannot import torch"):
        with warm_kernel_server(1, python=str(broken)):
            pass


def test_a_launcher_without_a_server_names_what_is_missing(monkeypatch):
    monkeypatch.delenv(SOCKET_VARIABLE, raising=False)
    with pytest.raises(warm_kernels.WarmKernelError, match=SOCKET_VARIABLE):
        warm_kernels.launch(["-f", "/nonexistent/kernel.json"])
    monkeypatch.setenv(SOCKET_VARIABLE, "/nonexistent/server.sock")
    with pytest.raises(warm_kernels.WarmKernelError, match="cannot reach"):
        warm_kernels.launch(["-f", "/nonexistent/kernel.json"])


def test_warm_and_cold_kernels_give_a_grid_byte_identical_results(tmp_path):
    import run_all

    job = "meta_train-dvf-maml-seed0"
    outputs = {}
    for kind, extra in (("warm", []), ("cold", ["--cold-kernels"])):
        results = tmp_path / kind
        assert run_all.main(["--only", job, "--results", str(results), "--jobs", "1", *extra]) == 0
        folder = results / "quick" / job
        log = (folder / "log.txt").read_text()
        assert ("forked by the warm-kernel server" in log) == (kind == "warm"), log[-2000:]
        outputs[kind] = (folder / "meta_checkpoint.pt").read_bytes()
    assert outputs["warm"] == outputs["cold"]
