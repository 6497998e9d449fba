"""run_all.py's machinery with tiny fake notebooks: papermill end to end, Dask, failures, resume.

The fake notebooks stand in for the science (they write deterministic CSVs derived from their
parameters), so these tests pin down the job runner independently of savfi's models.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import run_all  # noqa: E402
from savfi_core.grid import GridError, expand_grid, load_grid, select_jobs  # noqa: E402

PARAMETERS = """
output_dir = None
backbone = None
size = None
weights = None
method = None
meta_config = None
seed = None
steps = None
options = {}
protocols = []
checkpoints = {}
evaluation_dirs = []
"""

FAKE_CODE = {
    "pretrain": """
from pathlib import Path
Path(output_dir, "checkpoint.pt").write_text(f"pretrained {backbone} {steps}")
""",
    "meta_train": """
import hashlib, json
from pathlib import Path
if options.get("fail"):
    raise RuntimeError(f"deliberate failure of {backbone} {method}")
import time
time.sleep(options.get("sleep", 0))
assert weights is None or Path(weights).is_file(), weights
text = json.dumps([backbone, method, meta_config, seed, steps], sort_keys=True)
Path(output_dir, "meta_checkpoint.pt").write_text(hashlib.sha256(text.encode()).hexdigest())
""",
    "evaluate": """
import csv, hashlib
from pathlib import Path
rows = []
methods = [(p, None) for p in protocols if p in ("baseline", "finetune")]
methods += [("retrained" if m == "retrained" else "meta", m) for m in checkpoints]
for protocol, method in methods:
    token = Path(checkpoints[method]).read_text() if method else protocol
    for sequence in ("a", "b", "c"):
        value = int(hashlib.sha256((token + sequence + backbone).encode()).hexdigest()[:6], 16) / 2**24
        rows.append(dict(backbone=backbone, size=size, protocol=protocol, algorithm=method or "",
                         dataset="fake", sequence=sequence, seed="" if seed is None else seed,
                         psnr=30 + value, ssim=0.9, adapt_seconds=0.0))
with open(Path(output_dir, "metrics.csv"), "w", newline="") as handle:
    writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
""",
    "report": """
