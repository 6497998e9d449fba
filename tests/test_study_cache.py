"""The job hash follows the savfi_core code a job runs: a changed source file reruns the jobs that
use it and no others, an unchanged tree reruns nothing, and each record names those files, the
commit and whether the tree was dirty."""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import nbformat
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


NOTEBOOKS = REPO_ROOT / "notebooks"


def notebook_with_code(path: Path, code: str) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("output_dir = None"), nbformat.v4.new_code_cell(code)]
    nbformat.write(notebook, path)
    return path


def used(notebook: Path, root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in cache.notebook_code_files(notebook, root)}


def test_the_job_hash_follows_the_files_its_notebook_runs_and_only_those(package_copy, tmp_path):
    notebook = notebook_with_code(tmp_path / "stage.ipynb", "from savfi_core.metrics import psnr\nprint(psnr)")
    job = Job("evaluate-x", "evaluate", notebook, {"backbone": "sepconv", "size": "tiny", "weights": None})
    before = cache.job_hash(job, {})
    assert cache.job_hash(job, {}) == before  # deterministic
    interpolate = package_copy / "interpolate.py"  # not imported by metrics.py
    interpolate.write_text(interpolate.read_text() + "\n# a change elsewhere in the library\n")
    assert cache.job_hash(job, {}) == before
    metrics = package_copy / "metrics.py"
    metrics.write_text(metrics.read_text().replace("return 10.0 * math.log10(255.0**2 / mean_squared_error)",
                                                   "return 10.0 * math.log10(255.0**2 / mean_squared_error) + 1e-3"))
    assert cache.job_hash(job, {}) != before
    parent = package_copy / "__init__.py"  # importing savfi_core.metrics runs the package's __init__ first
    changed = cache.job_hash(job, {})
    parent.write_text(parent.read_text() + "\n# changed\n")
    assert cache.job_hash(job, {}) != changed


def test_the_stage_notebooks_depend_on_what_their_stage_function_reaches(package_copy):
    evaluate, report = used(NOTEBOOKS / "evaluate.ipynb", package_copy), used(NOTEBOOKS / "report.ipynb", package_copy)
    # the lazily imported model code, the sibling .cu of a kernel, and every discovered backbone file
    assert {"study/stages.py", "study/protocols.py", "metrics.py", "meta/learner.py", "kernels/sepconv.py",
            "kernels/sepconv.cu", "backbones/dvf.py", "backbones/rife_v4.py"} <= evaluate
    assert "train/pretrain.py" not in evaluate and "report.py" not in evaluate  # imported by other stage functions only
    assert {"study/stages.py", "report.py", "metrics.py"} <= report and "backbones/sepconv.py" not in report
    assert "train/pretrain.py" in used(NOTEBOOKS / "pretrain.ipynb", package_copy)
    for name in ("interpolate.py", "compare_page.py", "study/runner.py"):
        assert name not in evaluate | report
    notebook = Job("evaluate-x", "evaluate", NOTEBOOKS / "evaluate.ipynb", {"backbone": "sepconv"})
    report_job = Job("report", "report", NOTEBOOKS / "report.ipynb", {})
    before = cache.job_hash(notebook, {}), cache.job_hash(report_job, {})
    (package_copy / "kernels" / "sepconv.cu").write_text("// changed\n", encoding="utf-8")
    assert cache.job_hash(notebook, {}) != before[0] and cache.job_hash(report_job, {}) == before[1]


STAGE_CALLS = {
    "evaluate": """run_evaluate(backbone="dvf", size="tiny", weights="default", protocols=["baseline", "finetune"],
    meta_configs={"finetune": {"inner_steps": 1, "inner_lr": 1e-4, "inner_rule": "adam"}},
    datasets=[{"name": "clips", "split": "test", "stride": 35, "augment": True, "flip": False, "crop_size": 32}], inner_steps=[1], max_samples=1,
    qualitative=1, output_dir=str(OUTPUT / "evaluate"))""",
    "report": """run_report(evaluation_dirs=[str(OUTPUT / "evaluate")], grid_name="x", qualitative=1, output_dir=str(OUTPUT / "report"))""",
}


