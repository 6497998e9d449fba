"""Meta-training under torchrun (gloo, 2 CPU processes) against one process, and its resume.

* 2 ranks x 2 tasks = 1 process x 4 tasks: the updated meta-parameters (network, MAML++ rates,
  Meta-SGD rates, L2F attenuator, per-step BatchNorm weights) and the summed meta-gradients, in
  float64, for every algorithm, first and second order, on tiny backbones and real frames.
* A 2-rank run killed (SIGKILL of one rank) after a checkpoint resumes under torchrun and ends
  with the loss curve of an uninterrupted 2-rank run; a resume with 1 process is refused.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import yaml
import pytest
import torch

import distributed_worker
from savfi_core.train.distributed import DistributedContext
from savfi_core.train.loop import WorldSizeMismatchError

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))  # run_all
WORKER = Path(distributed_worker.__file__)
ALGORITHMS = ("maml", "maml++", "l2f", "metasgd")
COMMON = {"inner_steps": 1, "inner_lr": 1e-3, "outer_lr": 1e-3}


def equivalence_runs() -> list[dict]:
    runs = []
    for algorithm in ALGORITHMS:
        for order in ("first", "second"):
            runs.append({"name": f"sepconv-{algorithm}-{order}", "backbone": "sepconv", "batch_size": 4,
                         # L2F's attenuator gets its first non-zero gradient at the second step
                         "steps": 2 if algorithm == "l2f" else 1,
                         "meta_config": {**COMMON, "algorithm": algorithm, "first_order": order == "first"}})
    # DVF has BatchNorm: MAML++ learns per-step BatchNorm weights there.
    runs.append({"name": "dvf-maml++-first", "backbone": "dvf", "batch_size": 4, "steps": 1,
                 "meta_config": {**COMMON, "algorithm": "maml++", "first_order": True}})
    return runs


def torchrun(runs: list[dict], frames: Path, folder: Path) -> subprocess.Popen:
    folder.mkdir(parents=True, exist_ok=True)
    spec_path = folder / "spec.json"
    spec_path.write_text(json.dumps({"runs": runs, "frames": str(frames), "out": str(folder)}))
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(WORKER), str(spec_path)]
    return subprocess.Popen(command, env=environment, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


def test_shard_is_a_disjoint_cover_of_the_batch():
    for world_size in (1, 2, 3, 8):
        for count in (1, 4, 7, 8):
            shards = [DistributedContext(rank=rank, world_size=world_size).shard(count) for rank in range(world_size)]
            assert sorted(index for shard in shards for index in shard) == list(range(count))
            assert all(shard == list(range(shard[0], shard[-1] + 1)) for shard in shards if shard)
    assert DistributedContext(rank=1, world_size=2).shard(4) == [2, 3]


RESUME_RUN = {"name": "resume", "backbone": "sepconv", "batch_size": 4, "steps": 5, "checkpoint_every": 1,
              "meta_config": {**COMMON, "algorithm": "maml++", "first_order": True}}


PRETRAIN_RUN = {"name": "pretrain-sepconv", "pretrain": True, "backbone": "sepconv", "batch_size": 4, "steps": 2}


@pytest.fixture(scope="module")
def real_frames(tmp_path_factory) -> Path:
    return distributed_worker.save_real_frames(tmp_path_factory.mktemp("frames") / "frames.pt")


@pytest.fixture(scope="module")
def two_rank_results(tmp_path_factory, real_frames):
    """One torchrun launch (process start-up dominates): every equivalence run, then the
    uninterrupted run of the resume test."""
    folder = tmp_path_factory.mktemp("two_ranks")
    finish(torchrun(equivalence_runs() + [PRETRAIN_RUN, RESUME_RUN], real_frames, folder))
    return folder


@pytest.mark.parametrize("run", equivalence_runs(), ids=lambda run: run["name"])
def test_two_ranks_of_two_tasks_equal_one_process_of_four(run, two_rank_results, real_frames, tmp_path):
    folder = two_rank_results
    ranks = [torch.load(folder / f"{run['name']}.rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    learner, curve = distributed_worker.train(run, tmp_path, real_frames, DistributedContext())
    reference = distributed_worker.meta_parameters_and_gradients(learner)

    # Both ranks end with the same meta-parameters (they took the same update).
    for name, value in ranks[0]["values"].items():
        assert torch.equal(value, ranks[1]["values"][name]), name
    learned = [name for name in reference["values"] if name.startswith("learned.")]
    if run["meta_config"]["algorithm"] != "maml":
        assert learned, "the algorithm's own meta-parameters are missing"
    if run["backbone"] == "dvf":
        assert any("batchnorm_weights" in name for name in learned)
    assert set(ranks[0]["values"]) == set(reference["values"])
    assert set(ranks[0]["grads"]) == set(reference["grads"])
    for name, value in reference["values"].items():
        error = (ranks[0]["values"][name] - value).abs().max().item()
        assert error <= 1e-6, f"{name}: updated meta-parameter differs by {error}"
    for name, grad in reference["grads"].items():
        scale = max(grad.abs().max().item(), 1e-12)
        error = (ranks[0]["grads"][name] - grad).abs().max().item()
        assert error <= 1e-6 * scale, f"{name}: meta-gradient differs by {error} (largest entry {scale})"
    assert ranks[0]["outer_loss"] == pytest.approx(curve["outer_loss"].tolist(), rel=1e-12, abs=0)
    if run["steps"] == 1:
        # The optimizer moved every meta-parameter that has a gradient: the comparison is not vacuous.
        start = distributed_worker.build_learner(run)
        initial = distributed_worker.meta_parameters_and_gradients(start)["values"]
        moved = [name for name in reference["grads"] if not torch.equal(initial[name], reference["values"][name])]
        assert len(moved) >= len(reference["grads"]) // 2


def test_pretraining_on_two_ranks_equals_one_process(two_rank_results, real_frames, tmp_path):
    """Supervised pretraining too: the loss and the gradient norm (after the all-reduce, before
    clipping) of each step, and the weights after two Adam steps."""
    ranks = [torch.load(two_rank_results / f"pretrain-sepconv.rank{rank}.pt", weights_only=True) for rank in (0, 1)]
    model, curve = distributed_worker.pretrain_model(PRETRAIN_RUN, tmp_path, real_frames, DistributedContext())
    for column in ("loss", "grad_norm"):
        assert ranks[0]["curve"][column] == pytest.approx(curve[column].tolist(), rel=1e-10, abs=0), column
    for name, value in model.named_parameters():
        assert torch.equal(ranks[0]["values"][name], ranks[1]["values"][name]), name
        error = (ranks[0]["values"][name] - value.detach()).abs().max().item()
        assert error <= 1e-6, f"{name}: differs by {error}"


def test_second_order_meta_gradients_differ_from_first_order(two_rank_results):
    folder = two_rank_results
    for algorithm in ALGORITHMS:
        first = torch.load(folder / f"sepconv-{algorithm}-first.rank0.pt", weights_only=True)["grads"]
        second = torch.load(folder / f"sepconv-{algorithm}-second.rank0.pt", weights_only=True)["grads"]
        assert any(not torch.allclose(first[name], second[name], rtol=1e-6, atol=0) for name in first), algorithm


def test_killed_two_rank_run_resumes_to_the_uninterrupted_curve(two_rank_results, real_frames, tmp_path):
    straight = two_rank_results
    expected = pd.read_csv(straight / "resume.state.curve.csv")
    assert len(expected) == RESUME_RUN["steps"]

    killed = tmp_path / "killed"
    slow = {**RESUME_RUN, "delay": 0.2}  # the same batches, drawn slowly: at least 0.8 s per step
    process = torchrun([slow], real_frames, killed)
    curve_file = killed / "resume.state.curve.csv"
    deadline = time.monotonic() + 240
    while not (curve_file.is_file() and len(pd.read_csv(curve_file)) >= 2):
        assert process.poll() is None, process.communicate()[0][-4000:]
        assert time.monotonic() < deadline, "no checkpoint at step 2 within 240 s"
        time.sleep(0.05)
    os.kill(int((killed / "pid.rank1").read_text()), signal.SIGKILL)  # one rank dies: the group stops
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0, output[-2000:]
    done_before = len(pd.read_csv(curve_file))
    assert 2 <= done_before < RESUME_RUN["steps"], done_before

    output = finish(torchrun([RESUME_RUN], real_frames, killed))
    assert f"resumed meta_train from {killed / 'resume.state.pt'} at step {done_before}" in output
    resumed = pd.read_csv(curve_file)
    for column in ("step", "loss", "outer_loss", "query_loss", "support_loss_before"):
        assert resumed[column].tolist() == expected[column].tolist(), column
    final = [torch.load(folder / "resume.rank0.pt", weights_only=True)["values"] for folder in (straight, killed)]
    for name, value in final[0].items():
        assert torch.equal(value, final[1][name]), name

    # The same checkpoint under one process: refused, naming both world sizes.
    with pytest.raises(WorldSizeMismatchError, match=r"run of 2 process\(es\).*this run has 1"):
        distributed_worker.train({**RESUME_RUN, "steps": 7}, straight, real_frames, DistributedContext())


# The grid's launcher option -------------------------------------------------------------------

def launcher_grid(folder: Path, launcher) -> Path:
    """A grid of one backbone and one algorithm whose meta_train section has ``launcher``."""
    grid = {"name": "launch", "validate": False, "backbones": ["sepconv"], "seeds": [0],
            "meta_train": {"dataset": {"name": "clips"}, "steps": 1, "batch_size": 2, "algorithms": ["maml"],
                           "config": {}, "launcher": launcher},
            "evaluate": {"datasets": [{"name": "clips"}], "protocols": ["meta"], "inner_steps": [1]}}
    path = folder / "launch.yaml"
    path.write_text(yaml.safe_dump(grid))
    return path


def test_dry_run_lists_the_torchrun_launcher_of_meta_training(tmp_path, capsys):
    import run_all

    path = launcher_grid(tmp_path, {"kind": "torchrun", "nproc_per_node": 2})
    assert run_all.main(["--grid", str(path), "--results", str(tmp_path / "results"), "--dry-run"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]}
    assert "torchrun x2" in lines["meta_train-sepconv-maml-seed0"]
    assert "torchrun" not in lines["evaluate-sepconv-seed0"]


@pytest.mark.parametrize("launcher, message", [
    ({"kind": "mpirun", "nproc_per_node": 2}, "meta_train.launcher.kind: expected one of ['python', 'torchrun']"),
    ({"kind": "torchrun", "nproc_per_node": 0}, "meta_train.launcher.nproc_per_node: expected an integer >= 1"),
    ({"kind": "torchrun", "nodes": 2}, "unknown key 'nodes'"),
    ({"kind": "python", "nproc_per_node": 4}, "nproc_per_node 4 needs kind: torchrun"),
])
def test_a_bad_launcher_is_refused_with_its_key(launcher, message, tmp_path, capsys):
    import run_all

    path = launcher_grid(tmp_path, launcher)
    assert run_all.main(["--grid", str(path), "--results", str(tmp_path / "results"), "--dry-run"]) == 2
    error = capsys.readouterr().err
    assert str(path) in error and message in error, error


def test_job_command_starts_torchrun_for_a_torchrun_launcher(tmp_path):
    from savfi_core.study.execute import job_command

    run_file = tmp_path / "run.json"
    assert job_command({"python": "py"}, run_file) == ["py", "-m", "savfi_core.study.execute", str(run_file)]
    command = job_command({"python": "py", "launcher": {"kind": "torchrun", "nproc_per_node": 3}}, run_file)
    assert command == ["py", "-m", "savfi_core.study.execute", "--torchrun", "3", str(run_file)]


RANK_NOTEBOOK = """
import os, torch.distributed as dist
from pathlib import Path
from savfi_core.train.distributed import distributed_context
context = distributed_context()
total = torch.tensor([context.rank + 1.0]); dist.all_reduce(total)
Path(output_dir, f"rank{context.rank}.txt").write_text(f"{context.world_size} {context.backend} {total.item()}")
"""


def test_a_torchrun_job_runs_its_notebook_on_every_rank(tmp_path):
    """execute_job under torchrun: each rank's kernel joins the group (gloo); rank 0 keeps the
    executed notebook, the others leave none behind."""
    import nbformat

    from savfi_core.study.execute import execute_job

    notebook = nbformat.v4.new_notebook()
    parameters = nbformat.v4.new_code_cell("output_dir = None")
    parameters.metadata["tags"] = ["parameters"]
    notebook.cells = [parameters, nbformat.v4.new_code_cell("import torch\n" + RANK_NOTEBOOK)]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = tmp_path / "ranks.ipynb"
    nbformat.write(notebook, path)
    job_dir = tmp_path / "job"
    outcome = execute_job({"job_id": "ranks", "notebook": str(path), "job_dir": str(job_dir), "working_directory": str(REPO_ROOT),
                           "parameters": {"output_dir": str(job_dir)}, "threads": 1, "python": sys.executable,
                           "launcher": {"kind": "torchrun", "nproc_per_node": 2}})
    assert outcome["status"] == "done", outcome["error"]
    assert [(job_dir / f"rank{rank}.txt").read_text() for rank in (0, 1)] == ["2 gloo 3.0"] * 2
    assert sorted(p.name for p in job_dir.glob("*.ipynb")) == ["notebook.ipynb"]
