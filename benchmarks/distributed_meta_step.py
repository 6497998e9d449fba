"""Outer-step time of meta-training on 1 process and on 2 torchrun ranks (gloo) on this CPU.

    python benchmarks/distributed_meta_step.py                 # writes benchmarks/distributed-meta-step-cpu.md
    python benchmarks/distributed_meta_step.py --rounds 1 --steps 2 --out /tmp/quick.md

One outer step = ``MetaLearner.meta_step`` on a fixed batch of 4 tasks (septuplets of the embedded
clips' training split, 64x64 moving crops, float32), 1 inner Adam step: on one process all 4 tasks,
on 2 ranks 2 tasks each plus the all-reduce of the meta-gradients
(``savfi_core.train.distributed``). Each configuration runs in a fresh process (or torchrun
group), warms up one step, then times ``--steps`` steps; the median per round is reported, and
the sides alternate round by round so that a change of machine load hits all of them alike. On a
2-core machine the 2 ranks compete with everything else for the same two cores: read the table
with its load average.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

BACKBONES = ("sepconv", "dvf")
ORDERS = ("first", "second")
BATCH_SIZE = 4
CROP_SIZE = 64


def measure(arguments) -> None:
    """The worker side (one process, or one rank of a torchrun group): print one JSON line."""
    import torch

    from savfi_core.backbones import create_model
    from savfi_core.data import collate_samples, open_dataset
    from savfi_core.meta import MetaLearner
    from savfi_core.train.common import crop_sample
    from savfi_core.train.distributed import distributed_context

    torch.set_num_threads(arguments.threads)
    context = distributed_context()
    dataset = open_dataset("clips", split="train", augment=False)
    generator = torch.Generator().manual_seed(0)
    batch = collate_samples([crop_sample(dataset[index * 61 % len(dataset)], CROP_SIZE, generator) for index in range(BATCH_SIZE)])
    results = {}
    for backbone in BACKBONES:
        for order in ORDERS:
            torch.manual_seed(0)
            learner = MetaLearner(create_model(backbone, size="tiny"), algorithm="maml", inner_steps=1, inner_lr=1e-4,
                                  first_order=order == "first")
            options = {}
            if context.enabled:
                options = {"tasks": context.shard(BATCH_SIZE),
                           "synchronize": lambda metrics, learner=learner: context.synchronize_meta_step(learner, metrics)}
            times = []
            for step in range(arguments.steps + 1):
                if context.enabled:
                    torch.distributed.barrier()
                start = time.perf_counter()
                learner.meta_step(batch, **options)
                if step:  # the first step warms up
                    times.append(time.perf_counter() - start)
            results[f"{backbone}-{order}"] = statistics.median(times)
    if context.is_main:
        print("RESULT " + json.dumps(results), flush=True)


def run_configuration(ranks: int, threads: int, steps: int) -> dict[str, float]:
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    worker = [str(Path(__file__).resolve()), "--measure", "--threads", str(threads), "--steps", str(steps)]
    if ranks == 1:
        command = [sys.executable, *worker]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *worker]
    completed = subprocess.run(command, env=environment, cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    line = next(line for line in completed.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--steps", type=int, default=4, help="timed outer steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "distributed-meta-step-cpu.md"))
    arguments = parser.parse_args()
    if arguments.measure:
        measure(arguments)
        return 0

    import torch

    configurations = [(1, 1), (2, 1)]  # (ranks, threads per rank)
    rounds: dict[tuple[int, int], list[dict[str, float]]] = {configuration: [] for configuration in configurations}
    loads = [os.getloadavg()[0]]
    for round_index in range(arguments.rounds):
        order = configurations if round_index % 2 == 0 else configurations[::-1]
        for ranks, threads in order:
            rounds[(ranks, threads)].append(run_configuration(ranks, threads, arguments.steps))
            loads.append(os.getloadavg()[0])
            print(f"round {round_index + 1}: {ranks} rank(s) x {threads} thread(s): {rounds[(ranks, threads)][-1]}", flush=True)

    keys = [f"{backbone}-{order}" for backbone in BACKBONES for order in ORDERS]
    header = "| backbone, order | " + " | ".join(f"{r} rank{'s' if r > 1 else ''} x {t} thread{'s' if t > 1 else ''} (s)"
                                                  for r, t in configurations) + " | 2 ranks vs 1 x 1 |"
    lines = [header, "|---|" + "---:|" * (len(configurations) + 1)]
    for key in keys:
        medians = {c: statistics.median(r[key] for r in rounds[c]) for c in configurations}
        spans = {c: (min(r[key] for r in rounds[c]), max(r[key] for r in rounds[c])) for c in configurations}
        cells = [f"{medians[c]:.3f} ({spans[c][0]:.3f}-{spans[c][1]:.3f})" for c in configurations]
        speedup = medians[(1, 1)] / medians[(2, 1)]
        lines.append(f"| {key.replace('-', ', ')} order | " + " | ".join(cells) + f" | {speedup:.2f}x |")
    command = "python benchmarks/distributed_meta_step.py" + "".join(
        f" --{name} {value}" for name, value in (("rounds", arguments.rounds), ("steps", arguments.steps)))
    text = "\n".join([
        "# Meta-training outer step: 1 process vs 2 torchrun ranks (gloo, CPU)",
        "",
        f"Machine: {cpu_name()}, {os.cpu_count()} logical cores, Linux {platform.release()}, Python {platform.python_version()}, "
        f"torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Command: `{command}`",
        f"Load average (1 min) before, between and after the configurations: {', '.join(f'{load:.1f}' for load in loads)}.",
        "",
        f"Seconds per outer step (MAML, 1 inner Adam step, batch of {BATCH_SIZE} tasks, {CROP_SIZE}x{CROP_SIZE} crops, "
        f"float32, tiny backbones): median of {arguments.rounds} rounds (min-max), each round the median of "
        f"{arguments.steps} steps after a warm-up step. 2 ranks: 2 tasks each, all-reduce included.",
        "",
        *lines,
        "",
    ])
    Path(arguments.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
