"""What each study notebook does, as plain functions (the notebooks are a parameters cell and a
call of one of these, so everything is reachable from tests without a kernel).

Each function writes its results as files into ``output_dir``:

===============  ==============================================================================
stage            files
===============  ==============================================================================
pretrain         checkpoint.pt (plain state_dict, loadable by ``create_model(weights=...)``),
                 training_state.pt (exact resume), curve.csv, curve.png
meta_train       meta_checkpoint.pt (``MetaLearner.state_dict()``), training_state.pt, curve.csv,
                 curve.png
evaluate         metrics.csv (tidy rows, headline inner steps), steps.csv (every test-time step
                 count of the adapting protocols), crops/*.png and crops.csv (qualitative panels)
report           metrics.csv, summary.csv, gains.csv, table_psnr.md, table_psnr.tex, figures/
===============  ==============================================================================

Dataset specifications are dicts ``{"name": <open_dataset name>, **options}`` with two optional
keys of their own: ``label`` (the name in the tables, default the dataset name) and
``protocols`` (restricts the protocols on that dataset, e.g. ``[baseline]`` for two-frame data).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

ADAPTING = ("finetune", "meta")
CROP_LIMIT = 256  # qualitative crops: full frame up to this size, else a central window


def _open(spec: dict[str, Any]):
    """open_dataset from a spec dict (without the study's own keys)."""
    from savfi_core.data import open_dataset

    options = {key: value for key, value in spec.items() if key not in ("label", "protocols")}
    if "name" not in options:
        raise ValueError(f"dataset spec {spec} lacks 'name'")
    return open_dataset(**options)


def _label(spec: dict[str, Any]) -> str:
    return str(spec.get("label") or spec["name"])


def _plot_curve(curve: pd.DataFrame, path: Path, title: str) -> None:
    from savfi_core.report import _pyplot

    plt = _pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    if "loss" in curve:
        axes[0].plot(curve["step"], curve["loss"], linewidth=0.8)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    for column, name in (("val_psnr", "model"), ("val_psnr_before", "before adaptation"), ("val_average_psnr", "frame averaging")):
        if column in curve and curve[column].notna().any():
            rows = curve[curve[column].notna()]
            axes[1].plot(rows["step"], rows[column], marker="o", label=name)
    axes[1].set_xlabel("step")
    axes[1].set_ylabel("validation PSNR (dB)")
    if axes[1].lines:
        axes[1].legend(fontsize="small")
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _write_training_outputs(curve, output: Path, state: dict, checkpoint_name: str, title: str) -> pd.DataFrame:
    """What every training stage leaves: curve.csv, the final checkpoint (atomically), curve.png."""
    from savfi_core.checkpoint import atomic_save

    curve = pd.DataFrame(curve)
    curve.to_csv(output / "curve.csv", index=False)
    atomic_save(state, output / checkpoint_name)
    _plot_curve(curve, output / "curve.png", title)
    return curve


def run_pretrain(
    *, backbone: str, size: str, weights: str | None, dataset: dict, steps: int, batch_size: int, seed: int,
    output_dir: str | os.PathLike, val_dataset: dict | None = None, lr: float | None = None, optimizer: str | None = None,
    val_every: int | None = None, options: dict | None = None,
) -> pd.DataFrame:
    """Supervised pretraining of one backbone (``savfi_core.train.pretrain``); returns the curve."""
    from savfi_core.backbones import create_model
    from savfi_core.train import pretrain

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = create_model(backbone, size=size, weights=weights)
    curve = pretrain(
        model, _open(dataset), steps=steps, batch_size=batch_size, lr=lr, optimizer=optimizer, seed=seed,
        checkpoint_path=output / "training_state.pt", val_dataset=_open(val_dataset) if val_dataset else None,
        val_every=val_every or None, **(options or {}),
    )
    return _write_training_outputs(curve, output, model.state_dict(), "checkpoint.pt", f"pretrain {backbone} ({size})")


def meta_config_for(meta_config: dict, seed: int, steps: int):
    """MetaConfig of a grid entry: the job's seed, and the cosine / MSL schedules sized to the
    job's outer steps unless the grid sets them."""
    from savfi_core.meta import MetaConfig

    values = dict(meta_config)
    values.setdefault("total_outer_steps", max(1, int(steps)))
    values["seed"] = int(seed)
    return MetaConfig.from_dict(values)


def run_meta_train(
    *, backbone: str, size: str, weights: str | None, method: str, meta_config: dict, dataset: dict, steps: int,
    batch_size: int, seed: int, output_dir: str | os.PathLike, val_dataset: dict | None = None,
    val_every: int | None = None, options: dict | None = None,
) -> pd.DataFrame:
    """Meta-training (or re-training: ``inner_steps`` 0) from ``weights``; returns the curve."""
    from savfi_core.backbones import create_model
    from savfi_core.meta import MetaLearner
    from savfi_core.train import meta_train

    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = create_model(backbone, size=size, weights=weights)
    learner = MetaLearner(model, meta_config_for(meta_config, seed, steps))
    curve = meta_train(
        learner, _open(dataset), steps=steps, batch_size=batch_size, seed=seed,
        checkpoint_path=output / "training_state.pt", val_dataset=_open(val_dataset) if val_dataset else None,
        val_every=val_every or None, **(options or {}),
    )
    return _write_training_outputs(curve, output, learner.state_dict(), "meta_checkpoint.pt",
                                   f"meta_train {backbone} {method} seed {seed}")


def _load_learner(backbone: str, size: str, path: str):
    from savfi_core.backbones import create_model
    from savfi_core.checkpoint import safe_load
    from savfi_core.meta import MetaLearner

    return MetaLearner.from_state_dict(create_model(backbone, size=size), safe_load(path))


def _save_png(image: torch.Tensor, path: Path) -> None:
    """[3,H,W] in [0,1] -> 8-bit PNG, central CROP_LIMIT window of larger frames."""
    from PIL import Image

    height, width = image.shape[-2:]
    top, left = max(0, (height - CROP_LIMIT) // 2), max(0, (width - CROP_LIMIT) // 2)
    image = image[:, top:top + CROP_LIMIT, left:left + CROP_LIMIT]
    array = (image.detach().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(array).save(path)


def run_evaluate(
    *, backbone: str, size: str, weights: str | None, protocols: list[str], datasets: list[dict], inner_steps: list[int],
    output_dir: str | os.PathLike, checkpoints: dict[str, str] | None = None, meta_configs: dict[str, dict] | None = None,
    seed: int | None = None, max_samples: int | None = None, qualitative: int = 2, options: dict | None = None,
) -> pd.DataFrame:
    """Evaluate the protocols of one backbone on every dataset; returns the headline metrics.

    protocols: any of baseline, finetune (on ``weights``), retrained, meta (from ``checkpoints``:
        method -> meta_checkpoint.pt; 'retrained' and one entry per algorithm).
    meta_configs: method -> config dict; 'finetune' gives the test-time fine-tuning settings.
    inner_steps: test-time inner steps; the first is the headline (metrics.csv), all of them go to
        steps.csv for the adapting protocols.
    """
    from savfi_core.backbones import create_model
    from savfi_core.meta import MetaConfig, MetaLearner, evaluate, evaluate_frame_average

    output = Path(output_dir)
    (output / "crops").mkdir(parents=True, exist_ok=True)
    checkpoints, meta_configs = dict(checkpoints or {}), dict(meta_configs or {})
    headline = int(inner_steps[0])
    # method -> (protocol, runner for evaluate(), runner for qualitative predictions)
    runners: dict[str, tuple[str, Any]] = {}
    if "baseline" in protocols or "finetune" in protocols:
        model = create_model(backbone, size=size, weights=weights)
        if "baseline" in protocols:
            runners["baseline"] = ("baseline", model)
        if "finetune" in protocols:
            config = MetaConfig.from_dict(meta_configs.get("finetune", {}))
            runners["finetune"] = ("finetune", (model, config))
    for method, path in checkpoints.items():
        protocol = "retrained" if method == "retrained" else "meta"
        if protocol in protocols:
            learner = _load_learner(backbone, size, path)
            runners[method] = (protocol, learner.model if protocol == "retrained" else learner)
    missing = [p for p in protocols if p not in {protocol for protocol, _ in runners.values()}]
    if missing:
        raise ValueError(f"protocols {missing} requested but nothing to evaluate them with (checkpoints: {sorted(checkpoints)})")

    headline_rows, step_rows, crop_rows = [], [], []
    for spec in datasets:
        dataset, label = _open(spec), _label(spec)
        allowed = spec.get("protocols")
        if "baseline" in runners:
            # The weight-free reference beside the baseline: did the network learn motion at all?
            reference = evaluate_frame_average(dataset, limit=max_samples)
            headline_rows.append(reference.assign(backbone=backbone, size=size, dataset=label, seed=seed, algorithm=""))
        for method, (protocol, runner) in runners.items():
            if allowed is not None and protocol not in allowed:
                continue
            sweep = inner_steps if protocol in ADAPTING else [0]
            for steps in sweep:
                if protocol == "finetune":
                    model, config = runner
                    frame = evaluate(model, dataset, ["finetune"], config=config, steps=steps, limit=max_samples)
                else:
                    frame = evaluate(runner, dataset, [protocol], steps=steps if protocol in ADAPTING else None, limit=max_samples)
                frame = frame.assign(backbone=backbone, size=size, dataset=label, seed=seed,
                                     algorithm=method if protocol == "meta" else "")
                if protocol in ADAPTING:
                    step_rows.append(frame)
                if steps == sweep[0]:
                    headline_rows.append(frame)
        crop_rows += _save_crops(dataset, label, runners, backbone, seed, headline, qualitative, max_samples, allowed, output)

    columns = ["backbone", "size", "protocol", "algorithm", "dataset", "sequence", "seed", "psnr", "ssim", "adapt_seconds",
               "inner_steps", "inner_rule", "psnr_before", "psnr_after"]
    metrics = pd.concat(headline_rows, ignore_index=True)[columns]
    metrics.to_csv(output / "metrics.csv", index=False)
    steps_frame = pd.concat(step_rows, ignore_index=True)[columns] if step_rows else pd.DataFrame(columns=columns)
    steps_frame.to_csv(output / "steps.csv", index=False)
    pd.DataFrame(crop_rows, columns=["backbone", "dataset", "sequence", "seed", "panel", "path"]).to_csv(output / "crops.csv", index=False)
    return metrics


def _save_crops(dataset, label, runners, backbone, seed, steps, count, max_samples, allowed, output: Path) -> list[dict]:
    """PNG panels (inputs, GT, each method's prediction) of ``count`` evenly spaced samples."""
    from savfi_core.meta import MetaLearner

    available = len(dataset) if max_samples is None else min(len(dataset), max_samples)
    if count <= 0 or available == 0:
        return []
    rows = []
    for index in sorted({int(i) for i in np.linspace(0, available - 1, min(count, available))}):
        sample = dataset[index]
        target = sample.target_index
        safe_name = f"{label}_{sample.name}".replace("/", "-").replace(":", "-")
        panels = {"input0": sample.frames[target - 1], "input1": sample.frames[target + 1], "gt": sample.frames[target]}
        for method, (protocol, runner) in runners.items():
            if allowed is not None and protocol not in allowed:
                continue
            if protocol in ("baseline", "retrained"):
                panels[method] = MetaLearner(runner).predict(sample)
            elif protocol == "finetune":
                model, config = runner
                learner = MetaLearner(model, config.replace(algorithm="maml", per_step_batchnorm=False))
                panels[method] = learner.adapt_and_predict(sample, steps)[0]
            else:
                panels[method] = runner.adapt_and_predict(sample, steps)[0]
        for panel, image in panels.items():
            relative = f"crops/{safe_name}_{panel}.png"
            _save_png(torch.as_tensor(image), output / relative)
            rows.append({"backbone": backbone, "dataset": label, "sequence": sample.name, "seed": seed, "panel": panel, "path": relative})
    return rows


def run_report(
    *, evaluation_dirs: list[str], output_dir: str | os.PathLike, baseline: str = "baseline", qualitative: int = 3,
    grid_name: str = "", options: dict | None = None,
) -> dict[str, Path]:
    """Tables and figures of a whole grid (``savfi_core.report.write_report``)."""
    from savfi_core.report import load_crop_index, load_metrics, method_name, write_report

    metrics = load_metrics(evaluation_dirs)
    step_files = [Path(folder) / "steps.csv" for folder in evaluation_dirs if (Path(folder) / "steps.csv").is_file()]
    steps = pd.concat([pd.read_csv(path) for path in step_files], ignore_index=True) if step_files else pd.DataFrame()
    if not steps.empty:
        steps["algorithm"] = steps["algorithm"].fillna("")
        steps["method"] = [method_name(p, a) for p, a in zip(steps["protocol"], steps["algorithm"])]
    crops = load_crop_index(evaluation_dirs)
    return write_report(metrics, output_dir, baseline=baseline, steps_metrics=steps, crops=crops, qualitative=qualitative)


def explore_datasets(specs: list[dict], *, output_dir: str | os.PathLike, samples_per_dataset: int = 3) -> pd.DataFrame:
    """Per sample: motion (mean |frame(t+1) - frame(t-1)|) and the PSNR of frame averaging
    ((frame(t-1) + frame(t+1)) / 2 against frame(t)); one PNG per dataset with the valid frames
    of its first ``samples_per_dataset`` samples. Returns the per-sample table (also motion.csv)."""
    from savfi_core.metrics import psnr
    from savfi_core.report import _pyplot

    plt = _pyplot()
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for spec in specs:
        dataset, label = _open(spec), _label(spec)
        for index in range(len(dataset)):
            sample = dataset[index]
            t = sample.target_index
            before, after, target = sample.frames[t - 1], sample.frames[t + 1], sample.frames[t]
            rows.append({"dataset": label, "sequence": sample.name, "height": int(target.shape[-2]), "width": int(target.shape[-1]),
                         "motion": float((after - before).abs().mean()), "average_psnr": psnr((before + after) / 2, target)})
        shown = [dataset[i] for i in range(min(samples_per_dataset, len(dataset)))]
        if not shown:
            continue
        frames = len(shown[0].frames)
        figure, axes = plt.subplots(len(shown), frames, figsize=(1.8 * frames, 1.4 * len(shown) + 0.4), squeeze=False)
        for row, sample in enumerate(shown):
            for position in range(frames):
                axis = axes[row][position]
                axis.axis("off")
                if bool(sample.valid[position]):
                    axis.imshow(sample.frames[position].permute(1, 2, 0).clamp(0, 1).numpy())
                role = "target" if position == sample.target_index else ("" if sample.valid[position] else "(missing)")
                axis.set_title(f"{sample.name} [{position}] {role}" if position == 0 else f"[{position}] {role}", fontsize=6)
        figure.suptitle(label)
        figure.tight_layout()
        figure.savefig(output / f"{label.replace('/', '-')}.png", dpi=100)
        plt.close(figure)
    table = pd.DataFrame(rows)
    table.to_csv(output / "motion.csv", index=False)
    return table