@pytest.mark.slow
def test_the_import_graph_covers_every_module_a_real_stage_call_imports(tmp_path):
    """The graph is read from the source; a run of the stage in a fresh process is the truth."""
    import subprocess

    for stage in ("evaluate", "report"):
        notebook = NOTEBOOKS / f"{stage}.ipynb"
        script = (f"import json, sys\nfrom pathlib import Path\nOUTPUT = Path({str(tmp_path)!r})\n"
                  f"from savfi_core.study.stages import run_{stage}\n{STAGE_CALLS[stage]}\n"
                  "print(json.dumps(sorted(str(getattr(m, '__file__', None)) for n, m in list(sys.modules.items()) "
                  "if n == 'savfi_core' or n.startswith('savfi_core.'))))")
        completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO_ROOT,
                                   env={**os.environ, "MPLBACKEND": "Agg"}, timeout=300)
        assert completed.returncode == 0, completed.stderr[-2000:]
        imported = {Path(name).resolve().relative_to(REPO_ROOT / "savfi_core").as_posix()
                    for name in json.loads(completed.stdout.strip().splitlines()[-1])}
        missing = imported - used(notebook, REPO_ROOT / "savfi_core")
        assert not missing, f"{stage}: imported at run time but not in the import graph: {sorted(missing)}"
        assert len(imported) > 10


@pytest.mark.slow
def test_run_all_reruns_the_jobs_that_use_a_changed_file_and_nothing_else(package_copy, tmp_path, capsys):
    grid, results = small_grid(tmp_path), tmp_path / "results"
    # the fake evaluate notebook uses savfi_core.metrics; the other fake notebooks use no savfi_core code
    evaluate = nbformat.read(tmp_path / "fake_evaluate.ipynb", as_version=4)
    evaluate.cells[1].source = "from savfi_core.metrics import psnr\n" + evaluate.cells[1].source
    nbformat.write(evaluate, tmp_path / "fake_evaluate.ipynb")
    assert run_all.main(["--grid", str(grid), "--results", str(results), "--jobs", "2"]) == 0
    first = records(results)
    assert all(record["status"] == "done" for record in first.values())
    assert all({"commit", "dirty", "code_digest", "code_files"} <= set(record) for record in first.values())
    assert "metrics.py" in first["evaluate-alpha-seed0"]["code_files"] and first["report"]["code_files"] == []

    capsys.readouterr()
    assert run_all.main(["--grid", str(grid), "--results", str(results)]) == 0
    assert "0 ran, 4 unchanged" in capsys.readouterr().out

    interpolate = package_copy / "interpolate.py"  # used by no job
    interpolate.write_text(interpolate.read_text() + "\n# a change the jobs do not run\n")
    assert run_all.main(["--grid", str(grid), "--results", str(results)]) == 0
    assert "0 ran, 4 unchanged" in capsys.readouterr().out

    metrics = package_copy / "metrics.py"
    metrics.write_text(metrics.read_text() + "\n# a change to the library\n")
    assert run_all.main(["--grid", str(grid), "--results", str(results), "--dry-run"]) == 0
    planned = capsys.readouterr().out
    assert "meta_train-alpha-maml-seed0" in planned and planned.count("pending") == 3  # 2 evaluations, and the report after them
    assert run_all.main(["--grid", str(grid), "--results", str(results)]) == 0
    # the evaluations rerun; they write the same metrics, so the report's inputs are unchanged
    assert "2 ran, 2 unchanged" in capsys.readouterr().out
    second = records(results)
    assert {job_id for job_id in second if second[job_id]["hash"] != first[job_id]["hash"]} == {
        "evaluate-alpha-pretrained", "evaluate-alpha-seed0"}

    assert run_all.main(["--grid", str(grid), "--results", str(results)]) == 0
    assert "0 ran, 4 unchanged" in capsys.readouterr().out


def test_code_state_names_the_commit_and_the_dirty_flag():
    state = cache.code_state()
    if shutil.which("git") is None or state["commit"] is None:
        pytest.skip("not a git checkout here: the record holds commit None, dirty None")
    assert len(state["commit"]) == 40 and isinstance(state["dirty"], bool)
