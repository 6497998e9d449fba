"""One job's papermill execution (savfi_core/study/execute.py): a kernel that dies before any cell
ran is started again; a failing cell is not re-run."""
from __future__ import annotations

import json
import types

import pytest

from savfi_core.study import execute
from savfi_core.study.warm_kernels import SOCKET_VARIABLE


class CellFailed(Exception):
    """Stands in for papermill's PapermillExecutionError (not a RuntimeError)."""

    ename, evalue, exec_count = "ValueError", "bad frame", 3


def fake_papermill(failures: list[BaseException]):
    """A papermill whose execute_notebook raises each of ``failures`` in turn, then succeeds."""
    calls = []

    def execute_notebook(notebook, output, **options):
        calls.append(output)
        if len(calls) <= len(failures):
            raise failures[len(calls) - 1]

    return types.SimpleNamespace(execute_notebook=execute_notebook), calls


@pytest.fixture
def job(tmp_path, monkeypatch):
    monkeypatch.delenv(SOCKET_VARIABLE, raising=False)
    spec = {"notebook": "nb.ipynb", "parameters": {}, "kernel_name": "python3", "working_directory": str(tmp_path)}
    return spec, tmp_path / "notebook.ipynb", tmp_path / "error.json"


def run(papermill, job) -> int:
    spec, output, error_file = job
    return execute._execute(papermill, spec, output, 0, error_file, None)


def test_a_kernel_that_died_before_its_handshake_is_started_again(job, capsys):
    papermill, calls = fake_papermill([RuntimeError("Kernel died before replying to kernel_info")])
    assert run(papermill, job) == 0
    assert len(calls) == 2 and not job[2].exists()
    assert "attempt 2 of 3" in capsys.readouterr().err


def test_a_kernel_that_never_starts_fails_the_job_after_the_last_attempt(job):
    papermill, calls = fake_papermill([RuntimeError("Kernel didn't respond in 60 seconds")] * 3)
    assert run(papermill, job) == 1
    assert len(calls) == execute.KERNEL_START_ATTEMPTS
    assert "Kernel didn't respond" in json.loads(job[2].read_text())["error"]


@pytest.mark.parametrize("error", [CellFailed("cell 3 failed"), RuntimeError("CUDA out of memory")])
def test_an_error_after_the_kernel_started_is_reported_not_retried(job, error):
    papermill, calls = fake_papermill([error])
    assert run(papermill, job) == 1
    assert len(calls) == 1
    assert json.loads(job[2].read_text())["error"]
