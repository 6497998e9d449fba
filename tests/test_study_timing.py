"""Job-record timing: what a stage writes about itself, how the runner merges it, the table."""
from __future__ import annotations

import dataclasses
import json
import time

from savfi_core.study import timing
from savfi_core.study.stages import stage


@dataclasses.dataclass
class SleepConfig:
    seconds: float = 0.0
    output_dir: str = "unused"


@stage(SleepConfig)
def run_sleep(config: SleepConfig) -> float:
    time.sleep(config.seconds)
    return config.seconds


def test_a_stage_writes_its_own_seconds_the_kernel_age_and_peak_rss(tmp_path):
    assert run_sleep(seconds=0.2, output_dir=str(tmp_path)) == 0.2
    written = json.loads((tmp_path / timing.STAGE_TIMING_FILE).read_text())
    assert 0.2 <= written["stage_seconds"] < 2.0
    assert written["kernel_ready_seconds"] is None or written["kernel_ready_seconds"] > 0
    assert written["kernel_peak_rss_mb"] > 10


def test_job_timing_takes_the_overhead_from_wall_minus_stage(tmp_path):
    (tmp_path / timing.STAGE_TIMING_FILE).write_text(json.dumps({"stage_seconds": 2.5, "kernel_ready_seconds": 1.0,
                                                                  "kernel_peak_rss_mb": 300.0}))
    fields = timing.job_timing("2026-12-02T00:00:00Z", "2026-12-02T00:00:04Z", 4.0, tmp_path, 350.0)
    assert fields["overhead_seconds"] == 1.5 and fields["stage_seconds"] == 2.5 and fields["peak_rss_mb"] == 350.0
    assert timing.job_timing("a", "b", 4.0, tmp_path / "missing", None)["overhead_seconds"] is None


def test_timing_table_and_slowest_jobs_are_ordered_by_wall_time():
    records = [{"job_id": f"job{i}", "stage": "meta_train" if i % 2 else "evaluate", "wall_seconds": float(i), "stage_seconds": i - 0.5,
                "overhead_seconds": 0.5, "peak_rss_mb": 100.0 + i, "started": "2026-12-02T00:00:00Z"} for i in range(1, 8)]
    records.append({"job_id": "cached-before-timing", "status": "done"})  # an old record without timing: left out
    table = timing.timing_markdown(records, "toy")
    assert "median 0.50 s" in table and "7 jobs" in table
    assert table.index("| job7 |") < table.index("| job1 |")
    assert "cached-before-timing" not in table
    slowest = timing.slowest_jobs_text(records, 5).splitlines()
    assert len(slowest) == 6 and "job7" in slowest[1] and "job3" in slowest[5]
    assert "7.0 s = 6.5 + 0.5" in slowest[1]