import pandas as pd
from pathlib import Path
frames = [pd.read_csv(Path(d, "metrics.csv")) for d in evaluation_dirs]
pd.concat(frames).sort_values(["backbone", "protocol", "algorithm", "sequence", "seed"]).to_csv(Path(output_dir, "metrics.csv"), index=False)
""",
}


def write_fake_notebooks(folder: Path) -> dict[str, str]:
    paths = {}
    for stage, code in FAKE_CODE.items():
        notebook = nbformat.v4.new_notebook()
        parameters = nbformat.v4.new_code_cell(PARAMETERS)
        parameters.metadata["tags"] = ["parameters"]
        notebook.cells = [parameters, nbformat.v4.new_code_cell(code)]
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        path = folder / f"fake_{stage}.ipynb"
        nbformat.write(notebook, path)
        paths[stage] = str(path)
    return paths


def write_grid(folder: Path, **extra) -> Path:
    """Two backbones x two algorithms (+ re-trained) x one seed, all four protocols."""
    grid = {
        "name": "tiny",
        "validate": False,
        "notebooks": write_fake_notebooks(folder),
        "backbones": ["alpha", "beta"],
        "size": "tiny",
        "weights": None,
        "seeds": [0],
        "pretrain": {"dataset": {"name": "fake"}, "steps": 1, "batch_size": 1},
        "meta_train": {"dataset": {"name": "fake"}, "steps": 2, "batch_size": 1, "algorithms": ["maml", "metasgd"],
                       "config": {"inner_steps": 1, "inner_lr": 0.1}},
        "evaluate": {"datasets": [{"name": "fake"}], "protocols": ["baseline", "retrained", "finetune", "meta"], "inner_steps": [1]},
        "report": {},
        **extra,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def records(results: Path) -> dict[str, dict]:
    return {path.parent.name: json.loads(path.read_text()) for path in (results / "tiny").glob("*/job.json")}


def test_grid_expands_into_jobs_with_dependencies(tmp_path):
    jobs = expand_grid(load_grid(write_grid(tmp_path)))
    ids = [job.job_id for job in jobs]
    assert ids[:4] == ["pretrain-alpha", "evaluate-alpha-pretrained", "meta_train-alpha-maml-seed0", "meta_train-alpha-metasgd-seed0"]
    assert "meta_train-beta-retrained-seed0" in ids and ids[-1] == "report"
    by_id = {job.job_id: job for job in jobs}
    assert set(by_id["evaluate-beta-seed0"].depends_on) == {
        "pretrain-beta", "meta_train-beta-maml-seed0", "meta_train-beta-metasgd-seed0", "meta_train-beta-retrained-seed0"}
    assert by_id["meta_train-alpha-retrained-seed0"].parameters["meta_config"]["inner_steps"] == 0
    # every job comes after all of its dependencies
    for position, job in enumerate(jobs):
        assert all(ids.index(dep) < position for dep in job.depends_on)
    assert [job.job_id for job in select_jobs(jobs, ["evaluate-beta-pretrained"])] == ["pretrain-beta", "evaluate-beta-pretrained"]


def test_job_hash_follows_the_content_of_the_weights_file_a_job_starts_from(tmp_path, monkeypatch):
    """New shipped weights (``weights: default``) or a rewritten weights file must rerun the job."""
    from savfi_core import grid

    notebook = tmp_path / "stage.ipynb"
    notebook.write_text("{}")
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"first")
    job = grid.Job("evaluate-x", "evaluate", notebook, {"backbone": "sepconv", "size": "tiny", "weights": str(weights)})
    first = grid.job_hash(job, {})
    weights.write_bytes(b"second")
    assert grid.job_hash(job, {}) != first
    shipped = tmp_path / "shipped.pt"
    shipped.write_bytes(b"one")
    monkeypatch.setattr("savfi_core.backbones.default_weights_path", lambda name, size: shipped)
    default_job = grid.Job("evaluate-y", "evaluate", notebook, {"backbone": "sepconv", "size": "tiny", "weights": "default"})
    before = grid.job_hash(default_job, {})
    shipped.write_bytes(b"two")
    assert grid.job_hash(default_job, {}) != before


def test_grid_errors_name_the_file_and_key(tmp_path):
    path = write_grid(tmp_path, evaluate={"datasets": [], "protocols": ["basline"], "inner_steps": [1]})
    with pytest.raises(GridError, match=r"tiny\.yaml.*basline"):
        expand_grid(load_grid(path))
    path = write_grid(tmp_path, meta_train={"dataset": {}, "steps": 1, "batch_size": 1, "algorithms": ["maml"], "config": {}, "stepz": 3})
    with pytest.raises(GridError, match="stepz"):
        expand_grid(load_grid(path))


def small_grid(folder: Path, **extra) -> Path:
    """The smallest grid with every kind of dependency: 4 jobs (evaluate-alpha-pretrained,
    meta_train-alpha-maml-seed0, evaluate-alpha-seed0, report)."""
    return write_grid(folder, backbones=["alpha"], pretrain=None,
                      meta_train={"dataset": {"name": "fake"}, "steps": 2, "batch_size": 1, "algorithms": ["maml"],
                                  "config": {"inner_steps": 1}},
                      evaluate={"datasets": [{"name": "fake"}], "protocols": ["baseline", "meta"], "inner_steps": [1]}, **extra)


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The small grid run once through papermill with the local executor (2 at once)."""
    folder = tmp_path_factory.mktemp("local")
    grid = small_grid(folder)
    results = folder / "results"
    code = run_all.main(["--grid", str(grid), "--results", str(results), "--jobs", "2"])
    return code, grid, results


