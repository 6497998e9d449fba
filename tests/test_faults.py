"""Fault probes, as a user would meet them: two runners on one folder, a runner killed with
SIGKILL, CLI outputs that exist already / cannot be written / truncated inputs, unseeded
initialization, a full disk during a checkpoint write.

Each test names the defect it pins down (issue 18); together they run in well under 3 minutes.
"""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from savfi_core import procs  # noqa: E402
from savfi_core.runlock import LOCK_NAME, RunLockError, acquire_run_lock, hold_run_lock  # noqa: E402

from test_run_all import records, write_grid  # noqa: E402

posix_only = pytest.mark.skipif(os.name != "posix", reason="process groups and SIGKILL semantics are POSIX")


# --------------------------------------------------------------------------------------------
# The run lock
# --------------------------------------------------------------------------------------------


def test_second_lock_on_a_folder_is_refused_and_names_the_holder(tmp_path):
    with hold_run_lock(tmp_path, command="first runner") as lock:
        with pytest.raises(RunLockError) as refused:
            acquire_run_lock(tmp_path, command="second runner")
        assert f"pid {os.getpid()}" in str(refused.value) and "first runner" in str(refused.value)
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        assert lock.stale_holder is None
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: the file is emptied, not left naming us
    with hold_run_lock(tmp_path) as again:
        assert again.stale_holder is None


def test_lock_of_a_dead_holder_is_reported_as_stale_and_taken_over(tmp_path):
    holder = subprocess.run(
        [sys.executable, "-c", "import os, sys; sys.path.insert(0, sys.argv[2]); from savfi_core.runlock import acquire_run_lock;"
         " acquire_run_lock(sys.argv[1], command='crashed runner'); os._exit(9)", str(tmp_path), str(REPO_ROOT)],
        capture_output=True, text=True, timeout=60,
    )
    assert holder.returncode == 9, holder.stderr
    with hold_run_lock(tmp_path) as lock:
        assert lock.stale_holder is not None and lock.stale_holder["command"] == "crashed runner"


def _run_all_command(grid: Path, results: Path) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "run_all.py"), "--grid", str(grid), "--results", str(results), "--jobs", "1"]


def _slow_grid(tmp_path: Path, seconds: float) -> Path:
    return write_grid(tmp_path, pretrain=None, report=None, backbones=["alpha"],
                      meta_train={"dataset": {"name": "fake"}, "steps": 2, "batch_size": 1, "algorithms": ["maml"],
                                  "config": {}, "options": {"sleep": seconds}},
                      evaluate={"datasets": [{"name": "fake"}], "protocols": ["meta"], "inner_steps": [1]})


def _processes_with_token(token: str, holding: Path | None = None) -> list[int]:
    """Pids (from the process table) whose environment carries ``token``: the run's processes.

    With ``holding`` (a file), also every process with a descriptor open on it: an exiting
    process has already dropped its memory (its environ reads empty) while it still holds its
    files, and a run-lock descriptor keeps the folder locked until the kernel closes it. A killed
    multi-threaded process can show its leader as a zombie while its other threads still run and
    hold its files: it is read through a live thread then.
    """
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        probe = _live_thread(entry)
        if probe is None:  # gone, or a zombie with every thread gone: it does nothing and holds nothing
            continue
        try:
            environment = (probe / "environ").read_bytes()
        except OSError:
            environment = b""
        if token.encode() in environment or (holding is not None and _has_open(probe, holding)):
            found.append(int(entry.name))
    return found


def _live_thread(process: Path) -> Path | None:
    """The process's /proc folder if its leader is not a zombie, else that of a live thread."""
    try:
        if _state(process) != "Z":
            return process
        return next((task for task in (process / "task").iterdir() if _state(task) != "Z"), None)
    except OSError:
        return None


def _state(entry: Path) -> str:
    return (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]


def _has_open(process: Path, file: Path) -> bool:
    try:
        target = str(file.resolve())
        return any(os.readlink(descriptor) == target for descriptor in (process / "fd").iterdir())
    except OSError:  # gone meanwhile, or not ours to read
        return False


def _wait_for_kernel(results: Path, token: str, runner: subprocess.Popen, deadline: float) -> None:
    """Until the running job's notebook kernel is up (runner, job process, kernel: 3 processes)."""
    while len(_processes_with_token(token)) < 3 or not any(
        record.get("status") == "queued" for record in records(results).values()
    ):
        assert runner.poll() is None, runner.communicate()[0]
        assert time.monotonic() < deadline, "the job's kernel did not start"
        time.sleep(0.2)
    time.sleep(1.5)  # the notebook's sleep cell is running now


