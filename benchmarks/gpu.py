#!/usr/bin/env python
"""The one-command GPU check and benchmark, ready for the first lent GPU.

    python benchmarks/gpu.py                                  # on a CUDA GPU (budget: < 8 min on an H100/H200)
    python benchmarks/gpu.py --output benchmarks/gpu-h200.md  # ... and keep the table
    python benchmarks/gpu.py --device cpu --tiny              # the same code paths on CPU, in seconds (CI runs this)

In order: (1) CUDA and CuPy: versions, device, whether savfi's CuPy kernels can run; (2) ``pytest -m
gpu`` (the GPU-only tests; with ``--tiny`` only ``tests/test_kernels_gpu.py``, where they skip with
their reason on CPU); (3) the SepConv kernel at 4x3x256x448, K=51, forward and forward+backward,
and with a GPU the whole kernel benchmark (``python -m savfi_core.kernels.bench``); (4) one
meta-training iteration (``MetaLearner.meta_step``: inner loop of every task of the batch, outer
backward, outer optimizer step) and one adaptation + interpolation (``adapt_and_predict``) of
every backbone at the settings the original SAVFI code was timed with on an H100 (CuPy 14, torch
2.11; figures from issue 14), printed beside savfi's with the ratio savfi / original and peak
memory.

How it measures: wall clock around the call after ``torch.cuda.synchronize()`` on both ends, the
median of ``--repeats`` runs after ``--warmup`` runs; peak memory is
``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` on CUDA and the process's
peak RSS on CPU (a high-water mark of the whole process, so a bound, not a per-case figure).
Networks are randomly initialised (the cost does not depend on the weights); SuperSloMo's VGG16
perceptual loss runs with random VGG16 weights for the same reason. Meta-training is second order
(as ``params/paper.yaml``). ``--tiny``: tiny networks, 32x32 frames, at most 2 tasks, first order,
one inner step, one run, no warm-up, one torch thread: it checks that every path runs, its times
are not comparable with the anchors.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

REPOSITORY = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPOSITORY))

from savfi_core.backbones import create_model  # noqa: E402
from savfi_core.data import Sample, collate_samples  # noqa: E402
from savfi_core.meta import MetaLearner  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Case:
    """One timed line: a meta-training iteration ('meta') or adaptation + interpolation ('adapt')."""

    backbone: str
    kind: str
    algorithm: str
    inner_steps: int
    rule: str  # inner rule and outer optimizer (the original's Adam or Adamax)
    batch: int
    height: int
    width: int
    original_ms: float | None  # the original SAVFI code on an H100 (None: no published figure)
    original_gb: float | None = None
    target_ms: float | None = None  # savfi's target on the same card (issue 14: 4x faster)
    note: str = ""

    @property
    def settings(self) -> str:
        what = f"{self.algorithm}, {self.inner_steps} inner step{'s' if self.inner_steps > 1 else ''}, {self.rule}"
        if self.kind == "meta":
            return f"{what}, batch {self.batch}, {self.height}x{self.width}"
        return f"{what}, 1 sample {self.height}x{self.width}"


CASES = [
    Case("sepconv", "meta", "metasgd", 3, "adamax", 3, 256, 256, 375, 4.4, 94),
    Case("sepconv", "meta", "maml", 1, "adamax", 3, 256, 256, 186, None, 45),
    Case("cain", "meta", "metasgd", 1, "adam", 8, 256, 256, 3813, 7.5, 950),
    Case("rrin", "meta", "maml", 1, "adam", 8, 256, 256, 1278, None, 320),
    Case("superslomo", "meta", "maml", 1, "adam", 8, 256, 256, 955, None, 240, "with its VGG16 loss"),
    Case("dvf", "meta", "metasgd", 1, "adam", 8, 256, 256, 217, None, 55),
    Case("dain", "meta", "maml", 1, "adam", 8, 256, 256, None),
    Case("rife_hdv3", "meta", "maml", 1, "adam", 8, 256, 256, None),
    Case("rife_v4", "meta", "maml", 1, "adam", 8, 256, 256, None),
    Case("sepconv", "adapt", "metasgd", 3, "adamax", 1, 256, 448, 125),
    Case("cain", "adapt", "metasgd", 1, "adam", 1, 256, 448, 326),
    Case("rrin", "adapt", "maml", 1, "adam", 1, 256, 448, 145),
    Case("superslomo", "adapt", "maml", 1, "adam", 1, 256, 448, 101, None, None, "with its VGG16 loss"),
    Case("dvf", "adapt", "metasgd", 1, "adam", 1, 256, 448, 26),
    Case("dain", "adapt", "maml", 1, "adam", 1, 256, 448, None),
    Case("rife_hdv3", "adapt", "maml", 1, "adam", 1, 256, 448, None),
    Case("rife_v4", "adapt", "maml", 1, "adam", 1, 256, 448, None),
]
# The CuPy SepConv kernel of the original code on the same H100, and savfi's target.
KERNEL_ORIGINAL_MS = {"forward": 1.49, "forward+backward": 8.23}
KERNEL_TARGET_MS = {"forward": 0.3, "forward+backward": 1.5}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak / 1e9) if sys.platform == "darwin" else peak * 1024 / 1e9


def timed_ms(function: Callable[[], object], device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall-clock milliseconds of ``function`` over ``repeats`` runs after ``warmup``."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        function()
        synchronize(device)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)


def septuplets(count: int, height: int, width: int, device: torch.device) -> Sample:
    generator = torch.Generator().manual_seed(0)
    samples = [Sample(frames=torch.rand(7, 3, height, width, generator=generator), valid=torch.ones(7, dtype=torch.bool),
                      target_index=3, name=f"random{index}") for index in range(count)]
    batch = collate_samples(samples) if count > 1 else samples[0]
    return dataclasses.replace(batch, frames=batch.frames.to(device))


def random_vgg16_file(folder: Path) -> Path:
    """A VGG16 features state_dict with random weights (the loss network's cost, not its values)."""
    from savfi_core.backbones.superslomo import build_vgg16_conv4_3

    path = folder / "vgg16-random.pt"
    if not path.is_file():
        torch.manual_seed(0)
        torch.save({f"features.{key}": value for key, value in build_vgg16_conv4_3().state_dict().items()}, path)
    return path


def build_learner(case: Case, tiny: bool, device: torch.device, scratch: Path, task_batching: str) -> MetaLearner:
    torch.manual_seed(0)
    extra = {"vgg16_weights": str(random_vgg16_file(scratch))} if case.backbone == "superslomo" else {}
    model = create_model(case.backbone, size="tiny" if tiny else "paper", **extra).to(device)
    # --tiny: first order and one inner step, so that every path runs within CI's seconds
    # (second order on CPU took 8-86 s per iteration even for the tiny networks at 32x32).
    return MetaLearner(model, algorithm=case.algorithm, inner_steps=1 if tiny else case.inner_steps, inner_rule=case.rule,
                       outer_optimizer=case.rule, first_order=tiny, inner_lr=1e-5, outer_lr=1e-5,
                       task_batching=task_batching)


def run_case(case: Case, arguments, device: torch.device, scratch: Path) -> dict:
    height, width = (32, 32) if arguments.tiny else (case.height, case.width)
    batch = min(case.batch, 2) if arguments.tiny else case.batch
    row = {"case": case, "ms": None, "gb": None, "error": None}
    try:
        learner = build_learner(case, arguments.tiny, device, scratch, arguments.task_batching)
        if case.kind == "meta":
            tasks = septuplets(batch, height, width, device)
            function = lambda: learner.meta_step(tasks)  # noqa: E731
        else:
            learner.model.eval()
            sample = septuplets(1, height, width, device)
            function = lambda: learner.adapt_and_predict(sample)  # noqa: E731
        reset_peak(device)
        row["ms"] = timed_ms(function, device, arguments.warmup, arguments.repeats)
        row["gb"] = peak_gb(device)
    except Exception as error:  # one backbone's failure is a row of the table, not the end of the run
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:160]}"
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return row


