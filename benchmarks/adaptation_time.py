"""Seconds of test-time adaptation per frame on this machine: plain fine-tuning (the paper's two
support triplets) and cycle-consistency fine-tuning, 1/3/5 inner steps of Adam, RIFE at its
published size, on real held-out frames of each size the study of record evaluates.

    python benchmarks/adaptation_time.py [--models rife_hdv3,rife_v4] [--samples 3] > benchmarks/adaptation-time-cpu.md

One inner loop of 5 steps per sample (``MetaLearner.adapt_steps``: the time to reach each count),
median over the samples after one warm-up; the prediction of the frame is timed apart. Run it on
a quiet machine: wall time counts whatever else runs.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from savfi_core.backbones import create_model  # noqa: E402
from savfi_core.data import open_dataset  # noqa: E402
from savfi_core.meta import MetaConfig, MetaLearner  # noqa: E402

COUNTS = (1, 3, 5)


def datasets(samples: int) -> dict[str, list]:
    """label -> the first ``samples`` held-out samples (clips always; Vimeo and Middlebury when ../shared has them)."""
    chosen = {"clips 136x320": [open_dataset("clips", split="test")[i] for i in range(samples)]}
    shared = ROOT.parent / "shared" / "data"
    if (shared / "vimeo_septuplet").is_dir():
        vimeo = open_dataset("vimeo_septuplet", root=str(shared / "vimeo_septuplet"), split="test")
        chosen["vimeo 448x256"] = [vimeo[i] for i in range(min(samples, len(vimeo)))]
    if (shared / "middlebury").is_dir():
        chosen["middlebury RubberWhale 584x388"] = [open_dataset("middlebury", root=str(shared / "middlebury"), mode="allframes")[0]]
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="rife_hdv3,rife_v4")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    arguments = parser.parse_args(argv)
    torch.set_num_threads(arguments.threads)
    data = datasets(arguments.samples)
    print(f"# Test-time adaptation time per frame ({datetime.date.today()})\n")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {arguments.threads} threads. "
          f"Command: `python benchmarks/adaptation_time.py --models {arguments.models} --samples {arguments.samples}`. "
          f"Inner rule Adam at 1e-4 (as `params/rife_study.yaml`); median over the samples after one warm-up.\n")
    print("| model | frames | inner loss | predict s | " + " | ".join(f"{c} step{'s' if c > 1 else ''} s" for c in COUNTS) + " |")
    print("|---|---|---|---:|" + "---:|" * len(COUNTS))
    for name in arguments.models.split(","):
        model = create_model(name, size="paper", weights="default").eval()
        for loss in ("triplets", "cycle"):
            learner = MetaLearner(model, MetaConfig(algorithm="maml", inner_steps=1, inner_lr=1e-4, inner_rule="adam", support_loss=loss))
            for label, samples in data.items():
                learner.adapt_steps(samples[0], [1])  # warm-up
                reached = {count: [] for count in COUNTS}
                predicting = []
                for sample in samples:
                    for count, _, seconds in learner.adapt_steps(sample, COUNTS):
                        reached[count].append(seconds)
                    start = time.perf_counter()
                    learner.predict(sample)
                    predicting.append(time.perf_counter() - start)
                cells = " | ".join(f"{statistics.median(reached[c]):.2f}" for c in COUNTS)
                print(f"| {name} | {label} (n={len(samples)}) | {loss} | {statistics.median(predicting):.2f} | {cells} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
