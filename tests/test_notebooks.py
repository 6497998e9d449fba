"""The committed notebooks and grids: clean notebooks, valid grids, and a tiny real grid end to end."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest
import yaml

from savfi_core.checkpoint import safe_load

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

import run_all  # noqa: E402

NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
GRIDS = sorted((REPO_ROOT / "params").glob("*.yaml"))


def test_the_study_notebooks_are_all_there():
    names = {path.name for path in NOTEBOOKS}
    assert {"pretrain.ipynb", "meta_train.ipynb", "evaluate.ipynb", "report.ipynb", "compare.ipynb", "explore_data.ipynb"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda path: path.name)
def test_notebook_is_committed_clean_with_a_parameters_cell(path):
    notebook = nbformat.read(path, as_version=4)
    code_cells = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs for cell in code_cells), f"{path.name} has outputs"
    assert all(cell.execution_count is None for cell in code_cells), f"{path.name} has execution counts"
    tagged = [cell for cell in code_cells if "parameters" in cell.metadata.get("tags", [])]
    assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"
    assert "output_dir" in tagged[0].source or "grid_dir" in tagged[0].source


def test_notebooks_match_their_generator(tmp_path):
    sys.path.insert(0, str(REPO_ROOT / "notebooks"))
    import make_notebooks

    for name, cells in make_notebooks.NOTEBOOKS.items():
        committed = json.loads((REPO_ROOT / "notebooks" / name).read_text())
        generated = json.loads(nbformat.writes(make_notebooks.build(cells)))
        assert committed == generated, f"notebooks/{name} differs from make_notebooks.py: rerun it"


@pytest.mark.parametrize("path", GRIDS, ids=lambda path: path.name)
def test_every_grid_validates_in_dry_run(path, tmp_path, capsys, monkeypatch):
    # paper.yaml starts from the authors' released checkpoints (pretrained_models/*.pth, not
    # shipped); the dry run refuses weights files that do not exist, so empty stand-ins are put
    # where it looks (the working directory) and the rest of the grid is checked as it is.
    grid = yaml.safe_load(path.read_text())
    for override in (grid.get("per_backbone") or {}).values():
        if override.get("weights") not in (None, "default"):
            stand_in = tmp_path / override["weights"]
            stand_in.parent.mkdir(parents=True, exist_ok=True)
            stand_in.write_bytes(b"")
    monkeypatch.chdir(tmp_path)
    assert run_all.main(["--grid", str(path), "--results", str(tmp_path / "results"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"grid '{yaml.safe_load(path.read_text())['name']}'" in out


def test_quick_grid_covers_the_issue(capsys):
    run_all.main(["--grid", str(REPO_ROOT / "params" / "quick.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    for backbone in ("cain", "dain", "dvf", "rrin", "sepconv", "superslomo"):
        for method in ("maml", "maml++", "l2f", "metasgd", "retrained"):
            for seed in (0, 1):
                assert f"meta_train-{backbone}-{method}-seed{seed}" in out
        assert f"evaluate-{backbone}-pretrained" in out
    for backbone in ("rife_hdv3", "rife_v4"):  # the RIFE rows: both inner losses, and cycle fine-tuning
        for method in ("maml", "maml_cycle", "retrained"):
            for seed in (0, 1):
                assert f"meta_train-{backbone}-{method}-seed{seed}" in out
        assert f"evaluate-{backbone}-pretrained" in out
    grid = yaml.safe_load((REPO_ROOT / "params" / "quick.yaml").read_text())
    assert "cycle" in grid["evaluate"]["protocols"]


@pytest.mark.slow
def test_tiny_real_grid_runs_end_to_end_through_papermill(tiny_real_grid, tmp_path):
    """Two backbones x two algorithms, a few steps, from random tiny weights (the pipeline, not the science)."""
    assert tiny_real_grid["exit_code"] == 0
    folder = tiny_real_grid["folder"]
    metrics = pd.read_csv(folder / "metrics.csv")
    assert set(metrics["backbone"]) == {"sepconv", "dvf", "rife_hdv3"}
    tiny, rife = metrics[metrics["backbone"] != "rife_hdv3"], metrics[metrics["backbone"] == "rife_hdv3"]
    assert set(zip(tiny["protocol"], tiny["algorithm"].fillna(""))) == {
        ("frame_average", ""), ("baseline", ""), ("finetune", ""), ("meta", "maml"), ("meta", "metasgd")}
    assert set(zip(rife["protocol"], rife["algorithm"].fillna(""))) == {
        ("frame_average", ""), ("baseline", ""), ("finetune", ""), ("cycle", ""), ("meta", "maml"), ("meta", "maml_cycle")}
    cycle_trained = safe_load(folder / "meta_train-rife_hdv3-maml_cycle-seed0" / "meta_checkpoint.pt")
    assert cycle_trained["config"]["support_loss"] == "cycle"
    assert (folder / "gains_over_cycle.csv").is_file() and "Cycle FT" in (folder / "table_psnr.md").read_text()
    assert metrics["psnr"].between(5, 60).all()
    for name in ("table_psnr.md", "table_psnr.tex", "figures/gains.png", "figures/gain_vs_steps.png"):
        assert (folder / name).is_file(), name
    assert list((folder / "figures").glob("qualitative_*.png"))
    assert (folder / "meta_train-dvf-metasgd-seed0" / "meta_checkpoint.pt").is_file()

    # compare.ipynb on these results, headless
    import papermill

    papermill.execute_notebook(str(REPO_ROOT / "notebooks" / "compare.ipynb"), str(tmp_path / "compare.ipynb"),
                               parameters={"grid_dir": str(folder), "interactive": False}, progress_bar=False)
    executed = nbformat.read(tmp_path / "compare.ipynb", as_version=4)
    assert any(output.get("output_type") == "display_data" and "image/png" in output.get("data", {})
               for cell in executed.cells for output in cell.get("outputs", []))
