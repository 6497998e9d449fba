"""benchmarks/gpu.py works before a GPU is ever lent: its CPU smoke run prints the whole table."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_benchmark_runs_on_cpu_tiny_and_prints_the_table_with_the_anchor_column():
    completed = subprocess.run([sys.executable, "benchmarks/gpu.py", "--device", "cpu", "--tiny"], cwd=REPOSITORY,
                               capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-2000:]
    lines = completed.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| measurement |"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert "original, H100 (ms)" in columns and "savfi / original" in columns
    anchor, savfi = columns.index("original, H100 (ms)"), columns.index("savfi (ms)")
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.strip("|").split("|")] for line in lines
            if line.startswith("| ") and not line.startswith("| measurement")}
    for backbone in ("sepconv", "cain", "rrin", "superslomo", "dvf", "dain", "rife_hdv3", "rife_v4"):
        for kind in ("meta-training iteration", "adaptation + interpolation"):
            label = next(name for name in rows if name.startswith(f"{backbone} {kind}"))
            assert float(rows[label][savfi]) > 0, label
    assert rows["cain meta-training iteration"][anchor] == "3813"
    assert rows["SepConv kernel forward (torch)"][anchor] == "1.49"
    assert any(line.startswith("- pytest -m gpu: exit 0") for line in lines)