def _kill_run(runner: subprocess.Popen, token: str) -> None:
    """Whatever a failed probe left running: the runner and every process carrying the token."""
    if runner.poll() is None:
        runner.kill()
    for pid in _processes_with_token(token):
        os.kill(pid, signal.SIGKILL)


@posix_only
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the process table from /proc")
def test_second_runner_refuses_and_sigkill_of_the_runner_leaves_no_process_of_its_run(tmp_path):
    grid = _slow_grid(tmp_path, seconds=60)
    results = tmp_path / "results"
    token = f"SAVFI_FAULT_PROBE={uuid.uuid4().hex}"
    name, value = token.split("=")
    environment = {**os.environ, name: value}
    runner = subprocess.Popen(_run_all_command(grid, results), cwd=REPO_ROOT, env=environment,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_for_kernel(results, token, runner, time.monotonic() + 90)

        second = subprocess.run(_run_all_command(grid, results), cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 3, second.stdout + second.stderr
        assert f"pid {runner.pid}" in second.stderr and "another run holds this results folder" in second.stderr
        assert "ran" not in second.stdout  # it ran nothing

        os.kill(runner.pid, signal.SIGKILL)
        runner.wait(10)
        lock_file = results / "tiny" / LOCK_NAME
        deadline = time.monotonic() + 5
        while _processes_with_token(token, holding=lock_file) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = _processes_with_token(token, holding=lock_file)
        assert not left, [Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ") for pid in left]

        # The folder is free again at once, and the interrupted job simply runs again.
        log = (results / "tiny" / "meta_train-alpha-maml-seed0" / "log.txt").read_text()
        assert "stops with its runner (prctl(PR_SET_PDEATHSIG) + watchdog)" in log or "(watchdog)" in log, log
        with hold_run_lock(results / "tiny") as lock:
            assert lock.stale_holder["pid"] == runner.pid
    finally:
        _kill_run(runner, token)


@posix_only
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads the process table from /proc")
def test_sigterm_of_the_runner_stops_its_jobs_and_marks_them_interrupted(tmp_path):
    grid = _slow_grid(tmp_path, seconds=60)
    results = tmp_path / "results"
    token = f"SAVFI_FAULT_PROBE={uuid.uuid4().hex}"
    name, value = token.split("=")
    runner = subprocess.Popen(_run_all_command(grid, results), cwd=REPO_ROOT, env={**os.environ, name: value},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        _wait_for_kernel(results, token, runner, time.monotonic() + 90)
        runner.terminate()
        output, _ = runner.communicate(timeout=30)
        assert runner.returncode == 130, output
        deadline = time.monotonic() + 5
        while _processes_with_token(token) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _processes_with_token(token)
        assert records(results)["meta_train-alpha-maml-seed0"]["status"] == "interrupted"
        assert (results / "tiny" / LOCK_NAME).read_text() == ""  # released on the way out
    finally:
        _kill_run(runner, token)


@posix_only
def test_job_process_stops_its_children_when_its_parent_is_killed(tmp_path):
    """procs.die_with_parent alone: parent (SIGKILLed) -> job -> grandchild, all gone."""
    script = tmp_path / "job.py"
    script.write_text(
        "import subprocess, sys, time\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from savfi_core.procs import die_with_parent\n"
        "print(die_with_parent(), flush=True)\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True)\n"
        f"open({str(tmp_path / 'grandchild')!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    parent_code = (
        "import subprocess, sys, time\n"
        f"sys.path.insert(0, {str(REPO_ROOT)!r})\n"
        "from savfi_core.procs import run_job_process\n"
        f"run_job_process([sys.executable, {str(script)!r}], stdout=open({str(tmp_path / 'log')!r}, 'w'), env=dict(__import__('os').environ), cwd='.')\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code])
    deadline = time.monotonic() + 30
    while not (tmp_path / "grandchild").is_file() or not (tmp_path / "grandchild").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    grandchild = int((tmp_path / "grandchild").read_text())
    assert procs_alive(grandchild)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 5
    while procs_alive(grandchild) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not procs_alive(grandchild)
    assert "watchdog" in (tmp_path / "log").read_text()


def procs_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# --------------------------------------------------------------------------------------------
# The slow-motion CLI (savfi_core.interpolate)
# --------------------------------------------------------------------------------------------

CLI = ["--model", "sepconv", "--size", "tiny", "--weights", "none", "--no-adapt"]


def _write_frames(folder: Path, count: int, size=(32, 48), seed=0) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(seed)
    for index in range(count):
        Image.fromarray(generator.integers(0, 256, (*size, 3), dtype=np.uint8)).save(folder / f"in_{index:03d}.png")
    return folder


@pytest.fixture
def interpolate_main():
    from savfi_core.interpolate import main

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield main
    torch.set_num_threads(previous)


def test_existing_frame_folder_is_refused_then_wholly_replaced_with_overwrite(tmp_path, interpolate_main, capsys):
    frames = _write_frames(tmp_path / "in", 3)
    output = tmp_path / "out"
    assert interpolate_main([str(_write_frames(tmp_path / "long", 6)), *CLI, "--out", str(output)]) == 0
    assert len(list(output.iterdir())) == 11  # 6 inputs -> 11 frames, an earlier run's output

    assert interpolate_main([str(frames), *CLI, "--out", str(output)]) == 2
    assert f"savfi: error: {output}: output folder is not empty; pass --overwrite" in capsys.readouterr().err
    assert len(list(output.iterdir())) == 11  # untouched

    assert interpolate_main([str(frames), *CLI, "--out", str(output), "--overwrite"]) == 0
    assert sorted(path.name for path in output.iterdir()) == [f"frame_{index:06d}.png" for index in range(5)]
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]  # no temporary left


def test_existing_video_is_refused_then_replaced_with_overwrite(tmp_path, interpolate_main, capsys):
    import av

    frames = _write_frames(tmp_path / "in", 3)
    output = tmp_path / "out.mp4"
    output.write_bytes(b"an earlier video")
    assert interpolate_main([str(frames), *CLI, "--out", str(output)]) == 2
    assert f"savfi: error: {output}: output video exists" in capsys.readouterr().err
    assert output.read_bytes() == b"an earlier video"
    assert interpolate_main([str(frames), *CLI, "--out", str(output), "--overwrite"]) == 0
    with av.open(str(output)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 5
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


def _faststart_mp4(path: Path, count: int) -> Path:
    import av

    generator = np.random.default_rng(1)
    with av.open(str(path), mode="w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.options = {"crf": "30", "g": "5"}
        for _ in range(count):
            image = generator.integers(0, 256, (48, 64, 3), dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode())
    return path


def test_truncated_faststart_video_is_reported_and_refused_with_strict(tmp_path, interpolate_main, capsys, caplog):
    from savfi_core.interpolate import declared_frame_count

    whole = _faststart_mp4(tmp_path / "whole.mp4", 40)
    data = whole.read_bytes()
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")  # faststart: index first
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert declared_frame_count(cut) == 40

    assert interpolate_main([str(cut), *CLI, "--out", str(tmp_path / "out")]) == 0
    err = caplog.text
    assert f"{cut}: video is truncated: decoded " in err and " of the 40 frames its container declares" in err

    assert interpolate_main([str(cut), *CLI, "--strict", "--out", str(tmp_path / "strict")]) == 2
    assert f"savfi: error: {cut}: video is truncated" in capsys.readouterr().err
    assert not (tmp_path / "strict").exists()
    assert interpolate_main([str(whole), *CLI, "--strict", "--out", str(tmp_path / "whole_out")]) == 0  # not a false alarm


def test_frames_of_mixed_sizes_name_the_file(tmp_path, interpolate_main, capsys):
    from PIL import Image

    frames = _write_frames(tmp_path / "in", 3)
    Image.new("RGB", (40, 30)).save(frames / "in_002.png")
    assert interpolate_main([str(frames), *CLI, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("savfi: error: ") and str(frames / "in_002.png") in err and "Traceback" not in err
    with pytest.raises(Exception, match="in_002.png"):  # --debug: the exception itself
        interpolate_main([str(frames), *CLI, "--out", str(tmp_path / "out"), "--debug"])


@pytest.mark.parametrize("problem", ["read-only", "parent is a file", "bad suffix"])
def test_unwritable_output_is_refused_before_any_frame_is_computed(tmp_path, interpolate_main, monkeypatch, capsys, problem):
    import savfi_core.interpolate as interpolate

    computed = []
    monkeypatch.setattr(interpolate, "multiply_frame_rate", lambda *args, **kwargs: computed.append(1))
    monkeypatch.setattr(interpolate, "read_input", lambda *args, **kwargs: computed.append("decoded"))
    frames = _write_frames(tmp_path / "in", 3)
    if problem == "read-only":  # as a read-only mount answers (chmod would not stop root)
        import savfi_core.io_safety as io_safety

        def read_only(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(io_safety.tempfile, "mkstemp", read_only)
        folder = tmp_path / "mounted"
        folder.mkdir()
        output = folder / "out.mp4"
    elif problem == "parent is a file":
        (tmp_path / "file").write_text("")
        output = tmp_path / "file" / "out"
    else:
        output = tmp_path / "out.mp5"
    assert interpolate_main([str(frames), *CLI, "--out", str(output)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("savfi: error: ") and str(output.parent if problem != "bad suffix" else output) in err
    assert computed == []  # neither decoded nor computed


def test_full_disk_while_writing_frames_keeps_the_previous_output(tmp_path, interpolate_main, monkeypatch, capsys):
    from PIL import Image

    frames = _write_frames(tmp_path / "in", 3)
    output = tmp_path / "out"
    assert interpolate_main([str(frames), *CLI, "--out", str(output)]) == 0
    before = {path.name: path.read_bytes() for path in output.iterdir()}
    saved = []
    real_save = Image.Image.save

    def save_until_full(self, path, *args, **kwargs):
        if len(saved) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        saved.append(path)
        return real_save(self, path, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_until_full)
    assert interpolate_main([str(frames), *CLI, "--out", str(output), "--overwrite"]) == 2
    assert f"savfi: error: {output}: no space left on device while writing it" in capsys.readouterr().err
    assert {path.name: path.read_bytes() for path in output.iterdir()} == before
    assert [path.name for path in tmp_path.iterdir() if path.name.startswith(".")] == []


# --------------------------------------------------------------------------------------------
# atomic_save on a full disk, and after a SIGKILL mid-write
# --------------------------------------------------------------------------------------------


def test_full_disk_during_atomic_save_leaves_no_partial_file_and_no_temporary(tmp_path, monkeypatch):
    from savfi_core import checkpoint
    from savfi_core.checkpoint import atomic_save, safe_load

    target = tmp_path / "checkpoint.pt"
    atomic_save({"step": 1}, target)
    real_write = os.write

    def write_then_fill_the_disk(descriptor, data):
        real_write(descriptor, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_all", write_then_fill_the_disk)
    with pytest.raises(OSError, match=f"no space left on device while writing {target}") as raised:
        atomic_save({"step": 2, "weights": torch.zeros(1000)}, target)
    assert raised.value.errno == errno.ENOSPC
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoint.pt"]  # no temporary
    assert safe_load(target) == {"step": 1}  # the previous checkpoint, whole


def test_temporary_left_by_a_killed_writer_is_removed_by_the_next_save(tmp_path):
    from savfi_core.checkpoint import atomic_save

    target = tmp_path / "checkpoint.pt"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f".checkpoint.pt.{dead}.abc123.tmp"
    stale.write_bytes(b"")  # what SIGKILL during a save leaves
    live = tmp_path / f".checkpoint.pt.{os.getpid()}.def456.tmp"  # a save in progress (this process)
    live.write_bytes(b"")
    other = tmp_path / f".other.pt.{dead}.abc123.tmp"  # another file's: not ours to remove
    other.write_bytes(b"")
    atomic_save({"step": 1}, target)
    assert not stale.exists() and live.exists() and other.exists()


# --------------------------------------------------------------------------------------------
# Seeds: the same pretraining command twice gives the same run
# --------------------------------------------------------------------------------------------


def test_pretrain_tiny_with_one_seed_gives_identical_curves_and_weights(tmp_path, monkeypatch):
    """In one process on purpose: the second run starts from whatever RNG state the first left
    (and a different global seed), so only seeding before model creation makes them equal."""
    import importlib.util

    import pandas as pd

    from savfi_core.checkpoint import safe_load

    spec = importlib.util.spec_from_file_location("pretrain_tiny", REPO_ROOT / "scripts" / "pretrain_tiny.py")
    pretrain_tiny = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(pretrain_tiny)
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # the script's SIGTERM handler stays out of pytest
    threads = torch.get_num_threads()
    runs = []
    for index, global_seed in enumerate((123, 456)):
        torch.manual_seed(global_seed)
        checkpoint = tmp_path / f"run{index}" / "sepconv.pt"
        pretrain_tiny.main(["--model", "sepconv", "--steps", "3", "--batch-size", "2", "--crop-size", "32",
                            "--crop-candidates", "2", "--val-every", "0", "--checkpoint-every", "0", "--seed", "7",
                            "--no-ship", "--checkpoint", str(checkpoint)])
        curve = pd.read_csv(checkpoint.with_suffix(".curve.csv")).drop(columns=["elapsed_seconds"])
        runs.append((curve, safe_load(checkpoint)["state"]["model"]))
    torch.set_num_threads(threads)
    (first_curve, first_weights), (second_curve, second_weights) = runs
    pd.testing.assert_frame_equal(first_curve, second_curve, check_exact=True)
    assert first_weights.keys() == second_weights.keys()
    assert all(torch.equal(first_weights[name], second_weights[name]) for name in first_weights)
