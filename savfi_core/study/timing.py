"""Where a grid's time goes: what each job record says about its own cost, and the table of it.

Three clocks meet in a job record (``job.json``):

* the runner's: ``started`` / ``ended`` (UTC, ISO 8601) and ``wall_seconds`` around the job's
  subprocess (interpreter start, papermill, kernel start, the notebook, saving it);
* the stage's: ``stage_seconds``, measured inside the kernel around the stage function alone
  (``savfi_core.study.stages``), and ``kernel_ready_seconds``, the kernel process's age when
  the stage began (its start-up and the notebook's imports);
* the operating system's: ``peak_rss_mb``, the largest resident set of the job's processes
  (the kernel's, as its parent saw it when it was reaped).

``overhead_seconds = wall_seconds - stage_seconds`` is what a job costs beyond its own work. The
stage side writes ``stage_timing.json`` into its output folder (bookkeeping, left out of the
output digest); the runner merges it into the record.
"""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any, Iterable

STAGE_TIMING_FILE = "stage_timing.json"
TIMING_TABLE = "timing.md"


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0


def process_age_seconds() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat(5); fields[0] is field 3
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return time.time() - (boot + started_ticks / os.sysconf("SC_CLK_TCK"))


def write_stage_timing(output_dir: str | os.PathLike, seconds: float, ready_seconds: float | None) -> None:
    """The stage side: its own seconds, the kernel's age when it began, the kernel's peak RSS."""
    path = Path(output_dir) / STAGE_TIMING_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"stage_seconds": round(seconds, 3),
              "kernel_ready_seconds": None if ready_seconds is None else round(ready_seconds, 3),
              "kernel_peak_rss_mb": round(peak_rss_mb(), 1)}
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(record, indent=2))
    os.replace(temporary, path)


def read_stage_timing(job_dir: Path) -> dict[str, Any]:
    """What the stage wrote, or {} (a fake notebook, or a stage that failed before the end)."""
    path = Path(job_dir) / STAGE_TIMING_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def job_timing(started: str, ended: str, wall_seconds: float, job_dir: Path, children_peak_rss_mb: float | None) -> dict[str, Any]:
    """The timing fields of a job record (see the module doc)."""
    stage = read_stage_timing(job_dir)
    stage_seconds = stage.get("stage_seconds")
    peaks = [value for value in (stage.get("kernel_peak_rss_mb"), children_peak_rss_mb) if value is not None]
    return {
        "started": started, "ended": ended, "wall_seconds": round(wall_seconds, 3),
        "stage_seconds": stage_seconds,
        "overhead_seconds": None if stage_seconds is None else round(wall_seconds - stage_seconds, 3),
        "kernel_ready_seconds": stage.get("kernel_ready_seconds"),
        "peak_rss_mb": max(peaks) if peaks else None,
    }


def timing_rows(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per record that has run (has ``wall_seconds``), slowest first."""
    rows = [record for record in records if record and record.get("wall_seconds") is not None]
    return sorted(rows, key=lambda record: -record["wall_seconds"])


def _cell(value: Any, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def timing_markdown(records: Iterable[dict[str, Any]], title: str) -> str:
    """Markdown: totals per stage, then every job (slowest first)."""
    rows = timing_rows(records)
    lines = [f"# Timing of grid {title}", ""]
    if not rows:
        return "\n".join(lines + ["No job of this grid has a timing record yet.", ""])
    overheads = sorted(row["overhead_seconds"] for row in rows if row.get("overhead_seconds") is not None)
    total_wall = sum(row["wall_seconds"] for row in rows)
    lines += [f"{len(rows)} jobs, {total_wall:.0f} s of job time in all (jobs run in parallel, so more than the grid's wall time).",
              ""]
    if overheads:
        median = overheads[len(overheads) // 2] if len(overheads) % 2 else sum(overheads[len(overheads) // 2 - 1:len(overheads) // 2 + 1]) / 2
        lines += [f"Per-job overhead (wall - stage): median {median:.2f} s, max {overheads[-1]:.2f} s, "
                  f"total {sum(overheads):.0f} s over {len(overheads)} jobs.", ""]
    lines += ["| stage | jobs | wall s | stage s | overhead s (median) | peak RSS MiB (max) |", "|---|---:|---:|---:|---:|---:|"]
    for stage in sorted({row.get("stage") or "?" for row in rows}):
        group = [row for row in rows if (row.get("stage") or "?") == stage]
        stage_total = [row["stage_seconds"] for row in group if row.get("stage_seconds") is not None]
        group_overheads = sorted(row["overhead_seconds"] for row in group if row.get("overhead_seconds") is not None)
        peaks = [row["peak_rss_mb"] for row in group if row.get("peak_rss_mb") is not None]
        lines.append(f"| {stage} | {len(group)} | {sum(row['wall_seconds'] for row in group):.1f} | "
                     f"{_cell(sum(stage_total) if stage_total else None)} | "
                     f"{_cell(group_overheads[len(group_overheads) // 2] if group_overheads else None, 2)} | {_cell(max(peaks) if peaks else None, 0)} |")
    lines += ["", "| job | started (UTC) | wall s | stage s | overhead s | kernel ready s | peak RSS MiB |",
              "|---|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {row['job_id']} | {row.get('started') or ''} | {_cell(row['wall_seconds'])} | {_cell(row.get('stage_seconds'))} | "
                     f"{_cell(row.get('overhead_seconds'), 2)} | {_cell(row.get('kernel_ready_seconds'), 2)} | {_cell(row.get('peak_rss_mb'), 0)} |")
    return "\n".join(lines) + "\n"


def write_timing_table(records: Iterable[dict[str, Any]], grid_dir: Path, title: str) -> Path:
    """``<grid_dir>/timing.md`` from the job records (atomically)."""
    path = Path(grid_dir) / TIMING_TABLE
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".md.tmp")
    temporary.write_text(timing_markdown(records, title))
    os.replace(temporary, path)
    return path


def slowest_jobs_text(records: Iterable[dict[str, Any]], count: int = 5) -> str:
    """The ``count`` slowest jobs, one line each (what run_all.py prints at the end)."""
    rows = timing_rows(records)[:count]
    lines = [f"slowest {len(rows)} jobs (wall s = stage s + overhead s, peak RSS):"]
    for row in rows:
        stage = row.get("stage_seconds")
        detail = "" if stage is None else f" = {stage:.1f} + {row['overhead_seconds']:.1f}"
        rss = "" if row.get("peak_rss_mb") is None else f", {row['peak_rss_mb']:.0f} MiB"
        lines.append(f"  {row['wall_seconds']:7.1f} s{detail}{rss}  {row['job_id']}")
    return "\n".join(lines)
