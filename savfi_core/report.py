"""The study's tables and figures, from the tidy per-sample metrics of every evaluation job.

Input: ``metrics.csv`` files with one row per (backbone, size, protocol, algorithm, dataset,
sequence, seed) and columns psnr, ssim, adapt_seconds (written by ``notebooks/evaluate.ipynb``);
optionally ``steps.csv`` (the same for several test-time inner-step counts, column
``inner_steps``) and ``crops.csv`` (an index of saved PNG crops for qualitative strips).

Statistics come from :mod:`savfi_core.metrics` (``summarize`` and ``paired_difference``). A
*method* is a protocol, or the algorithm for the meta-trained protocol. For each (backbone, size,
dataset, method) the rows of one sequence (its seeds) are averaged first, so a sequence counts
once; the table gives the mean over the n sequences and its 95% percentile-bootstrap interval.
The paired gain of a method over the baseline uses d_i = x_i(method) - x_i(baseline) on the same
sequences, with the same interval on the mean of d.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from savfi_core.metrics import paired_difference, psnr, summarize
from savfi_core.vocabulary import CYCLE_SUFFIX, METHOD_ORDER, NON_META_METHODS, SECOND_ORDER_SUFFIX

METRIC_COLUMNS = ("psnr", "ssim", "adapt_seconds")
KEY_COLUMNS = ("backbone", "size", "protocol", "algorithm", "dataset", "sequence", "seed")
GROUP_COLUMNS = ("backbone", "size", "dataset")
# Column order of the tables, and the methods without meta-training: savfi_core.vocabulary.
METHOD_LABELS = {
    "frame_average": "Frame avg.", "baseline": "Baseline", "retrained": "Re-trained", "finetune": "Fine-tune",
    "cycle": "Cycle FT", "maml": "MAML", "maml++": "MAML++", "l2f": "L2F", "metasgd": "Meta-SGD",
}
METHOD_LABELS.update({name + CYCLE_SUFFIX: METHOD_LABELS[name] + " cycle" for name in ("maml", "maml++", "l2f", "metasgd")})
METHOD_LABELS.update({name + SECOND_ORDER_SUFFIX: METHOD_LABELS[name] + " 2nd" for name in list(METHOD_LABELS)[5:]})


class ReportError(ValueError):
    """Metrics missing or malformed; the message names the file."""


def method_name(protocol: str, algorithm: object) -> str:
    """'meta' rows are named by their algorithm, every other protocol by itself."""
    if protocol == "meta":
        if not isinstance(algorithm, str) or not algorithm:
            raise ReportError(f"a 'meta' row needs its algorithm, got {algorithm!r}")
        return algorithm
    return protocol


def method_label(method: str) -> str:
    return METHOD_LABELS.get(method, method)


def _method_sort_key(method: str) -> tuple[int, str]:
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), method)


def load_metrics(paths: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate metrics CSV files (or folders holding ``metrics.csv``) and check the columns.

    Adds the column ``method`` (see ``method_name``).
    """
    frames = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            path = path / "metrics.csv"
        if not path.is_file():
            raise ReportError(f"metrics file not found: {path}")
        frame = pd.read_csv(path, keep_default_na=True)
        missing = [c for c in (*KEY_COLUMNS, *METRIC_COLUMNS) if c not in frame.columns]
        if missing:
            raise ReportError(f"{path}: missing columns {missing}")
        frames.append(frame)
    if not frames:
        raise ReportError("no metrics files given")
    metrics = pd.concat(frames, ignore_index=True)
    metrics["algorithm"] = metrics["algorithm"].fillna("")
    metrics["method"] = [method_name(p, a) for p, a in zip(metrics["protocol"], metrics["algorithm"])]
    return metrics


def per_sequence(metrics: pd.DataFrame, column: str) -> pd.DataFrame:
    """Seeds averaged: one value per (backbone, size, dataset, method, sequence)."""
    keys = [*GROUP_COLUMNS, "method", "sequence"]
    return metrics.groupby(keys, dropna=False, sort=False)[column].mean().reset_index()