def kernel_rows(arguments, device: torch.device) -> list[dict]:
    from savfi_core.kernels import last_backend, sepconv

    batch, kernel, height, width = (1, 5, 16, 16) if arguments.tiny else (4, 51, 256, 448)
    generator = torch.Generator(device=device).manual_seed(0)
    input = torch.randn(batch, 3, height + kernel - 1, width + kernel - 1, device=device, generator=generator, requires_grad=True)
    vertical = (torch.randn(batch, kernel, height, width, device=device, generator=generator) / kernel).requires_grad_()
    horizontal = (torch.randn(batch, kernel, height, width, device=device, generator=generator) / kernel).requires_grad_()

    def forward():
        with torch.no_grad():
            return sepconv(input, vertical, horizontal)

    def forward_backward():
        sepconv(input, vertical, horizontal).sum().backward()

    rows = []
    for name, function in (("forward", forward), ("forward+backward", forward_backward)):
        reset_peak(device)
        milliseconds = timed_ms(function, device, arguments.warmup, max(arguments.repeats, 3))
        rows.append({"name": name, "shape": f"{batch}x3x{height}x{width}, K={kernel}", "ms": milliseconds, "gb": peak_gb(device),
                     "backend": last_backend("sepconv")})
    return rows


def environment_lines(device: torch.device) -> list[str]:
    from savfi_core.kernels._backend import cupy_import_error

    lines = [f"- machine: {platform.node()} ({platform.machine()}), {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"torch {torch.__version__}, {torch.get_num_threads()} torch threads"]
    if torch.cuda.is_available():
        properties = torch.cuda.get_device_properties(0)
        lines.append(f"- CUDA: {torch.version.cuda}, device 0: {properties.name}, {properties.total_memory / 2**30:.0f} GiB")
    else:
        lines.append("- CUDA: not available to torch")
    error = cupy_import_error()
    if error is None:
        import cupy

        lines.append(f"- CuPy: {cupy.__version__}")
    else:
        lines.append(f"- CuPy: not importable ({error})")
    lines.append(f"- measured on: {device}")
    if hasattr(os, "getloadavg"):
        lines.append("- load average at start: " + ", ".join(f"{value:.2f}" for value in os.getloadavg()))
    return lines


def run_gpu_tests(tiny: bool) -> str:
    """``pytest -m gpu``: the last line of its summary (counts), or why it did not finish."""
    paths = [str(REPOSITORY / "tests" / "test_kernels_gpu.py")] if tiny else [str(REPOSITORY / "tests")]
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", *paths]
    try:
        completed = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired:
        return "did not finish within 240 s"
    lines = [line for line in completed.stdout.strip().splitlines() if line.strip()]
    summary = lines[-1] if lines else completed.stderr.strip()[-200:]
    return f"exit {completed.returncode}: {summary.strip('= ')}"


def ratio(savfi: float | None, original: float | None, tiny: bool) -> str:
    if savfi is None or original is None:
        return ""
    return "n/a (--tiny)" if tiny else f"{savfi / original:.2f}"


def number(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def table(kernel: list[dict], rows: list[dict], memory_label: str, tiny: bool) -> list[str]:
    lines = [f"| measurement | settings | original, H100 (ms) | savfi (ms) | savfi / original | target (ms) | "
             f"original memory (GB) | savfi {memory_label} (GB) |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in kernel:
        original = KERNEL_ORIGINAL_MS[row["name"]]
        lines.append(f"| SepConv kernel {row['name']} ({row['backend']}) | {row['shape']} | {original} | {number(row['ms'], 2)} | "
                     f"{ratio(row['ms'], original, tiny)} | {KERNEL_TARGET_MS[row['name']]} | — | {number(row['gb'], 2)} |")
    for row in rows:
        case = row["case"]
        what = "meta-training iteration" if case.kind == "meta" else "adaptation + interpolation"
        label = f"{case.backbone} {what}" + (f" ({case.note})" if case.note else "")
        savfi = f"failed: {row['error']}" if row["error"] else number(row["ms"])
        lines.append(f"| {label} | {case.settings} | {number(case.original_ms, 0)} | {savfi} | {ratio(row['ms'], case.original_ms, tiny)} | "
                     f"{number(case.target_ms, 0)} | {number(case.original_gb)} | {number(row['gb'], 2)} |")
    return lines


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    parser.add_argument("--tiny", action="store_true", help="tiny networks and frames: every path in seconds (not comparable)")
    parser.add_argument("--warmup", type=int, help="untimed runs per case (default 2; 0 with --tiny)")
    parser.add_argument("--repeats", type=int, help="timed runs per case, median reported (default 5; 1 with --tiny)")
    parser.add_argument("--only", action="append", help="backbones to time (repeatable; default all)")
    parser.add_argument("--task-batching", default="loop", choices=("loop", "vmap", "auto"), help="MetaLearner(task_batching=...)")
    parser.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    parser.add_argument("--output", help="also write the report (markdown) to this file")
    arguments = parser.parse_args(argv)
    arguments.warmup = arguments.warmup if arguments.warmup is not None else (0 if arguments.tiny else 2)
    arguments.repeats = arguments.repeats if arguments.repeats is not None else (1 if arguments.tiny else 5)
    return arguments


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    device = torch.device(arguments.device)
    if arguments.tiny:
        torch.set_num_threads(1)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device (torch "
              f"{torch.__version__}, CUDA build {torch.version.cuda}); use --device cpu --tiny to check the script", file=sys.stderr)
        return 2
    started = time.perf_counter()
    command = "python benchmarks/gpu.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = [f"# savfi on {torch.cuda.get_device_name(0) if device.type == 'cuda' else 'CPU'}" + (" (--tiny)" if arguments.tiny else ""),
              "", f"Command: `{command.strip()}`", "", *environment_lines(device), ""]
    if arguments.tiny:
        report += ["- --tiny: the settings column is what a GPU run uses; this run used tiny networks, 32x32 frames, "
                   "at most 2 tasks, first order and one inner step (a check that every path runs, not a measurement)", ""]
    print("\n".join(report), flush=True)

    tests = "not run (--skip-tests)" if arguments.skip_tests else run_gpu_tests(arguments.tiny)
    report += [f"- pytest -m gpu: {tests}"]
    print(report[-1], flush=True)
    if device.type == "cuda" and not arguments.tiny:
        bench = subprocess.run([sys.executable, "-m", "savfi_core.kernels.bench"], cwd=REPOSITORY, capture_output=True, text=True, timeout=240)
        report += ["", "## Kernel benchmark (python -m savfi_core.kernels.bench)", "", bench.stdout.strip() or bench.stderr.strip()[-2000:]]
        print("\n".join(report[-4:]), flush=True)

    kernel = kernel_rows(arguments, device)
    cases = [case for case in CASES if not arguments.only or case.backbone in arguments.only]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for case in cases:
            rows.append(run_case(case, arguments, device, Path(scratch)))
            row = rows[-1]
            print(f"  {case.backbone:<11} {case.kind:<5} {row['error'] or number(row['ms']) + ' ms'}", file=sys.stderr, flush=True)
    memory_label = "peak CUDA memory" if device.type == "cuda" else "process peak RSS"
    report += ["", f"## Meta-training and adaptation (median of {arguments.repeats} after {arguments.warmup} warm-up, "
               f"task batching: {arguments.task_batching})", "", *table(kernel, rows, memory_label, arguments.tiny), "",
               f"Total time of this command: {time.perf_counter() - started:.0f} s."]
    text = "\n".join(report) + "\n"
    section = next(index for index, line in enumerate(report) if line.startswith("## Meta-training"))
    print("\n".join(report[section - 1:]))
    if arguments.output:
        Path(arguments.output).write_text(text)
    failed = [row for row in rows if row["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
