"""Validation curves of the tiny pretraining runs: gain over frame averaging on the held-out clips.

    python scripts/plot_pretrain_curves.py \
        --chain sepconv=sepconv_scratch,sepconv_scratch_p2,sepconv_scratch_p3 --chain dvf=dvf,dvf_p2 ...

Each ``--chain NAME=CKPT1,CKPT2,...`` lists the phases of one backbone in order, as checkpoint
stems in ``--runs`` (default ``results/pretrain_tiny``); their ``<stem>.curve.csv`` files are
joined on a cumulative step axis. Writes ``--figure`` (a PNG, one panel per backbone, phase
boundaries dashed) and ``--table`` (a CSV of every validation point: model, phase, checkpoint,
step, cumulative_step, val_psnr, val_average_psnr, gain_db).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]


def parse_chain(text: str) -> tuple[str, list[str]]:
    name, separator, stems = text.partition("=")
    if not separator or not stems:
        raise argparse.ArgumentTypeError(f"--chain wants NAME=CKPT1,CKPT2,..., got {text!r}")
    return name, stems.split(",")


def validation_points(runs: Path, model: str, stems: list[str]) -> pd.DataFrame:
    frames, offset = [], 0
    for phase, stem in enumerate(stems, start=1):
        path = runs / f"{stem}.curve.csv"
        if not path.is_file():
            raise SystemExit(f"{path}: no curve for phase {phase} of {model}")
        curve = pd.read_csv(path)
        points = curve.dropna(subset=["val_psnr"])[["step", "val_psnr", "val_average_psnr"]].copy()
        points.insert(0, "checkpoint", stem)
        points.insert(0, "phase", phase)
        points.insert(0, "model", model)
        points["cumulative_step"] = points["step"] + offset
        points["gain_db"] = points["val_psnr"] - points["val_average_psnr"]
        frames.append(points)
        offset += int(curve["step"].max())
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chain", type=parse_chain, action="append", required=True)
    parser.add_argument("--runs", type=Path, default=REPO_ROOT / "results" / "pretrain_tiny")
    parser.add_argument("--figure", type=Path, default=REPO_ROOT / "docs" / "figures" / "pretrain_curves.png")
    parser.add_argument("--table", type=Path, default=REPO_ROOT / "docs" / "pretrain_curves.csv")
    parser.add_argument("--target", type=float, default=0.3, help="dB over frame averaging, drawn as a line")
    parser.add_argument("--floor", type=float, default=-1.0, help="lowest gain shown (dB); points below it are cut off")
    parser.add_argument("--title", default="Tiny pretraining on the embedded clips: held-out gain over frame averaging (monitored, not selected on)")
    arguments = parser.parse_args()
    table = pd.concat([validation_points(arguments.runs, name, stems) for name, stems in arguments.chain], ignore_index=True)
    models = list(dict.fromkeys(table["model"]))
    columns = min(3, len(models))
    rows = -(-len(models) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.0 * rows), squeeze=False)
    for axis, model in zip(axes.flat, models):
        points = table[table["model"] == model]
        axis.plot(points["cumulative_step"], points["gain_db"], marker=".", linewidth=1)
        for _, phase in points.groupby("phase"):
            if phase["phase"].iloc[0] > 1:
                axis.axvline(phase["cumulative_step"].min() - phase["step"].min(), color="grey", linestyle="--", linewidth=0.8)
        axis.axhline(0.0, color="black", linewidth=0.8)
        axis.axhline(arguments.target, color="tab:red", linestyle=":", linewidth=0.8)
        axis.set_title(model)
        axis.set_xlabel("training step (all phases)")
        axis.set_ylabel("gain over frame avg. (dB)")
        axis.set_ylim(max(arguments.floor, points["gain_db"].min() - 0.05), max(arguments.target + 0.05, points["gain_db"].max() + 0.05))
    for axis in list(axes.flat)[len(models):]:
        axis.set_visible(False)
    figure.suptitle(arguments.title, fontsize=9)
    figure.tight_layout()
    arguments.figure.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(arguments.figure, dpi=110)
    table.to_csv(arguments.table, index=False, float_format="%.4f")
    print(f"wrote {arguments.figure} and {arguments.table} ({len(table)} validation points)")


if __name__ == "__main__":
    main()
