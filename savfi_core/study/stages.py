"""What each study notebook does, as plain functions (the notebooks are a parameters cell and a
call of one of these, so everything is reachable from tests without a kernel).

Each function's keyword arguments are the fields of its stage config in
:mod:`savfi_core.study.schema` (the ``stage`` decorator builds the signature from it and checks
every value against it), and it writes its results as files into ``output_dir``:

===============  ==============================================================================
stage            files
===============  ==============================================================================
pretrain         checkpoint.pt (plain state_dict, loadable by ``create_model(weights=...)``),
                 training_state.pt (exact resume), training_state.curve.csv, curve.png
meta_train       meta_checkpoint.pt (``MetaLearner.state_dict()``), training_state.pt,
                 training_state.curve.csv, curve.png
evaluate         metrics.csv (tidy rows, headline inner steps), steps.csv (every test-time step
                 count of the adapting protocols), crops/*.png and crops.csv (qualitative panels)
report           metrics.csv, summary.csv, gains.csv, table_psnr.md, table_psnr.tex, figures/
===============  ==============================================================================

Dataset specifications are dicts ``{"name": <open_dataset name>, **options}`` with two optional
keys of their own: ``label`` (the name in the tables, default the dataset name) and
``protocols`` (restricts the protocols on that dataset, e.g. ``[baseline]`` for two-frame data).
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from savfi_core.study.checks import check_fields
from savfi_core.study.loader import Location
from savfi_core.study.schema import EvaluateConfig, MetaTrainConfig, PretrainConfig, ReportConfig
from savfi_core.study.timing import process_age_seconds, write_stage_timing
from savfi_core.vocabulary import FROM_STARTING_WEIGHTS

CROP_LIMIT = 256  # qualitative crops: full frame up to this size, else a central window


def stage(config_class: type) -> Callable:
    """``run_x(**parameters)`` from ``body(config)``: keyword arguments = the config's fields,
    each checked against its type (errors name the function and the parameter)."""

    def decorate(body: Callable) -> Callable:
        @functools.wraps(body)
        def run(**parameters: Any):
            ready_seconds = process_age_seconds()
            start = time.perf_counter()
            where = Location(f"{body.__name__}()", {})
            config = config_class(**check_fields(parameters, config_class, where, grid=False))
            result = body(config)
            # Only a stage that finished leaves its timing; the runner computes the overhead from it.
            write_stage_timing(config.output_dir, time.perf_counter() - start, ready_seconds)
            return result

        fields = dataclasses.fields(config_class)
        run.__signature__ = inspect.Signature([
            inspect.Parameter(field.name, inspect.Parameter.KEYWORD_ONLY,
                              default=field.default if field.default is not dataclasses.MISSING else
                              (field.default_factory() if field.default_factory is not dataclasses.MISSING else inspect.Parameter.empty))
            for field in fields])
        run.config_class = config_class
        return run

    return decorate


def open_spec(spec: dict[str, Any]):
    """open_dataset from a spec dict (without the study's own keys)."""
    from savfi_core.data import open_dataset

    options = {key: value for key, value in spec.items() if key not in ("label", "protocols")}
    if "name" not in options:
        raise ValueError(f"dataset spec {spec} lacks 'name'")
    return open_dataset(**options)


def spec_label(spec: dict[str, Any]) -> str:
    return str(spec.get("label") or spec["name"])


def _finish_training(curve: pd.DataFrame, output: Path, state: dict, checkpoint_name: str, title: str) -> pd.DataFrame:
    """What every training stage leaves beside the loop's curve CSV: the final checkpoint
    (atomically) and curve.png."""
    from savfi_core.checkpoint import atomic_save
    from savfi_core.report import plot_curve
    from savfi_core.train.distributed import is_main_process

    if not is_main_process():  # a rank > 0 of a torchrun job: rank 0 writes the results
        return curve
    atomic_save(state, output / checkpoint_name)
    plot_curve(curve, output / "curve.png", title)
    return curve


def _seeded_model(config: PretrainConfig | MetaTrainConfig) -> tuple[Path, Any]:
    """The output folder (created) and the stage's model, built after seeding torch with the job's seed."""
    from savfi_core.backbones import create_model

    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    return output, create_model(config.backbone, size=config.size, weights=config.weights)


def _loop_arguments(config: PretrainConfig | MetaTrainConfig, output: Path) -> dict[str, Any]:
    """The keyword arguments both training loops take from a stage config (the validation data
    opened here, after the training data, as the loops always had them)."""
    return dict(steps=config.steps, batch_size=config.batch_size, seed=config.seed, checkpoint_path=output / "training_state.pt",
                val_dataset=open_spec(config.val_dataset) if config.val_dataset else None, val_every=config.val_every or None,
                **config.options)


@stage(PretrainConfig)
def run_pretrain(config: PretrainConfig) -> pd.DataFrame:
    """Supervised pretraining of one backbone (``savfi_core.train.pretrain``); returns the curve."""
    from savfi_core.train import pretrain

    output, model = _seeded_model(config)
    curve = pretrain(model, open_spec(config.dataset), **_loop_arguments(config, output), lr=config.lr, optimizer=config.optimizer)
    return _finish_training(curve, output, model.state_dict(), "checkpoint.pt", f"pretrain {config.backbone} ({config.size})")


def meta_config_for(meta_config: dict, seed: int, steps: int):
    """MetaConfig of a grid entry: the job's seed, and the cosine / MSL schedules sized to the
    job's outer steps unless the grid sets them."""
    from savfi_core.meta import MetaConfig

    values = dict(meta_config)
    values.setdefault("total_outer_steps", max(1, int(steps)))
    values["seed"] = int(seed)
    return MetaConfig.from_dict(values)


@stage(MetaTrainConfig)
def run_meta_train(config: MetaTrainConfig) -> pd.DataFrame:
    """Meta-training (or re-training: ``inner_steps`` 0) from ``weights``; returns the curve."""
    from savfi_core.meta import MetaLearner
    from savfi_core.train import meta_train

    output, model = _seeded_model(config)
    learner = MetaLearner(model, meta_config_for(config.meta_config, config.seed, config.steps))
    curve = meta_train(learner, open_spec(config.dataset), **_loop_arguments(config, output))
    return _finish_training(curve, output, learner.state_dict(), "meta_checkpoint.pt",
                            f"meta_train {config.backbone} {config.method} seed {config.seed}")


def _protocol_objects(config: EvaluateConfig) -> dict[str, Any]:
    """method -> protocol object (savfi_core.study.protocols) of an evaluation job."""
    from savfi_core.backbones import create_model
    from savfi_core.checkpoint import safe_load
    from savfi_core.meta import MetaConfig, MetaLearner
    from savfi_core.study import protocols

    methods: dict[str, Any] = {}
    if any(p in config.protocols for p in FROM_STARTING_WEIGHTS):
        model = create_model(config.backbone, size=config.size, weights=config.weights)
        if "baseline" in config.protocols:
            methods["baseline"] = protocols.unadapted("baseline", model)
        if "finetune" in config.protocols:
            methods["finetune"] = protocols.finetune(model, MetaConfig.from_dict(config.meta_configs.get("finetune", {})))
        if "cycle" in config.protocols:
            methods["cycle"] = protocols.cycle(model, MetaConfig.from_dict(config.meta_configs.get("cycle", {})))
    for method, path in config.checkpoints.items():
        protocol = "retrained" if method == "retrained" else "meta"
        if protocol in config.protocols:
            learner = MetaLearner.from_state_dict(create_model(config.backbone, size=config.size), safe_load(path))
            methods[method] = protocols.unadapted("retrained", learner.model) if protocol == "retrained" else protocols.meta(learner)
    missing = [p for p in config.protocols if p not in {protocol.name for protocol in methods.values()}]
    if missing:
        raise ValueError(f"protocols {missing} requested but nothing to evaluate them with (checkpoints: {sorted(config.checkpoints)})")
    return methods


@stage(EvaluateConfig)
def run_evaluate(config: EvaluateConfig) -> pd.DataFrame:
    """Evaluate the protocols of one backbone on every dataset; returns the headline metrics.

    protocols: any of baseline, finetune, cycle (on ``weights``), retrained, meta (from ``checkpoints``:
        method -> meta_checkpoint.pt; 'retrained' and one entry per algorithm).
    inner_steps: test-time inner steps; the first is the headline (metrics.csv), all of them go to
        steps.csv for the adapting protocols.
    """
    from savfi_core.meta import evaluate_frame_average
    from savfi_core.meta.evaluate import evaluate_protocols

    output = Path(config.output_dir)
    (output / "crops").mkdir(parents=True, exist_ok=True)
    methods = _protocol_objects(config)
    identity = {"backbone": config.backbone, "size": config.size, "seed": config.seed}
    headline_rows, step_rows, crop_rows = [], [], []
    for spec in config.datasets:
        dataset, label = open_spec(spec), spec_label(spec)
        allowed = spec.get("protocols")
        chosen = {method: protocol for method, protocol in methods.items() if allowed is None or protocol.name in allowed}
        if "baseline" in methods:
            # The weight-free reference beside the baseline: did the network learn motion at all?
            reference = evaluate_frame_average(dataset, limit=config.max_samples)
            headline_rows.append(reference.assign(**identity, dataset=label, algorithm=""))
        crop_indices, kept = _crop_indices(dataset, config), {}
        headline = int(config.inner_steps[0])

        def keep(index: int, protocol, inner_steps: int, prediction, method=None) -> None:
            if index in crop_indices and inner_steps == (headline if protocol.adapts else 0):
                kept[(index, method)] = prediction

        for method, protocol in chosen.items():
            # one inner loop per sample gives every count of the sweep (MetaLearner.adapt_steps)
            frame = evaluate_protocols([protocol], dataset, steps=list(config.inner_steps) if protocol.adapts else None,
                                       limit=config.max_samples, on_prediction=functools.partial(keep, method=method))
            frame = frame.assign(**identity, dataset=label, algorithm=method if protocol.name == "meta" else "")
            if protocol.adapts:
                step_rows.append(frame)
                headline_rows.append(frame[frame["inner_steps"] == headline])
            else:
                headline_rows.append(frame)
        crop_rows += _save_crops(dataset, label, chosen, crop_indices, kept, config, output)

    columns = ["backbone", "size", "protocol", "algorithm", "dataset", "sequence", "seed", "psnr", "ssim", "adapt_seconds",
               "inner_steps", "inner_rule", "inner_lr", "psnr_before", "psnr_after"]
    metrics = pd.concat(headline_rows, ignore_index=True)[columns]
    metrics.to_csv(output / "metrics.csv", index=False)
    steps_frame = pd.concat(step_rows, ignore_index=True)[columns] if step_rows else pd.DataFrame(columns=columns)
    steps_frame.to_csv(output / "steps.csv", index=False)
    pd.DataFrame(crop_rows, columns=["backbone", "dataset", "sequence", "seed", "panel", "path"]).to_csv(output / "crops.csv", index=False)
    return metrics


def _save_png(image: torch.Tensor, path: Path) -> None:
    """[3,H,W] in [0,1] -> 8-bit PNG, central CROP_LIMIT window of larger frames."""
    from PIL import Image

    height, width = image.shape[-2:]
    top, left = max(0, (height - CROP_LIMIT) // 2), max(0, (width - CROP_LIMIT) // 2)
    image = image[:, top:top + CROP_LIMIT, left:left + CROP_LIMIT]
    array = (image.detach().clamp(0, 1).permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(array).save(path)


def _crop_indices(dataset, config: EvaluateConfig) -> list[int]:
    """The ``config.qualitative`` evenly spaced samples whose panels are saved."""
    available = len(dataset) if config.max_samples is None else min(len(dataset), config.max_samples)
    if config.qualitative <= 0 or available == 0:
        return []
    return sorted({int(i) for i in np.linspace(0, available - 1, min(config.qualitative, available))})


def _save_crops(dataset, label: str, methods: dict, indices: list[int], predictions: dict, config: EvaluateConfig,
                output: Path) -> list[dict]:
    """PNG panels (inputs, GT, each method's prediction after the headline inner steps) of the
    samples at ``indices``: the predictions that were measured, kept by the evaluation as
    (index, method) -> image."""
    rows = []
    for index in indices:
        sample = dataset[index]
        target = sample.target_index
        safe_name = f"{label}_{sample.name}".replace("/", "-").replace(":", "-")
        panels = {"input0": sample.frames[target - 1], "input1": sample.frames[target + 1], "gt": sample.frames[target]}
        for method in methods:
            panels[method] = predictions[(index, method)]
        for panel, image in panels.items():
            relative = f"crops/{safe_name}_{panel}.png"
            _save_png(torch.as_tensor(image), output / relative)
            rows.append({"backbone": config.backbone, "dataset": label, "sequence": sample.name, "seed": config.seed,
                         "panel": panel, "path": relative})
    return rows


@stage(ReportConfig)
def run_report(config: ReportConfig) -> dict[str, Path]:
    """Tables and figures of a whole grid (``savfi_core.report.write_report``)."""
    from savfi_core.report import load_crop_index, load_metrics, load_training_curves, method_name, write_report

    metrics = load_metrics(config.evaluation_dirs)
    step_files = [Path(folder) / "steps.csv" for folder in config.evaluation_dirs if (Path(folder) / "steps.csv").is_file()]
    steps = pd.concat([pd.read_csv(path) for path in step_files], ignore_index=True) if step_files else pd.DataFrame()
    if not steps.empty:
        steps["algorithm"] = steps["algorithm"].fillna("")
        steps["method"] = [method_name(p, a) for p, a in zip(steps["protocol"], steps["algorithm"])]
    crops = load_crop_index(config.evaluation_dirs)
    return write_report(metrics, config.output_dir, baseline=config.baseline, steps_metrics=steps, crops=crops,
                        qualitative=config.qualitative, curves=load_training_curves(config.evaluation_dirs))
