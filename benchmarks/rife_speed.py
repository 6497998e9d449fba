"""savfi's RIFE against the carrier packages' own reference modules, side by side, on this CPU.

    python benchmarks/rife_speed.py [--rounds 7] > benchmarks/rife-speed-cpu.md

At 256x448 (a Vimeo-90K frame), with the released weights, for 1 and 2 threads:
- forward without autograd: savfi's model (padding and cropping included) vs the reference
  IFNet on the same padded input, both in every round, which one goes first alternating;
- forward + backward of the reconstruction loss to every weight (savfi's Laplacian L1; the
  reference with the same loss on its output);
- savfi only: one first-order MAML inner step of test-time adaptation (two support triplets,
  ``MetaLearner.adapt(sample, 1)``) followed by the prediction.
Median (min-max) over the rounds after one warm-up; ratio = savfi / reference of the medians.
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_backbone_rife import reference_network  # noqa: E402  (the parity tests' loader of the wheels' modules)

from savfi_core.backbones import create_model  # noqa: E402
from savfi_core.backbones._rife_parts import laplacian_l1  # noqa: E402
from savfi_core.data import Sample  # noqa: E402
from savfi_core.meta import MetaConfig, MetaLearner  # noqa: E402

from backbones import machine_description  # noqa: E402  (benchmarks/backbones.py)

HEIGHT, WIDTH = 256, 448
SCALES = {"rife_hdv3": [4, 2, 1], "rife_v4": [16, 8, 4, 2, 1]}


def reference_call(name: str, network, frame0: torch.Tensor, frame1: torch.Tensor) -> torch.Tensor:
    multiple = 32 if name == "rife_hdv3" else 64
    pad = (0, -WIDTH % multiple, 0, -HEIGHT % multiple)
    inputs = torch.cat([F.pad(frame0, pad), F.pad(frame1, pad)], dim=1)
    if name == "rife_hdv3":
        merged = network(inputs, SCALES[name])[2]
    else:
        merged = network(inputs, 0.5, SCALES[name])[2]
    return merged[-1][..., :HEIGHT, :WIDTH]


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def summary(values: list[float]) -> str:
    return f"{1000 * statistics.median(values):,.0f} ({1000 * min(values):,.0f}-{1000 * max(values):,.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    frames = torch.rand(7, 3, HEIGHT, WIDTH, generator=generator)
    frame0, target, frame1 = frames[2:3], frames[3:4], frames[4:5]
    sample = Sample(frames, torch.ones(7, dtype=torch.bool), 3, "random")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print("# RIFE on this CPU: savfi vs the carrier packages' reference modules\n")
    print(f"`python benchmarks/rife_speed.py --rounds {args.rounds}`, {datetime.date.today()}, commit {commit}  ")
    print(f"Machine: {machine_description().split(',')[0]}, {os.cpu_count()} cores, torch {torch.__version__}; "
          f"load average before the run {os.getloadavg()[0]:.1f}  ")
    print(f"Input 1x3x{HEIGHT}x{WIDTH}, released weights; milliseconds, median (min-max) of {args.rounds} "
          "alternating rounds after a warm-up; the side that runs first alternates.\n")
    print("| model | threads | forward savfi | forward reference | ratio | fwd+bwd savfi | fwd+bwd reference | ratio "
          "| adapt 1 step + predict, savfi |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in SCALES:
        ours = create_model(name, weights="default").eval()
        reference = reference_network(name)
        learner = MetaLearner(ours, MetaConfig(inner_steps=1, inner_lr=1e-5, first_order=True))

        def ours_backward():
            ours.zero_grad(set_to_none=True)
            laplacian_l1(ours(frame0, frame1).pred, target).backward()

        def reference_backward():
            reference.zero_grad(set_to_none=True)
            laplacian_l1(reference_call(name, reference, frame0, frame1), target).backward()

        for threads in args.threads:
            torch.set_num_threads(threads)
            times = {key: [] for key in ("ours", "reference", "ours_backward", "reference_backward", "adapt")}
            for round_index in range(args.rounds + 1):
                # Which side runs first alternates: the first call after the adaptation below runs
                # on a cold cache and allocator (measured: it biased whichever side went first).
                with torch.no_grad():
                    if round_index % 2:
                        forward_ours = timed(lambda: ours(frame0, frame1))
                        forward_reference = timed(lambda: reference_call(name, reference, frame0, frame1))
                    else:
                        forward_reference = timed(lambda: reference_call(name, reference, frame0, frame1))
                        forward_ours = timed(lambda: ours(frame0, frame1))
                if round_index % 2:
                    backward_ours, backward_reference = timed(ours_backward), timed(reference_backward)
                else:
                    backward_reference, backward_ours = timed(reference_backward), timed(ours_backward)
                adapt = timed(lambda: learner.predict(sample, learner.adapt(sample, 1)))
                if round_index:  # round 0 is the warm-up
                    for key, value in zip(times, (forward_ours, forward_reference, backward_ours, backward_reference, adapt)):
                        times[key].append(value)
            ratio = statistics.median(times["ours"]) / statistics.median(times["reference"])
            ratio_backward = statistics.median(times["ours_backward"]) / statistics.median(times["reference_backward"])
            print(f"| {name} | {threads} | {summary(times['ours'])} | {summary(times['reference'])} | {ratio:.2f} "
                  f"| {summary(times['ours_backward'])} | {summary(times['reference_backward'])} | {ratio_backward:.2f} "
                  f"| {summary(times['adapt'])} |", flush=True)
    print("\nratio = savfi / reference (below 1: savfi is faster). Both warp with `grid_sample` here: savfi's "
          "`backwarp` runs it (backend `grid_sample`, which the RIFE backbones ask for) and falls back to its "
          "gather reference only for the graph of a second-order backward.")


if __name__ == "__main__":
    main()