def summarize_methods(metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean and 95% bootstrap CI of PSNR and SSIM per (backbone, size, dataset, method).

    Columns: backbone, size, dataset, method, n_sequences, n_seeds, psnr, psnr_low, psnr_high,
    ssim, ssim_low, ssim_high, adapt_seconds.
    """
    by = [*GROUP_COLUMNS, "method"]
    parts = []
    for column in ("psnr", "ssim"):
        summary = summarize(metrics, by=by, value=column, sequence="sequence")
        parts.append(summary[["mean", "ci_low", "ci_high", "n"]].rename(columns={
            "mean": column, "ci_low": f"{column}_low", "ci_high": f"{column}_high", "n": "n_sequences"}))
    table = parts[0].join(parts[1].drop(columns="n_sequences"))
    extra = metrics.groupby(by).agg(n_seeds=("seed", "nunique"), adapt_seconds=("adapt_seconds", "mean"))
    table = table.join(extra).reset_index()
    table["n_seeds"] = table["n_seeds"].clip(lower=1)
    return table.sort_values(by, key=_sort_series).reset_index(drop=True)


def _sort_series(series: pd.Series) -> pd.Series:
    if series.name == "method":
        return series.map(_method_sort_key)
    return series.astype(str)


def paired_gains(metrics: pd.DataFrame, baseline: str = "baseline", column: str = "psnr") -> pd.DataFrame:
    """Paired gain of every method over ``baseline`` on the same sequences (see module doc).

    Columns: backbone, size, dataset, method, gain, gain_low, gain_high, n_sequences, wins
    (sequences where the method beats the baseline, seeds averaged).
    """
    columns = [*GROUP_COLUMNS, "method", "gain", "gain_low", "gain_high", "n_sequences", "wins"]
    rows = []
    for keys, group in metrics.groupby(list(GROUP_COLUMNS), sort=False):
        if baseline not in set(group["method"]):
            continue
        sequences = per_sequence(group, column).pivot(index="sequence", columns="method", values=column)
        for method in sorted(set(group["method"]) - {baseline}, key=_method_sort_key):
            difference = paired_difference(group, method, baseline, value=column, method="method", sequence="sequence")
            row = difference.iloc[0]
            wins = int(((sequences[method] - sequences[baseline]).dropna() > 0).sum())
            rows.append({**dict(zip(GROUP_COLUMNS, keys)), "method": method, "gain": row["mean"], "gain_low": row["ci_low"],
                         "gain_high": row["ci_high"], "n_sequences": int(row["n"]), "wins": wins})
    if not rows:
        return pd.DataFrame(columns=columns)
    return pd.DataFrame(rows, columns=columns).sort_values([*GROUP_COLUMNS, "method"], key=_sort_series).reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def _interval(mean: float, low: float, high: float, digits: int, sign: bool = False) -> str:
    """'30.12 [29.80, 30.41]'; the interval is 'n/a' with fewer than two sequences."""
    number = f"{mean:+.{digits}f}" if sign else f"{mean:.{digits}f}"
    if not (math.isfinite(low) and math.isfinite(high)):
        return f"{number} [n/a]"
    if sign:
        return f"{number} [{low:+.{digits}f}, {high:+.{digits}f}]"
    return f"{number} [{low:.{digits}f}, {high:.{digits}f}]"


def _row_label(keys: dict, several_datasets: bool, several_sizes: bool) -> str:
    label = str(keys["backbone"])
    if several_sizes:
        label += f" ({keys['size']})"
    if several_datasets:
        label += f" / {keys['dataset']}"
    return label


def format_psnr_table(summary: pd.DataFrame, style: str = "md") -> str:
    """Rows backbones (x dataset), columns methods; "PSNR [CI] / SSIM [CI]", best PSNR per row bold."""

    def cell(row) -> str:
        return (_interval(row["psnr"], row["psnr_low"], row["psnr_high"], 2) + " / "
                + _interval(row["ssim"], row["ssim_low"], row["ssim_high"], 3))

    return _render(*_method_table(summary, "psnr", cell), style, "Mean PSNR (dB) / SSIM [95\\% bootstrap CI over sequences, seeds averaged]; best PSNR per row in bold.")


def format_gain_table(gains: pd.DataFrame, style: str = "md", reference: str = "the baseline") -> str:
    """Rows backbones (x dataset), columns methods; paired PSNR gain over ``reference`` [CI] (wins/n)."""

    def cell(row) -> str:
        return _interval(row["gain"], row["gain_low"], row["gain_high"], 2, sign=True) + f" ({int(row['wins'])}/{int(row['n_sequences'])})"

    return _render(*_method_table(gains, "gain", cell), style, f"Paired PSNR gain (dB) over {reference} [95\\% bootstrap CI over sequences]; (sequences improved / n).")


def meta_gains_over_finetuning(metrics: pd.DataFrame, column: str = "psnr", reference: str = "finetune") -> pd.DataFrame:
    """Paired gain of each meta-trained method over fine-tuning at test time (same inner steps
    and rule, pretrained weights): the paper's question, whether meta-training adds anything to
    test-time adaptation. reference: 'finetune' (the paper's triplet loss) or 'cycle' (the
    cycle-consistency loss). Columns as :func:`paired_gains`."""
    gains = paired_gains(metrics, baseline=reference, column=column)
    return gains[~gains["method"].isin(NON_META_METHODS)].reset_index(drop=True)


def gains_by_inner_steps(steps_metrics: pd.DataFrame, reference: str = "finetune") -> pd.DataFrame:
    """:func:`meta_gains_over_finetuning` at each number of test-time inner steps: the meta-trained
    method and ``reference`` ('finetune' or 'cycle') adapted with the same count on the same
    sequences. steps_metrics: the rows of ``steps.csv`` with a ``method`` column. Columns as
    :func:`paired_gains` plus inner_steps."""
    parts = [meta_gains_over_finetuning(frame, reference=reference).assign(inner_steps=int(count))
             for count, frame in steps_metrics.groupby("inner_steps", sort=True)]
    parts = [part for part in parts if not part.empty]
    if not parts:
        return pd.DataFrame(columns=[*GROUP_COLUMNS, "method", "gain", "gain_low", "gain_high", "n_sequences", "wins", "inner_steps"])
    return pd.concat(parts, ignore_index=True)


def adaptation_time(steps_metrics: pd.DataFrame) -> pd.DataFrame:
    """Mean wall seconds of test-time adaptation per frame (the inner loop, not the prediction)
    for each (backbone, size, dataset, method, inner_steps), over sequences and seeds; frame sizes
    differ between datasets, so they are kept apart. Columns: backbone, size, dataset, method,
    inner_steps, adapt_seconds, n_frames."""
    keys = [*GROUP_COLUMNS, "method", "inner_steps"]
    table = steps_metrics.groupby(keys, sort=False).agg(adapt_seconds=("adapt_seconds", "mean"),
                                                        n_frames=("adapt_seconds", "size")).reset_index()
    return table.sort_values(keys, key=_sort_series).reset_index(drop=True)


def _steps(count: int) -> str:
    return f"{count} inner step" + ("" if count == 1 else "s")


def format_time_table(times: pd.DataFrame, style: str = "md") -> str:
    """Rows backbones (x dataset), columns methods; mean adaptation seconds per frame."""
    texts, best = _method_table(times.assign(fastest=-times["adapt_seconds"]), "fastest", lambda row: f"{row['adapt_seconds']:.2f}")
    caption = "Mean wall time of test-time adaptation per frame (s) on the machine of the run; prediction not included."
    return _render(texts, best & False, style, caption)


def adaptation_settings(metrics: pd.DataFrame) -> pd.DataFrame:
    """What each adapting row did at test time: backbone, size, method, inner rule, inner
    learning rate (the starting value of learned rates) and the headline inner steps."""
    columns = ["backbone", "size", "method", "inner_rule", "inner_lr", "inner_steps"]
    if not {"inner_rule", "inner_lr", "inner_steps"} <= set(metrics.columns):
        return pd.DataFrame(columns=columns)
    adapting = metrics[metrics["inner_steps"].fillna(0) > 0]
    table = adapting.groupby(["backbone", "size", "method"], sort=False).agg(
        inner_rule=("inner_rule", "first"), inner_lr=("inner_lr", "first"), inner_steps=("inner_steps", "first")).reset_index()
    return table.sort_values(["backbone", "size", "method"], key=_sort_series).reset_index(drop=True)[columns]


def format_settings_table(settings: pd.DataFrame, style: str = "md") -> str:
    header = ["Backbone", "Method", "Inner rule", "Inner LR", "Inner steps"]
    lines = [[str(row["backbone"]), method_label(row["method"]), str(row["inner_rule"]), f"{row['inner_lr']:.0e}",
              str(int(row["inner_steps"]))] for _, row in settings.iterrows()]
    caption = ("Test-time adaptation of each row: inner rule, inner learning rate (initial value where the "
               "algorithm learns its rates) and the headline number of inner steps.")
    texts = pd.DataFrame(lines, columns=header)
    return _render(texts, pd.DataFrame(False, index=texts.index, columns=texts.columns), style, caption)


def _method_table(frame: pd.DataFrame, best_column: str, cell) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Cell texts of a backbone x method table (None where a method has no row) and where each
    row's largest ``best_column`` is (True there), both with the column labels as header."""
    methods = sorted(frame["method"].unique(), key=_method_sort_key)
    several_datasets = frame["dataset"].nunique() > 1
    several_sizes = frame["size"].nunique() > 1
    texts, best = [], []
    for keys, group in frame.groupby(list(GROUP_COLUMNS), sort=True):
        keys = dict(zip(GROUP_COLUMNS, keys))
        by_method = group.set_index("method")
        best_method = by_method[best_column].idxmax()
        texts.append([_row_label(keys, several_datasets, several_sizes)]
                     + [cell(by_method.loc[method]) if method in by_method.index else None for method in methods])
        best.append([False] + [method == best_method for method in methods])
    header = ["Backbone"] + [method_label(m) for m in methods]
    return pd.DataFrame(texts, columns=header), pd.DataFrame(best, columns=header)


def _markdown_format():
    """GitHub's pipe table without padding: the header rule is '---' over the row labels and
    centred ':-:' over the methods (tabulate's own pipe format pads every column to its width)."""
    from tabulate import DataRow, TableFormat

    def header_rule(widths, alignments) -> str:
        return "|" + "|".join(["---"] + [":-:"] * (len(widths) - 1)) + "|"

    row = DataRow("|", "|", "|")
    return TableFormat(lineabove=None, linebelowheader=header_rule, linebetweenrows=None, linebelow=None,
                       headerrow=row, datarow=row, padding=1, with_header_hide=None)


def _render(texts: pd.DataFrame, best: pd.DataFrame, style: str, caption: str) -> str:
    """The table rendered by pandas: ``DataFrame.to_markdown`` (tabulate) or ``Styler.to_latex``
    (the tabular; the float around it, with the caption below, as the paper's tables)."""
    if style == "md":
        bold = texts.where(~best, "**" + texts.astype(str) + "**").fillna("–")
        table = bold.to_markdown(index=False, tablefmt=_markdown_format(), stralign=None, numalign=None, disable_numparse=True)
        return table + "\n\n" + caption.replace("\\%", "%") + "\n"
    if style == "tex":
        styler = texts.fillna("--").style.hide(axis="index")
        styler = styler.apply(lambda _: best.replace({True: "textbf:--rwrap;", False: ""}), axis=None)
        styler = styler.format(escape="latex").format_index(escape="latex", axis="columns")
        tabular = styler.to_latex(column_format="l" + "c" * (texts.shape[1] - 1), hrules=True)
        return ("\\begin{table}[t]\n\\centering\n\\small\n" + tabular
                + f"\\caption{{{caption}}}\n\\end{{table}}\n")
    raise ValueError(f"style must be 'md' or 'tex', got {style!r}")


# ----------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------


def pyplot():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curve(curve: pd.DataFrame, path: str | os.PathLike, title: str) -> None:
    """Training loss and validation PSNR of a training curve, as one PNG."""
    plt = pyplot()
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


def plot_gain_forest(gains: pd.DataFrame, reference: str = "baseline"):
    """Forest plot of paired PSNR gains: one panel per (backbone, dataset), each on its own scale
    (effects differ by orders between backbones), one row per method of that panel with its 95%
    CI and the number of sequences it improves. Frame averaging is not a row (its gap to a
    network is often ten times every adaptation effect and would set the scale): the panel title
    gives it.

    gains: rows of :func:`paired_gains` (or :func:`meta_gains_over_finetuning`).
    """
    plt = pyplot()
    from savfi_core.vocabulary import FRAME_AVERAGE

    panels = list(gains.groupby(["backbone", "dataset"], sort=True))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    order = sorted(set(gains["method"]) - {FRAME_AVERAGE}, key=_method_sort_key)
    color_of = {method: colors[index % len(colors)] for index, method in enumerate(order)}
    most = max(1, max(len(set(panel["method"]) - {FRAME_AVERAGE}) for _, panel in panels))
    columns = min(4, len(panels))
    rows = math.ceil(len(panels) / columns)
    figure, axes = plt.subplots(rows, columns, figsize=(3.6 * columns, (0.38 * most + 1.3) * rows), squeeze=False)
    for axis, ((backbone, dataset), panel) in zip(axes.flat, panels):
        panel = panel.set_index("method")
        methods = [method for method in order if method in panel.index]
        for row, method in enumerate(methods):
            entry = panel.loc[method]
            low, high = entry["gain_low"], entry["gain_high"]
            if math.isfinite(low) and math.isfinite(high):
                axis.plot([low, high], [row, row], color=color_of[method], linewidth=2)
            axis.plot([entry["gain"]], [row], "o", color=color_of[method])
            axis.annotate(f"{entry['gain']:+.2f} ({int(entry['wins'])}/{int(entry['n_sequences'])})", (1.0, row),
                          xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                          va="center", fontsize="x-small")
        axis.axvline(0, color="black", linewidth=0.8)
        axis.set_yticks(range(len(methods)), [method_label(m) for m in methods], fontsize="small")
        axis.set_ylim(len(methods) - 0.5, -0.5)
        axis.set_xlabel(f"PSNR gain over {method_label(reference).lower()} (dB)", fontsize="small")
        title = f"{backbone} / {dataset}" if gains["dataset"].nunique() > 1 else str(backbone)
        if FRAME_AVERAGE in panel.index:
            title += f"\n(frame averaging {panel.loc[FRAME_AVERAGE, 'gain']:+.2f} dB)"
        axis.set_title(title, fontsize="small")
    for axis in list(axes.flat)[len(panels):]:
        axis.axis("off")
    figure.suptitle("paired gain with 95% CI, each panel on its own scale; (sequences improved / sequences)", fontsize="small")
    figure.tight_layout()
    return figure


def gains_by_steps(steps_metrics: pd.DataFrame, baseline: pd.DataFrame) -> pd.DataFrame:
    """Paired gain over the baseline against the number of test-time inner steps: one row per
    (backbone, method, inner_steps) with the mean over (dataset, sequence) units, seeds
    averaged, and its 95% bootstrap CI (``savfi_core.metrics.summarize``)."""
    unit = lambda frame: frame.assign(unit=frame["dataset"].astype(str) + "/" + frame["sequence"].astype(str))  # noqa: E731
    reference = unit(baseline).groupby(["backbone", "unit"])["psnr"].mean().rename("reference")
    adapted = unit(steps_metrics).groupby(["backbone", "method", "inner_steps", "unit"])["psnr"].mean().reset_index()
    adapted = adapted.join(reference, on=["backbone", "unit"]).dropna(subset=["reference"])
    adapted["gain"] = adapted["psnr"] - adapted["reference"]
    if adapted.empty:
        return pd.DataFrame(columns=["backbone", "method", "inner_steps", "mean", "ci_low", "ci_high", "n"])
    return summarize(adapted, by=["backbone", "method", "inner_steps"], value="gain", sequence="unit").reset_index()


def plot_gain_vs_steps(steps_metrics: pd.DataFrame, baseline: pd.DataFrame, reference: str = "baseline"):
    """Paired gain over the baseline (95% CI band) against test-time inner steps, one panel per
    backbone on its own scale, integer step axis."""
    plt = pyplot()
    curves = gains_by_steps(steps_metrics, baseline)
    backbones = sorted(curves["backbone"].unique())
    figure, axes = plt.subplots(1, max(1, len(backbones)), figsize=(3.2 * max(1, len(backbones)), 3.0), squeeze=False)
    for axis, backbone in zip(axes[0], backbones):
        subset = curves[curves["backbone"] == backbone]
        for method in sorted(subset["method"].unique(), key=_method_sort_key):
            curve = subset[subset["method"] == method].sort_values("inner_steps")
            axis.plot(curve["inner_steps"], curve["mean"], marker="o", label=method_label(method))
            axis.fill_between(curve["inner_steps"], curve["ci_low"], curve["ci_high"], alpha=0.15)
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_xticks(sorted(int(step) for step in subset["inner_steps"].unique()))
        axis.set_title(backbone, fontsize="small")
        axis.set_xlabel("inner steps at test time")
        axis.set_ylabel(f"gain over {method_label(reference).lower()} (dB)")
    axes[0][-1].legend(fontsize="x-small")
    figure.tight_layout()
    return figure


def load_training_curves(evaluation_dirs: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """The meta-training curves behind the evaluated checkpoints: each evaluation job's
    ``parameters.yaml`` names its checkpoints (method -> meta_checkpoint.pt), and the training loop
    wrote ``training_state.curve.csv`` beside each. A grid folder that has moved since (another
    checkout or machine, the committed records of a study) no longer has those absolute paths: the
    training job's folder is then looked for beside the evaluation's, under the same name. One row
    per (backbone, method, seed, step); empty when no curve is found (e.g. evaluations of given
    weights only)."""
    import yaml

    parts = []
    for folder in evaluation_dirs:
        parameters_path = Path(folder) / "parameters.yaml"
        if not parameters_path.is_file():
            continue
        parameters = yaml.safe_load(parameters_path.read_text()) or {}
        for method, checkpoint in (parameters.get("checkpoints") or {}).items():
            curve_path = Path(checkpoint).with_name("training_state.curve.csv")
            if not curve_path.is_file():
                curve_path = Path(folder).parent / Path(checkpoint).parent.name / curve_path.name
            if curve_path.is_file():
                curve = pd.read_csv(curve_path)
                parts.append(curve.assign(backbone=parameters.get("backbone"), method=method, seed=parameters.get("seed")))
    if not parts:
        return pd.DataFrame(columns=["backbone", "method", "seed", "step"])
    curves = pd.concat(parts, ignore_index=True)
    return curves.drop_duplicates(["backbone", "method", "seed", "step"]).reset_index(drop=True)


def summarize_training(curves: pd.DataFrame) -> pd.DataFrame:
    """One row per meta-training run: outer steps, steps the divergence guard rejected, the mean
    training loss of the first and the last tenth of the steps, and the first and last validation
    PSNR after adaptation (NaN without validation)."""
    rows = []
    for (backbone, method, seed), run in curves.groupby(["backbone", "method", "seed"], sort=True):
        run = run.sort_values("step")
        tenth = max(1, len(run) // 10)
        validated = run[run["val_psnr"].notna()] if "val_psnr" in run else run.iloc[0:0]
        rows.append({"backbone": backbone, "method": method, "seed": seed, "steps": int(run["step"].max()),
                     "rejected": int(run["skipped"].astype(bool).sum()) if "skipped" in run else 0,
                     "loss_first_tenth": float(run["loss"].head(tenth).mean()), "loss_last_tenth": float(run["loss"].tail(tenth).mean()),
                     "val_psnr_first": float(validated["val_psnr"].iloc[0]) if len(validated) else float("nan"),
                     "val_psnr_last": float(validated["val_psnr"].iloc[-1]) if len(validated) else float("nan"),
                     "val_first_step": int(validated["step"].iloc[0]) if len(validated) else -1})
    return pd.DataFrame(rows)


def plot_training_curves(curves: pd.DataFrame):
    """Meta-training curves, one column per backbone: the training loss (running mean over a
    twelfth of the steps: one batch's loss varies several-fold with the motion of its crops) and,
    where the runs validated, the validation PSNR after adaptation. Seeds thin, their mean bold."""
    plt = pyplot()
    backbones = sorted(curves["backbone"].unique())
    validated = "val_psnr" in curves and curves["val_psnr"].notna().any()
    from matplotlib.ticker import MaxNLocator

    per_backbone = 2 if validated else 1
    columns = min(4, len(backbones))
    blocks = math.ceil(len(backbones) / columns)
    figure, grid_axes = plt.subplots(per_backbone * blocks, columns, figsize=(4.2 * columns, 3.0 * per_backbone * blocks), squeeze=False)
    # axes[r][i]: row r (loss, validation) of backbone i
    axes = [[grid_axes[(index // columns) * per_backbone + row][index % columns] for index in range(len(backbones))]
            for row in range(per_backbone)]
    for axis in grid_axes.flat:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    for index in range(len(backbones), blocks * columns):
        for row in range(per_backbone):
            grid_axes[(index // columns) * per_backbone + row][index % columns].axis("off")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    methods = sorted(curves["method"].unique(), key=_method_sort_key)
    color_of = {method: colors[index % len(colors)] for index, method in enumerate(methods)}
    for column, backbone in enumerate(backbones):
        subset = curves[curves["backbone"] == backbone]
        for method, runs in subset.groupby("method", sort=False):
            window = max(1, int(runs["step"].max()) // 12)
            smoothed = [run.sort_values("step").set_index("step")["loss"].rolling(window, min_periods=1).mean()
                        for _, run in runs.groupby("seed")]
            for line in smoothed:
                axes[0][column].plot(line.index, line.values, color=color_of[method], linewidth=0.6, alpha=0.35)
            mean = pd.concat(smoothed, axis=1).mean(axis=1)
            axes[0][column].plot(mean.index, mean.values, color=color_of[method], linewidth=1.6, label=method_label(method))
            if validated:
                points = runs[runs["val_psnr"].notna()]
                if points.empty:
                    continue
                for _, run in points.groupby("seed"):
                    axes[1][column].plot(run["step"], run["val_psnr"], color=color_of[method], linewidth=0.6, alpha=0.35, marker=".")
                average = points.groupby("step")["val_psnr"].mean()
                axes[1][column].plot(average.index, average.values, color=color_of[method], linewidth=1.6, marker="o", label=method_label(method))
        axes[0][column].set_title(str(backbone), fontsize="small")
        axes[0][column].set_xlabel("outer step")
        axes[0][column].set_ylabel("training loss (running mean)")
        axes[0][column].legend(fontsize="x-small")
        if validated:
            axes[1][column].set_xlabel("outer step")
            axes[1][column].set_ylabel("validation PSNR after adaptation (dB)")
            axes[1][column].legend(fontsize="x-small")
    figure.tight_layout()
    return figure


def crop_image(path: str | os.PathLike) -> np.ndarray:
    """A saved crop as float [H,W,3] in [0,1] (``savfi_core.data.read_image``, channels last)."""
    from savfi_core.data import read_image

    return read_image(path).permute(1, 2, 0).numpy()


def zoom_window(images: Sequence[np.ndarray], fraction: float = 0.25) -> tuple[int, int, int]:
    """(top, left, side) of the square window where the images differ most from one another:
    the largest box mean of their per-pixel spread (max - min over the images, channel mean)."""
    from scipy.ndimage import uniform_filter

    stack = np.stack([np.asarray(image, dtype=np.float64) for image in images])
    spread = (stack.max(axis=0) - stack.min(axis=0)).mean(axis=-1)
    height, width = spread.shape
    side = max(8, int(round(min(height, width) * fraction)))
    side = min(side, height, width)
    means = uniform_filter(spread, size=side, mode="constant")
    half = side // 2
    inner = means[half:height - (side - half) + 1, half:width - (side - half) + 1]  # windows inside the image
    top, left = np.unravel_index(int(np.argmax(inner)), inner.shape)
    return int(top), int(left), side


def plot_qualitative_strip(panels: dict[str, np.ndarray], ground_truth_key: str = "GT", title: str = ""):
    """Images (inputs, GT, predictions), below each prediction its |error| map, and a third row
    zoomed on the window where the predictions differ most (outlined in the first row).

    panels: name -> float image [H,W,3] in [0,1]; the error maps are mean over channels of
    |prediction - GT|, shown on a shared scale [0, 0.25] so that the methods compare directly.
    """
    plt = pyplot()
    from matplotlib.patches import Rectangle

    names = list(panels)
    if ground_truth_key not in panels:
        raise ValueError(f"panels need the ground truth under {ground_truth_key!r}, got {names}")
    truth = panels[ground_truth_key]
    predictions = [n for n in names if n != ground_truth_key and not n.lower().startswith("input")]
    top, left, side = zoom_window([panels[n] for n in predictions] if len(predictions) > 1 else [truth, *(panels[n] for n in predictions)])
    aspect = truth.shape[0] / truth.shape[1]
    figure, axes = plt.subplots(3, len(names), figsize=(2.2 * len(names), 2 * (2.2 * aspect + 0.35) + 2.55), squeeze=False,
                                gridspec_kw={"height_ratios": [aspect, aspect, 1.0]})
    for column, name in enumerate(names):
        axes[0][column].imshow(np.clip(panels[name], 0, 1))
        axes[0][column].set_title(name, fontsize="small")
        axes[0][column].add_patch(Rectangle((left - 0.5, top - 0.5), side, side, fill=False, edgecolor="yellow", linewidth=1))
        axes[2][column].imshow(np.clip(panels[name][top:top + side, left:left + side], 0, 1), interpolation="nearest")
        axes[2][column].set_title("zoom", fontsize="x-small")
        if name in predictions:
            error = np.abs(panels[name] - truth).mean(axis=-1)
            axes[1][column].imshow(error, cmap="inferno", vmin=0, vmax=0.25)
            score = psnr(np.moveaxis(panels[name], -1, 0), np.moveaxis(truth, -1, 0))
            axes[1][column].set_title(f"|error|, {score:.2f} dB", fontsize="small")
    for axis in axes.flat:
        axis.axis("off")
    if title:
        figure.suptitle(title, fontsize="small")
    figure.tight_layout()
    return figure


def load_crop_index(evaluation_dirs: Iterable[str | os.PathLike]) -> pd.DataFrame:
    """Concatenate the ``crops.csv`` indexes (backbone, dataset, sequence, seed, panel, path)
    of the evaluation folders; paths made absolute. Folders without crops contribute nothing."""
    frames = []
    for folder in evaluation_dirs:
        index = Path(folder) / "crops.csv"
        if index.is_file():
            frame = pd.read_csv(index)
            frame["path"] = [str(Path(folder) / p) for p in frame["path"]]
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=["backbone", "dataset", "sequence", "seed", "panel", "path"])
    return pd.concat(frames, ignore_index=True)


def qualitative_choices(metrics: pd.DataFrame, baseline: str = "baseline", count: int = 3) -> pd.DataFrame:
    """The (backbone, dataset, sequence, best adapted method) with the largest PSNR gains over the
    baseline: one per backbone first, then the next largest, ``count`` in all."""
    sequences = per_sequence(metrics, "psnr")
    # only adapted networks: re-training has no adaptation, and frame averaging has no crops to show
    adapted = sequences[~sequences["method"].isin([baseline, "retrained", "frame_average"])]
    base = sequences[sequences["method"] == baseline][[*GROUP_COLUMNS, "sequence", "psnr"]].rename(columns={"psnr": "baseline_psnr"})
    joined = adapted.merge(base, on=[*GROUP_COLUMNS, "sequence"])
    if joined.empty:
        return joined
    joined["gain"] = joined["psnr"] - joined["baseline_psnr"]
    best = joined.sort_values("gain", ascending=False).drop_duplicates([*GROUP_COLUMNS, "sequence"])
    first = best.drop_duplicates("backbone")
    rest = best.drop(first.index)
    return pd.concat([first, rest]).head(count).reset_index(drop=True)


def write_report(
    metrics: pd.DataFrame,
    output_dir: str | os.PathLike,
    *,
    baseline: str = "baseline",
    steps_metrics: pd.DataFrame | None = None,
    crops: pd.DataFrame | None = None,
    qualitative: int = 3,
    curves: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write metrics.csv, table_psnr.md/.tex (both tables) and figures/ into ``output_dir``.

    Returns name -> path of everything written.
    """
    output_dir = Path(output_dir)
    figures = output_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    written: dict[str, Path] = {}

    tidy = metrics[[*KEY_COLUMNS, *METRIC_COLUMNS]].sort_values(list(KEY_COLUMNS), key=lambda s: s.astype(str))
    written["metrics"] = output_dir / "metrics.csv"
    tidy.to_csv(written["metrics"], index=False)

    summary = summarize_methods(metrics)
    gains = paired_gains(metrics, baseline=baseline)
    over_finetuning = meta_gains_over_finetuning(metrics)
    over_cycle = meta_gains_over_finetuning(metrics, reference="cycle")
    summary.to_csv(output_dir / "summary.csv", index=False)
    gains.to_csv(output_dir / "gains.csv", index=False)
    over_finetuning.to_csv(output_dir / "gains_over_finetune.csv", index=False)
    if not over_cycle.empty:
        over_cycle.to_csv(output_dir / "gains_over_cycle.csv", index=False)
    if steps_metrics is not None and not steps_metrics.empty:
        by_steps = [gains_by_inner_steps(steps_metrics, reference).assign(reference=reference) for reference in ("finetune", "cycle")]
        by_steps = [frame for frame in by_steps if not frame.empty]
        if by_steps:
            pd.concat(by_steps, ignore_index=True).to_csv(output_dir / "gains_by_inner_steps.csv", index=False)
        adaptation_time(steps_metrics).to_csv(output_dir / "adaptation_time.csv", index=False)
    for style in ("md", "tex"):
        text = "## PSNR / SSIM\n\n" if style == "md" else "% PSNR / SSIM\n"
        text += format_psnr_table(summary, style)
        if not gains.empty:
            text += ("\n## Paired gain over the baseline\n\n" if style == "md" else "\n% Paired gain over the baseline\n")
            text += format_gain_table(gains, style)
        if not over_finetuning.empty:
            text += ("\n## Paired gain of meta-training over plain fine-tuning\n\n" if style == "md"
                     else "\n% Paired gain of meta-training over plain fine-tuning\n")
            text += format_gain_table(over_finetuning, style, reference="plain fine-tuning at test time")
        if not over_cycle.empty:
            text += ("\n## Paired gain of meta-training over cycle-consistency fine-tuning\n\n" if style == "md"
                     else "\n% Paired gain of meta-training over cycle-consistency fine-tuning\n")
            text += format_gain_table(over_cycle, style, reference="cycle-consistency fine-tuning at test time")
        if steps_metrics is not None and not steps_metrics.empty and steps_metrics["inner_steps"].nunique() > 1:
            for reference, title in (("finetune", "plain fine-tuning"), ("cycle", "cycle-consistency fine-tuning")):
                by_steps = gains_by_inner_steps(steps_metrics, reference)
                if by_steps.empty:
                    continue
                text += (f"\n## Paired gain of meta-training over {title}, by test-time inner steps\n" if style == "md"
                         else f"\n% Paired gain of meta-training over {title}, by test-time inner steps\n")
                for count, frame in by_steps.groupby("inner_steps", sort=True):
                    text += f"\n### {_steps(count)}\n\n" if style == "md" else f"% {_steps(count)}\n"
                    text += format_gain_table(frame, style, reference=f"{title} at test time, both with {_steps(count)}")
        if steps_metrics is not None and not steps_metrics.empty:
            text += ("\n## Adaptation time per frame\n" if style == "md" else "\n% Adaptation time per frame\n")
            for count, frame in adaptation_time(steps_metrics).groupby("inner_steps", sort=True):
                text += f"\n### {_steps(count)}\n\n" if style == "md" else f"% {_steps(count)}\n"
                text += format_time_table(frame, style)
        settings = adaptation_settings(metrics)
        if not settings.empty:
            text += "\n## Test-time adaptation settings\n\n" if style == "md" else "\n% Test-time adaptation settings\n"
            text += format_settings_table(settings, style)
        written[f"table_{style}"] = output_dir / f"table_psnr.{style}"
        written[f"table_{style}"].write_text(text)

    forests = {"gains_figure": (gains, baseline, "gains.png"),
               "gains_over_finetune_figure": (over_finetuning, "finetune", "gains_over_finetune.png"),
               "gains_over_cycle_figure": (over_cycle, "cycle", "gains_over_cycle.png")}
    for key, (frame, reference, name) in forests.items():
        if not frame.empty:
            figure = plot_gain_forest(frame, reference)
            written[key] = figures / name
            figure.savefig(written[key], dpi=120)
            plt.close(figure)
    baseline_rows = metrics[metrics["method"] == baseline]
    if steps_metrics is not None and not steps_metrics.empty and not baseline_rows.empty:
        figure = plot_gain_vs_steps(steps_metrics, baseline_rows, baseline)
        written["steps_figure"] = figures / "gain_vs_steps.png"
        figure.savefig(written["steps_figure"], dpi=120)
        plt.close(figure)
    if curves is not None and not curves.empty:
        written["training"] = output_dir / "meta_training.csv"
        summarize_training(curves).to_csv(written["training"], index=False)
        figure = plot_training_curves(curves)
        written["training_figure"] = figures / "meta_training.png"
        figure.savefig(written["training_figure"], dpi=120)
        plt.close(figure)
    if crops is not None and not crops.empty and qualitative > 0:
        # choose among the sequences whose crops were saved
        saved = crops[["backbone", "dataset", "sequence"]].astype(str).drop_duplicates()
        keys = metrics[["backbone", "dataset", "sequence"]].astype(str)
        with_crops = metrics[keys.merge(saved, how="left", indicator=True)["_merge"].eq("both").to_numpy()]
        for number, choice in qualitative_choices(with_crops, baseline, qualitative).iterrows():
            rows = crops[(crops["backbone"] == choice["backbone"]) & (crops["dataset"] == choice["dataset"])
                         & (crops["sequence"].astype(str) == str(choice["sequence"]))]
            panel_paths = {}
            for panel in dict.fromkeys(("input0", "input1", "gt", baseline, "finetune", "cycle", choice["method"])):
                found = rows[rows["panel"] == panel]
                if not found.empty:
                    panel_paths[panel] = found.sort_values("seed", key=lambda s: s.astype(str))["path"].iloc[0]
            if "gt" not in panel_paths:
                continue
            names = {"input0": "input t-1", "input1": "input t+1", "gt": "GT"}
            panels = {names.get(panel, method_label(panel)): crop_image(path) for panel, path in panel_paths.items()}
            title = f"{choice['backbone']} / {choice['dataset']} / {choice['sequence']}: {method_label(choice['method'])} {choice['gain']:+.2f} dB"
            figure = plot_qualitative_strip(panels, "GT", title)
            key = f"strip_{number}"
            written[key] = figures / f"qualitative_{number}_{choice['backbone']}.png"
            figure.savefig(written[key], dpi=120)
            plt.close(figure)
    return written