@pytest.mark.slow
def test_papermill_end_to_end_then_rerun_skips_finished_jobs(local_run, capsys):
    code, grid, results = local_run
    assert code == 0
    done = records(results)
    assert sorted(done) == ["evaluate-alpha-pretrained", "evaluate-alpha-seed0", "meta_train-alpha-maml-seed0", "report"]
    assert all(record["status"] == "done" for record in done.values())
    job_dir = results / "tiny" / "evaluate-alpha-seed0"
    for name in ("notebook.ipynb", "parameters.yaml", "log.txt", "metrics.csv"):
        assert (job_dir / name).is_file(), name
    executed = nbformat.read(job_dir / "notebook.ipynb", as_version=4)
    assert any("injected-parameters" in cell.metadata.get("tags", []) for cell in executed.cells)
    metrics = pd.read_csv(results / "tiny" / "metrics.csv")  # published into the grid folder by the report job
    assert sorted(set(metrics["protocol"])) == ["baseline", "meta"] and len(metrics) == 2 * 3

    capsys.readouterr()
    assert run_all.main(["--grid", str(grid), "--results", str(results)]) == 0
    assert "0 ran, 4 unchanged" in capsys.readouterr().out
    assert records(results) == done  # nothing was touched

    # Changing a report parameter reruns the report only; the evaluations stay as they are.
    changed = yaml.safe_load(grid.read_text())
    changed["report"] = {"qualitative": 5}
    grid.write_text(yaml.safe_dump(changed))
    assert run_all.main(["--grid", str(grid), "--results", str(results)]) == 0
    assert "1 ran, 3 unchanged" in capsys.readouterr().out
    rerun = {job_id for job_id, record in records(results).items() if record != done[job_id]}
    assert rerun == {"report"}


@pytest.mark.slow
def test_archived_records_without_weights_resume_as_finished(local_run, tmp_path, capsys):
    """A finished grid's records, archived without weights (to commit them) and copied back into a
    new results folder, count as finished there; a training job whose evaluation has not run yet
    keeps its weights, so it is not archived and runs again."""
    import shutil

    from savfi_core.study.archive import archive_finished
    from savfi_core.study.runner import plan

    code, grid, results = local_run
    assert code == 0
    jobs = expand_grid(load_grid(grid))
    archive = tmp_path / "archive"
    assert archive_finished(jobs, results / "tiny", archive) == [job.job_id for job in jobs]
    assert not list(archive.rglob("*.pt")) and not list(archive.rglob("notebook.ipynb"))
    assert (archive / "meta_train-alpha-maml-seed0" / "job.json").is_file()
    restored = tmp_path / "restored"
    shutil.copytree(archive, restored / "tiny")
    assert set(plan(jobs, restored / "tiny").values()) == {"cached"}
    assert run_all.main(["--grid", str(grid), "--results", str(restored)]) == 0
    assert "0 ran, 4 unchanged" in capsys.readouterr().out

    # the evaluation of the seed and the report have not run: the training's weights are still needed
    partial = tmp_path / "partial"
    shutil.copytree(results / "tiny", partial, ignore=shutil.ignore_patterns("evaluate-alpha-seed0", "report"))
    assert archive_finished(jobs, partial, tmp_path / "archive-partial") == ["evaluate-alpha-pretrained"]
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "archive-partial", resumed / "tiny")
    assert plan(jobs, resumed / "tiny") == {"evaluate-alpha-pretrained": "cached", "meta_train-alpha-maml-seed0": "pending",
                                            "evaluate-alpha-seed0": "pending", "report": "pending"}
    assert run_all.main(["--grid", str(grid), "--results", str(resumed)]) == 0
    assert "3 ran, 1 unchanged" in capsys.readouterr().out
    for job_id in ("evaluate-alpha-pretrained", "evaluate-alpha-seed0"):
        pd.testing.assert_frame_equal(pd.read_csv(resumed / "tiny" / job_id / "metrics.csv"),
                                      pd.read_csv(results / "tiny" / job_id / "metrics.csv"))


@pytest.mark.slow
def test_dask_local_cluster_gives_the_same_metrics(local_run, tmp_path):
    code, grid, results = local_run
    assert code == 0
    distributed = tmp_path / "dask"
    assert run_all.main(["--grid", str(grid), "--results", str(distributed), "--executor", "dask", "--jobs", "2", "--only", "evaluate"]) == 0
    for job_id in ("evaluate-alpha-pretrained", "evaluate-alpha-seed0"):
        expected = pd.read_csv(results / "tiny" / job_id / "metrics.csv")
        pd.testing.assert_frame_equal(pd.read_csv(distributed / "tiny" / job_id / "metrics.csv"), expected)
    assert records(distributed)["meta_train-alpha-maml-seed0"]["status"] == "done"


