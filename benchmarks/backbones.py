"""Parameter counts (paper vs tiny) and tiny forward+backward time of every backbone.

    python benchmarks/backbones.py [--size 64] [--repeats 5] > benchmarks/backbones-cpu.md

Prints a Markdown table. Timing is the median over ``--repeats`` runs after one warm-up, one
1x3xSxS pair, L1 of the prediction backpropagated to all parameters.
"""
from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import time

import torch

from savfi_core.backbones import count_parameters, create_model, list_models


def machine_description() -> str:
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or "unknown CPU"
    return f"{model}, {torch.get_num_threads()} threads, torch {torch.__version__}, {platform.system()}"


def time_forward_backward(model: torch.nn.Module, size: int, repeats: int) -> float:
    generator = torch.Generator().manual_seed(0)
    frame0, frame1, target = (torch.rand(1, 3, size, size, generator=generator) for _ in range(3))
    timings = []
    for attempt in range(repeats + 1):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        output = model(frame0, frame1)
        (output.pred - target).abs().mean().backward()
        if attempt:  # the first run is a warm-up
            timings.append(time.perf_counter() - start)
    return statistics.median(timings)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    print(f"# Backbones: size and tiny speed\n\nMachine: {machine_description()}  \nDate: {datetime.date.today()}, commit {commit}\n")
    print(f"| backbone | paper parameters | tiny parameters | tiny forward+backward, 1x3x{args.size}x{args.size} (ms) |")
    print("|---|---:|---:|---:|")
    for name in list_models():
        with torch.device("meta"):
            paper = count_parameters(create_model(name, size="paper"))
        torch.manual_seed(0)
        tiny_model = create_model(name, size="tiny").train()
        milliseconds = 1000 * time_forward_backward(tiny_model, args.size, args.repeats)
        print(f"| {name} | {paper:,} | {count_parameters(tiny_model):,} | {milliseconds:.1f} |")


if __name__ == "__main__":
    main()
