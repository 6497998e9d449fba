"""Write the study notebooks (without outputs) from the cell sources below.

    python notebooks/make_notebooks.py

Edit the sources here, not the .ipynb files, then rerun this script; tests check that the
committed notebooks have no outputs and a cell tagged ``parameters``. Every notebook runs top
to bottom in JupyterLab with its default parameters, and ``run_all.py`` runs them with papermill.
"""
from __future__ import annotations

from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "pretrain.ipynb": [
        ("markdown", "# Pretrain a backbone\n\nSupervised training on (t-1, t+1 -> t) triplets. Writes `checkpoint.pt` "
                     "(plain state_dict for `create_model(weights=...)`), `training_state.pt` (resume), `curve.csv`, `curve.png`."),
        ("parameters", '''backbone = "sepconv"
size = "tiny"
weights = None  # starting weights: None (random), "default" (shipped) or a checkpoint path
dataset = {"name": "clips", "split": "train"}
val_dataset = {"name": "clips", "split": "test"}
steps = 20
batch_size = 4
lr = None  # None: the backbone's original optimizer and learning rate
optimizer = None
seed = 0
val_every = 10
options = {"crop_size": 64}  # further keyword arguments of savfi_core.train.pretrain
output_dir = "results/manual/pretrain"'''),
        ("code", '''from savfi_core.stages import run_pretrain

curve = run_pretrain(backbone=backbone, size=size, weights=weights, dataset=dataset, val_dataset=val_dataset,
                     steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
                     val_every=val_every, options=options, output_dir=output_dir)
curve.tail()'''),
        ("code", '''from IPython.display import Image
Image(f"{output_dir}/curve.png")'''),
    ],
    "meta_train.ipynb": [
        ("markdown", "# Meta-train a backbone\n\nOne algorithm (MAML, MAML++, Meta-SGD, L2F), or re-training "
                     "(`inner_steps: 0`). Writes `meta_checkpoint.pt` (`MetaLearner.state_dict()`), `training_state.pt`, "
                     "`curve.csv`, `curve.png`."),
        ("parameters", '''backbone = "sepconv"
size = "tiny"
weights = None  # the initialization: "default" (shipped weights), a checkpoint path, or None
method = "maml"  # the algorithm, or "retrained"
meta_config = {"algorithm": "maml", "inner_steps": 1, "inner_lr": 1e-4, "inner_rule": "adam", "first_order": True,
               "outer_lr": 1e-5, "outer_optimizer": "adam"}  # fields of savfi_core.meta.MetaConfig
dataset = {"name": "clips", "split": "train"}
val_dataset = {"name": "clips", "split": "test"}
steps = 4
batch_size = 2
val_every = 0
seed = 0
options = {"crop_size": 64, "val_limit": 2}  # further keyword arguments of savfi_core.train.meta_train
output_dir = "results/manual/meta_train"'''),
        ("code", '''from savfi_core.stages import run_meta_train

curve = run_meta_train(backbone=backbone, size=size, weights=weights, method=method, meta_config=meta_config,
                       dataset=dataset, val_dataset=val_dataset, steps=steps, batch_size=batch_size,
                       val_every=val_every, seed=seed, options=options, output_dir=output_dir)
curve.tail()'''),
        ("code", '''from IPython.display import Image
Image(f"{output_dir}/curve.png")'''),
    ],
    "evaluate.ipynb": [
        ("markdown", "# Evaluate the protocols\n\nBaseline and test-time fine-tuning from `weights`; re-trained and "
                     "meta-trained from `checkpoints` (method -> `meta_checkpoint.pt`). Writes `metrics.csv` (one row per "
                     "sample and method), `steps.csv` (PSNR for each number of test-time inner steps), `crops/` + `crops.csv`."),
        ("parameters", '''backbone = "sepconv"
size = "tiny"
weights = None
protocols = ["baseline", "finetune"]
checkpoints = {}  # method -> meta_checkpoint.pt of meta_train.ipynb, e.g. {"maml": ".../meta_checkpoint.pt"}
meta_configs = {"finetune": {"inner_steps": 1, "inner_lr": 1e-4, "inner_rule": "adam"}}
datasets = [{"name": "clips", "split": "test"}]
inner_steps = [1, 2]  # test-time inner steps; the first is the headline
seed = None
max_samples = 3
qualitative = 1
options = {}
output_dir = "results/manual/evaluate"'''),
        ("code", '''from savfi_core.stages import run_evaluate

metrics = run_evaluate(backbone=backbone, size=size, weights=weights, protocols=protocols, checkpoints=checkpoints,
                       meta_configs=meta_configs, datasets=datasets, inner_steps=inner_steps, seed=seed,
                       max_samples=max_samples, qualitative=qualitative, options=options, output_dir=output_dir)
metrics.groupby(["dataset", "protocol", "algorithm"], dropna=False)[["psnr", "ssim", "adapt_seconds"]].mean()'''),
    ],
    "report.ipynb": [
        ("markdown", "# The study's tables and figures\n\nFrom the `metrics.csv` of every evaluation folder: "
                     "`metrics.csv`, `table_psnr.md`, `table_psnr.tex`, `figures/`."),
        ("parameters", '''evaluation_dirs = []  # folders of evaluate.ipynb runs; empty: every results/<grid_name>/evaluate-*
grid_name = "quick"
baseline = "baseline"
qualitative = 3
options = {}
output_dir = "results/manual/report"'''),
        ("code", '''from pathlib import Path
from savfi_core.stages import run_report

if not evaluation_dirs:
    evaluation_dirs = sorted(str(p) for p in Path("results", grid_name).glob("evaluate-*") if (p / "metrics.csv").is_file())
written = run_report(evaluation_dirs=evaluation_dirs, output_dir=output_dir, baseline=baseline,
                     qualitative=qualitative, grid_name=grid_name, options=options)
sorted(str(path) for path in written.values())'''),
        ("code", '''from IPython.display import Markdown
Markdown(Path(output_dir, "table_psnr.md").read_text())'''),
        ("code", '''from IPython.display import Image, display
for path in sorted(Path(output_dir, "figures").glob("*.png")):
    display(Image(str(path)))'''),
    ],
    "compare.ipynb": [
        ("markdown", "# Compare two methods\n\nPick a dataset, sequence, backbone and two methods: ground truth, both "
                     "predictions with their PSNR, their error maps, a zoomable crop and a wipe between them. The images "
                     "are the crops saved by the evaluation jobs of a grid."),
        ("parameters", '''grid_dir = "results/quick"  # a grid's results folder (its evaluate-* folders hold crops.csv)
interactive = True  # False: draw one static figure (for headless runs)'''),
        ("code", '''from pathlib import Path
from savfi_core.compare import CropLibrary, comparison_widget, plot_comparison
from savfi_core.report import load_crop_index, method_label

library = CropLibrary(load_crop_index(sorted(Path(grid_dir).glob("evaluate-*"))))'''),
        ("code", '''if interactive:
    display(comparison_widget(library))
else:
    dataset = library.datasets()[0]
    sequence = library.sequences(dataset)[0]
    backbone = library.backbones(dataset, sequence)[0]
    first, second = library.methods(dataset, sequence, backbone)[:2]
    plot_comparison(library.image(dataset, sequence, backbone, "gt"), library.image(dataset, sequence, backbone, first),
                    library.image(dataset, sequence, backbone, second), method_label(first), method_label(second))'''),
    ],
    "explore_data.ipynb": [
        ("markdown", "# What the datasets look like\n\nFrames of a few samples of each dataset and their motion "
                     "(mean absolute difference between consecutive valid frames), so that one sees what adaptation has to work with."),
        ("parameters", '''datasets = [{"name": "clips", "split": "train"}, {"name": "clips", "split": "test"}]
shared_data = "../shared/data"  # added when present: Vimeo septuplets and Middlebury
samples_per_dataset = 3
output_dir = "results/manual/explore_data"'''),
        ("code", '''from pathlib import Path
from savfi_core.stages import explore_datasets

specs = list(datasets)
if shared_data and Path(shared_data).is_dir():
    specs += [{"name": "vimeo_septuplet", "root": f"{shared_data}/vimeo_septuplet", "split": "test"},
              {"name": "middlebury", "root": f"{shared_data}/middlebury", "mode": "allframes"}]
motion = explore_datasets(specs, output_dir=output_dir, samples_per_dataset=samples_per_dataset)
motion.groupby("dataset")[["motion", "average_psnr"]].describe()'''),
        ("code", '''from IPython.display import Image, display
for path in sorted(Path(output_dir).glob("*.png")):
    display(Image(str(path)))'''),
    ],
}


def build(cells: list[tuple[str, str]]) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    for kind, source in cells:
        if kind == "markdown":
            cell = nbformat.v4.new_markdown_cell(source)
        else:
            cell = nbformat.v4.new_code_cell(source)
            if kind == "parameters":
                cell.metadata["tags"] = ["parameters"]
        cell.pop("id", None)  # stable files: no random cell ids
        notebook.cells.append(cell)
    notebook.nbformat_minor = 4  # cell ids are optional before 4.5
    return notebook


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        nbformat.write(build(cells), HERE / name)
        print(f"wrote {HERE / name}")


if __name__ == "__main__":
    main()