@pytest.mark.slow
def test_failing_job_is_recorded_dependants_skipped_rest_finish(tmp_path, capsys):
    grid = write_grid(tmp_path, pretrain=None, report=None,
                      meta_train={"dataset": {"name": "fake"}, "steps": 2, "batch_size": 1, "algorithms": ["maml"], "config": {}},
                      evaluate={"datasets": [{"name": "fake"}], "protocols": ["meta"], "inner_steps": [1]},
                      per_backbone={"alpha": {"meta_train": {"options": {"fail": True}}}})
    results = tmp_path / "results"
    assert run_all.main(["--grid", str(grid), "--results", str(results), "--jobs", "2"]) == 1
    state = records(results)
    assert state["meta_train-alpha-maml-seed0"]["status"] == "failed"
    assert "deliberate failure of alpha" in state["meta_train-alpha-maml-seed0"]["error"]
    assert (results / "tiny" / "meta_train-alpha-maml-seed0" / "notebook.ipynb").is_file()  # executed, with the error
    assert state["evaluate-alpha-seed0"]["status"] == "skipped"
    assert "meta_train-alpha-maml-seed0" in state["evaluate-alpha-seed0"]["error"]
    assert state["meta_train-beta-maml-seed0"]["status"] == "done" and state["evaluate-beta-seed0"]["status"] == "done"
    out = capsys.readouterr().out
    assert "1 failed" in out and "FAILED  meta_train-alpha-maml-seed0" in out and "SKIPPED evaluate-alpha-seed0" in out


def test_dry_run_lists_jobs_without_running(tmp_path, capsys):
    grid = write_grid(tmp_path)
    assert run_all.main(["--grid", str(grid), "--results", str(tmp_path / "results"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "13 jobs" in out and "meta_train-beta-metasgd-seed0" in out and "pending" in out
    assert not (tmp_path / "results").exists()


@pytest.mark.slow
def test_ctrl_c_stops_the_grid_and_a_rerun_continues_without_redoing_jobs(tmp_path):
    """Interrupt like a terminal does (SIGINT to the process group) once the first job finished."""
    import os
    import signal
    import subprocess
    import time

    grid = write_grid(tmp_path, pretrain=None, report=None,
                      meta_train={"dataset": {"name": "fake"}, "steps": 2, "batch_size": 1, "algorithms": ["maml", "metasgd"],
                                  "config": {}, "options": {"sleep": 2}},
                      evaluate={"datasets": [{"name": "fake"}], "protocols": ["meta"], "inner_steps": [1]})
    results = tmp_path / "results"
    command = [sys.executable, str(REPO_ROOT / "run_all.py"), "--grid", str(grid), "--results", str(results), "--jobs", "1"]
    # A shell's background job (`make test &`, nohup) inherits SIGINT ignored, and Python then keeps
    # it ignored, as every Unix program does: give the grid the terminal's default, as a user's has.
    process = subprocess.Popen(command, cwd=REPO_ROOT, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not any(record.get("status") == "done" for record in records(results).values()):
        assert process.poll() is None and time.monotonic() < deadline, "grid ended or stalled before a job finished"
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 130, output
    assert "interrupted" in output
    finished = {job_id for job_id, record in records(results).items() if record.get("status") == "done"}
    assert 1 <= len(finished) < 6, finished  # six jobs in all: four meta_train, two evaluate
    assert not any(record.get("status") == "queued" for record in records(results).values())

    rerun = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert f"{6 - len(finished)} ran, {len(finished)} unchanged" in rerun.stdout
    assert all(record["status"] == "done" for record in records(results).values())


@pytest.mark.slow
def test_every_job_record_has_its_timing_and_the_grid_its_timing_table(local_run):
    code, grid, results = local_run
    assert code == 0
    for job_id, record in records(results).items():
        assert record["wall_seconds"] > 0, job_id
        assert record["started"] <= record["ended"], job_id
        assert record["peak_rss_mb"] > 10, job_id  # the kernel's resident set, as its parent reaped it
        assert record["stage_seconds"] is None  # the fake notebooks do not go through savfi_core.study.stages
    table = (results / "tiny" / "timing.md").read_text()
    assert all(f"| {job_id} |" in table for job_id in records(results))
