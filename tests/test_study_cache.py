"""The job hash follows the code of savfi_core: a changed source file reruns the jobs, an
unchanged tree reruns nothing, and each record names the commit and whether the tree was dirty."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

import run_all  # noqa: E402
from savfi_core.study import cache  # noqa: E402
from savfi_core.study.expand import Job  # noqa: E402
from test_run_all import records, small_grid  # noqa: E402


@pytest.fixture
def package_copy(tmp_path, monkeypatch):
    """A copy of savfi_core's sources that the hash reads instead of the real package."""
    copy = tmp_path / "savfi_core"
    shutil.copytree(REPO_ROOT / "savfi_core", copy, ignore=shutil.ignore_patterns("__pycache__", "*.pt"))
    monkeypatch.setattr(cache, "PACKAGE_ROOT", copy)
    return copy


def test_changing_a_source_file_changes_the_job_hash(package_copy, tmp_path):
    notebook = tmp_path / "stage.ipynb"
    notebook.write_text("{}")
    job = Job("evaluate-x", "evaluate", notebook, {"backbone": "sepconv", "size": "tiny", "weights": None})
    before = cache.job_hash(job, {})
    assert cache.job_hash(job, {}) == before  # deterministic
    metrics = package_copy / "metrics.py"
    metrics.write_text(metrics.read_text().replace("return 10.0 * math.log10(255.0**2 / mean_squared_error)",
                                                   "return 10.0 * math.log10(255.0**2 / mean_squared_error) + 1e-3"))
    assert cache.job_hash(job, {}) != before
    (package_copy / "kernels" / "sepconv.cu").write_text("// changed\n", encoding="utf-8")
    assert cache.source_digest() != cache.source_digest(REPO_ROOT / "savfi_core")


@pytest.mark.slow
def test_run_all_reruns_every_job_after_a_code_change_and_nothing_without(package_copy, tmp_path, capsys):
    grid, results = small_grid(tmp_path), tmp_path / "results"
    assert run_all.main(["--grid", str(grid), "--results", str(results), "--jobs", "2"]) == 0
    first = records(results)
    assert all(record["status"] == "done" for record in first.values())
    assert all({"commit", "dirty", "code_digest"} <= set(record) for record in first.values())

    capsys.readouterr()
    assert run_all.main(["--grid", str(grid), "--results", str(results)]) == 0
    assert "0 ran, 4 unchanged" in capsys.readouterr().out

    metrics = package_copy / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n# a change to the library\n")
    assert run_all.main(["--grid", str(grid), "--results", str(results), "--dry-run"]) == 0
    assert capsys.readouterr().out.count("pending") == 4
    assert run_all.main(["--grid", str(grid), "--results", str(results)]) == 0
    assert "4 ran, 0 unchanged" in capsys.readouterr().out
    second = records(results)
    assert {job_id for job_id in second if second[job_id]["hash"] != first[job_id]["hash"]} == set(first)

    assert run_all.main(["--grid", str(grid), "--results", str(results)]) == 0
    assert "0 ran, 4 unchanged" in capsys.readouterr().out


def test_code_state_names_the_commit_and_the_dirty_flag():
    state = cache.code_state()
    if shutil.which("git") is None or state["commit"] is None:
        pytest.skip("not a git checkout here: the record holds commit None, dirty None")
    assert len(state["commit"]) == 40 and isinstance(state["dirty"], bool)
