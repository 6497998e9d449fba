"""Benchmark of savfi_core.kernels: ``python -m savfi_core.kernels.bench [--threads N] [--repeats R]``.

Prints one table per available device: op, shape, backend, forward ms, forward+backward ms (median
of R runs after one warm-up), peak memory, and on CUDA the achieved bandwidth.

How each number is measured (honestly, with its limits):
* CPU time: wall clock around the call with ``torch.set_num_threads(N)``, default 1: the references
  issue many small tensor ops (SepConv: K*K per partial), and with 2 threads on a shared, loaded
  2-core machine OpenMP synchronisation made them 10-20x slower (measured: SepConv forward 0.5 s with
  1 thread vs 9.4 s with 2 at load average 10). The table header prints the load average.
* CPU peak memory: each case runs in a fresh subprocess; after its inputs exist, the process's
  high-water mark (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) is read, one forward+backward runs,
  and the increase of the high-water mark is reported. It counts every allocation torch makes
  (tracemalloc would not) but it is a lower bound when earlier transients (imports) set a higher mark.
* CUDA time: CUDA events around the call. CUDA peak memory: ``torch.cuda.max_memory_allocated``
  after ``reset_peak_memory_stats``, minus the memory held before the call.
* CUDA bandwidth: the minimum bytes an op must move (forward: read every input once and write the
  output; forward+backward: that, plus reading the output gradient and the inputs again and writing
  one gradient per input) divided by the time, and the fraction of the device's copy bandwidth,
  measured here as 2 x bytes / time of a 1 GiB ``tensor.copy_``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

import torch

from . import backwarp, correlation, depth_flow_projection, filter_interpolation, sepconv
from ._backend import cupy_available


def _cases(batch: int):
    """name -> (shape text, builder(device, dtype, generator) -> (function(backend, *inputs), inputs))."""

    def sepconv_case(device, dtype, generator):
        kernel, height, width = 51, 256, 448
        inputs = [
            torch.randn(batch, 3, height + kernel - 1, width + kernel - 1, device=device, dtype=dtype, generator=generator),
            torch.randn(batch, kernel, height, width, device=device, dtype=dtype, generator=generator) / kernel,
            torch.randn(batch, kernel, height, width, device=device, dtype=dtype, generator=generator) / kernel,
        ]
        return (lambda backend, *tensors: sepconv(*tensors, backend=backend)), inputs

    def backwarp_case(device, dtype, generator):
        inputs = [torch.randn(batch, 3, 256, 448, device=device, dtype=dtype, generator=generator),
                  torch.randn(batch, 2, 256, 448, device=device, dtype=dtype, generator=generator) * 4]
        return (lambda backend, *tensors: backwarp(*tensors, backend=backend)), inputs

    def correlation_case(device, dtype, generator):
        inputs = [torch.randn(batch, 128, 64, 112, device=device, dtype=dtype, generator=generator) for _ in range(2)]
        return (lambda backend, *tensors: correlation(*tensors, 4, 1, backend=backend)), inputs

    def projection_case(device, dtype, generator):
        inputs = [torch.randn(batch, 2, 256, 448, device=device, dtype=dtype, generator=generator) * 4,
                  torch.rand(batch, 1, 256, 448, device=device, dtype=dtype, generator=generator) + 0.5]
        return (lambda backend, *tensors: depth_flow_projection(*tensors, backend=backend)), inputs

    def filter_case(device, dtype, generator):
        inputs = [torch.randn(batch, 3, 256, 448, device=device, dtype=dtype, generator=generator),
                  torch.randn(batch, 2, 256, 448, device=device, dtype=dtype, generator=generator) * 4,
                  torch.randn(batch, 16, 256, 448, device=device, dtype=dtype, generator=generator) / 16]
        return (lambda backend, *tensors: filter_interpolation(*tensors, backend=backend)), inputs

    return {
        "sepconv": (f"{batch}x3x256x448 K=51", sepconv_case),
        "backwarp": (f"{batch}x3x256x448", backwarp_case),
        "correlation": (f"{batch}x128x64x112 d=4", correlation_case),
        "depth_flow_projection": (f"{batch}x2x256x448", projection_case),
        "filter_interpolation": (f"{batch}x3x256x448 S=4", filter_case),
    }


def _forward_backward(function, backend, inputs):
    output = function(backend, *inputs)
    grads = torch.autograd.grad(output, inputs, torch.ones_like(output))
    return output, grads


def _cpu_case(name: str, threads: int, repeats: int) -> dict:
    """Runs inside the subprocess: times one case on CPU with the reference."""
    torch.set_num_threads(threads)
    shape, build = _cases(batch=1)[name]
    function, inputs = build("cpu", torch.float32, torch.Generator().manual_seed(0))
    inputs = [tensor.requires_grad_() for tensor in inputs]
    high_water_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    _forward_backward(function, "torch", inputs)
    peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - high_water_before) / 1024
    forward, both = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad():
            function("torch", *inputs)
        forward.append(time.perf_counter() - start)
        start = time.perf_counter()
        _forward_backward(function, "torch", inputs)
        both.append(time.perf_counter() - start)
    return {"op": name, "shape": shape, "backend": "torch", "forward_ms": 1e3 * statistics.median(forward),
            "forward_backward_ms": 1e3 * statistics.median(both), "peak_mib": peak_mib}


def _cpu_table(threads: int, repeats: int) -> list[dict]:
    rows = []
    for name in _cases(batch=1):
        command = [sys.executable, "-m", "savfi_core.kernels.bench", "--case", name, "--threads", str(threads),
                   "--repeats", str(repeats)]
        result = subprocess.run(command, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"savfi_core/kernels/bench.py: case {name} failed:\n{result.stderr}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
    return rows


def _copy_bandwidth(device) -> float:
    """Bytes per second of a device-to-device copy (read + write) of 1 GiB."""
    source = torch.empty(256 * 1024 * 1024, dtype=torch.float32, device=device)
    target = torch.empty_like(source)
    target.copy_(source)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        target.copy_(source)
    end.record()
    torch.cuda.synchronize()
    return 10 * 2 * source.numel() * 4 / (start.elapsed_time(end) / 1e3)


def _cuda_time_ms(call, repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        call()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def _cuda_table(repeats: int) -> tuple[list[dict], float]:
    device = torch.device("cuda")
    copy_bandwidth = _copy_bandwidth(device)
    backends = ["cupy", "torch"] if cupy_available() else ["torch"]
    rows = []
    for name, (shape, build) in _cases(batch=4).items():
        function, inputs = build(device, torch.float32, torch.Generator(device=device).manual_seed(0))
        inputs = [tensor.requires_grad_() for tensor in inputs]
        for backend in backends:
            forward_ms = _cuda_time_ms(lambda: function(backend, *inputs).detach(), repeats)
            both_ms = _cuda_time_ms(lambda: _forward_backward(function, backend, inputs), repeats)
            torch.cuda.synchronize()
            held = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            output, _ = _forward_backward(function, backend, inputs)
            torch.cuda.synchronize()
            peak_mib = (torch.cuda.max_memory_allocated() - held) / 2**20
            input_bytes = sum(tensor.numel() * tensor.element_size() for tensor in inputs)
            output_bytes = output.numel() * output.element_size()
            forward_bytes = input_bytes + output_bytes
            both_bytes = forward_bytes + output_bytes + 2 * input_bytes
            rows.append({
                "op": name, "shape": shape, "backend": backend, "forward_ms": forward_ms, "forward_backward_ms": both_ms,
                "peak_mib": peak_mib,
                "forward_gbs": forward_bytes / (forward_ms / 1e3) / 1e9,
                "forward_backward_gbs": both_bytes / (both_ms / 1e3) / 1e9,
                "forward_fraction": forward_bytes / (forward_ms / 1e3) / copy_bandwidth,
                "forward_backward_fraction": both_bytes / (both_ms / 1e3) / copy_bandwidth,
            })
            del output
    return rows, copy_bandwidth


def _print_table(rows: list[dict], cuda: bool) -> None:
    header = ["op", "shape", "backend", "forward ms", "fwd+bwd ms", "peak MiB"]
    if cuda:
        header += ["fwd GB/s", "fwd+bwd GB/s", "fwd / copy bw", "fwd+bwd / copy bw"]
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        cells = [row["op"], row["shape"], row["backend"], f"{row['forward_ms']:.2f}", f"{row['forward_backward_ms']:.2f}",
                 f"{row['peak_mib']:.0f}"]
        if cuda:
            cells += [f"{row['forward_gbs']:.0f}", f"{row['forward_backward_gbs']:.0f}",
                      f"{row['forward_fraction']:.2f}", f"{row['forward_backward_fraction']:.2f}"]
        print("| " + " | ".join(cells) + " |")


def _cpu_model() -> str:
    try:
        output = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in output.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1, see the module doc)")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs per case; the median is reported")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # internal: one CPU case in this process
    arguments = parser.parse_args(argv)
    if arguments.case:
        print(json.dumps(_cpu_case(arguments.case, arguments.threads, arguments.repeats)))
        return
    print(f"savfi_core.kernels benchmark, {time.strftime('%Y-%m-%d %H:%M %Z')}, torch {torch.__version__}")
    print(f"\n## CPU: {_cpu_model()}, {os.cpu_count()} logical cores, torch threads {arguments.threads}, "
          f"load average before {os.getloadavg()[0]:.2f}; float32, reference backend, batch 1\n")
    _print_table(_cpu_table(arguments.threads, arguments.repeats), cuda=False)
    if torch.cuda.is_available():
        rows, copy_bandwidth = _cuda_table(max(arguments.repeats, 10))
        print(f"\n## CUDA: {torch.cuda.get_device_name()}, copy bandwidth {copy_bandwidth / 1e9:.0f} GB/s; float32, batch 4\n")
        _print_table(rows, cuda=True)
    else:
        print("\n(no CUDA device: no GPU table)")


if __name__ == "__main__":
    main()
