#!/usr/bin/env python
"""Meta-step time per task: the per-task loop against task-batched vmap (``MetaLearner(task_batching=...)``).

    python benchmarks/meta_batching.py                      # the table in benchmarks/meta-batching-cpu.md
    python benchmarks/meta_batching.py --backbones sepconv --sizes 2 4 --repeats 5

For each backbone (tiny size, as the quick grid), batch size and derivative order: one
``meta_step`` (inner loop of every task, outer backward, outer optimizer step) on random
septuplets, timed as the median of ``--repeats`` runs after one warm-up, loop and vmap alternated
run by run so that a change of machine load hits both; the table gives milliseconds per task and
the ratio loop / vmap (above 1: vmap is faster). One torch thread (as each job of a grid).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from savfi_core.backbones import create_model  # noqa: E402
from savfi_core.data import Sample, collate_samples  # noqa: E402
from savfi_core.meta import MetaLearner  # noqa: E402


def tasks(count: int, crop: int) -> Sample:
    generator = torch.Generator().manual_seed(0)
    return collate_samples([Sample(frames=torch.rand(7, 3, crop, crop, generator=generator), valid=torch.ones(7, dtype=torch.bool),
                                   target_index=3, name=f"random{index}") for index in range(count)])


def learner(backbone: str, mode: str, first_order: bool) -> MetaLearner:
    torch.manual_seed(0)
    return MetaLearner(create_model(backbone, size="tiny"), algorithm="maml", inner_steps=1, inner_lr=1e-4, inner_rule="adam",
                       first_order=first_order, outer_lr=1e-5, task_batching=mode)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backbones", nargs="+", default=["sepconv", "dvf", "rife_hdv3"])
    parser.add_argument("--sizes", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--orders", nargs="+", default=["first", "second"], choices=["first", "second"])
    parser.add_argument("--crop", type=int, default=64, help="frame size (the quick grid's meta-training crop)")
    parser.add_argument("--repeats", type=int, default=3)
    arguments = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"machine: {platform.node()}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"1 thread; load average at start {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"command: python benchmarks/meta_batching.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print(f"\nmaml, 1 inner step (adam), tiny networks, {arguments.crop}x{arguments.crop} septuplets, median of {arguments.repeats} "
          "after 1 warm-up, loop and vmap alternated\n")
    print("| backbone | order | tasks | loop ms/task | vmap ms/task | loop / vmap |")
    print("|---|---|---:|---:|---:|---:|")
    for backbone in arguments.backbones:
        for order in arguments.orders:
            for size in arguments.sizes:
                batch = tasks(size, arguments.crop)
                learners = {mode: learner(backbone, mode, order == "first") for mode in ("loop", "vmap")}
                times: dict[str, list[float]] = {"loop": [], "vmap": []}
                for run in range(arguments.repeats + 1):
                    for mode in (("loop", "vmap") if run % 2 == 0 else ("vmap", "loop")):
                        start = time.perf_counter()
                        learners[mode].meta_step(batch)
                        if run > 0:
                            times[mode].append((time.perf_counter() - start) * 1000.0 / size)
                loop, vmapped = statistics.median(times["loop"]), statistics.median(times["vmap"])
                print(f"| {backbone} | {order} | {size} | {loop:.0f} | {vmapped:.0f} | {loop / vmapped:.2f} |", flush=True)
    print(f"\nload average at end {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
